package election

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/hashicorp/raft"
)

// Snapshot record types. A snapshot is a sequence of records, each
// [type byte][version byte][uvarint body length][JSON body]; the first is
// a header, the last an end record. Like commands, a type with
// FlagIgnorable set may be skipped by agents that do not know it.
const (
	recHeader  byte = 0x01 // index, clock, event sequence
	recCluster byte = 0x02 // cluster ID and secret
	recLeader  byte = 0x03 // the Red Leader seat
	recPolicy  byte = 0x04
	recMark    byte = 0x05 // one per mark
	recEvent   byte = 0x06 // one per event, oldest first
	recDedup   byte = 0x07 // the request IDs of the dedup window, oldest first
	recEnd     byte = 0x7f

	recordVersion = 1
	maxRecordSize = 1 << 20
)

type snapHeader struct {
	Index    uint64 `json:"index"`
	Clock    int64  `json:"clock,omitempty"`
	EventSeq uint64 `json:"event_seq,omitempty"`
}

type snapCluster struct {
	ID     string    `json:"id"`
	Secret []byte    `json:"secret,omitempty"`
	Admin  AdminMode `json:"admin,omitempty"`
}

type snapLeader struct {
	Node      string `json:"node,omitempty"`
	Epoch     uint64 `json:"epoch"`
	Appointed int64  `json:"appointed,omitempty"`
	Confirmed int64  `json:"confirmed,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

type snapEvent struct {
	Seq      uint64    `json:"seq"`
	T        int64     `json:"t"`
	Kind     EventKind `json:"kind"`
	Node     string    `json:"node,omitempty"`
	Epoch    uint64    `json:"epoch,omitempty"`
	Severity Severity  `json:"sev"`
	Reason   string    `json:"reason,omitempty"`
}

type snapDedup struct {
	IDs []string `json:"ids"`
}

// Snapshot captures a copy of the state; raft persists it later,
// concurrently with Apply.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{st: f.State()}, nil
}

// WriteState writes the current state in the snapshot format, for the
// state pull served to members and for the local cache of the last
// committed state. Read it back with Restore.
func (f *FSM) WriteState(w io.Writer) error {
	return writeSnapshot(w, f.State())
}

// Restore replaces the state with a snapshot written by Persist or
// WriteState. On error the state is left unchanged.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, err := readSnapshot(rc)
	if err != nil {
		return fmt.Errorf("restore election state: %w", err)
	}
	dedup := make(map[string]struct{}, len(st.Dedup))
	for _, id := range st.Dedup {
		dedup[id] = struct{}{}
	}
	f.mu.Lock()
	f.st, f.dedup = st, dedup
	f.mu.Unlock()
	if f.onChange != nil {
		f.onChange(Change{Restored: true})
	}
	return nil
}

type fsmSnapshot struct{ st State }

// Persist writes the snapshot to sink.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeSnapshot(sink, s.st); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist election snapshot: %w", err)
	}
	return sink.Close()
}

// Release does nothing: the snapshot holds its own copy.
func (s *fsmSnapshot) Release() {}

// record is one snapshot record to write.
type record struct {
	typ byte
	v   any
}

// writeSnapshot encodes st as snapshot records.
func writeSnapshot(w io.Writer, st State) error {
	bw := bufio.NewWriter(w)
	put := func(typ byte, v any) error {
		body, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode record 0x%02x: %w", typ, err)
		}
		hdr := binary.AppendUvarint([]byte{typ, recordVersion}, uint64(len(body)))
		if _, err := bw.Write(hdr); err != nil {
			return fmt.Errorf("write record: %w", err)
		}
		if _, err := bw.Write(body); err != nil {
			return fmt.Errorf("write record: %w", err)
		}
		return nil
	}
	l := st.RedLeader
	recs := []record{
		{recHeader, snapHeader{Index: st.Index, Clock: toNanos(st.Clock), EventSeq: st.EventSeq}},
		{recCluster, snapCluster{ID: st.ClusterID, Secret: st.Secret, Admin: st.Admin}},
		{recLeader, snapLeader{Node: l.Node, Epoch: l.Epoch, Appointed: toNanos(l.AppointedAt), Confirmed: toNanos(l.ConfirmedAt), Reason: l.Reason}},
		{recPolicy, st.Policy},
	}
	for _, m := range st.Marks {
		recs = append(recs, record{recMark, toWireMark(m)})
	}
	for _, e := range st.Events {
		recs = append(recs, record{recEvent, snapEvent{Seq: e.Seq, T: toNanos(e.Time), Kind: e.Kind, Node: e.Node, Epoch: e.Epoch, Severity: e.Severity, Reason: e.Reason}})
	}
	recs = append(recs, record{recDedup, snapDedup{IDs: st.Dedup}}, record{recEnd, struct{}{}})
	for _, r := range recs {
		if err := put(r.typ, r.v); err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	return nil
}

// readSnapshot decodes snapshot records into a State. Unknown ignorable
// records are skipped; anything else unknown or inconsistent is an error.
func readSnapshot(r io.Reader) (State, error) {
	br := bufio.NewReader(r)
	var st State
	first, ended := true, false
	for !ended {
		typ, version, body, err := readRecord(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return State{}, fmt.Errorf("%w: no end record", ErrBadSnapshot)
			}
			return State{}, err
		}
		if first && typ != recHeader {
			return State{}, fmt.Errorf("%w: first record is 0x%02x, not a header", ErrBadSnapshot, typ)
		}
		first = false
		known := typ >= recHeader && typ <= recDedup || typ == recEnd
		if !known || version == 0 || version > recordVersion {
			if typ&FlagIgnorable != 0 {
				continue
			}
			if !known {
				return State{}, fmt.Errorf("%w: snapshot record 0x%02x", ErrUnknownType, typ)
			}
			return State{}, fmt.Errorf("%w: snapshot record 0x%02x version %d", ErrUnsupportedVersion, typ, version)
		}
		if err := decodeRecord(&st, typ, body); err != nil {
			return State{}, err
		}
		ended = typ == recEnd
	}
	if err := checkState(st); err != nil {
		return State{}, err
	}
	return st, nil
}

// readRecord reads one record's header and body.
func readRecord(br *bufio.Reader) (typ, version byte, body []byte, err error) {
	var hdr [2]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, 0, nil, fmt.Errorf("%w: truncated record header", ErrBadSnapshot)
		}
		return 0, 0, nil, err
	}
	n, err := binary.ReadUvarint(br)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("%w: record length: %w", ErrBadSnapshot, err)
	}
	if n > maxRecordSize {
		return 0, 0, nil, fmt.Errorf("%w: record of %d bytes", ErrBadSnapshot, n)
	}
	body = make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return 0, 0, nil, fmt.Errorf("%w: truncated record body: %w", ErrBadSnapshot, err)
	}
	return hdr[0], hdr[1], body, nil
}

// decodeRecord applies one known record to st.
func decodeRecord(st *State, typ byte, body []byte) error {
	bad := func(err error) error {
		return fmt.Errorf("%w: record 0x%02x: %w", ErrBadSnapshot, typ, err)
	}
	switch typ {
	case recHeader:
		var h snapHeader
		if err := json.Unmarshal(body, &h); err != nil {
			return bad(err)
		}
		st.Index, st.Clock, st.EventSeq = h.Index, fromNanos(h.Clock), h.EventSeq
	case recCluster:
		var c snapCluster
		if err := json.Unmarshal(body, &c); err != nil {
			return bad(err)
		}
		st.ClusterID, st.Admin = c.ID, c.Admin
		if len(c.Secret) > 0 {
			st.Secret = c.Secret
		}
	case recLeader:
		var l snapLeader
		if err := json.Unmarshal(body, &l); err != nil {
			return bad(err)
		}
		st.RedLeader = RedLeader{Node: l.Node, Epoch: l.Epoch, AppointedAt: fromNanos(l.Appointed), ConfirmedAt: fromNanos(l.Confirmed), Reason: l.Reason}
	case recPolicy:
		var p Policy
		if err := json.Unmarshal(body, &p); err != nil {
			return bad(err)
		}
		if len(p.Flags) == 0 {
			p.Flags = nil
		}
		st.Policy = p
	case recMark:
		var m wireMark
		if err := json.Unmarshal(body, &m); err != nil {
			return bad(err)
		}
		st.Marks = append(st.Marks, m.mark())
	case recEvent:
		var e snapEvent
		if err := json.Unmarshal(body, &e); err != nil {
			return bad(err)
		}
		st.Events = append(st.Events, Event{Seq: e.Seq, Time: fromNanos(e.T), Kind: e.Kind, Node: e.Node, Epoch: e.Epoch, Severity: e.Severity, Reason: e.Reason})
	case recDedup:
		var d snapDedup
		if err := json.Unmarshal(body, &d); err != nil {
			return bad(err)
		}
		if len(d.IDs) > 0 {
			st.Dedup = d.IDs
		}
	}
	return nil
}

// checkState rejects a decoded state that breaks the FSM's invariants.
func checkState(st State) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadSnapshot, fmt.Sprintf(format, args...))
	}
	if st.Secret != nil && len(st.Secret) != SecretSize {
		return bad("secret of %d bytes", len(st.Secret))
	}
	if st.Admin != AdminUnset && !st.Admin.valid() {
		return bad("admin mode %q", st.Admin)
	}
	if !slices.IsSortedFunc(st.Marks, func(a, b Mark) int { return cmp.Compare(a.Node, b.Node) }) {
		return bad("marks out of order")
	}
	for i, m := range st.Marks {
		if m.Node == "" || (i > 0 && st.Marks[i-1].Node == m.Node) {
			return bad("empty or duplicate mark node %q", m.Node)
		}
	}
	if len(st.Events) > EventLogSize {
		return bad("%d events, at most %d", len(st.Events), EventLogSize)
	}
	for i, e := range st.Events {
		if e.Seq > st.EventSeq || (i > 0 && e.Seq <= st.Events[i-1].Seq) {
			return bad("event sequence out of order")
		}
	}
	if len(st.Dedup) > DedupWindow {
		return bad("%d request IDs, at most %d", len(st.Dedup), DedupWindow)
	}
	seen := make(map[string]bool, len(st.Dedup))
	for _, id := range st.Dedup {
		if id == "" || seen[id] {
			return bad("empty or duplicate request ID")
		}
		seen[id] = true
	}
	return nil
}
