package election

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Bounds of the replicated state. They are part of the replicated
// behaviour: every agent of a cluster must use the same values, so they
// are constants, not options.
const (
	EventLogSize = 256  // events kept in the election event log
	DedupWindow  = 1024 // request IDs remembered for idempotency
)

// RedLeader is the committed Red Leader seat.
type RedLeader struct {
	Node        string    // "" while the seat is vacant
	Epoch       uint64    // bumped by every appointment; kept when the seat is vacated
	AppointedAt time.Time // zero while vacant
	ConfirmedAt time.Time // zero until the appointee confirms
	Reason      string    // reason of the last change
}

// Confirmed reports whether the appointee has confirmed.
func (r RedLeader) Confirmed() bool { return r.Node != "" && !r.ConfirmedAt.IsZero() }

// Holds is the fencing rule an agent applies before it acts as Red
// Leader: the seat must be node's at the newest epoch node knows of (from
// check-in replies, state pulls or its own FSM), and node's last
// successful check-in must be younger than lease (< checkin_timeout).
// A cut-off Red Leader thus stops before its successor is appointed.
func (r RedLeader) Holds(node string, newestEpoch uint64, lastCheckIn, now time.Time, lease time.Duration) bool {
	return node != "" && r.Node == node && r.Epoch >= newestEpoch &&
		!lastCheckIn.IsZero() && !now.Before(lastCheckIn) && now.Sub(lastCheckIn) < lease
}

// EventKind names an election event.
type EventKind string

// Event kinds.
const (
	EventInit        EventKind = "init"
	EventAppoint     EventKind = "appoint"
	EventConfirm     EventKind = "confirm"
	EventRetire      EventKind = "retire"
	EventVacate      EventKind = "vacate" // the Red Leader was marked and lost its seat
	EventMark        EventKind = "mark"
	EventUnmark      EventKind = "unmark"
	EventMarkExpired EventKind = "mark-expired"
	EventPolicy      EventKind = "policy"
	EventNote        EventKind = "note"
	EventAdminMode   EventKind = "admin-mode"
)

// Event is one entry of the election event log.
type Event struct {
	Seq      uint64 // 1, 2, 3, … across the cluster's life
	Time     time.Time
	Kind     EventKind
	Node     string
	Epoch    uint64
	Severity Severity
	Reason   string
}

// State is a copy of the replicated election state.
type State struct {
	ClusterID string
	Secret    []byte    // the subnet content secret; never show it in APIs
	Admin     AdminMode // who may commit admin commands (unset: nobody)
	Index     uint64    // the last Raft log index applied
	Clock     time.Time // the newest command time applied (the FSM's clock)
	RedLeader RedLeader
	Marks     []Mark // sorted by node; may include expired auto marks not yet pruned
	Policy    Policy
	Events    []Event // oldest first, at most EventLogSize
	// EventSeq is the sequence number of the newest event ever logged.
	EventSeq uint64
	// Dedup holds the request IDs of the last DedupWindow applied
	// commands, oldest first.
	Dedup []string
}

// Initialized reports whether the cluster has received its init command.
func (s State) Initialized() bool { return s.ClusterID != "" }

// Mark returns node's mark, active or not.
func (s State) Mark(node string) (Mark, bool) {
	i, ok := slices.BinarySearchFunc(s.Marks, node, func(m Mark, n string) int { return cmp.Compare(m.Node, n) })
	if !ok {
		return Mark{}, false
	}
	return s.Marks[i], true
}

// Marked reports whether node carries a mark that is active at now (use
// the wall clock outside the FSM).
func (s State) Marked(node string, now time.Time) bool {
	m, ok := s.Mark(node)
	return ok && m.Active(now)
}

// clone returns a deep copy of s.
func (s State) clone() State {
	s.Secret = slices.Clone(s.Secret)
	s.Marks = slices.Clone(s.Marks)
	s.Policy = s.Policy.clone()
	s.Events = slices.Clone(s.Events)
	s.Dedup = slices.Clone(s.Dedup)
	return s
}

// Result is what FSM.Apply returns (the raft ApplyFuture's Response).
type Result struct {
	Type      CommandType
	Duplicate bool  // the request ID was applied before; nothing changed
	Skipped   bool  // unknown type flagged ignorable; nothing changed
	Err       error // the command was rejected; nothing changed
}

// Change tells FSMOptions.OnChange what happened.
type Change struct {
	Index    uint64 // the Raft log index (0 for a restore)
	Restored bool   // the state was replaced by a snapshot
	Result   Result
}

// FSMOptions configure an FSM.
type FSMOptions struct {
	// OnChange, if set, is called after every Apply and Restore, outside
	// the FSM's lock, on Raft's apply goroutine. It must not block (for
	// example, do a non-blocking send on a buffered channel).
	OnChange func(Change)
	// Logger receives warnings about skipped and unknown entries.
	// Default: slog.Default().
	Logger *slog.Logger
}

// FSM is the election's replicated state machine; it implements
// raft.FSM. Apply uses no wall clock: every time comes from commands.
type FSM struct {
	onChange func(Change)
	log      *slog.Logger

	mu    sync.RWMutex
	st    State               // Marks kept sorted; Dedup in order
	dedup map[string]struct{} // the set of st.Dedup
	cat   catalog             // the subnet catalog (catalog.go): not part of st
}

var _ raft.FSM = (*FSM)(nil)

// NewFSM returns an empty FSM.
func NewFSM(opts FSMOptions) *FSM {
	f := &FSM{onChange: opts.OnChange, log: opts.Logger, dedup: make(map[string]struct{}), cat: newCatalog()}
	if f.log == nil {
		f.log = slog.Default()
	}
	return f
}

// State returns a copy of the current state.
func (f *FSM) State() State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.clone()
}

// summary is State without the event log and the dedup window: what the
// periodic paths need, without copying hundreds of entries each tick.
func (f *FSM) summary() State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	st := f.st
	st.Events, st.Dedup = nil, nil
	return st.clone()
}

// index is State().Index without the copy.
func (f *FSM) index() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.Index
}

// Apply applies one committed Raft log entry and returns a Result.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return Result{Skipped: true}
	}
	res := f.apply(l.Index, l.Data)
	if f.onChange != nil {
		f.onChange(Change{Index: l.Index, Result: res})
	}
	return res
}

// apply decodes and applies data as the entry at index.
func (f *FSM) apply(index uint64, data []byte) Result {
	c, err := DecodeCommand(data)
	res := Result{Type: c.Type}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case errors.Is(err, errSkip):
		f.log.Warn("election: skipping unknown ignorable log entry", "index", index, "type", c.Type)
		f.st.Index = index
		res.Skipped = true
		return res
	case errors.Is(err, ErrUnknownType), errors.Is(err, ErrUnsupportedVersion):
		// State unchanged, Index included: this agent cannot follow.
		f.log.Error("election: cannot apply log entry", "index", index, "err", err)
		res.Err = fmt.Errorf("apply entry %d: %w", index, err)
		return res
	case err != nil:
		// A malformed entry of a known type: deterministic rejection.
		if c.Type != CmdCatalog {
			f.st.Index = index
		}
		res.Err = fmt.Errorf("apply entry %d: %w", index, err)
		return res
	}
	if c.Type == CmdCatalog {
		// The catalog is no part of the State: its commands leave Index
		// (the head members compare), the events and the dedup window
		// alone (catalog.go).
		if err := f.applyCatalog(index, c); err != nil {
			res.Err = fmt.Errorf("apply %s entry %d: %w", c.Type, index, err)
		}
		return res
	}
	f.st.Index = index
	if _, dup := f.dedup[c.RequestID]; dup {
		res.Duplicate = true
		return res
	}
	if err := f.execute(c); err != nil {
		res.Err = fmt.Errorf("apply %s entry %d: %w", c.Type, index, err)
		return res
	}
	f.remember(c.RequestID)
	return res
}

// remember adds id to the bounded dedup window.
func (f *FSM) remember(id string) {
	f.dedup[id] = struct{}{}
	f.st.Dedup = append(f.st.Dedup, id)
	if n := len(f.st.Dedup) - DedupWindow; n > 0 {
		for _, old := range f.st.Dedup[:n] {
			delete(f.dedup, old)
		}
		f.st.Dedup = slices.Delete(f.st.Dedup, 0, n)
	}
}

// execute checks c against the state and, if it is accepted, applies it.
// A rejected command changes nothing.
func (f *FSM) execute(c Command) error {
	s := &f.st
	now := c.Time.UTC()
	if now.Before(s.Clock) {
		now = s.Clock // the clock never goes back, whatever the proposer's clock
	}
	if err := f.check(c, now); err != nil {
		return err
	}
	s.Clock = now
	f.pruneMarks(now)

	switch c.Type {
	case CmdInit:
		if s.ClusterID != "" {
			return nil // same cluster and secret: check accepted a resubmission
		}
		s.ClusterID = c.ClusterID
		s.Secret = slices.Clone(c.Secret)
		s.Admin = c.Mode
		s.Policy = c.Policy.clone()
		s.Policy.Version = max(1, c.Policy.Version)
		if c.Epoch > s.RedLeader.Epoch {
			s.RedLeader.Epoch = c.Epoch
		}
		for _, m := range c.Marks {
			m.SetAt, m.Expires = now, time.Time{}
			f.putMark(m)
		}
		f.event(now, EventInit, "", s.RedLeader.Epoch, SeverityInfo,
			fmt.Sprintf("cluster %s initialized (policy version %d, %d admin marks carried over)", c.ClusterID, s.Policy.Version, len(c.Marks)))
	case CmdAppoint:
		s.RedLeader = RedLeader{Node: c.Node, Epoch: c.Epoch, AppointedAt: now, Reason: c.Reason}
		f.event(now, EventAppoint, c.Node, c.Epoch, SeverityInfo, c.Reason)
	case CmdConfirm:
		if s.RedLeader.ConfirmedAt.IsZero() {
			s.RedLeader.ConfirmedAt = now
			f.event(now, EventConfirm, c.Node, c.Epoch, SeverityInfo, "appointment confirmed")
		}
	case CmdRetire:
		f.vacate(now, EventRetire, SeverityInfo, c.Reason)
	case CmdMark:
		if old, ok := f.markOf(c.Node); ok && old.By == MarkAdmin && c.By == MarkAuto {
			return nil // an admin mark outranks an auto mark
		}
		m := Mark{Node: c.Node, Reason: c.Reason, By: c.By, SetAt: now}
		sev := SeverityInfo
		if c.By == MarkAuto {
			m.Expires = now.Add(c.TTL)
			sev = SeverityWarning
		}
		f.putMark(m)
		f.event(now, EventMark, c.Node, s.RedLeader.Epoch, sev, fmt.Sprintf("%s mark: %s", c.By, c.Reason))
		if s.RedLeader.Node == c.Node {
			f.vacate(now, EventVacate, sev, fmt.Sprintf("Red Leader marked not leader material (%s)", c.Reason))
		}
	case CmdUnmark:
		if f.deleteMark(c.Node) {
			f.event(now, EventUnmark, c.Node, s.RedLeader.Epoch, SeverityInfo, c.Reason)
		}
	case CmdSetPolicy:
		p := c.Policy.clone()
		p.Version = s.Policy.Version + 1
		s.Policy = p
		f.event(now, EventPolicy, "", s.RedLeader.Epoch, SeverityInfo,
			fmt.Sprintf("policy version %d: leader %q, peer %q, LAN %q", p.Version, p.LeaderRate, p.PeerRate, p.LANRate))
	case CmdNote:
		f.event(now, EventNote, c.Node, s.RedLeader.Epoch, c.Severity, c.Reason)
	case CmdAdminMode:
		if s.Admin != c.Mode {
			s.Admin = c.Mode
			f.event(now, EventAdminMode, "", s.RedLeader.Epoch, SeverityInfo, fmt.Sprintf("admin mode %s: %s", c.Mode, c.Reason))
		}
	}
	return nil
}

// check decides whether c may be applied at now, without changing state.
func (f *FSM) check(c Command, now time.Time) error {
	s := &f.st
	if c.Admin() && !s.Admin.Allowed() {
		mode := string(s.Admin)
		if mode == "" {
			mode = "not recorded"
		}
		return fmt.Errorf("%w (admin mode: %s)", ErrAdminRefused, mode)
	}
	switch c.Type {
	case CmdInit:
		if s.ClusterID != "" && (s.ClusterID != c.ClusterID || string(s.Secret) != string(c.Secret)) {
			return fmt.Errorf("%w: cluster %s", ErrAlreadyInitialized, s.ClusterID)
		}
	case CmdAppoint:
		if c.Epoch != s.RedLeader.Epoch+1 {
			return fmt.Errorf("%w: appoint %s at epoch %d, current epoch %d", ErrStaleEpoch, c.Node, c.Epoch, s.RedLeader.Epoch)
		}
		if m, ok := f.markOf(c.Node); ok && m.Active(now) {
			return fmt.Errorf("%w: %s (%s mark: %s)", ErrMarked, c.Node, m.By, m.Reason)
		}
	case CmdConfirm, CmdRetire:
		if c.Epoch != s.RedLeader.Epoch {
			return fmt.Errorf("%w: %s %s at epoch %d, current epoch %d", ErrStaleEpoch, c.Type, c.Node, c.Epoch, s.RedLeader.Epoch)
		}
		if c.Node != s.RedLeader.Node {
			return fmt.Errorf("%w: %s %s, current Red Leader %q", ErrNotAppointee, c.Type, c.Node, s.RedLeader.Node)
		}
	case CmdSetPolicy:
		if c.PrevPolicyVersion != 0 && c.PrevPolicyVersion != s.Policy.Version {
			return fmt.Errorf("%w: based on version %d, current version %d", ErrPolicyConflict, c.PrevPolicyVersion, s.Policy.Version)
		}
	}
	return nil
}

// vacate empties the Red Leader seat, keeping the epoch.
func (f *FSM) vacate(now time.Time, kind EventKind, sev Severity, reason string) {
	r := &f.st.RedLeader
	node := r.Node
	*r = RedLeader{Epoch: r.Epoch, Reason: reason}
	f.event(now, kind, node, r.Epoch, sev, reason)
}

// pruneMarks deletes auto marks expired at now, in node order.
func (f *FSM) pruneMarks(now time.Time) {
	s := &f.st
	kept := s.Marks[:0]
	var expired []Mark
	for _, m := range s.Marks {
		if m.Active(now) {
			kept = append(kept, m)
		} else {
			expired = append(expired, m)
		}
	}
	clear(s.Marks[len(kept):])
	s.Marks = kept
	for _, m := range expired {
		f.event(now, EventMarkExpired, m.Node, s.RedLeader.Epoch, SeverityInfo, fmt.Sprintf("auto mark expired (%s)", m.Reason))
	}
}

// markOf returns node's mark.
func (f *FSM) markOf(node string) (Mark, bool) { return f.st.Mark(node) }

// putMark inserts or replaces a mark, keeping Marks sorted.
func (f *FSM) putMark(m Mark) {
	s := &f.st
	i, ok := slices.BinarySearchFunc(s.Marks, m.Node, func(x Mark, n string) int { return cmp.Compare(x.Node, n) })
	if ok {
		s.Marks[i] = m
		return
	}
	s.Marks = slices.Insert(s.Marks, i, m)
}

// deleteMark removes node's mark and reports whether there was one.
func (f *FSM) deleteMark(node string) bool {
	s := &f.st
	i, ok := slices.BinarySearchFunc(s.Marks, node, func(x Mark, n string) int { return cmp.Compare(x.Node, n) })
	if ok {
		s.Marks = slices.Delete(s.Marks, i, i+1)
	}
	return ok
}

// event appends to the bounded event log.
func (f *FSM) event(now time.Time, kind EventKind, node string, epoch uint64, sev Severity, reason string) {
	s := &f.st
	s.EventSeq++
	s.Events = append(s.Events, Event{Seq: s.EventSeq, Time: now, Kind: kind, Node: node, Epoch: epoch, Severity: sev, Reason: reason})
	if n := len(s.Events) - EventLogSize; n > 0 {
		s.Events = slices.Delete(s.Events, 0, n)
	}
}
