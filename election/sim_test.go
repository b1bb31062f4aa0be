package election

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"

	"github.com/redleader-p2p/redleader/config"
	"github.com/redleader-p2p/redleader/internal/sublisten"
	"github.com/redleader-p2p/redleader/internal/wait"
)

// The in-memory subnet: real election.Nodes (real Raft with bolt stores
// for the voters and standbys, real cluster RPC over HTTP, real state
// pulls) on in-memory pipes that count what every host writes, with an
// ideal shared member table as gossip: a head a node publishes reaches
// every other node a delay later, all at once (the worst case for pull
// bursts).
//
// BenchmarkElectionSim1000 runs 1,000 of them. 1,000 memberlist instances
// do not fit on a 2-core test machine (their join alone is O(n²) messages
// and took over 5 minutes here), so the gossip side is measured apart, on
// 200 real memberlist pools: peer's BenchmarkGossipSim. The Node tests
// (node_test.go) run a handful of nodes on the same network.

const (
	simPeerPort = 7381
	// simGossipDelay is how long a head takes to reach everyone through
	// memberlist on a 1,000-member LAN (about log₃(1000) gossip rounds of
	// 200 ms).
	simGossipDelay = 1300 * time.Millisecond
)

var errSimUnreachable = errors.New("sim: no such host")

// simNet is the in-memory network: hosts by IP.
type simNet struct {
	mu    sync.RWMutex
	hosts map[string]*simHost

	headUpdates atomic.Int64 // heads published (SetHead calls)
	ports       atomic.Int64 // source ports handed out
}

func (s *simNet) lookup(addr string) *simHost {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.hosts[host]
}

// simHost is one simulated machine: its peer port and what it wrote to
// the wire.
type simHost struct {
	i      int
	id     string
	ip     net.IP
	net    *simNet
	raftLn *sublisten.Listener                // Raft instances take it through Sub, as on the peer port
	rpcLn  atomic.Pointer[sublisten.Listener] // replaced when a test restarts the host's Node

	// cut makes every dial from this host fail, and every write on the
	// connections it dialed: its check-ins, pulls, forwarded commands and
	// Raft requests never leave it. Connections others open to it still
	// work.
	cut atomic.Bool
	// refuse makes every dial to this host fail with ECONNREFUSED, as a
	// host whose agent process died answers a connection to its port.
	refuse atomic.Bool

	rpcServed   atomic.Int64 // bytes this host wrote as an RPC server
	pullsServed atomic.Int64 // GET /rpc/state requests this host received
	rpcDialsIn  atomic.Int64 // RPC connections other hosts opened to this host
	raftBytes   atomic.Int64 // bytes this host wrote on Raft connections

	node *Node
}

func newSimHost(n *simNet, i int) *simHost {
	ip := net.IPv4(10, 99, byte(i>>8), byte(i))
	h := &simHost{i: i, id: uuid.NewString(), ip: ip, net: n}
	h.raftLn = sublisten.New(&net.TCPAddr{IP: ip, Port: simPeerPort}, 64, nil)
	h.rpcLn.Store(sublisten.New(&net.TCPAddr{IP: ip, Port: simPeerPort}, 64, nil))
	return h
}

// simPeer is a host's election transport (its peer port).
type simPeer struct{ h *simHost }

func (p simPeer) RaftListener() net.Listener { return p.h.raftLn.Sub() }
func (p simPeer) RPCListener() net.Listener  { return p.h.rpcLn.Load() }
func (p simPeer) Advertise() net.Addr        { return p.h.raftLn.Addr() }

func (p simPeer) Dial(ctx context.Context, addr string, rpc bool) (net.Conn, error) {
	if p.h.cut.Load() {
		return nil, fmt.Errorf("%w: %s (this host's dials are cut)", errSimUnreachable, addr)
	}
	dst := p.h.net.lookup(addr)
	if dst == nil {
		return nil, fmt.Errorf("%w: %s", errSimUnreachable, addr)
	}
	if dst.refuse.Load() {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: dst.raftLn.Addr(), Err: syscall.ECONNREFUSED}
	}
	c1, c2 := net.Pipe()
	// The server side sees the dialing host's address, as on a real peer
	// port: the election checks callers by it.
	from := &net.TCPAddr{IP: p.h.ip, Port: 40000 + int(p.h.net.ports.Add(1)%20000)}
	to := &net.TCPAddr{IP: dst.ip, Port: simPeerPort}
	client := &countConn{Conn: c1, written: &p.h.raftBytes, cut: &p.h.cut, remote: to}
	server := &countConn{Conn: c2, written: &dst.raftBytes, remote: from}
	ln := dst.raftLn
	if rpc {
		client = &countConn{Conn: c1, written: new(atomic.Int64), pulls: &dst.pullsServed, cut: &p.h.cut, remote: to}
		server = &countConn{Conn: c2, written: &dst.rpcServed, remote: from}
		ln = dst.rpcLn.Load()
	}
	if err := ln.Deliver(ctx, server); err != nil {
		c1.Close()
		c2.Close()
		return nil, fmt.Errorf("%w: %s refused the connection: %w", errSimUnreachable, addr, err)
	}
	if rpc {
		dst.rpcDialsIn.Add(1)
	}
	return client, nil
}

// countConn counts the bytes written through it and, on the client side of
// RPC connections, the state pulls it sends (net/http writes each request's
// head in one Write, starting with the request line).
type countConn struct {
	net.Conn
	written *atomic.Int64
	pulls   *atomic.Int64
	cut     *atomic.Bool // the dialing host's cut: its connections fail too
	remote  net.Addr     // the other end's address
}

func (c *countConn) RemoteAddr() net.Addr { return c.remote }

var pullRequestLine = []byte("GET /rpc/state ")

func (c *countConn) Write(p []byte) (int, error) {
	if c.cut != nil && c.cut.Load() {
		c.Conn.Close()
		return 0, fmt.Errorf("%w: connection cut", errSimUnreachable)
	}
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	if c.pulls != nil && bytes.HasPrefix(p, pullRequestLine) {
		c.pulls.Add(1)
	}
	return n, err
}

// simTable is the ideal gossip: one member table that every node reads.
// A head a node publishes reaches all readers delay later, at once.
// Members returns a shared snapshot, rebuilt only after a change (the
// election never modifies it).
type simTable struct {
	net   *simNet
	done  chan struct{}
	delay time.Duration // how long a published head takes to reach the readers; set before start

	mu      sync.Mutex
	members map[string]Member
	snap    []Member
	stale   map[string]Member // node -> the ranking inputs the others see (setStale)
}

func (t *simTable) add(m Member) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.members[m.Node] = m
	t.snap = nil
}

func (t *simTable) snapshot() []Member {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.snap == nil {
		t.snap = make([]Member, 0, len(t.members))
		for _, m := range t.members {
			t.snap = append(t.snap, m)
		}
		slices.SortFunc(t.snap, func(a, b Member) int { return strings.Compare(a.Node, b.Node) })
	}
	return t.snap
}

// update changes node's member record (ranking inputs, status…), as a
// gossip update would; readers see it at once.
func (t *simTable) update(node string, f func(*Member)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.members[node]
	f(&m)
	t.members[node] = m
	t.snap = nil
}

func (t *simTable) setHead(node string, h Head) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.members[node]
	m.Head = h
	t.members[node] = m
	t.snap = nil
}

// simView is one node's Membership.
type simView struct {
	t    *simTable
	node string
}

func (v simView) SelfInputs() (Priority, uint64) {
	v.t.mu.Lock()
	defer v.t.mu.Unlock()
	m := v.t.members[v.node]
	return m.Priority, m.Progress
}

func (v simView) Members() []Member {
	ms := v.t.snapshot()
	v.t.mu.Lock()
	stale := v.t.stale
	v.t.mu.Unlock()
	if len(stale) == 0 {
		return ms
	}
	out := slices.Clone(ms)
	for i := range out {
		if s, ok := stale[out[i].Node]; ok && out[i].Node != v.node {
			out[i].Priority, out[i].Progress = s.Priority, s.Progress
		}
	}
	return out
}

// setStale makes every node but node itself see node's ranking inputs as
// in m: gossip that lags behind what node publishes.
func (t *simTable) setStale(node string, m Member) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stale == nil {
		t.stale = map[string]Member{}
	}
	t.stale[node] = m
}

func (v simView) SetHead(h Head) {
	v.t.net.headUpdates.Add(1)
	time.AfterFunc(v.t.delay, func() {
		select {
		case <-v.t.done:
		default:
			v.t.setHead(v.node, h)
		}
	})
}

// simTotals is a snapshot of the counters of every host.
type simTotals struct {
	at                     time.Time
	raftBytes, headUpdates int64
	pulls, served          map[string]int64 // by host ID, Raft members only
	raftMembers            []string         // voters and standbys then, leader first
	leader                 string
	applied                uint64
	stateBytes             int
	voters, standbys       int
	allPulls, allServe     int64
}

type sim struct {
	root  string // data directories
	table *simTable
	net   *simNet
	hosts []*simHost

	closeOnce sync.Once
}

func (s *sim) totals() simTotals {
	t := simTotals{at: time.Now(), headUpdates: s.net.headUpdates.Load(), pulls: map[string]int64{}, served: map[string]int64{}}
	for _, h := range s.hosts {
		t.raftBytes += h.raftBytes.Load()
		t.allPulls += h.pullsServed.Load()
		t.allServe += h.rpcServed.Load()
		if h.node == nil {
			continue
		}
		r := h.node.raftNode()
		if r == nil {
			continue
		}
		t.pulls[h.id] = h.pullsServed.Load()
		t.served[h.id] = h.rpcServed.Load()
		if r.raft.State() == raft.Leader {
			t.leader = h.id
			t.raftMembers = append([]string{h.id}, t.raftMembers...)
			t.applied = r.fsm.index()
			var buf bytes.Buffer
			if r.fsm.WriteState(&buf) == nil {
				t.stateBytes = buf.Len()
			}
			for _, sv := range r.configuration().Servers {
				if sv.Suffrage == raft.Voter {
					t.voters++
				} else {
					t.standbys++
				}
			}
		} else {
			t.raftMembers = append(t.raftMembers, h.id)
		}
	}
	return t
}

// agreed reports whether every node reports the same confirmed Red Leader
// and epoch and exactly one acts as Red Leader (peer's agreedRedLeader).
func (s *sim) agreed() bool {
	var first RedLeader
	acting := 0
	for i, h := range s.hosts {
		st := h.node.Status()
		if !st.Seat.Confirmed() {
			return false
		}
		if i == 0 {
			first = st.Seat
		} else if st.Seat.Node != first.Node || st.Seat.Epoch != first.Epoch {
			return false
		}
		if st.RedLeader {
			acting++
		}
	}
	return acting == 1
}

// describe summarises what the nodes report, for failures.
func (s *sim) describe() string {
	seats := map[string]int{}
	raftStates := map[string]int{}
	clusters := map[string]int{}
	acting := 0
	for _, h := range s.hosts {
		if h.node == nil {
			continue
		}
		st := h.node.Status()
		seats[fmt.Sprintf("%.8s/%d/confirmed=%v/index=%d", st.Seat.Node, st.Seat.Epoch, st.Seat.Confirmed(), h.node.State().Index)]++
		raftStates[st.Raft.State]++
		clusters[fmt.Sprintf("%.8s", st.Raft.ClusterID)]++
		if st.RedLeader {
			acting++
		}
	}
	return fmt.Sprintf("seats %v; raft %v; clusters %v; acting Red Leaders %d", seats, raftStates, clusters, acting)
}

// caughtUp counts the nodes whose state has reached index. It reads the
// summary: a full State copies the event log and the dedup window, about
// 90 KB per node, on every poll of every node.
func (s *sim) caughtUp(index uint64) int {
	n := 0
	for _, h := range s.hosts {
		if h.node.summary().Index >= index {
			n++
		}
	}
	return n
}

// waitFor is wait.For that also logs what the nodes report when it times
// out, and returns when cond held.
func (s *sim) waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) time.Time {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	wait.For(tb, timeout, what, func() bool {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			tb.Logf("sim: still waiting for %s: %s", what, s.describe())
		}
		return false
	})
	return time.Now()
}

func (s *sim) close() { s.closeOnce.Do(s.shutdown) }

func (s *sim) shutdown() {
	var wg sync.WaitGroup
	for _, h := range s.hosts {
		if h.node != nil {
			wg.Go(func() { _ = h.node.Close() })
		}
	}
	wg.Wait()
	close(s.table.done)
	for _, h := range s.hosts {
		h.raftLn.Close()
		h.rpcLn.Load().Close()
	}
}

// newSim creates n hosts sharing the ideal gossip table, each alive for an
// hour or more (host i booted i seconds earlier than host 0).
func newSim(tb testing.TB, n int) *sim {
	tb.Helper()
	s := &sim{net: &simNet{hosts: map[string]*simHost{}}, root: tb.TempDir()}
	s.table = &simTable{net: s.net, done: make(chan struct{}), delay: simGossipDelay, members: map[string]Member{}}
	tb.Cleanup(s.close) // before TempDir's own cleanup: cleanups run last first
	boot := time.Now().Add(-time.Hour)
	for i := range n {
		h := newSimHost(s.net, i)
		s.net.mu.Lock()
		s.net.hosts[h.ip.String()] = h
		s.net.mu.Unlock()
		s.hosts = append(s.hosts, h)
		hboot := boot.Add(-time.Duration(i) * time.Second)
		s.table.add(Member{Node: h.id, RaftAddr: h.raftLn.Addr().String(), Status: StatusAlive, Since: boot,
			Version: 2, Uptime: time.Since(hboot)})
	}
	return s
}

// productConfig is the election Config with the product's default timings.
func productConfig() Config {
	e := config.Default().Election
	return Config{
		Voter: true, Class: ClassDesktop,
		RaftMultiplier: e.RaftMultiplier, CheckinInterval: e.CheckinInterval, CheckinTimeout: e.CheckinTimeout,
		ConfirmTimeout: e.ConfirmTimeout, NLMTTL: e.NLMTTL, DeadVoterGrace: e.DeadVoterGrace,
		QuorumLossTimeout: e.QuorumLossTimeout, Settle: e.BootstrapSettle, Stabilization: e.VoterStabilization,
		InitialPolicy: Policy{LeaderRate: "0", PeerRate: "256kbit", LANRate: "0"},
		Keyed:         true, // the benchmark commits a policy
	}
}

// start starts an election Node on every host with the product's default
// timings.
func (s *sim) start(tb testing.TB) { s.startWith(tb, productConfig(), nil) }

// startWith starts a Node on every host with base (Node and DataDir set per
// host); adjust, if set, changes one host's copy first.
func (s *sim) startWith(tb testing.TB, base Config, adjust func(h *simHost, c *Config)) {
	tb.Helper()
	for _, h := range s.hosts {
		c := base
		c.Node, c.DataDir = h.id, filepath.Join(s.root, fmt.Sprint(h.i))
		if adjust != nil {
			adjust(h, &c)
		}
		n, err := New(c, simView{s.table, h.id}, simPeer{h})
		if err != nil {
			tb.Fatalf("node %d: %v", h.i, err)
		}
		if err := n.Start(context.Background()); err != nil {
			tb.Fatalf("start node %d: %v", h.i, err)
		}
		h.node = n
	}
}

// fullState is the size of a state transfer once the event log and the
// dedup window are full, as they are on any subnet that has run a while.
func fullState(b *testing.B) int {
	b.Helper()
	f := NewFSM(FSMOptions{})
	now := time.Now()
	apply := func(i uint64, c Command) {
		data, err := EncodeCommand(c)
		if err != nil {
			b.Fatal(err)
		}
		f.Apply(&raft.Log{Index: i, Type: raft.LogCommand, Data: data})
	}
	apply(1, NewInitCommand(uuid.NewString(), now, uuid.NewString(), make([]byte, SecretSize), Policy{Version: 1, PeerRate: "256kbit"}))
	for i := range uint64(DedupWindow + EventLogSize) {
		apply(i+2, NewNoteCommand(uuid.NewString(), now, uuid.NewString(), SeverityInfo, "Red Leader appointed: fresh choice (highest uptime among equals)"))
	}
	var buf bytes.Buffer
	if err := f.WriteState(&buf); err != nil {
		b.Fatal(err)
	}
	return buf.Len()
}

// voterLoad is the pull load on the Raft members between two snapshots.
type voterLoad struct {
	pulls, maxPulls         int64   // all Raft members; the busiest one
	maxBytes                int64   // bytes served by the busiest one
	busiest                 string  // "leader" or "follower"
	perSec, bytesPerSec     float64 // on the busiest Raft member
	headUpdatesPerSec       float64 // metadata re-publications, all members
	raftBps                 float64 // all Raft traffic
	secs                    float64
	memberPulls, allServedB int64 // everything served over RPC (incl. check-ins)
}

func load(from, to simTotals) voterLoad {
	l := voterLoad{secs: to.at.Sub(from.at).Seconds()}
	for _, id := range to.raftMembers {
		p := to.pulls[id] - from.pulls[id]
		bs := to.served[id] - from.served[id]
		l.pulls += p
		if p > l.maxPulls || (p == l.maxPulls && bs > l.maxBytes) {
			l.maxPulls, l.maxBytes, l.busiest = p, bs, "follower"
			if id == to.leader {
				l.busiest = "leader"
			}
		}
	}
	l.memberPulls = to.allPulls - from.allPulls
	l.allServedB = to.allServe - from.allServe
	l.perSec = float64(l.maxPulls) / l.secs
	l.bytesPerSec = float64(l.maxBytes) / l.secs
	l.headUpdatesPerSec = float64(to.headUpdates-from.headUpdates) / l.secs
	l.raftBps = float64(to.raftBytes-from.raftBytes) / l.secs
	return l
}

// BenchmarkElectionSim1000 runs the election of 1,000 members (see the top
// of this file) with the product's default timings and reports:
//
//   - s_to_leader: from starting every Node until all 1,000 report the same
//     confirmed Red Leader and epoch and exactly one acts as Red Leader;
//   - s_to_voters: until the Raft group has 5 voters and 2 standbys;
//   - pulls/s/voter, served_B/s/voter and head_updates/s: steady state
//     (10 s without a commit); the voter figures are the busiest Raft
//     member's, served bytes include the Red Leader's check-ins;
//   - s_commit_to_all: one `policy set` committed through a member, until
//     all 1,000 hold it;
//   - commit_pulls/busiest_voter, commit_pulls/s/busiest_voter,
//     commit_served_B/s/busiest_voter and commit_head_updates: over the
//     5 s after that commit;
//   - state_B: the state transfer now; full_state_B: with the event log and
//     the dedup window full (a subnet that has run a while), which every
//     pull costs from then on.
func BenchmarkElectionSim1000(b *testing.B) {
	if testing.Short() {
		b.Skip("simulates 1,000 members; skipped with -short")
	}
	for range b.N {
		runSim(b, 1000)
	}
}

func runSim(b *testing.B, n int) {
	b.Helper()
	s := newSim(b, n)
	start := s.totals()
	s.start(b)
	agreedAt := s.waitFor(b, 90*time.Second, "one agreed Red Leader", s.agreed)
	b.ReportMetric(agreedAt.Sub(start.at).Seconds(), "s_to_leader")
	formedAt := s.waitFor(b, 90*time.Second, "5 voters and 2 standbys", func() bool {
		t := s.totals()
		return t.voters == 5 && t.standbys == 2
	})
	formed := s.totals()
	startup := load(start, formed)
	b.ReportMetric(formedAt.Sub(start.at).Seconds(), "s_to_voters")
	b.Logf("%d members: agreed Red Leader after %v; 5 voters and 2 standbys after %v; meanwhile %d heads published, %d pulls (busiest Raft member, the %s: %d)",
		n, agreedAt.Sub(start.at).Round(time.Millisecond), formedAt.Sub(start.at).Round(time.Millisecond),
		formed.headUpdates-start.headUpdates, startup.pulls, startup.busiest, startup.maxPulls)

	// Steady state: every member has the leader's state; nothing commits.
	s.waitFor(b, time.Minute, "every member to hold the latest state", func() bool {
		return s.caughtUp(s.totals().applied) == n
	})
	time.Sleep(2 * simGossipDelay)
	quiet := s.totals()
	time.Sleep(10 * time.Second)
	steadyEnd := s.totals()
	steady := load(quiet, steadyEnd)
	if steadyEnd.applied != quiet.applied {
		b.Logf("note: %d commits during the steady window", steadyEnd.applied-quiet.applied)
	}
	b.ReportMetric(steady.perSec, "pulls/s/voter")
	b.ReportMetric(steady.bytesPerSec, "served_B/s/voter")
	b.ReportMetric(steady.headUpdatesPerSec, "head_updates/s")
	b.Logf("steady: %d pulls in all; busiest Raft member %.1f pulls/s, %.0f B/s served; %.1f heads published/s; Raft %.0f B/s in all",
		steady.pulls, steady.perSec, steady.bytesPerSec, steady.headUpdatesPerSec, steady.raftBps)

	// One commit, as `policy set` on a member does.
	var proposer *simHost
	for _, h := range s.hosts {
		if h.node.raftNode() == nil {
			proposer = h
			break
		}
	}
	before := s.totals()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err := proposer.node.Apply(ctx, NewSetPolicyCommand(uuid.NewString(), time.Now(),
		Policy{LeaderRate: "20Mbit", PeerRate: "128kbit", LANRate: "0"}, 0))
	cancel()
	if err != nil {
		b.Fatalf("policy set: %v", err)
	}
	target := s.totals().applied
	allAt := s.waitFor(b, time.Minute, "every member to hold the committed policy", func() bool {
		return s.caughtUp(target) == n
	})
	if d := time.Until(before.at.Add(5 * time.Second)); d > 0 {
		time.Sleep(d)
	}
	after := s.totals()
	commit := load(before, after)
	full := fullState(b)
	b.ReportMetric(allAt.Sub(before.at).Seconds(), "s_commit_to_all")
	b.ReportMetric(float64(commit.maxPulls), "commit_pulls/busiest_voter")
	b.ReportMetric(commit.perSec, "commit_pulls/s/busiest_voter")
	b.ReportMetric(commit.bytesPerSec, "commit_served_B/s/busiest_voter")
	b.ReportMetric(float64(after.headUpdates-before.headUpdates), "commit_head_updates")
	b.ReportMetric(float64(after.stateBytes), "state_B")
	b.ReportMetric(float64(full), "full_state_B")
	b.ReportMetric(0, "ns/op")
	b.Logf("commit: all %d members hold it after %v; over %.1fs: %d pulls (%d on the busiest Raft member, the %s: %.0f pulls/s, %.0f B/s served), %d heads published; state %d B now, %d B when full",
		n, allAt.Sub(before.at).Round(time.Millisecond), commit.secs, commit.pulls, commit.maxPulls, commit.busiest,
		commit.perSec, commit.bytesPerSec, after.headUpdates-before.headUpdates, after.stateBytes, full)
}
