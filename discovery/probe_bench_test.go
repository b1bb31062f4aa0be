package discovery

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/peer/content"
)

func benchParse[T any](b *testing.B, msg []byte, parse func([]byte) (T, error)) {
	b.Helper()
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parse(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseProbe is the responder's parse cost per datagram.
func BenchmarkParseProbe(b *testing.B) {
	id := testSegment(1)
	ipxe, err := (&Probe{Version: V1, MessageID: "urn:uuid:0d4b1a2c-3e4f-4a5b-8c6d-7e8f9a0b1c2d", Segments: [][]byte{id[:]}}).Marshal()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("v1-compact", func(b *testing.B) { benchParse(b, ipxe, ParseProbe) })
	b.Run("v2-spec-4.2", func(b *testing.B) { benchParse(b, readTestdata(b, "pccrd-probe-v2-spec-4.2.xml"), ParseProbe) })
	b.Run("foreign-hello", func(b *testing.B) {
		msg := foreignDatagrams()["hello"]
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			if _, err := ParseProbe(msg); err == nil {
				b.Fatal("hello accepted")
			}
		}
	})
}

// BenchmarkParseProbeMatch is the prober's parse cost per reply.
func BenchmarkParseProbeMatch(b *testing.B) {
	id := testSegment(1)
	built, err := (&ProbeMatch{Version: V1, MessageID: "urn:uuid:1", RelatesTo: "urn:uuid:2", Address: "urn:uuid:3",
		XAddrs: []string{"10.0.0.1:1337"}, Segments: [][]byte{id[:]}, BlockCounts: []uint32{512}}).Marshal()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("v1-compact", func(b *testing.B) { benchParse(b, built, ParseProbeMatch) })
	b.Run("v2-spec-4.4", func(b *testing.B) {
		benchParse(b, readTestdata(b, "pccrd-probematch-v2-spec-4.4.corrected.xml"), ParseProbeMatch)
	})
}

// BenchmarkProbeFirstMatch measures probe-to-first-match latency over
// loopback (unicast) with the default 65 ms responder backoff, which
// dominates it. Reports p50 and p99 in ms. Use -benchtime=200x for a
// meaningful p99.
func BenchmarkProbeFirstMatch(b *testing.B) {
	for _, maxBackoff := range []time.Duration{DefaultMaxBackoff, time.Millisecond} {
		b.Run("backoff="+maxBackoff.String(), func(b *testing.B) {
			id := testSegment(0x3)
			h := newMemoryHolder()
			h.Add(id, 512)
			r := startResponder(b, h, nil, func(c *ResponderConfig) { c.MaxBackoff = maxBackoff; c.Rand = nil })
			p := startProber(b, loopbackAddr(r), nil, func(c *ProberConfig) { c.Retransmits = 0 })
			var lat []time.Duration
			for b.Loop() {
				got := time.Duration(0)
				err := p.ProbeEach(context.Background(), V1, []content.SegmentID{id}, func(m Match) bool {
					got = m.Latency
					return false
				})
				if err != nil || got == 0 {
					b.Fatalf("no match: %v", err)
				}
				lat = append(lat, got)
			}
			slices.Sort(lat)
			pct := func(q float64) float64 {
				return float64(lat[int(q*float64(len(lat)-1))]) / float64(time.Millisecond)
			}
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
		})
	}
}
