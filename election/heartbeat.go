package election

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/redleader-p2p/redleader/internal/connrefused"
)

// Raft heartbeats: slow while a leader lives, fast while there is none.
//
// hashicorp/raft's leader heartbeats every follower every 1/10 to 1/5 of
// HeartbeatTimeout, and those round trips are most of an idle subnet's
// CPU (issue #12). A follower calls an election once it has heard nothing
// for HeartbeatTimeout, which is therefore also how long a dead leader
// goes unnoticed. The two are separated:
//
//   - With a leader, HeartbeatTimeout is raftSlowHeartbeat (3 s): a
//     heartbeat every 300–600 ms. A leader that vanishes silently (power
//     cut, cable) is replaced in 3–6 s.
//   - A leader whose process dies is noticed at once: its Raft connections
//     to the followers close, and a follower that sees one from its leader
//     close probes the leader's peer port. Refused means no process
//     listens: the follower drops HeartbeatTimeout to raftFastHeartbeat
//     (Raft reloads it and re-arms its timer) and calls an election within
//     1–2 s, as fast as before.
//   - With no leader known (start, re-bootstrap, a probe that found the
//     leader gone), the fast timeout stays until a leader is known again,
//     then the slow one comes back (settleHeartbeat, from the main loop).
//
// LeaderLeaseTimeout (a leader steps down after that long without a
// quorum) must stay longer than the slow heartbeat's longest gap (600 ms)
// and no longer than the fast timeout, which Raft checks.
const (
	raftSlowHeartbeat = 3 * time.Second
	raftFastHeartbeat = time.Second
	raftLeaderLease   = time.Second
)

// heartbeat tracks which timeout Raft runs with.
type heartbeat struct {
	slow, fast time.Duration
	probing    atomic.Bool // one probe of the leader at a time

	mu    sync.Mutex
	quick bool               // Raft runs with the fast timeout
	gone  raft.ServerAddress // the leader found dead ("" at start)
	since time.Time          // when quick was set
}

// setTimeout reloads Raft's heartbeat and election timeouts.
func (r *raftNode) setTimeout(d time.Duration) error {
	rc := r.raft.ReloadableConfig()
	rc.HeartbeatTimeout, rc.ElectionTimeout = d, d
	return r.raft.ReloadConfig(rc)
}

// leaderGone switches Raft to the fast timeout: the leader at addr died.
func (n *Node) leaderGone(r *raftNode, addr raft.ServerAddress) {
	r.hb.mu.Lock()
	defer r.hb.mu.Unlock()
	if r.hb.quick {
		return
	}
	if err := r.setTimeout(r.hb.fast); err != nil {
		n.log.Warn("cannot shorten the Raft heartbeat timeout", "err", err)
		return
	}
	r.hb.quick, r.hb.gone, r.hb.since = true, addr, time.Now()
	n.log.Info("the Raft leader's peer port refuses connections: calling an election", "leader", addr)
}

// settleHeartbeat puts the slow timeout back once a leader other than the
// one found dead is known. A leader that is back at the same address (a
// restart) counts after the slow timeout has passed.
func (n *Node) settleHeartbeat(r *raftNode, now time.Time) {
	r.hb.mu.Lock()
	defer r.hb.mu.Unlock()
	if !r.hb.quick {
		return
	}
	addr, _ := r.raft.LeaderWithID()
	if addr == "" || (addr == r.hb.gone && now.Sub(r.hb.since) < r.hb.slow) {
		return
	}
	if err := r.setTimeout(r.hb.slow); err != nil {
		n.log.Warn("cannot restore the Raft heartbeat timeout", "err", err)
		return
	}
	r.hb.quick, r.hb.gone = false, ""
}

// raftConnClosed notes that a Raft connection from remote closed. On a
// follower, one from its leader's host makes it probe the leader's peer
// port (the leader keeps one connection open to each follower; when its
// process dies, the kernel closes them at once).
func (n *Node) raftConnClosed(remote net.Addr) {
	r := n.raftNode()
	if r == nil || r.raft.State() != raft.Follower {
		return
	}
	addr, _ := r.raft.LeaderWithID()
	if addr == "" || addrIP(string(addr)) != addrIP(remote.String()) {
		return
	}
	if !r.hb.probing.CompareAndSwap(false, true) {
		return
	}
	n.goLoop(func() {
		defer r.hb.probing.Store(false)
		// A process being killed closes its connections and its listener
		// in no set order: a probe that lands in between is accepted by
		// the kernel. Probes at 0, 100 and 300 ms see through it.
		for _, wait := range []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond} {
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(wait):
			}
			err := n.probe(string(addr), false, time.Second)
			n.log.Debug("probed the Raft leader after one of its connections closed", "leader", addr, "err", err)
			switch {
			case err == nil:
			case connrefused.Is(err):
				n.leaderGone(r, addr)
				return
			case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
				return // no answer: cut off, not known dead
			}
			// Accepted, or reset while dialing: maybe dying; look again.
		}
	})
}

// watchedConn is an accepted Raft connection that reports its close.
type watchedConn struct {
	net.Conn
	once   sync.Once
	closed func(net.Addr)
}

func (c *watchedConn) Close() error {
	c.once.Do(func() { c.closed(c.RemoteAddr()) })
	return c.Conn.Close()
}
