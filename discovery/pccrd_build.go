package discovery

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"strconv"
	"strings"
)

// The builders emit the compact single-line form iPXE uses
// (src/net/pccrd.c), with the exact prefixes soap, wsa, wsd and PeerDist.
// iPXE parses ProbeMatches by substring search, so wsd:Scopes, wsd:XAddrs
// and PeerDist:BlockCount never carry attributes and are never
// self-closing.
const envelopeOpen = `<?xml version="1.0" encoding="utf-8"?>` +
	`<soap:Envelope xmlns:soap="` + nsSOAP + `" xmlns:wsa="` + nsWSA +
	`" xmlns:wsd="` + nsWSD + `" xmlns:PeerDist="` + nsPeerDist + `">`

const envelopeClose = `</soap:Body></soap:Envelope>`

// Marshal encodes the Probe. Segments must hold 1 to MaxSegments HoHoDks of
// 32, 48 or 64 bytes (one length for v2). v1 Scopes are upper-case hex.
func (p *Probe) Marshal() ([]byte, error) {
	if !p.Version.valid() {
		return nil, fmt.Errorf("%w: version %d", ErrInvalidMessage, p.Version)
	}
	if err := checkURI(p.MessageID, "MessageID"); err != nil {
		return nil, err
	}
	if err := checkSegments(p.Segments, p.Version == V2); err != nil {
		return nil, err
	}
	var b strings.Builder
	b.Grow(len(envelopeOpen) + 512 + 65*len(p.Segments))
	b.WriteString(envelopeOpen)
	b.WriteString(`<soap:Header><wsa:To>` + toProbe + `</wsa:To><wsa:Action>` + actionProbe +
		`</wsa:Action><wsa:MessageID>`)
	writeEscaped(&b, p.MessageID)
	b.WriteString(`</wsa:MessageID></soap:Header><soap:Body><wsd:Probe><wsd:Types>PeerDist:`)
	b.WriteString(p.Version.typeLocal())
	b.WriteString(`</wsd:Types><wsd:Scopes MatchBy="` + p.Version.matchBy() + `">`)
	if p.Version == V1 {
		writeHexScopes(&b, p.Segments)
	} else {
		size := len(p.Segments[0])
		blob := make([]byte, 3, 3+size*len(p.Segments))
		binary.BigEndian.PutUint16(blob, uint16(size))
		blob[2] = byte(len(p.Segments))
		for _, s := range p.Segments {
			blob = append(blob, s...)
		}
		b.WriteString(base64.StdEncoding.EncodeToString(blob))
	}
	b.WriteString(`</wsd:Scopes></wsd:Probe>` + envelopeClose)
	return []byte(b.String()), nil
}

// Marshal encodes the ProbeMatch. v1 needs Segments with one BlockCounts
// entry each (8 upper-case hex digits per count); v2 needs Availability and
// writes SegmentAges from AgeUnits/Ages (an empty blob with units 1/100 s
// when AgeUnits is 0). MetadataVersion 0 is written as the version number.
func (m *ProbeMatch) Marshal() ([]byte, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	var b strings.Builder
	b.Grow(len(envelopeOpen) + 1024 + 74*len(m.Segments))
	b.WriteString(envelopeOpen)
	b.WriteString(`<soap:Header><wsa:To>` + toAnonymous + `</wsa:To><wsa:Action>` + actionMatches +
		`</wsa:Action><wsa:MessageID>`)
	writeEscaped(&b, m.MessageID)
	b.WriteString(`</wsa:MessageID><wsa:RelatesTo>`)
	writeEscaped(&b, m.RelatesTo)
	b.WriteString(`</wsa:RelatesTo><wsd:AppSequence InstanceId="`)
	b.WriteString(strconv.FormatUint(uint64(m.InstanceID), 10))
	b.WriteString(`" MessageNumber="`)
	b.WriteString(strconv.FormatUint(uint64(m.MessageNumber), 10))
	b.WriteString(`"/></soap:Header><soap:Body><wsd:ProbeMatches><wsd:ProbeMatch>` +
		`<wsa:EndpointReference><wsa:Address>`)
	writeEscaped(&b, m.Address)
	b.WriteString(`</wsa:Address></wsa:EndpointReference><wsd:Types>PeerDist:`)
	b.WriteString(m.Version.typeLocal())
	b.WriteString(`</wsd:Types><wsd:Scopes>`)
	if m.Version == V1 {
		writeHexScopes(&b, m.Segments)
	} else {
		b.WriteString(base64.StdEncoding.EncodeToString(m.Availability))
	}
	b.WriteString(`</wsd:Scopes><wsd:XAddrs>`)
	for i, x := range m.XAddrs {
		if i > 0 {
			b.WriteByte(' ')
		}
		writeEscaped(&b, x)
	}
	mv := m.MetadataVersion
	if mv == 0 {
		mv = uint32(m.Version)
	}
	b.WriteString(`</wsd:XAddrs><wsd:MetadataVersion>`)
	b.WriteString(strconv.FormatUint(uint64(mv), 10))
	b.WriteString(`</wsd:MetadataVersion><PeerDist:PeerDistData>`)
	if m.Version == V1 {
		b.WriteString(`<PeerDist:BlockCount>`)
		for _, c := range m.BlockCounts {
			fmt.Fprintf(&b, "%08X", c)
		}
		b.WriteString(`</PeerDist:BlockCount>`)
	} else {
		b.WriteString(`<PeerDist:SegmentAges>`)
		b.WriteString(base64.StdEncoding.EncodeToString(m.segmentAgesBlob()))
		b.WriteString(`</PeerDist:SegmentAges>`)
	}
	b.WriteString(`</PeerDist:PeerDistData></wsd:ProbeMatch></wsd:ProbeMatches>` + envelopeClose)
	return []byte(b.String()), nil
}

func (m *ProbeMatch) check() error {
	if !m.Version.valid() {
		return fmt.Errorf("%w: version %d", ErrInvalidMessage, m.Version)
	}
	for _, u := range []struct{ v, name string }{
		{m.MessageID, "MessageID"}, {m.RelatesTo, "RelatesTo"}, {m.Address, "Address"},
	} {
		if err := checkURI(u.v, u.name); err != nil {
			return err
		}
	}
	if len(m.XAddrs) == 0 || len(m.XAddrs) > maxXAddrs {
		return fmt.Errorf("%w: %d XAddrs", ErrInvalidMessage, len(m.XAddrs))
	}
	for _, x := range m.XAddrs {
		if err := checkURI(x, "XAddr"); err != nil {
			return err
		}
	}
	if m.Version == V1 {
		if err := checkSegments(m.Segments, false); err != nil {
			return err
		}
		if len(m.BlockCounts) != len(m.Segments) {
			return fmt.Errorf("%w: %d block counts for %d segments", ErrInvalidMessage, len(m.BlockCounts), len(m.Segments))
		}
		return nil
	}
	if len(m.Availability) == 0 || len(m.Availability) > maxAvailability {
		return fmt.Errorf("%w: availability of %d bytes", ErrInvalidMessage, len(m.Availability))
	}
	if m.AgeUnits > 4 || len(m.Ages) > MaxSegments {
		return fmt.Errorf("%w: segment ages", ErrInvalidMessage)
	}
	for _, a := range m.Ages {
		if a.Age >= 1<<24 {
			return fmt.Errorf("%w: segment age %d does not fit 24 bits", ErrInvalidMessage, a.Age)
		}
	}
	return nil
}

// segmentAgesBlob encodes AgeUnits/Ages as an Extensible Blob version 1.
func (m *ProbeMatch) segmentAgesBlob() []byte {
	units := m.AgeUnits
	if units == 0 {
		units = segmentAgeUnits
	}
	blob := make([]byte, 4, 4+4*len(m.Ages))
	binary.BigEndian.PutUint16(blob, segmentAgesVer)
	blob[2], blob[3] = units, byte(len(m.Ages))
	for _, a := range m.Ages {
		blob = append(blob, a.Index, byte(a.Age), byte(a.Age>>8), byte(a.Age>>16))
	}
	return blob
}

// checkURI validates a non-empty, bounded, whitespace-free text value.
func checkURI(s, name string) error {
	if s == "" || len(s) > maxURILen || strings.ContainsAny(s, " \t\r\n") {
		return fmt.Errorf("%w: bad %s %.80q", ErrInvalidMessage, name, s)
	}
	return nil
}

// checkSegments validates a segment list; sameLen requires one length (v2).
func checkSegments(segs [][]byte, sameLen bool) error {
	if len(segs) == 0 || len(segs) > MaxSegments {
		return fmt.Errorf("%w: %d segments", ErrInvalidMessage, len(segs))
	}
	for _, s := range segs {
		if !validHoHoDkLen(len(s)) || (sameLen && len(s) != len(segs[0])) {
			return fmt.Errorf("%w: segment ID of %d bytes", ErrInvalidMessage, len(s))
		}
	}
	return nil
}

// writeHexScopes writes HoHoDks as space-separated upper-case hex.
func writeHexScopes(b *strings.Builder, segs [][]byte) {
	for i, s := range segs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strings.ToUpper(hex.EncodeToString(s)))
	}
}

// writeEscaped writes s with XML special characters escaped.
func writeEscaped(b *strings.Builder, s string) {
	_ = xml.EscapeText(b, []byte(s)) // writing to a strings.Builder never fails
}
