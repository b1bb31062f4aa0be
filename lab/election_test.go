//go:build linux

package lab_test

// End-to-end tests of the Red Leader election (issue 3): real agents in lab
// namespaces, default config unless a test says otherwise. Time bounds are
// asserted (the lab binary is built without -race) and every measured time
// is logged with t.Logf.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/internal/wait"
	"github.com/redleader-p2p/redleader/lab"
	"github.com/redleader-p2p/redleader/peer"
	"github.com/redleader-p2p/redleader/peer/api"
)

// apiCtx is a short context of its own for one API call (safe from any
// goroutine, unlike shortCtx).
func apiCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 2*time.Second)
}

// get GETs path from a's API into v with a short timeout of its own.
func (a *agent) get(path string, v any) error {
	ctx, cancel := apiCtx()
	defer cancel()
	return a.client().Do(ctx, http.MethodGet, path, nil, v)
}

// status is a's /v1/status, or nil if it does not answer.
func (a *agent) status() *api.StatusResponse {
	ctx, cancel := apiCtx()
	defer cancel()
	st, err := a.client().Status(ctx)
	if err != nil {
		return nil
	}
	return &st
}

// statuses asks every agent for its status at once.
func statuses(agents []*agent) []*api.StatusResponse {
	out := make([]*api.StatusResponse, len(agents))
	var wg sync.WaitGroup
	for i, a := range agents {
		wg.Go(func() { out[i] = a.status() })
	}
	wg.Wait()
	return out
}

// leaders lists the agents that report role=leader.
func leaders(agents []*agent, sts []*api.StatusResponse) []string {
	var out []string
	for i, st := range sts {
		if st != nil && st.Role == "leader" {
			out = append(out, agents[i].h.Name)
		}
	}
	return out
}

// agreement checks the election as sts show it: every agent answers, all
// are in one Raft cluster, all report the same confirmed Red Leader (node
// and epoch), and exactly one agent, that one, reports role=leader.
func agreement(agents []*agent, sts []*api.StatusResponse) (api.RedLeaderInfo, error) {
	var seat api.RedLeaderInfo
	var cluster string
	for i, st := range sts {
		name := agents[i].h.Name
		switch {
		case st == nil:
			return seat, fmt.Errorf("%s does not answer", name)
		case st.RedLeader == nil:
			return seat, fmt.Errorf("%s knows no Red Leader", name)
		case !st.RedLeader.Confirmed:
			return seat, fmt.Errorf("%s: Red Leader %s (epoch %d) not confirmed", name, st.RedLeader.Name, st.RedLeader.Epoch)
		case st.Raft.ClusterID == "":
			return seat, fmt.Errorf("%s is in no cluster", name)
		}
		if i == 0 {
			seat, cluster = *st.RedLeader, st.Raft.ClusterID
			continue
		}
		if st.Raft.ClusterID != cluster {
			return seat, fmt.Errorf("%s in cluster %s, %s in %s", agents[0].h.Name, cluster, name, st.Raft.ClusterID)
		}
		if st.RedLeader.Node != seat.Node || st.RedLeader.Epoch != seat.Epoch {
			return seat, fmt.Errorf("%s sees %s@%d, %s sees %s@%d", agents[0].h.Name, seat.Name, seat.Epoch,
				name, st.RedLeader.Name, st.RedLeader.Epoch)
		}
	}
	ls := leaders(agents, sts)
	if len(ls) != 1 {
		return seat, fmt.Errorf("role=leader on %v, want exactly one", ls)
	}
	for i, st := range sts {
		if st.Role == "leader" && st.Node != seat.Node {
			return seat, fmt.Errorf("%s reports role=leader but the seat is %s's", agents[i].h.Name, seat.Name)
		}
	}
	return seat, nil
}

// waitAgree waits up to d for agreement among agents (and for extra to
// accept the seat, if set). It returns the statuses and the time taken.
func waitAgree(t *testing.T, agents []*agent, d time.Duration, what string,
	extra func(api.RedLeaderInfo, []*api.StatusResponse) error) ([]*api.StatusResponse, time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		sts := statuses(agents)
		seat, err := agreement(agents, sts)
		if err == nil && extra != nil {
			err = extra(seat, sts)
		}
		if err == nil {
			return sts, time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("not within %v: %s: %v", d, what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitRaft waits until every agent reports the given voter and standby
// counts (the voter set has settled).
func waitRaft(t *testing.T, agents []*agent, voters, standbys int, d time.Duration) time.Duration {
	t.Helper()
	return wait.For(t, d, fmt.Sprintf("%d voters and %d standbys", voters, standbys), func() bool {
		for _, st := range statuses(agents) {
			if st == nil || st.Raft.Voters != voters || st.Raft.Standbys != standbys {
				return false
			}
		}
		return true
	})
}

// startAgents starts n agents on new hosts of subnet 1 and waits for their
// APIs; it returns them and the time of the last start.
func startAgents(t *testing.T, l *lab.Lab, n int, env ...string) ([]*agent, time.Time) {
	t.Helper()
	agents := make([]*agent, n)
	for i := range agents {
		agents[i] = startAgentEnv(t, l.AddHost(1), env)
	}
	last := time.Now()
	for _, a := range agents {
		a.nodeID(t)
	}
	return agents, last
}

// openAdmin lets the open (keyless) lab subnet commit admin commands
// (policy, marks): the tests below use them. Without it an open cluster
// refuses them (issue #9; lab/hostile_test.go).
const openAdmin = "REDLEADER_ALLOW_OPEN_ADMIN=true"

func byNode(agents []*agent, node string) *agent {
	for _, a := range agents {
		if a.node == node {
			return a
		}
	}
	return nil
}

func without(agents []*agent, drop ...*agent) []*agent {
	var out []*agent
	for _, a := range agents {
		if !slices.Contains(drop, a) {
			out = append(out, a)
		}
	}
	return out
}

func (a *agent) token(t *testing.T) string {
	t.Helper()
	tok, err := peer.ReadToken(a.dir)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// nlm sets (on) or clears an admin NotLeaderMaterial mark on node through
// a's API.
func (a *agent) nlm(t *testing.T, node string, on bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.client(api.WithToken(a.token(t))).NLM(ctx, api.NLMRequest{Node: node, On: on, Reason: "lab test"}); err != nil {
		t.Fatalf("%s: nlm %s %v: %v", a.h.Name, node, on, err)
	}
}

// cli runs the redleader CLI in a's host against a's data dir (for the
// token) and returns its combined output.
func (a *agent) cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := a.h.Command(shortCtx(t, 20*time.Second), append([]string{lab.Binary(t)}, append(args, "--data-dir", a.dir)...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (a *agent) events(t *testing.T) []api.EventInfo {
	t.Helper()
	ctx, cancel := apiCtx()
	defer cancel()
	evs, err := a.client().Events(ctx)
	if err != nil {
		t.Fatalf("%s: events: %v", a.h.Name, err)
	}
	return evs
}

func (a *agent) policy() (api.PolicyInfo, error) {
	ctx, cancel := apiCtx()
	defer cancel()
	return a.client().Policy(ctx)
}

// memberInfo is how a lists node in /v1/members.
func (a *agent) memberInfo(t *testing.T, node string) (api.MemberInfo, bool) {
	for _, m := range a.members(t) {
		if m.Node == node {
			return m, true
		}
	}
	return api.MemberInfo{}, false
}

// markedIn reports whether a ranks node ineligible because of a mark.
func (a *agent) markedIn(t *testing.T, node string) bool {
	m, ok := a.memberInfo(t, node)
	return ok && !m.Eligible && strings.Contains(m.Ineligible, "marked")
}

// lastEvent returns the newest event of kind about node, if any.
func lastEvent(evs []api.EventInfo, kind, node string) (api.EventInfo, bool) {
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Kind == kind && evs[i].Node == node {
			return evs[i], true
		}
	}
	return api.EventInfo{}, false
}

// TestLabElectionAgreement: 1 to 7 agents of one subnet agree on one
// Red Leader within 5 s of the last start.
func TestLabElectionAgreement(t *testing.T) {
	t.Parallel()
	for n := 1; n <= 7; n++ {
		t.Run(fmt.Sprintf("%d-agents", n), func(t *testing.T) {
			t.Parallel()
			l := lab.New(t, lab.Options{Subnets: 1, WANRate: "off"})
			agents, last := startAgents(t, l, n)
			sts, _ := waitAgree(t, agents, 5*time.Second-time.Since(last), "one agreed Red Leader", nil)
			took := time.Since(last)
			t.Logf("%d agents: one agreed, confirmed Red Leader %s (epoch %d) %v after the last start",
				n, sts[0].RedLeader.Name, sts[0].RedLeader.Epoch, took.Round(time.Millisecond))
		})
	}
}

// formFive starts 5 agents and waits until they agree and the voter set
// has settled (3 voters, 2 standbys).
func formFive(t *testing.T, l *lab.Lab, env ...string) ([]*agent, time.Time) {
	t.Helper()
	agents, last := startAgents(t, l, 5, append([]string{openAdmin}, env...)...)
	waitAgree(t, agents, 10*time.Second, "5 agents agree", nil)
	waitRaft(t, agents, 3, 2, 30*time.Second)
	t.Logf("5 agents: voter set settled (3 voters, 2 standbys) %v after the last start", time.Since(last).Round(time.Millisecond))
	return agents, last
}

// arrange makes the Red Leader also the Raft leader (same) or not, with
// admin marks that it lifts again, and returns the settled statuses.
func arrange(t *testing.T, agents []*agent, same bool) []*api.StatusResponse {
	t.Helper()
	sts, _ := waitAgree(t, agents, 5*time.Second, "agreement before arranging", nil)
	seat, raftLeader := sts[0].RedLeader.Node, sts[0].Raft.Leader
	if (seat == raftLeader) == same {
		return sts
	}
	var marked []string
	if same {
		for _, a := range agents {
			if a.node != raftLeader {
				marked = append(marked, a.node)
			}
		}
	} else {
		marked = []string{seat}
	}
	for _, node := range marked {
		agents[0].nlm(t, node, true)
	}
	waitAgree(t, agents, 10*time.Second, "re-appointed after arranging marks", func(s api.RedLeaderInfo, _ []*api.StatusResponse) error {
		if slices.Contains(marked, s.Node) {
			return fmt.Errorf("seat still on marked %s", s.Name)
		}
		return nil
	})
	for _, node := range marked {
		agents[0].nlm(t, node, false)
	}
	sts, _ = waitAgree(t, agents, 5*time.Second, "agreement after arranging", nil)
	if got := sts[0].RedLeader.Node == sts[0].Raft.Leader; got != same {
		t.Fatalf("arranging failed: Red Leader %s, Raft leader %s", sts[0].RedLeader.Node, sts[0].Raft.Leader)
	}
	return sts
}

// rolesEnv is the environment for a subnet where the Red Leader may also
// lead Raft (shared): election.separate_roles off, so that arrange can put
// both roles on one machine and they stay there.
func rolesEnv(shared bool) []string {
	if shared {
		return []string{"REDLEADER_ELECTION_SEPARATE_ROLES=false"}
	}
	return nil
}

// TestLabElectionFailover (issue #12): a 5-agent subnet with the default
// config; SIGKILL the Red Leader 10 times (each time restarting the victim
// and waiting for the subnet to settle again) → every survivor reports the
// same new confirmed Red Leader, measured from the kill: p50 ≤ 2 s and max
// ≤ 5 s. The default keeps the Red Leader off the Raft leader's machine
// (election.separate_roles), so a second subnet runs 3 more kills with
// separate_roles off and the Red Leader arranged to lead Raft too: the kill
// then costs a Raft election first (max ≤ 5 s). Auto marks live 3 s here,
// and each kill waits until no agent is marked, so that the survivors are
// all eligible, as in a subnet that is not being killed every few seconds.
func TestLabElectionFailover(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		raftLeader bool // the Red Leader is also the Raft leader
		kills      int
		p50        time.Duration // 0: not asserted
	}{
		{"default", false, 10, 2 * time.Second},
		{"red-leader-and-raft-leader", true, 3, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := lab.New(t, lab.Options{Subnets: 1, WANRate: "off"})
			agents, _ := formFive(t, l, append(rolesEnv(tc.raftLeader), "REDLEADER_ELECTION_NLM_TTL=3s")...)
			var took []time.Duration
			for i := range tc.kills {
				took = append(took, killRedLeader(t, agents, i+1, tc.raftLeader))
			}
			slices.Sort(took)
			n := len(took)
			p50, worst := (took[(n-1)/2]+took[n/2])/2, took[n-1]
			t.Logf("%d SIGKILLs of the Red Leader (Raft leader too: %v): failover p50 %v, max %v (sorted: %v)", n,
				tc.raftLeader, p50.Round(time.Millisecond), worst.Round(time.Millisecond), took)
			if (tc.p50 > 0 && p50 > tc.p50) || worst > 5*time.Second {
				t.Errorf("failover p50 %v, max %v: want p50 ≤ %v and max ≤ 5 s", p50, worst, tc.p50)
			}
		})
	}
}

// killRedLeader SIGKILLs the Red Leader of the settled 5-agent subnet
// (arranged to lead Raft too when raftLeader), waits until the 4 survivors
// agree on a new confirmed one, restarts the victim, waits for the subnet
// to settle again and returns the failover time.
func killRedLeader(t *testing.T, agents []*agent, round int, raftLeader bool) time.Duration {
	t.Helper()
	wait.For(t, 15*time.Second, "no agent marked", func() bool {
		for _, a := range agents {
			if agents[0].markedIn(t, a.node) {
				return false
			}
		}
		return true
	})
	sts := arrange(t, agents, raftLeader)
	if !raftLeader {
		// The default hands Raft leadership away from the Red Leader: let
		// it happen, and see that it did.
		sts, _ = waitAgree(t, agents, 10*time.Second, "the Red Leader and the Raft leader apart", func(s api.RedLeaderInfo, sts []*api.StatusResponse) error {
			if sts[0].Raft.Leader == s.Node {
				return fmt.Errorf("%s leads Raft too", s.Name)
			}
			return nil
		})
	}
	old := byNode(agents, sts[0].RedLeader.Node)
	oldEpoch := sts[0].RedLeader.Epoch
	both := sts[0].Raft.Leader == old.node
	if both != raftLeader {
		t.Fatalf("Raft leader %s, Red Leader %s: not the case under test", sts[0].Raft.Leader, old.node)
	}
	killed := time.Now()
	if err := old.p.Kill(); err != nil {
		t.Fatal(err)
	}
	survivors := without(agents, old)
	sts, took := waitAgree(t, survivors, 10*time.Second, "survivors agree on a new Red Leader",
		func(s api.RedLeaderInfo, _ []*api.StatusResponse) error {
			if s.Node == old.node || s.Epoch <= oldEpoch {
				return fmt.Errorf("seat still %s@%d", s.Name, s.Epoch)
			}
			return nil
		})
	seat := sts[0].RedLeader
	evs := survivors[0].events(t)
	mark, _ := lastEvent(evs, "mark", old.node)
	appoint, _ := lastEvent(evs, "appoint", seat.Node)
	confirm, _ := lastEvent(evs, "confirm", seat.Node)
	since := func(e api.EventInfo) time.Duration { return e.Time.Sub(killed).Round(time.Millisecond) }
	t.Logf("kill %d: SIGKILL of the Red Leader %s (Raft leader too: %v): %s agreed by all 4 in %v (epoch %d → %d; marked +%v, appointed +%v, confirmed +%v); mark %q",
		round, old.h.Name, both, seat.Name, took.Round(time.Millisecond), oldEpoch, seat.Epoch,
		since(mark), since(appoint), since(confirm), mark.Reason)
	if !strings.HasPrefix(mark.Reason, "auto mark:") {
		t.Errorf("no auto mark event for the killed Red Leader: %+v", evs)
	}
	<-old.p.Done()
	old.start(t)
	old.nodeID(t)
	waitAgree(t, agents, 30*time.Second, "all 5 agree after the restart", nil)
	waitRaft(t, agents, 3, 2, 60*time.Second)
	return took
}

// TestLabElectionMarkExpires: the auto mark that a killed Red Leader gets
// expires after election.nlm_ttl (short here): once back, it is eligible
// again, and the next committed command logs mark-expired.
func TestLabElectionMarkExpires(t *testing.T) {
	t.Parallel()
	const ttl = 15 * time.Second
	l := lab.New(t, lab.Options{Subnets: 1, WANRate: "off"})
	agents, _ := startAgents(t, l, 3, openAdmin, "REDLEADER_ELECTION_NLM_TTL="+ttl.String())
	sts, _ := waitAgree(t, agents, 10*time.Second, "3 agents agree", nil)
	waitRaft(t, agents, 3, 0, 30*time.Second)
	old := byNode(agents, sts[0].RedLeader.Node)
	if err := old.p.Kill(); err != nil {
		t.Fatal(err)
	}
	survivors := without(agents, old)
	_, took := waitAgree(t, survivors, 5*time.Second, "new Red Leader", func(s api.RedLeaderInfo, _ []*api.StatusResponse) error {
		if s.Node == old.node {
			return errors.New("seat unchanged")
		}
		return nil
	})
	t.Logf("3 agents: failover in %v", took.Round(time.Millisecond))
	mark, ok := lastEvent(survivors[0].events(t), "mark", old.node)
	if !ok {
		t.Fatal("no mark event")
	}
	// Bring it back: it must be listed as marked until the TTL has run out.
	old.p.Wait(5 * time.Second)
	old.start(t)
	wait.For(t, 15*time.Second, "restarted agent alive and listed as marked", func() bool {
		return survivors[0].markedIn(t, old.node) && statusOf(survivors[0].members(t), old.node) == peer.StatusAlive
	})
	expired := wait.For(t, ttl+5*time.Second, "auto mark expires", func() bool {
		m, ok := survivors[0].memberInfo(t, old.node)
		return ok && m.Eligible
	})
	age := time.Since(mark.Time)
	t.Logf("auto mark (%q) lifted %v after it was set (nlm_ttl %v); waited %v", mark.Reason, age.Round(time.Millisecond), ttl, expired.Round(time.Millisecond))
	if age < ttl {
		t.Errorf("mark lifted after %v, before its TTL %v", age, ttl)
	}
	// The next command prunes it with a mark-expired event.
	if out, err := survivors[1].cli(t, "policy", "set", "peer_rate=1Mbit"); err != nil {
		t.Fatalf("policy set: %v\n%s", err, out)
	}
	wait.For(t, 5*time.Second, "mark-expired event", func() bool {
		_, ok := lastEvent(survivors[0].events(t), "mark-expired", old.node)
		return ok
	})
	// Uptime never displaces: the seat stays where it is.
	sts, _ = waitAgree(t, agents, 5*time.Second, "all 3 agree again", nil)
	if sts[0].RedLeader.Node == old.node {
		t.Errorf("the returning agent displaced the Red Leader")
	}
}

// TestLabElectionRaftLeaderKill: SIGKILL the Raft leader when it is not the
// Red Leader → the Red Leader and its epoch stay.
func TestLabElectionRaftLeaderKill(t *testing.T) {
	t.Parallel()
	l := lab.New(t, lab.Options{Subnets: 1, WANRate: "off"})
	agents, _ := formFive(t, l)
	sts := arrange(t, agents, false)
	seat := *sts[0].RedLeader
	victim := byNode(agents, sts[0].Raft.Leader)
	if err := victim.p.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	survivors := without(agents, victim)
	rl := byNode(agents, seat.Node)
	var newLeader time.Duration
	var lapse time.Duration // how long the Red Leader reported role=peer
	lastSample := killed
	for time.Since(killed) < 8*time.Second {
		sts := statuses(survivors)
		now := time.Now()
		for i, st := range sts {
			if st == nil || st.RedLeader == nil {
				continue
			}
			if st.RedLeader.Node != seat.Node || st.RedLeader.Epoch != seat.Epoch {
				t.Fatalf("%s: seat moved from %s@%d to %s@%d after the Raft leader died", survivors[i].h.Name,
					seat.Name, seat.Epoch, st.RedLeader.Name, st.RedLeader.Epoch)
			}
			if survivors[i] == rl && st.Role != "leader" {
				lapse += now.Sub(lastSample)
			}
		}
		if newLeader == 0 && sts[0] != nil && sts[0].Raft.Leader != "" && sts[0].Raft.Leader != victim.node {
			newLeader = now.Sub(killed)
		}
		lastSample = now
		time.Sleep(100 * time.Millisecond)
	}
	waitAgree(t, survivors, 5*time.Second, "same seat after the Raft failover", func(s api.RedLeaderInfo, sts []*api.StatusResponse) error {
		if s.Node != seat.Node || s.Epoch != seat.Epoch {
			return fmt.Errorf("seat %s@%d, want %s@%d", s.Name, s.Epoch, seat.Name, seat.Epoch)
		}
		if sts[0].Raft.Leader == "" || sts[0].Raft.Leader == victim.node {
			return errors.New("no new Raft leader")
		}
		return nil
	})
	if newLeader == 0 {
		t.Fatal("no new Raft leader within 8 s")
	}
	t.Logf("Raft leader %s SIGKILLed: new Raft leader after %v; Red Leader %s kept epoch %d (reported role=peer for ~%v meanwhile)",
		victim.h.Name, newLeader.Round(time.Millisecond), seat.Name, seat.Epoch, lapse.Round(100*time.Millisecond))
}

// TestLabElectionQuorumLoss: 5 agents, SIGKILL the 3 voters at once → the 2
// survivors (standbys) have a Red Leader within 60 s, and still carry the
// policy and the admin mark set before. The mark is on a survivor, so that
// it shows (and matters): the other survivor must lead.
func TestLabElectionQuorumLoss(t *testing.T) {
	t.Parallel()
	l := lab.New(t, lab.Options{Subnets: 1, WANRate: "off"})
	agents, _ := formFive(t, l)
	sts := statuses(agents)
	var voters, standbys []*agent
	for i, st := range sts {
		if st.Raft.State == "standby" {
			standbys = append(standbys, agents[i])
		} else {
			voters = append(voters, agents[i])
		}
	}
	if len(voters) != 3 || len(standbys) != 2 {
		t.Fatalf("want 3 voters and 2 standbys, have %d and %d", len(voters), len(standbys))
	}
	oldCluster := sts[0].Raft.ClusterID
	pol, err := voters[0].client(api.WithToken(voters[0].token(t))).SetPolicy(shortCtx(t, 10*time.Second),
		api.PolicyInfo{LeaderRate: "20Mbit", PeerRate: "1Mbit"})
	if err != nil {
		t.Fatal(err)
	}
	marked, keeper := standbys[1], standbys[0]
	voters[1].nlm(t, marked.node, true)
	waitAgree(t, agents, 5*time.Second, "seat off the marked node", func(s api.RedLeaderInfo, _ []*api.StatusResponse) error {
		if s.Node == marked.node {
			return errors.New("marked node still leads")
		}
		return nil
	})
	wait.For(t, 5*time.Second, "policy and mark reach the standbys", func() bool {
		for _, a := range standbys {
			if p, err := a.policy(); err != nil || p != pol || !a.markedIn(t, marked.node) {
				return false
			}
		}
		return true
	})

	for _, v := range voters {
		if err := v.p.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	sts, took := waitAgree(t, standbys, 60*time.Second, "survivors have a Red Leader", func(s api.RedLeaderInfo, sts []*api.StatusResponse) error {
		if sts[0].Raft.ClusterID == oldCluster {
			return errors.New("still in the old cluster")
		}
		if s.Node != keeper.node {
			return fmt.Errorf("seat on %s, want the unmarked %s", s.Name, keeper.h.Name)
		}
		return nil
	})
	t.Logf("3 of 5 voters SIGKILLed: the 2 survivors agree on Red Leader %s (epoch %d) in new cluster %s after %v",
		sts[0].RedLeader.Name, sts[0].RedLeader.Epoch, sts[0].Raft.ClusterID, took.Round(time.Millisecond))
	for _, a := range standbys {
		if p, err := a.policy(); err != nil || p.LeaderRate != pol.LeaderRate || p.PeerRate != pol.PeerRate {
			t.Errorf("%s: policy after re-bootstrap %+v (%v), want %+v", a.h.Name, p, err, pol)
		}
		if !a.markedIn(t, marked.node) {
			m, _ := a.memberInfo(t, marked.node)
			t.Errorf("%s: admin mark on %s lost after re-bootstrap: %+v", a.h.Name, marked.h.Name, m)
		}
	}

	// A killed voter comes back with the old cluster's Raft state: it must
	// join the survivors' cluster, not drag them back into the dead one.
	back := voters[0]
	back.start(t)
	all := append([]*agent{back}, standbys...)
	newCluster := sts[0].Raft.ClusterID
	_, took = waitAgree(t, all, 30*time.Second, "the returning voter joins the new cluster", func(s api.RedLeaderInfo, sts []*api.StatusResponse) error {
		if sts[0].Raft.ClusterID != newCluster {
			return fmt.Errorf("cluster %s, want %s", sts[0].Raft.ClusterID, newCluster)
		}
		return nil
	})
	t.Logf("a killed voter restarted with the old cluster's state: all 3 agree in the new cluster after %v", took.Round(time.Millisecond))
}

// startSampler asks every agent for its status every 100 ms and records
// the samples in which more than one agent reports role=leader.
func startSampler(agents []*agent) *sampler {
	return newSampler(100*time.Millisecond, func() []string {
		if ls := leaders(agents, statuses(agents)); len(ls) > 1 {
			return []string{fmt.Sprintf("role=leader on %v", ls)}
		}
		return nil
	})
}

// TestLabElectionPartition isolates the Red Leader: sampled every 100 ms,
// never do two agents report role=leader at once; the isolated one steps
// down by itself, the others appoint a new one; after the link is back,
// one Red Leader for all.
func TestLabElectionPartition(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		raftLeader bool // the isolated Red Leader is also the Raft leader
	}{
		{"red-leader-only", false},
		{"red-leader-and-raft-leader", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := lab.New(t, lab.Options{Subnets: 1, WANRate: "off"})
			agents, _ := formFive(t, l, rolesEnv(tc.raftLeader)...)
			sts := arrange(t, agents, tc.raftLeader)
			old := byNode(agents, sts[0].RedLeader.Node)
			s := startSampler(agents)
			defer s.finish() // on an early failure
			time.Sleep(time.Second)

			if err := old.h.LinkDown(); err != nil {
				t.Fatal(err)
			}
			cut := time.Now()
			stepDown := wait.For(t, 4*time.Second, "isolated Red Leader reports role=peer", func() bool {
				st := old.status()
				return st != nil && st.Role == "peer"
			})
			rest := without(agents, old)
			// The seat moves once the Raft leader sees no check-in for
			// checkin_timeout (3 s); when the isolated agent led Raft too,
			// a new Raft leader comes first, 3–9 s after the cut (Raft's
			// follower timer, election/heartbeat.go), and must let the old
			// lease run out (3 s) before it confirms an appointee: up to
			// 12 s, plus a second of margin.
			waitAgree(t, rest, time.Until(cut.Add(13*time.Second)), "the others appoint a new Red Leader", func(s api.RedLeaderInfo, _ []*api.StatusResponse) error {
				if s.Node == old.node {
					return errors.New("seat unchanged")
				}
				return nil
			})
			t.Logf("Red Leader %s isolated (Raft leader too: %v): it reported role=peer after %v; the other 4 agreed on a new one after %v",
				old.h.Name, tc.raftLeader, stepDown.Round(time.Millisecond), time.Since(cut).Round(time.Millisecond))
			time.Sleep(time.Until(cut.Add(10 * time.Second)))
			if st := old.status(); st == nil || st.Role != "peer" {
				t.Errorf("isolated agent after 10 s: %+v", st)
			}

			if err := old.h.LinkUp(); err != nil {
				t.Fatal(err)
			}
			_, healed := waitAgree(t, agents, 30*time.Second, "one Red Leader for all 5 after the partition heals", nil)
			t.Logf("partition healed: all 5 agree again after %v", healed.Round(time.Millisecond))
			n, v := s.finish()
			t.Logf("%d samples, %d with two leaders", n, len(v))
			if len(v) > 0 {
				t.Errorf("two agents reported role=leader: %v", v)
			}
		})
	}
}

// blackhole makes a's host drop everything to the other hosts (or, with
// del, stops doing so): a partition inside one bridge, where LinkDown
// would cut the host from its own group too.
func blackhole(t *testing.T, a *agent, others []*agent, del bool) {
	t.Helper()
	op := "add"
	if del {
		op = "del"
	}
	for _, o := range others {
		out, err := a.h.Command(shortCtx(t, 5*time.Second), "ip", "route", op, "blackhole", o.h.IP().String()+"/32").CombinedOutput()
		if err != nil {
			t.Fatalf("%s: route %s blackhole %s: %v: %s", a.h.Name, op, o.h.IP(), err, out)
		}
	}
}

// TestLabElectionBreakaway: two groups of one subnet form apart (3 and 2
// agents, blackhole routes between them), then the routes go away → one
// cluster and one Red Leader for all within 30 s. The group with more
// voters wins. Beacons every 5 s (instead of 30 s) so that the groups find
// each other quickly: the merge, not discovery, is under test.
func TestLabElectionBreakaway(t *testing.T) {
	t.Parallel()
	l := lab.New(t, lab.Options{Subnets: 1, WANRate: "off"})
	env := []string{"REDLEADER_LAN_DISCOVERY_INTERVAL=5s"}
	groupA := []*agent{{h: l.AddHost(1), env: env}, {h: l.AddHost(1), env: env}, {h: l.AddHost(1), env: env}}
	groupB := []*agent{{h: l.AddHost(1), env: env}, {h: l.AddHost(1), env: env}}
	for _, a := range groupA {
		blackhole(t, a, groupB, false)
	}
	for _, b := range groupB {
		blackhole(t, b, groupA, false)
	}
	all := append(append([]*agent{}, groupA...), groupB...)
	for _, a := range all {
		a.dir = t.TempDir()
		a.start(t)
	}
	for _, a := range all {
		a.nodeID(t)
	}
	stsA, _ := waitAgree(t, groupA, 10*time.Second, "group A agrees", nil)
	stsB, _ := waitAgree(t, groupB, 10*time.Second, "group B agrees", nil)
	waitRaft(t, groupA, 3, 0, 30*time.Second)
	waitRaft(t, groupB, 1, 1, 30*time.Second)
	for _, g := range [][]*agent{groupA, groupB} {
		for _, a := range g {
			if !a.seesExactly(t, g) {
				t.Fatalf("%s sees %+v, not just its group", a.h.Name, a.members(t))
			}
		}
	}
	clusterA, clusterB := stsA[0].Raft.ClusterID, stsB[0].Raft.ClusterID
	if clusterA == clusterB {
		t.Fatalf("both groups in cluster %s", clusterA)
	}
	t.Logf("apart: group A (3) in %s with Red Leader %s, group B (2) in %s with Red Leader %s",
		clusterA, stsA[0].RedLeader.Name, clusterB, stsB[0].RedLeader.Name)

	for _, a := range groupA {
		blackhole(t, a, groupB, true)
	}
	for _, b := range groupB {
		blackhole(t, b, groupA, true)
	}
	start := time.Now()
	gossip := wait.For(t, 30*time.Second, "one gossip pool", func() bool {
		for _, a := range all {
			if !a.seesExactly(t, all) {
				return false
			}
		}
		return true
	})
	sts, _ := waitAgree(t, all, 30*time.Second-time.Since(start), "one cluster, one Red Leader", nil)
	took := time.Since(start)
	t.Logf("breakaway merged: one gossip pool after %v, one cluster (%s) and Red Leader %s (epoch %d) after %v",
		gossip.Round(time.Millisecond), sts[0].Raft.ClusterID, sts[0].RedLeader.Name, sts[0].RedLeader.Epoch, took.Round(time.Millisecond))
	if sts[0].Raft.ClusterID != clusterA {
		t.Errorf("merged into %s, want group A's %s (more voters)", sts[0].Raft.ClusterID, clusterA)
	}
}

// TestLabElectionRestart: SIGTERM every agent and start them again on the
// same data dirs → same cluster ID, the admin mark and the policy kept, a
// Red Leader within 10 s. Also: `policy set` from any agent is visible in
// every agent's /v1/policy within 2 s.
func TestLabElectionRestart(t *testing.T) {
	t.Parallel()
	l := lab.New(t, lab.Options{Subnets: 1, WANRate: "off"})
	agents, _ := formFive(t, l)
	sts := statuses(agents)
	cluster := sts[0].Raft.ClusterID

	setter := agents[3]
	before := time.Now()
	out, err := setter.cli(t, "policy", "set", "leader_rate=20Mbit", "peer_rate=1Mbit", "--json")
	if err != nil {
		t.Fatalf("policy set: %v\n%s", err, out)
	}
	cliTook := time.Since(before)
	var pol api.PolicyInfo
	if err := json.Unmarshal([]byte(out), &pol); err != nil || pol.LeaderRate != "20Mbit" || pol.PeerRate != "1Mbit" {
		t.Fatalf("policy set printed %q (%v), want the new policy", out, err)
	}
	wait.ForErr(t, 2*time.Second, "policy visible on every agent", func() error {
		for _, a := range agents {
			if p, err := a.policy(); err != nil || p != pol {
				return fmt.Errorf("%s has %+v (%v), want %+v", a.h.Name, p, err, pol)
			}
		}
		return nil
	})
	t.Logf("policy set on %s (%+v): the CLI took %v; visible on all 5 %v after it was sent", setter.h.Name, pol,
		cliTook.Round(time.Millisecond), time.Since(before).Round(time.Millisecond))

	marked := byNode(agents, sts[0].RedLeader.Node) // mark the Red Leader: the seat must move and stay moved
	if out, err := agents[1].cli(t, "nlm", marked.h.Name, "on"); err != nil {
		t.Fatalf("nlm: %v\n%s", err, out)
	}
	notMarked := func(s api.RedLeaderInfo, _ []*api.StatusResponse) error {
		if s.Node == marked.node {
			return errors.New("marked node leads")
		}
		return nil
	}
	waitAgree(t, agents, 5*time.Second, "seat moves off the marked node", notMarked)

	stop := time.Now()
	for _, a := range agents {
		if err := a.p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range agents {
		if err := a.p.Wait(15 * time.Second); err != nil {
			_ = a.p.Signal(syscall.SIGQUIT) // goroutine dump into its log
			_ = a.p.Wait(2 * time.Second)
			t.Fatalf("%s: SIGTERM: %v", a.h.Name, err)
		}
	}
	t.Logf("all 5 stopped by SIGTERM in %v", time.Since(stop).Round(time.Millisecond))

	for _, a := range agents {
		a.start(t)
	}
	sts, took := waitAgree(t, agents, 10*time.Second, "a Red Leader after the restart", func(s api.RedLeaderInfo, sts []*api.StatusResponse) error {
		if sts[0].Raft.ClusterID != cluster {
			return fmt.Errorf("cluster %s, was %s", sts[0].Raft.ClusterID, cluster)
		}
		return notMarked(s, sts)
	})
	t.Logf("restart of all 5: Red Leader %s (epoch %d) agreed %v after the last start, same cluster",
		sts[0].RedLeader.Name, sts[0].RedLeader.Epoch, took.Round(time.Millisecond))
	for _, a := range agents {
		if p, err := a.policy(); err != nil || p != pol {
			t.Errorf("%s: policy after restart %+v (%v), want %+v", a.h.Name, p, err, pol)
		}
	}
	wait.For(t, 5*time.Second, "admin mark listed by every agent", func() bool {
		for _, a := range agents {
			if !a.markedIn(t, marked.node) {
				return false
			}
		}
		return true
	})
}

// TestLabElectionNLM: `redleader nlm NODE on` works whichever agent it is
// sent to (a standby, the Raft leader, the Red Leader itself; NODE as a
// name, an ID prefix, a full ID) and the marked Red Leader is replaced.
// Without the token, mutating calls are refused. Lifting the marks does
// not displace the Red Leader.
func TestLabElectionNLM(t *testing.T) {
	t.Parallel()
	l := lab.New(t, lab.Options{Subnets: 1, WANRate: "off"})
	agents, _ := startAgents(t, l, 4, openAdmin)
	waitAgree(t, agents, 10*time.Second, "4 agents agree", nil)
	waitRaft(t, agents, 3, 1, 30*time.Second)

	var marked []*agent
	for round, from := range []string{"standby", "raft-leader", "red-leader"} {
		sts, _ := waitAgree(t, agents, 5*time.Second, "agreement", nil)
		rl := byNode(agents, sts[0].RedLeader.Node)
		var sender *agent
		for i, st := range sts {
			switch {
			case from == "standby" && st.Raft.State == "standby" && agents[i] != rl,
				from == "raft-leader" && st.Raft.State == "leader",
				from == "red-leader" && agents[i] == rl:
				sender = agents[i]
			}
		}
		if sender == nil {
			t.Fatalf("round %d: no %s to send from: %+v", round, from, sts)
		}
		target := []string{rl.h.Name, rl.node[:8], rl.node}[round]
		start := time.Now()
		if out, err := sender.cli(t, "nlm", target, "on"); err != nil || !strings.Contains(out, rl.node) {
			t.Fatalf("nlm %s on from %s: %v\n%s", target, sender.h.Name, err, out)
		}
		marked = append(marked, rl)
		sts, took := waitAgree(t, agents, 5*time.Second, "marked Red Leader replaced", func(s api.RedLeaderInfo, _ []*api.StatusResponse) error {
			if byNode(marked, s.Node) != nil {
				return fmt.Errorf("seat on marked %s", s.Name)
			}
			return nil
		})
		t.Logf("nlm %s on, sent to the %s (%s): Red Leader %s → %s in %v (%v after the CLI returned)", target, from, sender.h.Name,
			rl.h.Name, sts[0].RedLeader.Name, time.Since(start).Round(time.Millisecond), took.Round(time.Millisecond))
	}
	evs := agents[0].events(t)
	for _, m := range marked {
		if e, ok := lastEvent(evs, "mark", m.node); !ok || !strings.HasPrefix(e.Reason, "admin mark") {
			t.Errorf("no admin mark event for %s: %+v", m.h.Name, e)
		}
		if e, ok := lastEvent(evs, "vacate", m.node); !ok {
			t.Errorf("no vacate event for %s: %+v", m.h.Name, e)
		}
	}

	// Mutating calls need the token.
	a := agents[0]
	for _, tok := range []string{"", "not-the-token"} {
		c := a.client(api.WithToken(tok))
		var ae *api.Error
		if _, err := c.SetPolicy(shortCtx(t, 10*time.Second), api.PolicyInfo{PeerRate: "1Mbit"}); !errors.As(err, &ae) ||
			ae.Status != http.StatusUnauthorized || !strings.Contains(ae.Message, "token") {
			t.Errorf("PUT /v1/policy with token %q: %v, want a 401 about the token", tok, err)
		}
		if _, err := c.NLM(shortCtx(t, 10*time.Second), api.NLMRequest{Node: agents[1].node, On: true}); !errors.As(err, &ae) ||
			ae.Status != http.StatusUnauthorized || !strings.Contains(ae.Message, "token") {
			t.Errorf("POST /v1/nlm with token %q: %v, want a 401 about the token", tok, err)
		}
	}
	if out, err := a.h.Command(shortCtx(t, 10*time.Second), lab.Binary(t), "nlm", agents[1].h.Name, "on",
		"--data-dir", t.TempDir()).CombinedOutput(); err == nil || !strings.Contains(string(out), "token") {
		t.Errorf("nlm with no token in the data dir: %v: %s", err, out)
	}

	// Lifting every mark keeps the seat where it is.
	sts, _ := waitAgree(t, agents, 5*time.Second, "agreement", nil)
	seat := *sts[0].RedLeader
	for _, m := range marked {
		if out, err := agents[0].cli(t, "nlm", m.node, "off"); err != nil {
			t.Fatalf("nlm off: %v\n%s", err, out)
		}
	}
	time.Sleep(2 * time.Second)
	waitAgree(t, agents, 5*time.Second, "seat unchanged after the marks are lifted", func(s api.RedLeaderInfo, _ []*api.StatusResponse) error {
		if s.Node != seat.Node || s.Epoch != seat.Epoch {
			return fmt.Errorf("seat moved to %s@%d", s.Name, s.Epoch)
		}
		return nil
	})
	for _, m := range marked {
		if mi, ok := agents[0].memberInfo(t, m.node); !ok || !mi.Eligible {
			t.Errorf("%s still ineligible after nlm off: %+v", m.h.Name, mi)
		}
	}
}
