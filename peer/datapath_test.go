package peer_test

import (
	"context"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/internal/wait"
	"github.com/redleader-p2p/redleader/peer"
	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/peer/peertest"
)

func wanMetric(t *testing.T, a *peer.Agent) string {
	return metric(t, a, "redleader_wan_limit_bits_per_second")
}

// TestWANFollowsRoleAndPolicy: the jobs' WAN limit is the leader rate on
// the Red Leader and the peer rate elsewhere, and a policy set changes it
// on every agent within 2 s.
func TestWANFollowsRoleAndPolicy(t *testing.T) {
	agents := peertest.Start(t, 2, openAdmin) // policy set is an admin command
	leader, _ := waitRedLeader(t, agents, 30*time.Second)
	var rl, other *peer.Agent
	for _, a := range agents {
		if a.ID() == leader {
			rl = a
		} else {
			other = a
		}
	}
	// Defaults: leader_rate 0 (unlimited), peer_rate 256kbit.
	wait.For(t, 5*time.Second, "WAN limit unlimited on the Red Leader, 256 kbit/s on the other", func() bool {
		return wanMetric(t, rl) == "0" && wanMetric(t, other) == "256000"
	})
	tok, err := peer.ReadToken(other.DataDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := api.New(other.APIAddr(), api.WithToken(tok)).SetPolicy(ctx, api.PolicyInfo{LeaderRate: "20Mbit", PeerRate: "1Mbit"}); err != nil {
		t.Fatalf("policy set: %v", err)
	}
	start := time.Now()
	wait.For(t, 10*time.Second, "the new rates in force", func() bool {
		return wanMetric(t, rl) == "2e+07" && wanMetric(t, other) == "1e+06"
	})
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("policy took %v to reach the WAN limiters, want ≤ 2 s", took)
	}
}
