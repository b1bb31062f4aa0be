package discovery

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxAvailability is the longest v2 Scopes bit array: 2 bits for each of
// MaxSegments segments.
const maxAvailability = (2*MaxSegments + 7) / 8

// scanDatagram applies the checks every datagram gets before any XML is
// read, then scans it into s.doc.
func (s *scanner) scanDatagram(b []byte) error {
	if len(b) > MaxMessageSize {
		return fmt.Errorf("%w: %d bytes", ErrTooLarge, len(b))
	}
	// Every PCCRD message declares the PeerDist namespace (its Types is a
	// PeerDist QName): a cheap filter for the other WS-Discovery traffic
	// (printers, PCs) and junk on port 3702.
	if !bytes.Contains(b, []byte(nsPeerDist)) {
		return fmt.Errorf("%w: no PeerDist namespace", ErrNotPCCRD)
	}
	return s.scan(b)
}

// ParseProbe decodes a PCCRD Probe (v1 or v2). It returns an error wrapping
// ErrTooLarge, ErrNotPCCRD (well-formed but not a PeerDist Probe) or
// ErrMalformed; it never panics.
func ParseProbe(b []byte) (*Probe, error) {
	var s scanner
	if err := s.scanDatagram(b); err != nil {
		return nil, fmt.Errorf("parse probe: %w", err)
	}
	p, err := s.doc.probe()
	if err != nil {
		return nil, fmt.Errorf("parse probe: %w", err)
	}
	return p, nil
}

// ParseProbeMatch decodes a PCCRD ProbeMatches message carrying exactly one
// ProbeMatch (v1 or v2). Errors wrap ErrTooLarge, ErrNotPCCRD or
// ErrMalformed; it never panics. An invalid v2 SegmentAges blob is ignored
// (AgeUnits 0), as the spec says to discard it.
func ParseProbeMatch(b []byte) (*ProbeMatch, error) {
	var s scanner
	if err := s.scanDatagram(b); err != nil {
		return nil, fmt.Errorf("parse probe match: %w", err)
	}
	m, err := s.doc.probeMatch()
	if err != nil {
		return nil, fmt.Errorf("parse probe match: %w", err)
	}
	return m, nil
}

// text returns the trimmed text of text node n and whether it occurred
// exactly once. An element that occurs twice is an error.
func (d *scanned) textOf(n node) ([]byte, bool, error) {
	switch d.count[n] {
	case 0:
		return nil, false, nil
	case 1:
		return bytes.TrimSpace(d.text[n]), true, nil
	}
	return nil, false, fmt.Errorf("%w: element %v repeated", ErrMalformed, n)
}

// version returns the PCCRD version named by the Types node n, or
// ErrNotPCCRD when it is not exactly one PeerDist type.
func (d *scanned) version(n node) (Version, error) {
	if _, ok, err := d.textOf(n); err != nil {
		return 0, err
	} else if !ok {
		return 0, fmt.Errorf("%w: no Types", ErrNotPCCRD)
	}
	t := d.types
	if t.undefined != nil {
		return 0, fmt.Errorf("%w: undeclared prefix %.40q in Types", ErrMalformed, t.undefined)
	}
	if t.n != 1 || !t.peerDist {
		return 0, fmt.Errorf("%w: Types is not a single PeerDist type", ErrNotPCCRD)
	}
	switch string(t.local) {
	case typeV1Local:
		return V1, nil
	case typeV2Local:
		return V2, nil
	}
	return 0, fmt.Errorf("%w: unknown PeerDist type %.40q", ErrNotPCCRD, t.local)
}

// action checks that wsa:Action is want; ErrNotPCCRD when it is missing or
// another one.
func (d *scanned) action(want string) error {
	a, ok, err := d.textOf(nodeAction)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: no wsa:Action", ErrNotPCCRD)
	}
	if string(a) != want {
		return fmt.Errorf("%w: action %.80q", ErrNotPCCRD, a)
	}
	return nil
}

// uri returns the required, bounded text of a URI element.
func (d *scanned) uri(n node) (string, error) {
	s, ok, err := d.textOf(n)
	if err != nil {
		return "", err
	}
	if !ok || len(s) == 0 {
		return "", fmt.Errorf("%w: no %v", ErrMalformed, n)
	}
	if len(s) > maxURILen || bytes.ContainsAny(s, " \t\r\n") {
		return "", fmt.Errorf("%w: bad %v", ErrMalformed, n)
	}
	return string(s), nil
}

func (d *scanned) probe() (*Probe, error) {
	if err := d.action(actionProbe); err != nil {
		return nil, err
	}
	if d.count[nodeProbe] != 1 {
		return nil, fmt.Errorf("%w: want one wsd:Probe in the body", ErrMalformed)
	}
	v, err := d.version(nodeProbeTypes)
	if err != nil {
		return nil, err
	}
	p := &Probe{Version: v}
	if p.MessageID, err = d.uri(nodeMessageID); err != nil {
		return nil, err
	}
	scopes, ok, err := d.textOf(nodeProbeScopes)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: no Scopes", ErrMalformed)
	}
	if string(d.matchBy) != v.matchBy() {
		return nil, fmt.Errorf("%w: MatchBy %.80q for %v", ErrMalformed, d.matchBy, v)
	}
	if v == V1 {
		p.Segments, err = hexScopes(scopes)
	} else {
		p.Segments, err = v2ProbeScopes(scopes)
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (d *scanned) probeMatch() (*ProbeMatch, error) {
	if err := d.action(actionMatches); err != nil {
		return nil, err
	}
	if d.count[nodeMatches] != 1 || d.count[nodeMatch] != 1 {
		return nil, fmt.Errorf("%w: want one wsd:ProbeMatch", ErrMalformed)
	}
	v, err := d.version(nodeMatchTypes)
	if err != nil {
		return nil, err
	}
	m := &ProbeMatch{Version: v}
	if m.MessageID, err = d.uri(nodeMessageID); err != nil {
		return nil, err
	}
	if m.RelatesTo, err = d.uri(nodeRelatesTo); err != nil {
		return nil, err
	}
	if _, ok, err := d.textOf(nodeAddress); err != nil {
		return nil, err
	} else if ok {
		if m.Address, err = d.uri(nodeAddress); err != nil {
			return nil, err
		}
	}
	if n := d.count[nodeAppSequence]; n > 1 {
		return nil, fmt.Errorf("%w: AppSequence repeated", ErrMalformed)
	} else if n == 1 {
		if m.InstanceID, err = parseUint32Bytes(d.instanceID, 10); err != nil {
			return nil, fmt.Errorf("%w: InstanceId: %w", ErrMalformed, err)
		}
		if m.MessageNumber, err = parseUint32Bytes(d.messageNumber, 10); err != nil {
			return nil, fmt.Errorf("%w: MessageNumber: %w", ErrMalformed, err)
		}
	}
	if s, ok, err := d.textOf(nodeMetadataVer); err != nil {
		return nil, err
	} else if ok {
		if m.MetadataVersion, err = parseUint32Bytes(s, 10); err != nil {
			return nil, fmt.Errorf("%w: MetadataVersion: %w", ErrMalformed, err)
		}
	}
	if m.XAddrs, err = d.xaddrs(); err != nil {
		return nil, err
	}
	scopes, ok, err := d.textOf(nodeMatchScopes)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: no Scopes", ErrMalformed)
	}
	if v == V1 {
		err = d.matchV1(m, scopes)
	} else {
		err = d.matchV2(m, scopes)
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

func (d *scanned) xaddrs() ([]string, error) {
	s, ok, err := d.textOf(nodeXAddrs)
	if err != nil {
		return nil, err
	}
	n := 0
	for t, i := nextField(s, 0); t != nil; t, i = nextField(s, i) {
		if len(t) > maxURILen {
			return nil, fmt.Errorf("%w: XAddr too long", ErrMalformed)
		}
		n++
	}
	if !ok || n == 0 || n > maxXAddrs {
		return nil, fmt.Errorf("%w: %d XAddrs", ErrMalformed, n)
	}
	return strings.Fields(string(s)), nil
}

func (d *scanned) matchV1(m *ProbeMatch, scopes []byte) error {
	var err error
	if m.Segments, err = hexScopes(scopes); err != nil {
		return err
	}
	s, ok, err := d.textOf(nodeBlockCount)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: no BlockCount", ErrMalformed)
	}
	m.BlockCounts, err = blockCounts(s, len(m.Segments))
	return err
}

// blockCounts decodes n v1 block counts: 8 hex digits each, whitespace
// ignored.
func blockCounts(s []byte, n int) ([]uint32, error) {
	s = withoutSpace(s)
	if len(s) != 8*n {
		return nil, fmt.Errorf("%w: BlockCount has %d hex digits for %d scopes", ErrMalformed, len(s), n)
	}
	counts := make([]uint32, n)
	for i := range counts {
		var err error
		if counts[i], err = parseUint32Bytes(s[8*i:8*i+8], 16); err != nil {
			return nil, fmt.Errorf("%w: BlockCount: %w", ErrMalformed, err)
		}
	}
	return counts, nil
}

func (d *scanned) matchV2(m *ProbeMatch, scopes []byte) error {
	b, err := decodeBase64Bytes(scopes)
	if err != nil {
		return fmt.Errorf("%w: scopes are not base64: %w", ErrMalformed, err)
	}
	if len(b) == 0 || len(b) > maxAvailability {
		return fmt.Errorf("%w: scopes bit array of %d bytes", ErrMalformed, len(b))
	}
	m.Availability = b
	if s, ok, err := d.textOf(nodeSegmentAges); err != nil {
		return err
	} else if ok {
		m.AgeUnits, m.Ages = segmentAges(s)
	}
	return nil
}

// hexScopes decodes v1 Scopes: whitespace-separated hexBinary HoHoDks.
func hexScopes(s []byte) ([][]byte, error) {
	n := 0
	for t, i := nextField(s, 0); t != nil; t, i = nextField(s, i) {
		n++
	}
	if n == 0 || n > MaxSegments {
		return nil, fmt.Errorf("%w: %d scopes", ErrMalformed, n)
	}
	out := make([][]byte, 0, n)
	buf := make([]byte, len(s)/2)
	for t, i := nextField(s, 0); t != nil; t, i = nextField(s, i) {
		if len(t)%2 != 0 {
			return nil, fmt.Errorf("%w: scope of %d hex digits", ErrMalformed, len(t))
		}
		seg := buf[: len(t)/2 : len(t)/2]
		buf = buf[len(t)/2:]
		if _, err := hex.Decode(seg, t); err != nil {
			return nil, fmt.Errorf("%w: scope is not hexBinary: %w", ErrMalformed, err)
		}
		if !validHoHoDkLen(len(seg)) {
			return nil, fmt.Errorf("%w: scope of %d bytes", ErrMalformed, len(seg))
		}
		out = append(out, seg)
	}
	return out, nil
}

// withoutSpace returns s without its white space (as unicode.IsSpace
// defines it), a copy only when there was some.
func withoutSpace(s []byte) []byte {
	i := 0
	for i < len(s) && s[i] < utf8.RuneSelf && !isASCIISpace(s[i]) {
		i++
	}
	if i == len(s) {
		return s
	}
	out := make([]byte, i, len(s))
	copy(out, s)
	for i < len(s) {
		r, size := utf8.DecodeRune(s[i:])
		if !unicode.IsSpace(r) {
			out = append(out, s[i:i+size]...)
		}
		i += size
	}
	return out
}

func isASCIISpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// decodeBase64Bytes decodes standard base64 ignoring whitespace.
func decodeBase64Bytes(s []byte) ([]byte, error) {
	s = withoutSpace(s)
	b := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Decode(b, s)
	return b[:n], err
}

// v2ProbeScopes decodes v2 Probe Scopes: base64 of SegmentHashSize
// (2 bytes BE), SegmentHashCount (1 byte), then the HoHoDks.
func v2ProbeScopes(s []byte) ([][]byte, error) {
	b, err := decodeBase64Bytes(s)
	if err != nil {
		return nil, fmt.Errorf("%w: scopes are not base64: %w", ErrMalformed, err)
	}
	if len(b) < 3 {
		return nil, fmt.Errorf("%w: scopes blob of %d bytes", ErrMalformed, len(b))
	}
	size, count := int(binary.BigEndian.Uint16(b)), int(b[2])
	if !validHoHoDkLen(size) || count == 0 || len(b) != 3+size*count {
		return nil, fmt.Errorf("%w: scopes blob size %d count %d length %d", ErrMalformed, size, count, len(b))
	}
	out := make([][]byte, count)
	for i := range out {
		out[i] = b[3+i*size : 3+(i+1)*size : 3+(i+1)*size]
	}
	return out, nil
}

// segmentAges decodes an MS-PCCRR Extensible Blob version 1. An invalid
// blob yields units 0 and no ages (the spec says to discard it).
func segmentAges(s []byte) (uint8, []SegmentAge) {
	b, err := decodeBase64Bytes(s)
	if err != nil || len(b) < 4 || binary.BigEndian.Uint16(b) != segmentAgesVer {
		return 0, nil
	}
	units, count := b[2], int(b[3])
	if units < 1 || units > 4 || len(b) < 4*(count+1) {
		return 0, nil
	}
	ages := make([]SegmentAge, count)
	for i := range ages {
		e := b[4+4*i:]
		ages[i] = SegmentAge{Index: e[0], Age: uint32(e[1]) | uint32(e[2])<<8 | uint32(e[3])<<16}
	}
	return units, ages
}

// parseUint32Bytes parses an unsigned 32-bit number with no sign or prefix.
func parseUint32Bytes(s []byte, base int) (uint32, error) {
	if len(s) == 0 || s[0] == '+' || s[0] == '-' {
		return 0, fmt.Errorf("bad number %.20q", s)
	}
	n, err := strconv.ParseUint(string(s), base, 32)
	if err != nil {
		return 0, fmt.Errorf("bad number %.20q", s)
	}
	return uint32(n), nil
}
