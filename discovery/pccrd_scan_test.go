package discovery

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestNSScope: lookups find the innermost declaration before and after the
// scope indexes its declarations, and popping restores what was hidden.
func TestNSScope(t *testing.T) {
	for _, n := range []int{3, nsIndexMin + 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var sc nsScope
			for i := range n {
				sc.push(fmt.Appendf(nil, "p%d", i), fmt.Appendf(nil, "outer%d", i), 0)
			}
			sc.push([]byte("p1"), []byte("inner"), 1)
			sc.push(nil, []byte("default"), 1)
			sc.push([]byte("new"), []byte("x"), 2)
			lookup := func(prefix string) string {
				uri, ok := sc.lookup([]byte(prefix))
				if !ok {
					return "<none>"
				}
				return string(uri)
			}
			for prefix, want := range map[string]string{"p1": "inner", "": "default", "p2": "outer2", "new": "x", "p0": "outer0", "zz": "<none>"} {
				if got := lookup(prefix); got != want {
					t.Errorf("depth 2: %q -> %q, want %q", prefix, got, want)
				}
			}
			sc.popTo(2)
			if got := lookup("new"); got != "<none>" {
				t.Errorf("after pop to 2: new -> %q", got)
			}
			sc.popTo(1)
			for prefix, want := range map[string]string{"p1": "outer1", "": "<none>", "p2": "outer2"} {
				if got := lookup(prefix); got != want {
					t.Errorf("after pop to 1: %q -> %q, want %q", prefix, got, want)
				}
			}
			sc.popTo(0)
			if len(sc.decls.all()) != 0 || len(sc.index) != 0 {
				t.Errorf("after pop to 0: %d decls, %d indexed", len(sc.decls.all()), len(sc.index))
			}
		})
	}
}

// TestByteClasses checks the bitmaps against their definitions.
func TestByteClasses(t *testing.T) {
	for i := range 256 {
		c := byte(i)
		name := 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
			c == '_' || c == ':' || c == '.' || c == '-'
		plain := c >= 0x20 && c < 0x80 && c != '&' && c != '<' && c != ']' || c == '\t' || c == '\n'
		if isNameByte(c) != name || isPlainByte(c) != plain {
			t.Errorf("%#x: isNameByte %v isPlainByte %v, want %v %v", c, isNameByte(c), isPlainByte(c), name, plain)
		}
	}
}

// TestScanTextAndNames covers the character data and name rules the
// scanner shares with encoding/xml, on a good Probe with one part edited.
func TestScanTextAndNames(t *testing.T) {
	id := testSegment(9)
	good, err := (&Probe{Version: V1, MessageID: "urn:uuid:1", Segments: [][]byte{id[:]}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, old, new string
		wantID         string // "" = rejected as malformed
	}{
		{"references", "urn:uuid:1", "urn:uuid:&#49;&#x41;&lt;&amp;&gt;&apos;&quot;", `urn:uuid:1A<&>'"`},
		{"cdata and comment", "urn:uuid:1", "<![CDATA[urn:<uuid>]]><!-- x -->:1<?pi?>", "urn:<uuid>:1"},
		{"crlf", "urn:uuid:1", "\r\nurn:uuid:1\r", "urn:uuid:1"},
		{"surrogate reference", "urn:uuid:1", "urn:uuid:&#xD800;", "urn:uuid:\uFFFD"},
		{"non-ASCII name", "<wsa:To>", "<wsa:To é='1' xmlns:ü='u' ü:a=''>", "urn:uuid:1"},
		{"bad non-ASCII name", "<wsa:To>", "<wsa:To \u00d7=''>", ""},
		{"NUL reference", "urn:uuid:1", "urn:uuid:&#0;", ""},
		{"reference past U+10FFFF", "urn:uuid:1", "urn:uuid:&#x110000;", ""},
		{"unknown entity", "urn:uuid:1", "urn:uuid:&nbsp;", ""},
		{"unterminated reference", "urn:uuid:1", "urn:uuid:&amp", ""},
		{"upper-case X reference", "urn:uuid:1", "urn:uuid:&#X41;", ""},
		{"control character", "urn:uuid:1", "urn:uuid:\x01", ""},
		{"U+FFFE", "urn:uuid:1", "urn:uuid:\uFFFE", ""},
		{"bad UTF-8", "urn:uuid:1", "urn:uuid:\xff", ""},
		{"]]> in text", "urn:uuid:1", "urn:uuid:1]]>", ""},
		{"< in attribute", `MatchBy="`, `x="<" MatchBy="`, ""},
		{"unquoted attribute", `MatchBy="`, `x=1 MatchBy="`, ""},
		{"two colons", "<wsa:To>", "<wsa:To a:b:c=''>", ""},
		{"digit first", "<wsa:To>", "<wsa:To 1a=''>", ""},
		{"-- in comment", "urn:uuid:1", "<!-- a -- b -->urn:uuid:1", ""},
		{"directive", "<soap:Header>", "<soap:Header><!ELEMENT x ANY>", ""},
		{"xml version 1.1", `version="1.0"`, `version="1.1"`, ""},
		{"xml encoding", `encoding="utf-8"`, `encoding="UTF-16"`, ""},
		{"mismatched end tag", "</wsa:To>", "</wsa:to>", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(string(good), tt.old) {
				t.Fatalf("%q not in the probe", tt.old)
			}
			msg := []byte(strings.Replace(string(good), tt.old, tt.new, 1))
			checkEquivalent(t, msg)
			p, err := ParseProbe(msg)
			if tt.wantID == "" {
				if errClass(err) != "invalid" {
					t.Fatalf("err = %v, want ErrMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.MessageID != tt.wantID {
				t.Errorf("MessageID = %q, want %q", p.MessageID, tt.wantID)
			}
		})
	}
}

// TestParseEquivalenceMutations is a deterministic complement to
// FuzzParseEquivalence: it inserts, replaces and deletes the bytes that
// matter to XML syntax at random places of the seeds and checks that the
// scanner and the reference decoder still agree.
func TestParseEquivalenceMutations(t *testing.T) {
	seeds := equivalenceSeeds(t)
	for _, b := range foreignDatagrams() {
		if len(b) <= MaxMessageSize {
			seeds = append(seeds, b)
		}
	}
	const special = "<>&;#x:=\"'/?!-[]\r\n\t CDATAxmlns\x00\x80\xc3\xa9\xef\xbf\xbe"
	rnd := rand.New(rand.NewPCG(12, 34))
	n := 20000
	if testing.Short() {
		n = 2000
	}
	for range n {
		b := slices.Clone(seeds[rnd.IntN(len(seeds))])
		for range 1 + rnd.IntN(3) {
			i := rnd.IntN(len(b) + 1)
			c := special[rnd.IntN(len(special))]
			switch rnd.IntN(3) {
			case 0:
				b = slices.Insert(b, i, c)
			case 1:
				if i < len(b) {
					b[i] = c
				}
			default:
				if i < len(b) {
					b = slices.Delete(b, i, i+1)
				}
			}
		}
		checkEquivalent(t, b)
	}
}
