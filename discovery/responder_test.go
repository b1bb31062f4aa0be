package discovery

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/redleader-p2p/redleader/internal/logtest"
	"github.com/redleader-p2p/redleader/internal/wait"
	"github.com/redleader-p2p/redleader/peer/content"
)

func staticXAddrs(s ...string) func() []netip.AddrPort {
	var out []netip.AddrPort
	for _, x := range s {
		out = append(out, netip.MustParseAddrPort(x))
	}
	return func() []netip.AddrPort { return out }
}

func loopbackNets() []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} }

// startResponder starts a unicast responder on 127.0.0.1 with a tiny
// backoff. edit may change the config.
func startResponder(t testing.TB, h Holder, m *Metrics, edit func(*ResponderConfig)) *Responder {
	t.Helper()
	return startResponderLog(t, h, m, nil, edit)
}

// startResponderLog is startResponder with a logger.
func startResponderLog(t testing.TB, h Holder, m *Metrics, log *slog.Logger, edit func(*ResponderConfig)) *Responder {
	t.Helper()
	cfg := DefaultResponderConfig()
	cfg.Port = 0
	cfg.NoMulticast = true
	cfg.BindAddr = netip.MustParseAddr("127.0.0.1")
	cfg.MaxBackoff = 2 * time.Millisecond
	cfg.XAddrs = staticXAddrs("127.0.0.1:8080")
	cfg.Rand = rand.New(rand.NewPCG(1, 1))
	if edit != nil {
		edit(&cfg)
	}
	r, err := NewResponder(cfg, h, m, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// loopbackAddr is the responder's address with 127.0.0.1 for a wildcard.
func loopbackAddr(r *Responder) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), r.Addr().Port())
}

func startProber(t testing.TB, target netip.AddrPort, m *Metrics, edit func(*ProberConfig)) *Prober {
	t.Helper()
	cfg := DefaultProberConfig()
	cfg.Targets = []netip.AddrPort{target}
	cfg.BindAddr = netip.MustParseAddrPort("127.0.0.1:0")
	cfg.RequestTimer = MaxRequestTimer
	cfg.LocalNets = loopbackNets
	if edit != nil {
		edit(&cfg)
	}
	p, err := NewProber(cfg, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func TestProberResponderLoopback(t *testing.T) {
	verifyNoLeaks(t)
	a, b, c := testSegment(0xa), testSegment(0xb), testSegment(0xc)
	h := newMemoryHolder()
	h.Add(a, 512)
	h.Add(c, 3)
	rm, pm := NewMetrics(nil), NewMetrics(nil)
	r := startResponder(t, h, rm, nil)
	p := startProber(t, loopbackAddr(r), pm, nil)

	got, err := p.Probe(context.Background(), a, b, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("%d matches, want 1: %+v", len(got), got)
	}
	m := got[0]
	want := []SegmentMatch{{ID: a, Blocks: 512}, {ID: c, Blocks: 3}}
	if m.Peer != netip.MustParseAddrPort("127.0.0.1:8080") || m.Version != V1 || !equalSegments(m.Segments, want) {
		t.Errorf("match = %+v", m)
	}
	if m.Source != loopbackAddr(r) || !strings.HasPrefix(m.Endpoint, "urn:uuid:") || m.Latency <= 0 {
		t.Errorf("match source %v endpoint %q latency %v", m.Source, m.Endpoint, m.Latency)
	}

	// v2: availability bits relative to the Probe's segment order.
	var v2 []Match
	err = p.ProbeEach(context.Background(), V2, []content.SegmentID{b, c}, func(m Match) bool {
		v2 = append(v2, m)
		return false // stop at the first match
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(v2) != 1 || v2[0].Version != V2 || !equalSegments(v2[0].Segments, []SegmentMatch{{ID: c, Full: true}}) {
		t.Errorf("v2 matches = %+v", v2)
	}

	// A Probe for nothing held gets no reply.
	if got, err := p.Probe(context.Background(), b); err != nil || len(got) != 0 {
		t.Errorf("probe for unheld segment: %v, %v", got, err)
	}
	if n := metricValue(t, rm.ProbesReceived); n != 3 {
		t.Errorf("responder probes received = %v, want 3", n)
	}
	if n := metricValue(t, rm.MatchesSent); n != 2 {
		t.Errorf("matches sent = %v, want 2", n)
	}
	if n := metricValue(t, pm.MatchesReceived); n != 2 {
		t.Errorf("matches received = %v, want 2", n)
	}
	if n := metricValue(t, pm.FirstMatchLatency); n != 2 {
		t.Errorf("latency samples = %v, want 2", n)
	}
	// Each probe is sent twice (one retransmission), answered once.
	if n := metricValue(t, pm.ProbesSent); n < 3 {
		t.Errorf("probes sent = %v", n)
	}
	_ = p.Close()
	_ = r.Close()
}

// verifyNoLeaks checks for leaked goroutines after the test's other
// cleanups (Close calls registered by the start helpers) have run.
func verifyNoLeaks(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

func equalSegments(a, b []SegmentMatch) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestResponderSuppression drives the rule through a real responder with
// a fixed random draw: the segment is answered only in the allowed cases.
func TestResponderSuppression(t *testing.T) {
	verifyNoLeaks(t)
	tests := []struct {
		name          string
		replies, full int
		u             float64
		want          bool
	}{
		{"few replies", 9, 0, 0.99, true},
		{"enough full replies", 10, 10, 0, false},
		{"partial, lucky draw", 10, 9, 0.125, true},
		{"partial, unlucky draw", 10, 9, 0.5, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := testSegment(0x5)
			h := newMemoryHolder()
			h.Add(id, 1)
			m := NewMetrics(nil)
			r := startResponder(t, h, m, func(c *ResponderConfig) { c.Rand = fixedRand(tt.u) })
			r.RecordFetch(id, tt.replies, tt.full)
			p := startProber(t, loopbackAddr(r), nil, func(c *ProberConfig) { c.RequestTimer = MinRequestTimer })
			got, err := p.Probe(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			if (len(got) == 1) != tt.want {
				t.Errorf("%d matches, want answered=%v", len(got), tt.want)
			}
			suppressed := metricValue(t, m.MatchesSuppressed.WithLabelValues(suppressPolicy))
			if (suppressed > 0) == tt.want {
				t.Errorf("suppressed counter = %v", suppressed)
			}
			_ = p.Close()
			_ = r.Close()
		})
	}
}

// foreignDatagrams is traffic a PCCRD responder must drop: other
// WS-Discovery messages and types, broken XML, junk, oversized data.
func foreignDatagrams() map[string][]byte {
	const env = `<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:wsd="http://schemas.xmlsoap.org/ws/2005/04/discovery" xmlns:wsdp="http://schemas.xmlsoap.org/ws/2006/02/devprof" xmlns:PeerDist="http://schemas.microsoft.com/p2p/2007/09/PeerDistributionDiscovery">`
	hdr := func(action string) string {
		return `<soap:Header><wsa:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</wsa:To><wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/` +
			action + `</wsa:Action><wsa:MessageID>urn:uuid:0b5e1d9c-1111-4222-8333-944455556666</wsa:MessageID></soap:Header>`
	}
	sid := testSegment(0x42)
	id := scopeHex(sid)
	probe := func(types, matchBy, scopes string) []byte {
		return []byte(env + hdr("Probe") + `<soap:Body><wsd:Probe><wsd:Types>` + types + `</wsd:Types><wsd:Scopes MatchBy="` +
			matchBy + `">` + scopes + `</wsd:Scopes></wsd:Probe></soap:Body></soap:Envelope>`)
	}
	good := probe("PeerDist:PeerDistData", matchByV1, id)
	rnd := rand.New(rand.NewPCG(3, 4))
	junk := make([]byte, 700)
	for i := range junk {
		junk[i] = byte(rnd.Uint32())
	}
	match, _ := (&ProbeMatch{Version: V1, MessageID: "urn:uuid:a", RelatesTo: "urn:uuid:b", Address: "urn:uuid:c",
		XAddrs: []string{"127.0.0.1:1"}, Segments: [][]byte{sid[:]}, BlockCounts: []uint32{1}}).Marshal()
	return map[string][]byte{
		"hello":                  []byte(env + hdr("Hello") + `<soap:Body><wsd:Hello><wsa:EndpointReference><wsa:Address>urn:uuid:1</wsa:Address></wsa:EndpointReference><wsd:Types>wsdp:Device</wsd:Types><wsd:MetadataVersion>1</wsd:MetadataVersion></wsd:Hello></soap:Body></soap:Envelope>`),
		"bye":                    []byte(env + hdr("Bye") + `<soap:Body><wsd:Bye><wsa:EndpointReference><wsa:Address>urn:uuid:1</wsa:Address></wsa:EndpointReference></wsd:Bye></soap:Body></soap:Envelope>`),
		"resolve":                []byte(env + hdr("Resolve") + `<soap:Body><wsd:Resolve><wsa:EndpointReference><wsa:Address>urn:uuid:1</wsa:Address></wsa:EndpointReference></wsd:Resolve></soap:Body></soap:Envelope>`),
		"probe for printers":     probe("wsdp:Device", "", ""),
		"probe for two types":    probe("PeerDist:PeerDistData wsdp:Device", matchByV1, id),
		"probe without types":    []byte(env + hdr("Probe") + `<soap:Body><wsd:Probe/></soap:Body></soap:Envelope>`),
		"ws-discovery 1.1 probe": []byte(`<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing" xmlns:d="http://docs.oasis-open.org/ws-dd/ns/discovery/2009/01"><s:Header><a:Action>http://docs.oasis-open.org/ws-dd/ns/discovery/2009/01/Probe</a:Action><a:MessageID>urn:uuid:1</a:MessageID></s:Header><s:Body><d:Probe/></s:Body></s:Envelope>`),
		"soap 1.1 envelope":      []byte(`<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body/></s:Envelope>`),
		"probe match":            match,
		"wrong match rule":       probe("PeerDist:PeerDistData", matchByV2, id),
		"v2 type hex scopes":     probe("PeerDist:PeerDistDataV2", matchByV2, id),
		"odd-length hex":         probe("PeerDist:PeerDistData", matchByV1, id[:63]),
		"empty scopes":           probe("PeerDist:PeerDistData", matchByV1, "  "),
		"31-byte scope":          probe("PeerDist:PeerDistData", matchByV1, id[:62]),
		"undeclared prefix":      probe("Foo:PeerDistData", matchByV1, id),
		"truncated":              good[:len(good)/2],
		"truncated at end":       good[:len(good)-1],
		"two roots":              append(append([]byte{}, good...), good[38:]...),
		"doctype":                []byte(`<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope">&lol2;</soap:Envelope>`),
		"deep nesting":           []byte(env + strings.Repeat("<a>", 100) + strings.Repeat("</a>", 100) + `</soap:Envelope>`),
		"utf-16 declaration":     []byte(`<?xml version="1.0" encoding="utf-16"?>` + string(good[38:])),
		"oversized":              append(bytes.Repeat([]byte(" "), MaxMessageSize), good...),
		"random bytes":           junk,
		"empty":                  {},
		"nul bytes":              make([]byte, 64),
		"plain text":             []byte("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n\r\n"),
	}
}

// TestParseRejectsForeign: every foreign datagram is an error from both
// parsers, of a kind the metrics can classify.
func TestParseRejectsForeign(t *testing.T) {
	for name, b := range foreignDatagrams() {
		if _, err := ParseProbe(b); !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotPCCRD) && !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: ParseProbe err = %v", name, err)
		}
		if name == "probe match" {
			continue
		}
		if _, err := ParseProbeMatch(b); err == nil {
			t.Errorf("%s: ParseProbeMatch accepted it", name)
		}
	}
	if _, err := ParseProbe(foreignDatagrams()["oversized"]); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized: err = %v, want ErrTooLarge", err)
	}
	if _, err := ParseProbe(foreignDatagrams()["hello"]); !errors.Is(err, ErrNotPCCRD) {
		t.Errorf("hello: err = %v, want ErrNotPCCRD", err)
	}
}

// TestForeignTraffic: a stream of foreign datagrams sent at a responder
// changes nothing but the malformed-dropped counter (and logs at most
// logBurst lines about them); a valid Probe sent last is still answered.
func TestForeignTraffic(t *testing.T) {
	verifyNoLeaks(t)
	id := testSegment(0x42)
	h := newMemoryHolder()
	h.Add(id, 9)
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)
	logged := &logtest.Recorder{}
	r := startResponderLog(t, h, m, slog.New(logged), nil)

	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dst := loopbackAddr(r)
	foreign := foreignDatagrams()
	const rounds = 3
	droppedTotal := func() float64 {
		sum := 0.0
		for _, reason := range []string{dropOversized, dropInvalid, dropForeign} {
			sum += metricValue(t, m.MalformedDropped.WithLabelValues(reason))
		}
		return sum
	}
	sent := 0
	for range rounds {
		for name, b := range foreign {
			if _, err := conn.WriteToUDPAddrPort(b, dst); err != nil {
				t.Fatalf("send %s: %v", name, err)
			}
			sent++
			// Wait until it is counted, so no datagram is lost to a full
			// socket buffer (this is pacing, not a timing assertion).
			wait.For(t, 10*time.Second, "datagram "+name+" counted as dropped", func() bool { return droppedTotal() >= float64(sent) })
		}
	}
	// Sentinel: a valid Probe. Datagrams from one socket are handled in
	// order, so its answer means every foreign datagram was processed.
	probe, err := (&Probe{Version: V1, MessageID: "urn:uuid:sentinel", Segments: [][]byte{id[:]}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteToUDPAddrPort(probe, dst); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, MaxMessageSize)
	n, _, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("no answer to the sentinel probe: %v", err)
	}
	pm, err := ParseProbeMatch(buf[:n])
	if err != nil || pm.RelatesTo != "urn:uuid:sentinel" {
		t.Fatalf("first datagram back is not the sentinel's answer: %v %+v", err, pm)
	}

	// The responder counts a reply after sending it.
	wait.For(t, 10*time.Second, "sentinel reply counted", func() bool { return metricValue(t, m.MatchesSent) >= 1 })
	total := float64(rounds * len(foreign))
	if dropped := droppedTotal(); dropped != total {
		t.Errorf("malformed dropped = %v, want %v", dropped, total)
	}
	if got := metricValue(t, m.MalformedDropped.WithLabelValues(dropOversized)); got != rounds {
		t.Errorf("oversized dropped = %v, want %v", got, rounds)
	}
	for name, c := range map[string]prometheus.Collector{
		"probes received": m.ProbesReceived, "matches sent": m.MatchesSent,
	} {
		if got := metricValue(t, c); got != 1 {
			t.Errorf("%s = %v, want 1 (the sentinel only)", name, got)
		}
	}
	for name, c := range map[string]prometheus.Collector{
		"probes sent": m.ProbesSent, "matches received": m.MatchesReceived,
	} {
		if got := metricValue(t, c); got != 0 {
			t.Errorf("%s = %v, want 0", name, got)
		}
	}
	if got := metricValue(t, m.MatchesSuppressed); got != 0 {
		t.Errorf("suppressed = %v, want 0", got)
	}
	if _, err := reg.Gather(); err != nil {
		t.Errorf("gather metrics: %v", err)
	}
	_ = r.Close()
	if n := logged.Count("dropped datagram"); n != logBurst {
		t.Errorf("%d dropped-datagram log lines for %v datagrams from one source, want %d", n, total, logBurst)
	}
}

// TestProberFiltersReplies: a fake responder answers a Probe with replies
// that must be ignored (other subnet, other type, segment not outstanding,
// duplicate) and one that counts.
func TestProberFiltersReplies(t *testing.T) {
	verifyNoLeaks(t)
	fake, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	m := NewMetrics(nil)
	p := startProber(t, fake.LocalAddr().(*net.UDPAddr).AddrPort(), m, func(c *ProberConfig) { c.Retransmits = 0 })

	want, other := testSegment(1), testSegment(2)
	errc := make(chan error, 1)
	go func() {
		errc <- func() error {
			buf := make([]byte, MaxMessageSize)
			n, src, err := fake.ReadFromUDPAddrPort(buf)
			if err != nil {
				return err
			}
			probe, err := ParseProbe(buf[:n])
			if err != nil {
				return err
			}
			reply := func(v Version, xaddr string, seg content.SegmentID, blocks uint32) []byte {
				pm := &ProbeMatch{Version: v, MessageID: "urn:uuid:r", RelatesTo: probe.MessageID, Address: "urn:uuid:peer",
					XAddrs: strings.Fields(xaddr)}
				if v == V1 {
					pm.Segments, pm.BlockCounts = [][]byte{seg[:]}, []uint32{blocks}
				} else {
					pm.Availability = []byte{0xC0}
				}
				b, err := pm.Marshal()
				if err != nil {
					panic(err)
				}
				return b
			}
			for _, b := range [][]byte{
				reply(V1, "10.9.9.9:80", want, 5),                 // other subnet
				reply(V1, "http://192.168.77.1:80/x/", want, 5),   // other subnet, URL form
				reply(V2, "127.0.0.2:80", want, 5),                // v2 reply to a v1 probe
				reply(V1, "127.0.0.3:80", other, 5),               // segment not outstanding
				reply(V1, "127.0.0.4:80", want, 0),                // zero blocks = not held
				reply(V1, "10.0.0.1:1 127.0.0.5:8080", want, 5),   // counts (second XAddr local)
				reply(V1, "127.0.0.5:8080", want, 5),              // duplicate peer
				[]byte("junk"),                                    // malformed
				reply(V1, "http://127.0.0.6:1337/path/", want, 1), // counts: sentinel
			} {
				if _, err := fake.WriteToUDPAddrPort(b, src); err != nil {
					return err
				}
			}
			return nil
		}()
	}()
	var got []Match
	err = p.ProbeEach(context.Background(), V1, []content.SegmentID{want}, func(m Match) bool {
		got = append(got, m)
		return m.Peer.Port() != 1337
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Peer != netip.MustParseAddrPort("127.0.0.5:8080") ||
		got[1].Peer != netip.MustParseAddrPort("127.0.0.6:1337") || got[0].Segments[0] != (SegmentMatch{ID: want, Blocks: 5}) {
		t.Errorf("matches = %+v", got)
	}
	for reason, want := range map[string]float64{
		ignoreSubnet: 2, ignoreType: 1, ignoreOutstanding: 2, ignoreDuplicate: 1,
	} {
		if n := metricValue(t, m.MatchesIgnored.WithLabelValues(reason)); n != want {
			t.Errorf("ignored %s = %v, want %v", reason, n, want)
		}
	}
	if n := metricValue(t, m.MalformedDropped.WithLabelValues(dropForeign)); n != 1 {
		t.Errorf("malformed = %v, want 1", n)
	}
	_ = p.Close()
}

func TestProberTypeMismatch(t *testing.T) {
	p, err := NewProber(DefaultProberConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := testSegment(3)
	o := &outstanding{messageID: "urn:uuid:p", version: V2, ids: []content.SegmentID{id}, peers: map[netip.AddrPort]bool{}, ch: make(chan Match, 1)}
	p.out[o.messageID] = o
	p.nets = loopbackNets()
	b, err := (&ProbeMatch{Version: V1, MessageID: "urn:uuid:r", RelatesTo: "urn:uuid:p", Address: "urn:uuid:a",
		XAddrs: []string{"127.0.0.1:80"}, Segments: [][]byte{id[:]}, BlockCounts: []uint32{1}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	p.handle(b, netip.MustParseAddrPort("127.0.0.1:9"), time.Now())
	if n := metricValue(t, p.m.MatchesIgnored.WithLabelValues(ignoreType)); n != 1 || len(o.ch) != 0 {
		t.Errorf("type mismatch: ignored %v, delivered %d", n, len(o.ch))
	}
}

func TestConfigValidation(t *testing.T) {
	pc := func(edit func(*ProberConfig)) error {
		c := DefaultProberConfig()
		edit(&c)
		_, err := NewProber(c, nil, nil)
		return err
	}
	rc := func(edit func(*ResponderConfig)) error {
		c := DefaultResponderConfig()
		c.XAddrs = staticXAddrs("127.0.0.1:1")
		edit(&c)
		_, err := NewResponder(c, newMemoryHolder(), nil, nil)
		return err
	}
	tests := []struct {
		name string
		err  error
	}{
		{"prober defaults", pc(func(*ProberConfig) {})},
		{"responder defaults", rc(func(*ResponderConfig) {})},
	}
	for _, tt := range tests {
		if tt.err != nil {
			t.Errorf("%s: %v", tt.name, tt.err)
		}
	}
	bad := map[string]error{
		"timer too short":         pc(func(c *ProberConfig) { c.RequestTimer = 100 * time.Millisecond }),
		"timer too long":          pc(func(c *ProberConfig) { c.RequestTimer = time.Second }),
		"timer below backoff":     pc(func(c *ProberConfig) { c.MaxBackoff = 250 * time.Millisecond; c.RequestTimer = 200 * time.Millisecond }),
		"no targets":              pc(func(c *ProberConfig) { c.Targets = nil }),
		"target port 0":           pc(func(c *ProberConfig) { c.Targets = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")} }),
		"negative retransmits":    pc(func(c *ProberConfig) { c.Retransmits = -1 }),
		"no xaddrs":               rc(func(c *ResponderConfig) { c.XAddrs = nil }),
		"backoff zero":            rc(func(c *ResponderConfig) { c.MaxBackoff = 0 }),
		"threshold zero":          rc(func(c *ResponderConfig) { c.ReplyThreshold = 0 }),
		"probability above one":   rc(func(c *ResponderConfig) { c.ReplyProbability = 1.5 }),
		"unicast group":           rc(func(c *ResponderConfig) { c.Groups = []netip.Addr{netip.MustParseAddr("10.0.0.1")} }),
		"port out of range":       rc(func(c *ResponderConfig) { c.Port = 70000 }),
		"max pending zero":        rc(func(c *ResponderConfig) { c.MaxPending = 0 }),
		"no groups and multicast": rc(func(c *ResponderConfig) { c.Groups = nil }),
	}
	for name, err := range bad {
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig", name, err)
		}
	}
	if _, err := NewResponder(DefaultResponderConfig(), nil, nil, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("nil holder: %v", err)
	}
}

func TestLifecycle(t *testing.T) {
	verifyNoLeaks(t)
	p, err := NewProber(DefaultProberConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Probe(context.Background(), testSegment(1)); !errors.Is(err, ErrNotStarted) {
		t.Errorf("probe before start: %v", err)
	}
	_ = p.Close()
	if err := p.Start(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("start after close: %v", err)
	}

	// Cancelling the Start context stops everything.
	ctx, cancel := context.WithCancel(context.Background())
	r := startResponder(t, newMemoryHolder(), nil, nil)
	p2 := startProber(t, loopbackAddr(r), nil, nil)
	_ = r.Close()
	done := make(chan error, 1)
	go func() {
		done <- p2.ProbeEach(ctx, V1, []content.SegmentID{testSegment(1)}, func(Match) bool { return true })
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) && err != nil {
		t.Errorf("probe with cancelled ctx: %v", err)
	}
	_ = p2.Close()
	if _, err := p2.Probe(context.Background(), testSegment(1)); !errors.Is(err, ErrClosed) {
		t.Errorf("probe after close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

// TestStartCloseRace: Close racing with Start leaves no goroutine or
// socket behind (goleak), and Start after Close fails with ErrClosed.
func TestStartCloseRace(t *testing.T) {
	verifyNoLeaks(t)
	ctx := context.Background() // never cancelled: only Close may stop them
	for i := range 50 {
		rc := DefaultResponderConfig()
		rc.Port, rc.NoMulticast, rc.BindAddr = 0, true, netip.MustParseAddr("127.0.0.1")
		rc.XAddrs = staticXAddrs("127.0.0.1:1")
		r, err := NewResponder(rc, newMemoryHolder(), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		pc := DefaultProberConfig()
		pc.Targets = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}
		pc.BindAddr = netip.MustParseAddrPort("127.0.0.1:0")
		pc.LocalNets = loopbackNets
		p, err := NewProber(pc, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		started := make(chan error, 2)
		go func() { started <- r.Start(ctx) }()
		go func() { started <- p.Start(ctx) }()
		if i%2 == 0 {
			runtime.Gosched()
		}
		_ = r.Close()
		_ = p.Close()
		for range 2 {
			if err := <-started; err != nil && !errors.Is(err, ErrClosed) {
				t.Fatalf("round %d: start: %v", i, err)
			}
		}
		if err := r.Start(ctx); !errors.Is(err, ErrClosed) {
			t.Fatalf("round %d: responder start after close: %v", i, err)
		}
		if err := p.Start(ctx); !errors.Is(err, ErrClosed) {
			t.Fatalf("round %d: prober start after close: %v", i, err)
		}
	}
}

// loMulticast reports whether the loopback interface can carry multicast
// (as in the project's test network namespace).
func loMulticast(t testing.TB) string {
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Skipf("list interfaces: %v", err)
	}
	for _, ifi := range ifaces {
		if ifi.Flags&net.FlagLoopback != 0 && ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagMulticast != 0 {
			return ifi.Name
		}
	}
	t.Skip("loopback interface has no MULTICAST flag; run in a netns with `ip link set lo multicast on`")
	return ""
}

// TestMulticastLoopback sends the Probe to the WS-Discovery group on the
// loopback interface only (ephemeral port), never on a real network.
func TestMulticastLoopback(t *testing.T) {
	lo := loMulticast(t)
	verifyNoLeaks(t)
	id := testSegment(0x77)
	h := newMemoryHolder()
	h.Add(id, 4)
	r := startResponder(t, h, nil, func(c *ResponderConfig) {
		c.NoMulticast = false
		c.Interfaces = []string{lo}
		c.Groups = []netip.Addr{netip.MustParseAddr(MulticastIPv4)}
	})
	group := netip.AddrPortFrom(netip.MustParseAddr(MulticastIPv4), r.Addr().Port())
	p := startProber(t, group, nil, func(c *ProberConfig) {
		c.Interface = lo
		c.BindAddr = netip.AddrPort{}
	})
	got, err := p.Probe(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !equalSegments(got[0].Segments, []SegmentMatch{{ID: id, Blocks: 4}}) {
		t.Errorf("matches = %+v", got)
	}
	_ = p.Close()
	_ = r.Close()
}
