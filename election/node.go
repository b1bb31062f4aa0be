package election

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"

	"github.com/redleader-p2p/redleader/internal/ratelog"
	"github.com/redleader-p2p/redleader/internal/tick"
)

// Runtime errors.
var (
	ErrNoLeader = errors.New("no Raft leader reachable")
	ErrStopped  = errors.New("election stopped")
)

// Role is a node's place in its subnet's Raft group, published in gossip.
type Role uint8

// Roles, from least to most involved.
const (
	RoleMember  Role = iota // gossip only; follows the state by pull
	RoleStandby             // Raft non-voter
	RoleVoter               // Raft voter
	RoleLeader              // the Raft leader
)

var roleNames = [...]string{"member", "standby", "voter", "leader"}

// String returns the role's name.
func (r Role) String() string {
	if int(r) < len(roleNames) {
		return roleNames[r]
	}
	return fmt.Sprintf("role(%d)", r)
}

// Head is what every agent publishes in gossip about the election state it
// holds: the "state head" members use to notice they are behind.
type Head struct {
	ClusterID string
	Index     uint64
	Role      Role
}

// Member is what the election needs to know about one gossip member.
type Member struct {
	Node     string
	RaftAddr string // host:port of its peer port (Raft and cluster RPC); its host is the member's advertised IP
	Status   MemberStatus
	Since    time.Time // alive since / dead or left since
	Head     Head
	// Leaving: the member is shutting down gracefully (it published so
	// before it hands over): it is never appointed, and losing it is no
	// failure.
	Leaving bool

	NotLeaderMaterial bool
	Priority          Priority
	Version           int
	Progress          uint64
	Uptime            time.Duration
	VoterOptOut       bool
	Class             MachineClass
}

// Membership is the agent's gossip pool as the election sees it.
type Membership interface {
	// Members lists every member the pool knows, this node included;
	// departed ones with StatusDead or StatusLeft.
	Members() []Member
	// SelfInputs is this node's own ranking inputs as they are now. Its
	// entry in Members may lag them (gossip takes a metadata update only
	// after the previous one went out); a check-in reports these, so that
	// a Red Leader whose job has just started is not displaced by a
	// challenger whose job started a moment earlier.
	SelfInputs() (Priority, uint64)
	// SetHead publishes this node's head in gossip.
	SetHead(Head)
}

// Transport reaches other agents' peer ports.
type Transport interface {
	// RaftListener returns a listener for one Raft instance's incoming
	// connections; closing it must not affect later instances.
	RaftListener() net.Listener
	// RPCListener accepts incoming cluster RPC connections; the Node
	// serves it until Close (it may close it).
	RPCListener() net.Listener
	// Advertise is this node's peer-port address as others dial it.
	Advertise() net.Addr
	// Dial opens a Raft (rpc=false) or RPC connection to addr.
	Dial(ctx context.Context, addr string, rpc bool) (net.Conn, error)
}

// Config is the election's runtime configuration.
type Config struct {
	Node    string // this node's ID
	DataDir string // the election's own directory (Raft state per cluster ID, cached state)
	// Voter false is `election.voter: never`: this node never joins Raft.
	Voter bool
	Class MachineClass

	// Raft timings, each times RaftMultiplier (1–10): HeartbeatTimeout =
	// ElectionTimeout = 3 s on a follower while a leader is known, 1 s
	// while none is or the leader's process was found dead, 5 s on the
	// leader (its heartbeat rounds every 500 ms carry its heartbeats);
	// LeaderLeaseTimeout = 1 s (heartbeat.go).
	RaftMultiplier int

	// SeparateRoles: a Raft leader holding the Red Leader seat too hands
	// Raft leadership to another voter (separateRoles).
	SeparateRoles     bool
	CheckinInterval   time.Duration // Red Leader check-in period
	CheckinTimeout    time.Duration // missed check-ins for this long: re-appoint; also the fencing lease
	ConfirmTimeout    time.Duration // an appointee must confirm within this
	NLMTTL            time.Duration // life of automatic NotLeaderMaterial marks
	DeadVoterGrace    time.Duration // a voter gone this long is replaced
	QuorumLossTimeout time.Duration // no Raft leader this long, voters gone: re-bootstrap
	Settle            time.Duration // wait after start before bootstrapping a new cluster
	Stabilization     time.Duration // alive this long before a member may become a standby/voter

	// InitialPolicy is committed by a bootstrapping node that has no cached state.
	InitialPolicy Policy

	// Keyed: the agent runs with a cluster key (gossip, Raft and the
	// cluster RPC need it). AllowOpenAdmin: allow_open_admin. Together
	// they give the admin mode the Raft leader records (reconcileAdminMode).
	Keyed          bool
	AllowOpenAdmin bool

	// Demand serves members' demands while this node acts as Red Leader
	// (POST /rpc/demand, catalog_rpc.go); nil: demands are answered 503.
	Demand DemandHandler

	Logger *slog.Logger
}

// Validate checks the configuration; errors name the field.
func (c Config) Validate() error {
	var errs []error
	if c.Node == "" {
		errs = append(errs, errors.New("election: Node is empty"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("election: DataDir is empty"))
	}
	if c.RaftMultiplier < 1 || c.RaftMultiplier > 10 {
		errs = append(errs, fmt.Errorf("election: RaftMultiplier %d not in 1-10", c.RaftMultiplier))
	}
	for name, d := range map[string]time.Duration{"CheckinInterval": c.CheckinInterval, "CheckinTimeout": c.CheckinTimeout,
		"ConfirmTimeout": c.ConfirmTimeout, "NLMTTL": c.NLMTTL, "DeadVoterGrace": c.DeadVoterGrace,
		"QuorumLossTimeout": c.QuorumLossTimeout} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("election: %s %v must be positive", name, d))
		}
	}
	if c.CheckinTimeout <= c.CheckinInterval {
		errs = append(errs, fmt.Errorf("election: CheckinTimeout %v must exceed CheckinInterval %v", c.CheckinTimeout, c.CheckinInterval))
	}
	return errors.Join(errs...)
}

// Node runs this agent's part in its subnet's election: a Raft instance
// while it is a voter or standby, the cluster RPC server, the leader duties
// while it leads, the Red Leader check-ins while it holds the seat, and the
// state pull while it is a member only. New → Start → Close.
type Node struct {
	cfg  Config
	mem  Membership
	tr   Transport
	log  *slog.Logger
	http *http.Client

	member *FSM // state of a members-only node (pulled); also the cache at start

	// life serializes what starts or stops a Raft instance (the main
	// loop's tick, a prepare RPC, Close), so that two never race.
	life sync.Mutex

	mu   sync.Mutex
	r    *raftNode    // nil unless in a Raft group
	lead *leaderState // non-nil while this node is the Raft leader
	// The seat as this node sees it (seatViewLocked): the committed seat
	// of its own state, or its own seat at a newer epoch that a check-in
	// reply confirmed before its state caught up (claim, for at most
	// CheckinTimeout). A notify only leaves a hint, which makes the node
	// check in: nothing a message claims outlives the committed state.
	seat      RedLeader // the committed seat, as last read from the state
	claim     RedLeader // this node's seat per a check-in reply, ahead of the state
	claimAt   time.Time
	hintEpoch uint64 // a notify from the Raft leader: check in for this epoch
	hintAt    time.Time
	// revokedEpoch: the Raft leader said, at revokedAt, that the seat is at
	// this epoch with another node (a notify naming it, fenceLease): no
	// seat of this node at this epoch or an older one is held (revokedLocked).
	revokedEpoch uint64
	revokedAt    time.Time
	lastCheckIn  time.Time     // send time of the last successful check-in
	checkedEpoch uint64        // the epoch lastCheckIn confirmed
	red          redRole       // the Red Leader role as this node plays it
	kick         chan struct{} // wakes the check-in loop
	wakeMain     chan struct{} // wakes the main loop (Raft leadership changed)
	lastHead     Head
	noLeader     time.Time // since when the Raft group has had no leader
	noCluster    time.Time // since when no cluster is alive in gossip (members only)
	started      time.Time
	// preparedBy is the Raft leader that prepared this node for its
	// cluster: its Raft connections are accepted before the first
	// configuration arrives (raftGuard).
	preparedBy  netip.Addr
	preparedFor string
	// retired: nodes that retired their seat through this node as Raft
	// leader, when; kept out of the ranking for retiredFor.
	retired     map[string]time.Time
	rlog        *ratelog.Logger // lines caused by what other hosts send
	demands     demandGate      // members' open demands while this node is Red Leader
	lastPull    time.Time
	cachedIndex uint64
	// pendingInit is the state a bootstrapping node carries into its new
	// cluster's init command (committed once it leads).
	pendingInit *State

	rpc    *http.Server
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New prepares a Node; nothing runs until Start.
func New(cfg Config, mem Membership, tr Transport) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("election dir: %w", err)
	}
	n := &Node{cfg: cfg, mem: mem, tr: tr, log: cfg.Logger, kick: make(chan struct{}, 1), wakeMain: make(chan struct{}, 1),
		rlog: ratelog.New(cfg.Logger, refusalLogEvery, 1)}
	n.member = NewFSM(FSMOptions{Logger: cfg.Logger})
	n.http = &http.Client{
		Timeout: 3 * time.Second,
		Transport: &http.Transport{
			DialContext:         func(ctx context.Context, _, addr string) (net.Conn, error) { return tr.Dial(ctx, addr, true) },
			MaxIdleConnsPerHost: 2,
			IdleConnTimeout:     30 * time.Second,
		},
	}
	if err := n.loadCache(); err != nil {
		n.log.Warn("ignoring unreadable cached election state", "err", err)
	}
	return n, nil
}

// Start opens the Raft state this node had (if any) and starts the loops.
func (n *Node) Start(ctx context.Context) error {
	n.ctx, n.cancel = context.WithCancel(ctx)
	n.started = time.Now()
	if id := n.currentCluster(); id != "" && n.cfg.Voter {
		if err := n.openRaft(id, false, nil); err != nil {
			n.log.Warn("cannot reopen Raft state; starting as a member", "cluster", id, "err", err)
		}
	}
	// Every phase of a cluster RPC connection is bounded (issue #9): the
	// request (bodies are small), the handler and its answer (an apply
	// waits up to 5 s for Raft), and the idle wait, which outlasts the
	// client's 30 s IdleConnTimeout so that the client always closes first.
	n.rpc = &http.Server{Handler: n.rpcHandler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second,
		// The Red Leader's check-ins keep one connection open to the Raft
		// leader: when its process dies, the kernel closes it at once.
		ConnState: func(c net.Conn, s http.ConnState) {
			if s == http.StateClosed {
				n.rpcConnClosed(c.RemoteAddr())
			}
		},
		// net/http's own lines (TLS handshake errors of strangers…) go
		// through the node's logger, at debug: JSON logs stay JSON.
		ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelDebug)}
	n.goLoop(func() {
		if err := n.rpc.Serve(n.tr.RPCListener()); err != nil && !errors.Is(err, http.ErrServerClosed) && n.ctx.Err() == nil {
			n.log.Error("cluster rpc stopped", "err", err)
		}
	})
	n.goLoop(n.mainLoop)
	n.goLoop(n.checkinLoop)
	return nil
}

// Close stops the Red Leader role (the watchers see false, then their
// channels close), hands over what this node holds (Red Leader seat, Raft
// leadership), then stops everything.
func (n *Node) Close() error {
	if n.cancel == nil {
		return nil
	}
	n.closeRedRole()
	n.handOver()
	n.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = n.rpc.Shutdown(ctx)
	cancel()
	n.wg.Wait()
	n.life.Lock()
	defer n.life.Unlock()
	n.revokeLeadership("stopping")
	n.mu.Lock()
	r := n.r
	n.r = nil
	n.mu.Unlock()
	var err error
	if r != nil {
		n.writeCache(r.fsm)
		err = r.shutdown()
	}
	n.http.CloseIdleConnections()
	return err
}

// handOver retires the Red Leader seat if this node holds it and transfers
// Raft leadership if it leads, so that a graceful stop costs no failover.
//
// Raft leadership goes first: the retire then reaches the next leader,
// which keeps the retiring node out of the ranking (appointBest) until
// gossip says it left. Retired by the old leader, the seat could go
// straight back to this node, still alive in gossip and ranked first, and
// its departure a moment later would cost it an automatic mark.
func (n *Node) handOver() {
	n.mu.Lock()
	r := n.r
	n.mu.Unlock()
	if r != nil && r.raft.State() == raft.Leader {
		if err := r.raft.LeadershipTransfer().Error(); err != nil {
			n.log.Debug("leadership transfer", "err", err)
		}
	}
	st := n.summary()
	if st.RedLeader.Node == n.cfg.Node {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := n.Apply(ctx, NewRetireCommand(uuid.NewString(), time.Now(), n.cfg.Node, st.RedLeader.Epoch, "Red Leader shutting down"))
		cancel()
		switch {
		case err == nil:
		case n.summary().RedLeader.Node != n.cfg.Node:
			// The Raft leader already vacated it (it saw this node leaving).
			n.log.Debug("Red Leader seat already vacated", "err", err)
		default:
			n.log.Warn("could not retire the Red Leader seat before stopping", "err", err)
		}
	}
}

func (n *Node) goLoop(f func()) {
	n.wg.Add(1)
	go func() { defer n.wg.Done(); f() }()
}

// State returns the newest election state this node holds.
func (n *Node) State() State { return n.source().State() }

// Policy is the committed policy: State().Policy without copying the event
// log and the dedup window (the agent polls it every second).
func (n *Node) Policy() Policy { return n.summary().Policy }

// Secret is the committed subnet content secret (nil before init), without
// copying the event log and the dedup window.
func (n *Node) Secret() []byte { return n.summary().Secret }

// summary is State without the event log and dedup window.
func (n *Node) summary() State { return n.source().summary() }

// source is the FSM holding the newest state: Raft's once it has one,
// else the pulled (or cached) member state.
func (n *Node) source() *FSM {
	n.mu.Lock()
	r := n.r
	n.mu.Unlock()
	if r != nil && (r.fsm.index() > 0 || n.member.index() == 0) {
		return r.fsm
	}
	return n.member
}

// mainLoop runs the periodic work: bootstrap or pull as a member; leader
// duties, breakaway and quorum checks in Raft; head publishing.
func (n *Node) mainLoop() {
	t := time.NewTimer(tick.Until(n.tickInterval(nil))) // nil: the first tick comes early
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		case <-n.wakeMain:
		}
		members := n.mem.Members()
		n.life.Lock()
		n.mu.Lock()
		r := n.r
		n.mu.Unlock()
		if r == nil {
			n.memberTick(members)
		} else {
			n.raftTick(r, members)
		}
		n.life.Unlock()
		n.publishHead()
		t.Reset(tick.Until(n.tickInterval(r)))
	}
}

// wake makes the main loop run now.
func (n *Node) wake() {
	select {
	case n.wakeMain <- struct{}{}:
	default:
	}
}

// tickInterval is the main loop's period: half a check-in interval as a
// member (it pulls the state a Red Leader change brings) and on the Raft
// leader (leases, probes, appointments); a Raft follower only watches
// timeouts of several seconds, so it ticks every check-in interval. The
// ticks fall on shared instants (package tick): an idle agent wakes for
// all its loops at once.
func (n *Node) tickInterval(r *raftNode) time.Duration {
	if r != nil {
		if leading, _ := r.leadership(); !leading {
			return max(n.cfg.CheckinInterval, 50*time.Millisecond)
		}
	}
	return max(n.cfg.CheckinInterval/2, 50*time.Millisecond)
}

// clusterView summarises one cluster ID seen in gossip.
type clusterView struct {
	id     string
	voters int
	index  uint64
	addrs  []string // raft members' addresses, leader first
	heads  []uint64 // the head index each of addrs publishes
}

// pullOrder lists where a member pulls the state from: the Raft members
// whose head shows the newest state, in random order, then the others.
// Taking the Raft leader first made every member of the subnet pull from
// it after each commit (1,000 pulls on one node in a second).
func (c clusterView) pullOrder() []string {
	var fresh, rest []string
	for i, a := range c.addrs {
		if c.heads[i] >= c.index {
			fresh = append(fresh, a)
		} else {
			rest = append(rest, a)
		}
	}
	mrand.Shuffle(len(fresh), func(i, j int) { fresh[i], fresh[j] = fresh[j], fresh[i] })
	return append(fresh, rest...)
}

// clusters groups the alive members that are in a Raft group by cluster ID,
// best first: more voters, then higher index, then lower ID (the
// deterministic breakaway rule). A cluster's index is the one a majority of
// the heads that say voter (or leader) have reached: one head claiming a
// huge index (a rogue) neither makes every member pull again and again
// nor wins the breakaway rule. With no voter head, the highest standby's.
func clusters(members []Member) []clusterView {
	by := map[string]*clusterView{}
	voterIdx := map[string][]uint64{}
	for _, m := range members {
		if m.Status != StatusAlive || m.Head.ClusterID == "" || m.Head.Role < RoleStandby {
			continue
		}
		c := by[m.Head.ClusterID]
		if c == nil {
			c = &clusterView{id: m.Head.ClusterID}
			by[m.Head.ClusterID] = c
		}
		if m.Head.Role >= RoleVoter {
			c.voters++
			voterIdx[c.id] = append(voterIdx[c.id], m.Head.Index)
		} else if len(voterIdx[c.id]) == 0 {
			c.index = max(c.index, m.Head.Index)
		}
		if m.Head.Role == RoleLeader {
			c.addrs = append([]string{m.RaftAddr}, c.addrs...)
			c.heads = append([]uint64{m.Head.Index}, c.heads...)
		} else {
			c.addrs = append(c.addrs, m.RaftAddr)
			c.heads = append(c.heads, m.Head.Index)
		}
	}
	out := make([]clusterView, 0, len(by))
	for id, c := range by {
		if idx := voterIdx[id]; len(idx) > 0 {
			slices.SortFunc(idx, func(a, b uint64) int { return cmp.Compare(b, a) })
			c.index = idx[len(idx)/2] // reached by a majority of the voter heads
		}
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b clusterView) int {
		switch {
		case a.voters != b.voters:
			return b.voters - a.voters
		case a.index != b.index:
			if a.index > b.index {
				return -1
			}
			return 1
		}
		return strings.Compare(a.id, b.id)
	})
	return out
}

// voterCandidates converts members for the voter plan. With a non-zero
// now, uptimes are bounded by what can be shown (shownUptime): the Raft
// leader's voter plan. The (re-)bootstrap choice keeps the published
// uptimes: every node must make it alike, and how long each has seen the
// others differs; a false claim there only delays the bootstrap by a
// fallback step.
func voterCandidates(members []Member, caughtUp func(Member) bool, now time.Time) []VoterCandidate {
	out := make([]VoterCandidate, 0, len(members))
	for _, m := range members {
		uptime := m.Uptime
		if !now.IsZero() {
			uptime = shownUptime(m, now)
		}
		out = append(out, VoterCandidate{Node: m.Node, Address: m.RaftAddr, Status: m.Status, Since: m.Since,
			Class: m.Class, OptOut: m.VoterOptOut, Uptime: uptime, CaughtUp: caughtUp != nil && caughtUp(m)})
	}
	return out
}

// memberTick: a node outside Raft bootstraps a new cluster if none is
// alive and it is the best voter, otherwise follows the best cluster.
// The best voter is chosen by what members publish, which nobody can
// check: should it never bootstrap (a rogue that claims the best machine
// class and uptime, or an agent that cannot open Raft), the next one does
// after fallbackStep, and so on (bootstrapDue).
func (n *Node) memberTick(members []Member) {
	now := time.Now()
	cs := clusters(members)
	if len(cs) == 0 {
		n.mu.Lock()
		if n.noCluster.IsZero() {
			n.noCluster = now
		}
		none := now.Sub(n.noCluster)
		n.mu.Unlock()
		if !n.cfg.Voter || now.Sub(n.started) < n.cfg.Settle {
			return
		}
		ranked := RankVoters(voterCandidates(onlyAlive(members), nil, time.Time{}))
		if pos := slices.Index(ranked, n.cfg.Node); pos >= 0 && none >= time.Duration(pos)*n.fallbackStep() {
			why := "no cluster alive on the subnet"
			if pos > 0 {
				why = fmt.Sprintf("%s; the %d better-ranked voter(s) did not bootstrap within %v", why, pos, none.Round(time.Millisecond))
			}
			n.bootstrap(why)
		}
		return
	}
	n.mu.Lock()
	n.noCluster = time.Time{}
	n.mu.Unlock()
	best := cs[0]
	st := n.member.summary()
	if st.ClusterID != best.id || st.Index < best.index {
		n.pull(best)
	}
}

// fallbackStep is how long the k-th best candidate waits, k times, for the
// better ones to bootstrap (or re-bootstrap) before it does so itself.
func (n *Node) fallbackStep() time.Duration { return 2*n.cfg.Settle + time.Second }

func onlyAlive(ms []Member) []Member {
	var out []Member
	for _, m := range ms {
		if m.Status == StatusAlive {
			out = append(out, m)
		}
	}
	return out
}

// bootstrap starts a new single-voter cluster, carrying over the durable
// settings of the last state this node saw (epoch, admin marks, policy,
// secret) so that a re-bootstrap after quorum loss keeps them.
func (n *Node) bootstrap(why string) {
	id := uuid.NewString()
	carry := n.State()
	n.log.Info("bootstrapping a new election cluster", "cluster", id, "why", why)
	if err := n.openRaft(id, true, &carry); err != nil {
		n.log.Error("bootstrap failed", "err", err)
	}
}

// raftTick: breakaway and quorum-loss checks, leader duties.
func (n *Node) raftTick(r *raftNode, members []Member) {
	now := time.Now()
	n.settleHeartbeat(r, now)
	leaderAddr, _ := r.raft.LeaderWithID()
	n.mu.Lock()
	if leaderAddr == "" {
		if n.noLeader.IsZero() {
			n.noLeader = now
		}
	} else {
		n.noLeader = time.Time{}
	}
	noLeaderFor := time.Duration(0)
	if !n.noLeader.IsZero() {
		noLeaderFor = now.Sub(n.noLeader)
	}
	n.mu.Unlock()

	// Breakaway: another cluster that beats ours is alive on the subnet.
	if cs := clusters(members); len(cs) > 0 && cs[0].id != r.clusterID && visible(cs, r.clusterID) {
		n.abandon(r, fmt.Sprintf("cluster %s wins over %s (more voters, newer state or lower ID)", cs[0].id, r.clusterID))
		return
	}
	// Removed from the configuration by the leader.
	if conf := r.configuration(); len(conf.Servers) > 0 && !inConfig(conf, n.cfg.Node) && leaderAddr != "" {
		n.abandon(r, "removed from the Raft configuration")
		return
	}
	// Prepared for this cluster but never added: its leader is alive but
	// did not replicate a configuration to us. Go back to following it as
	// a member (it prepares us again when it wants us).
	if noLeaderFor >= n.cfg.QuorumLossTimeout && len(r.configuration().Servers) == 0 && leaderAlive(members, r.clusterID, n.cfg.Node) {
		n.abandon(r, "prepared for the cluster but never added to its configuration")
		return
	}
	// Quorum lost for good: no leader for QuorumLossTimeout and most
	// voters gone (dead or left, or not serving this cluster by their own
	// heads: wiped, abandoned, an empty raft.db), or no voter at all. The
	// best of the nodes still in this cluster re-bootstraps; the k-th
	// best after k fallback steps, should the better ones not do it.
	if noLeaderFor >= n.cfg.QuorumLossTimeout {
		if gone, why := n.quorumGone(r, members); gone {
			pos := slices.Index(RankVoters(voterCandidates(servingCluster(members, r.clusterID, n.cfg.Node), nil, time.Time{})), n.cfg.Node)
			if pos >= 0 && noLeaderFor >= n.cfg.QuorumLossTimeout+time.Duration(pos)*n.fallbackStep() {
				carry := r.fsm.State()
				if !carry.Initialized() {
					// An empty or unreadable store: carry what this
					// node knew as a member (its cached state).
					carry = n.member.State()
				}
				n.abandon(r, "quorum lost for good: "+why)
				id := uuid.NewString()
				n.log.Warn("re-bootstrapping after quorum loss", "old_cluster", r.clusterID, "cluster", id, "why", why,
					"no_leader_for", noLeaderFor.Round(time.Millisecond))
				if err := n.openRaft(id, true, &carry); err != nil {
					n.log.Error("re-bootstrap failed", "err", err)
				}
			}
			return
		}
	}
	if ls := n.syncLeadership(r); ls != nil {
		n.leaderTick(r, ls, members)
	}
	n.maybeWriteCache(r.fsm)
}

// visible reports whether cluster id is among cs. A node never abandons
// its cluster before its own cluster shows in gossip (just bootstrapped or
// just joined): comparing against nothing would be a guess.
func visible(cs []clusterView, id string) bool {
	return slices.ContainsFunc(cs, func(c clusterView) bool { return c.id == id })
}

func inConfig(c raft.Configuration, node string) bool {
	for _, s := range c.Servers {
		if string(s.ID) == node {
			return true
		}
	}
	return false
}

// quorumGone reports whether this cluster's voters cannot make a quorum:
// a configuration with no voter (an empty or truncated raft.db), or a
// majority of voters gone. A voter is gone when gossip lists it dead or
// left (or not at all), or when its own published head says it does not
// serve this cluster: no cluster, another one, or role member (its Raft
// state was wiped, abandoned or unreadable). A voter alive with a head of
// this cluster serves, even if this node cannot reach its peer port.
func (n *Node) quorumGone(r *raftNode, members []Member) (bool, string) {
	byNode := make(map[string]Member, len(members))
	for _, m := range members {
		byNode[m.Node] = m
	}
	voters, gone := 0, 0
	for _, s := range r.configuration().Servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		id := string(s.ID)
		if id == n.cfg.Node {
			continue // this node runs Raft for the cluster
		}
		m, ok := byNode[id]
		if !ok || m.Status == StatusDead || m.Status == StatusLeft || !serves(m, r.clusterID) {
			gone++
		}
	}
	switch {
	case voters == 0:
		return true, "no voter in the Raft configuration (empty or unreadable Raft state)"
	case gone > voters/2:
		return true, fmt.Sprintf("%d of %d voters dead, gone or not serving the cluster", gone, voters)
	}
	return false, ""
}

// serves reports whether m's own head says it runs Raft for cluster id.
func serves(m Member, id string) bool {
	return m.Status == StatusAlive && m.Head.ClusterID == id && m.Head.Role >= RoleStandby
}

// leaderAlive reports whether another alive member publishes that it
// leads cluster id.
func leaderAlive(members []Member, id, self string) bool {
	return slices.ContainsFunc(members, func(m Member) bool {
		return m.Node != self && serves(m, id) && m.Head.Role == RoleLeader
	})
}

// servingCluster lists the alive members that run Raft for cluster id by
// their heads, and self: who may re-bootstrap it.
func servingCluster(members []Member, id, self string) []Member {
	var out []Member
	for _, m := range members {
		if m.Status == StatusAlive && (m.Node == self || serves(m, id)) {
			out = append(out, m)
		}
	}
	return out
}

// abandon leaves a Raft group: shuts it down and moves its state aside.
func (n *Node) abandon(r *raftNode, why string) {
	n.log.Warn("leaving Raft group", "cluster", r.clusterID, "why", why)
	n.revokeLeadership("leaving the Raft group")
	n.mu.Lock()
	if n.r == r {
		n.r = nil
	}
	n.mu.Unlock()
	carry := r.fsm.State()
	if err := r.shutdown(); err != nil {
		n.log.Debug("raft shutdown", "err", err)
	}
	if err := os.Rename(r.dir, r.dir+".old-"+time.Now().UTC().Format("20060102T150405")); err != nil {
		n.log.Warn("cannot move old Raft state aside", "err", err)
	}
	_ = os.Remove(filepath.Join(n.cfg.DataDir, currentFile))
	// Keep what we knew as a member until the winner's state is pulled.
	if carry.Initialized() {
		n.restoreMember(carry)
	}
}

// publishHead publishes this node's head in gossip when it changed.
func (n *Node) publishHead() {
	h := n.head()
	n.mu.Lock()
	changed := h != n.lastHead
	n.lastHead = h
	n.mu.Unlock()
	if changed {
		n.mem.SetHead(h)
	}
}

func (n *Node) head() Head {
	n.mu.Lock()
	r := n.r
	n.mu.Unlock()
	if r == nil {
		// No index: nobody reads a member's, and publishing it made every
		// member re-broadcast its metadata after each pull (one gossip
		// update per member per commit, ~1.4 MB per member on a 1,000-member
		// subnet). Only a change of cluster is published.
		st := n.member.summary()
		return Head{ClusterID: st.ClusterID, Role: RoleMember}
	}
	// The state's index, not Raft's applied index: configuration changes
	// and leader no-ops advance the latter but never reach the FSM, so a
	// member comparing its pulled state with it would pull forever.
	h := Head{ClusterID: r.clusterID, Index: r.fsm.index(), Role: RoleStandby}
	switch {
	case r.raft.State() == raft.Leader:
		h.Role = RoleLeader
	case r.isVoter(n.cfg.Node):
		h.Role = RoleVoter
	}
	return h
}

// randomSecret makes the subnet content secret.
func randomSecret() []byte {
	b := make([]byte, SecretSize)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return b
}
