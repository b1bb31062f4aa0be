package peer_test

import (
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/internal/wait"
	"github.com/redleader-p2p/redleader/peer"
	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/peer/peertest"
)

// metric reads the unlabelled metric name from a's /metrics ("" on error).
func metric(t *testing.T, a *peer.Agent, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	b, err := api.New(a.APIAddr()).Metrics(ctx)
	if err != nil {
		return ""
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return ""
	}
	return string(m[1])
}

func roleMetric(t *testing.T, a *peer.Agent) string { return metric(t, a, "redleader_red_leader") }

// TestRoleFollowsTheSeat: the agent's role (its metric) follows the
// election's Red Leader watch: 1 on the Red Leader only, and it moves when
// an admin marks the Red Leader not-leader-material.
func TestRoleFollowsTheSeat(t *testing.T) {
	agents := peertest.Start(t, 2, openAdmin) // the nlm below is an admin command
	leader, _ := waitRedLeader(t, agents, 30*time.Second)
	var rl, other *peer.Agent
	for _, a := range agents {
		if a.ID() == leader {
			rl = a
		} else {
			other = a
		}
	}
	wait.For(t, 5*time.Second, "role metric 1 on the Red Leader, 0 on the other", func() bool {
		return roleMetric(t, rl) == "1" && roleMetric(t, other) == "0"
	})
	tok, err := peer.ReadToken(other.DataDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := api.New(other.APIAddr(), api.WithToken(tok)).NLM(ctx, api.NLMRequest{Node: rl.ID(), On: true}); err != nil {
		t.Fatalf("nlm: %v", err)
	}
	wait.For(t, 20*time.Second, "the role moved to the other agent", func() bool {
		return roleMetric(t, rl) == "0" && roleMetric(t, other) == "1"
	})
}
