package election

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"

	"github.com/redleader-p2p/redleader/internal/sublisten"
	"github.com/redleader-p2p/redleader/internal/wait"
)

// Tests of issue #9's checks: the cluster RPC and the Raft channel answer
// only who plays the role it claims, admin commands follow the committed
// admin mode, and the election recovers when voters are alive but do not
// serve Raft.

// addHost adds a host to the sim's network: as a gossip member (with no
// Node: it plays whatever a test sends from it) when member is true, else
// as a stranger that only has an address.
func addHost(s *sim, i int, member bool) *simHost {
	h := newSimHost(s.net, i)
	s.net.mu.Lock()
	s.net.hosts[h.ip.String()] = h
	s.net.mu.Unlock()
	if member {
		s.table.add(Member{Node: h.id, RaftAddr: h.raftLn.Addr().String(), Status: StatusAlive, Since: time.Now().Add(-time.Hour),
			Version: 2, Uptime: time.Hour})
	}
	return h
}

// rpcFrom sends one cluster RPC from host from to host to and returns the
// status code and body.
func rpcFrom(t *testing.T, from, to *simHost, method, path string, body any) (int, string) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return simPeer{from}.Dial(ctx, addr, true)
		}}}
	req, err := http.NewRequest(method, "http://"+to.raftLn.Addr().String()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func encoded(t *testing.T, c Command) []byte {
	t.Helper()
	b, err := EncodeCommand(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// raftLeaderHost returns the host whose node leads Raft, or nil.
func raftLeaderHost(hosts []*simHost) *simHost {
	for _, h := range hosts {
		if r := h.node.raftNode(); r != nil && r.raft.State() == raft.Leader {
			return h
		}
	}
	return nil
}

// formed waits until the hosts agree on a confirmed Red Leader and Raft has
// 3 voters; it returns the Raft leader and the Red Leader.
func formed(t *testing.T, s *sim) (leader, red *simHost) {
	t.Helper()
	s.waitFor(t, 30*time.Second, "a Red Leader and 3 voters", func() bool {
		red, leader = redLeaderAmong(s.hosts), raftLeaderHost(s.hosts)
		return red != nil && leader != nil && leader.node.Status().Raft.Voters == 3
	})
	return leader, red
}

// TestRPCChecks sends every kind of cluster RPC from callers that do not
// play the role they claim (a host that is no member, a member that is
// not the Raft leader, a member speaking for another node) and checks
// that each is refused, then that nothing they sent changed the committed
// state or any node's seat.
func TestRPCChecks(t *testing.T) {
	t.Parallel()
	s := newTestSim(t, 3, nil)
	leader, red := formed(t, s)
	var follower, other *simHost
	for _, h := range s.hosts {
		if h != leader && follower == nil {
			follower = h
		}
		if h != red && other == nil {
			other = h
		}
	}
	rogue := addHost(s, 200, true)     // a gossip member with no Node
	stranger := addHost(s, 201, false) // not a member
	before := leader.node.State()
	cluster, seat := before.ClusterID, before.RedLeader
	const huge = math.MaxUint64
	bogus := uuid.NewString()

	tests := []struct {
		name       string
		from, to   *simHost
		method     string
		path       string
		body       any
		before     func() // sets up the case (gossip)
		want       int
		wantInBody string
	}{
		{name: "state from a stranger", from: stranger, to: follower, method: "GET", path: "/rpc/state", want: 403, wantInBody: "not a member"},
		{name: "state from a member", from: rogue, to: follower, method: "GET", path: "/rpc/state", want: 200},
		{name: "policy from a stranger", from: stranger, to: leader, method: "POST", path: "/rpc/apply",
			body: encoded(t, NewSetPolicyCommand("p1", time.Now(), Policy{PeerRate: "1kbit"}, 0)), want: 403, wantInBody: "not a member"},
		{name: "admin mark from a stranger", from: stranger, to: leader, method: "POST", path: "/rpc/apply",
			body: encoded(t, NewMarkCommand("m1", time.Now(), red.id, MarkAdmin, 0, "x")), want: 403},
		{name: "appointment from a member", from: rogue, to: leader, method: "POST", path: "/rpc/apply",
			body: encoded(t, NewAppointCommand("a1", time.Now(), rogue.id, seat.Epoch+1, "me")), want: 403, wantInBody: "commits appoint"},
		{name: "confirm from the seat holder", from: red, to: leader, method: "POST", path: "/rpc/apply",
			body: encoded(t, NewConfirmCommand("c1", time.Now(), red.id, seat.Epoch)), want: 403},
		{name: "init from a member", from: rogue, to: leader, method: "POST", path: "/rpc/apply",
			body: encoded(t, NewInitCommand("i1", time.Now(), bogus, testSecret(), Policy{})), want: 403},
		{name: "auto mark from a member", from: rogue, to: leader, method: "POST", path: "/rpc/apply",
			body: encoded(t, NewMarkCommand("m2", time.Now(), red.id, MarkAuto, time.Hour, "x")), want: 403, wantInBody: "auto marks"},
		{name: "note from a member", from: rogue, to: leader, method: "POST", path: "/rpc/apply",
			body: encoded(t, NewNoteCommand("n1", time.Now(), "", SeverityError, "spam")), want: 403},
		{name: "retire of another node's seat", from: rogue, to: leader, method: "POST", path: "/rpc/apply",
			body: encoded(t, NewRetireCommand("r1", time.Now(), red.id, seat.Epoch, "bye")), want: 403, wantInBody: "own seat"},
		{name: "admin command from a member, keyed", from: rogue, to: leader, method: "POST", path: "/rpc/apply",
			body: encoded(t, NewUnmarkCommand("u1", time.Now(), "nobody", "x")), want: 200},
		{name: "apply sent to a follower", from: rogue, to: follower, method: "POST", path: "/rpc/apply",
			body: encoded(t, NewUnmarkCommand("u2", time.Now(), "nobody", "x")), want: 503, wantInBody: "not the raft leader"},
		{name: "check-in for another node", from: rogue, to: leader, method: "POST", path: "/rpc/checkin",
			body: checkinRequest{Node: red.id, Epoch: seat.Epoch}, want: 403, wantInBody: "own node"},
		{name: "check-in from a stranger", from: stranger, to: leader, method: "POST", path: "/rpc/checkin",
			body: checkinRequest{Node: stranger.id, Epoch: seat.Epoch}, want: 403},
		{name: "check-in sent to a follower", from: red, to: follower, method: "POST", path: "/rpc/checkin",
			body: checkinRequest{Node: red.id, Epoch: seat.Epoch}, want: 503},
		{name: "notify from a member that does not lead", from: rogue, to: other, method: "POST", path: "/rpc/notify",
			body: checkinRequest{Node: other.id, Epoch: huge}, want: 403, wantInBody: "Raft leader"},
		{name: "notify from a stranger", from: stranger, to: other, method: "POST", path: "/rpc/notify",
			body: checkinRequest{Node: other.id, Epoch: huge}, want: 403},
		{name: "notify claiming to lead in gossip, Raft knows better", from: rogue, to: other, method: "POST", path: "/rpc/notify",
			body:   checkinRequest{Node: other.id, Epoch: huge},
			before: func() { s.table.setHead(rogue.id, Head{ClusterID: cluster, Index: huge, Role: RoleLeader}) },
			want:   403},
		{name: "prepare from a member that does not lead", from: stranger, to: follower, method: "POST", path: "/rpc/prepare",
			body: prepareRequest{ClusterID: cluster}, want: 403},
		{name: "prepare for a bogus cluster by its self-declared leader", from: rogue, to: follower, method: "POST", path: "/rpc/prepare",
			body:   prepareRequest{ClusterID: bogus},
			before: func() { s.table.setHead(rogue.id, Head{ClusterID: bogus, Index: huge, Role: RoleLeader}) },
			want:   403, wantInBody: "not the best cluster"},
		{name: "prepare for the cluster by a member claiming to lead it", from: rogue, to: follower, method: "POST", path: "/rpc/prepare",
			body:   prepareRequest{ClusterID: bogus},
			before: func() { s.table.setHead(rogue.id, Head{ClusterID: cluster, Role: RoleLeader}) },
			want:   403, wantInBody: "Raft leader of cluster"},
		{name: "prepare for this cluster by a member claiming to lead it, Raft knows better", from: rogue, to: follower,
			method: "POST", path: "/rpc/prepare", body: prepareRequest{ClusterID: cluster}, want: 403, wantInBody: "Raft knows another"},
		// The real Raft leader may notify, but only as a hint: the seat
		// does not move (checked below).
		{name: "notify with a huge epoch from the Raft leader", from: leader, to: other, method: "POST", path: "/rpc/notify",
			body: checkinRequest{Node: other.id, Epoch: huge}, want: 200},
	}
	for _, tt := range tests {
		if tt.before != nil {
			tt.before()
		}
		code, body := rpcFrom(t, tt.from, tt.to, tt.method, tt.path, tt.body)
		if code != tt.want || !strings.Contains(body, tt.wantInBody) {
			t.Errorf("%s: HTTP %d %q, want %d with %q", tt.name, code, strings.TrimSpace(body), tt.want, tt.wantInBody)
		}
	}
	s.table.setHead(rogue.id, Head{})

	// Nothing moved: same cluster, 3 voters, policy, marks; every node
	// still sees the committed seat (no huge epoch anywhere).
	time.Sleep(3 * testConfig().CheckinInterval)
	s.waitFor(t, 10*time.Second, "one agreed Red Leader", func() bool { return redLeaderAmong(s.hosts) != nil })
	after := leader.node.State()
	if after.ClusterID != cluster || !reflectEqualPolicy(after.Policy, before.Policy) || !slices.Equal(after.Marks, before.Marks) {
		t.Errorf("state changed: cluster %s→%s, policy %+v→%+v, marks %+v→%+v", cluster, after.ClusterID,
			before.Policy, after.Policy, before.Marks, after.Marks)
	}
	if after.RedLeader.Node != seat.Node || after.RedLeader.Epoch != seat.Epoch {
		t.Errorf("seat moved %s@%d → %s@%d", seat.Node, seat.Epoch, after.RedLeader.Node, after.RedLeader.Epoch)
	}
	for _, e := range after.Events[len(before.Events):] {
		if e.Kind != EventMarkExpired {
			t.Errorf("new event %+v", e)
		}
	}
	for _, h := range s.hosts {
		st := h.node.Status()
		if st.Seat.Epoch != seat.Epoch || h.node.seatSeen().Epoch != seat.Epoch || st.Raft.ClusterID != cluster || st.Raft.Voters != 3 {
			t.Errorf("%s: seat %s@%d (acting on epoch %d), cluster %s, %d voters", h.id[:8], st.Seat.Node, st.Seat.Epoch,
				h.node.seatSeen().Epoch, st.Raft.ClusterID, st.Raft.Voters)
		}
	}
}

func reflectEqualPolicy(a, b Policy) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// TestRaftRefusesStrangers: a RequestVote with a huge term (claiming a
// voter's ID, as a leadership transfer, which skips Raft's own leader
// check) from a host that is not a server of the configuration is closed
// before Raft reads it: no term moves, the leader stays.
func TestRaftRefusesStrangers(t *testing.T) {
	t.Parallel()
	s := newTestSim(t, 3, nil)
	leader, _ := formed(t, s)
	term := leader.node.Status().Raft.Term
	rogue := addHost(s, 200, true)
	s.table.setHead(rogue.id, Head{ClusterID: leader.node.State().ClusterID, Role: RoleStandby})
	stranger := addHost(s, 201, false)
	for _, from := range []*simHost{rogue, stranger} {
		layer := &streamLayer{Listener: sublisten.New(&net.TCPAddr{IP: from.ip, Port: simPeerPort}, 0, nil),
			addr: &net.TCPAddr{IP: from.ip, Port: simPeerPort}, dial: simPeer{from}.Dial}
		trans := raft.NewNetworkTransport(layer, 1, 2*time.Second, io.Discard)
		for _, to := range s.hosts {
			var resp raft.RequestVoteResponse
			err := trans.RequestVote(raft.ServerID(to.id), raft.ServerAddress(to.raftLn.Addr().String()), &raft.RequestVoteRequest{
				RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(s.hosts[0].id), Addr: []byte(from.raftLn.Addr().String())},
				Term:      1 << 40, LastLogIndex: 1 << 40, LastLogTerm: 1 << 40, LeadershipTransfer: true,
			}, &resp)
			if err == nil {
				t.Errorf("RequestVote from %s to %s answered: %+v", from.ip, to.ip, resp)
			}
		}
		trans.Close()
	}
	time.Sleep(500 * time.Millisecond)
	for _, h := range s.hosts {
		if st := h.node.Status(); st.Raft.Term > term+1 || st.Raft.Term >= 1<<40 {
			t.Errorf("%s: term %d, was %d", h.id[:8], st.Raft.Term, term)
		}
	}
	if raftLeaderHost(s.hosts) != leader {
		t.Error("the Raft leader changed")
	}
}

// TestOpenClusterRefusesAdmin: without a key and allow_open_admin, the
// cluster records admin mode open and the FSM refuses admin commands
// wherever they come from (the leader itself, a follower through the
// RPC); allow_open_admin on one agent of an existing open cluster does
// not open it. With allow_open_admin everywhere at creation they pass.
func TestOpenClusterRefusesAdmin(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		allow func(i int) bool
		mode  AdminMode
	}{
		{"open", func(int) bool { return false }, AdminOpen},
		{"open-admin", func(int) bool { return true }, AdminOpenAdmin},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newTestSim(t, 3, func(_ *sim, h *simHost, c *Config) { c.Keyed, c.AllowOpenAdmin = false, tc.allow(h.i) })
			leader, red := formed(t, s)
			wait.For(t, 5*time.Second, "admin mode recorded", func() bool { return leader.node.State().Admin == tc.mode })
			var follower *simHost
			for _, h := range s.hosts {
				if h != leader {
					follower = h
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for _, h := range []*simHost{leader, follower} {
				before := h.node.State().Policy
				_, err := h.node.Apply(ctx, NewSetPolicyCommand(uuid.NewString(), time.Now(), Policy{PeerRate: "1kbit"}, 0))
				_, merr := h.node.Apply(ctx, NewMarkCommand(uuid.NewString(), time.Now(), red.id, MarkAdmin, 0, "x"))
				if tc.mode == AdminOpen {
					if !errors.Is(err, ErrAdminRefused) || !errors.Is(merr, ErrAdminRefused) {
						t.Errorf("policy and mark from the %s: %v, %v; want ErrAdminRefused", map[bool]string{true: "leader", false: "follower"}[h == leader], err, merr)
					}
					if p := h.node.State().Policy; p.Version != before.Version {
						t.Errorf("policy moved to version %d", p.Version)
					}
				} else if err != nil || merr != nil {
					t.Errorf("open-admin cluster refused: %v, %v", err, merr)
				}
			}
		})
	}
}

// TestWantAdminMode: the mode a leader records, from its configuration and
// the committed mode. Without a key the mode only tightens.
func TestWantAdminMode(t *testing.T) {
	tests := []struct {
		keyed, allow bool
		cur, want    AdminMode
	}{
		{true, false, AdminUnset, AdminKeyed},
		{true, true, AdminOpen, AdminKeyed},
		{true, false, AdminOpenAdmin, AdminKeyed},
		{false, false, AdminUnset, AdminOpen},
		{false, false, AdminKeyed, AdminOpen},
		{false, false, AdminOpenAdmin, AdminOpen},
		{false, true, AdminUnset, AdminOpenAdmin},
		{false, true, AdminOpen, AdminOpen}, // a rogue's allow_open_admin does not open an open cluster
		{false, true, AdminKeyed, AdminOpen},
		{false, true, AdminOpenAdmin, AdminOpenAdmin},
	}
	for _, tt := range tests {
		n := &Node{cfg: Config{Keyed: tt.keyed, AllowOpenAdmin: tt.allow}}
		got, change := n.wantAdminMode(tt.cur)
		if got != tt.want || change != (tt.want != tt.cur) {
			t.Errorf("keyed %v allow %v from %q: %q (change %v), want %q", tt.keyed, tt.allow, tt.cur, got, change, tt.want)
		}
	}
}

// TestShownUptime: the ranking's uptime is at most how long the member has
// been seen alive; a rogue claiming years does not outrank members seen
// longer.
func TestShownUptime(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name    string
		m       Member
		want    time.Duration
		wantMax time.Duration
	}{
		{"claim below the time seen", Member{Status: StatusAlive, Since: now.Add(-time.Hour), Uptime: time.Minute}, time.Minute, 0},
		{"claim above the time seen", Member{Status: StatusAlive, Since: now.Add(-time.Minute), Uptime: 24 * 365 * time.Hour}, time.Minute, 0},
		{"no record of when", Member{Status: StatusAlive, Uptime: time.Hour}, time.Hour, 0},
		{"dead: not ranked anyway", Member{Status: StatusDead, Since: now, Uptime: time.Hour}, time.Hour, 0},
	}
	for _, tt := range tests {
		if got := shownUptime(tt.m, now); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
	members := []Member{
		{Node: "honest", Status: StatusAlive, Since: now.Add(-time.Hour), Uptime: 2 * time.Hour, Version: 2},
		{Node: "rogue", Status: StatusAlive, Since: now.Add(-time.Minute), Uptime: 10 * 365 * 24 * time.Hour, Version: 2},
	}
	if d := Rank("", candidates(members, State{}, now, nil)); d.Leader != "honest" || d.Criterion != CriterionUptime {
		t.Errorf("ranking %+v, want honest first on uptime", d)
	}
	if got := voterCandidates(members, nil, now); got[1].Uptime != time.Minute {
		t.Errorf("voter plan uptime of the rogue %v, want 1m", got[1].Uptime)
	}
}

// TestBootstrapFallback: a member ranked first for bootstrapping (it
// claims the server class and years of uptime) that never bootstraps does
// not keep the subnet without a cluster: the next-ranked voter bootstraps
// one fallback step later.
func TestBootstrapFallback(t *testing.T) {
	t.Parallel()
	s := newSim(t, 3)
	s.table.delay = 50 * time.Millisecond
	rogue := addHost(s, 200, true)
	s.table.update(rogue.id, func(m *Member) { m.Class, m.Uptime = ClassServer, 10*365*24*time.Hour })
	start := time.Now()
	s.startWith(t, testConfig(), nil)
	s.waitFor(t, 30*time.Second, "a Red Leader", func() bool { return redLeaderAmong(s.hosts) != nil })
	took := time.Since(start)
	cfg := testConfig()
	if min := cfg.Settle + (&Node{cfg: cfg}).fallbackStep(); took < min-100*time.Millisecond {
		t.Errorf("a cluster after %v, before the first fallback step (%v): who bootstrapped?", took, min)
	}
	t.Logf("rogue ranked first: a Red Leader after %v", took.Round(time.Millisecond))
}

// restart closes h's Node and starts a new one on the same data dir with
// cfg (Node and DataDir set here); wipe runs in between.
func restart(t *testing.T, s *sim, h *simHost, cfg Config, wipe func(dir string)) {
	t.Helper()
	if err := h.node.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	cfg.Node, cfg.DataDir = h.id, filepath.Join(s.root, fmt.Sprint(h.i))
	if wipe != nil {
		wipe(cfg.DataDir)
	}
	h.rpcLn.Store(sublisten.New(&net.TCPAddr{IP: h.ip, Port: simPeerPort}, 64, nil))
	n, err := New(cfg, simView{s.table, h.id}, simPeer{h})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.node = n
}

// raftDBs returns the raft.db files under an election data dir.
func raftDBs(t *testing.T, dir string) []string {
	t.Helper()
	dbs, err := filepath.Glob(filepath.Join(dir, raftDirName, "*", "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	return dbs
}

// TestRecoveryVotersNotServing: voters alive in gossip but not serving
// Raft do not keep the subnet without a Red Leader past
// QuorumLossTimeout plus a few seconds (R1 and build 4 of issue #9).
func TestRecoveryVotersNotServing(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.QuorumLossTimeout = 2 * time.Second
	bound := cfg.QuorumLossTimeout + 8*time.Second
	t.Run("lone node with a 0-byte raft.db", func(t *testing.T) {
		t.Parallel()
		s := newSim(t, 1)
		s.table.delay = 50 * time.Millisecond
		s.startWith(t, cfg, nil)
		s.waitFor(t, 20*time.Second, "a Red Leader", func() bool { return redLeaderAmong(s.hosts) != nil })
		h := s.hosts[0]
		old := h.node.State().ClusterID
		start := time.Now()
		restart(t, s, h, cfg, func(dir string) {
			dbs := raftDBs(t, dir)
			if len(dbs) != 1 {
				t.Fatalf("raft.db files %v", dbs)
			}
			if err := os.Truncate(dbs[0], 0); err != nil {
				t.Fatal(err)
			}
		})
		s.waitFor(t, bound, "a Red Leader again", func() bool { return redLeaderAmong(s.hosts) != nil })
		took := time.Since(start)
		st := h.node.State()
		if st.ClusterID == old || st.Policy.PeerRate != cfg.InitialPolicy.PeerRate {
			t.Errorf("cluster %s (was %s), policy %+v", st.ClusterID, old, st.Policy)
		}
		t.Logf("0-byte raft.db: Red Leader again %v after the restart (quorum_loss_timeout %v)", took.Round(time.Millisecond), cfg.QuorumLossTimeout)
	})
	t.Run("two of three voters wiped", func(t *testing.T) {
		t.Parallel()
		s := newSim(t, 3)
		s.table.delay = 50 * time.Millisecond
		s.startWith(t, cfg, nil)
		leader, _ := formed(t, s)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := leader.node.Apply(ctx, NewSetPolicyCommand(uuid.NewString(), time.Now(), Policy{PeerRate: "3Mbit"}, 0)); err != nil {
			t.Fatal(err)
		}
		old := leader.node.State().ClusterID
		wiped := s.hosts[:2]
		start := time.Now()
		for _, h := range wiped {
			restart(t, s, h, cfg, func(dir string) {
				if err := os.RemoveAll(filepath.Join(dir, raftDirName)); err != nil {
					t.Fatal(err)
				}
			})
		}
		s.waitFor(t, bound+cfg.CheckinTimeout, "a Red Leader again", func() bool {
			return redLeaderAmong(s.hosts) != nil && s.hosts[0].node.Status().Raft.ClusterID != old
		})
		took := time.Since(start)
		for _, h := range s.hosts {
			if p := h.node.State().Policy; p.PeerRate != "3Mbit" {
				t.Errorf("%s: policy %+v after the re-bootstrap, want 3Mbit carried over", h.id[:8], p)
			}
		}
		t.Logf("2 of 3 voters wiped: Red Leader again %v after the wipes (quorum_loss_timeout %v)", took.Round(time.Millisecond), cfg.QuorumLossTimeout)
	})
}

// TestGracefulStopNoMark: the Red Leader stops gracefully (Close retires
// its seat, then gossip lists it as left). Another node is appointed, and
// the stopped one carries no automatic mark: it can lead again when it
// comes back. With and without the Leaving flag in gossip before the stop
// (the agent publishes it; the leader also keeps a node that just retired
// out of the ranking, for when gossip is slower than the retire).
func TestGracefulStopNoMark(t *testing.T) {
	t.Parallel()
	for _, flag := range []bool{true, false} {
		t.Run(map[bool]string{true: "leaving-flag", false: "no-flag"}[flag], func(t *testing.T) {
			t.Parallel()
			s := newTestSim(t, 3, nil)
			_, red := formed(t, s)
			epoch := red.node.Status().Seat.Epoch
			if flag {
				s.table.update(red.id, func(m *Member) { m.Leaving = true })
			}
			if err := red.node.Close(); err != nil {
				t.Fatal(err)
			}
			// The agent leaves gossip a moment after its election stopped.
			time.Sleep(300 * time.Millisecond)
			s.table.update(red.id, func(m *Member) { m.Status, m.Since = StatusLeft, time.Now() })
			rest := without(s.hosts, red)
			var next *simHost
			s.waitFor(t, 15*time.Second, "a new Red Leader", func() bool { next = redLeaderAmong(rest); return next != nil })
			time.Sleep(2 * testConfig().CheckinInterval)
			st := rest[0].node.State()
			if m, ok := st.Mark(red.id); ok {
				t.Errorf("stopped Red Leader marked: %+v", m)
			}
			for _, e := range st.Events {
				if e.Kind == EventAppoint && e.Node == red.id && e.Epoch > epoch {
					t.Errorf("the stopping Red Leader was appointed again: %+v", e)
				}
			}
		})
	}
}

func without(hosts []*simHost, drop *simHost) []*simHost {
	return slices.DeleteFunc(slices.Clone(hosts), func(h *simHost) bool { return h == drop })
}

// TestClustersIndexByMajority: the index members chase and the breakaway
// rule compares is the one a majority of a cluster's voter heads reached;
// a head claiming a huge index (or a cluster of its own) does not win.
func TestClustersIndexByMajority(t *testing.T) {
	head := func(node, cluster string, index uint64, role Role) Member {
		return Member{Node: node, RaftAddr: node + ":7381", Status: StatusAlive, Head: Head{ClusterID: cluster, Index: index, Role: role}}
	}
	tests := []struct {
		name      string
		members   []Member
		bestID    string
		bestIndex uint64
	}{
		{"one voter", []Member{head("a", "c1", 7, RoleLeader)}, "c1", 7},
		{"majority of three", []Member{head("a", "c1", 9, RoleLeader), head("b", "c1", 8, RoleVoter), head("c", "c1", 3, RoleVoter)}, "c1", 8},
		{"a rogue claiming 2^40 among three voters", []Member{head("a", "c1", 9, RoleLeader), head("b", "c1", 9, RoleVoter),
			head("c", "c1", 9, RoleVoter), head("rogue", "c1", 1<<40, RoleLeader)}, "c1", 9},
		{"a rogue beside a lone voter", []Member{head("a", "c1", 9, RoleLeader), head("rogue", "c1", 1<<40, RoleLeader)}, "c1", 9},
		{"standbys only", []Member{head("a", "c1", 4, RoleStandby), head("b", "c1", 6, RoleStandby)}, "c1", 6},
		{"a standby's index does not count beside voters", []Member{head("a", "c1", 4, RoleLeader), head("b", "c1", 1<<40, RoleStandby)}, "c1", 4},
		{"a rogue cluster of one voter loses to three", []Member{head("a", "c1", 9, RoleLeader), head("b", "c1", 9, RoleVoter),
			head("c", "c1", 9, RoleVoter), head("rogue", "c0", 1<<40, RoleLeader)}, "c1", 9},
	}
	for _, tt := range tests {
		cs := clusters(tt.members)
		if len(cs) == 0 || cs[0].id != tt.bestID || cs[0].index != tt.bestIndex {
			t.Errorf("%s: best %+v, want %s at index %d", tt.name, cs, tt.bestID, tt.bestIndex)
		}
	}
}
