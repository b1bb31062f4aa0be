package peer

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestMetaRoundTrip(t *testing.T) {
	boot := time.UnixMilli(1_700_000_000_123)
	tests := []Meta{
		{},
		{NotLeaderMaterial: true, Priority: PriorityHigh, ProtoVersion: 2, Progress: 1 << 40, Boot: boot,
			PeerPort: 7381, Name: "pc-042", Location: "branch-7", Subnet: "10.1.2.0/24"},
		{Roaming: true, Name: strings.Repeat("n", maxMetaString), Location: strings.Repeat("l", maxMetaString),
			Subnet: "2001:db8:1234:5678::/64", Boot: boot, VoterOptOut: true, Class: 3, Role: 3,
			StateIndex: 1 << 50, ClusterID: "2b1f4c6e-8d3a-4f5b-9c7d-1e2f3a4b5c6d"},
	}
	for _, m := range tests {
		b := m.encode()
		if len(b) > 256 {
			t.Errorf("meta is %d bytes, want well under 512", len(b))
		}
		got, err := decodeMeta(b)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if m.Boot.IsZero() {
			m.Boot = time.UnixMilli(m.Boot.UnixMilli())
		}
		if !got.Boot.Equal(m.Boot) {
			t.Errorf("boot = %v, want %v", got.Boot, m.Boot)
		}
		got.Boot, m.Boot = time.Time{}, time.Time{}
		if got != m {
			t.Errorf("round trip = %+v, want %+v", got, m)
		}
		// A newer version appends fields: the prefix still decodes.
		if _, err := decodeMeta(append(bytes.Clone(b), 0xde, 0xad)); err != nil {
			t.Errorf("decode with trailing bytes: %v", err)
		}
	}
}

func TestMetaLongStringsTruncated(t *testing.T) {
	m := Meta{Name: strings.Repeat("x", 300)}
	got, err := decodeMeta(m.encode())
	if err != nil || len(got.Name) != maxMetaString {
		t.Fatalf("got %q, %v", got.Name, err)
	}
}

func FuzzDecodeMeta(f *testing.F) {
	f.Add(Meta{Name: "a", Location: "b", Subnet: "10.0.0.0/8", PeerPort: 1}.encode())
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode and decode to the same value.
		again, err := decodeMeta(m.encode())
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if again.Name != m.Name || again.Progress != m.Progress || again.Subnet != m.Subnet {
			t.Fatalf("unstable: %+v vs %+v", again, m)
		}
	})
}
