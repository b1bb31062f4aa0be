package election

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/hashicorp/raft"
)

// Cluster RPC: HTTP/1.1 over the peer port's RPC channel (mutual TLS when a
// cluster key is set). Requests that need the Raft leader are forwarded one
// hop by any Raft member; members only send them to Raft members.

const maxRPCBody = 1 << 20

type checkinRequest struct {
	Node  string `json:"node"`
	Epoch uint64 `json:"epoch"`
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
	Index     uint64 `json:"index,omitempty"` // Raft log index of the command
}

// errNotLeaderHere: this node cannot serve a leader-only request and knows
// no leader to forward it to.
var errNotLeaderHere = errors.New("not the raft leader")

func (n *Node) rpcHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /rpc/checkin", n.handleCheckin)
	mux.HandleFunc("POST /rpc/apply", n.handleApply)
	mux.HandleFunc("POST /rpc/prepare", n.handlePrepare)
	mux.HandleFunc("POST /rpc/notify", n.handleNotify)
	mux.HandleFunc("GET /rpc/state", n.handleState)
	return mux
}

// handleCheckin records a Red Leader's check-in on the Raft leader; the
// first check-in of an epoch is the appointee's confirmation.
func (n *Node) handleCheckin(w http.ResponseWriter, req *http.Request) {
	var in checkinRequest
	body, err := io.ReadAll(io.LimitReader(req.Body, maxRPCBody))
	if err != nil || json.Unmarshal(body, &in) != nil {
		http.Error(w, "bad check-in", http.StatusBadRequest)
		return
	}
	r := n.raftNode()
	if r == nil || r.raft.State() != raft.Leader {
		n.forward(w, req, "/rpc/checkin", body)
		return
	}
	// A deposed leader that has not noticed yet must not accept check-ins.
	if err := r.raft.VerifyLeader().Error(); err != nil {
		http.Error(w, "leadership not verified", http.StatusServiceUnavailable)
		return
	}
	st := r.fsm.summary()
	if st.RedLeader.Node == in.Node && st.RedLeader.Epoch == in.Epoch {
		n.mu.Lock()
		if n.lead != nil {
			n.lead.checkIns[in.Node] = time.Now()
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

// handleNotify: the Raft leader just appointed this node. The claim is
// only a hint: the check-in it triggers returns the real seat, and only a
// matching reply starts the fencing lease.
func (n *Node) handleNotify(w http.ResponseWriter, req *http.Request) {
	var in checkinRequest
	if err := json.NewDecoder(io.LimitReader(req.Body, maxRPCBody)).Decode(&in); err != nil || in.Node != n.cfg.Node {
		http.Error(w, "bad notify", http.StatusBadRequest)
		return
	}
	n.learnSeat(in.Node, in.Epoch)
	writeRPC(w, struct{}{})
}

// learnSeat records a newer seat and checks in at once.
func (n *Node) learnSeat(node string, epoch uint64) {
	n.mu.Lock()
	if epoch > n.seat.Epoch {
		n.seat = RedLeader{Node: node, Epoch: epoch}
		n.updateRedLocked(time.Now())
	}
	n.mu.Unlock()
	n.kickCheckin()
}

// handleApply commits a forwarded command.
func (n *Node) handleApply(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, MaxEntrySize+1))
	if err != nil || len(body) > MaxEntrySize {
		http.Error(w, "bad command", http.StatusBadRequest)
		return
	}
	if _, err := DecodeCommand(body); err != nil {
		http.Error(w, "bad command: "+err.Error(), http.StatusBadRequest)
		return
	}
	r := n.raftNode()
	if r == nil || r.raft.State() != raft.Leader {
		n.forward(w, req, "/rpc/apply", body)
		return
	}
	res, index, err := r.apply(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	out := applyReply{Index: index, Duplicate: res.Duplicate, Skipped: res.Skipped}
	if res.Err != nil {
		out.Error = res.Err.Error()
	}
	writeRPC(w, out)
}

// handlePrepare starts Raft for the leader's cluster so that the leader can
// add this node as a standby.
func (n *Node) handlePrepare(w http.ResponseWriter, req *http.Request) {
	var in prepareRequest
	if err := json.NewDecoder(io.LimitReader(req.Body, maxRPCBody)).Decode(&in); err != nil {
		http.Error(w, "bad prepare", http.StatusBadRequest)
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
func (n *Node) handleState(w http.ResponseWriter, _ *http.Request) {
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

// forward sends a leader-only request to the Raft leader (one hop).
func (n *Node) forward(w http.ResponseWriter, req *http.Request, path string, body []byte) {
	r := n.raftNode()
	if r == nil || req.Header.Get("X-Redleader-Forwarded") != "" {
		http.Error(w, errNotLeaderHere.Error(), http.StatusServiceUnavailable)
		return
	}
	addr, _ := r.raft.LeaderWithID()
	if addr == "" {
		http.Error(w, ErrNoLeader.Error(), http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), 3*time.Second)
	defer cancel()
	out, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+string(addr)+path, bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	out.Header.Set("X-Redleader-Forwarded", "1")
	resp, err := n.http.Do(out)
	if err != nil {
		http.Error(w, "forward to leader: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer resp.Body.Close()
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, io.LimitReader(resp.Body, maxRPCBody))
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
	if resp.StatusCode != http.StatusOK {
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
// there is no leader until ctx ends (the hold timeout).
func (n *Node) Apply(ctx context.Context, cmd Command) (Result, error) {
	b, err := EncodeCommand(cmd)
	if err != nil {
		return Result{}, err
	}
	for {
		if r := n.raftNode(); r != nil && r.raft.State() == raft.Leader {
			if res, _, err := r.apply(b); err == nil {
				return res, res.Err
			}
		} else {
			for _, addr := range n.leaderTargets() {
				var out applyReply
				if err := n.post(ctx, addr, "/rpc/apply", b, &out); err == nil {
					res := Result{Type: cmd.Type, Duplicate: out.Duplicate, Skipped: out.Skipped}
					if out.Error != "" {
						res.Err = errors.New(out.Error)
					}
					n.waitApplied(ctx, out.Index)
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
	case n.hint <- struct{}{}:
	default:
	}
}

// checkinLoop: while this node holds (or was just given) the Red Leader
// seat, it checks in with the Raft leader every CheckinInterval. The reply
// carries the seat and the policy; the send time of the last successful
// check-in starts the fencing lease.
func (n *Node) checkinLoop() {
	t := time.NewTicker(n.cfg.CheckinInterval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		case <-n.hint:
		}
		st := n.summary()
		n.mu.Lock()
		seat := n.seat
		if st.RedLeader.Epoch > seat.Epoch || (st.RedLeader.Epoch == seat.Epoch && st.Index > 0 && st.RedLeader.Node != seat.Node) {
			seat = st.RedLeader
			n.seat = seat
			n.updateRedLocked(time.Now())
		}
		n.mu.Unlock()
		if seat.Node == n.cfg.Node {
			n.checkin(seat.Epoch)
		}
	}
}

// checkin sends one check-in for epoch to the Raft leader.
func (n *Node) checkin(epoch uint64) {
	sent := time.Now()
	for _, addr := range n.leaderTargets() {
		ctx, cancel := context.WithTimeout(n.ctx, n.cfg.CheckinInterval)
		var out checkinReply
		err := n.post(ctx, addr, "/rpc/checkin", checkinRequest{Node: n.cfg.Node, Epoch: epoch}, &out)
		cancel()
		if err != nil {
			continue
		}
		n.mu.Lock()
		if out.Seat.Epoch >= n.seat.Epoch {
			n.seat = out.Seat
		}
		if out.Seat.Node == n.cfg.Node && out.Seat.Epoch == epoch {
			n.lastCheckIn = sent
		}
		n.updateRedLocked(time.Now())
		n.mu.Unlock()
		return
	}
}
