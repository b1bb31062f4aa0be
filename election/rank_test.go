package election

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

const mib = 1 << 20

// seedMember builds an alive candidate for the seed scenario.
func seedMember(node string, p Priority, version int, progressMiB uint64, uptimeSec int) Candidate {
	return Candidate{
		Node: node, Alive: true, Priority: p, Version: version,
		Progress: progressMiB * mib, Uptime: time.Duration(uptimeSec) * time.Second,
	}
}

// TestRankSeedScenario is the acceptance scenario of issue 3: eight steps,
// the Red Leader of each step carried over as the next step's incumbent.
func TestRankSeedScenario(t *testing.T) {
	m1 := seedMember("M1", PriorityNone, 1, 0, 5000)
	m4 := seedMember("M4", PriorityLow, 1, 0, 3000)
	m5 := seedMember("M5", PriorityLow, 1, 0, 9000)
	m6 := seedMember("M6", PriorityHigh, 1, 0, 1000)
	m7 := seedMember("M7", PriorityHigh, 2, 0, 500)

	steps := []struct {
		name   string
		change func()
		want   string
		rule   Rule
	}{
		{"1 M1 joins, no job", func() {}, "M1", RuleFresh},
		{"2 M4 joins with a low job", func() {}, "M4", RuleDisplacePriority},
		{"3 M5 joins, same low job, progress within 10%, more uptime", func() {
			m4.Progress, m5.Progress = 100*mib, 105*mib
		}, "M4", RuleKeep},
		{"4 M6 joins with a high job", func() { m6.Progress = 40 * mib }, "M6", RuleDisplacePriority},
		{"5 M7 joins, same high job, version 2, less progress", func() { m7.Progress = 10 * mib }, "M7", RuleDisplaceVersion},
		{"6 M6 and M7 finish; M4, M5 still on the low job", func() {
			m6.Priority, m6.Progress = PriorityNone, 0
			m7.Priority, m7.Progress = PriorityNone, 0
			m4.Progress, m5.Progress = 300*mib, 310*mib
		}, "M5", RuleDisplacePriority},
		{"7 M4 and M5 finish", func() {
			m4.Priority, m4.Progress = PriorityNone, 0
			m5.Priority, m5.Progress = PriorityNone, 0
		}, "M7", RuleDisplaceVersion},
		{"8 nothing is transferring", func() {}, "M7", RuleKeep},
	}
	joined := [][]*Candidate{
		{&m1}, {&m1, &m4}, {&m1, &m4, &m5}, {&m1, &m4, &m5, &m6},
		{&m1, &m4, &m5, &m6, &m7}, {&m1, &m4, &m5, &m6, &m7}, {&m1, &m4, &m5, &m6, &m7}, {&m1, &m4, &m5, &m6, &m7},
	}
	incumbent := ""
	for i, st := range steps {
		st.change()
		var members []Candidate
		for _, m := range joined[i] {
			members = append(members, *m)
		}
		d := Rank(incumbent, members)
		t.Logf("step %s: %s", st.name, d.Reason)
		if d.Leader != st.want || d.Rule != st.rule {
			t.Fatalf("step %s: leader %q rule %s, want %q rule %s (%s)", st.name, d.Leader, d.Rule, st.want, st.rule, d.Reason)
		}
		if d.Changed != (st.want != incumbent) {
			t.Fatalf("step %s: Changed = %v", st.name, d.Changed)
		}
		if d.Order[0].Node != st.want || d.Order[0].Rank != 1 {
			t.Fatalf("step %s: Order[0] = %+v", st.name, d.Order[0])
		}
		incumbent = d.Leader
	}
}

func TestRankRules(t *testing.T) {
	c := func(node string, p Priority, v int, progress uint64, uptime int) Candidate {
		return Candidate{Node: node, Alive: true, Priority: p, Version: v, Progress: progress, Uptime: time.Duration(uptime) * time.Second}
	}
	dead := func(x Candidate) Candidate { x.Alive = false; return x }
	nlm := func(x Candidate) Candidate { x.NotLeaderMaterial = true; return x }
	marked := func(x Candidate) Candidate { x.Marked = true; return x }

	tests := []struct {
		name      string
		incumbent string
		members   []Candidate
		leader    string
		rule      Rule
		crit      Criterion // checked when the winner is not empty
		order     []string  // optional: expected eligible order
	}{
		// Eligibility (rule 1).
		{"empty", "", nil, "", RuleNoCandidate, 0, nil},
		{"all ineligible", "A", []Candidate{dead(c("A", 0, 1, 0, 9)), nlm(c("B", 0, 1, 0, 9)), marked(c("C", 0, 1, 0, 9))}, "", RuleNoCandidate, 0, []string{}},
		{"single member", "", []Candidate{c("A", 0, 1, 0, 1)}, "A", RuleFresh, CriterionOnly, []string{"A"}},
		{"dead member skipped", "", []Candidate{dead(c("A", 4, 2, 9, 9)), c("B", 0, 1, 0, 1)}, "B", RuleFresh, CriterionOnly, []string{"B"}},
		{"local NLM flag skipped", "", []Candidate{nlm(c("A", 4, 2, 9, 9)), c("B", 0, 1, 0, 1)}, "B", RuleFresh, CriterionOnly, nil},
		{"NLM mark skipped", "", []Candidate{marked(c("A", 4, 2, 9, 9)), c("B", 0, 1, 0, 1)}, "B", RuleFresh, CriterionOnly, nil},
		{"dead incumbent replaced", "A", []Candidate{dead(c("A", 4, 2, 9, 9)), c("B", 0, 1, 0, 1)}, "B", RuleFresh, CriterionOnly, nil},
		{"marked incumbent replaced", "A", []Candidate{marked(c("A", 4, 2, 9, 9)), c("B", 0, 1, 0, 1)}, "B", RuleFresh, CriterionOnly, nil},
		{"NLM incumbent replaced", "A", []Candidate{nlm(c("A", 4, 2, 9, 9)), c("B", 0, 1, 0, 1)}, "B", RuleFresh, CriterionOnly, nil},
		{"vanished incumbent replaced", "Z", []Candidate{c("B", 0, 1, 0, 1)}, "B", RuleFresh, CriterionOnly, nil},

		// Fresh choice (rule 2), one case per tie-break.
		{"fresh: priority first", "", []Candidate{c("A", PriorityLow, 2, 1000, 9000), c("B", PriorityNormal, 1, 0, 1)}, "B", RuleFresh, CriterionPriority, []string{"B", "A"}},
		{"fresh: foreground beats high", "", []Candidate{c("A", PriorityHigh, 1, 0, 1), c("B", PriorityForeground, 1, 0, 1)}, "B", RuleFresh, CriterionPriority, nil},
		{"fresh: version second", "", []Candidate{c("A", PriorityLow, 1, 1000, 9000), c("B", PriorityLow, 2, 0, 1)}, "B", RuleFresh, CriterionVersion, nil},
		{"fresh: progress outside 10% loses despite uptime", "", []Candidate{c("A", 1, 1, 100, 9000), c("B", 1, 1, 111, 1)}, "B", RuleFresh, CriterionProgress, []string{"B", "A"}},
		{"fresh: exactly 10% is within, uptime decides", "", []Candidate{c("A", 1, 1, 100, 9000), c("B", 1, 1, 110, 1)}, "A", RuleFresh, CriterionUptime, []string{"A", "B"}},
		{"fresh: just over 10% is outside", "", []Candidate{c("A", 1, 1, 1000, 9000), c("B", 1, 1, 1101, 1)}, "B", RuleFresh, CriterionProgress, nil},
		{"fresh: exactly 10% large values", "", []Candidate{c("A", 1, 1, 1000, 9000), c("B", 1, 1, 1100, 1)}, "A", RuleFresh, CriterionUptime, nil},
		{"fresh: zero progress all, uptime decides", "", []Candidate{c("A", 0, 1, 0, 10), c("B", 0, 1, 0, 20)}, "B", RuleFresh, CriterionUptime, []string{"B", "A"}},
		{"fresh: zero vs some progress, zero is outside", "", []Candidate{c("A", 1, 1, 0, 9000), c("B", 1, 1, 1, 1)}, "B", RuleFresh, CriterionProgress, nil},
		{"fresh: uptime third", "", []Candidate{c("A", 1, 1, 100, 10), c("B", 1, 1, 95, 20), c("C", 1, 1, 50, 99)}, "B", RuleFresh, CriterionUptime, []string{"B", "A", "C"}},
		{"fresh: lowest node ID last", "", []Candidate{c("B", 1, 1, 100, 10), c("A", 1, 1, 100, 10)}, "A", RuleFresh, CriterionNodeID, []string{"A", "B"}},
		{"fresh: node ID among uptime equals within window", "", []Candidate{c("C", 1, 1, 100, 10), c("B", 1, 1, 95, 10), c("A", 1, 1, 80, 99)}, "B", RuleFresh, CriterionNodeID, []string{"B", "C", "A"}},
		{"fresh: window is taken within the top priority and version group", "", []Candidate{c("A", 1, 2, 10, 10), c("B", 1, 1, 1000, 10), c("C", 1, 2, 11, 5)}, "A", RuleFresh, CriterionUptime, []string{"A", "C", "B"}},

		// Displacement (rule 3).
		{"keep: incumbent is winner", "A", []Candidate{c("A", 1, 1, 100, 10), c("B", 0, 1, 0, 99)}, "A", RuleKeep, CriterionPriority, nil},
		{"displace: higher priority", "A", []Candidate{c("A", PriorityLow, 2, 1000, 9000), c("B", PriorityNormal, 1, 0, 1)}, "B", RuleDisplacePriority, CriterionPriority, []string{"B", "A"}},
		{"displace: equal priority, higher version", "A", []Candidate{c("A", 1, 1, 1000, 9000), c("B", 1, 2, 0, 1)}, "B", RuleDisplaceVersion, CriterionVersion, nil},
		{"displace: progress more than 10% ahead", "A", []Candidate{c("A", 1, 1, 100, 9000), c("B", 1, 1, 111, 1)}, "B", RuleDisplaceProgress, CriterionProgress, nil},
		{"displace: any progress beats zero progress", "A", []Candidate{c("A", 1, 1, 0, 9000), c("B", 1, 1, 1, 1)}, "B", RuleDisplaceProgress, CriterionProgress, nil},
		{"keep: progress exactly 10% ahead", "A", []Candidate{c("A", 1, 1, 100, 1), c("B", 1, 1, 110, 9000)}, "A", RuleKeep, CriterionUptime, []string{"A", "B"}},
		{"keep: progress 5% ahead", "A", []Candidate{c("A", 1, 1, 100, 1), c("B", 1, 1, 105, 9000)}, "A", RuleKeep, CriterionUptime, nil},
		{"keep: uptime never displaces", "A", []Candidate{c("A", 1, 1, 100, 1), c("B", 1, 1, 100, 9000)}, "A", RuleKeep, CriterionUptime, []string{"A", "B"}},
		{"keep: node ID never displaces", "B", []Candidate{c("A", 1, 1, 100, 1), c("B", 1, 1, 100, 1)}, "B", RuleKeep, CriterionNodeID, []string{"B", "A"}},
		{"keep: zero progress both", "B", []Candidate{c("A", 0, 1, 0, 9000), c("B", 0, 1, 0, 1)}, "B", RuleKeep, CriterionUptime, nil},
		{"keep: winner by uptime has less progress", "A", []Candidate{c("A", 1, 1, 100, 1), c("B", 1, 1, 95, 9000)}, "A", RuleKeep, CriterionUptime, nil},
		// Only the fresh-choice winner is compared with the incumbent: D is
		// more than 10% ahead of A, but the winner C is not.
		{"keep: only the fresh winner may displace", "A", []Candidate{c("A", 1, 1, 100, 1), c("C", 1, 1, 108, 9000), c("D", 1, 1, 115, 5)}, "A", RuleKeep, CriterionUptime, []string{"A", "C", "D"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Rank(tt.incumbent, tt.members)
			if d.Leader != tt.leader || d.Rule != tt.rule {
				t.Fatalf("leader %q rule %s, want %q rule %s (%s)", d.Leader, d.Rule, tt.leader, tt.rule, d.Reason)
			}
			if d.Winner != "" && d.Criterion != tt.crit {
				t.Errorf("criterion %s, want %s (%s)", d.Criterion, tt.crit, d.Reason)
			}
			if d.Reason == "" {
				t.Error("empty reason")
			}
			if d.Changed != (d.Leader != tt.incumbent) {
				t.Errorf("Changed = %v", d.Changed)
			}
			if len(d.Order) != len(tt.members) {
				t.Errorf("order has %d entries, want %d", len(d.Order), len(tt.members))
			}
			if tt.order != nil {
				var got []string
				for _, r := range d.Order {
					if r.Rank > 0 {
						got = append(got, r.Node)
					}
				}
				if !slices.Equal(got, tt.order) && !(len(got) == 0 && len(tt.order) == 0) {
					t.Errorf("order %v, want %v", got, tt.order)
				}
			}
			checkOrder(t, d)
		})
	}
}

// checkOrder verifies the structural invariants of a Decision's order.
func checkOrder(t *testing.T, d Decision) {
	t.Helper()
	seenIneligible := false
	for i, r := range d.Order {
		if r.Rank == 0 {
			seenIneligible = true
			if r.Ineligible == "" {
				t.Errorf("order[%d] %s: rank 0 without reason", i, r.Node)
			}
			continue
		}
		if seenIneligible || r.Rank != i+1 || r.Ineligible != "" {
			t.Errorf("order[%d] = %+v", i, r)
		}
	}
	if d.Leader != "" && (d.RankOf(d.Leader) != 1 || d.Order[0].Node != d.Leader) {
		t.Errorf("leader %s not ranked 1", d.Leader)
	}
}

func TestRankReasons(t *testing.T) {
	d := Rank("A", []Candidate{
		{Node: "A", Alive: true, Priority: PriorityLow, Version: 1},
		{Node: "B", Alive: true, Priority: PriorityHigh, Version: 1},
	})
	for _, want := range []string{"B displaces A", "higher priority", "low", "high"} {
		if !strings.Contains(d.Reason, want) {
			t.Errorf("reason %q lacks %q", d.Reason, want)
		}
	}
	d = Rank("A", []Candidate{{Node: "A", Alive: false}, {Node: "B", Alive: true}})
	if !strings.Contains(d.Reason, "incumbent A is not alive") || !strings.Contains(d.Reason, "fresh choice") {
		t.Errorf("reason %q", d.Reason)
	}
	d = Rank("A", []Candidate{{Node: "A", Alive: true, Marked: true}})
	if !strings.Contains(d.Reason, "no eligible member") || !strings.Contains(d.Reason, "marked") {
		t.Errorf("reason %q", d.Reason)
	}
}

func TestRankNextAndDuplicates(t *testing.T) {
	d := Rank("", []Candidate{
		{Node: "A", Alive: true, Priority: PriorityHigh},
		{Node: "A", Alive: false}, // duplicate: ignored
		{Node: "B", Alive: true},
		{Node: "C", Alive: false},
	})
	if d.Leader != "A" || len(d.Order) != 3 {
		t.Fatalf("decision %+v", d)
	}
	if got := d.Next("A"); got != "B" {
		t.Errorf("Next(A) = %q", got)
	}
	if got := d.Next("B"); got != "A" {
		t.Errorf("Next(B) = %q", got)
	}
	if d.RankOf("C") != 0 || d.RankOf("nobody") != 0 || d.RankOf("B") != 2 {
		t.Errorf("ranks %+v", d.Order)
	}
	if got := (Decision{}).Next(""); got != "" {
		t.Errorf("empty Next = %q", got)
	}
}

func TestWithinTenPercent(t *testing.T) {
	tests := []struct {
		p, best uint64
		want    bool
	}{
		{0, 0, true},
		{0, 1, false},
		{1, 1, true},
		{10, 11, true},
		{10, 12, false},
		{100, 110, true},
		{100, 111, false},
		{math.MaxUint64, math.MaxUint64, true},
		{math.MaxUint64 / 11 * 10, math.MaxUint64 / 11 * 11, true},
		{math.MaxUint64/11*10 - 1, math.MaxUint64 / 11 * 11, false},
	}
	for _, tt := range tests {
		if got := withinTenPercent(tt.p, tt.best); got != tt.want {
			t.Errorf("withinTenPercent(%d, %d) = %v", tt.p, tt.best, got)
		}
	}
}

// TestRankProperties checks invariants on random inputs: the result does
// not depend on input order, a fresh choice never leaves an eligible
// member out, the leader is eligible, and re-ranking with the chosen leader
// as incumbent keeps it (no flapping on unchanged inputs).
func TestRankProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for iter := range 2000 {
		n := r.IntN(8)
		members := make([]Candidate, n)
		for i := range members {
			members[i] = Candidate{
				Node:              fmt.Sprintf("N%d", i),
				Alive:             r.IntN(6) != 0,
				NotLeaderMaterial: r.IntN(8) == 0,
				Marked:            r.IntN(8) == 0,
				Priority:          Priority(r.IntN(3)),
				Version:           1 + r.IntN(2),
				Progress:          uint64(r.IntN(4)) * 100,
				Uptime:            time.Duration(r.IntN(3)) * time.Second,
			}
		}
		inc := ""
		if n > 0 && r.IntN(2) == 0 {
			inc = members[r.IntN(n)].Node
		}
		d := Rank(inc, members)
		checkOrder(t, d)
		shuffled := slices.Clone(members)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		d2 := Rank(inc, shuffled)
		if d2.Leader != d.Leader || !slices.Equal(d2.Order, d.Order) || d2.Reason != d.Reason {
			t.Fatalf("iter %d: order-dependent result:\n%+v\n%+v", iter, d, d2)
		}
		if d.Leader != "" {
			if again := Rank(d.Leader, members); again.Leader != d.Leader {
				t.Fatalf("iter %d: %s flaps to %s (%s)", iter, d.Leader, again.Leader, again.Reason)
			}
		}
	}
}

func TestPriority(t *testing.T) {
	for p := PriorityNone; p <= PriorityForeground; p++ {
		got, err := ParsePriority(strings.ToUpper(p.String()))
		if err != nil || got != p {
			t.Errorf("ParsePriority(%s) = %v, %v", p, got, err)
		}
	}
	if _, err := ParsePriority("urgent"); err == nil {
		t.Error("ParsePriority(urgent) succeeded")
	}
	if s := Priority(9).String(); s != "priority(9)" {
		t.Errorf("String = %q", s)
	}
	if Rule(99).String() == "" || Criterion(99).String() == "" || RuleKeep.String() != "keep" {
		t.Error("bad names")
	}
}

func BenchmarkRank1000(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	members := make([]Candidate, 1000)
	for i := range members {
		members[i] = Candidate{
			Node: fmt.Sprintf("node-%04d", i), Alive: true, Priority: Priority(r.IntN(2)),
			Version: 1 + r.IntN(2), Progress: uint64(r.IntN(1000)) * mib, Uptime: time.Duration(r.IntN(100000)) * time.Second,
		}
	}
	for b.Loop() {
		Rank("node-0001", members)
	}
}
