package discovery

// This file is the reference decoder: the encoding/xml-based parser that
// ParseProbe and ParseProbeMatch used before the hand-written scanner
// (pccrd_scan.go). It is kept unchanged, only renamed (parseProbeXML,
// parseProbeMatchXML), so that FuzzParseEquivalence can check the fast path
// against it, byte for byte of input, result for result.

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Element paths the parser captures. Each step is a short namespace tag
// (s = SOAP 1.2, a = WS-Addressing, d = WS-Discovery, p = PeerDist, ? = any
// other namespace) and the local name.
const (
	pathEnvelope    = "s:Envelope"
	pathHeader      = pathEnvelope + "/s:Header"
	pathTo          = pathHeader + "/a:To"
	pathAction      = pathHeader + "/a:Action"
	pathMessageID   = pathHeader + "/a:MessageID"
	pathRelatesTo   = pathHeader + "/a:RelatesTo"
	pathAppSequence = pathHeader + "/d:AppSequence"
	pathBody        = pathEnvelope + "/s:Body"
	pathProbe       = pathBody + "/d:Probe"
	pathProbeTypes  = pathProbe + "/d:Types"
	pathProbeScopes = pathProbe + "/d:Scopes"
	pathMatches     = pathBody + "/d:ProbeMatches"
	pathMatch       = pathMatches + "/d:ProbeMatch"
	pathAddress     = pathMatch + "/a:EndpointReference/a:Address"
	pathMatchTypes  = pathMatch + "/d:Types"
	pathMatchScopes = pathMatch + "/d:Scopes"
	pathXAddrs      = pathMatch + "/d:XAddrs"
	pathMetadataVer = pathMatch + "/d:MetadataVersion"
	pathBlockCount  = pathMatch + "/p:PeerDistData/p:BlockCount"
	pathSegmentAges = pathMatch + "/p:PeerDistData/p:SegmentAges"
)

// isTextPath reports whether the character data of the element at path is
// captured.
func isTextPath(path string) bool {
	switch path {
	case pathTo, pathAction, pathMessageID, pathRelatesTo, pathProbeTypes,
		pathProbeScopes, pathAddress, pathMatchTypes, pathMatchScopes,
		pathXAddrs, pathMetadataVer, pathBlockCount, pathSegmentAges:
		return true
	}
	return false
}

// qname is a resolved XML qualified name.
type qname struct{ space, local string }

// field is the captured text of one element.
type field struct {
	text  string
	count int // occurrences of the element
}

// envelope is the raw content of a SOAP envelope relevant to PCCRD.
type envelope struct {
	fields    map[string]*field
	elements  map[string]int // occurrences of every element path seen
	types     []qname        // resolved wsd:Types of the Probe or ProbeMatch
	typesErr  error          // a Types QName that could not be resolved
	matchBy   string         // MatchBy attribute of the Probe's wsd:Scopes
	appSeq    []xml.Attr     // attributes of wsd:AppSequence
	hasAppSeq bool
}

// text returns the trimmed text of the element at path and whether it
// occurred exactly once. An element that occurs twice is an error.
func (e *envelope) text(path string) (string, bool, error) {
	f := e.fields[path]
	if f == nil {
		return "", false, nil
	}
	if f.count > 1 {
		return "", false, fmt.Errorf("%w: element %s repeated", ErrMalformed, path)
	}
	return strings.TrimSpace(f.text), true, nil
}

// nsBinding is one namespace declaration in scope.
type nsBinding struct {
	prefix, uri string
	depth       int
}

func nsTag(space string) string {
	switch space {
	case nsSOAP:
		return "s:"
	case nsWSA:
		return "a:"
	case nsWSD:
		return "d:"
	case nsPeerDist:
		return "p:"
	default:
		return "?:"
	}
}

// parseEnvelope runs the XML tokenizer over b and captures the parts of a
// SOAP envelope PCCRD needs. It rejects oversized input, DTDs, deep
// nesting and anything that is not one well-formed SOAP 1.2 envelope.
func parseEnvelope(b []byte) (*envelope, error) {
	if len(b) > MaxMessageSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(b))
	}
	// Every PCCRD message declares the PeerDist namespace (its Types is a
	// PeerDist QName): a cheap filter for the other WS-Discovery traffic
	// (printers, PCs) and junk on port 3702.
	if !bytes.Contains(b, []byte(nsPeerDist)) {
		return nil, fmt.Errorf("%w: no PeerDist namespace", ErrNotPCCRD)
	}
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	env := &envelope{fields: map[string]*field{}, elements: map[string]int{}}
	var (
		stack    []string    // element paths, innermost last
		ns       []nsBinding // namespace declarations in scope
		capture  *strings.Builder
		rootSeen bool
	)
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if len(stack) == 0 {
				if rootSeen {
					return nil, fmt.Errorf("%w: several root elements", ErrMalformed)
				}
				rootSeen = true
				if t.Name.Space != nsSOAP || t.Name.Local != "Envelope" {
					return nil, fmt.Errorf("%w: root element is not a SOAP 1.2 Envelope", ErrNotPCCRD)
				}
			}
			if capture != nil {
				return nil, fmt.Errorf("%w: element inside %s", ErrMalformed, stack[len(stack)-1])
			}
			if len(stack) >= maxDepth {
				return nil, fmt.Errorf("%w: elements nested deeper than %d", ErrMalformed, maxDepth)
			}
			for _, a := range t.Attr {
				switch {
				case a.Name.Space == "xmlns":
					ns = append(ns, nsBinding{a.Name.Local, a.Value, len(stack)})
				case a.Name.Space == "" && a.Name.Local == "xmlns":
					ns = append(ns, nsBinding{"", a.Value, len(stack)})
				}
			}
			path := nsTag(t.Name.Space) + t.Name.Local
			if len(stack) > 0 {
				path = stack[len(stack)-1] + "/" + path
			}
			stack = append(stack, path)
			env.elements[path]++
			if isTextPath(path) {
				f := env.fields[path]
				if f == nil {
					f = &field{}
					env.fields[path] = f
				}
				f.count++
				capture = &strings.Builder{}
			}
			switch path {
			case pathProbeScopes:
				env.matchBy = attr(t.Attr, "MatchBy")
			case pathAppSequence:
				env.appSeq = t.Attr
				env.hasAppSeq = true
			}
		case xml.CharData:
			if capture != nil {
				capture.Write(t)
			}
		case xml.EndElement:
			path := stack[len(stack)-1]
			if capture != nil {
				env.fields[path].text = capture.String()
				capture = nil
			}
			if path == pathProbeTypes || path == pathMatchTypes {
				env.types, env.typesErr = resolveQNames(env.fields[path].text, ns)
			}
			stack = stack[:len(stack)-1]
			for len(ns) > 0 && ns[len(ns)-1].depth >= len(stack) {
				ns = ns[:len(ns)-1]
			}
		case xml.Directive:
			return nil, fmt.Errorf("%w: DTD or directive not allowed", ErrMalformed)
		}
	}
	if !rootSeen {
		return nil, fmt.Errorf("%w: no root element", ErrMalformed)
	}
	return env, nil
}

// attr returns the trimmed value of the unqualified attribute name.
func attr(attrs []xml.Attr, name string) string {
	for _, a := range attrs {
		if a.Name.Space == "" && a.Name.Local == name {
			return strings.TrimSpace(a.Value)
		}
	}
	return ""
}

// resolveQNames resolves a whitespace-separated list of QNames (the value
// of wsd:Types) against the namespace declarations in scope.
func resolveQNames(text string, ns []nsBinding) ([]qname, error) {
	var out []qname
	for _, tok := range strings.Fields(text) {
		prefix, local, ok := strings.Cut(tok, ":")
		if !ok {
			prefix, local = "", tok
		}
		uri, found := "", false
		for i := len(ns) - 1; i >= 0; i-- {
			if ns[i].prefix == prefix {
				uri, found = ns[i].uri, true
				break
			}
		}
		if !found && prefix != "" {
			return nil, fmt.Errorf("%w: undeclared prefix %q in Types", ErrMalformed, prefix)
		}
		out = append(out, qname{uri, local})
	}
	return out, nil
}

// pccrdVersion returns the PCCRD version named by the Types element at
// path, or ErrNotPCCRD when it is not exactly one PeerDist type.
func (e *envelope) pccrdVersion(path string) (Version, error) {
	if _, ok, err := e.text(path); err != nil {
		return 0, err
	} else if !ok {
		return 0, fmt.Errorf("%w: no Types", ErrNotPCCRD)
	}
	if e.typesErr != nil {
		return 0, e.typesErr
	}
	if len(e.types) != 1 || e.types[0].space != nsPeerDist {
		return 0, fmt.Errorf("%w: Types is not a single PeerDist type", ErrNotPCCRD)
	}
	switch e.types[0].local {
	case typeV1Local:
		return V1, nil
	case typeV2Local:
		return V2, nil
	}
	return 0, fmt.Errorf("%w: unknown PeerDist type %q", ErrNotPCCRD, e.types[0].local)
}

// action returns the wsa:Action or ErrNotPCCRD when it is missing.
func (e *envelope) action() (string, error) {
	a, ok, err := e.text(pathAction)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("%w: no wsa:Action", ErrNotPCCRD)
	}
	return a, nil
}

// uri returns the required, bounded text of a URI element.
func (e *envelope) uri(path, name string) (string, error) {
	s, ok, err := e.text(path)
	if err != nil {
		return "", err
	}
	if !ok || s == "" {
		return "", fmt.Errorf("%w: no %s", ErrMalformed, name)
	}
	if len(s) > maxURILen || strings.ContainsAny(s, " \t\r\n") {
		return "", fmt.Errorf("%w: bad %s", ErrMalformed, name)
	}
	return s, nil
}

// parseProbeXML is the reference ParseProbe.
func parseProbeXML(b []byte) (*Probe, error) {
	env, err := parseEnvelope(b)
	if err != nil {
		return nil, fmt.Errorf("parse probe: %w", err)
	}
	p, err := env.probe()
	if err != nil {
		return nil, fmt.Errorf("parse probe: %w", err)
	}
	return p, nil
}

func (e *envelope) probe() (*Probe, error) {
	action, err := e.action()
	if err != nil {
		return nil, err
	}
	if action != actionProbe {
		return nil, fmt.Errorf("%w: action %.80q", ErrNotPCCRD, action)
	}
	if e.elements[pathProbe] != 1 {
		return nil, fmt.Errorf("%w: want one wsd:Probe in the body", ErrMalformed)
	}
	v, err := e.pccrdVersion(pathProbeTypes)
	if err != nil {
		return nil, err
	}
	p := &Probe{Version: v}
	if p.MessageID, err = e.uri(pathMessageID, "MessageID"); err != nil {
		return nil, err
	}
	scopes, ok, err := e.text(pathProbeScopes)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: no Scopes", ErrMalformed)
	}
	if e.matchBy != v.matchBy() {
		return nil, fmt.Errorf("%w: MatchBy %.80q for %v", ErrMalformed, e.matchBy, v)
	}
	if v == V1 {
		p.Segments, err = parseHexScopes(scopes)
	} else {
		p.Segments, err = parseV2ProbeScopes(scopes)
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

// parseHexScopes decodes v1 Scopes: whitespace-separated hexBinary HoHoDks.
func parseHexScopes(s string) ([][]byte, error) {
	toks := strings.Fields(s)
	if len(toks) == 0 || len(toks) > MaxSegments {
		return nil, fmt.Errorf("%w: %d scopes", ErrMalformed, len(toks))
	}
	out := make([][]byte, 0, len(toks))
	for _, t := range toks {
		b, err := hex.DecodeString(t)
		if err != nil {
			return nil, fmt.Errorf("%w: scope is not hexBinary: %w", ErrMalformed, err)
		}
		if !validHoHoDkLen(len(b)) {
			return nil, fmt.Errorf("%w: scope of %d bytes", ErrMalformed, len(b))
		}
		out = append(out, b)
	}
	return out, nil
}

// decodeBase64 decodes standard base64 ignoring whitespace.
func decodeBase64(s string) ([]byte, error) {
	return base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
}

// parseV2ProbeScopes decodes v2 Probe Scopes: base64 of SegmentHashSize
// (2 bytes BE), SegmentHashCount (1 byte), then the HoHoDks.
func parseV2ProbeScopes(s string) ([][]byte, error) {
	b, err := decodeBase64(s)
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

// parseProbeMatchXML is the reference ParseProbeMatch.
func parseProbeMatchXML(b []byte) (*ProbeMatch, error) {
	env, err := parseEnvelope(b)
	if err != nil {
		return nil, fmt.Errorf("parse probe match: %w", err)
	}
	m, err := env.probeMatch()
	if err != nil {
		return nil, fmt.Errorf("parse probe match: %w", err)
	}
	return m, nil
}

func (e *envelope) probeMatch() (*ProbeMatch, error) {
	action, err := e.action()
	if err != nil {
		return nil, err
	}
	if action != actionMatches {
		return nil, fmt.Errorf("%w: action %.80q", ErrNotPCCRD, action)
	}
	if e.elements[pathMatches] != 1 || e.elements[pathMatch] != 1 {
		return nil, fmt.Errorf("%w: want one wsd:ProbeMatch", ErrMalformed)
	}
	v, err := e.pccrdVersion(pathMatchTypes)
	if err != nil {
		return nil, err
	}
	m := &ProbeMatch{Version: v}
	if m.MessageID, err = e.uri(pathMessageID, "MessageID"); err != nil {
		return nil, err
	}
	if m.RelatesTo, err = e.uri(pathRelatesTo, "RelatesTo"); err != nil {
		return nil, err
	}
	if _, ok, err := e.text(pathAddress); err != nil {
		return nil, err
	} else if ok {
		if m.Address, err = e.uri(pathAddress, "Address"); err != nil {
			return nil, err
		}
	}
	if e.hasAppSeq {
		if e.elements[pathAppSequence] != 1 {
			return nil, fmt.Errorf("%w: AppSequence repeated", ErrMalformed)
		}
		if m.InstanceID, err = parseUint32(attr(e.appSeq, "InstanceId"), 10); err != nil {
			return nil, fmt.Errorf("%w: InstanceId: %w", ErrMalformed, err)
		}
		if m.MessageNumber, err = parseUint32(attr(e.appSeq, "MessageNumber"), 10); err != nil {
			return nil, fmt.Errorf("%w: MessageNumber: %w", ErrMalformed, err)
		}
	}
	if s, ok, err := e.text(pathMetadataVer); err != nil {
		return nil, err
	} else if ok {
		if m.MetadataVersion, err = parseUint32(s, 10); err != nil {
			return nil, fmt.Errorf("%w: MetadataVersion: %w", ErrMalformed, err)
		}
	}
	if m.XAddrs, err = e.xaddrs(); err != nil {
		return nil, err
	}
	scopes, ok, err := e.text(pathMatchScopes)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: no Scopes", ErrMalformed)
	}
	if v == V1 {
		err = m.parseV1(e, scopes)
	} else {
		err = m.parseV2(e, scopes)
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

func (e *envelope) xaddrs() ([]string, error) {
	s, ok, err := e.text(pathXAddrs)
	if err != nil {
		return nil, err
	}
	toks := strings.Fields(s)
	if !ok || len(toks) == 0 || len(toks) > maxXAddrs {
		return nil, fmt.Errorf("%w: %d XAddrs", ErrMalformed, len(toks))
	}
	for _, t := range toks {
		if len(t) > maxURILen {
			return nil, fmt.Errorf("%w: XAddr too long", ErrMalformed)
		}
	}
	return toks, nil
}

func (m *ProbeMatch) parseV1(e *envelope, scopes string) error {
	var err error
	if m.Segments, err = parseHexScopes(scopes); err != nil {
		return err
	}
	s, ok, err := e.text(pathBlockCount)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: no BlockCount", ErrMalformed)
	}
	s = strings.Join(strings.Fields(s), "")
	if len(s) != 8*len(m.Segments) {
		return fmt.Errorf("%w: BlockCount has %d hex digits for %d scopes", ErrMalformed, len(s), len(m.Segments))
	}
	m.BlockCounts = make([]uint32, len(m.Segments))
	for i := range m.BlockCounts {
		if m.BlockCounts[i], err = parseUint32(s[8*i:8*i+8], 16); err != nil {
			return fmt.Errorf("%w: BlockCount: %w", ErrMalformed, err)
		}
	}
	return nil
}

func (m *ProbeMatch) parseV2(e *envelope, scopes string) error {
	b, err := decodeBase64(scopes)
	if err != nil {
		return fmt.Errorf("%w: scopes are not base64: %w", ErrMalformed, err)
	}
	if len(b) == 0 || len(b) > maxAvailability {
		return fmt.Errorf("%w: scopes bit array of %d bytes", ErrMalformed, len(b))
	}
	m.Availability = b
	if s, ok, err := e.text(pathSegmentAges); err != nil {
		return err
	} else if ok {
		m.AgeUnits, m.Ages = parseSegmentAges(s)
	}
	return nil
}

// parseSegmentAges decodes an MS-PCCRR Extensible Blob version 1. An
// invalid blob yields units 0 and no ages (the spec says to discard it).
func parseSegmentAges(s string) (uint8, []SegmentAge) {
	b, err := decodeBase64(s)
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

// parseUint32 parses an unsigned 32-bit number with no sign or prefix.
func parseUint32(s string, base int) (uint32, error) {
	if s == "" || s[0] == '+' || s[0] == '-' {
		return 0, fmt.Errorf("bad number %.20q", s)
	}
	n, err := strconv.ParseUint(s, base, 32)
	if err != nil {
		return 0, fmt.Errorf("bad number %.20q", s)
	}
	return uint32(n), nil
}
