package election

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/redleader-p2p/redleader/internal/wait"
)

// Node tests: a handful of real Nodes on the in-memory subnet of
// sim_test.go, with short timings.

func testConfig() Config {
	return Config{
		Voter: true, Class: ClassDesktop, RaftMultiplier: 1,
		CheckinInterval: 200 * time.Millisecond, CheckinTimeout: 1500 * time.Millisecond,
		ConfirmTimeout: 1500 * time.Millisecond, NLMTTL: time.Minute, DeadVoterGrace: 30 * time.Second,
		QuorumLossTimeout: time.Minute, Settle: 200 * time.Millisecond,
		InitialPolicy: Policy{LeaderRate: "0", PeerRate: "256kbit", LANRate: "0"},
		Keyed:         true, // admin commands allowed (the sim has no key: nothing checks it)
	}
}

// newTestSim starts n Nodes with testConfig; adjust may change a host's
// config and its member record (s.table.update) before it starts.
func newTestSim(t *testing.T, n int, adjust func(s *sim, h *simHost, c *Config)) *sim {
	t.Helper()
	s := newSim(t, n)
	s.table.delay = 50 * time.Millisecond
	s.startWith(t, testConfig(), func(h *simHost, c *Config) {
		if adjust != nil {
			adjust(s, h, c)
		}
	})
	return s
}

// newFavouredSim starts n Nodes with host i favoured (favour) and waits
// until it is the Red Leader.
func newFavouredSim(t *testing.T, n, i int) (*sim, *simHost) {
	t.Helper()
	s := newTestSim(t, n, func(s *sim, h *simHost, c *Config) {
		if h.i == i {
			favour(s, h, c)
		}
	})
	rl := s.hosts[i]
	wait.For(t, 30*time.Second, "the favoured Red Leader", func() bool { return redLeaderAmong(s.hosts) == rl })
	return s, rl
}

// roleLog records what one WatchRedLeader subscription delivers.
type roleLog struct {
	mu   sync.Mutex
	vals []bool
	done chan struct{} // closed once the channel is
}

func watchRole(t *testing.T, n *Node) *roleLog {
	t.Helper()
	ch, stop := n.WatchRedLeader()
	l := &roleLog{done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for v := range ch {
			l.mu.Lock()
			l.vals = append(l.vals, v)
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { stop(); <-l.done })
	return l
}

func (l *roleLog) values() []bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.vals)
}

// seen reports whether the log shows v at index from or later.
func (l *roleLog) seen(v bool, from int) bool {
	return slices.Contains(l.values()[min(from, len(l.values())):], v)
}

// transitions is the log without repeated values: what the role did.
func transitions(vals []bool) []bool {
	return slices.Compact(slices.Clone(vals))
}

// redLeaderAmong returns the host whose node acts as Red Leader, if
// exactly one of hosts does and all of them report its confirmed seat.
func redLeaderAmong(hosts []*simHost) *simHost {
	var acting *simHost
	var seat RedLeader
	for i, h := range hosts {
		st := h.node.Status()
		if !st.Seat.Confirmed() || (i > 0 && st.Seat != seat) {
			return nil
		}
		seat = st.Seat
		if st.RedLeader {
			if acting != nil {
				return nil
			}
			acting = h
		}
	}
	if acting == nil || acting.id != seat.Node {
		return nil
	}
	return acting
}

// favour makes h the obvious Red Leader: a member that never votes, with
// the highest job priority.
func favour(s *sim, h *simHost, c *Config) {
	c.Voter = false
	s.table.update(h.id, func(m *Member) { m.VoterOptOut, m.Priority = true, PriorityForeground })
}

// TestRedLeaderWatchLeaseExpiry: a Red Leader whose check-ins stop reaching
// the Raft leader stops acting by itself when its lease runs out: the lease
// timer sends "stopped" with no other event (it is a member with every dial
// cut, so no state, notify or check-in reply can reach it).
func TestRedLeaderWatchLeaseExpiry(t *testing.T) {
	t.Parallel()
	s := newTestSim(t, 3, func(s *sim, h *simHost, c *Config) {
		if h.i == 2 {
			favour(s, h, c)
		}
	})
	red := s.hosts[2]
	w1, w2 := watchRole(t, red.node), watchRole(t, red.node)
	wait.For(t, 30*time.Second, "the favoured member to act as Red Leader", func() bool { return w1.seen(true, 0) })
	if !red.node.IsRedLeader() {
		t.Fatal("IsRedLeader is false right after the role started")
	}
	// Its own state holds the seat too (not only the check-in reply, a
	// claim that lasts CheckinTimeout from the first reply at most): the
	// stop below is then the lease's.
	wait.For(t, 10*time.Second, "the member's state to hold its seat", func() bool {
		st := red.node.State().RedLeader
		return st.Node == red.id && st.Confirmed()
	})
	n1 := len(w1.values())
	red.cut.Store(true)
	cutAt := time.Now()
	took := wait.For(t, 10*time.Second, "the lease to run out", func() bool { return w1.seen(false, n1) })
	if lease := testConfig().CheckinTimeout; took > lease+time.Second {
		t.Errorf("role stopped %v after the cut, want within the lease %v (plus slack)", took, lease)
	}
	if red.node.IsRedLeader() {
		t.Fatal("IsRedLeader is true after the stop event")
	}
	if red.node.seatSeen().Node != red.id {
		t.Fatal("the cut node learned of a new seat: the stop may not be the lease timer's")
	}
	wait.For(t, 5*time.Second, "the second watcher to see the stop", func() bool { return len(transitions(w2.values())) >= 3 })
	for _, w := range []*roleLog{w1, w2} {
		if got := transitions(w.values()); !slices.Equal(got, []bool{false, true, false}) {
			t.Errorf("watcher saw %v, want false (start) → true → false", got)
		}
	}
	// The Raft leader displaces the silent Red Leader; another one takes over.
	wait.For(t, 30*time.Second, "another Red Leader", func() bool { return redLeaderAmong(s.hosts[:2]) != nil })
	t.Logf("stopped %v after the cut (%v)", took.Round(time.Millisecond), time.Since(cutAt).Round(time.Millisecond))
}

// TestRedLeaderWatchHandOver: the role moves when the Red Leader is
// marked not-leader-material (its seat is vacated, another node is
// appointed) and when it stops (Close retires the seat).
func TestRedLeaderWatchHandOver(t *testing.T) {
	t.Parallel()
	s := newTestSim(t, 3, nil)
	logs := map[string]*roleLog{}
	for _, h := range s.hosts {
		logs[h.id] = watchRole(t, h.node)
	}
	var first *simHost
	wait.For(t, 30*time.Second, "one agreed Red Leader and 3 voters (one may stop)", func() bool {
		first = redLeaderAmong(s.hosts)
		return first != nil && first.node.Status().Raft.Voters == 3
	})
	t0 := time.Now()
	phase := func(what string) { t.Logf("%v: %s", time.Since(t0).Round(time.Millisecond), what) }
	phase("first Red Leader, 3 voters")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.hosts[0].node.Apply(ctx, NewMarkCommand(uuid.NewString(), time.Now(), first.id, MarkAdmin, 0, "test hand-over")); err != nil {
		t.Fatalf("admin mark: %v", err)
	}
	var second *simHost
	wait.For(t, 30*time.Second, "the role to move to another node", func() bool {
		second = redLeaderAmong(s.hosts)
		return second != nil && second != first
	})
	phase("second Red Leader")
	wait.For(t, 5*time.Second, "the marked node's stop", func() bool { return len(transitions(logs[first.id].values())) >= 3 })
	if got := transitions(logs[first.id].values()); !slices.Equal(got, []bool{false, true, false}) {
		t.Errorf("marked Red Leader's watcher saw %v, want false → true → false", got)
	}
	if first.node.IsRedLeader() {
		t.Error("the marked node still says it is Red Leader")
	}
	// A graceful stop: false, then the channel closes. Gossip then lists
	// the node as left.
	if err := second.node.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	s.table.update(second.id, func(m *Member) { m.Status, m.Since = StatusLeft, time.Now() })
	phase("second closed")
	select {
	case <-logs[second.id].done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not close the watcher's channel")
	}
	if got := transitions(logs[second.id].values()); !slices.Equal(got, []bool{false, true, false}) {
		t.Errorf("closed Red Leader's watcher saw %v, want false → true → false", got)
	}
	var third *simHost
	for _, h := range s.hosts {
		if h != first && h != second {
			third = h
		}
	}
	s.waitFor(t, 30*time.Second, "the last eligible node to take over", func() bool { return logs[third.id].seen(true, 0) })
	phase("third Red Leader")
	if !third.node.IsRedLeader() {
		t.Error("the new Red Leader's IsRedLeader is false after its start event")
	}
}

// TestAppointeeThatNeverChecksIn: an appointee whose check-ins never reach
// the Raft leader (every dial it makes fails) never confirms. The leader
// marks it automatically ("no confirmation within …") and appoints another
// node; the appointee never acts as Red Leader.
func TestAppointeeThatNeverChecksIn(t *testing.T) {
	t.Parallel()
	s := newTestSim(t, 3, func(s *sim, h *simHost, c *Config) {
		if h.i == 2 {
			favour(s, h, c)
			h.cut.Store(true)
		}
	})
	bad := s.hosts[2]
	w := watchRole(t, bad.node)
	wait.For(t, 30*time.Second, "the silent appointee to be marked", func() bool {
		return s.hosts[0].node.State().Marked(bad.id, time.Now())
	})
	var leader *simHost
	wait.For(t, 30*time.Second, "another Red Leader", func() bool { leader = redLeaderAmong(s.hosts[:2]); return leader != nil })
	st := s.hosts[0].node.State()
	m, _ := st.Mark(bad.id)
	if m.By != MarkAuto || m.Expires.IsZero() || !strings.Contains(m.Reason, "no confirmation within") {
		t.Errorf("mark = %+v, want an expiring auto mark \"no confirmation within …\"", m)
	}
	var appointed, warned bool
	for _, e := range st.Events {
		appointed = appointed || (e.Kind == EventAppoint && e.Node == bad.id)
		warned = warned || (e.Node == bad.id && e.Severity == SeverityWarning)
	}
	if !appointed || !warned {
		t.Errorf("events lack the appointment (%v) or the warning (%v): %+v", appointed, warned, st.Events)
	}
	if bad.node.IsRedLeader() || slices.Contains(w.values(), true) {
		t.Errorf("the silent appointee acted as Red Leader (watcher saw %v)", w.values())
	}
}

// TestDeadRedLeaderMarkedAtOnce: a Red Leader whose check-ins stop and
// whose peer port refuses connections (its process died) is marked without
// waiting for the check-in timeout; one that is only cut off (dials time
// out or fail otherwise) keeps its seat until the timeout, so its lease
// always ends first.
func TestDeadRedLeaderMarkedAtOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		refuse  bool
		want    string
		wantNot string
	}{
		{"process gone", true, "refuses connections", "no check-in within"},
		{"cut off", false, "no check-in within", "refuses connections"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, rl := newFavouredSim(t, 3, 2)
			// Let the Raft leader see a few check-ins, so that the probe
			// starts from a late check-in, not from a new leader's.
			time.Sleep(3 * testConfig().CheckinInterval)
			rl.refuse.Store(tc.refuse)
			rl.cut.Store(true)
			wait.For(t, 30*time.Second, "the Red Leader marked", func() bool {
				return s.hosts[0].node.State().Marked(rl.id, time.Now())
			})
			m, _ := s.hosts[0].node.State().Mark(rl.id)
			if m.By != MarkAuto || !strings.Contains(m.Reason, tc.want) || strings.Contains(m.Reason, tc.wantNot) {
				t.Errorf("mark = %+v, want an auto mark whose reason says %q", m, tc.want)
			}
			wait.For(t, 30*time.Second, "another Red Leader", func() bool { return redLeaderAmong(s.hosts[:2]) != nil })
		})
	}
}

// TestHealthyRedLeaderNotProbed: a Red Leader that checks in on time is
// left alone. Its renewals wait up to a heartbeat pace for their round
// before they are on record; once, that made every one look late at the
// tick before its round, and the Raft leader dialled the Red Leader's peer
// port every check-in interval.
func TestHealthyRedLeaderNotProbed(t *testing.T) {
	t.Parallel()
	s, rl := newFavouredSim(t, 3, 2)
	time.Sleep(3 * testConfig().CheckinInterval) // the new Raft leader's first probe
	before := rl.rpcDialsIn.Load()
	const intervals = 25
	time.Sleep(intervals * testConfig().CheckinInterval)
	if redLeaderAmong(s.hosts) != rl {
		t.Fatal("the Red Leader changed: nothing to measure")
	}
	if n := rl.rpcDialsIn.Load() - before; n > 1 {
		t.Errorf("%d RPC connections to the healthy Red Leader in %d check-in intervals, want at most 1", n, intervals)
	}
}

// TestRaftLeaderHandsOffWhenRedLeader: the Raft leader that becomes Red
// Leader (here it gets the most urgent job) hands Raft leadership to another
// voter, so that one machine's death never costs both failovers.
func TestRaftLeaderHandsOffWhenRedLeader(t *testing.T) {
	t.Parallel()
	s := newTestSim(t, 3, func(_ *sim, _ *simHost, c *Config) { c.SeparateRoles = true })
	raftLeader := func() *simHost {
		for _, h := range s.hosts {
			if h.node.leading() {
				return h
			}
		}
		return nil
	}
	var lead *simHost
	wait.For(t, 30*time.Second, "a Red Leader, a Raft leader and 3 voters", func() bool {
		lead = raftLeader()
		return redLeaderAmong(s.hosts) != nil && lead != nil && lead.node.Status().Raft.Voters == 3
	})
	s.table.update(lead.id, func(m *Member) { m.Priority = PriorityForeground })
	wait.For(t, 30*time.Second, "the old Raft leader as Red Leader, Raft led by another voter", func() bool {
		now := raftLeader()
		return redLeaderAmong(s.hosts) == lead && now != nil && now != lead
	})
}

// TestIncumbentRankedByCheckinInputs: the Raft leader ranks the Red
// Leader by the inputs of its check-ins, not by its lagging gossip: a
// member whose progress is ahead of the Red Leader's gossip, but not of
// what the Red Leader reports, does not displace it.
func TestIncumbentRankedByCheckinInputs(t *testing.T) {
	t.Parallel()
	s, rl := newFavouredSim(t, 4, 3)
	epoch := rl.node.Status().Seat.Epoch
	// The Red Leader publishes 1,000 bytes (and checks in with them);
	// the others' gossip still shows 0.
	s.table.setStale(rl.id, Member{Priority: PriorityForeground, Progress: 0})
	s.table.update(rl.id, func(m *Member) { m.Progress = 1000 })
	time.Sleep(3 * testConfig().CheckinInterval)
	s.table.update(s.hosts[0].id, func(m *Member) { m.Priority, m.Progress = PriorityForeground, 500 })
	time.Sleep(5 * testConfig().CheckinInterval)
	if got := redLeaderAmong(s.hosts); got != rl || rl.node.Status().Seat.Epoch != epoch {
		t.Fatalf("the seat moved (epoch %d → %d): ranked by the lagging gossip", epoch, rl.node.Status().Seat.Epoch)
	}
	// Its check-ins say it fell behind: now it is displaced.
	s.table.update(rl.id, func(m *Member) { m.Progress = 100 })
	wait.For(t, 30*time.Second, "the member ahead takes the seat", func() bool { return redLeaderAmong(s.hosts) == s.hosts[0] })
}

// TestRaftLeadershipEstablishedAndRevokedOnce: the leader duties start once
// per gain of Raft leadership and stop once per loss, on a leadership
// transfer as on Close. A fourth node that never votes holds the Red Leader
// seat, so that no Raft leader hands its leadership on (separateRoles).
func TestRaftLeadershipEstablishedAndRevokedOnce(t *testing.T) {
	t.Parallel()
	counts := map[string]*lineCounter{}
	s := newSim(t, 4)
	s.table.delay = 50 * time.Millisecond
	for _, h := range s.hosts {
		counts[h.id] = &lineCounter{n: map[string]int{}}
	}
	s.startWith(t, testConfig(), func(h *simHost, c *Config) {
		c.Logger = slog.New(counts[h.id])
		if h.i == 3 {
			favour(s, h, c)
		}
	})
	leaderOf := func() *simHost {
		for _, h := range s.hosts {
			if h.node.leading() {
				return h
			}
		}
		return nil
	}
	var old *simHost
	wait.For(t, 30*time.Second, "a Raft leader with its duties established, and 3 voters", func() bool {
		old = leaderOf()
		return old != nil && old.node.Status().Raft.Voters == 3
	})
	r := old.node.raftNode()
	if err := r.raft.LeadershipTransfer().Error(); err != nil {
		t.Fatalf("leadership transfer: %v", err)
	}
	var next *simHost
	wait.For(t, 30*time.Second, "the new leader's duties and the old one's revoked", func() bool {
		next = leaderOf()
		return next != nil && next != old && !old.node.leading()
	})
	if got := counts[old.id].get(); got["raft leadership established"] != 1 || got["raft leadership revoked"] != 1 {
		t.Errorf("old leader logged %v, want one establish and one revoke", got)
	}
	if got := counts[next.id].get(); got["raft leadership established"] != 1 || got["raft leadership revoked"] != 0 {
		t.Errorf("new leader logged %v, want one establish and no revoke", got)
	}
	if err := next.node.Close(); err != nil {
		t.Fatal(err)
	}
	if got := counts[next.id].get(); got["raft leadership revoked"] != 1 {
		t.Errorf("closed leader logged %v, want one revoke", got)
	}
	for _, h := range s.hosts {
		if got := counts[h.id].get(); got["raft leadership revoked"] > got["raft leadership established"] {
			t.Errorf("%s revoked more often than it established: %v", h.id, got)
		}
	}
}

// leading reports whether the node's leader duties are established.
func (n *Node) leading() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.lead != nil
}

// seatSeen is the seat the node acts on (its state's, or its own per a
// check-in reply its state has not caught up with yet).
func (n *Node) seatSeen() RedLeader {
	n.mu.Lock()
	defer n.mu.Unlock()
	v, _ := n.seatViewLocked(time.Now())
	return v
}

// lineCounter is a slog handler that counts records by message.
type lineCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *lineCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *lineCounter) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	c.n[r.Message]++
	c.mu.Unlock()
	return nil
}
func (c *lineCounter) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *lineCounter) WithGroup(string) slog.Handler      { return c }

func (c *lineCounter) get() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

// newIdleNode is a Node that is not started: the tests below drive its Red
// Leader role directly.
func newIdleNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	s := newSim(t, 1)
	h := s.hosts[0]
	cfg.Node, cfg.DataDir = h.id, t.TempDir()
	n, err := New(cfg, simView{s.table, h.id}, simPeer{h})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// setRole makes the fencing rule hold (a fresh check-in for our seat) or
// fail (the seat moved), as check-in replies do.
func setRole(n *Node, held bool, epoch uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if held {
		n.seat, n.lastCheckIn, n.checkedEpoch = RedLeader{Node: n.cfg.Node, Epoch: epoch}, time.Now(), epoch
	} else {
		n.seat = RedLeader{Node: "someone-else", Epoch: epoch}
	}
	n.updateRedLocked(time.Now())
}

func TestRedLeaderWatchEveryTransitionInOrder(t *testing.T) {
	n := newIdleNode(t, testConfig())
	ch, stop := n.WatchRedLeader()
	defer stop()
	if v := <-ch; v {
		t.Fatal("first value is true on a node that never checked in")
	}
	for i := range uint64(200) {
		setRole(n, true, 2*i+1)
		if v := <-ch; !v || !n.IsRedLeader() {
			t.Fatalf("round %d: got %v (IsRedLeader %v) after the role started", i, v, n.IsRedLeader())
		}
		setRole(n, false, 2*i+2)
		if v := <-ch; v || n.IsRedLeader() {
			t.Fatalf("round %d: got %v (IsRedLeader %v) after the seat moved", i, v, n.IsRedLeader())
		}
	}
	select {
	case v := <-ch:
		t.Fatalf("extra value %v", v)
	default:
	}
}

// TestRedLeaderWatchNeverBlocksKeepsNewest: the role changes from many
// goroutines while one watcher never reads and another reads slowly; no
// change waits for them, and after the last change both hold the newest
// value, the one IsRedLeader reports.
func TestRedLeaderWatchNeverBlocksKeepsNewest(t *testing.T) {
	n := newIdleNode(t, testConfig())
	idle, stopIdle := n.WatchRedLeader()
	defer stopIdle()
	slow, stopSlow := n.WatchRedLeader()
	defer stopSlow()
	var last bool
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for v := range slow {
			last = v
			time.Sleep(time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	var epoch sync.Mutex
	next := uint64(0)
	for g := range 4 {
		wg.Go(func() {
			for i := range 500 {
				epoch.Lock()
				next++
				e := next
				setRole(n, (g+i)%2 == 0, e)
				epoch.Unlock()
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("role changes blocked on the watchers")
	}
	for _, final := range []bool{true, false, true} {
		setRole(n, final, next+1)
		next++
		want := n.IsRedLeader()
		if want != final {
			t.Fatalf("IsRedLeader = %v right after setting %v", want, final)
		}
		if v := <-idle; v != want {
			t.Errorf("idle watcher holds %v, want the newest %v", v, want)
		}
	}
	stopSlow()
	<-readerDone
	if want := n.IsRedLeader(); last != want {
		t.Errorf("slow watcher's last value %v, want the newest %v", last, want)
	}
}

// TestRedLeaderLeaseTimer: with no other event, the lease timer ends the
// role when the last check-in gets older than CheckinTimeout.
func TestRedLeaderLeaseTimer(t *testing.T) {
	cfg := testConfig()
	n := newIdleNode(t, cfg)
	ch, stop := n.WatchRedLeader()
	defer stop()
	<-ch
	left := 300 * time.Millisecond
	n.mu.Lock()
	n.seat, n.lastCheckIn, n.checkedEpoch = RedLeader{Node: n.cfg.Node, Epoch: 1}, time.Now().Add(-cfg.CheckinTimeout+left), 1
	n.updateRedLocked(time.Now())
	n.mu.Unlock()
	start := time.Now()
	if v := <-ch; !v {
		t.Fatal("role did not start on a fresh check-in")
	}
	select {
	case v := <-ch:
		if v {
			t.Fatal("second value is true, want the stop")
		}
		if took := time.Since(start); took < left-50*time.Millisecond || took > left+2*time.Second {
			t.Errorf("stopped after %v, want about %v", took, left)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the lease ran out without a stop event")
	}
	if n.IsRedLeader() {
		t.Error("IsRedLeader true after the lease ran out")
	}
}

func TestWatchAfterClose(t *testing.T) {
	n := newIdleNode(t, testConfig())
	ch, stop := n.WatchRedLeader()
	setRole(n, true, 1)
	<-ch
	n.closeRedRole()
	if v, ok := <-ch; !ok || v {
		t.Fatalf("after close: got %v, %v; want false then closed", v, ok)
	}
	if _, ok := <-ch; ok {
		t.Fatal("channel still open after close")
	}
	stop() // no double close
	setRole(n, true, 2)
	if n.IsRedLeader() {
		t.Fatal("the role started again after close")
	}
	late, _ := n.WatchRedLeader()
	if v, ok := <-late; !ok || v {
		t.Fatalf("late watcher got %v, %v; want false", v, ok)
	}
	if _, ok := <-late; ok {
		t.Fatal("late watcher's channel open after close")
	}
}

// TestDisplacementSettled: a displacement by progress is committed only
// once the same winner has stayed ahead for 2 check-in intervals; one by
// priority or version of another node's seat once that seat has checked in
// since (or after 2 intervals); other decisions at once; a new winner or a
// pause in its lead starts the wait again.
func TestDisplacementSettled(t *testing.T) {
	n := &Node{cfg: Config{Node: "self", CheckinInterval: time.Second}}
	t0 := time.Unix(1000, 0)
	never := time.Time{}
	by := func(node string, r Rule) Decision { return Decision{Leader: node, Changed: true, Rule: r} }
	steps := []struct {
		at      time.Duration
		d       Decision
		seat    string
		checkIn time.Time // the seat's last check-in
		want    bool
	}{
		// Progress must hold for 2 check-in intervals, whoever the seat is.
		{0, by("b", RuleDisplaceProgress), "a", never, false},
		{time.Second, by("b", RuleDisplaceProgress), "a", t0.Add(time.Second), false}, // a check-in does not settle progress
		{2 * time.Second, by("b", RuleDisplaceProgress), "a", never, true},
		{2500 * time.Millisecond, Decision{Leader: "a", Rule: RuleKeep}, "a", never, true}, // the lead ends
		{3 * time.Second, by("b", RuleDisplaceProgress), "a", never, false},                // and starts again
		{4 * time.Second, by("c", RuleDisplaceProgress), "a", never, false},                // another winner
		{5900 * time.Millisecond, by("c", RuleDisplaceProgress), "a", never, false},
		{6 * time.Second, by("c", RuleDisplaceProgress), "a", never, true},
		// Priority waits for the seat's next check-in...
		{10 * time.Second, by("d", RuleDisplacePriority), "a", t0.Add(9 * time.Second), false},
		{10500 * time.Millisecond, by("d", RuleDisplacePriority), "a", t0.Add(9 * time.Second), false},
		{10900 * time.Millisecond, by("d", RuleDisplacePriority), "a", t0.Add(10800 * time.Millisecond), true},
		// ...or 2 intervals if none comes; version likewise.
		{20 * time.Second, by("e", RuleDisplaceVersion), "a", never, false},
		{21 * time.Second, by("e", RuleDisplaceVersion), "a", never, false},
		{22 * time.Second, by("e", RuleDisplaceVersion), "a", never, true},
		// This node's seat: its own inputs are live, priority applies at once.
		{30 * time.Second, by("f", RuleDisplacePriority), "self", never, true},
		// but progress still holds.
		{40 * time.Second, by("h", RuleDisplaceProgress), "self", never, false},
		{42 * time.Second, by("h", RuleDisplaceProgress), "self", never, true},
		// A fresh choice applies at once.
		{30 * time.Second, by("g", RuleFresh), "", never, true},
	}
	ls := &leaderState{}
	for i, s := range steps {
		if got := n.displacementSettled(ls, s.d, s.seat, s.checkIn, t0.Add(s.at)); got != s.want {
			t.Errorf("step %d (%v, %s by %v, seat %s): got %v, want %v", i, s.at, s.d.Leader, s.d.Rule, s.seat, got, s.want)
		}
	}
}

// TestHandOverNeverTwoRedLeaders: when the seat of a live Red Leader
// moves (a member's job of higher priority displaces it; an admin mark
// vacates it), the old holder stops before the new one starts: at no
// moment do two nodes act as Red Leader. Without the lease fence the old
// holder learns of the move only at its next check-in or state update,
// while the appointee confirms at once.
func TestHandOverNeverTwoRedLeaders(t *testing.T) {
	t.Parallel()
	s := newTestSim(t, 4, nil)
	var overlaps atomic.Int64
	var overlapSeen atomic.Value
	acting := func(order []*simHost) []string {
		var on []string
		for _, h := range order {
			if h.node.IsRedLeader() {
				on = append(on, h.id)
			}
		}
		return on
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		rev := slices.Clone(s.hosts)
		slices.Reverse(rev)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			// Two scans in opposite orders: a real overlap shows in both,
			// a hand-over between two reads of one scan in one only.
			if a := acting(s.hosts); len(a) > 1 {
				if b := acting(rev); len(b) > 1 {
					overlaps.Add(1)
					overlapSeen.Store(fmt.Sprint(a, b))
				}
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()

	var first *simHost
	wait.For(t, 30*time.Second, "one agreed Red Leader", func() bool {
		first = redLeaderAmong(s.hosts)
		return first != nil
	})
	epoch := first.node.Status().Seat.Epoch
	prio := PriorityNormal
	cur := first
	for round := range 3 {
		next := s.hosts[(slices.Index(s.hosts, cur)+1)%len(s.hosts)]
		s.table.update(next.id, func(m *Member) { m.Priority = prio })
		wait.For(t, 30*time.Second, fmt.Sprintf("round %d: %s (priority %v) takes the seat from %s", round, next.id, prio, cur.id), func() bool {
			return redLeaderAmong(s.hosts) == next
		})
		cur, prio = next, prio+1
	}
	// A new Raft leader, then at once an admin mark that vacates the seat
	// of the live holder: the lease the previous Raft leader granted is
	// fenced as well.
	var raftLeader *simHost
	wait.For(t, 30*time.Second, "a Raft leader with its duties and 3 voters", func() bool {
		raftLeader = nil
		for _, h := range s.hosts {
			if h.node.leading() {
				raftLeader = h
			}
		}
		return raftLeader != nil && raftLeader.node.Status().Raft.Voters >= 3
	})
	if err := raftLeader.node.raftNode().raft.LeadershipTransfer().Error(); err != nil {
		t.Fatalf("leadership transfer: %v", err)
	}
	wait.For(t, 30*time.Second, "another Raft leader with its duties", func() bool {
		for _, h := range s.hosts {
			if h != raftLeader && h.node.leading() {
				return true
			}
		}
		return false
	})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := s.hosts[0].node.Apply(ctx, NewMarkCommand(uuid.NewString(), time.Now(), cur.id, MarkAdmin, 0, "test hand-over")); err != nil {
		t.Fatalf("admin mark: %v", err)
	}
	wait.For(t, 30*time.Second, "another node takes the seat after the mark", func() bool {
		h := redLeaderAmong(s.hosts)
		return h != nil && h != cur
	})
	if got := redLeaderAmong(s.hosts).node.Status().Seat.Epoch; got < epoch+4 {
		t.Errorf("seat epoch %d → %d, want 4 moves at least", epoch, got)
	}
	if n := overlaps.Load(); n > 0 {
		t.Errorf("%d samples with two nodes acting as Red Leader (last: %v)", n, overlapSeen.Load())
	}
}

// TestFalseRevokeDoesNotLast: a notify naming another node at a newer
// epoch (what fenceLease sends the old holder) stops the Red Leader at
// once, but a false one (a host that only claims to lead the cluster may
// send it to a member) lasts only until the node's next check-in: the
// Raft leader says the seat is still its own, and the role resumes at the
// same epoch.
func TestFalseRevokeDoesNotLast(t *testing.T) {
	t.Parallel()
	s := newTestSim(t, 3, nil)
	var rl *simHost
	wait.For(t, 30*time.Second, "one agreed Red Leader", func() bool {
		rl = redLeaderAmong(s.hosts)
		return rl != nil
	})
	epoch := rl.node.Status().Seat.Epoch
	// revoke's own check-in may give the role back at once: look under
	// the lock, then start that check-in.
	rl.node.mu.Lock()
	rl.node.revokeLocked(epoch+1<<40, time.Now())
	held := rl.node.red.held
	rl.node.mu.Unlock()
	if held {
		t.Fatal("the Red Leader still acts after a revoke")
	}
	rl.node.kickCheckin()
	wait.For(t, 5*time.Second, "the role back after the next check-in", rl.node.IsRedLeader)
	if got := rl.node.Status().Seat.Epoch; got != epoch {
		t.Errorf("seat epoch %d → %d, want unchanged", epoch, got)
	}
}
