package cache

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/redleader-p2p/redleader/peer/content"
)

// On-disk formats. All integers are little-endian. Each segment lives in
// its own directory named by the hex segment ID:
//
//	segment  the segment description (descFile), replaced atomically
//	data     block i at offset i*BlockSize; a sparse file
//	blocks   the commit log (logFile): one 16-byte record per block written
const (
	descFile = "segment"
	dataFile = "data"
	logFile  = "blocks"
)

// Segment description file: magic, version, 3 reserved bytes, HashAlgo,
// BlockSize, Length (u32), Offset (u64), HoD, Kp, ID, the number of block
// hashes (u32), the hashes, and a CRC-32C of everything before it.
const (
	descMagic      = "RLSG"
	descVersion    = 1
	descHeaderSize = 4 + 1 + 3 + 4 + 4 + 4 + 8 + 3*content.DigestSize + 4
	descCRCSize    = 4
)

// Commit log record: magic "RL", kind, reserved, block index (u32), block
// length (u32), CRC-32C of the first 12 bytes.
const (
	recordSize      = 16
	recordKindBlock = 1
)

// maxSegmentLength bounds a segment description read from disk or given to
// AddSegment, so a bad description cannot ask for absurd allocations. v1
// segments are at most 32 MiB; v2 segments are content-defined and smaller.
const maxSegmentLength = 128 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodeDesc serializes a segment description.
func encodeDesc(s *content.Segment) []byte {
	b := make([]byte, 0, descHeaderSize+len(s.BlockHashes)*content.DigestSize+descCRCSize)
	b = append(b, descMagic...)
	b = append(b, descVersion, 0, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(s.HashAlgo))
	b = binary.LittleEndian.AppendUint32(b, s.BlockSize)
	b = binary.LittleEndian.AppendUint32(b, s.Length)
	b = binary.LittleEndian.AppendUint64(b, s.Offset)
	b = append(b, s.HoD[:]...)
	b = append(b, s.Kp[:]...)
	b = append(b, s.ID[:]...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s.BlockHashes)))
	for i := range s.BlockHashes {
		b = append(b, s.BlockHashes[i][:]...)
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// decodeDesc parses and validates a segment description file.
func decodeDesc(b []byte) (*content.Segment, error) {
	if len(b) < descHeaderSize+descCRCSize {
		return nil, fmt.Errorf("description of %d bytes: %w", len(b), ErrBadDescription)
	}
	if string(b[:4]) != descMagic || b[4] != descVersion {
		return nil, fmt.Errorf("description magic or version: %w", ErrBadDescription)
	}
	body, sum := b[:len(b)-descCRCSize], binary.LittleEndian.Uint32(b[len(b)-descCRCSize:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, fmt.Errorf("description checksum: %w", ErrBadDescription)
	}
	s := &content.Segment{
		HashAlgo:  content.HashAlgo(binary.LittleEndian.Uint32(b[8:])),
		BlockSize: binary.LittleEndian.Uint32(b[12:]),
		Length:    binary.LittleEndian.Uint32(b[16:]),
		Offset:    binary.LittleEndian.Uint64(b[20:]),
	}
	p := b[28:]
	p = p[copy(s.HoD[:], p):]
	p = p[copy(s.Kp[:], p):]
	p = p[copy(s.ID[:], p):]
	n := uint64(binary.LittleEndian.Uint32(p))
	p = p[4 : len(p)-descCRCSize]
	if uint64(len(p)) != n*content.DigestSize {
		return nil, fmt.Errorf("description lists %d hashes in %d bytes: %w", n, len(p), ErrBadDescription)
	}
	if n > 0 {
		s.BlockHashes = make([]content.Digest, n)
		for i := range s.BlockHashes {
			p = p[copy(s.BlockHashes[i][:], p):]
		}
	}
	if err := validateDesc(s); err != nil {
		return nil, err
	}
	return s, nil
}

// validateDesc checks that a segment description is self-consistent: a
// supported algorithm and sane sizes, an ID derived from its Kp and HoD,
// and (v1, complete block list) a HoD matching the block hashes.
func validateDesc(s *content.Segment) error {
	if s.Length == 0 || s.Length > maxSegmentLength {
		return fmt.Errorf("segment %v length %d: %w", s.ID, s.Length, ErrBadDescription)
	}
	switch s.HashAlgo {
	case content.SHA256:
		if s.BlockSize != content.BlockSize || s.Length > content.SegmentSize {
			return fmt.Errorf("v1 segment %v block size %d length %d: %w", s.ID, s.BlockSize, s.Length, ErrBadDescription)
		}
	case content.SHA512Trunc:
		if s.BlockSize != s.Length {
			return fmt.Errorf("v2 segment %v block size %d length %d: %w", s.ID, s.BlockSize, s.Length, ErrBadDescription)
		}
		if len(s.BlockHashes) == 1 && s.BlockHashes[0] != s.HoD {
			return fmt.Errorf("v2 segment %v block hash is not its HoD: %w", s.ID, ErrBadDescription)
		}
	default:
		return fmt.Errorf("segment %v algorithm %v: %w", s.ID, s.HashAlgo, ErrBadDescription)
	}
	if len(s.BlockHashes) > s.BlockCount() {
		return fmt.Errorf("segment %v lists %d block hashes for %d blocks: %w",
			s.ID, len(s.BlockHashes), s.BlockCount(), ErrBadDescription)
	}
	if content.HoHoDk(s.HashAlgo, s.Kp, s.HoD) != s.ID {
		return fmt.Errorf("segment %v: ID is not HoHoDk(Kp, HoD): %w", s.ID, ErrBadDescription)
	}
	if s.HashAlgo == content.SHA256 && len(s.BlockHashes) == s.BlockCount() &&
		content.HoDV1(s.BlockHashes) != s.HoD {
		return fmt.Errorf("segment %v: %w", s.ID, content.ErrHoDMismatch)
	}
	return nil
}

// encodeRecord returns the commit record of block index of length n.
func encodeRecord(index uint32, n uint32) [recordSize]byte {
	var r [recordSize]byte
	r[0], r[1], r[2] = 'R', 'L', recordKindBlock
	binary.LittleEndian.PutUint32(r[4:], index)
	binary.LittleEndian.PutUint32(r[8:], n)
	binary.LittleEndian.PutUint32(r[12:], crc32.Checksum(r[:12], castagnoli))
	return r
}

// logEntry is one valid commit record.
type logEntry struct {
	index  uint32
	length uint32
}

// parseLog returns the valid records of a commit log in order and the
// number of bytes it skipped (bad records and a torn tail). Records are
// fixed-size, so one bad record does not hide the ones after it.
func parseLog(b []byte) (entries []logEntry, skipped int) {
	for len(b) >= recordSize {
		r := b[:recordSize]
		b = b[recordSize:]
		if r[0] != 'R' || r[1] != 'L' || r[2] != recordKindBlock || r[3] != 0 ||
			crc32.Checksum(r[:12], castagnoli) != binary.LittleEndian.Uint32(r[12:]) {
			skipped += recordSize
			continue
		}
		entries = append(entries, logEntry{
			index:  binary.LittleEndian.Uint32(r[4:]),
			length: binary.LittleEndian.Uint32(r[8:]),
		})
	}
	return entries, skipped + len(b)
}
