package election

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestVoterTargets(t *testing.T) {
	tests := []struct {
		eligible, stable, voters, standbys int
	}{
		{0, 0, 1, 0},
		{1, 1, 1, 0},
		{2, 2, 1, 1},
		{3, 3, 3, 0},
		{4, 0, 3, 1},
		{5, 5, 3, 2},
		{6, 6, 3, 2},
		{7, 5, 5, 2},
		{7, 4, 3, 2},
		{8, 8, 5, 2},
		{1000, 4, 3, 2},
		{1000, 1000, 5, 2},
	}
	for _, tt := range tests {
		v, s := VoterTargets(tt.eligible, tt.stable)
		if v != tt.voters || s != tt.standbys {
			t.Errorf("VoterTargets(%d, %d) = %d, %d; want %d, %d", tt.eligible, tt.stable, v, s, tt.voters, tt.standbys)
		}
	}
}

var vnow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// vm builds an alive, long-stable desktop member.
func vm(node string) VoterCandidate {
	return VoterCandidate{Node: node, Address: node + ":7000", Status: StatusAlive, Since: vnow.Add(-time.Hour),
		Class: ClassDesktop, Uptime: time.Hour, CaughtUp: false}
}

func with(m VoterCandidate, f func(*VoterCandidate)) VoterCandidate { f(&m); return m }

func dead(m VoterCandidate, ago time.Duration) VoterCandidate {
	return with(m, func(m *VoterCandidate) { m.Status, m.Since = StatusDead, vnow.Add(-ago) })
}

func caughtUp(m VoterCandidate) VoterCandidate {
	return with(m, func(m *VoterCandidate) { m.CaughtUp = true })
}

// cfg builds a configuration: voters then standbys.
func cfg(voters []string, standbys ...string) raft.Configuration {
	var c raft.Configuration
	for _, v := range voters {
		c.Servers = append(c.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(v), Address: raft.ServerAddress(v + ":7000")})
	}
	for _, s := range standbys {
		c.Servers = append(c.Servers, raft.Server{Suffrage: raft.Nonvoter, ID: raft.ServerID(s), Address: raft.ServerAddress(s + ":7000")})
	}
	return c
}

func members(ms ...VoterCandidate) []VoterCandidate { return ms }

func TestPlanVoters(t *testing.T) {
	const grace = time.Minute
	S := vm("S") // the Raft leader
	tests := []struct {
		name     string
		config   raft.Configuration
		members  []VoterCandidate
		action   VoterAction
		node     string
		voters   int // target
		standbys int // target
		reason   string
	}{
		// Sizing.
		{"alone", cfg([]string{"S"}), members(S), VoterNone, "", 1, 0, "no change"},
		{"alone, self not reported", cfg([]string{"S"}), nil, VoterNone, "", 1, 0, ""},
		{"2 members: 1 voter, 1 standby", cfg([]string{"S"}), members(S, vm("B")), VoterAddStandby, "B", 1, 1, "add standby B"},
		{"2 members complete", cfg([]string{"S"}, "B"), members(S, caughtUp(vm("B"))), VoterNone, "", 1, 1, ""},
		{"3 members: standby for promotion", cfg([]string{"S"}), members(S, vm("B"), vm("C")), VoterAddStandby, "B", 3, 0, ""},
		{"3 members: promote caught-up standby first", cfg([]string{"S"}, "B"), members(S, caughtUp(vm("B")), vm("C")), VoterPromote, "B", 3, 0, "promote B"},
		{"standby not caught up: add another", cfg([]string{"S"}, "B"), members(S, vm("B"), vm("C")), VoterAddStandby, "C", 3, 0, ""},
		{"3 voters complete", cfg([]string{"S", "B", "C"}), members(S, vm("B"), vm("C")), VoterNone, "", 3, 0, ""},
		{"7 members, 5 stable: 5 voters", cfg([]string{"S", "B", "C"}, "D", "E"),
			members(S, vm("B"), vm("C"), caughtUp(vm("D")), vm("E"), vm("F"), vm("G")), VoterPromote, "D", 5, 2, ""},
		{"7 members, 4 stable: 3 voters", cfg([]string{"S", "B", "C"}, "D", "E"),
			members(S, vm("B"), vm("C"), caughtUp(laptop(vm("D"))), laptop(vm("E")), laptop(vm("F")), laptop(vm("G"))), VoterNone, "", 3, 2, ""},
		{"5 voters + 2 standbys complete", cfg([]string{"S", "B", "C", "D", "E"}, "F", "G"),
			members(S, vm("B"), vm("C"), vm("D"), vm("E"), vm("F"), vm("G"), vm("H")), VoterNone, "", 5, 2, ""},
		{"healthy voters are never demoted", cfg([]string{"S", "B", "C", "D", "E"}), members(S, vm("B"), vm("C"), vm("D"), vm("E")), VoterNone, "", 3, 2, ""},

		// Choosing voters for stability.
		{"server class preferred", cfg([]string{"S"}), members(S, laptop(vm("A")), serverClass(vm("Z")), vm("M")), VoterAddStandby, "Z", 3, 1, ""},
		{"laptop last", cfg([]string{"S"}), members(S, laptop(with(vm("A"), func(m *VoterCandidate) { m.Uptime = 99 * time.Hour })), vm("M")), VoterAddStandby, "M", 3, 0, ""},
		{"uptime next", cfg([]string{"S"}), members(S, vm("A"), with(vm("B"), func(m *VoterCandidate) { m.Uptime = 2 * time.Hour })), VoterAddStandby, "B", 3, 0, ""},
		{"node ID last", cfg([]string{"S"}), members(S, vm("Y"), vm("X")), VoterAddStandby, "X", 3, 0, ""},
		{"caught-up standby promoted before a better one", cfg([]string{"S"}, "L", "Z"),
			members(S, caughtUp(laptop(vm("L"))), serverClass(vm("Z"))), VoterPromote, "L", 3, 0, ""},
		{"opted-out member never added", cfg([]string{"S"}), members(S, with(vm("B"), func(m *VoterCandidate) { m.OptOut = true })), VoterNone, "", 1, 0, ""},
		{"unstable newcomer waits", cfg([]string{"S"}), members(S, with(vm("B"), func(m *VoterCandidate) { m.Since = vnow.Add(-5 * time.Second) })), VoterNone, "", 1, 0, ""},
		{"suspect newcomer waits", cfg([]string{"S"}), members(S, with(vm("B"), func(m *VoterCandidate) { m.Status = StatusSuspect })), VoterNone, "", 1, 0, ""},
		{"newcomer without address waits", cfg([]string{"S"}), members(S, with(vm("B"), func(m *VoterCandidate) { m.Address = "" })), VoterNone, "", 1, 1, ""},
		{"suspect standby not promoted", cfg([]string{"S"}, "B"), members(S, caughtUp(with(vm("B"), func(m *VoterCandidate) { m.Status = StatusSuspect })), vm("C")),
			VoterAddStandby, "C", 3, 0, ""},

		// Dead and departed servers.
		{"voter rebooting within grace: no churn", cfg([]string{"S", "B", "C"}, "D"), members(S, dead(vm("B"), 30*time.Second), vm("C"), caughtUp(vm("D"))), VoterNone, "", 3, 1, ""},
		{"voter left within grace: no churn", cfg([]string{"S", "B", "C"}, "D"), members(S, left(vm("B"), 59*time.Second), vm("C"), caughtUp(vm("D"))), VoterNone, "", 3, 1, ""},
		{"voter dead past grace: promote the standby first", cfg([]string{"S", "B", "C"}, "D"), members(S, dead(vm("B"), grace), vm("C"), caughtUp(vm("D"))), VoterPromote, "D", 3, 0, ""},
		{"then remove the dead voter", cfg([]string{"S", "B", "C", "D"}), members(S, dead(vm("B"), grace), vm("C"), vm("D")), VoterRemove, "B", 3, 0, "remove voter B: dead"},
		{"dead voter without a standby: remove it", cfg([]string{"S", "B", "C"}), members(S, dead(vm("B"), 2*grace), vm("C")), VoterRemove, "B", 1, 1, ""},
		{"left voter past grace removed", cfg([]string{"S", "B", "C"}), members(S, left(vm("B"), 2*grace), vm("C"), vm("D")), VoterRemove, "B", 3, 0, "left"},
		{"longest gone removed first", cfg([]string{"S", "B", "C", "D", "E"}), members(S, dead(vm("C"), 2*grace), dead(vm("B"), 3*grace), vm("D"), vm("E")), VoterRemove, "B", 3, 0, ""},
		{"more than (voters-1)/2 gone: keep them", cfg([]string{"S", "B", "C"}), members(S, dead(vm("B"), 2*grace), dead(vm("C"), 2*grace)), VoterNone, "", 1, 0, "break quorum"},
		{"the leader is never removed", cfg([]string{"S", "B", "C"}), members(dead(S, time.Hour), vm("B"), vm("C")), VoterNone, "", 3, 0, ""},
		{"dead standby past grace removed", cfg([]string{"S"}, "B"), members(S, dead(vm("B"), 2*grace)), VoterRemove, "B", 1, 0, "remove standby B"},
		{"dead standby within grace kept", cfg([]string{"S"}, "B"), members(S, dead(vm("B"), time.Second)), VoterNone, "", 1, 1, ""},
		{"unknown server kept", cfg([]string{"S", "B", "C"}), members(S, vm("C")), VoterNone, "", 1, 1, ""},

		// Opt-out and surplus.
		{"opted-out standby removed", cfg([]string{"S"}, "B"), members(S, optOut(vm("B"))), VoterRemove, "B", 1, 0, "opted out"},
		{"opted-out voter replaced first", cfg([]string{"S", "B", "C"}, "D"), members(S, optOut(vm("B")), vm("C"), caughtUp(vm("D"))), VoterPromote, "D", 3, 0, ""},
		{"opted-out voter removed once replaced", cfg([]string{"S", "B", "C", "D"}), members(S, optOut(vm("B")), vm("C"), vm("D")), VoterRemove, "B", 3, 0, "replaced"},
		{"surplus standby removed, worst first", cfg([]string{"S", "B", "C"}, "D", "E", "F"),
			members(S, vm("B"), vm("C"), vm("D"), laptop(vm("E")), vm("F")), VoterRemove, "E", 3, 2, ""},

		// Address changes.
		{"moved voter updated in place", cfg([]string{"S", "B", "C"}), members(S, with(vm("B"), func(m *VoterCandidate) { m.Address = "10.0.0.9:7000" }), vm("C")),
			VoterUpdateAddress, "B", 3, 0, "moved"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := VoterParams{Self: "S", Now: vnow, DeadVoterGrace: grace, Stabilization: 10 * time.Second}
			got := PlanVoters(tt.config, tt.members, p)
			if got.Action != tt.action || got.Node != tt.node {
				t.Fatalf("got %s %q, want %s %q (%s)", got.Action, got.Node, tt.action, tt.node, got.Reason)
			}
			if got.Voters != tt.voters || got.Standbys != tt.standbys {
				t.Errorf("targets %d/%d, want %d/%d", got.Voters, got.Standbys, tt.voters, tt.standbys)
			}
			if !strings.Contains(got.Reason, tt.reason) || got.Reason == "" {
				t.Errorf("reason %q lacks %q", got.Reason, tt.reason)
			}
			switch got.Action {
			case VoterAddStandby, VoterPromote, VoterUpdateAddress:
				if got.Address == "" {
					t.Errorf("%s without address", got.Action)
				}
			}
			if got.Action == VoterUpdateAddress && !got.Voter {
				t.Error("moved voter not flagged Voter")
			}
		})
	}
}

func laptop(m VoterCandidate) VoterCandidate {
	return with(m, func(m *VoterCandidate) { m.Class = ClassLaptop })
}

func serverClass(m VoterCandidate) VoterCandidate {
	return with(m, func(m *VoterCandidate) { m.Class = ClassServer })
}

func optOut(m VoterCandidate) VoterCandidate {
	return with(m, func(m *VoterCandidate) { m.OptOut = true })
}

func left(m VoterCandidate, ago time.Duration) VoterCandidate {
	return with(m, func(m *VoterCandidate) { m.Status, m.Since = StatusLeft, vnow.Add(-ago) })
}

// TestPlanVotersConverges runs the plan round by round, applying each
// change as the Raft leader would, and checks that a subnet reaches the
// target configuration, one change at a time, without ever removing a
// healthy voter or the leader.
func TestPlanVotersConverges(t *testing.T) {
	const grace = time.Minute
	r := rand.New(rand.NewPCG(5, 6))
	for iter := range 300 {
		n := 1 + r.IntN(12)
		var ms []VoterCandidate
		for i := range n {
			m := vm(fmt.Sprintf("N%02d", i))
			m.CaughtUp = true
			m.Uptime = time.Duration(r.IntN(100)) * time.Minute
			if r.IntN(3) == 0 {
				m.Class = ClassLaptop
			}
			if i > 0 && r.IntN(8) == 0 {
				m.OptOut = true
			}
			ms = append(ms, m)
		}
		self := ms[0].Node
		ms[0].OptOut = false
		config := cfg([]string{self})
		p := VoterParams{Self: self, Now: vnow, DeadVoterGrace: grace}
		// Kill some members after the cluster has formed.
		var killed bool
		for round := 0; ; round++ {
			if round > 60 {
				t.Fatalf("iter %d: no convergence: %+v", iter, config)
			}
			ch := PlanVoters(config, ms, p)
			if ch.Action == VoterNone {
				if killed || n < 4 {
					checkConfig(t, iter, config, ms, ch)
					break
				}
				// Kill some members, never so many voters that quorum is lost
				// (that case is the re-bootstrap path, not the plan's).
				killed = true
				voters := 0
				for _, s := range config.Servers {
					if s.Suffrage == raft.Voter {
						voters++
					}
				}
				deadVoters := 0
				for i := 1; i < n; i++ {
					if r.IntN(4) != 0 {
						continue
					}
					isVoter := slices.ContainsFunc(config.Servers, func(s raft.Server) bool {
						return string(s.ID) == ms[i].Node && s.Suffrage == raft.Voter
					})
					if isVoter {
						if deadVoters+1 > (voters-1)/2 {
							continue
						}
						deadVoters++
					}
					ms[i] = dead(ms[i], 2*grace)
				}
				continue
			}
			config = applyChange(t, iter, config, ms, ch, self)
		}
	}
}

// applyChange applies ch to config, checking its safety.
func applyChange(t *testing.T, iter int, config raft.Configuration, ms []VoterCandidate, ch VoterChange, self string) raft.Configuration {
	t.Helper()
	i := slices.IndexFunc(config.Servers, func(s raft.Server) bool { return string(s.ID) == ch.Node })
	switch ch.Action {
	case VoterAddStandby:
		if i >= 0 {
			t.Fatalf("iter %d: add of configured %s", iter, ch.Node)
		}
		config.Servers = append(config.Servers, raft.Server{Suffrage: raft.Nonvoter, ID: raft.ServerID(ch.Node), Address: raft.ServerAddress(ch.Address)})
	case VoterPromote:
		if i < 0 || config.Servers[i].Suffrage != raft.Nonvoter {
			t.Fatalf("iter %d: promote of non-standby %s", iter, ch.Node)
		}
		config.Servers[i].Suffrage = raft.Voter
	case VoterRemove:
		if i < 0 || ch.Node == self {
			t.Fatalf("iter %d: bad remove of %s", iter, ch.Node)
		}
		m := ms[slices.IndexFunc(ms, func(m VoterCandidate) bool { return m.Node == ch.Node })]
		if config.Servers[i].Suffrage == raft.Voter && m.Status == StatusAlive && !m.OptOut {
			t.Fatalf("iter %d: healthy voter %s removed: %s", iter, ch.Node, ch.Reason)
		}
		config.Servers = slices.Delete(config.Servers, i, i+1)
	default:
		t.Fatalf("iter %d: unexpected %s", iter, ch.Action)
	}
	return config
}

// checkConfig checks a converged configuration against the targets.
func checkConfig(t *testing.T, iter int, config raft.Configuration, ms []VoterCandidate, ch VoterChange) {
	t.Helper()
	alive := map[string]VoterCandidate{}
	eligible := 0
	for _, m := range ms {
		if m.Status == StatusAlive {
			alive[m.Node] = m
			if !m.OptOut {
				eligible++
			}
		}
	}
	voters, standbys := 0, 0
	for _, s := range config.Servers {
		m, ok := alive[string(s.ID)]
		if !ok || m.OptOut {
			t.Fatalf("iter %d: converged with dead or opted-out %s: %s", iter, s.ID, ch.Reason)
		}
		if s.Suffrage == raft.Voter {
			voters++
		} else {
			standbys++
		}
	}
	if voters < ch.Voters && voters < eligible {
		t.Fatalf("iter %d: %d voters, target %d, %d eligible: %s", iter, voters, ch.Voters, eligible, ch.Reason)
	}
	if standbys < min(ch.Standbys, eligible-voters) || standbys > ch.Standbys {
		t.Fatalf("iter %d: %d standbys, target %d (%d voters, %d eligible): %s", iter, standbys, ch.Standbys, voters, eligible, ch.Reason)
	}
}

func TestRankVoters(t *testing.T) {
	got := RankVoters(members(
		vm("D"),
		serverClass(vm("Z")),
		laptop(vm("A")),
		optOut(serverClass(vm("O"))),
		dead(serverClass(vm("X")), time.Second),
		with(vm("C"), func(m *VoterCandidate) { m.Uptime = 5 * time.Hour }),
		vm("B"),
		vm("B"),
	))
	want := []string{"Z", "C", "B", "D", "A"}
	if !slices.Equal(got, want) {
		t.Fatalf("RankVoters = %v, want %v", got, want)
	}
}

func TestVoterNames(t *testing.T) {
	if StatusLeft.String() != "left" || ClassServer.String() != "server" || VoterPromote.String() != "promote" ||
		MemberStatus(9).String() == "" || MachineClass(9).String() == "" || VoterAction(9).String() == "" {
		t.Error("bad names")
	}
	if ClassLaptop.Stable() || !ClassUnknown.Stable() || !ClassServer.Stable() {
		t.Error("bad Stable")
	}
}

func BenchmarkPlanVoters1000(b *testing.B) {
	var ms []VoterCandidate
	for i := range 1000 {
		ms = append(ms, vm(fmt.Sprintf("node-%04d", i)))
	}
	config := cfg([]string{"node-0000", "node-0001", "node-0002", "node-0003", "node-0004"}, "node-0005", "node-0006")
	p := VoterParams{Self: "node-0000", Now: vnow, DeadVoterGrace: time.Minute}
	for b.Loop() {
		PlanVoters(config, ms, p)
	}
}
