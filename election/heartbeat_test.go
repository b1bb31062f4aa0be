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
// heartbeat timeout. When the Raft leader's process dies (its connections
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
					if d, _, _ := heartbeatState(r); d != raftSlowHeartbeat {
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
					if d, quick, _ := heartbeatState(h.node.raftNode()); quick || d != raftSlowHeartbeat {
						return false
					}
				}
				return lead
			})
		})
	}
}
