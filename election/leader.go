package election

import (
	"context"
	"fmt"
	"maps"
	"net"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"

	"github.com/redleader-p2p/redleader/internal/connrefused"
)

// leaderState is what the Raft leader keeps in memory only. A new leader
// starts it afresh: every check-in clock restarts, so losing the Raft
// leader never displaces a healthy Red Leader.
type leaderState struct {
	cluster     string
	gen         uint64                // the raftNode's leadership generation it was established for
	since       time.Time             // established at
	checkIns    map[string]time.Time  // node -> last check-in received
	inputs      map[string]rankInputs // node -> ranking inputs of its last check-in (under n.mu)
	lastSeen    map[string]time.Time  // configured servers -> last seen alive
	standbySeen map[string]time.Time  // standby -> first seen in the configuration
	lastPlan    time.Time
	// The seat's peer-port probe (probeSeat), under n.mu.
	probing bool                 // a probe is in flight
	refused map[string]time.Time // node -> when a probe of its peer port was refused
	// seatHost is the host of the seat's peer-port address, and seatClosed
	// when an RPC connection from it last closed (rpcConnClosed).
	seatHost   string
	seatClosed time.Time
	// lastHandOff is when this leader last tried to hand Raft leadership
	// away because it holds the Red Leader seat too (separateRoles).
	lastHandOff time.Time
	// aheadNode has won a displacement of the seat by aheadRule since
	// aheadSince (displacementSettled: a displacement must hold).
	aheadNode  string
	aheadRule  Rule
	aheadSince time.Time
	// grant is the last lease this leader granted (a check-in it answered
	// with the caller's seat), under n.mu: fenceLease fences the next
	// holder's lease against it.
	grant grant
}

// grant is a lease granted by a check-in reply: node's seat at epoch,
// from at (when the check-in was received; the holder counts its lease
// from the earlier moment it sent it, so it ends by at + CheckinTimeout).
type grant struct {
	node  string
	epoch uint64
	at    time.Time
}

// The Raft leader's duties (ranking and appointment, check-in clocks, voter
// reconcile) follow Raft's leadership: syncLeadership, on the main loop,
// establishes them once per gain and revokes them once per loss, as told
// by Raft's leadership notifications (raftNode.leadership). Everything
// that starts or ends them holds n.life, so the pairs never interleave.

// syncLeadership revokes the leader duties if Raft's leadership ended (or
// ended and began again) since they were established, and establishes them
// if Raft leads now. It returns their state, nil when not leading.
func (n *Node) syncLeadership(r *raftNode) *leaderState {
	leading, gen := r.leadership()
	n.mu.Lock()
	ls := n.lead
	n.mu.Unlock()
	if ls != nil && (!leading || ls.gen != gen) {
		n.revokeLeadership("raft leadership lost")
		ls = nil
	}
	if ls == nil && leading {
		ls = n.establishLeadership(r, gen)
	}
	return ls
}

// establishLeadership starts the leader duties: a barrier first, so that
// the FSM holds every committed entry before the leader acts on it, then a
// fresh in-memory state. On failure it returns nil; the next tick retries
// while Raft still leads.
func (n *Node) establishLeadership(r *raftNode, gen uint64) *leaderState {
	if err := r.raft.Barrier(5 * time.Second).Error(); err != nil {
		n.log.Warn("raft leadership not established yet: barrier failed", "cluster", r.clusterID, "err", err)
		return nil
	}
	ls := &leaderState{cluster: r.clusterID, gen: gen, since: time.Now(), checkIns: map[string]time.Time{}, inputs: map[string]rankInputs{},
		lastSeen: map[string]time.Time{}, standbySeen: map[string]time.Time{}, refused: map[string]time.Time{}}
	// A node that retired its seat just before this leader took over (the
	// retire of a Red Leader that also led Raft, committed before its
	// leadership transfer went through) stays out of the ranking too.
	var recent []Event
	st := r.fsm.State()
	for _, e := range st.Events {
		if e.Kind == EventRetire && e.Node != "" && time.Since(e.Time) < retiredFor {
			recent = append(recent, e)
		}
		// A seat vacated by a mark just before this leader took over: its
		// holder's lease may still run (fenceLease, below).
		if e.Kind == EventVacate && e.Node != "" && time.Since(e.Time) < 2*n.cfg.CheckinTimeout {
			ls.grant = grant{node: e.Node, epoch: e.Epoch, at: ls.since}
		}
	}
	// The previous leader may have granted the seat's holder a lease just
	// before it lost leadership: it runs until ls.since + CheckinTimeout at
	// the latest, so the next holder's lease is fenced against it as
	// against one of this leader's.
	if seat := st.RedLeader; seat.Node != "" {
		ls.grant = grant{node: seat.Node, epoch: seat.Epoch, at: ls.since}
	}
	n.mu.Lock()
	n.lead = ls
	for _, e := range recent {
		if n.retired == nil {
			n.retired = map[string]time.Time{}
		}
		n.retired[e.Node] = e.Time
	}
	n.mu.Unlock()
	n.log.Info("raft leadership established", "cluster", r.clusterID)
	return ls
}

// revokeLeadership ends the leader duties, if established: their state,
// check-in clocks included, is dropped.
func (n *Node) revokeLeadership(why string) {
	n.mu.Lock()
	ls := n.lead
	n.lead = nil
	n.mu.Unlock()
	if ls != nil {
		n.log.Info("raft leadership revoked", "cluster", ls.cluster, "why", why,
			"led_for", time.Since(ls.since).Round(time.Millisecond))
	}
}

// leaderTick is the Raft leader's periodic work: init, seat health,
// ranking, voter reconcile. Apply errors are logged; the next tick retries.
func (n *Node) leaderTick(r *raftNode, ls *leaderState, members []Member) {
	now := time.Now()
	st := r.fsm.summary()
	if !st.Initialized() {
		n.commitInit(r)
		return
	}
	n.reconcileAdminMode(r, st.Admin, now)
	n.checkSeat(r, ls, members, now)
	n.appointBest(r, ls, members, now)
	if n.separateRoles(r, ls, members, now) {
		return
	}
	if now.Sub(ls.lastPlan) >= time.Second {
		ls.lastPlan = now
		n.reconcileVoters(r, ls, members, now)
	}
}

// handOffSettle is how long a Raft leader that holds the Red Leader seat
// too waits, after it was established, before it hands Raft leadership to
// another voter, and between two attempts.
const handOffSettle = 2 * time.Second

// separateRoles hands Raft leadership to another caught-up voter when this
// node holds the confirmed Red Leader seat too, and reports whether it did.
// With the two roles on two machines, losing one machine costs either a
// Raft election or a Red Leader failover (a check-in timeout, or less when
// its port refuses connections), never both one after the other. A subnet
// with a single voter has no choice; a failed hand-off is retried after
// handOffSettle.
func (n *Node) separateRoles(r *raftNode, ls *leaderState, members []Member, now time.Time) bool {
	seat := r.fsm.summary().RedLeader
	if !n.cfg.SeparateRoles || seat.Node != n.cfg.Node || !seat.Confirmed() ||
		now.Sub(ls.since) < handOffSettle || now.Sub(ls.lastHandOff) < handOffSettle {
		return false
	}
	applied := r.fsm.index()
	heads := map[string]Member{}
	for _, m := range members {
		heads[m.Node] = m
	}
	var to raft.Server
	var best uint64
	for _, s := range r.configuration().Servers {
		m, ok := heads[string(s.ID)]
		if s.Suffrage != raft.Voter || string(s.ID) == n.cfg.Node || !ok || m.Status != StatusAlive ||
			m.Head.ClusterID != r.clusterID || m.Head.Index+250 < applied {
			continue
		}
		if to.ID == "" || m.Head.Index > best || (m.Head.Index == best && s.ID < to.ID) {
			to, best = s, m.Head.Index
		}
	}
	if to.ID == "" {
		return false
	}
	ls.lastHandOff = now
	n.log.Info("handing Raft leadership to another voter: this node is the Red Leader", "to", to.ID)
	if err := r.raft.LeadershipTransferToServer(to.ID, to.Address).Error(); err != nil {
		n.log.Warn("raft leadership hand-off failed", "to", to.ID, "err", err)
		return false
	}
	return true
}

// commitInit commits the new cluster's first command.
func (n *Node) commitInit(r *raftNode) {
	n.mu.Lock()
	carry := n.pendingInit
	n.mu.Unlock()
	secret, policy := randomSecret(), n.cfg.InitialPolicy
	var epoch uint64
	var marks []Mark
	if carry != nil && carry.Initialized() {
		secret, policy, epoch = carry.Secret, carry.Policy, carry.RedLeader.Epoch
		for _, m := range carry.Marks {
			if m.By == MarkAdmin {
				marks = append(marks, m)
			}
		}
	}
	if policy.Version == 0 {
		policy.Version = 1
	}
	mode := AdminUnset
	if carry != nil && carry.Initialized() {
		mode = carry.Admin // the cluster's lineage keeps its mode; reconcileAdminMode may tighten it
	}
	if mode == AdminUnset {
		mode, _ = n.wantAdminMode(AdminUnset)
	}
	cmd := NewInitCommand(uuid.NewString(), time.Now(), r.clusterID, secret, policy)
	cmd.Epoch, cmd.Marks, cmd.Mode = epoch, marks, mode
	if err := n.applyLocal(r, cmd); err != nil {
		n.log.Warn("init not committed", "err", err)
		return
	}
	n.mu.Lock()
	n.pendingInit = nil
	n.mu.Unlock()
}

// wantAdminMode is the admin mode this leader's configuration asks for,
// given the committed one, and whether it differs. A keyed leader records
// AdminKeyed (its Raft peers all hold the key). Without a key the mode
// only ever tightens: allow_open_admin counts only when the cluster
// records its first mode (creation, or a state from before the mode was
// recorded); a cluster that was keyed becomes AdminOpen; and a leader
// without allow_open_admin turns AdminOpenAdmin into AdminOpen. So an
// agent of an open cluster cannot open admin commands with its own config.
func (n *Node) wantAdminMode(cur AdminMode) (AdminMode, bool) {
	want := cur
	switch {
	case n.cfg.Keyed:
		want = AdminKeyed
	case !n.cfg.AllowOpenAdmin:
		want = AdminOpen
	case cur == AdminUnset:
		want = AdminOpenAdmin
	case cur == AdminKeyed:
		want = AdminOpen
	}
	return want, want != cur
}

// reconcileAdminMode commits the admin mode this leader's configuration
// asks for when it differs from the committed one (wantAdminMode).
func (n *Node) reconcileAdminMode(r *raftNode, cur AdminMode, now time.Time) {
	want, change := n.wantAdminMode(cur)
	if !change {
		return
	}
	why := map[AdminMode]string{
		AdminKeyed:     "the cluster runs with a cluster key: key holders may commit admin commands",
		AdminOpen:      "no cluster key: admin commands are refused",
		AdminOpenAdmin: "no cluster key, allow_open_admin: every LAN host may commit admin commands",
	}[want]
	if err := n.applyLocal(r, NewAdminModeCommand(uuid.NewString(), now, want, why)); err != nil {
		n.log.Warn("admin mode not committed", "mode", want, "err", err)
		return
	}
	n.log.Info("admin mode recorded", "mode", want, "was", cur)
}

// checkSeat vacates the seat of a Red Leader that died in gossip, never
// confirmed, or stopped checking in, with an automatic mark. One that
// left gracefully, or is leaving, only loses its seat (a retire): a
// rolling restart must not mark every agent.
func (n *Node) checkSeat(r *raftNode, ls *leaderState, members []Member, now time.Time) {
	seat := r.fsm.summary().RedLeader
	if seat.Node == "" {
		return
	}
	status, leaving, addr := StatusDead, false, ""
	for _, m := range members {
		if m.Node == seat.Node {
			status, leaving, addr = m.Status, m.Leaving, m.RaftAddr
		}
	}
	if status == StatusLeft || (status == StatusAlive && leaving) {
		why := "Red Leader left gracefully"
		if status == StatusAlive {
			why = "Red Leader is shutting down"
		}
		n.log.Info("vacating the Red Leader seat", "node", seat.Node, "epoch", seat.Epoch, "why", why)
		if err := n.applyLocal(r, NewRetireCommand(uuid.NewString(), now, seat.Node, seat.Epoch, why)); err != nil {
			n.log.Warn("retire not committed", "err", err)
		}
		return
	}
	host, _, _ := net.SplitHostPort(addr)
	n.mu.Lock()
	last := ls.checkIns[seat.Node]
	refused := ls.refused[seat.Node]
	if host != ls.seatHost {
		ls.seatHost, ls.seatClosed = host, time.Time{}
	}
	closed := ls.seatClosed
	g := ls.grant
	n.mu.Unlock()
	start := later(ls.since, seat.AppointedAt)
	confirmFrom := start // an appointee cannot confirm while fenceLease fences it
	if g.node != "" && g.node != seat.Node && g.epoch < seat.Epoch {
		confirmFrom = later(start, g.at.Add(n.cfg.CheckinTimeout))
	}
	var why string
	switch {
	case status != StatusAlive:
		why = "Red Leader is " + status.String() + " in gossip"
	case refused.After(later(start, last)):
		why = "no check-in and its peer port refuses connections: the agent is not running"
	case !seat.Confirmed() && now.Sub(confirmFrom) > n.cfg.ConfirmTimeout:
		why = fmt.Sprintf("no confirmation within %v", n.cfg.ConfirmTimeout)
	case seat.Confirmed() && now.Sub(later(start, last)) > n.cfg.CheckinTimeout:
		why = fmt.Sprintf("no check-in within %v", n.cfg.CheckinTimeout)
	default:
		// A renewal is on record only once its heartbeat round answered,
		// up to a pace after it arrived: late means later than that too.
		late := n.cfg.CheckinInterval*5/4 + n.paceInterval()
		if addr != "" && seat.Node != n.cfg.Node &&
			(last.IsZero() || closed.After(last) || now.Sub(last) > late) {
			n.probeSeat(ls, seat.Node, addr)
		}
		return
	}
	n.log.Warn("displacing the Red Leader", "node", seat.Node, "epoch", seat.Epoch, "why", why)
	if err := n.applyLocal(r, NewMarkCommand(uuid.NewString(), now, seat.Node, MarkAuto, n.cfg.NLMTTL, why)); err != nil {
		n.log.Warn("auto mark not committed", "err", err)
	}
}

// probeSeat dials the peer port of node, the Red Leader, whose check-in is
// late, not seen yet by this new Raft leader, or whose check-in connection
// just closed (rpcConnClosed), one probe at a time. A refused
// connection means no process listens there: the agent died (SIGKILL, a
// crash) and its lease is held by nobody, so checkSeat need not wait for
// the check-in timeout. Any other outcome (accepted, a timeout: a cut-off
// host) changes nothing; the lease rule then decides, as always.
func (n *Node) probeSeat(ls *leaderState, node, addr string) {
	n.mu.Lock()
	if ls.probing {
		n.mu.Unlock()
		return
	}
	ls.probing = true
	n.mu.Unlock()
	n.goLoop(func() {
		at := time.Now()
		refused := connrefused.Is(n.probe(addr, true, n.cfg.CheckinInterval))
		n.mu.Lock()
		ls.probing = false
		if refused {
			ls.refused[node] = at
		}
		n.mu.Unlock()
		if refused {
			n.log.Info("the Red Leader's peer port refuses connections", "node", node, "addr", addr)
			n.wake()
		}
	})
}

// probe dials addr's peer port (Raft or RPC channel) and hangs up: nil if
// something accepted the connection, else the dial's error (ECONNREFUSED:
// no process listens there).
func (n *Node) probe(addr string, rpc bool, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(n.ctx, timeout)
	defer cancel()
	c, err := n.tr.Dial(ctx, addr, rpc)
	if err == nil {
		c.Close()
	}
	return err
}

// rpcConnClosed notes that an RPC connection from remote closed. One from
// the Red Leader's host (its check-ins keep one open) makes the leader
// probe its peer port at once: the process may have died.
func (n *Node) rpcConnClosed(remote net.Addr) {
	host, _, err := net.SplitHostPort(remote.String())
	if err != nil {
		return
	}
	n.mu.Lock()
	ls := n.lead
	hit := ls != nil && ls.seatHost != "" && ls.seatHost == host
	if hit {
		ls.seatClosed = time.Now()
	}
	n.mu.Unlock()
	if hit {
		n.wake()
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// shownUptime bounds m's self-reported uptime by how long this node has
// seen it alive in gossip: a member cannot claim to have been up longer
// than anyone can tell (a rogue agent claiming years of uptime).
func shownUptime(m Member, now time.Time) time.Duration {
	if m.Status != StatusAlive || m.Since.IsZero() {
		return m.Uptime
	}
	return max(0, min(m.Uptime, now.Sub(m.Since)))
}

// candidates builds the ranking input from gossip and the committed marks.
// Uptime is bounded by what can be shown (shownUptime). Leaving is a
// member that says it is shutting down, or one that retired its seat (to
// stop) at the time retired gives and has not come back since (its alive
// Since is older).
func candidates(members []Member, st State, now time.Time, retired map[string]time.Time) []Candidate {
	out := make([]Candidate, 0, len(members))
	for _, m := range members {
		at, ok := retired[m.Node]
		out = append(out, Candidate{
			Node: m.Node, Alive: m.Status == StatusAlive, NotLeaderMaterial: m.NotLeaderMaterial,
			Leaving: m.Leaving || (ok && !m.Since.After(at)),
			Marked:  st.Marked(m.Node, now), Priority: m.Priority, Version: m.Version,
			Progress: m.Progress, Uptime: shownUptime(m, now),
		})
	}
	return out
}

// retiredFor is how long the Raft leader keeps a node that retired its
// seat out of the ranking: it is stopping, and its gossip may not say so
// yet (it publishes Leaving first, but gossip and the retire race).
const retiredFor = 15 * time.Second

// noteRetired records that node retired its seat through this node while
// it led Raft (its leader duties may not be established yet: the map is
// the Node's, not the leader state's).
func (n *Node) noteRetired(node string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.retired == nil {
		n.retired = map[string]time.Time{}
	}
	n.retired[node] = time.Now()
}

// appointBest applies the ranking rules and commits an appointment when
// they call for a (new) Red Leader. Another node's seat is ranked by the
// inputs of its last check-in to this leader, which are fresher than its
// gossip metadata; until that first check-in (a leader just established)
// the seat is not re-ranked: checkSeat still vacates a seat whose holder
// died or stopped checking in.
func (n *Node) appointBest(r *raftNode, ls *leaderState, members []Member, now time.Time) {
	st := r.fsm.summary()
	seat := st.RedLeader.Node
	n.mu.Lock()
	for node, at := range n.retired {
		if now.Sub(at) >= retiredFor {
			delete(n.retired, node)
		}
	}
	retired := maps.Clone(n.retired)
	in, reported := ls.inputs[seat]
	lastCheckIn := ls.checkIns[seat]
	n.mu.Unlock()
	cands := candidates(members, st, now, retired)
	if seat != "" && seat != n.cfg.Node {
		if lastCheckIn.IsZero() {
			return
		}
		for i := range cands {
			if cands[i].Node == seat && reported { // an older agent reports none: its gossip inputs stand
				cands[i].Priority, cands[i].Progress = in.Priority, in.Progress
			}
		}
	}
	d := Rank(seat, cands)
	if !n.displacementSettled(ls, d, seat, lastCheckIn, now) {
		return
	}
	switch {
	case d.Changed && d.Leader != "":
		cmd := NewAppointCommand(uuid.NewString(), now, d.Leader, st.RedLeader.Epoch+1, d.Reason)
		if err := n.applyLocal(r, cmd); err != nil {
			n.log.Warn("appointment not committed", "node", d.Leader, "err", err)
			return
		}
		n.log.Info("Red Leader appointed", "node", d.Leader, "epoch", st.RedLeader.Epoch+1, "reason", d.Reason)
		n.notifyAppointee(members, d.Leader, st.RedLeader.Epoch+1)
	case d.Leader == "" && st.RedLeader.Node != "":
		cmd := NewRetireCommand(uuid.NewString(), now, st.RedLeader.Node, st.RedLeader.Epoch, d.Reason)
		if err := n.applyLocal(r, cmd); err != nil {
			n.log.Warn("retire not committed", "err", err)
		}
	}
}

// displaceSettle is how long a displacement of a live Red Leader may wait
// for its settle condition (displacementSettled) at most.
func (n *Node) displaceSettle() time.Duration { return 2 * n.cfg.CheckinInterval }

// displacementSettled reports whether decision d may be committed now.
// Another node's seat is ranked by its last check-in (lastCheckIn), up to
// a check-in interval old, while a challenger's inputs can be fresher (this
// leader's own are live): when every agent starts the same download at
// once, the seat's job may simply not be reported yet. So a displacement
// of another node's seat, with the same winner and rule, must hold:
//   - by priority or version, until the seat has checked in since the
//     displacement first ranked (its inputs are then as fresh as the
//     challenger's), or for displaceSettle if it does not check in;
//   - by progress, for displaceSettle even when the seat is this node: at
//     the start of a download all progress grows fast, and a moment's lead
//     is noise. A member that really holds much more (a cached copy) keeps
//     its lead and takes the seat a little later.
//
// Every other rule (fresh choice, a seat gone or marked) applies at once.
func (n *Node) displacementSettled(ls *leaderState, d Decision, seat string, lastCheckIn, now time.Time) bool {
	byReport := d.Rule == RuleDisplacePriority || d.Rule == RuleDisplaceVersion
	hold := d.Changed && (d.Rule == RuleDisplaceProgress || byReport && seat != n.cfg.Node)
	if !hold {
		ls.aheadNode, ls.aheadSince = "", time.Time{}
		return true
	}
	if ls.aheadNode != d.Leader || ls.aheadRule != d.Rule {
		ls.aheadNode, ls.aheadRule, ls.aheadSince = d.Leader, d.Rule, now
	}
	if now.Sub(ls.aheadSince) >= n.displaceSettle() {
		return true
	}
	return byReport && lastCheckIn.After(ls.aheadSince)
}

// fenceLease fences the lease a check-in of node for epoch is about to be
// granted: the last lease this leader granted, to another node at an older
// epoch, must have ended, or the subnet would have two Red Leaders that
// both believe they hold the role (a displacement or an admin mark moves
// the seat of a live holder, which learns it only from its next check-in
// or its state). It has ended when its time is up (granted at + the
// check-in timeout), when the old holder answered a notify naming the new
// seat (it stops before answering), or when its peer port refuses
// connections (no process holds it). Otherwise fenceLease returns an error
// and the caller checks in again later.
func (n *Node) fenceLease(ctx context.Context, node string, epoch uint64) error {
	n.mu.Lock()
	ls := n.lead
	var g grant
	if ls != nil {
		g = ls.grant
	}
	n.mu.Unlock()
	until := g.at.Add(n.cfg.CheckinTimeout)
	if g.node == "" || g.node == node || g.epoch >= epoch || !time.Now().Before(until) {
		return nil
	}
	released := func() {
		n.mu.Lock()
		if ls.grant == g {
			ls.grant = grant{}
		}
		n.mu.Unlock()
	}
	if g.node == n.cfg.Node {
		n.revoke(epoch)
		released()
		return nil
	}
	var addr string
	for _, m := range n.mem.Members() {
		if m.Node == g.node {
			addr = m.RaftAddr
		}
	}
	if addr != "" {
		cctx, cancel := context.WithTimeout(ctx, min(time.Until(until), n.cfg.CheckinInterval/2))
		err := n.post(cctx, addr, "/rpc/notify", checkinRequest{Node: node, Epoch: epoch}, nil)
		cancel()
		if err == nil || connrefused.Is(err) {
			n.log.Info("previous Red Leader's lease ended", "node", g.node, "epoch", g.epoch, "next", node, "next_epoch", epoch)
			released()
			return nil
		}
	}
	if !time.Now().Before(until) {
		return nil
	}
	return fmt.Errorf("the previous Red Leader %s may hold its lease (epoch %d) for %v more", g.node, g.epoch, time.Until(until).Round(time.Millisecond))
}

// notifyAppointee tells the new Red Leader at once, so it need not wait for
// the state to reach it before confirming.
func (n *Node) notifyAppointee(members []Member, node string, epoch uint64) {
	if node == n.cfg.Node {
		n.noteHint(epoch)
		return
	}
	for _, m := range members {
		if m.Node == node && m.RaftAddr != "" {
			addr := m.RaftAddr
			n.goLoop(func() {
				ctx, cancel := context.WithTimeout(n.ctx, time.Second)
				defer cancel()
				_ = n.post(ctx, addr, "/rpc/notify", checkinRequest{Node: node, Epoch: epoch}, nil)
			})
		}
	}
}

// applyLocal commits cmd on this (leader) node.
func (n *Node) applyLocal(r *raftNode, cmd Command) error {
	b, err := EncodeCommand(cmd)
	if err != nil {
		return err
	}
	res, _, err := r.apply(b)
	if err != nil {
		return err
	}
	return res.Err
}

// reconcileVoters makes one voter-set change per round (PlanVoters).
func (n *Node) reconcileVoters(r *raftNode, ls *leaderState, members []Member, now time.Time) {
	conf, confIndex := r.configurationIndex()
	byNode := map[string]Member{}
	for _, m := range members {
		byNode[m.Node] = m
	}
	applied := r.fsm.index() // what members publish as their head (Head.Index)
	// Servers gossip no longer lists are reported dead since last seen.
	for _, s := range conf.Servers {
		id := string(s.ID)
		if m, ok := byNode[id]; ok {
			if m.Status == StatusAlive {
				ls.lastSeen[id] = now
			}
			continue
		}
		since := ls.lastSeen[id]
		if since.IsZero() {
			since = ls.since
		}
		members = append(members, Member{Node: id, RaftAddr: string(s.Address), Status: StatusDead, Since: since})
		if s.Suffrage == raft.Nonvoter {
			if _, ok := ls.standbySeen[id]; !ok {
				ls.standbySeen[id] = now
			}
		}
	}
	for _, s := range conf.Servers {
		if s.Suffrage == raft.Nonvoter {
			if _, ok := ls.standbySeen[string(s.ID)]; !ok {
				ls.standbySeen[string(s.ID)] = now
			}
		}
	}
	// Caught up by its own head, which nobody checks: a head beyond this
	// leader's state, or claiming to lead this cluster, is a lie.
	caughtUp := func(m Member) bool {
		seen, ok := ls.standbySeen[m.Node]
		return m.Status == StatusAlive && m.Head.ClusterID == r.clusterID && m.Head.Role != RoleLeader &&
			m.Head.Index+250 >= applied && m.Head.Index <= applied+250 && ok && now.Sub(seen) >= time.Second
	}
	ch := PlanVoters(conf, voterCandidates(members, caughtUp, now), VoterParams{
		Self: n.cfg.Node, Now: now, DeadVoterGrace: n.cfg.DeadVoterGrace, Stabilization: n.cfg.Stabilization,
	})
	if ch.Action == VoterNone {
		return
	}
	n.log.Info("voter change", "action", ch.Action, "node", ch.Node, "reason", ch.Reason)
	var f raft.IndexFuture
	id, addr := raft.ServerID(ch.Node), raft.ServerAddress(ch.Address)
	switch ch.Action {
	case VoterAddStandby:
		ctx, cancel := context.WithTimeout(n.ctx, 3*time.Second)
		err := n.post(ctx, ch.Address, "/rpc/prepare", prepareRequest{ClusterID: r.clusterID}, nil)
		cancel()
		if err != nil {
			n.log.Debug("prepare refused", "node", ch.Node, "err", err)
			return
		}
		f = r.raft.AddNonvoter(id, addr, confIndex, 5*time.Second)
	case VoterPromote:
		f = r.raft.AddVoter(id, addr, confIndex, 5*time.Second)
	case VoterRemove:
		f = r.raft.RemoveServer(id, confIndex, 5*time.Second)
		delete(ls.standbySeen, ch.Node)
	case VoterUpdateAddress:
		if ch.Voter {
			f = r.raft.AddVoter(id, addr, confIndex, 5*time.Second)
		} else {
			f = r.raft.AddNonvoter(id, addr, confIndex, 5*time.Second)
		}
	default:
		return
	}
	if err := f.Error(); err != nil {
		n.log.Warn("voter change failed", "action", ch.Action, "node", ch.Node, "err", err)
	}
}
