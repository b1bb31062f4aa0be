package discovery

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
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

// craftedDatagrams are MaxMessageSize envelopes built to make a parser do
// the most work per byte: many namespace declarations (each prefix lookup
// must stay cheap), many attributes with references, and many non-ASCII
// names (checked by encoding/xml). All are rejected.
func craftedDatagrams() map[string][]byte {
	head := `<soap:Envelope xmlns:soap="` + nsSOAP + `" xmlns:wsa="` + nsWSA + `" xmlns:PeerDist="` + nsPeerDist + `"`
	build := func(open, repeat func(*strings.Builder, int), close string) []byte {
		var b strings.Builder
		b.WriteString(head)
		open(&b, 0)
		for i := 0; b.Len() < MaxMessageSize-len(close)-32; i++ {
			repeat(&b, i)
		}
		b.WriteString(close)
		return []byte(b.String())
	}
	return map[string][]byte{
		"declarations": build(func(b *strings.Builder, _ int) {
			for i := range 1000 {
				fmt.Fprintf(b, ` xmlns:p%d="u"`, i)
			}
			b.WriteString(`><soap:Header>`)
		}, func(b *strings.Builder, _ int) { b.WriteString(`<wsa:To/>`) }, `</soap:Header></soap:Envelope>`),
		"attributes": build(func(b *strings.Builder, _ int) { b.WriteString(`><soap:Header><x`) },
			func(b *strings.Builder, i int) { fmt.Fprintf(b, ` a%d="&lt;&#65;"`, i) }, `/></soap:Header></soap:Envelope>`),
		"non-ascii-names": build(func(b *strings.Builder, _ int) { b.WriteString(`><soap:Header><x`) },
			func(b *strings.Builder, i int) { fmt.Fprintf(b, ` é%d=""`, i) }, `/></soap:Header></soap:Envelope>`),
	}
}

// BenchmarkParseCrafted is the cost of the worst datagrams we know of, for
// the scanner and (as "reference") the encoding/xml decoder it replaced.
func BenchmarkParseCrafted(b *testing.B) {
	crafted := craftedDatagrams()
	for _, name := range slices.Sorted(maps.Keys(crafted)) {
		msg := crafted[name]
		for _, parse := range []struct {
			name string
			fn   func([]byte) (*Probe, error)
		}{{"scanner", ParseProbe}, {"reference", parseProbeXML}} {
			b.Run(name+"/"+parse.name, func(b *testing.B) {
				b.SetBytes(int64(len(msg)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := parse.fn(msg); err == nil {
						b.Fatal("accepted")
					}
				}
			})
		}
	}
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
