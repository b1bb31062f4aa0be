package election

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/raft"
)

// MemberStatus is a member's state in gossip.
type MemberStatus uint8

// Member states, as memberlist reports them.
const (
	StatusAlive MemberStatus = iota
	StatusSuspect
	StatusDead
	StatusLeft
)

var statusNames = [...]string{"alive", "suspect", "dead", "left"}

// String returns the status name.
func (s MemberStatus) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("status(%d)", s)
}

// MachineClass says how stable a machine is likely to be. Voters are
// chosen from the most stable classes.
type MachineClass uint8

// Machine classes. The zero value, ClassUnknown, counts as a desktop.
const (
	ClassUnknown MachineClass = iota
	ClassLaptop
	ClassDesktop
	ClassServer
)

var classNames = [...]string{"unknown", "laptop", "desktop", "server"}

// String returns the class name.
func (c MachineClass) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return fmt.Sprintf("class(%d)", c)
}

// Stable reports whether c is a stable class (not a laptop).
func (c MachineClass) Stable() bool { return c != ClassLaptop }

// order ranks classes for voting: server > desktop (or unknown) > laptop.
func (c MachineClass) order() int {
	switch c {
	case ClassServer:
		return 3
	case ClassLaptop:
		return 1
	}
	return 2
}

// VoterCandidate is one member's input to the voter plan.
type VoterCandidate struct {
	Node    string
	Address string       // Raft address (host:port)
	Status  MemberStatus // in gossip
	// Since is when Status last changed: alive since, dead since, left
	// since. memberlist forgets dead nodes after a while; the caller keeps
	// a record for nodes of the Raft configuration and reports them as
	// dead or left with the time they were last seen.
	Since time.Time
	Class MachineClass
	// OptOut is `election.voter: never`: the member is never a voter or
	// standby.
	OptOut bool
	Uptime time.Duration
	// CaughtUp: the member is in the Raft configuration and its log is
	// close to the leader's (for example, last contact within the
	// threshold). Only caught-up standbys are promoted.
	CaughtUp bool
}

// VoterParams are the inputs of PlanVoters besides the configuration and
// the members.
type VoterParams struct {
	Self string    // the Raft leader running the plan: never removed
	Now  time.Time // the caller's clock
	// DeadVoterGrace is how long a server of the configuration may be dead
	// or gone before it is removed (DESIGN.md: 60 s), so that a reboot
	// does not churn the configuration.
	DeadVoterGrace time.Duration
	// Stabilization is how long a member must have been alive before it
	// counts as voter-eligible or is added as a standby (0: at once).
	Stabilization time.Duration
}

// VoterAction is the one configuration change PlanVoters asks for.
type VoterAction uint8

// Voter actions. The Raft leader maps them to raft calls.
const (
	VoterNone          VoterAction = iota // nothing to do
	VoterAddStandby                       // raft.AddNonvoter(Node, Address)
	VoterPromote                          // raft.AddVoter(Node, Address)
	VoterRemove                           // raft.RemoveServer(Node)
	VoterUpdateAddress                    // AddVoter (Voter) or AddNonvoter with the new Address
)

var actionNames = [...]string{"none", "add-standby", "promote", "remove", "update-address"}

// String returns the action name.
func (a VoterAction) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", a)
}

// VoterChange is the outcome of PlanVoters.
type VoterChange struct {
	Action  VoterAction
	Node    string
	Address string // for VoterAddStandby, VoterPromote and VoterUpdateAddress
	Voter   bool   // VoterUpdateAddress: the server is a voter
	Reason  string // human-readable, for logs and /v1/voters
	// Targets computed from the voter-eligible members.
	Voters, Standbys int
}

// VoterTargets returns the voter and standby counts for eligible
// voter-eligible members, stable of them of a stable class: 1 voter for
// 1–2, 3 for 3–6, 5 for 7 or more when at least 5 are stable (else 3);
// standbys fill up to 2 from the rest.
func VoterTargets(eligible, stable int) (voters, standbys int) {
	switch {
	case eligible <= 2:
		voters = 1
	case eligible >= 7 && stable >= 5:
		voters = 5
	default:
		voters = 3
	}
	return voters, min(2, max(0, eligible-voters))
}

// serverState classifies a server of the configuration.
type serverState uint8

const (
	stHealthy  serverState = iota // alive (or suspect) and not opted out
	stGrace                       // dead or left, within the grace period
	stExpired                     // dead or left for longer than the grace period
	stOptedOut                    // alive but opted out: remove once replaced
	stUnknown                     // no member entry: kept, never removed
)

type server struct {
	raft.Server
	m     VoterCandidate
	state serverState
}

// active reports whether s counts toward the voter or standby count.
func (s server) active() bool {
	return s.state == stHealthy || s.state == stGrace || s.state == stUnknown
}

// PlanVoters decides the one change to make to the Raft configuration
// this round (DESIGN.md "Election", go-anchors §5.2, §5.5). In order:
// fix a changed address; promote a caught-up standby while active voters
// are fewer than the target; remove a voter dead or left for longer than
// the grace period (never more than (voters-1)/2 of them are removable
// at once, never Self); remove such a standby; remove an opted-out server
// once replaced; add a standby; remove a surplus standby. Healthy voters
// are never demoted. It is pure and deterministic.
func PlanVoters(current raft.Configuration, members []VoterCandidate, p VoterParams) VoterChange {
	byNode := make(map[string]VoterCandidate, len(members))
	for _, m := range members {
		if _, dup := byNode[m.Node]; !dup {
			byNode[m.Node] = m
		}
	}
	var voters, standbys []server
	inConfig := make(map[string]bool, len(current.Servers))
	for _, rs := range current.Servers {
		id := string(rs.ID)
		inConfig[id] = true
		s := server{Server: rs}
		m, ok := byNode[id]
		switch {
		case id == p.Self:
			s.m, s.state = m, stHealthy
			if !ok {
				s.m = VoterCandidate{Node: id, Status: StatusAlive}
			}
		case !ok:
			s.state = stUnknown
		case m.Status == StatusDead || m.Status == StatusLeft:
			s.m, s.state = m, stGrace
			if p.Now.Sub(m.Since) >= p.DeadVoterGrace {
				s.state = stExpired
			}
		case m.OptOut:
			s.m, s.state = m, stOptedOut
		default:
			s.m, s.state = m, stHealthy
		}
		if rs.Suffrage == raft.Voter {
			voters = append(voters, s)
		} else {
			standbys = append(standbys, s)
		}
	}

	// Voter-eligible members: configuration servers that count, plus
	// alive members that opted in and have been alive long enough.
	eligible, stable := 0, 0
	for _, s := range slices.Concat(voters, standbys) {
		if s.state == stHealthy || s.state == stGrace {
			eligible++
			if s.m.Class.Stable() {
				stable++
			}
		}
	}
	var newcomers []VoterCandidate
	for _, m := range byNode {
		if inConfig[m.Node] || m.OptOut || m.Status != StatusAlive || p.Now.Sub(m.Since) < p.Stabilization {
			continue
		}
		eligible++
		if m.Class.Stable() {
			stable++
		}
		newcomers = append(newcomers, m)
	}
	wantVoters, wantStandbys := VoterTargets(eligible, stable)
	ch := VoterChange{Voters: wantVoters, Standbys: wantStandbys}
	done := func(a VoterAction, m VoterCandidate, voter bool, format string, args ...any) VoterChange {
		ch.Action, ch.Node, ch.Address, ch.Voter = a, m.Node, m.Address, voter
		ch.Reason = fmt.Sprintf(format, args...)
		return ch
	}

	activeVoters := count(voters, server.active)
	activeStandbys := count(standbys, server.active)
	shortfall := max(0, wantVoters-activeVoters)

	// 1. A healthy server whose address changed: update it in place.
	for _, s := range slices.Concat(voters, standbys) {
		if s.state == stHealthy && s.m.Status == StatusAlive && s.m.Address != "" && s.m.Address != string(s.Address) {
			return done(VoterUpdateAddress, s.m, s.Suffrage == raft.Voter,
				"%s moved from %s to %s", s.m.Node, s.Address, s.m.Address)
		}
	}

	// 2. Promote the best caught-up standby while voters are short.
	if shortfall > 0 {
		var ready []VoterCandidate
		for _, s := range standbys {
			if s.state == stHealthy && s.m.Status == StatusAlive && s.m.CaughtUp {
				ready = append(ready, s.m)
			}
		}
		if len(ready) > 0 {
			best := bestVoters(ready)[0]
			return done(VoterPromote, best, true, "promote %s: %d active voters, target %d", best.Node, activeVoters, wantVoters)
		}
	}

	// 3. Remove a voter gone for longer than the grace period.
	blocked := ""
	if gone := worstGone(voters); len(gone) > 0 {
		if limit := (len(voters) - 1) / 2; len(gone) <= limit {
			g := gone[0]
			return done(VoterRemove, g.m, true, "remove voter %s: %s for %s (grace %s)",
				g.m.Node, g.m.Status, p.Now.Sub(g.m.Since).Round(time.Second), p.DeadVoterGrace)
		}
		blocked = fmt.Sprintf("%d of %d voters gone: removing them would break quorum", len(gone), len(voters))
	}

	// 4. Remove a standby gone for longer than the grace period.
	if gone := worstGone(standbys); len(gone) > 0 {
		g := gone[0]
		return done(VoterRemove, g.m, false, "remove standby %s: %s for %s (grace %s)",
			g.m.Node, g.m.Status, p.Now.Sub(g.m.Since).Round(time.Second), p.DeadVoterGrace)
	}

	// 5. Remove an opted-out server: a standby at once, a voter once the
	// active voters meet the target without it.
	for _, s := range standbys {
		if s.state == stOptedOut {
			return done(VoterRemove, s.m, false, "remove standby %s: opted out of voting", s.m.Node)
		}
	}
	for _, s := range voters {
		if s.state == stOptedOut && activeVoters >= wantVoters {
			return done(VoterRemove, s.m, true, "remove voter %s: opted out of voting, replaced", s.m.Node)
		}
	}

	// 6. Add a standby: to reach the standby target, or to have one to
	// promote while voters are short.
	if activeStandbys < max(wantStandbys, shortfall) && len(newcomers) > 0 {
		var addable []VoterCandidate
		for _, m := range newcomers {
			if m.Address != "" {
				addable = append(addable, m)
			}
		}
		if len(addable) > 0 {
			best := bestVoters(addable)[0]
			return done(VoterAddStandby, best, false, "add standby %s: %d active voters (target %d), %d standbys (target %d)",
				best.Node, activeVoters, wantVoters, activeStandbys, wantStandbys)
		}
	}

	// 7. Remove a surplus healthy standby (the worst ranked).
	if activeStandbys > max(wantStandbys, shortfall) {
		var healthy []VoterCandidate
		for _, s := range standbys {
			if s.state == stHealthy {
				healthy = append(healthy, s.m)
			}
		}
		if len(healthy) > 0 {
			worst := bestVoters(healthy)[len(healthy)-1]
			return done(VoterRemove, worst, false, "remove standby %s: %d standbys, target %d", worst.Node, activeStandbys, wantStandbys)
		}
	}

	ch.Reason = fmt.Sprintf("no change: %d active voters (target %d), %d standbys (target %d)",
		activeVoters, wantVoters, activeStandbys, wantStandbys)
	if blocked != "" {
		ch.Reason += "; " + blocked
	}
	return ch
}

// count counts servers for which f holds.
func count(ss []server, f func(server) bool) int {
	n := 0
	for _, s := range ss {
		if f(s) {
			n++
		}
	}
	return n
}

// worstGone returns the expired servers, gone longest first.
func worstGone(ss []server) []server {
	var gone []server
	for _, s := range ss {
		if s.state == stExpired {
			gone = append(gone, s)
		}
	}
	slices.SortFunc(gone, func(a, b server) int {
		if c := a.m.Since.Compare(b.m.Since); c != 0 {
			return c
		}
		return cmp.Compare(a.m.Node, b.m.Node)
	})
	return gone
}

// RankVoters returns the alive members that did not opt out, best voter
// first: caught up, then machine class (server > desktop > laptop), then
// uptime, then lowest node ID. The first is the member that bootstraps a
// new cluster.
func RankVoters(members []VoterCandidate) []string {
	var ok []VoterCandidate
	seen := make(map[string]bool, len(members))
	for _, m := range members {
		if m.Status == StatusAlive && !m.OptOut && !seen[m.Node] {
			seen[m.Node] = true
			ok = append(ok, m)
		}
	}
	var out []string
	for _, m := range bestVoters(ok) {
		out = append(out, m.Node)
	}
	return out
}

// bestVoters sorts a copy of ms best voter first.
func bestVoters(ms []VoterCandidate) []VoterCandidate {
	ms = slices.Clone(ms)
	slices.SortFunc(ms, func(a, b VoterCandidate) int {
		if a.CaughtUp != b.CaughtUp {
			if a.CaughtUp {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(b.Class.order(), a.Class.order()); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Uptime, a.Uptime); c != 0 {
			return c
		}
		return cmp.Compare(a.Node, b.Node)
	})
	return ms
}
