//go:build linux

package lab_test

// End-to-end tests of MS-PCCRD discovery (issue 4): real agents probing
// each other over 239.255.255.250:3702 on lab bridges, holding segments
// pre-staged through the local API (POST /v1/cache, `redleader cache add`).

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/discovery"
	"github.com/redleader-p2p/redleader/internal/wait"
	"github.com/redleader-p2p/redleader/lab"
	"github.com/redleader-p2p/redleader/peer"
	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/peer/content"
)

// pccrdBlocks is the block count of the test segments: holders hold all of
// them, so a reply is full when a prober asks for pccrdBlocks.
const pccrdBlocks = 8

// pccrdEnv is the environment of a discovery test agent: with voter=false
// it stays out of the Raft group, to keep 41 agents cheap.
func pccrdEnv(voter bool) []string {
	if voter {
		return nil
	}
	return []string{"REDLEADER_ELECTION_VOTER=never"}
}

// pccrdContent is a test content of one segment: its bytes, its content
// information (v1, server secret of the passphrase "lab") and segment ID.
type pccrdContent struct {
	data []byte
	ci   []byte
	info *content.Info
	id   string // segment ID, 64 lower-case hex digits
}

// newPCCRDContent returns random content of one segment of blocks blocks.
func newPCCRDContent(tb testing.TB, blocks int) pccrdContent {
	tb.Helper()
	data := make([]byte, blocks*content.BlockSize)
	if _, err := crand.Read(data); err != nil {
		tb.Fatal(err)
	}
	info, err := content.Generate(context.Background(), bytes.NewReader(data), content.PassphraseSecret("lab"))
	if err != nil {
		tb.Fatal(err)
	}
	return pccrdContentOf(tb, data, info)
}

func pccrdContentOf(tb testing.TB, data []byte, info *content.Info) pccrdContent {
	tb.Helper()
	ci, err := info.MarshalBinary()
	if err != nil {
		tb.Fatal(err)
	}
	return pccrdContent{data: data, ci: ci, info: info, id: info.Segments[0].ID.String()}
}

// prefix is the first blocks blocks of c with their range's content
// information (as an MS-PCCRTP answer to a Range request carries it): a
// holder that adds it holds the same segment, partly.
func (c pccrdContent) prefix(tb testing.TB, blocks int) pccrdContent {
	tb.Helper()
	n := blocks * content.BlockSize
	info, err := c.info.Slice(0, uint64(n))
	if err != nil {
		tb.Fatal(err)
	}
	return pccrdContentOf(tb, c.data[:n], info)
}

// startPCCRDAgent starts an agent on h with env (any testing.TB, so that
// benchmarks can use it too), logging at warn level.
func startPCCRDAgent(tb testing.TB, h *lab.Host, env []string) *agent {
	tb.Helper()
	a := &agent{h: h, dir: tb.TempDir(), env: env, args: []string{"--log-level", "warn"}}
	full := append([]string{lab.Binary(tb), "agent", "--data-dir", a.dir, "--node-name", h.Name}, a.args...)
	cmd := h.Command(context.Background(), full...)
	cmd.Env = append(os.Environ(), env...)
	a.p = h.StartCmd(tb, "agent", cmd)
	return a
}

// newSegment returns a random segment ID (nobody holds it) as 64
// upper-case hex digits.
func newSegment(tb testing.TB) string {
	tb.Helper()
	var id content.SegmentID
	if _, err := crand.Read(id[:]); err != nil {
		tb.Fatal(err)
	}
	return strings.ToUpper(id.String())
}

func mustSegmentID(tb testing.TB, s string) content.SegmentID {
	tb.Helper()
	var id content.SegmentID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		tb.Fatalf("bad segment %q", s)
	}
	copy(id[:], b)
	return id
}

// probe runs GET /v1/probe on a.
func (a *agent) probe(seg string, blocks uint32) (api.ProbeResponse, error) {
	var out api.ProbeResponse
	err := a.get(fmt.Sprintf("/v1/probe?segment=%s&blocks=%d", seg, blocks), &out)
	return out, err
}

// hold adds c to a's cache through its API, as `redleader cache add`
// does. (a's last probe of the segment, recorded when it probed, is the
// input of its reply suppression.)
func (a *agent) hold(c pccrdContent) error {
	tok, err := peer.ReadToken(a.dir)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := a.client(api.WithToken(tok)).CacheAdd(ctx, c.ci, bytes.NewReader(c.data))
	if err == nil && (len(res.Segments) != 1 || res.Segments[0].Segment != c.id || res.VerifiedBlocks == 0) {
		err = fmt.Errorf("cache add answered %+v", res)
	}
	return err
}

// fullCount counts the full replies of r.
func fullCount(r api.ProbeResponse) int {
	n := 0
	for _, m := range r.Matches {
		if m.Full {
			n++
		}
	}
	return n
}

// discoveryMetrics returns a's redleader_discovery_* series from /metrics,
// keyed by name and labels.
func (a *agent) discoveryMetrics() (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := newGet(ctx, "http://127.0.0.1:7380/metrics")
	if err != nil {
		return nil, err
	}
	resp, err := a.h.HTTPClient().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: HTTP %d", resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "redleader_discovery_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("/metrics line %q: %w", line, err)
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

func mustMetrics(tb testing.TB, a *agent) map[string]float64 {
	tb.Helper()
	m, err := a.discoveryMetrics()
	if err != nil {
		tb.Fatalf("%s: %v", a.h.Name, err)
	}
	return m
}

// waitProbeReady waits until every agent's API answers /v1/probe (its
// prober and responder are running), probing a throwaway segment from at
// most 8 agents at a time.
func waitProbeReady(tb testing.TB, agents []*agent, d time.Duration) time.Duration {
	tb.Helper()
	start := time.Now()
	seg := newSegment(tb)
	errs := make([]error, len(agents))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, a := range agents {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			for {
				_, err := a.probe(seg, 0)
				if err == nil {
					return
				}
				if time.Since(start) > d {
					errs[i] = fmt.Errorf("%s: /v1/probe not ready within %v: %w", a.h.Name, d, err)
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		tb.Fatal(err)
	}
	return time.Since(start)
}

// TestLabPCCRD40 is the reply-suppression scenario on one bridge:
// 40 agents, one after another, probe for a segment, then add it to their
// cache (POST /v1/cache); a 41st probes and hears at most 15 (not 40) of
// them.
//
// With n = 10 and every reply full, the rule is deterministic: agent k
// (k = 1..10) hears k-1 < n holders and always answers; agent 11 hears the
// 10 always-answerers, records 10 replies of which 10 full and never
// answers, and so does every later agent. The 41st hears exactly 10. The
// probabilistic branch (p = 0.33) applies only to agents that saw ≥ n
// replies of which < n full: in the "partial" subtest every holder holds 8
// blocks of a 9-block segment (added with a range's content information)
// and probers ask for 9, so every reply is partial, and the 41st hears
// 10 + Binomial(30, 0.33) ≈ 20.
func TestLabPCCRD40(t *testing.T) {
	if testing.Short() {
		t.Skip("41 agents; skipped with -short")
	}
	l := lab.New(t, lab.Options{Subnets: 1, WANRate: "off"})
	const n = 41
	hosts := make([]*lab.Host, n)
	for i := range hosts {
		hosts[i] = l.AddHost(1)
	}
	pinNeighbours(t, l, hosts)
	agents := make([]*agent, n)
	start := time.Now()
	for i, h := range hosts {
		agents[i] = startPCCRDAgent(t, h, pccrdEnv(i < 3))
	}
	for _, a := range agents {
		a.nodeID(t)
	}
	t.Logf("%d agents up in %v", n, time.Since(start))
	t.Logf("discovery ready after %v more", waitProbeReady(t, agents, 30*time.Second))

	// run: agents 1..40 probe for c's segment asking for askBlocks, then
	// hold c; agent 41 probes last.
	run := func(t *testing.T, c pccrdContent, askBlocks uint32) (counts []int, last api.ProbeResponse) {
		seg := c.id
		var line strings.Builder
		for i, a := range agents[:n-1] {
			r, err := a.probe(seg, askBlocks)
			if err != nil {
				t.Fatalf("%s probe: %v", a.h.Name, err)
			}
			counts = append(counts, len(r.Matches))
			fmt.Fprintf(&line, " %d:%d/%d", i+1, len(r.Matches), fullCount(r))
			if err := a.hold(c); err != nil {
				t.Fatalf("%s hold: %v", a.h.Name, err)
			}
		}
		t.Logf("replies/full seen by agents 1..%d:%s", n-1, line.String())
		last, err := agents[n-1].probe(seg, askBlocks)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("agent %d hears %d replies (%d full)", n, len(last.Matches), fullCount(last))
		return counts, last
	}

	t.Run("full", func(t *testing.T) {
		before := sumMetrics(t, agents[:n-1])
		counts, last := run(t, newPCCRDContent(t, pccrdBlocks), pccrdBlocks)
		after := sumMetrics(t, agents[:n-1])
		got := len(last.Matches)
		if got < 1 || got > 15 {
			t.Errorf("agent %d heard %d replies, want 1..15", n, got)
		}
		if fullCount(last) != got {
			t.Errorf("%d of %d replies full, want all", fullCount(last), got)
		}
		// The ideal model (no reply lost or late): k-1 for k ≤ 10, then 10.
		var off []string
		for k, c := range counts {
			if want := min(k, discovery.DefaultReplyThreshold); c != want {
				off = append(off, fmt.Sprintf("agent %d: %d (model %d)", k+1, c, want))
			}
		}
		if got != discovery.DefaultReplyThreshold {
			off = append(off, fmt.Sprintf("agent %d: %d (model %d)", n, got, discovery.DefaultReplyThreshold))
		}
		if len(off) > 0 {
			t.Logf("differs from the lossless model (late or lost replies): %s", strings.Join(off, "; "))
		} else {
			t.Logf("matches the model exactly: k-1 replies for agents 1..10, then 10 for everyone")
		}
		logDelta(t, "holders' responders during the run", before, after)
	})

	t.Run("partial", func(t *testing.T) {
		// Holders add the first 8 blocks of a 9-block segment (a range's
		// content information); probers ask for all 9.
		whole := newPCCRDContent(t, pccrdBlocks+1)
		counts, last := run(t, whole.prefix(t, pccrdBlocks), pccrdBlocks+1)
		got := len(last.Matches)
		// 10 always answer; 30 answer with p = 0.33: mean 19.9, sd 2.6.
		// 11..30 fails with probability < 1e-4 when no reply is lost.
		if got < 11 || got > 30 {
			t.Errorf("agent %d heard %d partial replies, want 11..30 (10 + Binomial(30, 0.33))", n, got)
		}
		if fullCount(last) != 0 {
			t.Errorf("%d full replies, want none (every holder has 8 of 9 blocks)", fullCount(last))
		}
		t.Logf("mean replies heard by agents 12..40: %.1f (model 10 + 0.33 x (k-11))", mean(counts[11:]))
	})
}

// pinNeighbours installs permanent ARP entries in every host for every
// other host of its subnet and its gateway. The kernel's ARP table is one
// table for all namespaces, and its dynamic entries are capped by the init
// namespace's net.ipv4.neigh.default.gc_thresh3 (1024 by default): 41
// gossiping hosts need ~41 x 41 entries, and past the cap the kernel drops
// outgoing packets ("neighbor table overflow", UDP SndbufErrors), Probes
// included. Permanent entries do not count toward the cap.
func pinNeighbours(tb testing.TB, l *lab.Lab, hosts []*lab.Host) {
	tb.Helper()
	macOf := func(h *lab.Host, iface string) net.HardwareAddr {
		var mac net.HardwareAddr
		if err := h.Do(func() error {
			ifi, err := net.InterfaceByName(iface)
			if err == nil {
				mac = ifi.HardwareAddr
			}
			return err
		}); err != nil {
			tb.Fatal(err)
		}
		return mac
	}
	type neighbour struct {
		ip     netip.Addr
		mac    net.HardwareAddr
		subnet int
	}
	var all []neighbour
	for s := 1; s <= l.Subnets(); s++ {
		all = append(all, neighbour{lab.Gateway(s), macOf(l.Router(), "br"+strconv.Itoa(s)), s})
	}
	for _, h := range hosts {
		all = append(all, neighbour{h.IP(), macOf(h, "eth0"), h.Subnet()})
	}
	for _, h := range hosts {
		var batch strings.Builder
		for _, nb := range all {
			if nb.subnet == h.Subnet() && nb.ip != h.IP() {
				fmt.Fprintf(&batch, "neigh replace %s lladdr %s dev eth0 nud permanent\n", nb.ip, nb.mac)
			}
		}
		cmd := exec.Command("ip", "-n", h.NS, "-batch", "-")
		cmd.Stdin = strings.NewReader(batch.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("%s: pin neighbours: %v: %s", h.Name, err, out)
		}
	}
}

// sumMetrics adds up the discovery metrics of agents.
func sumMetrics(t *testing.T, agents []*agent) map[string]float64 {
	t.Helper()
	sum := map[string]float64{}
	for _, a := range agents {
		for k, v := range mustMetrics(t, a) {
			sum[k] += v
		}
	}
	return sum
}

// logDelta logs the counters that changed between before and after.
func logDelta(t *testing.T, what string, before, after map[string]float64) {
	t.Helper()
	var keys []string
	for k := range after {
		if after[k] != before[k] && !strings.Contains(k, "_bucket") {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "\n  %s +%g", k, after[k]-before[k])
	}
	t.Logf("%s:%s", what, b.String())
}

func mean(xs []int) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := 0
	for _, x := range xs {
		s += x
	}
	return float64(s) / float64(len(xs))
}

// TestLabPCCRDOtherSubnet: a holder on another subnet is never counted by a
// prober on subnet 1. Multicast does not cross the router, so the Probe
// never reaches it; and when a relay carries the Probe to it and its real
// ProbeMatch back to the prober by unicast across the router, the prober
// ignores the reply because its XAddrs is not on the local subnet. The
// same relayed reply with XAddrs rewritten into subnet 1 is accepted,
// which shows the relay path works.
func TestLabPCCRDOtherSubnet(t *testing.T) {
	t.Parallel()
	l := lab.New(t, lab.Options{Subnets: 2, WANRate: "off"})
	prober := startPCCRDAgent(t, l.AddHost(1), pccrdEnv(true))
	far := startPCCRDAgent(t, l.AddHost(2), pccrdEnv(true))
	farProber := startPCCRDAgent(t, l.AddHost(2), pccrdEnv(true))
	listener, relay := l.AddHost(1), l.AddHost(2) // test sockets only
	agents := []*agent{prober, far, farProber}
	waitProbeReady(t, agents, 30*time.Second)
	c := newPCCRDContent(t, pccrdBlocks)
	seg := c.id
	if err := far.hold(c); err != nil {
		t.Fatal(err)
	}

	// Multicast: the holder's own subnet finds it, subnet 1 does not.
	r, err := farProber.probe(seg, pccrdBlocks)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Matches) != 1 || !strings.HasPrefix(r.Matches[0].Peer, far.h.IP().String()+":") {
		t.Fatalf("prober on subnet 2 got %+v, want %s", r.Matches, far.h.IP())
	}
	farBefore := mustMetrics(t, far)
	r, err = prober.probe(seg, pccrdBlocks)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Matches) != 0 {
		t.Fatalf("prober on subnet 1 counted %+v", r.Matches)
	}
	if got := mustMetrics(t, far); got["redleader_discovery_probes_received_total"] != farBefore["redleader_discovery_probes_received_total"] {
		t.Errorf("a subnet 1 Probe reached subnet 2: probes_received %v -> %v",
			farBefore["redleader_discovery_probes_received_total"], got["redleader_discovery_probes_received_total"])
	}

	// Unicast across the router: relay the Probe to the holder and its
	// reply back to the prober.
	lis, err := listener.ListenMulticastUDP("udp4", &net.UDPAddr{IP: net.IPv4(239, 255, 255, 250), Port: discovery.DefaultPort})
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	pc, err := relay.ListenPacket("udp4", relay.IP().String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	fwd := pc.(*net.UDPConn)
	farAddr := netip.AddrPortFrom(far.h.IP(), discovery.DefaultPort)
	id := mustSegmentID(t, seg)
	seen := map[string]bool{}

	// relayOnce runs one probe on prober while relaying, with rewrite
	// applied to the holder's reply; it returns the probe's result.
	relayOnce := func(rewrite func([]byte) []byte) api.ProbeResponse {
		t.Helper()
		type result struct {
			r   api.ProbeResponse
			err error
		}
		done := make(chan result, 1)
		go func() {
			r, err := prober.probe(seg, pccrdBlocks)
			done <- result{r, err}
		}()
		relayErr := relayProbe(lis, fwd, farAddr, id, seen, rewrite)
		res := <-done
		if relayErr != nil {
			t.Fatalf("relay: %v", relayErr)
		}
		if res.err != nil {
			t.Fatal(res.err)
		}
		return res.r
	}

	before := mustMetrics(t, prober)
	r = relayOnce(func(b []byte) []byte { return b })
	after := mustMetrics(t, prober)
	const ignoredSubnet = `redleader_discovery_matches_ignored_total{reason="subnet"}`
	if len(r.Matches) != 0 {
		t.Errorf("prober counted a reply with XAddrs on subnet 2: %+v", r.Matches)
	}
	if d := after[ignoredSubnet] - before[ignoredSubnet]; d != 1 {
		t.Errorf("matches_ignored_total{reason=subnet} +%v, want +1", d)
	}
	logDelta(t, "prober, reply with XAddrs on subnet 2 relayed by unicast", before, after)

	// Control: the same path with XAddrs moved into subnet 1 is accepted.
	fake := listener.IP().String()
	r = relayOnce(func(b []byte) []byte {
		return bytes.ReplaceAll(b, []byte("<wsd:XAddrs>"+far.h.IP().String()+":"), []byte("<wsd:XAddrs>"+fake+":"))
	})
	if len(r.Matches) != 1 || !strings.HasPrefix(r.Matches[0].Peer, fake+":") {
		t.Errorf("control: relayed reply with XAddrs %s not accepted: %+v", fake, r.Matches)
	}
}

// relayProbe waits on lis for the next new Probe for id, sends it from fwd
// to holder, reads the holder's ProbeMatch and sends rewrite(reply) from
// fwd back to the Probe's source.
func relayProbe(lis, fwd *net.UDPConn, holder netip.AddrPort, id content.SegmentID, seen map[string]bool,
	rewrite func([]byte) []byte) error {
	buf := make([]byte, 64<<10)
	deadline := time.Now().Add(5 * time.Second)
	if err := lis.SetReadDeadline(deadline); err != nil {
		return err
	}
	var src netip.AddrPort
	var probe []byte
	for probe == nil {
		n, from, err := lis.ReadFromUDPAddrPort(buf)
		if err != nil {
			return fmt.Errorf("no probe heard: %w", err)
		}
		p, err := discovery.ParseProbe(buf[:n])
		if err != nil || seen[p.MessageID] || !slices.ContainsFunc(p.Segments, func(s []byte) bool { return bytes.Equal(s, id[:]) }) {
			continue
		}
		seen[p.MessageID] = true
		src, probe = from, slices.Clone(buf[:n])
	}
	if _, err := fwd.WriteToUDPAddrPort(probe, holder); err != nil {
		return err
	}
	if err := fwd.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	for {
		n, from, err := fwd.ReadFromUDPAddrPort(buf)
		if err != nil {
			return fmt.Errorf("no reply from %v: %w", holder, err)
		}
		if from != holder {
			continue
		}
		if _, err := discovery.ParseProbeMatch(buf[:n]); err != nil {
			return fmt.Errorf("holder's reply: %w", err)
		}
		_, err = fwd.WriteToUDPAddrPort(rewrite(buf[:n]), src)
		return err
	}
}

// foreignStream returns one round of the WS-Discovery and junk datagrams a
// responder on 3702 may hear from printers, PCs and broken senders. None is
// a well-formed PCCRD Probe.
func foreignStream(tb testing.TB, seg content.SegmentID) map[string][]byte {
	tb.Helper()
	const (
		head = `<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope" ` +
			`xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:wsd="http://schemas.xmlsoap.org/ws/2005/04/discovery" ` +
			`xmlns:wsdp="http://schemas.xmlsoap.org/ws/2006/02/devprof" ` +
			`xmlns:PeerDist="http://schemas.microsoft.com/p2p/2007/09/PeerDistributionDiscovery">` +
			`<soap:Header><wsa:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</wsa:To>` +
			`<wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/`
		mid  = `</wsa:Action><wsa:MessageID>urn:uuid:7d3c5b51-4a9e-4a53-9b8e-0d1f0e2a3b4c</wsa:MessageID></soap:Header><soap:Body>`
		tail = `</soap:Body></soap:Envelope>`
	)
	env := func(action, body string) []byte { return []byte(head + action + mid + body + tail) }
	epr := `<wsa:EndpointReference><wsa:Address>urn:uuid:0a1b2c3d-0000-4000-8000-000000000001</wsa:Address></wsa:EndpointReference>`
	scopes := `<wsd:Scopes MatchBy="http://schemas.xmlsoap.org/ws/2005/04/discovery/strcmp0">` + strings.ToUpper(seg.String()) + `</wsd:Scopes>`
	valid, err := (&discovery.Probe{Version: discovery.V1, MessageID: "urn:uuid:1", Segments: [][]byte{seg[:]}}).Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	match, err := (&discovery.ProbeMatch{Version: discovery.V1, MessageID: "urn:uuid:2", RelatesTo: "urn:uuid:1",
		Address: "urn:uuid:3", XAddrs: []string{"10.77.1.99:7381"}, Segments: [][]byte{seg[:]}, BlockCounts: []uint32{8}}).Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	random := func(n int) []byte {
		b := make([]byte, n)
		_, _ = crand.Read(b) // never fails
		return b
	}
	return map[string][]byte{
		"hello-printer": env("Hello", `<wsd:Hello>`+epr+`<wsd:Types>wsdp:Device</wsd:Types>`+
			`<wsd:XAddrs>http://10.77.1.99:5357/</wsd:XAddrs><wsd:MetadataVersion>1</wsd:MetadataVersion></wsd:Hello>`),
		"hello-peerdist": env("Hello", `<wsd:Hello>`+epr+`<wsd:Types>PeerDist:PeerDistData</wsd:Types>`+scopes+
			`<wsd:XAddrs>10.77.1.99:7381</wsd:XAddrs><wsd:MetadataVersion>1</wsd:MetadataVersion></wsd:Hello>`),
		"bye":          env("Bye", `<wsd:Bye>`+epr+`</wsd:Bye>`),
		"resolve":      env("Resolve", `<wsd:Resolve>`+epr+`</wsd:Resolve>`),
		"probe-device": env("Probe", `<wsd:Probe><wsd:Types>wsdp:Device</wsd:Types></wsd:Probe>`),
		"probe-other-peerdist-type": env("Probe",
			`<wsd:Probe><wsd:Types>PeerDist:PeerDistSomethingElse</wsd:Types>`+scopes+`</wsd:Probe>`),
		"probe-no-types": env("Probe", `<wsd:Probe>`+scopes+`</wsd:Probe>`),
		"probematch":     match,
		"truncated":      valid[:len(valid)/2],
		"random":         random(1 + int(random(1)[0])*5),
		"random-ns":      append(random(64), []byte("http://schemas.microsoft.com/p2p/2007/09/PeerDistributionDiscovery")...),
		"oversized":      append(slices.Clone(valid[:len(valid)-30]), bytes.Repeat([]byte(" "), 40<<10)...),
	}
}

// dropReason is the reason label the responder gives a datagram it
// rejects (see discovery/metrics.go).
func dropReason(err error) string {
	switch {
	case errors.Is(err, discovery.ErrTooLarge):
		return "oversized"
	case errors.Is(err, discovery.ErrNotPCCRD):
		return "foreign"
	default:
		return "invalid"
	}
}

// TestLabPCCRDForeignTraffic: a stream of WS-Discovery Hellos, Byes,
// Resolves, Probes for other Types, truncated and oversized messages and
// random bytes, sent by unicast and multicast from another lab host to a
// live agent's port 3702, changes nothing in its discovery metrics but
// malformed_dropped_total (by the expected reasons); the agent keeps
// answering valid Probes.
func TestLabPCCRDForeignTraffic(t *testing.T) {
	t.Parallel()
	l := lab.New(t, lab.Options{Subnets: 1, WANRate: "off"})
	target := startPCCRDAgent(t, l.AddHost(1), pccrdEnv(true))
	other := startPCCRDAgent(t, l.AddHost(1), pccrdEnv(true))
	sender := l.AddHost(1)
	waitProbeReady(t, []*agent{target, other}, 30*time.Second)
	c := newPCCRDContent(t, pccrdBlocks)
	seg := c.id
	id := mustSegmentID(t, seg)
	if err := target.hold(c); err != nil {
		t.Fatal(err)
	}
	if r, err := other.probe(seg, pccrdBlocks); err != nil || len(r.Matches) != 1 {
		t.Fatalf("before: probe %+v, %v; want the target", r, err)
	}

	pc, err := sender.ListenPacket("udp4", sender.IP().String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	conn := pc.(*net.UDPConn)
	dsts := []netip.AddrPort{
		netip.AddrPortFrom(target.h.IP(), discovery.DefaultPort),                                // unicast
		netip.AddrPortFrom(netip.MustParseAddr(discovery.MulticastIPv4), discovery.DefaultPort), // the group
	}
	rss0 := procRSS(t, target.p.Pid())
	before := mustMetrics(t, target)
	want := map[string]float64{}
	sent := 0
	const rounds = 50
	for round := range rounds {
		for name, b := range foreignStream(t, id) {
			_, perr := discovery.ParseProbe(b)
			if perr == nil {
				t.Fatalf("%s parses as a Probe", name)
			}
			for _, dst := range dsts {
				if _, err := conn.WriteToUDPAddrPort(b, dst); err != nil {
					t.Fatalf("send %s to %v: %v", name, dst, err)
				}
				want[dropReason(perr)]++
				sent++
			}
		}
		if round%5 == 4 {
			time.Sleep(5 * time.Millisecond) // a stream, not a flood
		}
	}
	const dropped = "redleader_discovery_malformed_dropped_total"
	var after map[string]float64
	took := wait.For(t, 10*time.Second, fmt.Sprintf("target counts %d malformed datagrams", sent), func() bool {
		after = mustMetrics(t, target)
		total := 0.0
		for reason := range want {
			k := dropped + `{reason="` + reason + `"}`
			total += after[k] - before[k]
		}
		return total >= float64(sent)
	})
	t.Logf("%d foreign datagrams (%d rounds x %d kinds x unicast+multicast) all counted %v after the last send",
		sent, rounds, sent/rounds/len(dsts), took)
	time.Sleep(200 * time.Millisecond) // anything else they might have caused
	after = mustMetrics(t, target)
	for k, v := range after {
		if strings.HasPrefix(k, dropped) {
			reason := strings.TrimSuffix(strings.TrimPrefix(k, dropped+`{reason="`), `"}`)
			if d := v - before[k]; d != want[reason] {
				t.Errorf("%s +%v, want +%v", k, d, want[reason])
			}
			continue
		}
		if v != before[k] {
			t.Errorf("%s changed: %v -> %v", k, before[k], v)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			t.Errorf("%s disappeared", k)
		}
	}
	logDelta(t, "target during the stream", before, after)
	t.Logf("target RSS %.1f MB before, %.1f MB after", float64(rss0)/1e6, float64(procRSS(t, target.p.Pid()))/1e6)

	// Still answering: a Probe from the agent next door and one sent by
	// the test straight to the target.
	if r, err := other.probe(seg, pccrdBlocks); err != nil || len(r.Matches) != 1 {
		t.Errorf("after: probe %+v, %v; want the target", r, err)
	}
	probe, err := (&discovery.Probe{Version: discovery.V1, MessageID: "urn:uuid:6f1e2d3c-0000-4000-8000-00000000abcd",
		Segments: [][]byte{id[:]}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteToUDPAddrPort(probe, dsts[0]); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	n, _, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("no ProbeMatch for a direct Probe: %v", err)
	}
	m, err := discovery.ParseProbeMatch(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Segments) != 1 || !bytes.Equal(m.Segments[0], id[:]) || m.BlockCounts[0] != pccrdBlocks {
		t.Errorf("direct Probe answered with %+v", m)
	}
}

// BenchmarkLabProbe measures probe-to-first-match latency on a lab bridge:
// one prober, three holders, default config (300 ms request timer) with
// the default 65 ms responder backoff, and with a 1 ms backoff to show what
// the network, the agents and the codec add. The latency is the prober's
// own (Probe sent → first accepted ProbeMatch). Each run makes between 100
// and 200 probes (b.N clamped), as each takes the 300 ms request timer;
// ns/op is the time of one /v1/probe call.
func BenchmarkLabProbe(b *testing.B) {
	for _, backoff := range []string{"65ms", "1ms"} {
		b.Run("backoff="+backoff, func(b *testing.B) {
			benchLabProbe(b, "REDLEADER_DISCOVERY_MAX_BACKOFF="+backoff)
		})
	}
}

func benchLabProbe(b *testing.B, holderEnv string) {
	const holders = 3
	probes := min(max(b.N, 100), 200)
	l := lab.New(b, lab.Options{Subnets: 1, WANRate: "off"})
	agents := make([]*agent, holders+1)
	for i := range agents {
		env := pccrdEnv(true)
		if i > 0 {
			env = append(env, holderEnv)
		}
		agents[i] = startPCCRDAgent(b, l.AddHost(1), env)
	}
	waitProbeReady(b, agents, 30*time.Second)
	c := newPCCRDContent(b, pccrdBlocks)
	seg := c.id
	for _, h := range agents[1:] {
		if err := h.hold(c); err != nil {
			b.Fatal(err)
		}
	}
	prober := agents[0]
	lat := make([]float64, 0, probes)
	replies := 0
	b.ResetTimer()
	start := time.Now()
	for range probes {
		r, err := prober.probe(seg, pccrdBlocks)
		if err != nil {
			b.Fatal(err)
		}
		if len(r.Matches) == 0 {
			b.Fatal("no match")
		}
		first := r.Matches[0].LatencyMS
		for _, m := range r.Matches {
			first = min(first, m.LatencyMS)
		}
		lat = append(lat, first)
		replies += len(r.Matches)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(probes), "ns/op")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(replies)/float64(probes), "replies/probe")
	b.Logf("%d probes, %d holders: first match min %.2f ms, p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms",
		probes, holders, lat[0], pct(0.5), pct(0.9), pct(0.99), lat[len(lat)-1])
}
