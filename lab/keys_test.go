//go:build linux

package lab_test

// End-to-end test of cluster key rotation (issue 9, build 5): real agents
// restarted one at a time with their next cluster_keys list.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/config"
	"github.com/redleader-p2p/redleader/internal/wait"
	"github.com/redleader-p2p/redleader/lab"
	"github.com/redleader-p2p/redleader/peer/api"
)

// keygen runs `redleader keygen` (no network) in h and returns the key.
func keygen(t *testing.T, h *lab.Host) string {
	t.Helper()
	out, err := h.Command(shortCtx(t, 10*time.Second), lab.Binary(t), "keygen").Output()
	if err != nil {
		t.Fatalf("keygen: %v", err)
	}
	key := strings.TrimSpace(string(out))
	if _, err := config.DecodeKey(key); err != nil {
		t.Fatalf("keygen printed %q: %v", key, err)
	}
	return key
}

// keysEnv is the environment of an agent with the given cluster keys
// (primary first). The default nlm_ttl (10m) holds: a Red Leader stopped by
// SIGTERM retires its seat and is neither appointed again nor marked as it
// leaves, so a rolling restart never runs out of candidates.
func keysEnv(keys ...string) []string {
	return []string{
		"REDLEADER_CLUSTER_KEYS=" + strings.Join(keys, ","),
		"REDLEADER_ELECTION_VOTER_STABILIZATION=1s", // 3 voters sooner: restarts keep a Raft quorum
	}
}

// beaconCounts reads a's redleader_beacons_{received,dropped}_total.
func (a *agent) beaconCounts() (received, dropped float64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := newGet(ctx, "http://127.0.0.1:7380/metrics")
	if err != nil {
		return 0, 0, err
	}
	resp, err := a.h.HTTPClient().Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("/metrics: HTTP %d", resp.StatusCode)
	}
	found := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		var dst *float64
		switch {
		case !ok:
			continue
		case name == "redleader_beacons_received_total":
			dst = &received
		case name == "redleader_beacons_dropped_total":
			dst = &dropped
		default:
			continue
		}
		if *dst, err = strconv.ParseFloat(val, 64); err != nil {
			return 0, 0, fmt.Errorf("/metrics %s: %w", name, err)
		}
		found++
	}
	if found != 2 {
		return 0, 0, errors.New("/metrics lacks the beacon counters")
	}
	return received, dropped, sc.Err()
}

// onePool reports why agents do not form exactly one pool (each lists
// exactly the agents, all alive, and nobody else), or nil.
func onePool(t *testing.T, agents []*agent) error {
	views := make([][]string, len(agents))
	var wg sync.WaitGroup
	for i, a := range agents {
		wg.Go(func() {
			for _, m := range a.members(t) {
				views[i] = append(views[i], m.Name+"="+m.Status)
			}
		})
	}
	wg.Wait()
	for i, a := range agents {
		if !a.seesExactly(t, agents) {
			return fmt.Errorf("%s lists %v", a.h.Name, views[i])
		}
	}
	return nil
}

// rotationSampler checks the subnet every 200 ms while the keys roll out:
// never two agents with role=leader; outside a settle window (from the
// SIGTERM of an agent until shortly after the subnet has agreed again
// with it back) one pool and one confirmed Red Leader in every sample.
type rotationSampler struct {
	t      *testing.T
	agents []*agent
	s      *sampler

	mu       sync.Mutex
	settling bool
	gen      int // bumped at every settle window change

	checked int // samples fully checked; read after finish
}

func startRotationSampler(t *testing.T, agents []*agent) *rotationSampler {
	r := &rotationSampler{t: t, agents: agents}
	r.s = newSampler(200*time.Millisecond, r.check)
	return r
}

func (r *rotationSampler) setSettling(on bool) {
	r.mu.Lock()
	r.settling = on
	r.gen++
	r.mu.Unlock()
}

func (r *rotationSampler) window() (bool, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.settling, r.gen
}

// check is one sample.
func (r *rotationSampler) check() []string {
	settling0, gen0 := r.window()
	sts := statuses(r.agents)
	ls := leaders(r.agents, sts)
	var problem string
	if len(ls) > 1 {
		problem = fmt.Sprintf("role=leader on %v", ls)
	}
	full := false
	if problem == "" && !settling0 {
		if _, err := agreement(r.agents, sts); err != nil {
			problem = "no single confirmed Red Leader: " + err.Error()
		} else if err := onePool(r.t, r.agents); err != nil {
			problem = "not one pool: " + err.Error()
		}
		full = true
	}
	settling1, gen1 := r.window()
	exempt := settling1 || gen1 != gen0 // a window opened during the sample
	if full && !exempt {
		r.checked++
	}
	if problem != "" && (len(ls) > 1 || !exempt) {
		return []string{problem}
	}
	return nil
}

func (r *rotationSampler) finish() (samples, checked int, violations []string) {
	samples, violations = r.s.finish()
	return samples, r.checked, violations
}

// TestKeyRotation: 3 agents on [old] move one at a time to [old new], then
// [new old], then [new]. Agents of adjacent steps are mixed all along: the
// subnet keeps one pool and one confirmed Red Leader (sampled every 200 ms,
// a short settle allowed per restart), in the same Raft cluster. A 4th
// agent with an unrelated key, present throughout, sees nothing: no
// member, no beacon accepted, and nobody lists it.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	begin := time.Now()
	l := lab.New(t, lab.Options{Subnets: 1, WANRate: "off"})
	strangerHost := l.AddHost(1)
	oldKey, newKey, otherKey := keygen(t, strangerHost), keygen(t, strangerHost), keygen(t, strangerHost)
	if oldKey == newKey || newKey == otherKey || oldKey == otherKey {
		t.Fatal("keygen printed the same key twice")
	}
	stranger := startAgentEnv(t, strangerHost, keysEnv(otherKey))
	agents, last := startAgents(t, l, 3, keysEnv(oldKey)...)
	sts, _ := waitAgree(t, agents, 15*time.Second, "3 agents on [old] agree", nil)
	waitRaft(t, agents, 3, 0, 20*time.Second)
	wait.ForErr(t, 10*time.Second, "one pool on [old]", func() error { return onePool(t, agents) })
	cluster := sts[0].Raft.ClusterID
	t.Logf("3 agents on [old]: one pool, Red Leader %s, 3 voters %v after the last start",
		sts[0].RedLeader.Name, time.Since(last).Round(time.Millisecond))

	s := startRotationSampler(t, agents)
	steps := []struct {
		name string
		keys []string
	}{
		{"[old new]", []string{oldKey, newKey}},
		{"[new old]", []string{newKey, oldKey}},
		{"[new]", []string{newKey}},
	}
	const settle = time.Second // after agreement, before samples count again
	for _, step := range steps {
		for _, a := range agents {
			s.setSettling(true)
			restart := time.Now()
			if err := a.p.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if err := a.p.Wait(15 * time.Second); err != nil {
				_ = a.p.Signal(syscall.SIGQUIT)
				_ = a.p.Wait(2 * time.Second)
				t.Fatalf("%s: SIGTERM: %v", a.h.Name, err)
			}
			a.env = keysEnv(step.keys...)
			a.start(t)
			_, took := waitAgree(t, agents, 20*time.Second, a.h.Name+" back on "+step.name,
				func(_ api.RedLeaderInfo, sts []*api.StatusResponse) error {
					if sts[0].Raft.ClusterID != cluster {
						return fmt.Errorf("cluster %s, want %s", sts[0].Raft.ClusterID, cluster)
					}
					return onePool(t, agents)
				})
			time.Sleep(settle)
			s.setSettling(false)
			t.Logf("%s restarted on %s: one pool and one confirmed Red Leader again %v after its SIGTERM (agreement %v after its start)",
				a.h.Name, step.name, time.Since(restart).Round(time.Millisecond), took.Round(time.Millisecond))
			time.Sleep(time.Second) // a stretch of mixed steps, sampled with no settle allowance
		}
	}
	samples, checked, violations := s.finish()
	t.Logf("rollout sampled %d times every 200 ms, %d fully checked outside settle windows", samples, checked)
	for _, v := range violations {
		t.Error(v)
	}
	if checked < 9 {
		t.Errorf("only %d samples outside settle windows: the test checked too little", checked)
	}

	// The stranger saw nothing all along, and nobody saw it.
	if ms := stranger.members(t); len(ms) != 1 || !ms[0].Self {
		t.Errorf("the agent with an unrelated key lists %v, want only itself", ms)
	}
	received, dropped, err := stranger.beaconCounts()
	switch {
	case err != nil:
		t.Errorf("stranger's beacon counters: %v", err)
	case received != 0:
		t.Errorf("the agent with an unrelated key accepted %v beacons", received)
	case dropped == 0:
		t.Error("the agent with an unrelated key dropped no beacon: it heard none, the check proves nothing")
	}
	for _, a := range agents {
		if statusOf(a.members(t), stranger.nodeID(t)) != "" {
			t.Errorf("%s lists the agent with an unrelated key", a.h.Name)
		}
	}
	final := statuses(agents)
	if seat, err := agreement(agents, final); err != nil {
		t.Errorf("after the rollout: %v", err)
	} else {
		t.Logf("all 3 on [new]: Red Leader %s (epoch %d), cluster unchanged; whole test %v", seat.Name, seat.Epoch,
			time.Since(begin).Round(time.Millisecond))
	}
	if slices.ContainsFunc(final, func(st *api.StatusResponse) bool { return st == nil || st.Members.Alive != 3 }) {
		t.Errorf("after the rollout not every agent counts 3 alive members")
	}
}
