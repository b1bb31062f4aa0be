package election

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// harness drives an FSM with raft log entries at increasing indexes.
type harness struct {
	t      *testing.T
	f      *FSM
	index  uint64
	seq    int
	prefix string // of request IDs
}

func newHarness(t *testing.T) *harness {
	return &harness{t: t, f: NewFSM(FSMOptions{Logger: discardLogger()}), prefix: "req"}
}

// id returns a fresh request ID.
func (h *harness) id() string {
	h.seq++
	return fmt.Sprintf("%s-%d", h.prefix, h.seq)
}

// raw applies an encoded entry.
func (h *harness) raw(data []byte) Result {
	h.t.Helper()
	h.index++
	res, ok := h.f.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: data}).(Result)
	if !ok {
		h.t.Fatal("Apply did not return a Result")
	}
	return res
}

// apply encodes and applies c.
func (h *harness) apply(c Command) Result {
	h.t.Helper()
	b, err := EncodeCommand(c)
	if err != nil {
		h.t.Fatal(err)
	}
	return h.raw(b)
}

// must applies c and fails the test if it is rejected.
func (h *harness) must(c Command) {
	h.t.Helper()
	if res := h.apply(c); res.Err != nil || res.Duplicate || res.Skipped {
		h.t.Fatalf("%s: %+v", c.Type, res)
	}
}

// reject applies c and checks that it is rejected with want and changes
// nothing but the applied index.
func (h *harness) reject(c Command, want error) {
	h.t.Helper()
	before := h.f.State()
	res := h.apply(c)
	if !errors.Is(res.Err, want) {
		h.t.Fatalf("%s: err %v, want %v", c.Type, res.Err, want)
	}
	after := h.f.State()
	after.Index = before.Index
	if !reflect.DeepEqual(before, after) {
		h.t.Fatalf("%s: rejected command changed the state", c.Type)
	}
}

// init initializes a keyed cluster (admin commands allowed).
func (h *harness) init() {
	h.t.Helper()
	c := NewInitCommand(h.id(), t0, "cluster-1", testSecret(), Policy{LeaderRate: "50Mbit", PeerRate: "256kbit"})
	c.Mode = AdminKeyed
	h.must(c)
}

func lastEvent(s State) Event { return s.Events[len(s.Events)-1] }

func TestFSMInit(t *testing.T) {
	h := newHarness(t)
	p := Policy{LeaderRate: "50Mbit", PeerRate: "256kbit", LANRate: "0", Flags: map[string]bool{"x": true}}
	init := NewInitCommand(h.id(), t0, "cluster-1", testSecret(), p)
	init.Epoch = 41
	init.Marks = []Mark{{Node: "kiosk", By: MarkAdmin, Reason: "kept"}}
	h.must(init)
	s := h.f.State()
	if !s.Initialized() || s.ClusterID != "cluster-1" || !bytes.Equal(s.Secret, testSecret()) {
		t.Fatalf("state %+v", s)
	}
	if s.Policy.Version != 1 || s.Policy.LeaderRate != "50Mbit" || !s.Policy.Flags["x"] {
		t.Fatalf("policy %+v", s.Policy)
	}
	if s.RedLeader.Epoch != 41 || !s.Marked("kiosk", t0.Add(1000*time.Hour)) {
		t.Fatalf("carried over: %+v %+v", s.RedLeader, s.Marks)
	}
	if e := lastEvent(s); e.Kind != EventInit || e.Seq != 1 || !e.Time.Equal(t0) {
		t.Fatalf("event %+v", e)
	}
	// A resubmission under a new request ID with the same content is fine.
	h.must(NewInitCommand(h.id(), t0, "cluster-1", testSecret(), p))
	if got := h.f.State(); len(got.Events) != 1 || got.Policy.Version != 1 {
		t.Fatalf("second init changed the state: %+v", got)
	}
	h.reject(NewInitCommand(h.id(), t0, "cluster-2", testSecret(), p), ErrAlreadyInitialized)
	other := testSecret()
	other[0] ^= 1
	h.reject(NewInitCommand(h.id(), t0, "cluster-1", other, p), ErrAlreadyInitialized)

	// The state copy is deep: changing it does not touch the FSM.
	s = h.f.State()
	s.Secret[0] ^= 0xff
	s.Policy.Flags["x"] = false
	s.Marks[0].Node = "changed"
	if again := h.f.State(); again.Secret[0] != testSecret()[0] || !again.Policy.Flags["x"] || again.Marks[0].Node != "kiosk" {
		t.Fatal("State() returned shared memory")
	}
}

func TestFSMAppointFencing(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.reject(NewAppointCommand(h.id(), t0, "a", 0+2, "skip an epoch"), ErrStaleEpoch)
	h.must(NewAppointCommand(h.id(), t0.Add(time.Second), "a", 1, "fresh choice"))
	s := h.f.State()
	if s.RedLeader.Node != "a" || s.RedLeader.Epoch != 1 || !s.RedLeader.AppointedAt.Equal(t0.Add(time.Second)) ||
		s.RedLeader.Confirmed() || s.RedLeader.Reason != "fresh choice" {
		t.Fatalf("red leader %+v", s.RedLeader)
	}
	if e := lastEvent(s); e.Kind != EventAppoint || e.Node != "a" || e.Epoch != 1 || e.Reason != "fresh choice" {
		t.Fatalf("event %+v", e)
	}
	// A second appointment at the same epoch (another Raft leader racing) loses.
	h.reject(NewAppointCommand(h.id(), t0, "b", 1, "race"), ErrStaleEpoch)
	h.reject(NewAppointCommand(h.id(), t0, "b", 3, "ahead"), ErrStaleEpoch)
	h.must(NewAppointCommand(h.id(), t0.Add(2*time.Second), "b", 2, "b displaces a"))
	if s := h.f.State(); s.RedLeader.Node != "b" || s.RedLeader.Epoch != 2 {
		t.Fatalf("red leader %+v", s.RedLeader)
	}
}

func TestFSMConfirmRetire(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.reject(NewConfirmCommand(h.id(), t0, "a", 1), ErrStaleEpoch) // nobody appointed
	h.must(NewAppointCommand(h.id(), t0, "a", 1, "fresh"))
	h.reject(NewConfirmCommand(h.id(), t0, "b", 1), ErrNotAppointee)
	h.reject(NewConfirmCommand(h.id(), t0, "a", 2), ErrStaleEpoch)
	h.must(NewConfirmCommand(h.id(), t0.Add(time.Second), "a", 1))
	s := h.f.State()
	if !s.RedLeader.Confirmed() || !s.RedLeader.ConfirmedAt.Equal(t0.Add(time.Second)) || lastEvent(s).Kind != EventConfirm {
		t.Fatalf("red leader %+v", s.RedLeader)
	}
	// A second confirmation (new request) is accepted and changes nothing but the clock.
	h.must(NewConfirmCommand(h.id(), t0.Add(2*time.Second), "a", 1))
	if s2 := h.f.State(); !s2.RedLeader.ConfirmedAt.Equal(s.RedLeader.ConfirmedAt) || len(s2.Events) != len(s.Events) {
		t.Fatal("second confirmation changed the seat")
	}
	h.reject(NewRetireCommand(h.id(), t0, "b", 1, "not mine"), ErrNotAppointee)
	h.reject(NewRetireCommand(h.id(), t0, "a", 0+2, "wrong epoch"), ErrStaleEpoch)
	h.must(NewRetireCommand(h.id(), t0.Add(3*time.Second), "a", 1, "graceful stop"))
	s = h.f.State()
	if s.RedLeader != (RedLeader{Epoch: 1, Reason: "graceful stop"}) {
		t.Fatalf("red leader after retire %+v", s.RedLeader)
	}
	if e := lastEvent(s); e.Kind != EventRetire || e.Node != "a" {
		t.Fatalf("event %+v", e)
	}
	h.reject(NewConfirmCommand(h.id(), t0, "a", 1), ErrNotAppointee)
	h.must(NewAppointCommand(h.id(), t0.Add(4*time.Second), "b", 2, "after retire"))
}

func TestFSMMarks(t *testing.T) {
	h := newHarness(t)
	h.init()
	ttl := 10 * time.Minute
	h.must(NewAppointCommand(h.id(), t0, "a", 1, "fresh"))

	// An auto mark on the Red Leader vacates its seat.
	h.must(NewMarkCommand(h.id(), t0.Add(time.Second), "a", MarkAuto, ttl, "no confirmation within 2s"))
	s := h.f.State()
	m, ok := s.Mark("a")
	if !ok || m.By != MarkAuto || !m.Expires.Equal(t0.Add(time.Second+ttl)) || !m.SetAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("mark %+v", m)
	}
	if s.RedLeader.Node != "" || s.RedLeader.Epoch != 1 {
		t.Fatalf("marked Red Leader kept its seat: %+v", s.RedLeader)
	}
	if n := len(s.Events); s.Events[n-2].Kind != EventMark || s.Events[n-2].Severity != SeverityWarning || s.Events[n-1].Kind != EventVacate {
		t.Fatalf("events %+v", s.Events[n-2:])
	}
	if !s.Marked("a", t0.Add(ttl)) || s.Marked("a", t0.Add(time.Second+ttl)) {
		t.Fatal("Marked ignores expiry")
	}

	// A marked node cannot be appointed while the mark is active ...
	h.reject(NewAppointCommand(h.id(), t0.Add(2*time.Second), "a", 2, "again"), ErrMarked)
	// ... and can once it has expired, judged by the command's time; the
	// expired mark is pruned with an event.
	h.must(NewAppointCommand(h.id(), t0.Add(time.Second+ttl), "a", 2, "mark expired"))
	s = h.f.State()
	if _, ok := s.Mark("a"); ok || s.RedLeader.Node != "a" {
		t.Fatalf("expired mark kept: %+v %+v", s.Marks, s.RedLeader)
	}
	if e := s.Events[len(s.Events)-2]; e.Kind != EventMarkExpired || e.Node != "a" {
		t.Fatalf("event %+v", e)
	}

	// Admin marks never expire and outrank auto marks.
	h.must(NewMarkCommand(h.id(), t0.Add(ttl+2*time.Second), "b", MarkAdmin, 0, "kiosk"))
	h.must(NewMarkCommand(h.id(), t0.Add(ttl+3*time.Second), "b", MarkAuto, time.Second, "missed check-in"))
	h.must(NewNoteCommand(h.id(), t0.Add(1000*time.Hour), "", SeverityInfo, "much later"))
	s = h.f.State()
	if m, ok := s.Mark("b"); !ok || m.By != MarkAdmin || m.Reason != "kiosk" || !m.Active(t0.Add(1000*time.Hour)) {
		t.Fatalf("admin mark %+v", m)
	}
	// An admin mark replaces an auto mark.
	h.must(NewMarkCommand(h.id(), t0.Add(1000*time.Hour), "c", MarkAuto, time.Hour, "dead"))
	h.must(NewMarkCommand(h.id(), t0.Add(1000*time.Hour), "c", MarkAdmin, 0, "operator"))
	if m, _ := h.f.State().Mark("c"); m.By != MarkAdmin || !m.Expires.IsZero() {
		t.Fatalf("mark %+v", m)
	}

	// Unmark.
	h.must(NewUnmarkCommand(h.id(), t0.Add(1000*time.Hour), "b", "operator"))
	s = h.f.State()
	if _, ok := s.Mark("b"); ok || lastEvent(s).Kind != EventUnmark {
		t.Fatalf("unmark: %+v", s.Marks)
	}
	n := len(s.Events)
	h.must(NewUnmarkCommand(h.id(), t0.Add(1000*time.Hour), "nobody", "no-op"))
	if len(h.f.State().Events) != n {
		t.Fatal("unmark of an unmarked node logged an event")
	}
}

func TestFSMPolicy(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.must(NewSetPolicyCommand(h.id(), t0, Policy{LeaderRate: "20Mbit", PeerRate: "128kbit", Version: 99}, 0))
	s := h.f.State()
	if s.Policy.Version != 2 || s.Policy.LeaderRate != "20Mbit" || s.Policy.LANRate != "" {
		t.Fatalf("policy %+v", s.Policy)
	}
	if e := lastEvent(s); e.Kind != EventPolicy {
		t.Fatalf("event %+v", e)
	}
	h.reject(NewSetPolicyCommand(h.id(), t0, Policy{LeaderRate: "1Mbit"}, 1), ErrPolicyConflict)
	h.must(NewSetPolicyCommand(h.id(), t0, Policy{LeaderRate: "1Mbit"}, 2))
	if s := h.f.State(); s.Policy.Version != 3 || s.Policy.LeaderRate != "1Mbit" {
		t.Fatalf("policy %+v", s.Policy)
	}
}

func TestFSMIdempotency(t *testing.T) {
	h := newHarness(t)
	h.init()
	appoint := NewAppointCommand("same-id", t0, "a", 1, "fresh")
	h.must(appoint)
	before := h.f.State()
	res := h.apply(appoint)
	if !res.Duplicate || res.Err != nil || res.Type != CmdAppoint {
		t.Fatalf("resubmission: %+v", res)
	}
	after := h.f.State()
	if after.Index != before.Index+1 {
		t.Fatalf("index %d, want %d", after.Index, before.Index+1)
	}
	after.Index = before.Index
	if !reflect.DeepEqual(before, after) {
		t.Fatal("duplicate changed the state")
	}
	// A rejected command is not remembered: its ID may be used again.
	h.reject(NewConfirmCommand("confirm-id", t0, "b", 1), ErrNotAppointee)
	h.must(NewConfirmCommand("confirm-id", t0, "a", 1))
	if res := h.apply(NewConfirmCommand("confirm-id", t0, "a", 1)); !res.Duplicate {
		t.Fatalf("resubmitted confirm: %+v", res)
	}
}

func TestFSMDedupWindow(t *testing.T) {
	h := newHarness(t)
	for i := range DedupWindow + 10 {
		h.must(NewNoteCommand(fmt.Sprintf("note-%d", i), t0, "", SeverityInfo, "n"))
	}
	s := h.f.State()
	if len(s.Dedup) != DedupWindow || s.Dedup[0] != "note-10" {
		t.Fatalf("dedup window: %d entries, first %q", len(s.Dedup), s.Dedup[0])
	}
	if res := h.apply(NewNoteCommand("note-10", t0, "", SeverityInfo, "n")); !res.Duplicate {
		t.Fatalf("note-10 in window not deduplicated: %+v", res)
	}
	if res := h.apply(NewNoteCommand("note-9", t0, "", SeverityInfo, "n")); res.Duplicate || res.Err != nil {
		t.Fatalf("note-9 out of window: %+v", res)
	}
	if len(h.f.dedup) != DedupWindow {
		t.Fatalf("dedup set has %d entries", len(h.f.dedup))
	}
}

func TestFSMEventLogBound(t *testing.T) {
	h := newHarness(t)
	const n = EventLogSize + 44
	for i := range n {
		h.must(NewNoteCommand(h.id(), t0.Add(time.Duration(i)*time.Second), "x", SeverityWarning, fmt.Sprintf("note %d", i)))
	}
	s := h.f.State()
	if len(s.Events) != EventLogSize || s.EventSeq != n {
		t.Fatalf("%d events, seq %d", len(s.Events), s.EventSeq)
	}
	if first, last := s.Events[0], lastEvent(s); first.Seq != n-EventLogSize+1 || last.Seq != n ||
		last.Reason != fmt.Sprintf("note %d", n-1) || last.Severity != SeverityWarning || last.Node != "x" {
		t.Fatalf("first %+v last %+v", first, last)
	}
}

func TestFSMClockNeverGoesBack(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.must(NewNoteCommand(h.id(), t0.Add(time.Hour), "", SeverityInfo, "late clock"))
	h.must(NewAppointCommand(h.id(), t0, "a", 1, "early clock"))
	s := h.f.State()
	if !s.Clock.Equal(t0.Add(time.Hour)) || !s.RedLeader.AppointedAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("clock %v, appointed %v", s.Clock, s.RedLeader.AppointedAt)
	}
}

func TestFSMUnknownEntries(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.must(NewAppointCommand(h.id(), t0, "a", 1, "fresh"))
	before := h.f.State()

	// Unknown type flagged ignorable: skipped, only the index moves.
	res := h.raw([]byte("\xc0\x01{\"id\":\"future\",\"t\":1,\"catalog\":[1,2,3]}"))
	if !res.Skipped || res.Err != nil {
		t.Fatalf("ignorable: %+v", res)
	}
	after := h.f.State()
	if after.Index != before.Index+1 {
		t.Fatal("skipped entry did not advance the index")
	}
	after.Index = before.Index
	if !reflect.DeepEqual(before, after) {
		t.Fatal("skipped entry changed the state")
	}

	// Unknown non-ignorable type: a clear error, state fully unchanged.
	before = h.f.State()
	res = h.raw([]byte("\x40\x01{\"id\":\"future2\",\"t\":1}"))
	if !errors.Is(res.Err, ErrUnknownType) || res.Skipped {
		t.Fatalf("non-ignorable: %+v", res)
	}
	if got := res.Err.Error(); got == "" {
		t.Fatal("empty error")
	}
	if after := h.f.State(); !reflect.DeepEqual(before, after) {
		t.Fatal("unknown entry changed the state")
	}
	// A known type in a future version: the same.
	res = h.raw([]byte("\x02\x02{\"id\":\"v2\",\"t\":1,\"node\":\"b\",\"epoch\":2}"))
	if !errors.Is(res.Err, ErrUnsupportedVersion) {
		t.Fatalf("future version: %+v", res)
	}
	if after := h.f.State(); !reflect.DeepEqual(before, after) {
		t.Fatal("future version changed the state")
	}
	// Malformed known type: rejected.
	if res := h.raw([]byte("\x02\x01{")); !errors.Is(res.Err, ErrMalformed) {
		t.Fatalf("malformed: %+v", res)
	}
	// Non-command raft entries are skipped.
	if res := h.f.Apply(&raft.Log{Index: 99, Type: raft.LogNoop}).(Result); !res.Skipped {
		t.Fatalf("noop: %+v", res)
	}
}

func TestFSMOnChange(t *testing.T) {
	var got []Change
	f := NewFSM(FSMOptions{Logger: discardLogger(), OnChange: func(c Change) { got = append(got, c) }})
	b, _ := EncodeCommand(NewNoteCommand("r", t0, "", SeverityInfo, "hello"))
	f.Apply(&raft.Log{Index: 5, Type: raft.LogCommand, Data: b})
	f.Apply(&raft.Log{Index: 6, Type: raft.LogCommand, Data: []byte{0x40, 1}})
	var buf bytes.Buffer
	if err := f.WriteState(&buf); err != nil {
		t.Fatal(err)
	}
	if err := f.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Index != 5 || got[0].Result.Err != nil || got[0].Result.Type != CmdNote ||
		!errors.Is(got[1].Result.Err, ErrUnknownType) || !got[2].Restored {
		t.Fatalf("changes %+v", got)
	}
}

// memSink is an in-memory raft.SnapshotSink.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

// richHarness builds a state that uses every part of the FSM.
func richHarness(t *testing.T) *harness {
	h := newHarness(t)
	init := NewInitCommand(h.id(), t0, "cluster-1", testSecret(), Policy{LeaderRate: "50Mbit", Flags: map[string]bool{"a": true, "b": false}})
	init.Marks = []Mark{{Node: "kiosk", By: MarkAdmin, Reason: "kept"}}
	init.Mode = AdminOpenAdmin
	h.must(init)
	h.must(NewAppointCommand(h.id(), t0.Add(time.Second), "a", 1, "fresh"))
	h.must(NewMarkCommand(h.id(), t0.Add(2*time.Second), "a", MarkAuto, time.Minute, "no confirmation"))
	h.must(NewMarkCommand(h.id(), t0.Add(2*time.Second), "z", MarkAuto, time.Hour, "dead"))
	h.must(NewAppointCommand(h.id(), t0.Add(3*time.Second), "b", 2, "next nominee"))
	h.must(NewConfirmCommand(h.id(), t0.Add(4*time.Second), "b", 2))
	h.must(NewSetPolicyCommand(h.id(), t0.Add(5*time.Second), Policy{LeaderRate: "20Mbit", PeerRate: "128kbit"}, 0))
	for i := range 300 {
		h.must(NewNoteCommand(h.id(), t0.Add(6*time.Second), "b", SeverityInfo, fmt.Sprintf("tick %d", i)))
	}
	return h
}

func TestFSMSnapshotRoundTrip(t *testing.T) {
	h := richHarness(t)
	want := h.f.State()
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Apply goes on while the snapshot is persisted.
	h.must(NewNoteCommand(h.id(), t0.Add(time.Hour), "", SeverityInfo, "after snapshot"))
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed %v cancelled %v", sink.closed, sink.cancelled)
	}
	t.Logf("snapshot of %d events, %d marks: %d bytes", len(want.Events), len(want.Marks), sink.Len())

	g := newHarness(t)
	g.prefix = "restored"
	g.must(NewNoteCommand("discarded", t0, "", SeverityInfo, "old state"))
	if err := g.f.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	got := g.f.State()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("restored state differs:\n got %+v\nwant %+v", got, want)
	}
	if res := g.apply(NewNoteCommand("discarded", t0, "", SeverityInfo, "old ID is gone")); res.Duplicate {
		t.Fatal("restore kept the old dedup window")
	}
	// The restored FSM behaves like the original: same dedup window, same
	// fencing, same marks.
	last := want.Dedup[len(want.Dedup)-1]
	for _, f := range []*harness{h, g} {
		if res := f.apply(NewNoteCommand(last, t0, "", SeverityInfo, "dup")); !res.Duplicate {
			t.Fatalf("dedup window lost: %+v", res)
		}
		f.reject(NewAppointCommand(f.id(), t0.Add(7*time.Second), "z", 3, "marked"), ErrMarked)
	}
	// And restoring twice gives the same result (WriteState is the same format).
	var buf bytes.Buffer
	if err := g.f.WriteState(&buf); err != nil {
		t.Fatal(err)
	}
	st, err := readSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(st, g.f.State()) {
		t.Fatal("WriteState round trip differs")
	}
}

func TestFSMSnapshotEmpty(t *testing.T) {
	f := NewFSM(FSMOptions{Logger: discardLogger()})
	var buf bytes.Buffer
	if err := f.WriteState(&buf); err != nil {
		t.Fatal(err)
	}
	g := NewFSM(FSMOptions{Logger: discardLogger()})
	if err := g.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.State(), g.State()) {
		t.Fatalf("%+v\n%+v", f.State(), g.State())
	}
}

// appendRecord appends one snapshot record.
func appendRecord(b []byte, typ, version byte, body string) []byte {
	b = append(b, typ, version)
	b = binary.AppendUvarint(b, uint64(len(body)))
	return append(b, body...)
}

func TestFSMRestoreErrors(t *testing.T) {
	h := richHarness(t)
	var buf bytes.Buffer
	if err := h.f.WriteState(&buf); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	endRec := appendRecord(nil, recEnd, 1, "{}")
	body := slices.Clip(good[:len(good)-len(endRec)]) // everything but the end record

	tests := []struct {
		name string
		data []byte
		want error // nil: restores
	}{
		{"good", good, nil},
		{"empty", nil, ErrBadSnapshot},
		{"truncated", good[:len(good)/2], ErrBadSnapshot},
		{"no end record", body, ErrBadSnapshot},
		{"header not first", appendRecord(nil, recPolicy, 1, "{}"), ErrBadSnapshot},
		{"unknown record", append(appendRecord(body, 0x30, 1, "{}"), endRec...), ErrUnknownType},
		{"unknown ignorable record", append(appendRecord(body, 0xb0, 1, `{"future":true}`), endRec...), nil},
		{"future record version", append(appendRecord(body, recMark, 2, "{}"), endRec...), ErrUnsupportedVersion},
		{"bad json", append(appendRecord(body, recMark, 1, "{"), endRec...), ErrBadSnapshot},
		{"duplicate mark", append(appendRecord(body, recMark, 1, `{"node":"z","by":"auto"}`), endRec...), ErrBadSnapshot},
		{"huge record", append([]byte{recHeader, 1}, binary.AppendUvarint(nil, maxRecordSize+1)...), ErrBadSnapshot},
		{"bad varint", []byte{recHeader, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, ErrBadSnapshot},
		{"short secret", append(appendRecord(appendRecord(nil, recHeader, 1, "{}"), recCluster, 1, `{"id":"c","secret":"AAAA"}`), endRec...), ErrBadSnapshot},
		{"event out of order", append(appendRecord(appendRecord(appendRecord(nil, recHeader, 1, `{"event_seq":5}`),
			recEvent, 1, `{"seq":3}`), recEvent, 1, `{"seq":2}`), endRec...), ErrBadSnapshot},
		{"event beyond seq", append(appendRecord(appendRecord(nil, recHeader, 1, `{"event_seq":1}`), recEvent, 1, `{"seq":3}`), endRec...), ErrBadSnapshot},
		{"duplicate request ID", append(appendRecord(appendRecord(nil, recHeader, 1, `{}`), recDedup, 1, `{"ids":["a","a"]}`), endRec...), ErrBadSnapshot},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := richHarness(t).f
			before := f.State()
			err := f.Restore(io.NopCloser(bytes.NewReader(tt.data)))
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if err != nil && !reflect.DeepEqual(before, f.State()) {
				t.Fatal("failed restore changed the state")
			}
		})
	}
}

// TestFSMConcurrentReads runs State and Snapshot readers against Apply
// (meaningful under -race).
func TestFSMConcurrentReads(t *testing.T) {
	h := newHarness(t)
	h.init()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				s := h.f.State()
				_ = s.Marked("a", t0)
				var buf bytes.Buffer
				if err := h.f.WriteState(&buf); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for i := range 200 {
		h.must(NewMarkCommand(h.id(), t0, fmt.Sprintf("n%d", i%7), MarkAuto, time.Second, "x"))
		h.must(NewNoteCommand(h.id(), t0.Add(time.Duration(i)*time.Second), "", SeverityInfo, "y"))
	}
	close(stop)
	wg.Wait()
}

// FuzzRestore feeds arbitrary snapshot streams (they arrive from other
// agents through InstallSnapshot and the state pull) to Restore.
func FuzzRestore(f *testing.F) {
	for _, st := range []State{{}, fuzzSeedState()} {
		var buf bytes.Buffer
		if err := writeSnapshot(&buf, st); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Add(appendRecord(appendRecord(nil, recHeader, 1, "{}"), recEnd, 1, "{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := readSnapshot(bytes.NewReader(data))
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := writeSnapshot(&buf, st); err != nil {
			t.Fatal(err)
		}
		st2, err := readSnapshot(&buf)
		if err != nil {
			t.Fatalf("re-read: %v", err)
		}
		if !reflect.DeepEqual(st, st2) {
			t.Fatalf("unstable round trip:\n%+v\n%+v", st, st2)
		}
	})
}

// fuzzSeedState is a small state with every part filled in.
func fuzzSeedState() State {
	return State{
		ClusterID: "c", Secret: testSecret(), Index: 9, Clock: t0, EventSeq: 2,
		RedLeader: RedLeader{Node: "a", Epoch: 3, AppointedAt: t0, ConfirmedAt: t0, Reason: "r"},
		Marks:     []Mark{{Node: "a", By: MarkAuto, SetAt: t0, Expires: t0.Add(time.Minute)}, {Node: "b", By: MarkAdmin}},
		Policy:    Policy{Version: 2, LeaderRate: "1Mbit", Flags: map[string]bool{"f": true}},
		Events:    []Event{{Seq: 1, Time: t0, Kind: EventInit, Severity: SeverityInfo}, {Seq: 2, Time: t0, Kind: EventNote, Severity: SeverityWarning, Reason: "x"}},
		Dedup:     []string{"r1", "r2"},
	}
}

func TestRedLeaderHolds(t *testing.T) {
	seat := RedLeader{Node: "a", Epoch: 5, AppointedAt: t0}
	lease := 2 * time.Second
	tests := []struct {
		name    string
		node    string
		newest  uint64
		checkIn time.Time
		now     time.Time
		want    bool
	}{
		{"holds", "a", 5, t0, t0.Add(time.Second), true},
		{"other node", "b", 5, t0, t0.Add(time.Second), false},
		{"empty node", "", 5, t0, t0.Add(time.Second), false},
		{"newer epoch known", "a", 6, t0, t0.Add(time.Second), false},
		{"lease expired", "a", 5, t0, t0.Add(lease), false},
		{"never checked in", "a", 5, time.Time{}, t0, false},
		{"check-in in the future", "a", 5, t0.Add(time.Minute), t0, false},
	}
	for _, tt := range tests {
		if got := seat.Holds(tt.node, tt.newest, tt.checkIn, tt.now, lease); got != tt.want {
			t.Errorf("%s: Holds = %v", tt.name, got)
		}
	}
	if (RedLeader{Epoch: 5}).Holds("", 5, t0, t0, lease) {
		t.Error("vacant seat held")
	}
}

// TestFSMAdminMode: admin commands (policy, admin marks, unmark) are
// refused unless the committed admin mode allows them; the mode comes
// with init (absent in an older agent's init: refused, the safe reading)
// and changes only by an admin-mode command. Everything else is accepted
// whatever the mode.
func TestFSMAdminMode(t *testing.T) {
	admin := func(h *harness) []Command {
		return []Command{
			NewSetPolicyCommand(h.id(), t0.Add(time.Second), Policy{PeerRate: "1kbit"}, 0),
			NewMarkCommand(h.id(), t0.Add(time.Second), "a", MarkAdmin, 0, "operator"),
			NewUnmarkCommand(h.id(), t0.Add(time.Second), "kiosk", "operator"),
		}
	}
	for _, tc := range []struct {
		mode  AdminMode
		allow bool
	}{
		{AdminUnset, false}, {AdminOpen, false}, {AdminKeyed, true}, {AdminOpenAdmin, true},
	} {
		t.Run(string(tc.mode)+"-", func(t *testing.T) {
			h := newHarness(t)
			init := NewInitCommand(h.id(), t0, "cluster-1", testSecret(), Policy{PeerRate: "256kbit"})
			init.Mode = tc.mode
			init.Marks = []Mark{{Node: "kiosk", By: MarkAdmin, Reason: "kept"}}
			h.must(init)
			if got := h.f.State().Admin; got != tc.mode {
				t.Fatalf("mode after init %q, want %q", got, tc.mode)
			}
			for _, c := range admin(h) {
				if tc.allow {
					h.must(c)
				} else {
					h.reject(c, ErrAdminRefused)
				}
			}
			// The leader's own commands never depend on the mode.
			h.must(NewAppointCommand(h.id(), t0.Add(2*time.Second), "b", 1, "fresh"))
			h.must(NewMarkCommand(h.id(), t0.Add(3*time.Second), "b", MarkAuto, time.Minute, "no check-in"))
			h.must(NewNoteCommand(h.id(), t0.Add(3*time.Second), "", SeverityInfo, "note"))
			// The mode moves only by an admin-mode command.
			h.must(NewAdminModeCommand(h.id(), t0.Add(4*time.Second), AdminKeyed, "keyed leader"))
			st := h.f.State()
			if st.Admin != AdminKeyed {
				t.Fatalf("mode %q after admin-mode keyed", st.Admin)
			}
			if e := lastEvent(st); tc.mode != AdminKeyed && (e.Kind != EventAdminMode || !strings.Contains(e.Reason, "keyed")) {
				t.Fatalf("event %+v, want an admin-mode event", e)
			}
			h.must(NewSetPolicyCommand(h.id(), t0.Add(5*time.Second), Policy{PeerRate: "2Mbit"}, 0))
			h.must(NewAdminModeCommand(h.id(), t0.Add(6*time.Second), AdminOpen, "open leader"))
			h.reject(NewSetPolicyCommand(h.id(), t0.Add(7*time.Second), Policy{PeerRate: "1kbit"}, 0), ErrAdminRefused)
			// The mode survives a snapshot.
			var buf bytes.Buffer
			if err := h.f.WriteState(&buf); err != nil {
				t.Fatal(err)
			}
			g := newHarness(t)
			if err := g.f.Restore(io.NopCloser(&buf)); err != nil {
				t.Fatal(err)
			}
			if got := g.f.State().Admin; got != AdminOpen {
				t.Fatalf("restored mode %q, want open", got)
			}
		})
	}
}
