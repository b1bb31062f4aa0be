package content

import "fmt"

// Segment describes one segment of the content.
type Segment struct {
	// Offset is the segment's start in the content (ullOffsetInContent).
	Offset uint64
	// Length is the full segment length, whatever the range (cbSegment).
	Length uint32
	// BlockSize is 65536 for v1; for v2 the segment is one block of Length bytes.
	BlockSize uint32
	// HashAlgo is the content information's hash algorithm.
	HashAlgo HashAlgo
	// HoD is the segment's hash of data.
	HoD Digest
	// Kp is the segment secret, the key blocks are encrypted with.
	Kp Digest
	// ID is the segment ID (HoHoDk), derived from Kp and HoD.
	ID SegmentID
	// BlockHashes are the hashes of blocks 0, 1, ...; a range CI may list
	// fewer than BlockCount in its last segment. For v2 it is {HoD}, derived
	// rather than serialized.
	BlockHashes []Digest
}

// BlockCount returns the number of blocks in the whole segment.
func (s *Segment) BlockCount() int {
	if s.BlockSize == 0 {
		return 0
	}
	return int((uint64(s.Length) + uint64(s.BlockSize) - 1) / uint64(s.BlockSize))
}

// BlockLen returns the length of block index, or 0 if there is no such block.
func (s *Segment) BlockLen(index int) int {
	if index < 0 || index >= s.BlockCount() {
		return 0
	}
	start := uint64(index) * uint64(s.BlockSize)
	return int(min(uint64(s.BlockSize), uint64(s.Length)-start))
}

// BlockOffset returns the offset in the content of block index.
func (s *Segment) BlockOffset(index int) uint64 {
	return s.Offset + uint64(index)*uint64(s.BlockSize)
}

// End returns the offset just past the segment.
func (s *Segment) End() uint64 { return s.Offset + uint64(s.Length) }

// VerifyBlock checks that data is block index of seg: right length and
// matching block hash. It returns ErrBlockIndex when the block hash is not
// listed, ErrBlockLength or ErrBlockHash otherwise.
func VerifyBlock(seg *Segment, index int, data []byte) error {
	if index < 0 || index >= len(seg.BlockHashes) || index >= seg.BlockCount() {
		return fmt.Errorf("block %d of segment %v: %w", index, seg.ID, ErrBlockIndex)
	}
	if len(data) != seg.BlockLen(index) {
		return fmt.Errorf("block %d of segment %v: got %d bytes, want %d: %w",
			index, seg.ID, len(data), seg.BlockLen(index), ErrBlockLength)
	}
	if HashBlock(seg.HashAlgo, data) != seg.BlockHashes[index] {
		return fmt.Errorf("block %d of segment %v: %w", index, seg.ID, ErrBlockHash)
	}
	return nil
}

// checkHoD verifies a v1 segment's HoD when its block list is complete.
func (s *Segment) checkHoD() error {
	if s.HashAlgo != SHA256 || len(s.BlockHashes) != s.BlockCount() {
		return nil
	}
	if HoDV1(s.BlockHashes) != s.HoD {
		return fmt.Errorf("segment at offset %d: %w", s.Offset, ErrHoDMismatch)
	}
	return nil
}

// Info is parsed or generated content information for a content range.
type Info struct {
	// Version is V1 or V2.
	Version Version
	// HashAlgo is SHA256 (v1) or SHA512Trunc (v2).
	HashAlgo HashAlgo
	// OffsetInFirstSegment is the number of bytes of the first segment
	// before the range (dwOffsetInFirstSegment).
	OffsetInFirstSegment uint32
	// ReadBytesInLastSegment (v1 only) is the number of range bytes in the
	// last segment; 0 means the whole last segment.
	ReadBytesInLastSegment uint32
	// IndexOfFirstSegment (v2 only) is the index of the first listed segment
	// within the content (ullIndexOfFirstSegment).
	IndexOfFirstSegment uint64
	// LengthOfRange (v2 only) is the length of the range; 0 means up to
	// the end of the last segment.
	LengthOfRange uint64
	// Segments are the segments intersecting the range, in content order.
	Segments []Segment
	// ChunkSegments (v2 only) is the number of segment descriptions in each
	// chunk, kept so that a parsed CI serializes to the same bytes; nil
	// means one chunk holding every segment.
	ChunkSegments []int
}

// Range returns the half-open content range [start, end) the content
// information describes, as MS-PCCRC §2.3 / §2.4 define it.
func (in *Info) Range() (start, end uint64) {
	if len(in.Segments) == 0 {
		return 0, 0
	}
	first, last := &in.Segments[0], &in.Segments[len(in.Segments)-1]
	start = first.Offset + uint64(in.OffsetInFirstSegment)
	end = last.End()
	switch in.Version {
	case V1:
		if in.ReadBytesInLastSegment != 0 {
			end = last.Offset + uint64(in.ReadBytesInLastSegment)
			if len(in.Segments) == 1 {
				end += uint64(in.OffsetInFirstSegment)
			}
		}
	case V2:
		if in.LengthOfRange != 0 {
			end = start + in.LengthOfRange
		}
	}
	return start, end
}

// Segment returns the segment with the given ID, or nil.
func (in *Info) Segment(id SegmentID) *Segment {
	for i := range in.Segments {
		if in.Segments[i].ID == id {
			return &in.Segments[i]
		}
	}
	return nil
}

// Slice returns v1 content information for the range [start, end) of the
// content that in (a whole-content v1 CI) describes, as a content server
// answers a range request: the segments intersecting the range, every block
// hash from block 0 of the first one, and the last segment's block list cut
// after the block holding the range end. The segments are shared with in.
func (in *Info) Slice(start, end uint64) (*Info, error) {
	if in.Version != V1 {
		return nil, fmt.Errorf("slice version %v content information: %w", in.Version, ErrVersion)
	}
	if len(in.Segments) == 0 || start >= end || start < in.Segments[0].Offset ||
		end > in.Segments[len(in.Segments)-1].End() {
		return nil, fmt.Errorf("slice [%d, %d): %w", start, end, ErrMalformed)
	}
	i := 0
	for in.Segments[i].End() <= start {
		i++
	}
	j := i
	for in.Segments[j].End() < end {
		j++
	}
	out := &Info{Version: V1, HashAlgo: in.HashAlgo}
	out.Segments = append([]Segment(nil), in.Segments[i:j+1]...)
	first, last := &out.Segments[0], &out.Segments[len(out.Segments)-1]
	out.OffsetInFirstSegment = uint32(start - first.Offset)
	if end != last.End() {
		if i == j {
			out.ReadBytesInLastSegment = uint32(end - start)
		} else {
			out.ReadBytesInLastSegment = uint32(end - last.Offset)
		}
		blocks := int((end - last.Offset + BlockSize - 1) / BlockSize)
		last.BlockHashes = last.BlockHashes[:min(blocks, len(last.BlockHashes))]
	}
	return out, nil
}

// Equal reports whether two Infos carry the same fields (ChunkSegments aside).
func (in *Info) Equal(o *Info) bool {
	if in.Version != o.Version || in.HashAlgo != o.HashAlgo ||
		in.OffsetInFirstSegment != o.OffsetInFirstSegment ||
		in.ReadBytesInLastSegment != o.ReadBytesInLastSegment ||
		in.IndexOfFirstSegment != o.IndexOfFirstSegment || in.LengthOfRange != o.LengthOfRange ||
		len(in.Segments) != len(o.Segments) {
		return false
	}
	for i := range in.Segments {
		a, b := &in.Segments[i], &o.Segments[i]
		if a.Offset != b.Offset || a.Length != b.Length || a.BlockSize != b.BlockSize ||
			a.HashAlgo != b.HashAlgo || a.HoD != b.HoD || a.Kp != b.Kp || a.ID != b.ID ||
			len(a.BlockHashes) != len(b.BlockHashes) {
			return false
		}
		for k := range a.BlockHashes {
			if a.BlockHashes[k] != b.BlockHashes[k] {
				return false
			}
		}
	}
	return true
}
