//go:build linux

package lab_test

// End-to-end test of an agent under a hostile LAN host (issue #9 S2, S3):
// its peer port held by thousands of connections from one host and from
// fifty, and junk datagrams on its gossip port. One lab for all the cases.

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/internal/logbridge"
	"github.com/redleader-p2p/redleader/internal/wait"
	"github.com/redleader-p2p/redleader/lab"
	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/retrieval"
)

const (
	floodPeerPort   = 7381 // the agents' default ports
	floodGossipPort = 7946
	floodFDLimit    = 1024 // the victim's RLIMIT_NOFILE, soft and hard
	floodAttempts   = 5000 // connection attempts per flood
	floodHosts      = 50   // hosts of the second flood (floodAttempts/floodHosts each)
	floodHold       = 8 * time.Second
	junkDatagrams   = 10000
	floodBlocks     = 8 // blocks of the content the victim serves
)

// floodPayload starts an MS-PCCRR request (plain HTTP, served to anyone)
// and stops inside its headers, so that a connection the victim admits
// stays open until the flooder closes it or the server's header timeout
// hits. (A Raft or cluster-RPC start would not hold: those channels cut a
// caller that is not a Raft server or member at once.)
var floodPayload = []byte("POST /msrdc/v1.0/pccrr HTTP/1.1\r\nHost: victim\r\nContent-Le")

// TestFlood: an agent with 1024 file descriptors, on a subnet of 3 agents,
// has its peer port held by 5,000 connection attempts from one host, then
// from 50 hosts (100 each), gets 10,000 junk datagrams on its gossip
// port, then 1,000 TCP connections to it from one host. During each flood its local API answers, the subnet keeps its one
// Red Leader, and another agent fetches blocks from it over MS-PCCRR;
// afterwards it holds no connection of the flood. The junk makes at most a
// few log lines, and a later one reports how many were suppressed.
func TestFlood(t *testing.T) {
	t.Parallel()
	l := lab.New(t, lab.Options{Subnets: 1, WANRate: "off"})
	agentHosts := []*lab.Host{l.AddHost(1), l.AddHost(1), l.AddHost(1)}
	flooders := make([]*lab.Host, floodHosts)
	for i := range flooders {
		flooders[i] = l.AddHost(1)
	}
	// 53 hosts: pin the neighbours so that the kernel's shared ARP table
	// (see lab/README) cannot overflow, whatever runs next to this test.
	pinNeighbours(t, l, append(slices.Clone(agentHosts), flooders...))

	victim := startFloodVictim(t, agentHosts[0])
	fetcher := startAgent(t, agentHosts[1])
	agents := []*agent{victim, fetcher, startAgent(t, agentHosts[2])}
	for _, a := range agents {
		a.nodeID(t)
	}
	sts, took := waitAgree(t, agents, 30*time.Second, "one Red Leader before the floods", nil)
	seat := *sts[0].RedLeader
	t.Logf("3 agents agree on %s (epoch %d) after %v; Raft leader %s", seat.Name, seat.Epoch,
		took.Round(time.Millisecond), sts[0].Raft.Leader)

	if lim := procLimit(t, victim.p.Pid(), "Max open files"); lim != fmt.Sprintf("%d %d", floodFDLimit, floodFDLimit) {
		t.Fatalf("victim's open-file limit %q, want %d", lim, floodFDLimit)
	}
	m := floodMetrics(t, victim)
	total, reserved := m[`redleader_peer_port_limit{cap="total"}`], m[`redleader_peer_port_limit{cap="reserved"}`]
	if total != floodFDLimit/2 {
		t.Fatalf("peer port total cap %v with %d descriptors, want %d", total, floodFDLimit, floodFDLimit/2)
	}
	t.Logf("victim %s: %d descriptors, peer port caps: total %v, reserved for members %v, per source %v",
		victim.h, floodFDLimit, total, reserved, m[`redleader_peer_port_limit{cap="per_source"}`])

	c := newPCCRDContent(t, floodBlocks)
	if err := victim.hold(c); err != nil {
		t.Fatalf("cache add on the victim: %v", err)
	}
	fetch := newBlockFetcher(fetcher.h, netip.AddrPortFrom(victim.h.IP(), floodPeerPort).String(), c)
	defer fetch.close()
	if err := fetch.all(); err != nil {
		t.Fatalf("fetch before the floods: %v", err)
	}

	var junkAt time.Time
	t.Run("junk gossip", func(t *testing.T) {
		off := len(victim.p.Log())
		junkAt = time.Now()
		sent := sendJunk(t, flooders[0], netip.AddrPortFrom(victim.h.IP(), floodGossipPort), junkDatagrams)
		t.Logf("%d junk datagrams sent in %v", sent, time.Since(junkAt).Round(time.Millisecond))
		time.Sleep(2 * time.Second)
		lines := warnLines(victim.p.Log()[off:], "memberlist")
		t.Logf("memberlist lines at WARN and above for them: %d\n%s", len(lines), strings.Join(lines, "\n"))
		if len(lines) == 0 || len(lines) > 3 {
			t.Errorf("%d memberlist lines for %d junk datagrams, want 1 to 3", len(lines), sent)
		}
	})

	agentIPs := map[netip.Addr]bool{}
	for _, h := range agentHosts {
		agentIPs[h.IP()] = true
	}
	flood := func(t *testing.T, from []*lab.Host, reason string) {
		baseFDs, baseSockets := procFDs(t, victim.p.Pid())
		off := len(victim.p.Log())
		before := floodMetrics(t, victim)
		s := startFloodSampler(agents, victim, seat)
		defer s.finish() // on a failure; a second finish only reports

		start := time.Now()
		conns, dialErrs := floodConnect(from, victim.h.IP(), floodAttempts/len(from))
		defer closeAll(conns) // on a failure
		attempts := time.Since(start)
		during := floodMetrics(t, victim)
		open := during["redleader_peer_port_connections"]
		t.Logf("%d attempts from %d host(s) in %v (%d dial errors); victim: %v peer-port connections open, refused +%v per_source, +%v total",
			floodAttempts, len(from), attempts.Round(time.Millisecond), dialErrs, open,
			during[`redleader_peer_port_refused_total{reason="per_source"}`]-before[`redleader_peer_port_refused_total{reason="per_source"}`],
			during[`redleader_peer_port_refused_total{reason="total"}`]-before[`redleader_peer_port_refused_total{reason="total"}`])
		if d := during[`redleader_peer_port_refused_total{reason="`+reason+`"}`] - before[`redleader_peer_port_refused_total{reason="`+reason+`"}`]; d == 0 {
			t.Errorf("no connection refused for %s", reason)
		}
		if open > total {
			t.Errorf("%v connections open, over the cap of %v", open, total)
		}
		fetched := 0
		for time.Since(start) < attempts+floodHold {
			if err := fetch.all(); err != nil {
				t.Errorf("fetch during the flood: %v", err)
				break
			}
			fetched += floodBlocks
			time.Sleep(500 * time.Millisecond)
		}
		stillOpen := len(conns) - countClosed(conns)
		closeAll(conns)
		held := time.Since(start)
		var left []string
		drain := wait.For(t, 15*time.Second, "no connection of the flood left on the victim", func() bool {
			left = peerPortConns(t, victim.h, agentIPs)
			return len(left) == 0
		})
		fds, sockets := procFDs(t, victim.p.Pid())
		st := s.finish()
		t.Logf("flood held %v (%d of %d connections still open at the end); %d blocks fetched from the victim meanwhile",
			held.Round(time.Millisecond), stillOpen, len(conns), fetched)
		t.Logf("victim: file descriptors %d before, at most %d during, %d after; sockets %d before, %d after; flood connections gone %v after the end",
			baseFDs, st.maxFDs, fds, baseSockets, sockets, drain.Round(time.Millisecond))
		t.Logf("local API during the flood: %d calls, median %v, p99 %v, max %v (%v after the start), %d failed",
			len(st.api), st.pct(50), st.pct(99), st.pct(100), st.maxAt.Sub(start).Round(time.Millisecond), st.apiErrs)
		t.Logf("election during the flood: %d samples, %d without agreement (%s)", st.samples, len(st.disagree), strings.Join(firstN(st.disagree, 3), "; "))
		if st.apiErrs > 0 || st.pct(100) > 2*time.Second {
			t.Errorf("local API: %d failed calls, slowest %v", st.apiErrs, st.pct(100))
		}
		if st.maxFDs >= floodFDLimit {
			t.Errorf("victim used %d descriptors of %d", st.maxFDs, floodFDLimit)
		}
		if len(st.changed) > 0 {
			t.Errorf("the Red Leader changed during the flood: %v", firstN(st.changed, 5))
		}
		if _, err := agreement(agents, statuses(agents)); err != nil {
			t.Errorf("after the flood: %v", err)
		}
		if sockets > baseSockets+8 {
			t.Errorf("victim holds %d sockets after the flood, %d before", sockets, baseSockets)
		}
		after := floodMetrics(t, victim)
		var refused []string
		for k, v := range after {
			if strings.HasPrefix(k, "redleader_peer_port_refused_total") && v > before[k] {
				refused = append(refused, fmt.Sprintf("%s +%v", strings.TrimPrefix(k, "redleader_peer_port_refused_total"), v-before[k]))
			}
		}
		slices.Sort(refused)
		t.Logf("victim refused: %s", strings.Join(refused, ", "))
		// What the flood makes the victim log is WARN and above (refusals,
		// Raft's errors about garbage); INFO lines are the election's own.
		logged := victim.p.Log()[off:]
		warns := warnLines(logged, "")
		t.Logf("victim log: %d lines during the flood, %d at WARN and above:\n%s", strings.Count(logged, "\n"), len(warns), logged)
		if len(warns) > 10 {
			t.Errorf("%d log lines at WARN and above for one flood, want a few (rate-limited)", len(warns))
		}
	}
	t.Run("one host", func(t *testing.T) { flood(t, flooders[:1], "per_source") })
	t.Run("50 hosts", func(t *testing.T) { flood(t, flooders, "total") })

	// The gossip port: memberlist serves each TCP stream for up to 10 s
	// waiting for its first message; the agent admits 8 per source.
	t.Run("gossip port, one host", func(t *testing.T) {
		const perSource = 8 // peer.gossipStreamsPerSource
		const key = `redleader_gossip_streams_refused_total{reason="per_source"}`
		baseFDs, _ := procFDs(t, victim.p.Pid())
		before := floodMetrics(t, victim)
		s := startFloodSampler(agents, victim, seat)
		defer s.finish() // on a failure
		start := time.Now()
		conns, dialErrs := floodConnectTo(flooders[2:3], netip.AddrPortFrom(victim.h.IP(), floodGossipPort), nil, floodAttempts/5)
		defer closeAll(conns)
		attempts := time.Since(start)
		time.Sleep(time.Second) // the refused ones are closed at once
		open := len(conns) - countClosed(conns)
		refused := floodMetrics(t, victim)[key] - before[key]
		closeAll(conns)
		st := s.finish()
		t.Logf("%d attempts in %v (%d dial errors): %d still open after 1 s, %v refused per source; victim: file descriptors %d before, at most %d during",
			len(conns)+dialErrs, attempts.Round(time.Millisecond), dialErrs, open, refused, baseFDs, st.maxFDs)
		if open > perSource {
			t.Errorf("%d gossip streams of one host open, want at most %d", open, perSource)
		}
		if want := float64(len(conns) - perSource); refused < want {
			t.Errorf("%v streams refused per source, want %v", refused, want)
		}
		if st.maxFDs > baseFDs+64 { // uncapped, memberlist would hold them all
			t.Errorf("victim used %d descriptors during the flood, %d before", st.maxFDs, baseFDs)
		}
		if st.apiErrs > 0 || len(st.changed) > 0 {
			t.Errorf("during the gossip flood: %d API errors, Red Leader changes %v", st.apiErrs, firstN(st.changed, 3))
		}
	})

	t.Run("junk gossip suppressed count", func(t *testing.T) {
		if junkAt.IsZero() {
			t.Skip("the junk burst did not run")
		}
		// The next line of the kind, after the rate limit's period, says
		// how many were left out.
		time.Sleep(time.Until(junkAt.Add(logbridge.LimitEvery + time.Second)))
		off := len(victim.p.Log())
		sendJunk(t, flooders[1], netip.AddrPortFrom(victim.h.IP(), floodGossipPort), 100)
		var lines []string
		wait.For(t, 5*time.Second, "a memberlist line after the period", func() bool {
			lines = warnLines(victim.p.Log()[off:], "memberlist")
			return len(lines) > 0
		})
		time.Sleep(time.Second)
		lines = warnLines(victim.p.Log()[off:], "memberlist")
		t.Logf("after %v: %s", time.Since(junkAt).Round(time.Second), strings.Join(lines, "\n"))
		best, re := 0, regexp.MustCompile(`suppressed=(\d+)`)
		for _, ln := range lines {
			if m := re.FindStringSubmatch(ln); m != nil {
				n, _ := strconv.Atoi(m[1])
				best = max(best, n)
			}
		}
		if best < junkDatagrams/10 {
			t.Errorf("suppressed count %d, want at least %d of the %d junk datagrams (some may be dropped by the kernel)", best, junkDatagrams/10, junkDatagrams)
		}
		// Over the minute: the first line of each kind, then one with the
		// count (the junk makes one or two kinds).
		all := warnLines(victim.p.Log(), "memberlist")
		t.Logf("memberlist lines at WARN and above over the whole test (%v): %d", time.Since(junkAt).Round(time.Second), len(all))
		if len(all) > 6 {
			t.Errorf("%d memberlist lines in a minute of junk, want a few:\n%s", len(all), strings.Join(all, "\n"))
		}
	})
}

// startFloodVictim starts an agent under `prlimit --nofile=1024:1024`,
// logging at info.
func startFloodVictim(t *testing.T, h *lab.Host) *agent {
	t.Helper()
	a := &agent{h: h, dir: t.TempDir()}
	cmd := h.Command(context.Background(), "prlimit", fmt.Sprintf("--nofile=%d:%d", floodFDLimit, floodFDLimit),
		lab.Binary(t), "agent", "--data-dir", a.dir, "--log-level", "info", "--node-name", h.Name)
	a.p = h.StartCmd(t, "agent", cmd)
	return a
}

// procLimit returns the soft and hard values of a /proc/PID/limits row.
func procLimit(t *testing.T, pid int, row string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, row) {
			f := strings.Fields(strings.TrimPrefix(line, row))
			if len(f) >= 2 {
				return f[0] + " " + f[1]
			}
		}
	}
	t.Fatalf("no %q in /proc/%d/limits", row, pid)
	return ""
}

// procFDs counts a process's open file descriptors and, of them, sockets.
func procFDs(t *testing.T, pid int) (fds, sockets int) {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fds++
		if link, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(link, "socket:") {
			sockets++
		}
	}
	return fds, sockets
}

// peerPortConns lists the established connections on the peer port of h
// whose peer is not one of the agents (as `ss` shows them in h).
func peerPortConns(t *testing.T, h *lab.Host, agents map[netip.Addr]bool) []string {
	t.Helper()
	out, err := h.Command(shortCtx(t, 10*time.Second), "ss", "-Htn", "state", "established",
		fmt.Sprintf("( sport = :%d )", floodPeerPort)).Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	var left []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		ap, err := netip.ParseAddrPort(f[len(f)-1])
		if err != nil || !agents[ap.Addr().Unmap()] {
			left = append(left, f[len(f)-1])
		}
	}
	return left
}

// floodMetrics returns a's redleader_peer_port_* series, keyed by name and
// labels.
func floodMetrics(t *testing.T, a *agent) map[string]float64 {
	t.Helper()
	ctx, cancel := apiCtx()
	defer cancel()
	b, err := a.client().Metrics(ctx)
	if err != nil {
		t.Fatalf("%s: /metrics: %v", a.h.Name, err)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "redleader_peer_port_") && !strings.HasPrefix(line, "redleader_gossip_streams_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// sendJunk sends n datagrams of random bytes (1 to 200 of them) from h to
// dst and returns how many went out.
func sendJunk(t *testing.T, h *lab.Host, dst netip.AddrPort, n int) int {
	t.Helper()
	pc, err := h.ListenPacket("udp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	to := net.UDPAddrFromAddrPort(dst)
	buf := make([]byte, 200)
	sent := 0
	for i := range n {
		if _, err := crand.Read(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := pc.WriteTo(buf[:1+i%len(buf)], to); err == nil {
			sent++
		}
		if i%100 == 99 {
			time.Sleep(2 * time.Millisecond) // do not overrun the receiver's socket buffer
		}
	}
	return sent
}

// warnLines returns the lines of log at WARN or ERROR whose component is
// component ("": any).
func warnLines(log, component string) []string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		if (strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR")) &&
			(component == "" || strings.Contains(line, "component="+component)) {
			out = append(out, line)
		}
	}
	return out
}

// floodConnect makes perHost connection attempts from each host to the
// peer port at ip, floodDialers at a time, and sends floodPayload on each
// connection made. It returns the connections (open or closed by the
// victim since) and the number of failed dials.
func floodConnect(from []*lab.Host, ip netip.Addr, perHost int) ([]net.Conn, int) {
	return floodConnectTo(from, netip.AddrPortFrom(ip, floodPeerPort), floodPayload, perHost)
}

// floodConnectTo dials addr perHost times from each host and writes
// payload (if any) on each connection; it returns the connections made and
// how many dials failed.
func floodConnectTo(from []*lab.Host, target netip.AddrPort, payload []byte, perHost int) ([]net.Conn, int) {
	// Every dial takes an OS thread into the host's namespace: more at once
	// would slow the test process, not the victim.
	const floodDialers = 100
	workersPerHost := max(1, floodDialers/len(from))
	addr := target.String()
	var (
		mu    sync.Mutex
		conns []net.Conn
		errs  atomic.Int64
		wg    sync.WaitGroup
	)
	for _, h := range from {
		jobs := make(chan struct{}, perHost)
		for range perHost {
			jobs <- struct{}{}
		}
		close(jobs)
		for range min(workersPerHost, perHost) {
			wg.Go(func() {
				for range jobs {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					c, err := h.DialContext(ctx, "tcp", addr)
					cancel()
					if err != nil {
						errs.Add(1)
						continue
					}
					if payload != nil {
						_ = c.SetWriteDeadline(time.Now().Add(time.Second))
						_, _ = c.Write(payload) // a refused one may be gone already
					}
					mu.Lock()
					conns = append(conns, c)
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	return conns, int(errs.Load())
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// countClosed counts the connections the far side has closed.
func countClosed(conns []net.Conn) int {
	var n atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	for _, c := range conns {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeoutErr(err) {
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return int(n.Load())
}

func isTimeoutErr(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func firstN(s []string, n int) []string { return s[:min(n, len(s))] }

// blockFetcher fetches every block of c from a peer over MS-PCCRR, from
// inside host h.
type blockFetcher struct {
	rc   *retrieval.Client
	peer string
	c    pccrdContent
}

func newBlockFetcher(h *lab.Host, peer string, c pccrdContent) *blockFetcher {
	return &blockFetcher{rc: retrieval.NewClient(retrieval.ClientConfig{HTTPClient: h.HTTPClient()}), peer: peer, c: c}
}

func (f *blockFetcher) all() error {
	seg := &f.c.info.Segments[0]
	for i := range seg.BlockCount() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		b, err := f.rc.FetchBlock(ctx, f.peer, seg, i)
		cancel()
		if err != nil {
			return err
		}
		if off := i * content.BlockSize; !bytes.Equal(b, f.c.data[off:off+len(b)]) {
			return fmt.Errorf("block %d differs from the content", i)
		}
	}
	return nil
}

func (f *blockFetcher) close() { f.rc.Close() }

// floodSampler watches a flood: every 100 ms it times a call to the
// victim's local API, counts the victim's descriptors and checks the
// election on every agent. Its fields are read after finish.
type floodSampler struct {
	s *sampler

	api      []time.Duration
	maxAt    time.Time // when the slowest call started
	apiErrs  int
	maxFDs   int
	disagree []string // samples without agreement (a slow answer counts)
	samples  int      // set by finish
	changed  []string // set by finish: samples where an agent saw another Red Leader
}

func startFloodSampler(agents []*agent, victim *agent, seat api.RedLeaderInfo) *floodSampler {
	f := &floodSampler{}
	f.s = newSampler(100*time.Millisecond, func() []string { return f.check(agents, victim, seat) })
	return f
}

// check is one sample; it returns the agents that see another Red Leader
// than seat.
func (f *floodSampler) check(agents []*agent, victim *agent, seat api.RedLeaderInfo) []string {
	start := time.Now()
	st := victim.status()
	if st == nil {
		f.apiErrs++
	} else {
		d := time.Since(start)
		if len(f.api) == 0 || d > slices.Max(f.api) {
			f.maxAt = start
		}
		f.api = append(f.api, d)
	}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", victim.p.Pid())); err == nil {
		f.maxFDs = max(f.maxFDs, len(ents))
	}
	sts := statuses(agents)
	if _, err := agreement(agents, sts); err != nil {
		f.disagree = append(f.disagree, stamp()+": "+err.Error())
	}
	var changed []string
	for i, st := range sts {
		if st != nil && st.RedLeader != nil && (st.RedLeader.Node != seat.Node || st.RedLeader.Epoch != seat.Epoch) {
			changed = append(changed, fmt.Sprintf("%s sees %s@%d", agents[i].h.Name, st.RedLeader.Name, st.RedLeader.Epoch))
		}
	}
	return changed
}

// finish stops the sampler (once; later calls just return it) and
// returns it for reading.
func (f *floodSampler) finish() *floodSampler {
	f.samples, f.changed = f.s.finish()
	slices.Sort(f.api)
	return f
}

// pct is the p-th percentile of the API latencies (100: the maximum).
func (s *floodSampler) pct(p int) time.Duration {
	if len(s.api) == 0 {
		return 0
	}
	return s.api[min(len(s.api)-1, len(s.api)*p/100)].Round(100 * time.Microsecond)
}
