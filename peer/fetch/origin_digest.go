package fetch

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"strings"
)

// Algo is a digest algorithm an origin may vouch for content with.
type Algo string

// Digest algorithms, named as RFC 9530 registers them.
const (
	SHA256 Algo = "sha-256"
	SHA512 Algo = "sha-512"
	// MD5 comes from Content-MD5 (or a legacy Digest): it still catches
	// corruption and a peer that cannot choose the origin's bytes, but it
	// is not collision resistant.
	MD5 Algo = "md5"
)

// size returns the digest length of a, 0 for an unknown algorithm.
func (a Algo) size() int {
	switch a {
	case SHA256:
		return sha256.Size
	case SHA512:
		return sha512.Size
	case MD5:
		return md5.Size
	}
	return 0
}

// Anchor is a whole-content digest the origin vouched for: what a job
// verifies the assembled bytes against when no content information or
// --sha256 anchors it.
type Anchor struct {
	// Algo is the digest algorithm.
	Algo Algo
	// Sum is the digest of the whole content (identity coding).
	Sum []byte
	// Header names the header it came from: "Repr-Digest", "Digest" or
	// "Content-MD5".
	Header string
}

// NewHash returns a hash for a's algorithm.
func (a *Anchor) NewHash() hash.Hash {
	switch a.Algo {
	case SHA512:
		return sha512.New()
	case MD5:
		return md5.New()
	default:
		return sha256.New()
	}
}

// Check compares sum, the content's digest under a.Algo, with a. It
// returns ErrDigestMismatch when they differ.
func (a *Anchor) Check(sum []byte) error {
	if !bytes.Equal(sum, a.Sum) {
		return fmt.Errorf("%s from %s: got %x, want %x: %w", a.Algo, a.Header, sum, a.Sum, ErrDigestMismatch)
	}
	return nil
}

// String returns "sha-256:<hex> (Repr-Digest)".
func (a *Anchor) String() string { return fmt.Sprintf("%s:%x (%s)", a.Algo, a.Sum, a.Header) }

// anchorPreference orders the anchors Identify picks from, best first:
// SHA-256 (the job's own --sha256 is SHA-256 too), SHA-512, MD5; for one
// algorithm the RFC 9530 header first.
var anchorPreference = []struct {
	algo   Algo
	header string
}{
	{SHA256, "Repr-Digest"}, {SHA256, "Digest"},
	{SHA512, "Repr-Digest"}, {SHA512, "Digest"},
	{MD5, "Content-MD5"}, {MD5, "Repr-Digest"}, {MD5, "Digest"},
}

// anchorFrom returns the best anchor among the digest headers of a plain
// (identity-coded) answer, nil when there is none. Malformed headers are
// ignored as absent; two different digests of one algorithm are
// ErrDigestConflict. contentMD5 says whether Content-MD5 describes the
// whole content (not on a 206).
func anchorFrom(h http.Header, contentMD5 bool) (*Anchor, error) {
	var found []Anchor
	if m, err := ParseReprDigest(h.Values("Repr-Digest")); err == nil {
		for _, algo := range []Algo{SHA256, SHA512, MD5} {
			if sum, ok := m[algo]; ok {
				found = append(found, Anchor{Algo: algo, Sum: sum, Header: "Repr-Digest"})
			}
		}
	}
	if m, err := ParseDigest(h.Values("Digest")); err == nil {
		for _, algo := range []Algo{SHA256, SHA512, MD5} {
			if sum, ok := m[algo]; ok {
				found = append(found, Anchor{Algo: algo, Sum: sum, Header: "Digest"})
			}
		}
	}
	if v := h.Values("Content-MD5"); contentMD5 && len(v) == 1 {
		if sum, err := ParseContentMD5(v[0]); err == nil {
			found = append(found, Anchor{Algo: MD5, Sum: sum, Header: "Content-MD5"})
		}
	}
	for i := range found {
		for j := range i {
			if found[i].Algo == found[j].Algo && !bytes.Equal(found[i].Sum, found[j].Sum) {
				return nil, fmt.Errorf("%s in %s and %s: %w", found[i].Algo, found[j].Header, found[i].Header, ErrDigestConflict)
			}
		}
	}
	for _, p := range anchorPreference {
		for i := range found {
			if found[i].Algo == p.algo && found[i].Header == p.header {
				return &found[i], nil
			}
		}
	}
	return nil, nil
}

// errDigestSyntax is the cause of every digest header parse error.
var errDigestSyntax = errors.New("malformed digest header")

// ParseReprDigest parses Repr-Digest field lines (RFC 9530: a Structured
// Fields dictionary, RFC 8941/9651, of algorithm = :base64:) and returns
// the digests of the algorithms this package knows (sha-256, sha-512 and
// the deprecated md5) whose value is a byte sequence of the right length.
// Other algorithms and values are skipped; a syntax error anywhere fails
// the whole field, as RFC 8941 requires. No lines give an empty map.
func ParseReprDigest(lines []string) (map[Algo][]byte, error) {
	dict, err := parseSFDictionary(strings.Join(lines, ","))
	if err != nil {
		return nil, err
	}
	out := map[Algo][]byte{}
	for _, m := range dict {
		algo := Algo(m.key)
		if n := algo.size(); n > 0 && m.isBytes && len(m.bytes) == n {
			out[algo] = m.bytes
		}
	}
	return out, nil
}

// ParseDigest parses Digest field lines (RFC 3230: a comma-separated list
// of algorithm=value, algorithm case-insensitive) and returns the SHA-256,
// SHA-512 (RFC 5843, base64) and MD5 (base64) digests. A value of the right
// length in hex is accepted too (servers that got RFC 5843 wrong); values
// that decode to neither are skipped, and so are other algorithms. An
// element without "=" fails the field.
func ParseDigest(lines []string) (map[Algo][]byte, error) {
	out := map[Algo][]byte{}
	for _, line := range lines {
		for elem := range strings.SplitSeq(line, ",") {
			elem = strings.TrimSpace(elem)
			if elem == "" {
				continue
			}
			name, val, ok := strings.Cut(elem, "=")
			if !ok || strings.TrimSpace(name) == "" {
				return nil, fmt.Errorf("digest element %q: %w", elem, errDigestSyntax)
			}
			algo := Algo(strings.ToLower(strings.TrimSpace(name)))
			n := algo.size()
			if n == 0 {
				continue
			}
			if sum, ok := decodeSum(strings.TrimSpace(val), n); ok {
				out[algo] = sum
			}
		}
	}
	return out, nil
}

// decodeSum decodes an n-byte digest written in base64 (padded or not) or
// in hex.
func decodeSum(s string, n int) ([]byte, bool) {
	if len(s) == 2*n {
		if b, err := hex.DecodeString(s); err == nil {
			return b, true
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding} {
		if b, err := enc.Strict().DecodeString(s); err == nil && len(b) == n {
			return b, true
		}
	}
	return nil, false
}

// ParseContentMD5 parses a Content-MD5 value (RFC 1864: the base64 of the
// 16-byte MD5 of the body).
func ParseContentMD5(v string) ([]byte, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(strings.TrimSpace(v))
	if err != nil || len(b) != md5.Size {
		return nil, fmt.Errorf("content-md5 %q: %w", v, errDigestSyntax)
	}
	return b, nil
}

// sfMember is one dictionary member; only byte-sequence items keep a
// value, since digests are byte sequences.
type sfMember struct {
	key     string
	isBytes bool
	bytes   []byte
}

// sfParser parses RFC 8941 (with RFC 9651's dates and display strings)
// Structured Field values.
type sfParser struct {
	s   string
	pos int
}

func (p *sfParser) eof() bool  { return p.pos >= len(p.s) }
func (p *sfParser) peek() byte { return p.s[p.pos] }

func (p *sfParser) fail(what string) error {
	return fmt.Errorf("%s at offset %d: %w", what, p.pos, errDigestSyntax)
}

// skipSP discards spaces; skipOWS discards spaces and tabs.
func (p *sfParser) skipSP() {
	for !p.eof() && p.peek() == ' ' {
		p.pos++
	}
}

func (p *sfParser) skipOWS() {
	for !p.eof() && (p.peek() == ' ' || p.peek() == '\t') {
		p.pos++
	}
}

// parseSFDictionary parses a dictionary (RFC 8941 §4.2.2). Later
// duplicates overwrite earlier ones, keeping the first one's place. An
// empty field is an empty dictionary.
func parseSFDictionary(s string) ([]sfMember, error) {
	p := &sfParser{s: strings.Trim(s, " ")}
	var out []sfMember
	index := map[string]int{}
	for !p.eof() {
		key, err := p.key()
		if err != nil {
			return nil, err
		}
		m := sfMember{key: key}
		if !p.eof() && p.peek() == '=' {
			p.pos++
			if m.isBytes, m.bytes, err = p.itemOrInnerList(); err != nil {
				return nil, err
			}
		} else if err := p.params(); err != nil {
			return nil, err
		}
		if i, ok := index[key]; ok {
			out[i] = m
		} else {
			index[key] = len(out)
			out = append(out, m)
		}
		p.skipOWS()
		if p.eof() {
			return out, nil
		}
		if p.peek() != ',' {
			return nil, p.fail("expected comma")
		}
		p.pos++
		p.skipOWS()
		if p.eof() {
			return nil, p.fail("trailing comma")
		}
	}
	return out, nil
}

func isLCAlpha(c byte) bool { return c >= 'a' && c <= 'z' }
func isAlpha(c byte) bool   { return isLCAlpha(c) || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool   { return c >= '0' && c <= '9' }

// isTChar reports whether c is an RFC 9110 token character.
func isTChar(c byte) bool {
	return isAlpha(c) || isDigit(c) || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// key parses a dictionary or parameter key.
func (p *sfParser) key() (string, error) {
	start := p.pos
	if p.eof() || !isLCAlpha(p.peek()) && p.peek() != '*' {
		return "", p.fail("expected key")
	}
	for !p.eof() {
		c := p.peek()
		if !isLCAlpha(c) && !isDigit(c) && c != '_' && c != '-' && c != '.' && c != '*' {
			break
		}
		p.pos++
	}
	return p.s[start:p.pos], nil
}

// itemOrInnerList parses a member value; it returns the bytes of a
// byte-sequence item.
func (p *sfParser) itemOrInnerList() (bool, []byte, error) {
	if !p.eof() && p.peek() == '(' {
		return false, nil, p.innerList()
	}
	isBytes, b, err := p.bareItem()
	if err != nil {
		return false, nil, err
	}
	return isBytes, b, p.params()
}

// innerList parses "(" item *( SP item ) ")" parameters.
func (p *sfParser) innerList() error {
	p.pos++ // "("
	for {
		p.skipSP()
		if p.eof() {
			return p.fail("unterminated inner list")
		}
		if p.peek() == ')' {
			p.pos++
			return p.params()
		}
		if _, _, err := p.bareItem(); err != nil {
			return err
		}
		if err := p.params(); err != nil {
			return err
		}
		if p.eof() || p.peek() != ' ' && p.peek() != ')' {
			return p.fail("expected space or ) in inner list")
		}
	}
}

// params parses *( ";" *SP key [ "=" bare-item ] ).
func (p *sfParser) params() error {
	for !p.eof() && p.peek() == ';' {
		p.pos++
		p.skipSP()
		if _, err := p.key(); err != nil {
			return err
		}
		if !p.eof() && p.peek() == '=' {
			p.pos++
			if _, _, err := p.bareItem(); err != nil {
				return err
			}
		}
	}
	return nil
}

// bareItem parses one bare item and returns the bytes of a byte sequence.
func (p *sfParser) bareItem() (bool, []byte, error) {
	if p.eof() {
		return false, nil, p.fail("expected item")
	}
	switch c := p.peek(); {
	case c == '-' || isDigit(c):
		return false, nil, p.number()
	case c == '"':
		return false, nil, p.str()
	case c == '*' || isAlpha(c):
		p.token()
		return false, nil, nil
	case c == ':':
		b, err := p.byteSeq()
		return err == nil, b, err
	case c == '?':
		if p.pos+1 >= len(p.s) || p.s[p.pos+1] != '0' && p.s[p.pos+1] != '1' {
			return false, nil, p.fail("bad boolean")
		}
		p.pos += 2
		return false, nil, nil
	case c == '@':
		p.pos++
		if p.eof() || !isDigit(p.peek()) && p.peek() != '-' {
			return false, nil, p.fail("bad date")
		}
		return false, nil, p.number()
	case c == '%':
		return false, nil, p.displayString()
	}
	return false, nil, p.fail("unknown item type")
}

// number parses an integer (≤ 15 digits) or decimal (≤ 12 integer and
// 1–3 fraction digits).
func (p *sfParser) number() error {
	if p.peek() == '-' {
		p.pos++
	}
	intDigits, fracDigits, dot := 0, 0, false
scan:
	for ; !p.eof(); p.pos++ {
		switch c := p.peek(); {
		case isDigit(c) && !dot:
			intDigits++
		case isDigit(c):
			fracDigits++
		case c == '.' && !dot:
			dot = true
		default:
			break scan
		}
	}
	switch {
	case intDigits == 0:
		return p.fail("number without digits")
	case !dot && intDigits > 15:
		return p.fail("integer too long")
	case dot && (intDigits > 12 || fracDigits == 0 || fracDigits > 3):
		return p.fail("bad decimal")
	}
	return nil
}

// str parses a quoted string.
func (p *sfParser) str() error {
	p.pos++ // opening quote
	for !p.eof() {
		c := p.peek()
		p.pos++
		switch {
		case c == '"':
			return nil
		case c == '\\':
			if p.eof() || p.peek() != '"' && p.peek() != '\\' {
				return p.fail("bad escape in string")
			}
			p.pos++
		case c < 0x20 || c > 0x7e:
			return p.fail("bad character in string")
		}
	}
	return p.fail("unterminated string")
}

// token parses a token (the first character is already checked).
func (p *sfParser) token() {
	p.pos++
	for !p.eof() && (isTChar(p.peek()) || p.peek() == ':' || p.peek() == '/') {
		p.pos++
	}
}

// byteSeq parses ":" base64 ":" and decodes it (padding optional, as
// RFC 8941 lets parsers accept).
func (p *sfParser) byteSeq() ([]byte, error) {
	p.pos++ // opening colon
	end := strings.IndexByte(p.s[p.pos:], ':')
	if end < 0 {
		return nil, p.fail("unterminated byte sequence")
	}
	enc := p.s[p.pos : p.pos+end]
	for i := 0; i < len(enc); i++ {
		c := enc[i]
		if !isAlpha(c) && !isDigit(c) && c != '+' && c != '/' && c != '=' {
			return nil, p.fail("bad character in byte sequence")
		}
	}
	p.pos += end + 1
	b, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		b, err = base64.RawStdEncoding.DecodeString(enc)
	}
	if err != nil {
		return nil, p.fail("bad base64 in byte sequence")
	}
	return b, nil
}

// displayString parses %"…" with lower-case %xx escapes (RFC 9651).
func (p *sfParser) displayString() error {
	if p.pos+1 >= len(p.s) || p.s[p.pos+1] != '"' {
		return p.fail("bad display string")
	}
	p.pos += 2
	for !p.eof() {
		c := p.peek()
		p.pos++
		switch {
		case c == '"':
			return nil
		case c == '%':
			if p.pos+2 > len(p.s) || !isLowerHex(p.s[p.pos]) || !isLowerHex(p.s[p.pos+1]) {
				return p.fail("bad escape in display string")
			}
			p.pos += 2
		case c < 0x20 || c > 0x7e:
			return p.fail("bad character in display string")
		}
	}
	return p.fail("unterminated display string")
}

func isLowerHex(c byte) bool { return isDigit(c) || c >= 'a' && c <= 'f' }
