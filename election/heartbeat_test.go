package election

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/redleader-p2p/redleader/internal/wait"
)

// heartbeatState is the timeout Raft runs with on r and whether the node
// holds the fast one because a leader was found dead.
func heartbeatState(r *raftNode) (timeout time.Duration, quick bool, gone string) {
	r.hb.mu.Lock()
	defer r.hb.mu.Unlock()
	return r.raft.ReloadableConfig().HeartbeatTimeout, r.hb.quick, string(r.hb.gone)
}

// settledTimeout is the timeout h runs with once a leader is known: the
// leader's own, or the followers' slow one.
func settledTimeout(h *simHost) time.Duration {
	if h.node.leading() {
		return raftLeaderHeartbeat
	}
	return raftSlowHeartbeat
}

func voters(r *raftNode) int {
	n := 0
	for _, srv := range r.configuration().Servers {
		if srv.Suffrage == raft.Voter {
			n++
		}
	}
	return n
}

// TestDeadRaftLeaderNoticedAtOnce: a settled cluster runs the slow
// heartbeat timeout (its leader, the leader's). When the Raft leader's process dies (its connections
// close and its port refuses), the followers switch to the fast timeout
// and elect a new leader, then go back to the slow one; when it is only
// cut off (its connections close, its port does not refuse), they keep the
// slow timeout until it runs out.
func TestDeadRaftLeaderNoticedAtOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		refuse bool
	}{
		{"process gone", true},
		{"cut off", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newTestSim(t, 3, nil)
			var leader *simHost
			wait.For(t, 30*time.Second, "a settled cluster on the slow timeout", func() bool {
				leader = nil
				for _, h := range s.hosts {
					r := h.node.raftNode()
					if r == nil {
						return false
					}
					if d, _, _ := heartbeatState(r); d != settledTimeout(h) {
						return false
					}
					if h.node.leading() {
						leader = h
					}
				}
				return leader != nil && voters(leader.node.raftNode()) == 3
			})
			leaderAddr := leader.raftLn.Addr().String()
			leader.refuse.Store(tc.refuse)
			leader.cut.Store(true)
			others := make([]*simHost, 0, 2)
			for _, h := range s.hosts {
				if h != leader {
					others = append(others, h)
				}
			}
			if !tc.refuse {
				// Cut off: its connections fail, nothing refuses: the
				// followers must not take it for dead.
				time.Sleep(2 * time.Second)
				for _, h := range others {
					if d, quick, _ := heartbeatState(h.node.raftNode()); quick || d != raftSlowHeartbeat {
						t.Errorf("%s: timeout %v, quick %v after its leader was only cut off", h.id, d, quick)
					}
				}
				return
			}
			wait.For(t, 10*time.Second, "a follower on the fast timeout, naming the dead leader", func() bool {
				for _, h := range others {
					if d, quick, gone := heartbeatState(h.node.raftNode()); quick && d == raftFastHeartbeat && gone == leaderAddr {
						return true
					}
				}
				return false
			})
			defer func() {
				if !t.Failed() {
					return
				}
				for _, h := range others {
					d, quick, gone := heartbeatState(h.node.raftNode())
					addr, _ := h.node.raftNode().raft.LeaderWithID()
					t.Logf("%s: timeout %v quick %v gone %q leading %v leader %q state %v", h.raftLn.Addr(), d, quick, gone, h.node.leading(), addr, h.node.raftNode().raft.State())
				}
			}()
			wait.For(t, 30*time.Second, "a new leader, all back on the slow timeout", func() bool {
				lead := false
				for _, h := range others {
					lead = lead || h.node.leading()
					if d, quick, _ := heartbeatState(h.node.raftNode()); quick || d != settledTimeout(h) {
						return false
					}
				}
				return lead
			})
		})
	}
}

// TestPacerRounds: a caller waits for the round that starts after it
// joined; the pace loop takes a fresh round when nobody waits.
func TestPacerRounds(t *testing.T) {
	p := newPacer()
	a := p.join()
	if b := p.join(); b != a {
		t.Fatal("two callers before a round started wait for different rounds")
	}
	if got := p.take(); got != a {
		t.Fatal("the pace loop did not take the round its callers wait for")
	}
	c := p.join()
	if c == a {
		t.Fatal("a caller that joined after the round started waits for it")
	}
	if got := p.take(); got != c {
		t.Fatal("the next round is not the one the late caller waits for")
	}
	if d := p.take(); d == nil || d == c {
		t.Fatal("a round nobody waits for is not a fresh one")
	}
}

// TestPacedVerify: on the Raft leader, a renewal's verification is
// answered by a paced round within a pace or so, and the followers hear
// from the leader well within its lease; on a follower, verification
// fails.
func TestPacedVerify(t *testing.T) {
	t.Parallel()
	s := newTestSim(t, 3, nil)
	var leader *simHost
	wait.For(t, 30*time.Second, "a settled cluster of 3 voters", func() bool {
		leader = nil
		for _, h := range s.hosts {
			if r := h.node.raftNode(); r == nil || heartbeatTimeout(r) != settledTimeout(h) {
				return false
			}
			if h.node.leading() {
				leader = h
			}
		}
		return leader != nil && voters(leader.node.raftNode()) == 3
	})
	n, r := leader.node, leader.node.raftNode()
	for range 5 {
		start := time.Now()
		if err := n.verifyLeader(t.Context(), r, false); err != nil {
			t.Fatalf("leader's paced verification: %v", err)
		}
		if d := time.Since(start); d > 3*n.paceInterval() {
			t.Errorf("paced verification took %v, pace %v", d, n.paceInterval())
		}
	}
	if err := n.verifyLeader(t.Context(), r, true); err != nil {
		t.Fatalf("leader's urgent verification: %v", err)
	}
	for _, h := range s.hosts {
		if h == leader {
			continue
		}
		if err := h.node.verifyLeader(t.Context(), h.node.raftNode(), false); err == nil {
			t.Errorf("%s: a follower verified its leadership", h.id)
		}
		// Every follower hears from the leader well within the lease: the
		// leader's own timeout is long, the rounds carry its heartbeats.
		worst := time.Duration(0)
		for range 20 {
			time.Sleep(50 * time.Millisecond)
			worst = max(worst, time.Since(h.node.raftNode().raft.LastContact()))
		}
		if worst > raftLeaderLease {
			t.Errorf("%s: %v without a heartbeat, pace %v, lease %v", h.id, worst, n.paceInterval(), raftLeaderLease)
		}
	}
}

func heartbeatTimeout(r *raftNode) time.Duration {
	d, _, _ := heartbeatState(r)
	return d
}
