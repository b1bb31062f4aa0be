package discovery

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
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
