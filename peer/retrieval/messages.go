package retrieval

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/redleader-p2p/redleader/peer/content"
)

// ProtocolVersion is an MS-PCCRR protocol version in its wire form: the
// high 16 bits hold the minor version, the low 16 bits the major version
// (v1.0 is the bytes 00 00 00 01).
type ProtocolVersion uint32

// Protocol versions.
const (
	// Version1 is protocol version 1.0, the version of every message this package handles.
	Version1 ProtocolVersion = 0x00000001
	// Version2 is protocol version 2.0 (hosted cache GETSEGLIST/SEGLIST; not handled).
	Version2 ProtocolVersion = 0x00000002
)

// NewProtocolVersion returns the version major.minor.
func NewProtocolVersion(major, minor uint16) ProtocolVersion {
	return ProtocolVersion(uint32(minor)<<16 | uint32(major))
}

// Major returns the major version.
func (v ProtocolVersion) Major() uint16 { return uint16(v) }

// Minor returns the minor version.
func (v ProtocolVersion) Minor() uint16 { return uint16(v >> 16) }

// String returns "major.minor".
func (v ProtocolVersion) String() string { return fmt.Sprintf("%d.%d", v.Major(), v.Minor()) }

// MsgType is an MS-PCCRR message type.
type MsgType uint32

// Message types.
const (
	// MsgNegoReq is MSG_NEGO_REQ.
	MsgNegoReq MsgType = 0
	// MsgNegoResp is MSG_NEGO_RESP.
	MsgNegoResp MsgType = 1
	// MsgGetBlkList is MSG_GETBLKLIST.
	MsgGetBlkList MsgType = 2
	// MsgGetBlks is MSG_GETBLKS.
	MsgGetBlks MsgType = 3
	// MsgBlkList is MSG_BLKLIST.
	MsgBlkList MsgType = 4
	// MsgBlk is MSG_BLK.
	MsgBlk MsgType = 5
	// MsgGetSegList is MSG_GETSEGLIST (hosted cache, v2.0; not handled).
	MsgGetSegList MsgType = 6
	// MsgSegList is MSG_SEGLIST (hosted cache, v2.0; not handled).
	MsgSegList MsgType = 7
)

// String names the message type.
func (t MsgType) String() string {
	switch t {
	case MsgNegoReq:
		return "MSG_NEGO_REQ"
	case MsgNegoResp:
		return "MSG_NEGO_RESP"
	case MsgGetBlkList:
		return "MSG_GETBLKLIST"
	case MsgGetBlks:
		return "MSG_GETBLKS"
	case MsgBlkList:
		return "MSG_BLKLIST"
	case MsgBlk:
		return "MSG_BLK"
	case MsgGetSegList:
		return "MSG_GETSEGLIST"
	case MsgSegList:
		return "MSG_SEGLIST"
	default:
		return fmt.Sprintf("MSG(%d)", uint32(t))
	}
}

// CryptoAlgo is the CryptoAlgoId of a message header.
type CryptoAlgo uint32

// Crypto algorithms.
const (
	// CryptoNone means no encryption.
	CryptoNone CryptoAlgo = 0
	// CryptoAES128 is AES-128 in CBC mode.
	CryptoAES128 CryptoAlgo = 1
	// CryptoAES192 is AES-192 in CBC mode.
	CryptoAES192 CryptoAlgo = 2
	// CryptoAES256 is AES-256 in CBC mode.
	CryptoAES256 CryptoAlgo = 3
)

// keyLen returns the AES key length of a, or 0 for CryptoNone and unknown values.
func (a CryptoAlgo) keyLen() int {
	switch a {
	case CryptoAES128:
		return 16
	case CryptoAES192:
		return 24
	case CryptoAES256:
		return 32
	default:
		return 0
	}
}

// Wire sizes.
const (
	// HeaderSize is the size of MESSAGE_HEADER.
	HeaderSize = 16
	// TransportHeaderSize is the size of TRANSPORT_RESPONSE_HEADER.
	TransportHeaderSize = 4
	// MaxRequestSize is the largest request message the protocol allows.
	MaxRequestSize = 98304
	// MaxResponseSize is the largest response message (without transport header) the protocol allows.
	MaxResponseSize = 393216
	segmentIDSize   = content.DigestSize
)

// Header is MESSAGE_HEADER.
type Header struct {
	// Version is the version the message type was defined in (1.0 here).
	Version ProtocolVersion
	// Type is the message type.
	Type MsgType
	// Size is the message size including this header.
	Size uint32
	// Crypto is the CryptoAlgoId.
	Crypto CryptoAlgo
}

// ParseHeader parses the MESSAGE_HEADER at the start of b and checks that
// the message size it declares fits in b.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("parse message header: %d bytes: %w", len(b), ErrTruncated)
	}
	h := Header{
		Version: NewProtocolVersion(binary.BigEndian.Uint16(b[2:4]), binary.BigEndian.Uint16(b[0:2])),
		Type:    MsgType(binary.BigEndian.Uint32(b[4:8])),
		Size:    binary.BigEndian.Uint32(b[8:12]),
		Crypto:  CryptoAlgo(binary.BigEndian.Uint32(b[12:16])),
	}
	if h.Size < HeaderSize || uint64(h.Size) > uint64(len(b)) {
		return h, fmt.Errorf("parse message header: size %d of %d bytes: %w", h.Size, len(b), ErrTruncated)
	}
	return h, nil
}

func appendHeader(b []byte, t MsgType, crypto CryptoAlgo) []byte {
	b = binary.BigEndian.AppendUint16(b, Version1.Minor())
	b = binary.BigEndian.AppendUint16(b, Version1.Major())
	b = binary.BigEndian.AppendUint32(b, uint32(t))
	b = binary.BigEndian.AppendUint32(b, 0) // size, set by finish
	return binary.BigEndian.AppendUint32(b, uint32(crypto))
}

// finish sets the size of the message that starts at b[start].
func finish(b []byte, start int) ([]byte, error) {
	size := len(b) - start
	if size > MaxResponseSize {
		return nil, fmt.Errorf("message of %d bytes: %w", size, ErrTooLarge)
	}
	binary.BigEndian.PutUint32(b[start+8:], uint32(size))
	return b, nil
}

// BlockRange is BLOCK_RANGE: Count blocks from Index.
type BlockRange struct {
	// Index is the first block of the range.
	Index uint32
	// Count is the number of blocks, at least 1.
	Count uint32
}

// End returns the index just past the range.
func (r BlockRange) End() uint64 { return uint64(r.Index) + uint64(r.Count) }

// Contains reports whether block i is in the range.
func (r BlockRange) Contains(i uint32) bool { return i >= r.Index && uint64(i) < r.End() }

// NormalizeRanges returns the ranges sorted, merged and without empty ones.
func NormalizeRanges(rs []BlockRange) []BlockRange {
	out := make([]BlockRange, 0, len(rs))
	for _, r := range rs {
		if r.Count > 0 {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b BlockRange) int { return cmp.Compare(a.Index, b.Index) })
	merged := out[:0]
	for _, r := range out {
		if n := len(merged); n > 0 && uint64(r.Index) <= merged[n-1].End() {
			if r.End() > merged[n-1].End() {
				merged[n-1].Count = uint32(r.End() - uint64(merged[n-1].Index))
			}
			continue
		}
		merged = append(merged, r)
	}
	return merged
}

// IntersectRanges returns the blocks in both a and b as normalized ranges.
func IntersectRanges(a, b []BlockRange) []BlockRange {
	a, b = NormalizeRanges(a), NormalizeRanges(b)
	var out []BlockRange
	for i, j := 0, 0; i < len(a) && j < len(b); {
		lo := max(a[i].Index, b[j].Index)
		hi := min(a[i].End(), b[j].End())
		if uint64(lo) < hi {
			out = append(out, BlockRange{Index: lo, Count: uint32(hi - uint64(lo))})
		}
		if a[i].End() < b[j].End() {
			i++
		} else {
			j++
		}
	}
	return out
}

// rangesContain reports whether block i is in one of rs.
func rangesContain(rs []BlockRange, i uint32) bool {
	for _, r := range rs {
		if r.Contains(i) {
			return true
		}
	}
	return false
}

// nextHeld returns the first block index >= from in held (normalized), or 0.
func nextHeld(held []BlockRange, from uint64) uint32 {
	for _, r := range held {
		if r.End() > from {
			return uint32(max(uint64(r.Index), from))
		}
	}
	return 0
}

// Message is a PCCRR message that can be serialized.
type Message interface {
	// MsgType returns the message type.
	MsgType() MsgType
	// AppendBinary appends the message (header included, no transport header) to b.
	AppendBinary(b []byte) ([]byte, error)
}

// NegoReq is MSG_NEGO_REQ.
type NegoReq struct {
	// Min is the lowest protocol version the client supports.
	Min ProtocolVersion
	// Max is the highest protocol version the client supports.
	Max ProtocolVersion
}

// NegoResp is MSG_NEGO_RESP.
type NegoResp struct {
	// Min is the lowest protocol version the server supports.
	Min ProtocolVersion
	// Max is the highest protocol version the server supports.
	Max ProtocolVersion
}

// GetBlkList is MSG_GETBLKLIST: which of these blocks do you hold?
type GetBlkList struct {
	// SegmentID is the segment asked about.
	SegmentID content.SegmentID
	// Ranges are the blocks of interest.
	Ranges []BlockRange
}

// BlkList is MSG_BLKLIST: the blocks held among those asked about.
type BlkList struct {
	// SegmentID echoes the request.
	SegmentID content.SegmentID
	// Ranges are the held blocks; empty when none (or when the server is busy).
	Ranges []BlockRange
	// NextBlockIndex is the first held block after the ranges, 0 if none.
	NextBlockIndex uint32
}

// GetBlks is MSG_GETBLKS: send me this block.
type GetBlks struct {
	// Crypto is the algorithm the client would like (AES-128 by convention).
	Crypto CryptoAlgo
	// SegmentID is the segment asked for.
	SegmentID content.SegmentID
	// Ranges should hold one range of one block; the server sends the first block.
	Ranges []BlockRange
	// VrfData is DataForVrfBlock, normally empty.
	VrfData []byte
}

// Blk is MSG_BLK: one (encrypted) block, or none when Block is empty.
type Blk struct {
	// Crypto is the algorithm the block is encrypted with.
	Crypto CryptoAlgo
	// SegmentID echoes the request.
	SegmentID content.SegmentID
	// BlockIndex is the index of the block sent (or asked for, when empty).
	BlockIndex uint32
	// NextBlockIndex is the next held block after this one, 0 if none.
	NextBlockIndex uint32
	// Block is the encrypted block; empty means "not held" or "busy". It
	// aliases the buffer it was parsed from.
	Block []byte
	// VrfBlock is the verifier block, normally empty.
	VrfBlock []byte
	// IV is the CBC initialization vector.
	IV []byte
}

// MsgType returns MsgNegoReq.
func (*NegoReq) MsgType() MsgType { return MsgNegoReq }

// MsgType returns MsgNegoResp.
func (*NegoResp) MsgType() MsgType { return MsgNegoResp }

// MsgType returns MsgGetBlkList.
func (*GetBlkList) MsgType() MsgType { return MsgGetBlkList }

// MsgType returns MsgBlkList.
func (*BlkList) MsgType() MsgType { return MsgBlkList }

// MsgType returns MsgGetBlks.
func (*GetBlks) MsgType() MsgType { return MsgGetBlks }

// MsgType returns MsgBlk.
func (*Blk) MsgType() MsgType { return MsgBlk }

func pad(n int) int { return -n & 3 }

func appendBytes(b, p []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
	b = append(b, p...)
	return append(b, make([]byte, pad(len(p)))...)
}

func appendSegmentID(b []byte, id content.SegmentID) []byte { return appendBytes(b, id[:]) }

func appendRanges(b []byte, rs []BlockRange) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(rs)))
	for _, r := range rs {
		b = binary.BigEndian.AppendUint32(b, r.Index)
		b = binary.BigEndian.AppendUint32(b, r.Count)
	}
	return b
}

// AppendBinary appends the message to b.
func (m *NegoReq) AppendBinary(b []byte) ([]byte, error) {
	start := len(b)
	b = appendHeader(b, MsgNegoReq, CryptoNone)
	b = binary.BigEndian.AppendUint32(b, uint32(m.Min))
	b = binary.BigEndian.AppendUint32(b, uint32(m.Max))
	return finish(b, start)
}

// AppendBinary appends the message to b.
func (m *NegoResp) AppendBinary(b []byte) ([]byte, error) {
	start := len(b)
	b = appendHeader(b, MsgNegoResp, CryptoNone)
	b = binary.BigEndian.AppendUint32(b, uint32(m.Min))
	b = binary.BigEndian.AppendUint32(b, uint32(m.Max))
	return finish(b, start)
}

// AppendBinary appends the message to b.
func (m *GetBlkList) AppendBinary(b []byte) ([]byte, error) {
	start := len(b)
	b = appendHeader(b, MsgGetBlkList, CryptoNone)
	b = appendSegmentID(b, m.SegmentID)
	b = appendRanges(b, m.Ranges)
	return finish(b, start)
}

// AppendBinary appends the message to b.
func (m *BlkList) AppendBinary(b []byte) ([]byte, error) {
	start := len(b)
	b = appendHeader(b, MsgBlkList, CryptoNone)
	b = appendSegmentID(b, m.SegmentID)
	b = appendRanges(b, m.Ranges)
	b = binary.BigEndian.AppendUint32(b, m.NextBlockIndex)
	return finish(b, start)
}

// AppendBinary appends the message to b.
func (m *GetBlks) AppendBinary(b []byte) ([]byte, error) {
	start := len(b)
	b = appendHeader(b, MsgGetBlks, m.Crypto)
	b = appendSegmentID(b, m.SegmentID)
	b = appendRanges(b, m.Ranges)
	b = appendBytes(b, m.VrfData)
	return finish(b, start)
}

// AppendBinary appends the message to b.
func (m *Blk) AppendBinary(b []byte) ([]byte, error) {
	start := len(b)
	b = m.appendPrefix(b)
	b = appendBytes(b, m.Block)
	b = m.appendSuffix(b)
	return finish(b, start)
}

// appendPrefix appends everything before SizeOfBlock.
func (m *Blk) appendPrefix(b []byte) []byte {
	b = appendHeader(b, MsgBlk, m.Crypto)
	b = appendSegmentID(b, m.SegmentID)
	b = binary.BigEndian.AppendUint32(b, m.BlockIndex)
	return binary.BigEndian.AppendUint32(b, m.NextBlockIndex)
}

// appendSuffix appends everything after the block and its padding.
func (m *Blk) appendSuffix(b []byte) []byte {
	b = appendBytes(b, m.VrfBlock)
	// No padding after the final field (16-byte IVs never need any).
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.IV)))
	return append(b, m.IV...)
}

// AppendResponse appends a response message preceded by its
// TRANSPORT_RESPONSE_HEADER to b.
func AppendResponse(b []byte, m Message) ([]byte, error) {
	start := len(b)
	b = append(b, 0, 0, 0, 0)
	b, err := m.AppendBinary(b)
	if err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-TransportHeaderSize))
	return b, nil
}

// msgReader is a bounds-checked cursor over one message.
type msgReader struct {
	b   []byte
	off int
	err error
}

func (r *msgReader) take(n uint64) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)-r.off) {
		r.err = ErrTruncated
		return nil
	}
	p := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return p
}

func (r *msgReader) u32() uint32 {
	if p := r.take(4); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

// skipPad skips the padding after a field of n bytes; a missing final pad is tolerated.
func (r *msgReader) skipPad(n int) {
	r.take(uint64(min(pad(n), len(r.b)-r.off)))
}

// bytesField reads SizeOf + bytes + padding; empty fields are nil.
func (r *msgReader) bytesField() []byte {
	n := r.u32()
	p := r.take(uint64(n))
	r.skipPad(len(p))
	if len(p) == 0 {
		return nil
	}
	return p
}

func (r *msgReader) segmentID() content.SegmentID {
	var id content.SegmentID
	n := r.u32()
	if r.err == nil && n != segmentIDSize {
		r.err = fmt.Errorf("segment ID of %d bytes: %w", n, ErrSegmentIDSize)
	}
	copy(id[:], r.take(segmentIDSize))
	return id
}

func (r *msgReader) ranges() []BlockRange {
	n := r.u32()
	if r.err != nil {
		return nil
	}
	if uint64(n)*8 > uint64(len(r.b)-r.off) {
		r.err = fmt.Errorf("%d block ranges: %w", n, ErrTruncated)
		return nil
	}
	rs := make([]BlockRange, n)
	for i := range rs {
		rs[i] = BlockRange{Index: r.u32(), Count: r.u32()}
		if r.err == nil && (rs[i].Count == 0 || rs[i].End() > 1<<32) {
			r.err = fmt.Errorf("block range %d+%d: %w", rs[i].Index, rs[i].Count, ErrMalformed)
		}
	}
	if n == 0 {
		return nil
	}
	return rs
}

// open parses the header of b, checks the message type and returns a reader
// over the message body (trailing bytes beyond the message size are ignored).
func open(b []byte, want MsgType) (*msgReader, Header, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return nil, h, err
	}
	if h.Type != want {
		return nil, h, fmt.Errorf("got %v, want %v: %w", h.Type, want, ErrMsgType)
	}
	return &msgReader{b: b[:h.Size], off: HeaderSize}, h, nil
}

func done(r *msgReader, t MsgType) error {
	if r.err != nil {
		return fmt.Errorf("parse %v: %w", t, r.err)
	}
	return nil
}

// UnmarshalBinary parses an MSG_NEGO_REQ message.
func (m *NegoReq) UnmarshalBinary(b []byte) error {
	r, _, err := open(b, MsgNegoReq)
	if err != nil {
		return fmt.Errorf("parse %v: %w", MsgNegoReq, err)
	}
	m.Min, m.Max = ProtocolVersion(r.u32()), ProtocolVersion(r.u32())
	return done(r, MsgNegoReq)
}

// UnmarshalBinary parses an MSG_NEGO_RESP message.
func (m *NegoResp) UnmarshalBinary(b []byte) error {
	r, _, err := open(b, MsgNegoResp)
	if err != nil {
		return fmt.Errorf("parse %v: %w", MsgNegoResp, err)
	}
	m.Min, m.Max = ProtocolVersion(r.u32()), ProtocolVersion(r.u32())
	return done(r, MsgNegoResp)
}

// UnmarshalBinary parses an MSG_GETBLKLIST message.
func (m *GetBlkList) UnmarshalBinary(b []byte) error {
	r, _, err := open(b, MsgGetBlkList)
	if err != nil {
		return fmt.Errorf("parse %v: %w", MsgGetBlkList, err)
	}
	m.SegmentID = r.segmentID()
	m.Ranges = r.ranges()
	return done(r, MsgGetBlkList)
}

// UnmarshalBinary parses an MSG_BLKLIST message.
func (m *BlkList) UnmarshalBinary(b []byte) error {
	r, _, err := open(b, MsgBlkList)
	if err != nil {
		return fmt.Errorf("parse %v: %w", MsgBlkList, err)
	}
	m.SegmentID = r.segmentID()
	m.Ranges = r.ranges()
	m.NextBlockIndex = r.u32()
	return done(r, MsgBlkList)
}

// UnmarshalBinary parses an MSG_GETBLKS message.
func (m *GetBlks) UnmarshalBinary(b []byte) error {
	r, h, err := open(b, MsgGetBlks)
	if err != nil {
		return fmt.Errorf("parse %v: %w", MsgGetBlks, err)
	}
	m.Crypto = h.Crypto
	m.SegmentID = r.segmentID()
	m.Ranges = r.ranges()
	m.VrfData = r.bytesField()
	if r.err == nil && len(m.Ranges) == 0 {
		r.err = fmt.Errorf("no block range: %w", ErrMalformed)
	}
	return done(r, MsgGetBlks)
}

// UnmarshalBinary parses an MSG_BLK message. Block, VrfBlock and IV alias b.
func (m *Blk) UnmarshalBinary(b []byte) error {
	r, h, err := open(b, MsgBlk)
	if err != nil {
		return fmt.Errorf("parse %v: %w", MsgBlk, err)
	}
	m.Crypto = h.Crypto
	m.SegmentID = r.segmentID()
	m.BlockIndex = r.u32()
	m.NextBlockIndex = r.u32()
	m.Block = r.bytesField()
	m.VrfBlock = r.bytesField()
	m.IV = r.bytesField()
	return done(r, MsgBlk)
}

// ParseRequest parses a request body: MSG_NEGO_REQ, MSG_GETBLKLIST or
// MSG_GETBLKS. It returns ErrMsgType for other message types.
func ParseRequest(b []byte) (Message, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return nil, err
	}
	var m interface {
		Message
		UnmarshalBinary([]byte) error
	}
	switch h.Type {
	case MsgNegoReq:
		m = &NegoReq{}
	case MsgGetBlkList:
		m = &GetBlkList{}
	case MsgGetBlks:
		m = &GetBlks{}
	default:
		return nil, fmt.Errorf("parse request: %v: %w", h.Type, ErrMsgType)
	}
	if err := m.UnmarshalBinary(b); err != nil {
		return nil, err
	}
	return m, nil
}

// ParseResponse parses a response body (TRANSPORT_RESPONSE_HEADER and one
// of MSG_NEGO_RESP, MSG_BLKLIST, MSG_BLK). Byte fields alias b.
func ParseResponse(b []byte) (Message, error) {
	if len(b) < TransportHeaderSize {
		return nil, fmt.Errorf("parse response: %w", ErrTruncated)
	}
	size := binary.BigEndian.Uint32(b)
	if uint64(size) > uint64(len(b)-TransportHeaderSize) {
		return nil, fmt.Errorf("parse response: transport size %d of %d bytes: %w", size, len(b)-TransportHeaderSize, ErrTruncated)
	}
	b = b[TransportHeaderSize : TransportHeaderSize+int(size)]
	h, err := ParseHeader(b)
	if err != nil {
		return nil, fmt.Errorf("parse response: %w", err)
	}
	var m interface {
		Message
		UnmarshalBinary([]byte) error
	}
	switch h.Type {
	case MsgNegoResp:
		m = &NegoResp{}
	case MsgBlkList:
		m = &BlkList{}
	case MsgBlk:
		m = &Blk{}
	default:
		return nil, fmt.Errorf("parse response: %v: %w", h.Type, ErrMsgType)
	}
	if err := m.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("parse response: %w", err)
	}
	return m, nil
}
