package election

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// redRole is the Red Leader role as this node plays it. The node holds it
// while the fencing rule holds: the newest seat it knows is its own and its
// last successful check-in is younger than CheckinTimeout (the lease). It
// starts on the check-in that makes the rule hold and stops when the seat
// moves or empties, when the lease timer finds the lease run out, or on
// Close. Every start and stop goes to the watchers. Guarded by Node.mu.
type redRole struct {
	held     bool
	epoch    uint64      // the seat's epoch when the role started
	lease    *time.Timer // fires when the lease would run out
	closed   bool        // Close: the role never starts again
	watchers map[chan bool]struct{}
}

// IsRedLeader reports whether this node acts as Red Leader now. It applies
// the fencing rule at once, so it agrees with the watchers: once it
// returns false, the stop has been sent.
func (n *Node) IsRedLeader() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.updateRedLocked(time.Now())
	return n.red.held
}

// WatchRedLeader subscribes to the Red Leader role. The channel first
// receives whether this node holds the role now, then true each time it
// starts acting as Red Leader and false each time it stops (lease run out,
// seat vacated or moved to another node, Close). It buffers one value and a
// newer one replaces an unread one: the election never waits for a
// watcher, and a watcher that falls behind may miss a short-lived value but
// always receives the newest. Treat the values as levels. stop ends the
// subscription and closes the channel; Close closes it too, after false.
func (n *Node) WatchRedLeader() (<-chan bool, func()) {
	ch := make(chan bool, 1)
	n.mu.Lock()
	n.updateRedLocked(time.Now())
	ch <- n.red.held
	if n.red.closed {
		close(ch)
		n.mu.Unlock()
		return ch, func() {}
	}
	if n.red.watchers == nil {
		n.red.watchers = map[chan bool]struct{}{}
	}
	n.red.watchers[ch] = struct{}{}
	n.mu.Unlock()
	return ch, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if _, ok := n.red.watchers[ch]; ok {
			delete(n.red.watchers, ch)
			close(ch)
		}
	}
}

// The seat as this node sees it. Its committed state is the authority;
// messages only speed things up, and none outlives the committed state:
//
//   - a notify from the Raft leader leaves a hint (hintEpoch), for
//     ConfirmTimeout + CheckinTimeout: the node checks in for that epoch;
//   - a check-in reply of the Raft leader that gives this node the seat at
//     the epoch it checked in for starts the lease (lastCheckIn for
//     checkedEpoch) and, when the state has not caught up yet, is the
//     seat (claim) for at most CheckinTimeout, or until the state reaches
//     its epoch;
//   - a reply that gives the seat to another node at that epoch or a newer
//     one ends the lease at once (stopping is always safe).

// seatViewLocked is the seat this node acts on. n.mu must be held.
func (n *Node) seatViewLocked(now time.Time) (RedLeader, bool) {
	if n.claimActiveLocked(now) {
		return n.claim, true
	}
	return n.seat, false
}

func (n *Node) claimActiveLocked(now time.Time) bool {
	return n.claim.Node != "" && n.claim.Epoch > n.seat.Epoch && now.Sub(n.claimAt) < n.cfg.CheckinTimeout
}

// syncSeatLocked takes the committed seat from this node's state. n.mu
// must be held.
func (n *Node) syncSeatLocked(committed RedLeader, now time.Time) {
	n.seat = committed
	if n.claim.Node != "" && !n.claimActiveLocked(now) {
		n.claim = RedLeader{}
	}
	n.updateRedLocked(now)
}

// checkinEpochLocked is the epoch to check in for now, 0 for none: the
// seat's while it is this node's, else a fresh notify's.
func (n *Node) checkinEpochLocked(now time.Time) uint64 {
	v, _ := n.seatViewLocked(now)
	switch {
	case v.Node == n.cfg.Node:
		return v.Epoch
	case n.hintEpoch > v.Epoch && now.Sub(n.hintAt) < n.cfg.ConfirmTimeout+n.cfg.CheckinTimeout:
		return n.hintEpoch
	}
	n.hintEpoch = 0
	return 0
}

// noteHint records a notify for epoch and checks in at once.
func (n *Node) noteHint(epoch uint64) {
	n.mu.Lock()
	if v, _ := n.seatViewLocked(time.Now()); epoch > v.Epoch {
		n.hintEpoch, n.hintAt = epoch, time.Now()
	}
	n.mu.Unlock()
	n.kickCheckin()
}

// revoke applies the Raft leader's word that the seat is at epoch with
// another node: a seat of this node at an older epoch is not held any
// more, whatever check-in reply sent before arrives late. The role stops
// before it returns, so the leader may grant the next lease once it has
// the answer. Like every message, the word does not outlive the
// committed state: it lasts CheckinTimeout (by then the lease it fences
// has run out), and a check-in sent after it, which revoke starts at
// once, lifts it when the Raft leader answers that the seat is still
// this node's (a notify from a host that only claims to lead the cluster
// costs a moment's stop, not the role).
func (n *Node) revoke(epoch uint64) {
	n.mu.Lock()
	n.revokeLocked(epoch, time.Now())
	n.mu.Unlock()
	n.kickCheckin()
}

// revokeLocked records the revoke and stops the role. n.mu must be held.
func (n *Node) revokeLocked(epoch uint64, now time.Time) {
	n.revokedEpoch, n.revokedAt = max(n.revokedEpoch, epoch), now
	n.updateRedLocked(now)
}

// revokedLocked reports whether a revoke (above) still rules out the seat
// view v at now. n.mu must be held.
func (n *Node) revokedLocked(v RedLeader, now time.Time) bool {
	return v.Epoch <= n.revokedEpoch && now.Sub(n.revokedAt) < n.cfg.CheckinTimeout
}

// applyCheckinLocked applies the reply (seat) to a check-in for epoch sent
// at sent. n.mu must be held.
func (n *Node) applyCheckinLocked(epoch uint64, sent time.Time, seat RedLeader, now time.Time) {
	if n.hintEpoch <= max(epoch, seat.Epoch) {
		n.hintEpoch = 0
	}
	switch {
	case seat.Node == n.cfg.Node && seat.Epoch == epoch:
		n.lastCheckIn, n.checkedEpoch = sent, epoch
		if sent.After(n.revokedAt) { // asked after a revoke, the leader says the seat is this node's
			n.revokedEpoch = 0
		}
		if epoch > n.seat.Epoch && (n.claim.Node != seat.Node || n.claim.Epoch != epoch) {
			n.claim, n.claimAt = RedLeader{Node: seat.Node, Epoch: epoch, AppointedAt: seat.AppointedAt,
				ConfirmedAt: seat.ConfirmedAt, Reason: seat.Reason}, now
		}
	case seat.Node == n.cfg.Node && seat.Epoch > epoch:
		// Appointed again at a newer epoch: check in for that one.
		n.lastCheckIn, n.claim = time.Time{}, RedLeader{}
		n.hintEpoch, n.hintAt = seat.Epoch, now
		n.kickCheckin()
	case seat.Epoch >= epoch:
		// The seat is not (or no longer) this node's: stop now.
		n.lastCheckIn, n.claim = time.Time{}, RedLeader{}
	}
	n.updateRedLocked(now)
}

// updateRedLocked applies the fencing rule at now: it starts or stops the
// role when the rule's answer changed, and keeps the lease timer set to
// the moment the lease (or the claim it rests on) runs out. n.mu must be
// held.
func (n *Node) updateRedLocked(now time.Time) {
	if n.red.closed {
		return
	}
	v, claimed := n.seatViewLocked(now)
	last := n.lastCheckIn
	if n.checkedEpoch != v.Epoch {
		last = time.Time{}
	}
	holds := !n.revokedLocked(v, now) && v.Holds(n.cfg.Node, v.Epoch, last, now, n.cfg.CheckinTimeout)
	if holds {
		left := last.Add(n.cfg.CheckinTimeout).Sub(now)
		if claimed {
			left = min(left, n.claimAt.Add(n.cfg.CheckinTimeout).Sub(now))
		}
		if n.red.lease == nil {
			n.red.lease = time.AfterFunc(left, n.leaseTimer)
		} else {
			n.red.lease.Reset(left)
		}
	}
	switch {
	case holds == n.red.held:
		return
	case holds:
		n.red.epoch = v.Epoch
		n.log.Info("Red Leader role started", "epoch", v.Epoch)
	default:
		n.red.lease.Stop()
		why, level := n.redStopReasonLocked(v)
		n.log.Log(context.Background(), level, "Red Leader role stopped", "epoch", n.red.epoch, "why", why)
	}
	n.red.held = holds
	n.notifyRedLocked()
}

// leaseTimer re-applies the fencing rule when the lease would have run out:
// without a newer check-in, the role stops now, whoever asks.
func (n *Node) leaseTimer() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.updateRedLocked(time.Now())
}

// redStopReasonLocked says why the role stops, given the seat view v; a
// lease that ran out is a warning.
func (n *Node) redStopReasonLocked(v RedLeader) (string, slog.Level) {
	switch {
	case v.Node == "":
		return "the seat was vacated", slog.LevelInfo
	case v.Node != n.cfg.Node:
		return "the seat moved to " + v.Node, slog.LevelInfo
	case v.Epoch != n.red.epoch:
		return fmt.Sprintf("the seat moved to epoch %d", v.Epoch), slog.LevelInfo
	case n.revokedLocked(v, time.Now()):
		return fmt.Sprintf("the Raft leader moved the seat to epoch %d", n.revokedEpoch), slog.LevelInfo
	case n.lastCheckIn.IsZero():
		return "the Raft leader's check-in reply gives the seat to another node", slog.LevelInfo
	default:
		return fmt.Sprintf("no successful check-in within %v (lease ran out)", n.cfg.CheckinTimeout), slog.LevelWarn
	}
}

// notifyRedLocked sends the role's state to every watcher, replacing an
// unread value. n.mu must be held: it orders the senders, so the channel
// has room once drained.
func (n *Node) notifyRedLocked() {
	for ch := range n.red.watchers {
		select {
		case <-ch:
		default:
		}
		ch <- n.red.held
	}
}

// closeRedRole stops the role for good (Close): the watchers receive false
// if the role was held, then their channels close.
func (n *Node) closeRedRole() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.red.held {
		n.red.held = false
		n.log.Info("Red Leader role stopped", "epoch", n.red.epoch, "why", "stopping")
		n.notifyRedLocked()
	}
	n.red.closed = true
	if n.red.lease != nil {
		n.red.lease.Stop()
	}
	for ch := range n.red.watchers {
		close(ch)
	}
	n.red.watchers = nil
}
