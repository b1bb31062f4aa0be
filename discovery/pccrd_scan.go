package discovery

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"unicode"
	"unicode/utf8"
)

// The scanner is a bounded, non-validating XML tokenizer over one datagram
// that knows only what PCCRD reads. It accepts exactly the documents that
// encoding/xml's strict Decoder (the reference decoder, pccrd_ref_test.go)
// accepts and reads the same values from them, so that the responder's drop
// counters classify every datagram as before; FuzzParseEquivalence checks
// that. It never expands anything but the five predefined entities and
// numeric character references: a DTD or any other <! directive is an
// error. Element nesting is bounded by maxDepth, the input by
// MaxMessageSize (checked by the callers), and no work is done per byte
// beyond a constant.

// node is the place of an element in the envelope: the elements PCCRD
// reads and their ancestors. Every other element is nodeOther (its
// children too).
type node uint8

const (
	nodeOther node = iota
	nodeEnvelope
	nodeHeader
	nodeAppSequence
	nodeBody
	nodeProbe
	nodeMatches
	nodeMatch
	nodeEndpointRef
	nodePeerDistData
	// Text nodes: elements whose character data is read. They may not
	// contain elements.
	nodeTo
	nodeAction
	nodeMessageID
	nodeRelatesTo
	nodeProbeTypes
	nodeProbeScopes
	nodeAddress
	nodeMatchTypes
	nodeMatchScopes
	nodeXAddrs
	nodeMetadataVer
	nodeBlockCount
	nodeSegmentAges
	numNodes
)

func (n node) isText() bool { return n >= nodeTo }

// String returns the element path of n, for error messages.
func (n node) String() string {
	switch n {
	case nodeTo:
		return "wsa:To"
	case nodeAction:
		return "wsa:Action"
	case nodeMessageID:
		return "wsa:MessageID"
	case nodeRelatesTo:
		return "wsa:RelatesTo"
	case nodeProbeTypes:
		return "wsd:Probe/wsd:Types"
	case nodeProbeScopes:
		return "wsd:Probe/wsd:Scopes"
	case nodeAddress:
		return "wsa:Address"
	case nodeMatchTypes:
		return "wsd:ProbeMatch/wsd:Types"
	case nodeMatchScopes:
		return "wsd:ProbeMatch/wsd:Scopes"
	case nodeXAddrs:
		return "wsd:XAddrs"
	case nodeMetadataVer:
		return "wsd:MetadataVersion"
	case nodeBlockCount:
		return "PeerDist:BlockCount"
	case nodeSegmentAges:
		return "PeerDist:SegmentAges"
	}
	return fmt.Sprintf("node %d", uint8(n))
}

// space is a namespace URI as far as PCCRD cares.
type space uint8

const (
	spaceOther space = iota
	spaceSOAP
	spaceWSA
	spaceWSD
	spacePeerDist
)

func spaceOf(uri []byte) space {
	switch string(uri) {
	case nsSOAP:
		return spaceSOAP
	case nsWSA:
		return spaceWSA
	case nsWSD:
		return spaceWSD
	case nsPeerDist:
		return spacePeerDist
	}
	return spaceOther
}

// childOf returns the node an element named local would be under parent,
// and the namespace it must be in to be that node; nodeOther when no
// element with that local name is read there.
func childOf(parent node, local []byte) (node, space) {
	switch parent {
	case nodeEnvelope:
		switch string(local) {
		case "Header":
			return nodeHeader, spaceSOAP
		case "Body":
			return nodeBody, spaceSOAP
		}
	case nodeHeader:
		switch string(local) {
		case "To":
			return nodeTo, spaceWSA
		case "Action":
			return nodeAction, spaceWSA
		case "MessageID":
			return nodeMessageID, spaceWSA
		case "RelatesTo":
			return nodeRelatesTo, spaceWSA
		case "AppSequence":
			return nodeAppSequence, spaceWSD
		}
	case nodeBody:
		switch string(local) {
		case "Probe":
			return nodeProbe, spaceWSD
		case "ProbeMatches":
			return nodeMatches, spaceWSD
		}
	case nodeProbe:
		switch string(local) {
		case "Types":
			return nodeProbeTypes, spaceWSD
		case "Scopes":
			return nodeProbeScopes, spaceWSD
		}
	case nodeMatches:
		if string(local) == "ProbeMatch" {
			return nodeMatch, spaceWSD
		}
	case nodeMatch:
		switch string(local) {
		case "EndpointReference":
			return nodeEndpointRef, spaceWSA
		case "Types":
			return nodeMatchTypes, spaceWSD
		case "Scopes":
			return nodeMatchScopes, spaceWSD
		case "XAddrs":
			return nodeXAddrs, spaceWSD
		case "MetadataVersion":
			return nodeMetadataVer, spaceWSD
		case "PeerDistData":
			return nodePeerDistData, spacePeerDist
		}
	case nodeEndpointRef:
		if string(local) == "Address" {
			return nodeAddress, spaceWSA
		}
	case nodePeerDistData:
		switch string(local) {
		case "BlockCount":
			return nodeBlockCount, spacePeerDist
		case "SegmentAges":
			return nodeSegmentAges, spacePeerDist
		}
	}
	return nodeOther, spaceOther
}

// typeNames is what the last wsd:Types element resolved to: its number of
// QNames and the first one, or the first prefix that was not declared.
type typeNames struct {
	n         int
	peerDist  bool   // the first QName is in the PeerDist namespace
	local     []byte // local part of the first QName
	undefined []byte // an undeclared prefix (the QNames are then unusable)
}

// scanned is what the scanner read from one envelope. Byte slices point
// into the datagram or the scanner's arena.
type scanned struct {
	count   [numNodes]int    // occurrences of each node
	text    [numNodes][]byte // character data of the last occurrence of each text node
	types   typeNames        // of the last Probe or ProbeMatch Types to end
	matchBy []byte           // trimmed MatchBy attribute of the last Probe Scopes
	// Trimmed InstanceId and MessageNumber of the last AppSequence.
	instanceID, messageNumber []byte
}

// nsDecl is one namespace declaration in scope.
type nsDecl struct {
	prefix, uri []byte
	depth       int // depth of the element that declares it
	hides       int // index of the declaration of prefix it hides, -1 if none
}

// nsIndexMin is the number of declarations past which nsScope indexes
// them: messages declare a handful, and a search through many for every
// name would make crafted datagrams cost quadratic time.
const nsIndexMin = 16

// nsScope is a stack of namespace declarations, innermost last.
type nsScope struct {
	decls smallStack[nsDecl]
	index map[string]int // prefix -> innermost declaration; nil while small
}

// smallStack is a stack that keeps its first entries inline, so that a
// usual message needs no allocation for it. It holds no pointer to itself:
// the scanner that holds it can stay on the stack.
type smallStack[T any] struct {
	inline [8]T
	n      int
	spill  []T // all entries once they did not fit inline
}

// all returns the entries; the slice is valid until the next change.
func (st *smallStack[T]) all() []T {
	if st.spill != nil {
		return st.spill
	}
	return st.inline[:st.n]
}

func (st *smallStack[T]) push(v T) {
	if st.spill == nil {
		if st.n < len(st.inline) {
			st.inline[st.n] = v
			st.n++
			return
		}
		st.spill = append(make([]T, 0, 4*len(st.inline)), st.inline[:]...)
	}
	st.spill = append(st.spill, v)
}

// truncate keeps the first n entries.
func (st *smallStack[T]) truncate(n int) {
	if st.spill != nil {
		st.spill = st.spill[:n]
	} else {
		st.n = n
	}
}

// find returns the index of the innermost declaration of prefix, or -1.
func (sc *nsScope) find(prefix []byte) int {
	if sc.index != nil {
		if i, ok := sc.index[string(prefix)]; ok {
			return i
		}
		return -1
	}
	decls := sc.decls.all()
	for i := len(decls) - 1; i >= 0; i-- {
		if bytes.Equal(decls[i].prefix, prefix) {
			return i
		}
	}
	return -1
}

func (sc *nsScope) lookup(prefix []byte) ([]byte, bool) {
	if i := sc.find(prefix); i >= 0 {
		return sc.decls.all()[i].uri, true
	}
	return nil, false
}

func (sc *nsScope) push(prefix, uri []byte, depth int) {
	sc.decls.push(nsDecl{prefix, uri, depth, sc.find(prefix)})
	switch decls := sc.decls.all(); {
	case sc.index != nil:
		sc.index[string(prefix)] = len(decls) - 1
	case len(decls) > nsIndexMin:
		sc.index = make(map[string]int, 2*len(decls))
		for i, d := range decls {
			sc.index[string(d.prefix)] = i
		}
	}
}

// popTo removes the declarations of elements at depth or deeper.
func (sc *nsScope) popTo(depth int) {
	decls := sc.decls.all()
	n := len(decls)
	for ; n > 0 && decls[n-1].depth >= depth; n-- {
		if d := decls[n-1]; sc.index != nil {
			if d.hides >= 0 {
				sc.index[string(d.prefix)] = d.hides
			} else {
				delete(sc.index, string(d.prefix))
			}
		}
	}
	sc.decls.truncate(n)
}

// openElem is an element whose end tag has not been seen.
type openElem struct {
	name []byte // raw qualified name, which the end tag must repeat
	node node
}

// rawAttr is one attribute of the start tag being read.
type rawAttr struct {
	prefix, local []byte
	value         []byte // raw until decoded
	decoded       bool
}

// attrKind is the namespace of an attribute name after prefix resolution,
// where it matters: a declaration, no namespace, or something else.
type attrKind uint8

const (
	attrOther attrKind = iota
	attrXMLNS
	attrNoSpace
)

// scanner holds the state of one scan and its result. It lives on the
// caller's stack: it holds no pointer to itself or to other stack memory.
type scanner struct {
	in    []byte
	pos   int
	doc   scanned
	arena []byte // decoded text (entities, CR LF); at most len(in) bytes
	depth int
	open  [maxDepth]openElem
	// names resolves element and attribute prefixes (encoding/xml's
	// translation table); types resolves the QNames of wsd:Types from
	// declarations as the attributes name them after that resolution.
	names, types nsScope
	attrs        smallStack[rawAttr]
	rootSeen     bool
	// The character data of the open text node: a slice of in while it is
	// one clean piece, else the arena from capStart on.
	capture  []byte
	capStart int
	inArena  bool
	// Names with non-ASCII characters still to check, as "<?name?>"
	// processing instructions; see checkName.
	pendingNames []byte
	lastPending  []byte
}

// syntaxError is a Malformed error at the scanner's position.
func (s *scanner) syntaxError(msg string) error {
	return fmt.Errorf("%w: xml: %s at offset %d", ErrMalformed, msg, s.pos)
}

func (s *scanner) eof() error { return s.syntaxError("unexpected EOF") }

// scan reads one SOAP envelope from b into s.doc. Errors wrap
// ErrMalformed, or ErrNotPCCRD when the root element is not a SOAP 1.2
// Envelope.
func (s *scanner) scan(b []byte) error {
	s.in = b
	for s.pos < len(b) {
		if b[s.pos] != '<' {
			if err := s.charData(); err != nil {
				return err
			}
			continue
		}
		if s.pos+1 == len(b) {
			return s.eof()
		}
		var err error
		switch b[s.pos+1] {
		case '/':
			err = s.endTag()
		case '?':
			err = s.procInst()
		case '!':
			err = s.markupDecl()
		default:
			err = s.startTag()
		}
		if err != nil {
			return err
		}
	}
	if s.depth > 0 {
		return s.eof()
	}
	if !s.rootSeen {
		return fmt.Errorf("%w: no root element", ErrMalformed)
	}
	return s.checkPendingNames()
}

// charData reads text up to the next '<'.
func (s *scanner) charData() error {
	end := bytes.IndexByte(s.in[s.pos:], '<')
	if end < 0 {
		end = len(s.in)
	} else {
		end += s.pos
	}
	raw := s.in[s.pos:end]
	clean, err := checkText(raw, textPlain)
	if err != nil {
		return s.syntaxError(err.Error())
	}
	s.pos = end
	s.collect(raw, clean, true)
	return nil
}

// collect adds a piece of character data to the open text node, if any.
func (s *scanner) collect(raw []byte, clean, entities bool) {
	if s.depth == 0 || !s.open[s.depth-1].node.isText() || len(raw) == 0 {
		return
	}
	if clean && len(s.capture) == 0 {
		s.capture = raw
		return
	}
	if !s.inArena {
		s.capStart = len(s.arena)
		s.arena = append(s.allocArena(), s.capture...)
		s.inArena = true
	}
	s.arena = appendText(s.arena, raw, entities)
	s.capture = s.arena[s.capStart:]
}

func (s *scanner) allocArena() []byte {
	if s.arena == nil {
		s.arena = make([]byte, 0, len(s.in))
	}
	return s.arena
}

// markupDecl reads what starts with "<!": a comment or a CDATA section.
// Anything else (<!DOCTYPE, <!ENTITY, ...) is an error.
func (s *scanner) markupDecl() error {
	rest := s.in[s.pos+2:]
	switch {
	case bytes.HasPrefix(rest, []byte("--")):
		// The first "--" must end the comment.
		body := rest[2:]
		k := bytes.Index(body, []byte("--"))
		if k < 0 || k+2 == len(body) {
			return s.eof()
		}
		if body[k+2] != '>' {
			return s.syntaxError(`"--" in comment`)
		}
		s.pos += 4 + k + 3
		return nil
	case bytes.HasPrefix(rest, []byte("[CDATA[")):
		body := rest[7:]
		k := bytes.Index(body, []byte("]]>"))
		if k < 0 {
			return s.syntaxError("unexpected EOF in CDATA section")
		}
		clean, err := checkText(body[:k], textCDATA)
		if err != nil {
			return s.syntaxError(err.Error())
		}
		s.pos += 9 + k + 3
		s.collect(body[:k], clean, false)
		return nil
	}
	return s.syntaxError("DTD or directive not allowed")
}

// procInst reads a processing instruction. Like encoding/xml it checks the
// version and encoding of every <?xml ...?>, wherever it is.
func (s *scanner) procInst() error {
	p := s.pos + 2
	target, p := s.readName(p)
	if !s.checkName(target) {
		return s.syntaxError("expected target name after <?")
	}
	p = skipSpace(s.in, p)
	k := bytes.Index(s.in[p:], []byte("?>"))
	if k < 0 {
		return s.eof()
	}
	data := s.in[p : p+k]
	s.pos = p + k + 2
	if string(target) != "xml" {
		return nil
	}
	if v := procInstParam(data, "version="); len(v) > 0 && string(v) != "1.0" {
		return fmt.Errorf("%w: xml: unsupported version %.20q", ErrMalformed, v)
	}
	if enc := procInstParam(data, "encoding="); len(enc) > 0 && !bytes.EqualFold(enc, []byte("utf-8")) {
		return fmt.Errorf("%w: xml: encoding %.20q not supported", ErrMalformed, enc)
	}
	return nil
}

// procInstParam finds a pseudo-attribute in an XML declaration the way
// encoding/xml does: the first occurrence of param (which ends in '=')
// directly followed by a quote, up to the next such quote; nil if there is
// none or it is not closed.
func procInstParam(s []byte, param string) []byte {
	i := 0
	var quote byte
	for i < len(s) {
		k := bytes.Index(s[i:], []byte(param))
		if k < 0 || i+k+len(param) >= len(s) {
			return nil
		}
		c := s[i+k+len(param)]
		i += k + len(param) + 1
		if c == '\'' || c == '"' {
			quote = c
			break
		}
	}
	if quote == 0 {
		return nil
	}
	j := bytes.IndexByte(s[i:], quote)
	if j < 0 {
		return nil
	}
	return s[i : i+j]
}

// endTag reads "</name>" and closes the innermost element. The name needs
// no check of its own: it must repeat the start tag's, byte for byte.
func (s *scanner) endTag() error {
	name, p := s.readName(s.pos + 2)
	if len(name) == 0 {
		return s.syntaxError("expected element name after </")
	}
	p = skipSpace(s.in, p)
	if p == len(s.in) {
		return s.eof()
	}
	if s.in[p] != '>' {
		return s.syntaxError("invalid characters in end tag")
	}
	s.pos = p + 1
	if s.depth == 0 {
		return s.syntaxError("unexpected end element")
	}
	if !bytes.Equal(s.open[s.depth-1].name, name) {
		return s.syntaxError("end tag does not match start tag")
	}
	s.closeElement()
	return nil
}

// closeElement ends the innermost element.
func (s *scanner) closeElement() {
	n := s.open[s.depth-1].node
	if n.isText() {
		s.doc.text[n] = s.capture
		s.capture, s.inArena = nil, false
		if n == nodeProbeTypes || n == nodeMatchTypes {
			s.doc.types = s.resolveTypes(s.doc.text[n])
		}
	}
	s.depth--
	s.names.popTo(s.depth)
	s.types.popTo(s.depth)
}

// resolveTypes resolves a whitespace-separated list of QNames against the
// declarations in scope.
func (s *scanner) resolveTypes(text []byte) typeNames {
	var t typeNames
	for tok, i := nextField(text, 0); tok != nil; tok, i = nextField(text, i) {
		prefix, local := []byte(nil), tok
		if i := bytes.IndexByte(tok, ':'); i >= 0 {
			prefix, local = tok[:i], tok[i+1:]
		}
		uri, found := s.types.lookup(prefix)
		if !found && len(prefix) > 0 {
			return typeNames{undefined: prefix}
		}
		if t.n == 0 {
			t.peerDist, t.local = string(uri) == nsPeerDist, local
		}
		t.n++
	}
	return t
}

// startTag reads "<name attr='value' ...>" or "<name .../>" and opens the
// element.
func (s *scanner) startTag() error {
	name, prefix, local, p, ok := s.readQName(s.pos + 1)
	if !ok {
		return s.syntaxError("expected element name after <")
	}
	s.attrs.truncate(0)
	empty := false
	for {
		p = skipSpace(s.in, p)
		if p == len(s.in) {
			return s.eof()
		}
		if c := s.in[p]; c == '>' {
			p++
			break
		} else if c == '/' {
			if p+1 == len(s.in) {
				return s.eof()
			}
			if s.in[p+1] != '>' {
				return s.syntaxError("expected /> in element")
			}
			p += 2
			empty = true
			break
		}
		var a rawAttr
		if _, a.prefix, a.local, p, ok = s.readQName(p); !ok {
			return s.syntaxError("expected attribute name in element")
		}
		p = skipSpace(s.in, p)
		if p == len(s.in) {
			return s.eof()
		}
		if s.in[p] != '=' {
			return s.syntaxError("attribute name without = in element")
		}
		p = skipSpace(s.in, p+1)
		if p == len(s.in) {
			return s.eof()
		}
		quote := s.in[p]
		if quote != '"' && quote != '\'' {
			return s.syntaxError("unquoted or missing attribute value in element")
		}
		end := bytes.IndexByte(s.in[p+1:], quote)
		if end < 0 {
			return s.eof()
		}
		a.value = s.in[p+1 : p+1+end]
		clean, err := checkText(a.value, textAttr)
		if err != nil {
			return s.syntaxError(err.Error())
		}
		a.decoded = clean
		s.attrs.push(a)
		p += end + 2
	}
	s.pos = p
	return s.openElement(name, prefix, local, empty)
}

// openElement applies a start tag that was read without error, as
// encoding/xml's Token and the reference decoder would.
func (s *scanner) openElement(name, prefix, local []byte, empty bool) error {
	// The tag's own declarations apply to its name and attributes.
	attrs := s.attrs.all()
	for i := range attrs {
		a := &attrs[i]
		if string(a.prefix) == "xmlns" {
			s.names.push(a.local, s.attrValue(a), s.depth)
		} else if len(a.prefix) == 0 && string(a.local) == "xmlns" {
			s.names.push(nil, s.attrValue(a), s.depth)
		}
	}
	var n node
	if s.depth == 0 {
		if s.rootSeen {
			return s.syntaxError("several root elements")
		}
		s.rootSeen = true
		// A bad name before or in the root tag makes the datagram
		// malformed, not foreign.
		if err := s.checkPendingNames(); err != nil {
			return err
		}
		if s.elementSpace(prefix, local) != spaceSOAP || string(local) != "Envelope" {
			return fmt.Errorf("%w: root element is not a SOAP 1.2 Envelope", ErrNotPCCRD)
		}
		n = nodeEnvelope
	} else {
		parent := s.open[s.depth-1].node
		if parent.isText() {
			return fmt.Errorf("%w: element inside %v", ErrMalformed, parent)
		}
		if s.depth >= maxDepth {
			return fmt.Errorf("%w: elements nested deeper than %d", ErrMalformed, maxDepth)
		}
		if c, want := childOf(parent, local); c != nodeOther && s.elementSpace(prefix, local) == want {
			n = c
		}
	}
	for i := range attrs {
		a := &attrs[i]
		switch s.attrSpace(a.prefix) {
		case attrXMLNS:
			s.types.push(a.local, s.attrValue(a), s.depth)
		case attrNoSpace:
			if string(a.local) == "xmlns" {
				s.types.push(nil, s.attrValue(a), s.depth)
			}
		}
	}
	s.open[s.depth] = openElem{name: name, node: n}
	s.depth++
	s.doc.count[n]++
	if n.isText() {
		s.capture, s.inArena = nil, false
	}
	switch n {
	case nodeAppSequence:
		s.doc.instanceID = s.plainAttr("InstanceId")
		s.doc.messageNumber = s.plainAttr("MessageNumber")
	case nodeProbeScopes:
		s.doc.matchBy = s.plainAttr("MatchBy")
	}
	if empty {
		s.closeElement()
	}
	return nil
}

// elementSpace resolves the namespace of an element name like encoding/xml:
// the prefixes xml and xmlns and an element named xmlns are never in one of
// ours; an unbound prefix stays a prefix (not a URI).
func (s *scanner) elementSpace(prefix, local []byte) space {
	switch {
	case string(prefix) == "xmlns", string(prefix) == "xml",
		len(prefix) == 0 && string(local) == "xmlns":
		return spaceOther
	}
	uri, ok := s.names.lookup(prefix)
	if !ok {
		return spaceOther
	}
	return spaceOf(uri)
}

// attrSpace resolves the namespace of an attribute name like encoding/xml
// and tells whether it is "xmlns" (a declaration for the Types QNames) or
// empty. Unprefixed attributes have no namespace.
func (s *scanner) attrSpace(prefix []byte) attrKind {
	switch {
	case len(prefix) == 0:
		return attrNoSpace
	case string(prefix) == "xmlns":
		return attrXMLNS
	case string(prefix) == "xml":
		return attrOther
	}
	uri, ok := s.names.lookup(prefix)
	switch {
	case !ok:
		return attrOther
	case string(uri) == "xmlns":
		return attrXMLNS
	case len(uri) == 0:
		return attrNoSpace
	}
	return attrOther
}

// plainAttr returns the trimmed value of the first attribute of the current
// tag named local in no namespace, nil if none.
func (s *scanner) plainAttr(local string) []byte {
	attrs := s.attrs.all()
	for i := range attrs {
		a := &attrs[i]
		if string(a.local) == local && s.attrSpace(a.prefix) == attrNoSpace {
			return bytes.TrimSpace(s.attrValue(a))
		}
	}
	return nil
}

// attrValue returns the decoded value of a.
func (s *scanner) attrValue(a *rawAttr) []byte {
	if !a.decoded {
		start := len(s.allocArena())
		s.arena = appendText(s.arena, a.value, true)
		a.value, a.decoded = s.arena[start:len(s.arena):len(s.arena)], true
	}
	return a.value
}

// readName reads an XML name at p the way encoding/xml delimits one: a run
// of ASCII name characters and non-ASCII bytes. It returns the name (empty
// if there is none) and the position after it.
func (s *scanner) readName(p int) ([]byte, int) {
	start := p
	for _, c := range s.in[p:] {
		if !isNameByte(c) && c < utf8.RuneSelf {
			break
		}
		p++
	}
	return s.in[start:p], p
}

// readQName reads an element or attribute name at p: a valid XML name with
// at most one colon. The prefix is empty when there is no colon or the
// colon is first or last (the whole name is then local).
func (s *scanner) readQName(p int) (name, prefix, local []byte, next int, ok bool) {
	name, next = s.readName(p)
	if !s.checkName(name) || bytes.Count(name, []byte(":")) > 1 {
		return nil, nil, nil, next, false
	}
	if i := bytes.IndexByte(name, ':'); i > 0 && i < len(name)-1 {
		return name, name[:i], name[i+1:], next, true
	}
	return name, nil, name, next, true
}

// Bitmaps of ASCII bytes (low: 0-63, high: 64-127).
const (
	// Name characters: letters, digits, '_', ':', '.', '-'.
	nameLow  uint64 = 1<<'-' | 1<<'.' | (1<<10-1)<<'0' | 1<<':'
	nameHigh uint64 = (1<<26-1)<<('A'-64) | 1<<('_'-64) | (1<<26-1)<<('a'-64)
	// Character data that needs no attention: printable ASCII but '&',
	// '<' and ']', and TAB and LF.
	plainLow  uint64 = (1<<32-1)<<32&^(1<<'&'|1<<'<') | 1<<'\t' | 1<<'\n'
	plainHigh uint64 = ^uint64(0) &^ (1 << (']' - 64))
)

func isNameByte(c byte) bool {
	if c < 64 {
		return nameLow>>c&1 != 0
	}
	return c < 128 && nameHigh>>(c-64)&1 != 0
}

func isPlainByte(c byte) bool {
	if c < 64 {
		return plainLow>>c&1 != 0
	}
	return c < 128 && plainHigh>>(c-64)&1 != 0
}

// checkName checks a name as delimited by readName. An ASCII name is
// checked at once: a letter, '_' or ':' first. A name with other
// characters is left to encoding/xml, whose tables (XML 1.0 Appendix B)
// are the reference: it is queued, as the target of a processing
// instruction "<?name?>", for checkPendingNames, which checks all queued
// names in one pass before the root element is judged and at the end.
// Real senders use ASCII names only.
func (s *scanner) checkName(name []byte) bool {
	if len(name) == 0 {
		return false
	}
	for _, c := range name {
		if c >= utf8.RuneSelf {
			if !bytes.Equal(name, s.lastPending) {
				s.pendingNames = append(append(append(s.pendingNames, "<?"...), name...), "?>"...)
				s.lastPending = name
			}
			return true
		}
	}
	c := name[0]
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || c == '_' || c == ':'
}

// checkPendingNames checks the names checkName queued.
func (s *scanner) checkPendingNames() error {
	if len(s.pendingNames) == 0 {
		return nil
	}
	d := xml.NewDecoder(bytes.NewReader(s.pendingNames))
	s.pendingNames = s.pendingNames[:0]
	for {
		_, err := d.RawToken()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: invalid XML name: %w", ErrMalformed, err)
		}
	}
}

// nextField returns the first run of non-space characters of s at or after
// i and the position after it, nil at the end: one field of bytes.Fields
// (white space as unicode.IsSpace defines it) without a closure.
func nextField(s []byte, i int) (field []byte, next int) {
	start := -1
	for i < len(s) {
		c, size := rune(s[i]), 1
		if c >= utf8.RuneSelf {
			c, size = utf8.DecodeRune(s[i:])
		}
		if c < utf8.RuneSelf && isASCIISpace(byte(c)) || c >= utf8.RuneSelf && unicode.IsSpace(c) {
			if start >= 0 {
				return s[start:i], i
			}
		} else if start < 0 {
			start = i
		}
		i += size
	}
	if start < 0 {
		return nil, i
	}
	return s[start:], i
}

func skipSpace(b []byte, p int) int {
	for p < len(b) && (b[p] == ' ' || b[p] == '\t' || b[p] == '\n' || b[p] == '\r') {
		p++
	}
	return p
}

// textMode is the kind of character data checkText reads.
type textMode uint8

const (
	textPlain textMode = iota // between tags: references, no "]]>"
	textAttr                  // an attribute value: references, no '<'
	textCDATA                 // a CDATA section: taken literally
)

// checkText checks character data as encoding/xml does: valid UTF-8, only
// XML characters (also from references), well-formed references to the
// predefined entities or to characters. clean is true when the data needs
// no decoding (no reference, no CR).
func checkText(raw []byte, mode textMode) (clean bool, err error) {
	clean = true
	for i := 0; i < len(raw); {
		for _, c := range raw[i:] {
			if !isPlainByte(c) {
				break
			}
			i++
		}
		if i == len(raw) {
			break
		}
		c := raw[i]
		switch {
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRune(raw[i:])
			if r == utf8.RuneError && size == 1 {
				return false, errInvalidUTF8
			}
			if !isXMLChar(r) {
				return false, errIllegalChar
			}
			i += size
		case c == '&' && mode != textCDATA:
			n, r, ok := charRef(raw[i:])
			if !ok {
				return false, errBadReference
			}
			if !isXMLChar(r) {
				return false, errIllegalChar
			}
			clean = false
			i += n
		case c == '<' && mode == textAttr:
			return false, errLessInValue
		case c == ']' && mode == textPlain && bytes.HasPrefix(raw[i:], []byte("]]>")):
			return false, errCDATAEnd
		case c == '\r':
			clean = false
			i++
		case c < 0x20 && c != '\t' && c != '\n':
			return false, errIllegalChar
		default:
			i++
		}
	}
	return clean, nil
}

// Reasons checkText rejects character data.
const (
	errInvalidUTF8  = textError("invalid UTF-8")
	errIllegalChar  = textError("illegal character")
	errBadReference = textError("invalid character entity")
	errLessInValue  = textError("unescaped < inside quoted string")
	errCDATAEnd     = textError("unescaped ]]> not in CDATA section")
)

type textError string

func (e textError) Error() string { return string(e) }

// isXMLChar reports whether r may appear in an XML document (the Char
// production). Surrogates are accepted: a reference to one decodes to
// U+FFFD, as encoding/xml does.
func isXMLChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D ||
		r >= 0x20 && r <= 0xFFFD || r >= 0x10000 && r <= utf8.MaxRune
}

// charRef reads the reference at the start of b ("&lt;", "&#65;",
// "&#x41;"): its length and the character it stands for. Only the five
// predefined entities are known.
func charRef(b []byte) (n int, r rune, ok bool) {
	if len(b) < 2 {
		return 0, 0, false
	}
	if b[1] != '#' {
		for _, e := range [...]struct {
			name string
			r    rune
		}{{"lt;", '<'}, {"gt;", '>'}, {"amp;", '&'}, {"apos;", '\''}, {"quot;", '"'}} {
			if bytes.HasPrefix(b[1:], []byte(e.name)) {
				return 1 + len(e.name), e.r, true
			}
		}
		return 0, 0, false
	}
	i, base := 2, rune(10)
	if i < len(b) && b[i] == 'x' {
		i, base = 3, 16
	}
	start := i
	for ; i < len(b); i++ {
		d := rune(-1)
		switch c := b[i]; {
		case '0' <= c && c <= '9':
			d = rune(c - '0')
		case base == 16 && 'a' <= c && c <= 'f':
			d = rune(c-'a') + 10
		case base == 16 && 'A' <= c && c <= 'F':
			d = rune(c-'A') + 10
		}
		if d < 0 {
			break
		}
		if r <= utf8.MaxRune { // past it the reference is bad; stop growing
			r = r*base + d
		}
	}
	if i == start || i == len(b) || b[i] != ';' || r > utf8.MaxRune {
		return 0, 0, false
	}
	return i + 1, r, true
}

// appendText appends checked character data to dst, decoding references
// (if entities) and turning CR LF and lone CR into LF.
func appendText(dst, raw []byte, entities bool) []byte {
	cr := false
	for i := 0; i < len(raw); {
		c := raw[i]
		switch {
		case c == '&' && entities:
			n, r, _ := charRef(raw[i:])
			dst = utf8.AppendRune(dst, r)
			i += n
			cr = false
			continue
		case c == '\r':
			dst = append(dst, '\n')
			cr = true
		case c == '\n' && cr:
			cr = false
		default:
			dst = append(dst, c)
			cr = false
		}
		i++
	}
	return dst
}
