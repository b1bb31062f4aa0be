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
	"github.com/redleader-p2p/redleader/internal/tick"
)

// Raft heartbeats: slow while a leader lives, fast while there is none,
// and on the leader, one round for every follower at once.
//
// hashicorp/raft's leader heartbeats each follower on its own timer, every
// 1/10 to 1/5 of HeartbeatTimeout, and those round trips are most of an
// idle subnet's CPU (issue #12). A follower calls an election once it has
// heard nothing for HeartbeatTimeout, which is therefore also how long a
// dead leader goes unnoticed. So:
//
//   - On a follower with a leader, HeartbeatTimeout is raftSlowHeartbeat
//     (3 s). A leader that vanishes silently (power cut, cable) is
//     replaced in 3–9 s: Raft's follower timer fires every 3–6 s and, if
//     the leader was heard from less than 3 s before, waits another round.
//   - A leader whose process dies is noticed at once: its Raft connections
//     to the followers close, and a follower that sees one from its leader
//     close probes the leader's peer port. Refused means no process
//     listens: the follower drops HeartbeatTimeout to raftFastHeartbeat
//     (Raft reloads it and re-arms its timer) and calls an election within
//     1–2 s, as fast as before.
//   - With no leader known (start, re-bootstrap, a probe that found the
//     leader gone), the fast timeout stays until a leader is known again,
//     then the slow one comes back (settleHeartbeat, from the main loop).
//   - The leader paces its own heartbeats (pacer): every pace (500 ms, on
//     the shared tick its main loop wakes on anyway) one VerifyLeader, which
//     heartbeats every follower at once; the Red Leader's check-ins wait for
//     the next round instead of forcing one each. Its own HeartbeatTimeout
//     is raftLeaderHeartbeat (5 s): Raft's per-follower timers (500 ms–1 s,
//     re-armed by each round) then only fire when a round is late. Two
//     rounds a second instead of about five unsynchronised heartbeats per
//     follower. (At 4 s, timers of 400–500 ms beat the next round to it:
//     one extra round trip per follower every other round.)
//
// LeaderLeaseTimeout (a leader steps down after that long without a
// quorum) must be no shorter than the longest gap between heartbeats (the
// pace, or Raft's own 1 s if rounds stopped) and no longer than the fast
// timeout, which Raft checks.
const (
	raftSlowHeartbeat   = 3 * time.Second
	raftFastHeartbeat   = time.Second
	raftLeaderHeartbeat = 5 * time.Second
	raftLeaderLease     = time.Second
)

// heartbeat tracks which timeout Raft runs with.
type heartbeat struct {
	slow, fast, lead time.Duration
	probing          atomic.Bool // one probe of the leader at a time

	mu    sync.Mutex
	cur   time.Duration      // the timeout Raft runs with
	quick bool               // a follower waiting for a new leader: fast timeout
	gone  raft.ServerAddress // the leader found dead ("" at start)
	since time.Time          // when quick was set
}

// setTimeout reloads Raft's heartbeat and election timeouts, under hb.mu.
func (r *raftNode) setTimeout(d time.Duration) error {
	if d == r.hb.cur {
		return nil
	}
	rc := r.raft.ReloadableConfig()
	rc.HeartbeatTimeout, rc.ElectionTimeout = d, d
	if err := r.raft.ReloadConfig(rc); err != nil {
		return err
	}
	r.hb.cur = d
	return nil
}

// leaderGone switches Raft to the fast timeout: the leader at addr died.
func (n *Node) leaderGone(r *raftNode, addr raft.ServerAddress) {
	r.hb.mu.Lock()
	defer r.hb.mu.Unlock()
	if r.hb.quick || r.raft.State() == raft.Leader {
		return
	}
	if err := r.setTimeout(r.hb.fast); err != nil {
		n.log.Warn("cannot shorten the Raft heartbeat timeout", "err", err)
		return
	}
	r.hb.quick, r.hb.gone, r.hb.since = true, addr, time.Now()
	n.log.Info("the Raft leader's peer port refuses connections: calling an election", "leader", addr)
}

// settleHeartbeat sets the timeout Raft should run with now: the leader's
// while leading; on a follower, the slow one once a leader other than the
// one found dead is known (a leader back at the same address, a restart,
// counts after the slow timeout has passed), the fast one until then.
func (n *Node) settleHeartbeat(r *raftNode, now time.Time) {
	r.hb.mu.Lock()
	defer r.hb.mu.Unlock()
	want := r.hb.slow
	if leading, _ := r.leadership(); leading {
		want, r.hb.quick, r.hb.gone = r.hb.lead, false, ""
	} else if r.hb.quick {
		addr, _ := r.raft.LeaderWithID()
		if addr == "" || (addr == r.hb.gone && now.Sub(r.hb.since) < r.hb.slow) {
			return
		}
	}
	if err := r.setTimeout(want); err != nil {
		n.log.Warn("cannot set the Raft heartbeat timeout", "timeout", want, "err", err)
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

// pacer batches the Raft leader's heartbeats into rounds: one VerifyLeader
// (a heartbeat to every follower at once, answered when a quorum has
// acknowledged this leader) per pace, on the shared tick. A check-in that
// must know this node still leads waits for the next round to finish: a
// round that starts after the request arrived proves as much as a
// VerifyLeader of its own would.
type pacer struct {
	mu   sync.Mutex
	next *round // the round a caller arriving now waits for
	kick chan struct{}
}

// round is one verification; done closes when err is set.
type round struct {
	done chan struct{}
	err  error
}

func newPacer() *pacer { return &pacer{kick: make(chan struct{}, 1)} }

// join returns the round that starts at the next pace.
func (p *pacer) join() *round {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.next == nil {
		p.next = &round{done: make(chan struct{})}
	}
	return p.next
}

// take hands the next round to the pace loop (a fresh one if nobody waits:
// the round is the heartbeat too).
func (p *pacer) take() *round {
	p.mu.Lock()
	defer p.mu.Unlock()
	rd := p.next
	p.next = nil
	if rd == nil {
		rd = &round{done: make(chan struct{})}
	}
	return rd
}

// leadershipChanged wakes the pace loop (setLeading).
func (p *pacer) leadershipChanged() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// paceInterval is the leader's heartbeat round period: half the lease, so
// one late round never costs the leadership, and no more than half a
// check-in interval, so a check-in's reply never waits longer than the
// Red Leader waits for it.
func (n *Node) paceInterval() time.Duration {
	return max(min(raftLeaderLease*time.Duration(n.cfg.RaftMultiplier), n.cfg.CheckinInterval)/2, 10*time.Millisecond)
}

// paceLoop runs the rounds while r leads; it sleeps while r does not.
func (n *Node) paceLoop(r *raftNode) {
	every := n.paceInterval()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		var due <-chan time.Time // nil while not leading: wait for a change
		if leading, _ := r.leadership(); leading {
			t.Reset(tick.Until(every))
			due = t.C
		}
		select {
		case <-n.ctx.Done():
			return
		case <-r.stopped:
			return
		case <-r.pace.kick:
			t.Stop()
			continue
		case <-due:
		}
		rd := r.pace.take()
		rd.err = r.raft.VerifyLeader().Error()
		close(rd.done)
	}
}

// verifyLeader returns nil once a heartbeat round that started after the
// call has found this node still leading Raft: the next paced round, or,
// for a caller that cannot wait (urgent) or if no round has answered
// within 1.5 paces, a VerifyLeader of its own.
func (n *Node) verifyLeader(ctx context.Context, r *raftNode, urgent bool) error {
	if urgent {
		return r.raft.VerifyLeader().Error()
	}
	rd := r.pace.join()
	t := time.NewTimer(n.paceInterval() * 3 / 2)
	defer t.Stop()
	select {
	case <-rd.done:
		return rd.err
	case <-t.C:
		return r.raft.VerifyLeader().Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}
