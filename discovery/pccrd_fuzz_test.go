package discovery

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// addSeeds adds every XML vector of testdata, the foreign datagrams and
// some built messages to the fuzz corpus.
func addSeeds(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "pccrd-*.xml"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seed files: %v", err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		if bytes.Contains(b, []byte("\n0200000000")) {
			f.Add(joinWrappedHex(f, b, "0200000000"))
		}
	}
	for _, b := range foreignDatagrams() {
		if len(b) <= MaxMessageSize {
			f.Add(b)
		}
	}
	a, b := testSegment(1), testSegment(2)
	for _, m := range []interface{ Marshal() ([]byte, error) }{
		&Probe{Version: V1, MessageID: "urn:uuid:1", Segments: [][]byte{a[:], b[:]}},
		&Probe{Version: V2, MessageID: "urn:uuid:2", Segments: [][]byte{a[:], b[:]}},
		&ProbeMatch{Version: V1, MessageID: "urn:uuid:3", RelatesTo: "urn:uuid:1", Address: "urn:uuid:x",
			XAddrs: []string{"10.0.0.1:80"}, Segments: [][]byte{a[:]}, BlockCounts: []uint32{42}},
		&ProbeMatch{Version: V2, MessageID: "urn:uuid:4", RelatesTo: "urn:uuid:2", Address: "urn:uuid:x",
			XAddrs: []string{"[fe80::1]:80"}, Availability: []byte{0xF0}, AgeUnits: 4, Ages: []SegmentAge{{1, 5}}},
	} {
		out, err := m.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(out)
	}
}

// checkParseError: every rejection is one of the three classified kinds.
func checkParseError(t *testing.T, err error) {
	if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotPCCRD) && !errors.Is(err, ErrTooLarge) {
		t.Fatalf("unclassified error: %v", err)
	}
}

func FuzzParseProbe(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseProbe(b)
		if err != nil {
			checkParseError(t, err)
			return
		}
		if len(p.Segments) == 0 || len(p.Segments) > MaxSegments {
			t.Fatalf("%d segments accepted", len(p.Segments))
		}
		// A parsed Probe re-encodes to an equal Probe.
		out, err := p.Marshal()
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		q, err := ParseProbe(out)
		if err != nil {
			t.Fatalf("parse re-encoded: %v\n%s", err, out)
		}
		if q.Version != p.Version || q.MessageID != p.MessageID || !slices.EqualFunc(q.Segments, p.Segments, bytes.Equal) {
			t.Fatalf("round trip changed the probe: %+v -> %+v", p, q)
		}
	})
}

func FuzzParseProbeMatch(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseProbeMatch(b)
		if err != nil {
			checkParseError(t, err)
			return
		}
		if len(m.XAddrs) == 0 || len(m.BlockCounts) != len(m.Segments) {
			t.Fatalf("inconsistent match accepted: %+v", m)
		}
		for i := range 4 * len(m.Availability) {
			m.Has(i)
		}
		if m.Address == "" {
			return // Marshal requires an Address; parsing tolerates none
		}
		out, err := m.Marshal()
		if err != nil {
			return // e.g. an age unit the blob carried but we do not emit
		}
		q, err := ParseProbeMatch(out)
		if err != nil {
			t.Fatalf("parse re-encoded: %v\n%s", err, out)
		}
		if q.Version != m.Version || q.RelatesTo != m.RelatesTo || !slices.Equal(q.XAddrs, m.XAddrs) ||
			!slices.EqualFunc(q.Segments, m.Segments, bytes.Equal) || !slices.Equal(q.BlockCounts, m.BlockCounts) ||
			!bytes.Equal(q.Availability, m.Availability) {
			t.Fatalf("round trip changed the match: %+v -> %+v", m, q)
		}
	})
}

// errClass is the responder's reading of a parse error: the reason label
// of redleader_discovery_malformed_dropped_total, or "ok".
func errClass(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrTooLarge):
		return "oversized"
	case errors.Is(err, ErrNotPCCRD):
		return "foreign"
	case errors.Is(err, ErrMalformed):
		return "invalid"
	}
	return "unclassified"
}

// equivalenceSeeds are inputs at the edges of the XML syntax the scanner
// mirrors: variants of a good v1 Probe (and ProbeMatch) with comments,
// CDATA, references, CR LF, odd namespace declarations, non-ASCII names,
// bad declarations and so on.
func equivalenceSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	id := testSegment(7)
	good, err := (&Probe{Version: V1, MessageID: "urn:uuid:1", Segments: [][]byte{id[:]}}).Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	match, err := (&ProbeMatch{Version: V1, MessageID: "urn:uuid:3", RelatesTo: "urn:uuid:1", Address: "urn:uuid:x",
		XAddrs: []string{"10.0.0.1:80"}, Segments: [][]byte{id[:]}, BlockCounts: []uint32{42}}).Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	g := string(good)
	hexID := scopeHex(id)
	edits := []struct{ old, new string }{
		{`<wsa:MessageID>urn:uuid:1`, `<wsa:MessageID><!-- c -->urn:uuid:1<?pi x?>`},
		{`<wsa:MessageID>urn:uuid:1`, `<wsa:MessageID><![CDATA[urn:uuid:]]>1`},
		{`<wsa:MessageID>urn:uuid:1`, `<wsa:MessageID>urn:uuid:&#49;&#x32;&lt;&gt;&amp;&apos;&quot;`},
		{`<wsa:MessageID>urn:uuid:1`, `<wsa:MessageID>urn:uuid:&#xD800;&#0;&#1114112;&bogus;&#X41;`},
		{`<wsa:MessageID>urn:uuid:1`, "<wsa:MessageID>\r\n urn:uuid:1\r"},
		{`<wsa:MessageID>urn:uuid:1`, "<wsa:MessageID>urn:uuid:1]]>"},
		{`<wsa:MessageID>urn:uuid:1`, "<wsa:MessageID>urn:uuid:\xc3\xa9\xff\x01"},
		{`<wsa:MessageID>urn:uuid:1`, `<wsa:MessageID><x/>urn:uuid:1`},
		{`<?xml version="1.0" encoding="utf-8"?>`, `<?xml version='1.0' encoding='UTF-8' standalone='yes'?>`},
		{`<?xml version="1.0" encoding="utf-8"?>`, `<?xml version="1.1"?>`},
		{`<?xml version="1.0" encoding="utf-8"?>`, "\ufeff<?xml encoding=\"latin1\"?>"},
		{`<?xml version="1.0" encoding="utf-8"?>`, `<!DOCTYPE x [<!ENTITY e "e">]>`},
		{`<?xml version="1.0" encoding="utf-8"?>`, `text <!-- a -- b --> <![CDATA[x]]>`},
		{`<soap:Envelope `, `<soap:Envelope xmlns:p="" xmlns:q="xmlns" p:xmlns="` + nsPeerDist + `" q:Foo="` + nsPeerDist + `" `},
		{`<soap:Envelope `, `<soap:Envelope xmlns:xml="` + nsPeerDist + `" xmlns:xmlns="x" `},
		{`<soap:Envelope xmlns:soap`, `<Envelope xmlns="` + nsSOAP + `" xmlns:soap`},
		{`<soap:Envelope `, `<soap:Envelope a:b:c="1" `},
		{`<soap:Envelope `, `<soap:Envelope xmlns:é="x" é:a="1" `},
		{`<soap:Envelope `, `<soap:Envelope xmlns:a='1'b="2" `},
		{`<wsd:Probe>`, `<wsd:Probe xmlns:wsd="urn:other">`},
		{`<wsd:Scopes MatchBy="`, `<wsd:Scopes p:MatchBy="x" xmlns:p="" MatchBy="`},
		{`<wsd:Scopes MatchBy="`, `<wsd:Scopes MatchBy = "`},
		{`</wsd:Probe>`, `</wsd:Probe ><wsd:Probe/>`},
		{`</soap:Body>`, `</soap:Body><soap:Body><x><y><z/></y></x></soap:Body>`},
		{`</soap:Envelope>`, `</soap:Envelope><!-- after --> <?pi?>`},
		{`</soap:Envelope>`, `</soap:Envelope><soap:Envelope/>`},
		{`</soap:Envelope>`, `</soap:envelope>`},
		{`PeerDist:PeerDistData`, `PeerDist:PeerDistData wsd:Other`},
		{`PeerDist:PeerDistData`, ` :PeerDistData`},
		{hexID, hexID + " " + hexID},
		{hexID, "\u00a0" + hexID + "\u2003"},
	}
	// More declarations than nsIndexMin, so that the scanner indexes
	// them, with prefixes shadowed in inner elements and popped again.
	var many strings.Builder
	for i := range nsIndexMin + 4 {
		fmt.Fprintf(&many, ` xmlns:p%d="urn:%d"`, i, i)
	}
	shadow := ` xmlns:p3="` + nsPeerDist + `" xmlns:PeerDist="urn:other"`
	edits = append(edits, []struct{ old, new string }{
		{`<soap:Envelope `, `<soap:Envelope` + many.String() + ` `},
		{`<soap:Envelope `, `<soap:Envelope` + many.String() + shadow + ` `},
		{`<soap:Envelope `, `<soap:Envelope` + many.String() + ` xmlns:p3="` + nsPeerDist + `" `},
		{`<wsd:Probe>`, `<wsd:Probe` + many.String() + shadow + `>`},
		{`<soap:Header>`, `<soap:Header` + many.String() + shadow + `><x` + many.String() + ` xmlns:wsa="urn:x"/>`},
		{`<soap:Body>`, `<soap:Body` + many.String() + ` xmlns:wsd="urn:x"><wsd:x xmlns:wsd="` + nsWSD + `"/></soap:Body><soap:Body>`},
	}...)
	edits = append(edits, struct{ old, new string }{`PeerDist:PeerDistData`, `p3:PeerDistData`})

	out := [][]byte{good, match}
	for _, e := range edits {
		if !strings.Contains(g, e.old) {
			tb.Fatalf("seed edit: %q not in the probe", e.old)
		}
		out = append(out, []byte(strings.Replace(g, e.old, e.new, 1)))
	}
	m := string(match)
	for _, e := range []struct{ old, new string }{
		{`InstanceId="0"`, `InstanceId=" 7 "`},
		{`<wsd:XAddrs>10.0.0.1:80`, `<wsd:XAddrs>10.0.0.1:80 [fe80::1]:80`},
		{`<PeerDist:BlockCount>0000002A`, "<PeerDist:BlockCount>0000 002A"},
		{`PeerDist:PeerDistData</wsd:Types>`, `PeerDist:PeerDistDataV2</wsd:Types>`},
	} {
		if !strings.Contains(m, e.old) {
			tb.Fatalf("seed edit: %q not in the match", e.old)
		}
		out = append(out, []byte(strings.Replace(m, e.old, e.new, 1)))
	}
	return out
}

// FuzzParseEquivalence feeds the same bytes to the scanner-based parsers
// and to the encoding/xml reference decoder (pccrd_ref_test.go): they must
// classify every input alike (ok, oversized, foreign, invalid) and decode
// accepted ones to deep-equal values.
func FuzzParseEquivalence(f *testing.F) {
	addSeeds(f)
	for _, b := range equivalenceSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkEquivalent(t, b)
	})
}

func checkEquivalent(t *testing.T, b []byte) {
	t.Helper()
	p, err := ParseProbe(b)
	rp, rerr := parseProbeXML(b)
	if errClass(err) != errClass(rerr) {
		t.Fatalf("ParseProbe: %v\nreference: %v\ninput %q", err, rerr, b)
	}
	if err == nil && !reflect.DeepEqual(p, rp) {
		t.Fatalf("ParseProbe = %+v\nreference  %+v\ninput %q", p, rp, b)
	}
	m, err := ParseProbeMatch(b)
	rm, rerr := parseProbeMatchXML(b)
	if errClass(err) != errClass(rerr) {
		t.Fatalf("ParseProbeMatch: %v\nreference: %v\ninput %q", err, rerr, b)
	}
	if err == nil && !reflect.DeepEqual(m, rm) {
		t.Fatalf("ParseProbeMatch = %+v\nreference  %+v\ninput %q", m, rm, b)
	}
}

// TestParseEquivalenceSeeds runs the equivalence check on the seeds in
// every test run (the fuzz corpus runs too, as FuzzParseEquivalence).
func TestParseEquivalenceSeeds(t *testing.T) {
	for i, b := range equivalenceSeeds(t) {
		t.Run(strconv.Itoa(i), func(t *testing.T) { checkEquivalent(t, b) })
	}
}
