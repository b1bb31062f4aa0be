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

// updateRedLocked applies the fencing rule at now: it starts or stops the
// role when the rule's answer changed, and keeps the lease timer set to
// the moment the lease runs out. n.mu must be held.
func (n *Node) updateRedLocked(now time.Time) {
	if n.red.closed {
		return
	}
	holds := n.seat.Holds(n.cfg.Node, n.seat.Epoch, n.lastCheckIn, now, n.cfg.CheckinTimeout)
	if holds {
		left := n.lastCheckIn.Add(n.cfg.CheckinTimeout).Sub(now)
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
		n.red.epoch = n.seat.Epoch
		n.log.Info("Red Leader role started", "epoch", n.seat.Epoch)
	default:
		n.red.lease.Stop()
		why, level := n.redStopReasonLocked()
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

// redStopReasonLocked says why the role stops; a lease that ran out is a
// warning.
func (n *Node) redStopReasonLocked() (string, slog.Level) {
	switch {
	case n.seat.Node == "":
		return "the seat was vacated", slog.LevelInfo
	case n.seat.Node != n.cfg.Node:
		return "the seat moved to " + n.seat.Node, slog.LevelInfo
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
