package peer_test

import (
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/config"
	"github.com/redleader-p2p/redleader/peer"
	"github.com/redleader-p2p/redleader/peer/peertest"
)

// agreedRedLeader returns the Red Leader every agent reports, with its
// epoch, or "" if they disagree or none is confirmed.
func agreedRedLeader(agents []*peer.Agent) (string, uint64) {
	var node string
	var epoch uint64
	leaders := 0
	for i, a := range agents {
		n := a.Election()
		if n == nil {
			return "", 0
		}
		st := n.Status()
		if !st.Seat.Confirmed() {
			return "", 0
		}
		if i == 0 {
			node, epoch = st.Seat.Node, st.Seat.Epoch
		} else if st.Seat.Node != node || st.Seat.Epoch != epoch {
			return "", 0
		}
		if st.RedLeader {
			leaders++
		}
	}
	if leaders != 1 {
		return "", 0
	}
	return node, epoch
}

func TestElectionOneRedLeader(t *testing.T) {
	for _, n := range []int{1, 3} {
		agents := peertest.Start(t, n, peertest.Options{Verbose: testing.Verbose()})
		var leader string
		peertest.Eventually(t, 30*time.Second, "one agreed Red Leader", func() bool {
			leader, _ = agreedRedLeader(agents)
			return leader != ""
		})
		t.Logf("%d agents: Red Leader %s", n, leader)
	}
}

var _ = config.Default
