package shaping

import "sync"

// WAN holds an agent's one WAN Limiter, shared by all its jobs, and sets
// its rate from the role and the policy: the leader rate while the agent
// holds the Red Leader role, the peer rate otherwise. A role or policy
// change takes effect at once, for the jobs already waiting too. A WAN
// starts as a non-leader. It is safe for concurrent use.
type WAN struct {
	l *Limiter

	mu         sync.Mutex // orders the changes: the last one applied wins
	leader     bool
	leaderRate Rate
	peerRate   Rate
}

// NewWAN returns a non-leader WAN at peerRate with the given rates and a
// burst of at least minBurst bytes (below 1: DefaultMinBurst).
func NewWAN(leaderRate, peerRate Rate, minBurst int) *WAN {
	return &WAN{
		l:          NewLimiter(peerRate, minBurst),
		leaderRate: leaderRate,
		peerRate:   peerRate,
	}
}

// Limiter is the shared WAN Limiter, for Readers of origin bodies.
func (w *WAN) Limiter() *Limiter { return w.l }

// SetRole switches to the leader rate (leader) or the peer rate.
func (w *WAN) SetRole(leader bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.leader = leader
	w.apply()
}

// SetPolicy sets the rates of the committed policy.
func (w *WAN) SetPolicy(leaderRate, peerRate Rate) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.leaderRate, w.peerRate = leaderRate, peerRate
	w.apply()
}

// apply sets the Limiter's rate; called with w.mu held, so concurrent
// changes reach the Limiter in the order they were made.
func (w *WAN) apply() {
	if w.leader {
		w.l.SetRate(w.leaderRate)
	} else {
		w.l.SetRate(w.peerRate)
	}
}

// Leader reports whether the WAN is at the leader rate.
func (w *WAN) Leader() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.leader
}

// Limit is the WAN rate in force (0 = unlimited).
func (w *WAN) Limit() Rate { return w.l.Rate() }
