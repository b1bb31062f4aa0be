package peer_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/election"
	"github.com/redleader-p2p/redleader/internal/wait"
	"github.com/redleader-p2p/redleader/peer"
	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/peer/peertest"
)

// agreedRedLeader returns the confirmed Red Leader every agent reports,
// with its epoch, or "" while they disagree, none is confirmed, or not
// exactly one agent acts as Red Leader.
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

func waitRedLeader(t *testing.T, agents []*peer.Agent, d time.Duration) (string, uint64) {
	t.Helper()
	var leader string
	var epoch uint64
	wait.For(t, d, "one agreed Red Leader", func() bool {
		leader, epoch = agreedRedLeader(agents)
		return leader != ""
	})
	return leader, epoch
}

func TestElectionOneRedLeader(t *testing.T) {
	for _, n := range []int{1, 2, 4, 7} {
		agents := peertest.Start(t, n, peertest.Options{})
		start := time.Now()
		leader, epoch := waitRedLeader(t, agents, 30*time.Second)
		t.Logf("%d agents: Red Leader %s epoch %d after %v", n, leader[:8], epoch, time.Since(start))
	}
}

// TestSeedScenario plays the seed's eight steps on real agents.
func TestSeedScenario(t *testing.T) {
	const MiB = 1 << 20
	in := func(p peer.Priority, v uint8, progress uint64, uptime time.Duration) peer.RankInputs {
		return peer.RankInputs{Priority: p, Version: v, Progress: progress * MiB, Uptime: uptime}
	}
	s := time.Second
	agents := map[string]*peer.Agent{}
	var all []*peer.Agent
	join := func(name string, ri peer.RankInputs) {
		o := peertest.Options{}
		if len(all) > 0 {
			o.Join = []string{all[0].GossipAddr().String()}
		}
		a := peertest.StartAgent(t, peertest.Config(t, len(all), o), false)
		a.SetRankInputs(ri)
		agents[name] = a
		all = append(all, a)
	}
	names := func(id string) string {
		for n, a := range agents {
			if a.ID() == id {
				return n
			}
		}
		return id
	}
	expect := func(step int, want string) {
		t.Helper()
		var got string
		wait.For(t, 30*time.Second, "step "+want, func() bool {
			id, _ := agreedRedLeader(all)
			got = names(id)
			return got == want
		})
		// It must stay: no flapping once the inputs are published.
		time.Sleep(1500 * time.Millisecond)
		if id, _ := agreedRedLeader(all); names(id) != want {
			t.Fatalf("step %d: Red Leader moved from %s to %s", step, want, names(id))
		}
		t.Logf("step %d: Red Leader %s", step, want)
	}

	join("M1", in(peer.PriorityNone, 1, 0, 5000*s))
	expect(1, "M1")
	join("M4", in(peer.PriorityLow, 1, 0, 3000*s))
	expect(2, "M4")
	join("M5", in(peer.PriorityLow, 1, 0, 9000*s))
	expect(3, "M4")
	join("M6", in(peer.PriorityHigh, 1, 200, 1000*s))
	expect(4, "M6")
	join("M7", in(peer.PriorityHigh, 2, 100, 500*s))
	expect(5, "M7")
	// M4 and M5 progress on the low job, within 10% of each other; that
	// changes nothing while M7 leads on a high job. Wait until everyone
	// sees it, so that step 6 does not depend on the order updates arrive.
	agents["M4"].SetRankInputs(in(peer.PriorityLow, 1, 100, 3000*s))
	agents["M5"].SetRankInputs(in(peer.PriorityLow, 1, 105, 9000*s))
	wait.For(t, 10*time.Second, "progress published", func() bool {
		for _, a := range all {
			seen := 0
			for _, m := range a.Members() {
				if (m.Node == agents["M4"].ID() && m.Meta.Progress == 100*MiB) || (m.Node == agents["M5"].ID() && m.Meta.Progress == 105*MiB) {
					seen++
				}
			}
			if seen != 2 {
				return false
			}
		}
		return true
	})
	// M6 and M7 finish.
	agents["M6"].SetRankInputs(in(peer.PriorityNone, 1, 0, 1000*s))
	agents["M7"].SetRankInputs(in(peer.PriorityNone, 2, 0, 500*s))
	expect(6, "M5")
	agents["M4"].SetRankInputs(in(peer.PriorityNone, 1, 0, 3000*s))
	agents["M5"].SetRankInputs(in(peer.PriorityNone, 1, 0, 9000*s))
	expect(7, "M7")
	expect(8, "M7")
}

// apiCall sends a request to an agent's local API.
func apiCall(t *testing.T, a *peer.Agent, method, path, token string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+a.APIAddr()+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestAdminMarksAndPolicyFromAnyAgent(t *testing.T) {
	var dirs []string
	agents := peertest.Start(t, 3, peertest.Options{})
	for _, a := range agents {
		dirs = append(dirs, a.DataDir())
	}
	leader, _ := waitRedLeader(t, agents, 30*time.Second)
	token := func(i int) string {
		b, err := os.ReadFile(filepath.Join(dirs[i], "api-token"))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	// Without the token, mutating calls are refused.
	if code, _ := apiCall(t, agents[0], http.MethodPut, "/v1/policy", "", map[string]string{"peer_rate": "1Mbit"}); code != http.StatusUnauthorized {
		t.Fatalf("PUT /v1/policy without token: %d", code)
	}
	if code, _ := apiCall(t, agents[0], http.MethodPost, "/v1/nlm", "wrong", api.NLMRequest{Node: leader, On: true}); code != http.StatusUnauthorized {
		t.Fatalf("POST /v1/nlm with a wrong token: %d", code)
	}
	// policy set from each agent, visible everywhere within 2 s.
	for i, rate := range []string{"20Mbit", "128kbit", "3Mbit"} {
		code, body := apiCall(t, agents[i], http.MethodPut, "/v1/policy", token(i), map[string]string{"peer_rate": rate})
		if code != http.StatusOK {
			t.Fatalf("policy set on agent %d: %d %s", i, code, body)
		}
		start := time.Now()
		wait.For(t, 2*time.Second, "policy visible on every agent", func() bool {
			for _, a := range agents {
				var p api.PolicyInfo
				_, b := apiCall(t, a, http.MethodGet, "/v1/policy", "", nil)
				if json.Unmarshal(b, &p) != nil || p.PeerRate != rate {
					return false
				}
			}
			return true
		})
		t.Logf("policy %s visible everywhere in %v", rate, time.Since(start))
	}
	// nlm on the Red Leader, sent to an agent that is not it: it is replaced.
	sender := agents[0]
	if sender.ID() == leader {
		sender = agents[1]
	}
	if code, body := apiCall(t, sender, http.MethodPost, "/v1/nlm", token(indexOf(agents, sender)), api.NLMRequest{Node: leader, On: true}); code != http.StatusOK {
		t.Fatalf("nlm on: %d %s", code, body)
	}
	next, _ := waitRedLeader(t, agents, 10*time.Second)
	if next == leader {
		t.Fatal("marked Red Leader was not replaced")
	}
	if m, ok := sender.Election().State().Mark(leader); !ok || m.By != election.MarkAdmin {
		t.Fatalf("admin mark = %+v %v", m, ok)
	}
	if code, body := apiCall(t, agents[2], http.MethodPost, "/v1/nlm", token(2), api.NLMRequest{Node: leader, On: false}); code != http.StatusOK {
		t.Fatalf("nlm off: %d %s", code, body)
	}
	wait.For(t, 5*time.Second, "mark cleared everywhere", func() bool {
		for _, a := range agents {
			if a.Election().State().Marked(leader, time.Now()) {
				return false
			}
		}
		return true
	})
}

func indexOf(agents []*peer.Agent, a *peer.Agent) int {
	for i, x := range agents {
		if x == a {
			return i
		}
	}
	return -1
}
