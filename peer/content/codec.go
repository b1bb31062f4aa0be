package content

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Wire sizes.
const (
	v1HeaderSize   = 18
	v1SegDescSize  = 16 + 2*DigestSize
	v2HeaderSize   = 31
	v2SegDescSize  = 4 + 2*DigestSize
	v2ChunkHdrSize = 5
)

// reader is a bounds-checked cursor over a byte slice.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b)-r.off < n {
		r.err = ErrTruncated
		return nil
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p
}

func (r *reader) remaining() int { return len(r.b) - r.off }

func (r *reader) u8() uint8 {
	if p := r.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (r *reader) le32() uint32 {
	if p := r.take(4); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

func (r *reader) le64() uint64 {
	if p := r.take(8); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

func (r *reader) be32() uint32 {
	if p := r.take(4); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (r *reader) be64() uint64 {
	if p := r.take(8); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

func (r *reader) digest() Digest {
	var d Digest
	copy(d[:], r.take(DigestSize))
	return d
}

// Parse parses version 1.0 or 2.0 content information. It checks every
// length, the segment layout and the range, derives each segment ID, and
// for v1 segments with a complete block list checks HoD against the block
// hashes.
func Parse(b []byte) (*Info, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("parse content information: %w", ErrTruncated)
	}
	var (
		in  *Info
		err error
	)
	switch {
	case b[0] == 0 && b[1] == 1:
		in, err = parseV1(b)
	case b[0] == 0 && b[1] == 2:
		in, err = parseV2(b)
	default:
		err = fmt.Errorf("version bytes %02x%02x: %w", b[0], b[1], ErrVersion)
	}
	if err != nil {
		return nil, fmt.Errorf("parse content information: %w", err)
	}
	return in, nil
}

func parseV1(b []byte) (*Info, error) {
	r := &reader{b: b}
	r.take(2)
	in := &Info{Version: V1, HashAlgo: HashAlgo(r.le32())}
	in.OffsetInFirstSegment = r.le32()
	in.ReadBytesInLastSegment = r.le32()
	n := r.le32()
	if r.err != nil {
		return nil, r.err
	}
	if in.HashAlgo != SHA256 {
		return nil, fmt.Errorf("v1 %v: %w", in.HashAlgo, ErrHashAlgo)
	}
	if uint64(n)*(v1SegDescSize+4) > uint64(r.remaining()) {
		return nil, fmt.Errorf("%d segments: %w", n, ErrTruncated)
	}
	in.Segments = make([]Segment, n)
	for i := range in.Segments {
		s := &in.Segments[i]
		s.HashAlgo = SHA256
		s.Offset = r.le64()
		s.Length = r.le32()
		s.BlockSize = r.le32()
		s.HoD = r.digest()
		s.Kp = r.digest()
	}
	for i := range in.Segments {
		s := &in.Segments[i]
		if s.BlockSize != BlockSize || s.Length == 0 || s.Length > SegmentSize {
			return nil, fmt.Errorf("segment %d: length %d, block size %d: %w", i, s.Length, s.BlockSize, ErrMalformed)
		}
		c := r.le32()
		if r.err != nil {
			return nil, r.err
		}
		if int64(c) > int64(s.BlockCount()) {
			return nil, fmt.Errorf("segment %d: %d block hashes for %d blocks: %w", i, c, s.BlockCount(), ErrMalformed)
		}
		s.BlockHashes = make([]Digest, c)
		for k := range s.BlockHashes {
			s.BlockHashes[k] = r.digest()
		}
		if r.err != nil {
			return nil, r.err
		}
	}
	if r.remaining() != 0 {
		return nil, ErrTrailingData
	}
	if err := in.validateV1(); err != nil {
		return nil, err
	}
	in.deriveIDs()
	return in, nil
}

// validateV1 checks segment layout and range of a v1 Info.
func (in *Info) validateV1() error {
	if len(in.Segments) == 0 {
		if in.OffsetInFirstSegment != 0 || in.ReadBytesInLastSegment != 0 {
			return fmt.Errorf("range without segments: %w", ErrMalformed)
		}
		return nil
	}
	for i := range in.Segments {
		s := &in.Segments[i]
		if s.Offset%SegmentSize != 0 || s.Offset > math.MaxUint64-uint64(s.Length) {
			return fmt.Errorf("segment %d: offset %d: %w", i, s.Offset, ErrMalformed)
		}
		if i > 0 && s.Offset != in.Segments[i-1].End() {
			return fmt.Errorf("segment %d: offset %d not contiguous: %w", i, s.Offset, ErrMalformed)
		}
		if i < len(in.Segments)-1 && s.Length != SegmentSize {
			return fmt.Errorf("segment %d: short segment %d before the last: %w", i, s.Length, ErrMalformed)
		}
		if err := s.checkHoD(); err != nil {
			return err
		}
	}
	first, last := &in.Segments[0], &in.Segments[len(in.Segments)-1]
	if in.OffsetInFirstSegment >= first.Length {
		return fmt.Errorf("offset in first segment %d: %w", in.OffsetInFirstSegment, ErrMalformed)
	}
	read := uint64(in.ReadBytesInLastSegment)
	if len(in.Segments) == 1 {
		read += uint64(in.OffsetInFirstSegment)
	}
	if read > uint64(last.Length) {
		return fmt.Errorf("read bytes in last segment %d: %w", in.ReadBytesInLastSegment, ErrMalformed)
	}
	return nil
}

func parseV2(b []byte) (*Info, error) {
	r := &reader{b: b}
	r.take(2)
	in := &Info{Version: V2, HashAlgo: HashAlgo(r.u8())}
	start := r.be64()
	in.IndexOfFirstSegment = r.be64()
	in.OffsetInFirstSegment = r.be32()
	in.LengthOfRange = r.be64()
	if r.err != nil {
		return nil, r.err
	}
	if in.HashAlgo != SHA512Trunc {
		return nil, fmt.Errorf("v2 %v: %w", in.HashAlgo, ErrHashAlgo)
	}
	next := start
	for r.remaining() > 0 {
		typ := r.u8()
		size := r.be32()
		if r.err != nil {
			return nil, r.err
		}
		if typ != 0 || size == 0 || size%v2SegDescSize != 0 {
			return nil, fmt.Errorf("chunk type %d, size %d: %w", typ, size, ErrMalformed)
		}
		if int64(size) > int64(r.remaining()) {
			return nil, fmt.Errorf("chunk size %d: %w", size, ErrTruncated)
		}
		count := int(size / v2SegDescSize)
		in.ChunkSegments = append(in.ChunkSegments, count)
		for range count {
			s := Segment{HashAlgo: SHA512Trunc, Offset: next}
			s.Length = r.be32()
			s.BlockSize = s.Length
			s.HoD = r.digest()
			s.Kp = r.digest()
			if s.Length == 0 || s.Offset > math.MaxUint64-uint64(s.Length) {
				return nil, fmt.Errorf("segment at %d: length %d: %w", s.Offset, s.Length, ErrMalformed)
			}
			s.BlockHashes = []Digest{s.HoD}
			next = s.End()
			in.Segments = append(in.Segments, s)
		}
	}
	if len(in.Segments) == 0 {
		return nil, fmt.Errorf("no segments: %w", ErrMalformed)
	}
	if len(in.ChunkSegments) == 1 {
		in.ChunkSegments = nil
	}
	if in.OffsetInFirstSegment >= in.Segments[0].Length {
		return nil, fmt.Errorf("offset in first segment %d: %w", in.OffsetInFirstSegment, ErrMalformed)
	}
	rangeStart := start + uint64(in.OffsetInFirstSegment)
	if in.LengthOfRange > next-rangeStart {
		return nil, fmt.Errorf("length of range %d: %w", in.LengthOfRange, ErrMalformed)
	}
	in.deriveIDs()
	return in, nil
}

func (in *Info) deriveIDs() {
	for i := range in.Segments {
		s := &in.Segments[i]
		s.ID = HoHoDk(s.HashAlgo, s.Kp, s.HoD)
	}
}

// MarshalBinary serializes the content information in its version's wire
// format.
func (in *Info) MarshalBinary() ([]byte, error) {
	return in.AppendBinary(nil)
}

// AppendBinary appends the serialized content information to b.
func (in *Info) AppendBinary(b []byte) ([]byte, error) {
	switch {
	case in.Version == V1 && in.HashAlgo == SHA256:
		return in.appendV1(b)
	case in.Version == V2 && in.HashAlgo == SHA512Trunc:
		return in.appendV2(b)
	default:
		return nil, fmt.Errorf("serialize content information %v %v: %w", in.Version, in.HashAlgo, ErrVersion)
	}
}

func (in *Info) appendV1(b []byte) ([]byte, error) {
	if uint64(len(in.Segments)) > math.MaxUint32 {
		return nil, fmt.Errorf("serialize content information: %d segments: %w", len(in.Segments), ErrMalformed)
	}
	b = append(b, 0x00, 0x01)
	b = binary.LittleEndian.AppendUint32(b, uint32(in.HashAlgo))
	b = binary.LittleEndian.AppendUint32(b, in.OffsetInFirstSegment)
	b = binary.LittleEndian.AppendUint32(b, in.ReadBytesInLastSegment)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(in.Segments)))
	for i := range in.Segments {
		s := &in.Segments[i]
		b = binary.LittleEndian.AppendUint64(b, s.Offset)
		b = binary.LittleEndian.AppendUint32(b, s.Length)
		b = binary.LittleEndian.AppendUint32(b, s.BlockSize)
		b = append(b, s.HoD[:]...)
		b = append(b, s.Kp[:]...)
	}
	for i := range in.Segments {
		s := &in.Segments[i]
		b = binary.LittleEndian.AppendUint32(b, uint32(len(s.BlockHashes)))
		for k := range s.BlockHashes {
			b = append(b, s.BlockHashes[k][:]...)
		}
	}
	return b, nil
}

func (in *Info) appendV2(b []byte) ([]byte, error) {
	chunks := in.ChunkSegments
	if chunks == nil {
		chunks = []int{len(in.Segments)}
	}
	total := 0
	for _, c := range chunks {
		if c <= 0 || c > math.MaxUint32/v2SegDescSize {
			return nil, fmt.Errorf("serialize content information: chunk of %d segments: %w", c, ErrMalformed)
		}
		total += c
	}
	if total != len(in.Segments) || total == 0 {
		return nil, fmt.Errorf("serialize content information: chunks hold %d of %d segments: %w",
			total, len(in.Segments), ErrMalformed)
	}
	b = append(b, 0x00, 0x02, byte(in.HashAlgo))
	b = binary.BigEndian.AppendUint64(b, in.Segments[0].Offset)
	b = binary.BigEndian.AppendUint64(b, in.IndexOfFirstSegment)
	b = binary.BigEndian.AppendUint32(b, in.OffsetInFirstSegment)
	b = binary.BigEndian.AppendUint64(b, in.LengthOfRange)
	i := 0
	for _, c := range chunks {
		b = append(b, 0)
		b = binary.BigEndian.AppendUint32(b, uint32(c*v2SegDescSize))
		for _, s := range in.Segments[i : i+c] {
			b = binary.BigEndian.AppendUint32(b, s.Length)
			b = append(b, s.HoD[:]...)
			b = append(b, s.Kp[:]...)
		}
		i += c
	}
	return b, nil
}
