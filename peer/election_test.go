package peer_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/config"
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
//
// The ranking counts a member's uptime only as far as the Raft leader has
// seen it alive in gossip (issue #9), and M5 joins after M4. So that M5
// still has the longer uptime the steps rely on (3: M5 wins the fresh
// choice on uptime but cannot displace M4; 6: M5 beats M4 on uptime), M4
// reports a boot time ahead of the clock: uptime 0. The other uptimes
// are as in the seed; the leader bounds them by the time seen.
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
	const m4Uptime = -time.Hour // a boot time an hour ahead: uptime 0 (see above)
	join("M4", in(peer.PriorityLow, 1, 0, m4Uptime))
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
	agents["M4"].SetRankInputs(in(peer.PriorityLow, 1, 100, m4Uptime))
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
	agents["M4"].SetRankInputs(in(peer.PriorityNone, 1, 0, m4Uptime))
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

// openAdmin lets admin commands through in the open (keyless) test
// cluster: allow_open_admin on every agent before the cluster is created.
var openAdmin = peertest.Options{Configure: func(_ int, c *config.Config) { c.AllowOpenAdmin = true }}

func TestAdminMarksAndPolicyFromAnyAgent(t *testing.T) {
	var dirs []string
	agents := peertest.Start(t, 3, openAdmin)
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

// TestOpenModeRefusesAdmin: without a cluster key and allow_open_admin,
// policy and admin marks are refused cluster-wide with a 403 that says
// why, whichever agent gets them (the committed admin mode decides, not
// the agent's own config); nothing changes.
func TestOpenModeRefusesAdmin(t *testing.T) {
	agents := peertest.Start(t, 3, peertest.Options{Configure: func(i int, c *config.Config) {
		c.AllowOpenAdmin = i == 2 // a later agent's allow_open_admin does not open the cluster
	}})
	leader, _ := waitRedLeader(t, agents, 30*time.Second)
	wait.For(t, 10*time.Second, "admin mode open committed", func() bool {
		return agents[0].Election().State().Admin == election.AdminOpen
	})
	before := agents[0].Election().State()
	for i, a := range agents {
		tok, err := peer.ReadToken(a.DataDir())
		if err != nil {
			t.Fatal(err)
		}
		code, body := apiCall(t, a, http.MethodPut, "/v1/policy", tok, map[string]string{"peer_rate": "1kbit"})
		if code != http.StatusForbidden || !strings.Contains(string(body), "cluster key") {
			t.Errorf("agent %d: PUT /v1/policy: %d %s, want 403 naming the cluster key", i, code, body)
		}
		code, body = apiCall(t, a, http.MethodPost, "/v1/nlm", tok, api.NLMRequest{Node: leader, On: true})
		if code != http.StatusForbidden {
			t.Errorf("agent %d: POST /v1/nlm: %d %s, want 403", i, code, body)
		}
	}
	for _, a := range agents {
		st := a.Election().State()
		if st.Policy.Version != before.Policy.Version || len(st.Marks) != 0 || st.RedLeader.Node != leader {
			t.Errorf("%s: policy v%d (was v%d), marks %+v, seat %s", a.ID()[:8], st.Policy.Version, before.Policy.Version, st.Marks, st.RedLeader.Node)
		}
	}
}

// TestGracefulStopOfRedLeader: a rolling restart. Each round stops the Red
// Leader gracefully (Close: it publishes Leaving, retires its seat, leaves
// gossip) and starts it again on its data dir: a new Red Leader is
// appointed at once, the stopped node is never appointed again while it
// stops (though it still ranks first), and it carries no automatic mark
// (with the default 10-minute marks, three rounds used to leave the subnet
// with no Red Leader).
func TestGracefulStopOfRedLeader(t *testing.T) {
	cfgs := make([]config.Config, 3)
	agents := make([]*peer.Agent, 3)
	ports := make([][2]int, 3) // gossip, peer
	for i := range agents {
		o := peertest.Options{}
		if i > 0 {
			o.Join = []string{agents[0].GossipAddr().String()}
		}
		cfgs[i] = peertest.Config(t, i, o)
		agents[i] = peertest.StartAgent(t, cfgs[i], false)
		for _, m := range agents[i].Members() {
			if m.Node == agents[i].ID() {
				ports[i] = [2]int{int(agents[i].GossipAddr().Port()), int(m.Meta.PeerPort)}
			}
		}
	}
	for round := range 3 {
		// 3 voters first: stopping one then keeps a Raft quorum.
		wait.For(t, 30*time.Second, "3 voters", func() bool {
			for _, a := range agents {
				if n := a.Election(); n == nil || n.Status().Raft.Voters != 3 {
					return false
				}
			}
			return true
		})
		// The agent to stop ranks first by far (a high-priority job), so
		// that it would win the fresh choice again right after it retires:
		// the case that used to re-appoint it, then mark it.
		i := round
		agents[i].SetRankInputs(peer.RankInputs{Priority: peer.PriorityHigh, Version: peer.ContentProtocolVersion})
		var leader string
		var epoch uint64
		wait.For(t, 20*time.Second, "the high-priority agent leads", func() bool {
			leader, epoch = agreedRedLeader(agents)
			return leader == agents[i].ID()
		})
		rest := slices.Delete(slices.Clone(agents), i, i+1)
		start := time.Now()
		if err := agents[i].Close(); err != nil {
			t.Fatal(err)
		}
		next, nextEpoch := waitRedLeader(t, rest, 10*time.Second)
		t.Logf("round %d: Red Leader %s stopped; %s leads at epoch %d %v later", round, leader[:8], next[:8], nextEpoch,
			time.Since(start).Round(time.Millisecond))
		if next == leader {
			t.Fatalf("round %d: the stopped agent still holds the seat", round)
		}
		time.Sleep(time.Second) // the Raft leader's ticks, which used to mark it
		st := rest[0].Election().State()
		if m, ok := st.Mark(leader); ok {
			t.Fatalf("round %d: the stopped Red Leader carries a mark: %+v", round, m)
		}
		for _, e := range st.Events {
			if e.Kind == election.EventAppoint && e.Node == leader && e.Epoch > epoch {
				t.Fatalf("round %d: the stopping Red Leader was appointed again: %+v", round, e)
			}
		}
		// Back on its data dir and ports (Raft knows it by its address),
		// joining one that stayed up.
		c := cfgs[i]
		c.Join = []string{rest[0].GossipAddr().String()}
		c.GossipPort, c.PeerPort = ports[i][0], ports[i][1]
		agents[i] = peertest.StartAgent(t, c, false)
		wait.For(t, 15*time.Second, "the restarted agent seen alive by all", func() bool {
			return peertest.SameMembers(agents, agents)
		})
	}
}
