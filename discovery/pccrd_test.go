package discovery

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/redleader-p2p/redleader/peer/content"
)

func readTestdata(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func mustHex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// joinWrappedHex undoes the spec layout artefact: the examples wrap one
// 128-digit HoHoDk over two lines. It joins the line that starts with
// first with the next line.
func joinWrappedHex(tb testing.TB, b []byte, first string) []byte {
	tb.Helper()
	i := bytes.Index(b, []byte("\n"+first))
	if i < 0 {
		tb.Fatalf("wrapped hex %q not found", first)
	}
	j := i + 1 + bytes.IndexByte(b[i+1:], '\n')
	out := slices.Clone(b[:j])
	return append(out, b[j+1:]...)
}

// specHoHoDk64 is the 64-byte HoHoDk of the spec examples 4.1 and 4.3:
// 0x02 then 63 zero bytes.
func specHoHoDk64() []byte {
	b := make([]byte, 64)
	b[0] = 0x02
	return b
}

const (
	specProbeID  = "urn:uuid:91528b47-b96d-4e30-981f-308c0586926f"
	specMatchID  = "urn:uuid:7f4b09a3-96c9-4170-9eb3-1c805a52f444"
	specAddress  = "urn:uuid:87A89944-0230-43a5-AC4E-FAB1386C8E2C"
	specXAddr    = "157.59.141.183:54321"
	specInstance = 1218765447
)

// TestSpecProbes checks the spec's Probe examples (sections 4.1 and 4.2).
func TestSpecProbes(t *testing.T) {
	// 4.1 as published wraps its one 128-digit HoHoDk into tokens of 67 and
	// 61 digits: odd-length hexBinary, so the Probe is malformed (the spec
	// says a Probe with badly formatted Scopes is malformed). We reject it
	// on purpose and check the intended message with the wrap undone.
	v1 := readTestdata(t, "pccrd-probe-v1-spec-4.1.xml")
	if _, err := ParseProbe(v1); !errors.Is(err, ErrMalformed) {
		t.Fatalf("4.1 as published: err = %v, want ErrMalformed", err)
	}
	p, err := ParseProbe(joinWrappedHex(t, v1, "0200000000"))
	if err != nil {
		t.Fatalf("4.1 unwrapped: %v", err)
	}
	want := &Probe{Version: V1, MessageID: specProbeID, Segments: [][]byte{specHoHoDk64()}}
	assertProbe(t, p, want)

	p, err = ParseProbe(readTestdata(t, "pccrd-probe-v2-spec-4.2.xml"))
	if err != nil {
		t.Fatalf("4.2: %v", err)
	}
	id := mustHex(t, "23BE1A0100000000301D1A0100000000410041004400790067004D004D003100")
	assertProbe(t, p, &Probe{Version: V2, MessageID: specProbeID, Segments: [][]byte{id, id}})
}

func assertProbe(t *testing.T, got, want *Probe) {
	t.Helper()
	if got.Version != want.Version || got.MessageID != want.MessageID {
		t.Errorf("probe = %v %q, want %v %q", got.Version, got.MessageID, want.Version, want.MessageID)
	}
	if !slices.EqualFunc(got.Segments, want.Segments, bytes.Equal) {
		t.Errorf("segments = %x, want %x", got.Segments, want.Segments)
	}
}

// TestSpecProbeMatches checks the spec's ProbeMatch examples (4.3, 4.4).
func TestSpecProbeMatches(t *testing.T) {
	// As published, 4.3 and 4.4 are not well-formed XML (unquoted
	// xmlns:soap value, unterminated xmlns:PeerDist). They are rejected
	// cleanly, not tolerated.
	for _, name := range []string{"pccrd-probematch-v1-spec-4.3.xml", "pccrd-probematch-v2-spec-4.4.xml"} {
		if _, err := ParseProbeMatch(readTestdata(t, name)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}

	// The corrected 4.3 still wraps its 128-digit HoHoDk 64 + 64: read as
	// the whitespace-separated list the spec defines, that is two 32-byte
	// scopes with one block count, which iPXE also rejects ("more scopes
	// than counts"). We reject it on purpose; with the wrap undone it is the
	// message the spec means and every value is checked.
	v1 := readTestdata(t, "pccrd-probematch-v1-spec-4.3.corrected.xml")
	if _, err := ParseProbeMatch(v1); !errors.Is(err, ErrMalformed) {
		t.Fatalf("4.3 corrected, wrapped: err = %v, want ErrMalformed", err)
	}
	m, err := ParseProbeMatch(joinWrappedHex(t, v1, "0200000000"))
	if err != nil {
		t.Fatalf("4.3 corrected, unwrapped: %v", err)
	}
	assertMatchHeader(t, m, V1, 1)
	if !slices.EqualFunc(m.Segments, [][]byte{specHoHoDk64()}, bytes.Equal) {
		t.Errorf("segments = %x", m.Segments)
	}
	if !slices.Equal(m.BlockCounts, []uint32{0x2A}) {
		t.Errorf("block counts = %v, want [42]", m.BlockCounts)
	}

	m, err = ParseProbeMatch(readTestdata(t, "pccrd-probematch-v2-spec-4.4.corrected.xml"))
	if err != nil {
		t.Fatalf("4.4 corrected: %v", err)
	}
	assertMatchHeader(t, m, V2, 2)
	if !bytes.Equal(m.Availability, bytes.Repeat([]byte{0xFF}, 10)) {
		t.Errorf("availability = %x", m.Availability)
	}
	for i := range 40 {
		if has, full := m.Has(i); !has || !full {
			t.Errorf("segment %d: has %v full %v, want complete", i, has, full)
		}
	}
	if has, full := m.Has(40); has || full {
		t.Error("segment 40 reported present")
	}
	if m.AgeUnits != 3 || !slices.Equal(m.Ages, []SegmentAge{{0, 60000}, {2, 60000}}) {
		t.Errorf("ages = %d %v", m.AgeUnits, m.Ages)
	}
}

func assertMatchHeader(t *testing.T, m *ProbeMatch, v Version, mv uint32) {
	t.Helper()
	if m.Version != v || m.MetadataVersion != mv {
		t.Errorf("version %v metadata %d, want %v %d", m.Version, m.MetadataVersion, v, mv)
	}
	if m.MessageID != specMatchID || m.RelatesTo != specProbeID || m.Address != specAddress {
		t.Errorf("ids = %q %q %q", m.MessageID, m.RelatesTo, m.Address)
	}
	if !slices.Equal(m.XAddrs, []string{specXAddr}) {
		t.Errorf("xaddrs = %q", m.XAddrs)
	}
	if m.InstanceID != specInstance || m.MessageNumber != 4 {
		t.Errorf("app sequence = %d/%d", m.InstanceID, m.MessageNumber)
	}
}

// pccrdVectors is the part of testdata/pccrd-vectors.json the tests use.
type pccrdVectors struct {
	Examples []struct {
		ID             string          `json:"id"`
		ScopesBase64   string          `json:"scopes_base64"`
		AgesBase64     string          `json:"segment_ages_base64"`
		BlockCountText string          `json:"block_count_text"`
		Template       string          `json:"template"`
		Expected       json.RawMessage `json:"expected"`
		Derived        json.RawMessage `json:"derived"`
	} `json:"examples"`
}

func loadVectors(t *testing.T) pccrdVectors {
	t.Helper()
	var v pccrdVectors
	if err := json.Unmarshal(readTestdata(t, "pccrd-vectors.json"), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestVectorExamples checks the decoded examples of pccrd-vectors.json.
func TestVectorExamples(t *testing.T) {
	type hashes struct {
		Size   int      `json:"SegmentHashSize"`
		Count  int      `json:"SegmentHashCount"`
		HoHoDk []string `json:"HoHoDk_hex"`
	}
	seen := 0
	for _, ex := range loadVectors(t).Examples {
		t.Run(ex.ID, func(t *testing.T) {
			switch ex.ID {
			case "spec-2.2.2.1-v2-probe-scope", "spec-4.2-v2-probe-scope":
				raw := ex.Derived
				if raw == nil {
					raw = ex.Expected
				}
				var want hashes
				if err := json.Unmarshal(raw, &want); err != nil {
					t.Fatal(err)
				}
				segs, err := parseV2ProbeScopes(ex.ScopesBase64)
				if err != nil {
					t.Fatal(err)
				}
				if len(segs) != want.Count || len(segs[0]) != want.Size {
					t.Fatalf("got %d segments of %d bytes, want %d of %d", len(segs), len(segs[0]), want.Count, want.Size)
				}
				for i, h := range want.HoHoDk {
					if !bytes.Equal(segs[i], mustHex(t, h)) {
						t.Errorf("segment %d = %X, want %s", i, segs[i], h)
					}
				}
			case "spec-4.4-v2-probematch-scopes":
				b, err := decodeBase64(ex.ScopesBase64)
				if err != nil || !bytes.Equal(b, bytes.Repeat([]byte{0xFF}, 10)) {
					t.Fatalf("decoded %x, %v", b, err)
				}
			case "spec-4.4-v2-segment-ages":
				units, ages := parseSegmentAges(ex.AgesBase64)
				if units != 3 || !slices.Equal(ages, []SegmentAge{{0, 60000}, {2, 60000}}) {
					t.Errorf("ages = %d %v", units, ages)
				}
			case "spec-4.3-v1-blockcount":
				m := blockCountMatch(t, ex.BlockCountText, 1)
				if err := m.parseV1(m.env, m.scopes); err != nil || !slices.Equal(m.BlockCounts, []uint32{42}) {
					t.Errorf("counts = %v, %v", m.BlockCounts, err)
				}
			case "spec-2.2.3.9-v1-blockcount-conflicting-example":
				// The 16-bit-per-count prose example is a spec erratum: we
				// parse 8 digits per count, so it fails for 3 scopes.
				m := blockCountMatch(t, ex.BlockCountText, 3)
				if err := m.parseV1(m.env, m.scopes); !errors.Is(err, ErrMalformed) {
					t.Errorf("err = %v, want ErrMalformed", err)
				}
			case "ipxe-v1-probe-template":
				checkIPXETemplate(t, ex.Template)
			default:
				t.Skip("not a codec example")
			}
			seen++
		})
	}
	if seen != 7 {
		t.Errorf("checked %d examples, want 7", seen)
	}
}

type blockCountCase struct {
	*ProbeMatch
	env    *envelope
	scopes string
}

func blockCountMatch(t *testing.T, text string, n int) blockCountCase {
	t.Helper()
	var scopes []string
	for i := range n {
		scopes = append(scopes, strings.Repeat(string(rune('A'+i)), 64))
	}
	env := &envelope{fields: map[string]*field{pathBlockCount: {text: text, count: 1}}}
	return blockCountCase{&ProbeMatch{Version: V1}, env, strings.Join(scopes, " ")}
}

// checkIPXETemplate: the Probe we build is byte-identical to iPXE's
// known-good template, and the template parses.
func checkIPXETemplate(t *testing.T, tmpl string) {
	const uuid = "urn:uuid:0d4b1a2c-3e4f-4a5b-8c6d-7e8f9a0b1c2d"
	var id content.SegmentID
	for i := range id {
		id[i] = byte(i * 7)
	}
	want := strings.NewReplacer("urn:uuid:{UUID}", uuid, "{SEGMENT_ID_UPPERCASE_HEX}", scopeHex(id)).Replace(tmpl)
	got, err := (&Probe{Version: V1, MessageID: uuid, Segments: [][]byte{id[:]}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("built probe differs from iPXE template:\n got %s\nwant %s", got, want)
	}
	p, err := ParseProbe([]byte(want))
	if err != nil {
		t.Fatal(err)
	}
	assertProbe(t, p, &Probe{Version: V1, MessageID: uuid, Segments: [][]byte{id[:]}})
}

// scopeHex is a segment ID as v1 Scopes carry it: upper-case hex.
func scopeHex(id content.SegmentID) string { return strings.ToUpper(hex.EncodeToString(id[:])) }

func testSegment(seed byte) content.SegmentID {
	var id content.SegmentID
	for i := range id {
		id[i] = seed + byte(i)*0x11
	}
	return id
}

// TestProbeMatchIPXESubstrings: iPXE parses ProbeMatches by substring
// search; a built v1 ProbeMatch must contain its exact markers.
func TestProbeMatchIPXESubstrings(t *testing.T) {
	a, b := testSegment(0xa0), testSegment(0x0b)
	m := &ProbeMatch{
		Version: V1, MessageID: "urn:uuid:1", RelatesTo: "urn:uuid:2", Address: "urn:uuid:3",
		XAddrs: []string{"10.0.0.5:1337"}, Segments: [][]byte{a[:], b[:]}, BlockCounts: []uint32{42, 0x1ff},
		InstanceID: 7, MessageNumber: 9,
	}
	out, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, sub := range []string{
		`<wsd:Scopes>` + scopeHex(a) + ` ` + scopeHex(b) + `</wsd:Scopes>`,
		`<wsd:XAddrs>10.0.0.5:1337</wsd:XAddrs>`,
		`<PeerDist:BlockCount>0000002A000001FF</PeerDist:BlockCount>`,
		`<wsd:Types>PeerDist:PeerDistData</wsd:Types>`,
		`<wsd:MetadataVersion>1</wsd:MetadataVersion>`,
		`<wsa:RelatesTo>urn:uuid:2</wsa:RelatesTo>`,
		`<wsd:AppSequence InstanceId="7" MessageNumber="9"/>`,
		`xmlns:PeerDist="` + nsPeerDist + `"`,
	} {
		if !strings.Contains(s, sub) {
			t.Errorf("ProbeMatch lacks %s\n%s", sub, s)
		}
	}
	for _, bad := range []string{"<wsd:Scopes ", "<wsd:XAddrs ", "<PeerDist:BlockCount ", "<wsd:Scopes/>", "<wsd:XAddrs/>", "<PeerDist:BlockCount/>"} {
		if strings.Contains(s, bad) {
			t.Errorf("ProbeMatch contains %q", bad)
		}
	}
	if strings.Contains(s, a.String()) || strings.Contains(s, b.String()) {
		t.Error("segment hex not upper case")
	}
}

func TestRoundTrip(t *testing.T) {
	a, b := testSegment(1), testSegment(2)
	probes := []*Probe{
		{Version: V1, MessageID: "urn:uuid:p1", Segments: [][]byte{a[:]}},
		{Version: V1, MessageID: "urn:uuid:p2", Segments: [][]byte{a[:], b[:], make([]byte, 64)}},
		{Version: V2, MessageID: "urn:uuid:p3", Segments: [][]byte{a[:], b[:]}},
	}
	for _, p := range probes {
		out, err := p.Marshal()
		if err != nil {
			t.Fatalf("%s: %v", p.MessageID, err)
		}
		got, err := ParseProbe(out)
		if err != nil {
			t.Fatalf("%s: %v\n%s", p.MessageID, err, out)
		}
		assertProbe(t, got, p)
	}
	matches := []*ProbeMatch{
		{Version: V1, MessageID: "urn:uuid:m1", RelatesTo: "urn:uuid:p1", Address: "urn:uuid:x",
			XAddrs: []string{"10.1.2.3:80", "[fe80::1]:80"}, MetadataVersion: 1,
			Segments: [][]byte{a[:], b[:]}, BlockCounts: []uint32{1, 0xFFFFFFFF}, InstanceID: 1 << 31, MessageNumber: 1},
		{Version: V2, MessageID: "urn:uuid:m2", RelatesTo: "urn:uuid:p3", Address: "urn:uuid:x",
			XAddrs: []string{"10.1.2.3:80"}, MetadataVersion: 2, Availability: []byte{0xC0},
			AgeUnits: 3, Ages: []SegmentAge{{0, 1<<24 - 1}}},
	}
	for _, m := range matches {
		out, err := m.Marshal()
		if err != nil {
			t.Fatalf("%s: %v", m.MessageID, err)
		}
		got, err := ParseProbeMatch(out)
		if err != nil {
			t.Fatalf("%s: %v\n%s", m.MessageID, err, out)
		}
		if got.Version != m.Version || got.MessageID != m.MessageID || got.RelatesTo != m.RelatesTo ||
			got.Address != m.Address || !slices.Equal(got.XAddrs, m.XAddrs) ||
			got.MetadataVersion != m.MetadataVersion || got.InstanceID != m.InstanceID ||
			got.MessageNumber != m.MessageNumber || !slices.EqualFunc(got.Segments, m.Segments, bytes.Equal) ||
			!slices.Equal(got.BlockCounts, m.BlockCounts) || !bytes.Equal(got.Availability, m.Availability) ||
			got.AgeUnits != m.AgeUnits || !slices.Equal(got.Ages, m.Ages) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, m)
		}
	}
	if has, full := matches[1].Has(0); !has || !full {
		t.Error("v2 bit 0 not set")
	}
}

func TestMarshalRejectsBadValues(t *testing.T) {
	id := testSegment(3)
	good := func() *ProbeMatch {
		return &ProbeMatch{Version: V1, MessageID: "urn:uuid:a", RelatesTo: "urn:uuid:b", Address: "urn:uuid:c",
			XAddrs: []string{"1.2.3.4:5"}, Segments: [][]byte{id[:]}, BlockCounts: []uint32{1}}
	}
	tests := []struct {
		name string
		edit func(*ProbeMatch)
	}{
		{"bad version", func(m *ProbeMatch) { m.Version = 3 }},
		{"no message id", func(m *ProbeMatch) { m.MessageID = "" }},
		{"space in relates to", func(m *ProbeMatch) { m.RelatesTo = "a b" }},
		{"no xaddrs", func(m *ProbeMatch) { m.XAddrs = nil }},
		{"no segments", func(m *ProbeMatch) { m.Segments, m.BlockCounts = nil, nil }},
		{"short segment", func(m *ProbeMatch) { m.Segments = [][]byte{id[:31]} }},
		{"count mismatch", func(m *ProbeMatch) { m.BlockCounts = []uint32{1, 2} }},
		{"v2 no availability", func(m *ProbeMatch) { m.Version = V2 }},
		{"v2 age too big", func(m *ProbeMatch) {
			m.Version, m.Availability, m.Ages = V2, []byte{0xC0}, []SegmentAge{{0, 1 << 24}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := good()
			tt.edit(m)
			if _, err := m.Marshal(); !errors.Is(err, ErrInvalidMessage) {
				t.Errorf("err = %v, want ErrInvalidMessage", err)
			}
		})
	}
	if _, err := good().Marshal(); err != nil {
		t.Fatalf("good match: %v", err)
	}
	for _, p := range []*Probe{
		{Version: V1, MessageID: "urn:uuid:a"},
		{Version: V2, MessageID: "urn:uuid:a", Segments: [][]byte{id[:], make([]byte, 64)}},
		{Version: 0, MessageID: "urn:uuid:a", Segments: [][]byte{id[:]}},
	} {
		if _, err := p.Marshal(); !errors.Is(err, ErrInvalidMessage) {
			t.Errorf("probe %+v: err = %v", p, err)
		}
	}
}
