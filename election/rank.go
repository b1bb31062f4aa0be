package election

import (
	"cmp"
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"time"
)

// Priority is the priority of a member's highest active job.
type Priority uint8

// Job priorities, lowest first. PriorityNone means the member has no job.
const (
	PriorityNone Priority = iota
	PriorityLow
	PriorityNormal
	PriorityHigh
	PriorityForeground
)

var priorityNames = [...]string{"none", "low", "normal", "high", "foreground"}

// String returns the priority's name.
func (p Priority) String() string {
	if int(p) < len(priorityNames) {
		return priorityNames[p]
	}
	return fmt.Sprintf("priority(%d)", p)
}

// ParsePriority parses a priority name ("none", "low", "normal", "high",
// "foreground").
func ParsePriority(s string) (Priority, error) {
	for i, n := range priorityNames {
		if strings.EqualFold(s, n) {
			return Priority(i), nil
		}
	}
	return 0, fmt.Errorf("%w: priority %q", ErrInvalid, s)
}

// Candidate is one member's ranking input, as published in gossip and
// combined with the committed NotLeaderMaterial marks.
type Candidate struct {
	Node              string // node ID; the final tie-break (lowest wins)
	Alive             bool   // alive in gossip
	Leaving           bool   // shutting down gracefully (or just retired its seat to do so)
	NotLeaderMaterial bool   // the member's own config flag
	Marked            bool   // an active NotLeaderMaterial mark in the FSM
	Priority          Priority
	Version           int    // content protocol version: 1 = PCCRC v1, 2 = v1+v2
	Progress          uint64 // bytes held of its highest-priority job's content
	Uptime            time.Duration
}

// eligibility returns why c cannot be Red Leader, or "" if it can.
func (c Candidate) eligibility() string {
	switch {
	case !c.Alive:
		return "not alive"
	case c.Leaving:
		return "shutting down"
	case c.NotLeaderMaterial:
		return "not leader material (local config)"
	case c.Marked:
		return "marked not leader material"
	}
	return ""
}

// Rule names the ranking rule that produced a Decision.
type Rule uint8

// Ranking outcomes.
const (
	// RuleNoCandidate: no member is eligible; there is no Red Leader.
	RuleNoCandidate Rule = iota
	// RuleFresh: there was no eligible incumbent; the fresh-choice winner leads.
	RuleFresh
	// RuleKeep: the eligible incumbent stays.
	RuleKeep
	// RuleDisplacePriority: the winner's job priority is higher.
	RuleDisplacePriority
	// RuleDisplaceVersion: equal priority, the winner's version is higher.
	RuleDisplaceVersion
	// RuleDisplaceProgress: the winner holds more than 10% more progress.
	RuleDisplaceProgress
)

var ruleNames = [...]string{"no-candidate", "fresh", "keep", "displace-priority", "displace-version", "displace-progress"}

// String returns the rule's short name.
func (r Rule) String() string {
	if int(r) < len(ruleNames) {
		return ruleNames[r]
	}
	return fmt.Sprintf("rule(%d)", r)
}

// Criterion names what separated the fresh-choice winner from the runner-up.
type Criterion uint8

// Fresh-choice criteria, in the order they are applied.
const (
	CriterionOnly     Criterion = iota // a single eligible member
	CriterionPriority                  // highest job priority
	CriterionVersion                   // highest protocol version
	CriterionProgress                  // the only one within 10% of the best progress
	CriterionUptime                    // highest uptime among those within 10%
	CriterionNodeID                    // lowest node ID
)

var criterionNames = [...]string{"only candidate", "priority", "version", "progress", "uptime", "node ID"}

// String returns the criterion's name.
func (c Criterion) String() string {
	if int(c) < len(criterionNames) {
		return criterionNames[c]
	}
	return fmt.Sprintf("criterion(%d)", c)
}

// Ranked is one member's place in a Decision's ordering.
type Ranked struct {
	Node string
	// Rank is 1 for the chosen Red Leader, 2 for the next nominee, and so on;
	// 0 for an ineligible member.
	Rank int
	// Ineligible says why the member cannot be Red Leader ("" if eligible).
	Ineligible string
}

// Decision is the outcome of Rank.
type Decision struct {
	Leader    string    // the Red Leader to hold the seat; "" if nobody is eligible
	Incumbent string    // the incumbent passed to Rank
	Changed   bool      // Leader differs from Incumbent: commit an appointment
	Rule      Rule      // the rule that decided
	Winner    string    // the fresh-choice winner ("" if nobody is eligible)
	Criterion Criterion // what made Winner the fresh choice
	Reason    string    // human-readable, for the event log
	// Order lists every member: eligible ones by rank (Leader first), then
	// ineligible ones by node ID.
	Order []Ranked
}

// RankOf returns node's rank in d (0 if ineligible or unknown).
func (d Decision) RankOf(node string) int {
	for _, r := range d.Order {
		if r.Node == node {
			return r.Rank
		}
	}
	return 0
}

// Next returns the best-ranked eligible member other than skip, or "" if
// there is none: the next nominee when skip fails to confirm.
func (d Decision) Next(skip string) string {
	for _, r := range d.Order {
		if r.Rank > 0 && r.Node != skip {
			return r.Node
		}
	}
	return ""
}

// Rank applies the ranking rules of DESIGN.md ("Election") to members,
// given the current Red Leader incumbent ("" if none). It is pure and
// deterministic: the result does not depend on the order of members.
// Node IDs are expected to be unique; for duplicates the first entry wins.
//
// Fresh choice (no eligible incumbent): highest priority; then highest
// version; then, among those whose progress is within 10% of the best
// progress (best ≤ progress × 1.10), highest uptime; then lowest node ID.
// An eligible incumbent L is displaced by the fresh-choice winner C only
// when C.Priority > L.Priority; or equal priority and C.Version >
// L.Version; or C.Priority ≥ L.Priority, C.Version ≥ L.Version and
// C.Progress > L.Progress × 1.10. Uptime never displaces.
func Rank(incumbent string, members []Candidate) Decision {
	seen := make(map[string]bool, len(members))
	var eligible []Candidate
	var ineligible []Ranked
	var inc *Candidate
	incWhy := ""
	if incumbent != "" {
		incWhy = fmt.Sprintf("incumbent %s is gone", incumbent)
	}
	for _, c := range members {
		if seen[c.Node] {
			continue
		}
		seen[c.Node] = true
		why := c.eligibility()
		switch {
		case why != "":
			ineligible = append(ineligible, Ranked{Node: c.Node, Ineligible: why})
			if c.Node == incumbent {
				incWhy = fmt.Sprintf("incumbent %s is %s", c.Node, why)
			}
		default:
			eligible = append(eligible, c)
			if c.Node == incumbent {
				inc = &c
			}
		}
	}
	slices.SortFunc(ineligible, func(a, b Ranked) int { return cmp.Compare(a.Node, b.Node) })
	order, crit := freshOrder(eligible)

	d := decide(incumbent, inc, incWhy, order, crit)
	d.Changed = d.Leader != incumbent
	d.Order = make([]Ranked, 0, len(order)+len(ineligible))
	if d.Leader != "" {
		d.Order = append(d.Order, Ranked{Node: d.Leader, Rank: 1})
	}
	for _, c := range order {
		if c.Node != d.Leader {
			d.Order = append(d.Order, Ranked{Node: c.Node, Rank: len(d.Order) + 1})
		}
	}
	d.Order = append(d.Order, ineligible...)
	return d
}

// decide applies the fresh-choice and displacement rules. order is the
// fresh order of the eligible members, inc the eligible incumbent (nil if
// none) and incWhy why there is no eligible incumbent.
func decide(incumbent string, inc *Candidate, incWhy string, order []Candidate, crit Criterion) Decision {
	d := Decision{Incumbent: incumbent}
	if len(order) == 0 {
		d.Rule = RuleNoCandidate
		d.Reason = "no eligible member"
		if incWhy != "" {
			d.Reason += "; " + incWhy
		}
		return d
	}
	c := order[0]
	d.Winner, d.Criterion = c.Node, crit
	won := fmt.Sprintf("%s ranks first (%s)", c.Node, freshWhy(c, order, crit))

	if inc == nil {
		d.Leader, d.Rule = c.Node, RuleFresh
		if incWhy == "" {
			incWhy = "no incumbent"
		}
		d.Reason = fmt.Sprintf("fresh choice: %s; %s", won, incWhy)
		return d
	}
	l := *inc
	switch {
	case c.Node == l.Node:
		d.Leader, d.Rule = l.Node, RuleKeep
		d.Reason = fmt.Sprintf("%s stays: %s", l.Node, won)
	case c.Priority > l.Priority:
		d.Leader, d.Rule = c.Node, RuleDisplacePriority
		d.Reason = fmt.Sprintf("%s displaces %s: higher priority (%s > %s)", c.Node, l.Node, c.Priority, l.Priority)
	case c.Priority == l.Priority && c.Version > l.Version:
		d.Leader, d.Rule = c.Node, RuleDisplaceVersion
		d.Reason = fmt.Sprintf("%s displaces %s: higher version (%d > %d)", c.Node, l.Node, c.Version, l.Version)
	case c.Priority >= l.Priority && c.Version >= l.Version && !withinTenPercent(l.Progress, c.Progress):
		d.Leader, d.Rule = c.Node, RuleDisplaceProgress
		d.Reason = fmt.Sprintf("%s displaces %s: progress more than 10%% ahead (%d > %d × 1.10)", c.Node, l.Node, c.Progress, l.Progress)
	default:
		d.Leader, d.Rule = l.Node, RuleKeep
		d.Reason = fmt.Sprintf("%s stays: %s, but only priority, version or more than 10%% progress displace an incumbent", l.Node, won)
	}
	return d
}

// freshWhy describes why c won against the runner-up of order.
func freshWhy(c Candidate, order []Candidate, crit Criterion) string {
	if len(order) < 2 {
		return crit.String()
	}
	r := order[1]
	switch crit {
	case CriterionPriority:
		return fmt.Sprintf("priority %s > %s", c.Priority, r.Priority)
	case CriterionVersion:
		return fmt.Sprintf("version %d > %d", c.Version, r.Version)
	case CriterionProgress:
		return fmt.Sprintf("progress %d, others not within 10%%", c.Progress)
	case CriterionUptime:
		return fmt.Sprintf("uptime %s, progress within 10%% of the best", c.Uptime.Round(time.Second))
	case CriterionNodeID:
		return "lowest node ID among equals"
	}
	return crit.String()
}

// withinTenPercent reports whether progress p is within 10% of best, that
// is best ≤ p × 1.10 (computed exactly as best×10 ≤ p×11). It is the
// negation of the displacement test "best > p × 1.10", so the fresh choice
// and the displacement rule agree at the boundary.
func withinTenPercent(p, best uint64) bool {
	bh, bl := bits.Mul64(best, 10)
	ph, pl := bits.Mul64(p, 11)
	return bh < ph || (bh == ph && bl <= pl)
}

// freshOrder orders eligible members by repeated fresh choice: the first is
// the fresh-choice winner, the second wins among the rest, and so on. It
// also returns the criterion that made the first the winner.
func freshOrder(eligible []Candidate) ([]Candidate, Criterion) {
	rest := slices.Clone(eligible)
	// Priority and version are plain lexicographic keys; the progress
	// window only applies inside a (priority, version) group.
	slices.SortFunc(rest, func(a, b Candidate) int {
		if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Version, a.Version); c != 0 {
			return c
		}
		return cmp.Compare(a.Node, b.Node)
	})
	crit := CriterionOnly
	if len(rest) > 1 {
		switch {
		case rest[0].Priority != rest[1].Priority:
			crit = CriterionPriority
		case rest[0].Version != rest[1].Version:
			crit = CriterionVersion
		}
	}
	order := make([]Candidate, 0, len(rest))
	for len(rest) > 0 {
		n := 1
		for n < len(rest) && rest[n].Priority == rest[0].Priority && rest[n].Version == rest[0].Version {
			n++
		}
		group := rest[:n]
		for len(group) > 0 {
			i, c := pickInGroup(group)
			if len(order) == 0 && crit == CriterionOnly && len(group) > 1 {
				crit = c
			}
			order = append(order, group[i])
			group = slices.Delete(group, i, i+1)
		}
		rest = rest[n:]
	}
	return order, crit
}

// pickInGroup returns the index of the fresh-choice winner among members of
// equal priority and version, and the criterion that decided.
func pickInGroup(group []Candidate) (int, Criterion) {
	var best uint64
	for _, c := range group {
		best = max(best, c.Progress)
	}
	win, within, sameUptime := -1, 0, 0
	for i, c := range group {
		if !withinTenPercent(c.Progress, best) {
			continue
		}
		within++
		if win < 0 || c.Uptime > group[win].Uptime ||
			(c.Uptime == group[win].Uptime && c.Node < group[win].Node) {
			win = i
		}
	}
	for _, c := range group {
		if withinTenPercent(c.Progress, best) && c.Uptime == group[win].Uptime {
			sameUptime++
		}
	}
	switch {
	case within == 1:
		return win, CriterionProgress
	case sameUptime > 1:
		return win, CriterionNodeID
	}
	return win, CriterionUptime
}
