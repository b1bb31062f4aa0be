package election

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/redleader-p2p/redleader/internal/tick"
)

// Cluster RPC: HTTP/1.1 over the peer port's RPC channel (mutual TLS when a
// cluster key is set). The only identity a caller has, key or no key, is its
// source address, so every request is checked against gossip and the
// committed state before it is served (issue #9):
//
//   - every path answers only alive gossip members, from their advertised
//     address (the host of Member.RaftAddr);
//   - /rpc/checkin only for the caller's own node, on the Raft leader
//     (nothing is forwarded: the Red Leader dials the leader itself);
//   - /rpc/apply only commands a non-leader may send: admin commands
//     (policy, admin marks, unmark; the committed admin mode decides) and a
//     retire of the caller's own seat. The Raft leader commits init,
//     appointments, confirmations, auto marks and notes itself. Nothing is
//     forwarded, so the leader sees the original caller;
//   - /rpc/notify only from the Raft leader as this node knows it: naming
//     this node, only a hint (it makes the node check in, the reply sets
//     the seat); naming another, it ends this node's lease (stopping is
//     always safe);
//   - /rpc/prepare only from the Raft leader of the cluster named (by its
//     head; by Raft when this node is in that cluster and Raft knows its
//     leader), and only for the best cluster in gossip (the one breakaway
//     would pick anyway).
//
// Refusals are 403s, logged at most once a minute per path.

const (
	maxRPCBody = 1 << 20
	// refusalLogEvery rate-limits the lines about refused requests and
	// Raft connections (they are caused by what other hosts send).
	refusalLogEvery = time.Minute
	// codeAdminRefused in an apply reply: the FSM refused an admin command
	// (ErrAdminRefused), so the caller can tell it from other errors.
	codeAdminRefused = "admin_refused"
)

type checkinRequest struct {
	Node  string `json:"node"`
	Epoch uint64 `json:"epoch"`
	// Inputs are the Red Leader's ranking inputs as it publishes them now:
	// the Raft leader ranks the incumbent by these, not by its gossip
	// metadata, which lags (a new Raft leader would otherwise displace it
	// by its own fresher progress). Absent from older agents.
	Inputs *rankInputs `json:"inputs,omitempty"`
}

// rankInputs are the ranking inputs a Red Leader reports in its check-ins.
type rankInputs struct {
	Priority Priority `json:"priority"`
	Progress uint64   `json:"progress"`
}

type checkinReply struct {
	Seat   RedLeader `json:"seat"`
	Policy Policy    `json:"policy"`
	Index  uint64    `json:"index"`
}

type prepareRequest struct {
	ClusterID string `json:"cluster_id"`
}

type applyReply struct {
	Duplicate bool   `json:"duplicate"`
	Skipped   bool   `json:"skipped"`
	Error     string `json:"error,omitempty"`
	Code      string `json:"code,omitempty"`  // codeAdminRefused
	Index     uint64 `json:"index,omitempty"` // Raft log index of the command
}

var (
	// errNotLeaderHere: this node cannot serve a leader-only request.
	errNotLeaderHere = errors.New("not the raft leader")
	// ErrRefused: the cluster RPC refused the request (the caller or the
	// command is not allowed); retrying elsewhere does not help.
	ErrRefused = errors.New("refused by the cluster RPC")
)

// remoteError is an error reported by another node, still matching the
// sentinel it wraps.
type remoteError struct {
	msg string
	is  error
}

func (e remoteError) Error() string { return e.msg }
func (e remoteError) Unwrap() error { return e.is }

func (n *Node) rpcHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /rpc/checkin", n.handleCheckin)
	mux.HandleFunc("POST /rpc/apply", n.handleApply)
	mux.HandleFunc("POST /rpc/prepare", n.handlePrepare)
	mux.HandleFunc("POST /rpc/notify", n.handleNotify)
	mux.HandleFunc("GET /rpc/state", n.handleState)
	mux.HandleFunc("GET /rpc/catalog", n.handleCatalog)
	mux.HandleFunc("POST /rpc/demand", n.handleDemand)
	return mux
}

// callerIP is the source address of req.
func callerIP(req *http.Request) netip.Addr { return addrIP(req.RemoteAddr) }

// addrIP is the IP of a host:port address (invalid if it is none).
func addrIP(addr string) netip.Addr {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap().WithZone("")
}

// membersAt returns the alive members that advertise ip.
func membersAt(members []Member, ip netip.Addr) []Member {
	if !ip.IsValid() {
		return nil
	}
	var out []Member
	for _, m := range members {
		if m.Status == StatusAlive && addrIP(m.RaftAddr) == ip {
			out = append(out, m)
		}
	}
	return out
}

// isNode reports whether node is among ms.
func isNode(ms []Member, node string) bool {
	return slices.ContainsFunc(ms, func(m Member) bool { return m.Node == node })
}

// leadsCluster reports whether a member at ip publishes that it leads
// cluster id.
func leadsCluster(members []Member, ip netip.Addr, id string) bool {
	return id != "" && slices.ContainsFunc(membersAt(members, ip), func(m Member) bool {
		return m.Head.ClusterID == id && m.Head.Role == RoleLeader
	})
}

// fromRaftLeader reports whether ip is the Raft leader as this node knows
// it: Raft's leader while this node is in Raft and Raft knows one, else
// the member whose head says it leads this node's cluster (for a member,
// also the best cluster's, whose state it is about to pull).
func (n *Node) fromRaftLeader(ip netip.Addr, members []Member) bool {
	if r := n.raftNode(); r != nil {
		if addr, _ := r.raft.LeaderWithID(); addr != "" {
			return addrIP(string(addr)) == ip
		}
		return leadsCluster(members, ip, r.clusterID)
	}
	if leadsCluster(members, ip, n.member.summary().ClusterID) {
		return true
	}
	cs := clusters(members)
	return len(cs) > 0 && leadsCluster(members, ip, cs[0].id)
}

// refuse answers 403 with why, and logs it (rate-limited per path).
func (n *Node) refuse(w http.ResponseWriter, req *http.Request, why string) {
	n.rlog.Warn("refused "+req.URL.Path, "cluster rpc: request refused", "path", req.URL.Path, "remote", req.RemoteAddr, "why", why)
	http.Error(w, "refused: "+why, http.StatusForbidden)
}

// handleCheckin records a Red Leader's check-in on the Raft leader; the
// first check-in of an epoch is the appointee's confirmation.
func (n *Node) handleCheckin(w http.ResponseWriter, req *http.Request) {
	// The check-in counts from its arrival, not from after the leadership
	// check (a renewal waits for the next heartbeat round, up to 500 ms)
	// and the fence below: its ranking inputs are as old as that (a
	// displacement waits for inputs fresher than its own start,
	// displacementSettled), and the lease the reply grants ends no later
	// than arrival + CheckinTimeout (the holder counts from its send).
	received := time.Now()
	var in checkinRequest
	body, err := io.ReadAll(io.LimitReader(req.Body, maxRPCBody))
	if err != nil || json.Unmarshal(body, &in) != nil {
		http.Error(w, "bad check-in", http.StatusBadRequest)
		return
	}
	if !isNode(membersAt(n.mem.Members(), callerIP(req)), in.Node) {
		n.refuse(w, req, "a check-in only for the caller's own node (not "+in.Node+"'s advertised address)")
		return
	}
	r := n.raftNode()
	if r == nil || r.raft.State() != raft.Leader {
		http.Error(w, errNotLeaderHere.Error(), http.StatusServiceUnavailable)
		return
	}
	// A deposed leader that has not noticed yet must not accept check-ins.
	// A renewal waits for the next heartbeat round; a confirmation (the
	// first check-in of an epoch: a failover in progress) verifies at once.
	st := r.fsm.summary()
	renewal := st.RedLeader.Node == in.Node && st.RedLeader.Epoch == in.Epoch && st.RedLeader.Confirmed()
	if err := n.verifyLeader(req.Context(), r, !renewal); err != nil {
		http.Error(w, "leadership not verified", http.StatusServiceUnavailable)
		return
	}
	st = r.fsm.summary()
	if st.RedLeader.Node == in.Node && st.RedLeader.Epoch == in.Epoch {
		if err := n.fenceLease(req.Context(), in.Node, in.Epoch); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		n.mu.Lock()
		if n.lead != nil {
			// Never before this leadership's start: the grant put on record
			// there covers a lease the previous leader may have granted.
			at := later(received, n.lead.since)
			n.lead.checkIns[in.Node] = at
			n.lead.grant = grant{node: in.Node, epoch: in.Epoch, at: at}
			if in.Inputs != nil {
				n.lead.inputs[in.Node] = *in.Inputs
			}
		}
		n.mu.Unlock()
		if !st.RedLeader.Confirmed() {
			if err := n.applyLocal(r, NewConfirmCommand(fmt.Sprintf("confirm-%s-%d", in.Node, in.Epoch), time.Now(), in.Node, in.Epoch)); err != nil {
				http.Error(w, "confirm: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
			st = r.fsm.summary()
		}
	}
	writeRPC(w, checkinReply{Seat: st.RedLeader, Policy: st.Policy, Index: st.Index})
}

// handleNotify: the Raft leader tells where the seat is. Naming this node,
// it just appointed it: only a hint, the node checks in for the epoch, and
// only the reply of the Raft leader (matching the committed seat) sets its
// seat and starts the lease. Naming another node, it is about to grant
// that node the lease (fenceLease): this node stops acting on any older
// seat of its own before it answers.
func (n *Node) handleNotify(w http.ResponseWriter, req *http.Request) {
	var in checkinRequest
	if err := json.NewDecoder(io.LimitReader(req.Body, maxRPCBody)).Decode(&in); err != nil || in.Node == "" || in.Epoch == 0 {
		http.Error(w, "bad notify", http.StatusBadRequest)
		return
	}
	if !n.fromRaftLeader(callerIP(req), n.mem.Members()) {
		n.refuse(w, req, "a notify only from the Raft leader")
		return
	}
	if in.Node == n.cfg.Node {
		n.noteHint(in.Epoch)
	} else {
		n.revoke(in.Epoch)
	}
	writeRPC(w, struct{}{})
}

// handleApply commits a command sent by a member that is not the Raft
// leader: only the kinds such a member may send (applyRefusal).
func (n *Node) handleApply(w http.ResponseWriter, req *http.Request) {
	at := membersAt(n.mem.Members(), callerIP(req))
	if len(at) == 0 {
		n.refuse(w, req, "not a member")
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, MaxEntrySize+1))
	if err != nil || len(body) > MaxEntrySize {
		http.Error(w, "bad command", http.StatusBadRequest)
		return
	}
	cmd, err := DecodeCommand(body)
	if err != nil {
		http.Error(w, "bad command: "+err.Error(), http.StatusBadRequest)
		return
	}
	if why := applyRefusal(cmd, at); why != "" {
		n.refuse(w, req, why)
		return
	}
	r := n.raftNode()
	if r == nil || r.raft.State() != raft.Leader {
		http.Error(w, errNotLeaderHere.Error(), http.StatusServiceUnavailable)
		return
	}
	res, index, err := r.apply(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if cmd.Type == CmdRetire && res.Err == nil {
		n.noteRetired(cmd.Node)
	}
	out := applyReply{Index: index, Duplicate: res.Duplicate, Skipped: res.Skipped}
	if res.Err != nil {
		out.Error = res.Err.Error()
		if errors.Is(res.Err, ErrAdminRefused) {
			out.Code = codeAdminRefused
		}
	}
	writeRPC(w, out)
}

// applyRefusal says why a member (one of at, the members at the caller's
// address) may not send cmd, or "" if it may.
func applyRefusal(cmd Command, at []Member) string {
	switch {
	case cmd.Admin():
		return "" // the committed admin mode decides (FSM)
	case cmd.Type == CmdRetire:
		if !isNode(at, cmd.Node) {
			return "a retire only for the caller's own seat"
		}
		return ""
	case cmd.Type == CmdMark:
		return "auto marks are the Raft leader's"
	case cmd.Type == CmdCatalog:
		// The Red Leader commits its catalog entries; the FSM checks the
		// seat (node and epoch).
		if !isNode(at, cmd.Node) {
			return "a catalog commit only as the caller's own node"
		}
		return ""
	}
	return fmt.Sprintf("the Raft leader commits %s commands itself", cmd.Type)
}

// handlePrepare starts Raft for the leader's cluster so that the leader can
// add this node as a standby.
func (n *Node) handlePrepare(w http.ResponseWriter, req *http.Request) {
	var in prepareRequest
	if err := json.NewDecoder(io.LimitReader(req.Body, maxRPCBody)).Decode(&in); err != nil || in.ClusterID == "" {
		http.Error(w, "bad prepare", http.StatusBadRequest)
		return
	}
	members := n.mem.Members()
	ip := callerIP(req)
	if !leadsCluster(members, ip, in.ClusterID) {
		n.refuse(w, req, "a prepare only from the Raft leader of cluster "+in.ClusterID)
		return
	}
	if r := n.raftNode(); r != nil && r.clusterID == in.ClusterID {
		if addr, _ := r.raft.LeaderWithID(); addr != "" && addrIP(string(addr)) != ip {
			n.refuse(w, req, "a prepare only from the Raft leader of cluster "+in.ClusterID+" (Raft knows another)")
			return
		}
	}
	if cs := clusters(members); len(cs) == 0 || cs[0].id != in.ClusterID {
		n.refuse(w, req, "cluster "+in.ClusterID+" is not the best cluster in gossip")
		return
	}
	if !n.cfg.Voter {
		http.Error(w, "this node never votes (election.voter: never)", http.StatusForbidden)
		return
	}
	n.life.Lock()
	defer n.life.Unlock()
	if n.ctx.Err() != nil {
		http.Error(w, ErrStopped.Error(), http.StatusServiceUnavailable)
		return
	}
	n.mu.Lock()
	n.preparedBy, n.preparedFor = ip, in.ClusterID
	n.mu.Unlock()
	r := n.raftNode()
	if r != nil && r.clusterID == in.ClusterID {
		writeRPC(w, struct{}{})
		return
	}
	if r != nil {
		n.abandon(r, "asked to join cluster "+in.ClusterID)
	}
	if err := n.openRaft(in.ClusterID, false, nil); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeRPC(w, struct{}{})
}

// handleState serves this node's state for members to pull.
func (n *Node) handleState(w http.ResponseWriter, req *http.Request) {
	if len(membersAt(n.mem.Members(), callerIP(req))) == 0 {
		n.refuse(w, req, "not a member")
		return
	}
	r := n.raftNode()
	if r == nil {
		http.Error(w, "not a raft member", http.StatusServiceUnavailable)
		return
	}
	// Members never apply commands, so they need no dedup window: leaving
	// it out halves a full state (~88 KB -> ~43 KB per pull).
	st := r.fsm.State()
	st.Dedup = nil
	w.Header().Set("Content-Type", "application/octet-stream")
	_ = writeSnapshot(w, st)
}

func writeRPC(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (n *Node) raftNode() *raftNode {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.r
}

// post sends an RPC to addr and decodes the JSON reply into out (if set).
func (n *Node) post(ctx context.Context, addr, path string, in, out any) error {
	var body []byte
	switch v := in.(type) {
	case nil:
	case []byte:
		body = v
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		body = b
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := n.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxRPCBody))
	if err != nil {
		return err
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusForbidden:
		return fmt.Errorf("%w: %s %s: %s", ErrRefused, addr, path, bytes.TrimSpace(b))
	default:
		return fmt.Errorf("%s %s: HTTP %d: %s", addr, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// leaderTargets lists where to send leader-only requests: the Raft leader
// if known, then the other Raft members of the best cluster.
func (n *Node) leaderTargets() []string {
	if r := n.raftNode(); r != nil {
		if addr, _ := r.raft.LeaderWithID(); addr != "" {
			return []string{string(addr)}
		}
	}
	if cs := clusters(n.mem.Members()); len(cs) > 0 {
		return cs[0].addrs
	}
	return nil
}

// Apply commits cmd through the Raft leader, wherever it is, retrying while
// there is no leader until ctx ends (the hold timeout). A refusal by the
// leader's RPC (ErrRefused) or by the FSM (ErrAdminRefused…) is final.
func (n *Node) Apply(ctx context.Context, cmd Command) (Result, error) {
	b, err := EncodeCommand(cmd)
	if err != nil {
		return Result{}, err
	}
	for {
		if r := n.raftNode(); r != nil && r.raft.State() == raft.Leader {
			if res, _, err := r.apply(b); err == nil {
				if cmd.Type == CmdRetire && res.Err == nil {
					n.noteRetired(cmd.Node)
				}
				return res, res.Err
			}
		} else {
			for _, addr := range n.leaderTargets() {
				var out applyReply
				err := n.post(ctx, addr, "/rpc/apply", b, &out)
				if errors.Is(err, ErrRefused) {
					return Result{Type: cmd.Type}, err
				}
				if err == nil {
					res := Result{Type: cmd.Type, Duplicate: out.Duplicate, Skipped: out.Skipped}
					switch {
					case out.Code == codeAdminRefused:
						res.Err = remoteError{msg: out.Error, is: ErrAdminRefused}
					case out.Error != "":
						res.Err = errors.New(out.Error)
					}
					if cmd.Type != CmdCatalog { // the catalog is no part of the State members follow
						n.waitApplied(ctx, out.Index)
					}
					return res, res.Err
				}
			}
		}
		select {
		case <-ctx.Done():
			return Result{}, fmt.Errorf("%w: %w", ErrNoLeader, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitApplied waits, for a short while at most, until this node's state
// has reached index, so that a caller reading State right after a
// forwarded Apply sees its own write (`policy set` on a follower printed
// the old policy). A member only gets there by the next state pull.
func (n *Node) waitApplied(ctx context.Context, index uint64) {
	deadline := time.Now().Add(2 * time.Second)
	for index > 0 && n.source().index() < index && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// pull fetches the state from one of the cluster's Raft members.
func (n *Node) pull(c clusterView) {
	n.mu.Lock()
	if time.Since(n.lastPull) < 200*time.Millisecond {
		n.mu.Unlock()
		return
	}
	n.lastPull = time.Now()
	n.mu.Unlock()
	for _, addr := range c.pullOrder() {
		ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/rpc/state", nil)
		resp, err := n.http.Do(req)
		if err != nil {
			cancel()
			continue
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			cancel()
			continue
		}
		err = n.member.Restore(io.NopCloser(io.LimitReader(resp.Body, 16<<20)))
		resp.Body.Close()
		cancel()
		if err == nil {
			n.writeCache(n.member)
			return
		}
		n.log.Debug("state pull", "from", addr, "err", err)
	}
}

// kickCheckin makes the check-in loop run now.
func (n *Node) kickCheckin() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// checkinLoop: while this node holds (or was just told it holds) the Red
// Leader seat, it checks in with the Raft leader every CheckinInterval. The
// reply carries the seat and the policy; the send time of the last
// successful check-in starts the fencing lease.
func (n *Node) checkinLoop() {
	t := time.NewTimer(tick.Until(n.cfg.CheckinInterval))
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
			t.Reset(tick.Until(n.cfg.CheckinInterval))
		case <-n.kick:
		}
		st := n.summary()
		now := time.Now()
		n.mu.Lock()
		n.syncSeatLocked(st.RedLeader, now)
		epoch := n.checkinEpochLocked(now)
		n.mu.Unlock()
		if epoch > 0 {
			n.checkin(epoch)
		}
	}
}

// checkin sends one check-in for epoch to the Raft leader and applies the
// reply (applyCheckinLocked).
func (n *Node) checkin(epoch uint64) {
	sent := time.Now()
	prio, progress := n.mem.SelfInputs()
	req := checkinRequest{Node: n.cfg.Node, Epoch: epoch, Inputs: &rankInputs{Priority: prio, Progress: progress}}
	for _, addr := range n.leaderTargets() {
		// A renewal's reply waits for the Raft leader's next heartbeat
		// round (up to a pace) on top of the round trip.
		ctx, cancel := context.WithTimeout(n.ctx, n.cfg.CheckinInterval+n.paceInterval())
		var out checkinReply
		err := n.post(ctx, addr, "/rpc/checkin", req, &out)
		cancel()
		if err != nil {
			continue
		}
		n.mu.Lock()
		n.applyCheckinLocked(epoch, sent, out.Seat, time.Now())
		n.mu.Unlock()
		return
	}
}
