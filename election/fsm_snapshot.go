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
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &fsmSnapshot{st: f.st.clone(), cat: f.cat.clone()}, nil
}

// WriteState writes the current state in the snapshot format, for the
// state pull served to members and for the local cache of the last
// committed state. Read it back with Restore. The catalog is left out:
// only Raft snapshots carry it.
func (f *FSM) WriteState(w io.Writer) error {
	return writeSnapshot(w, f.State())
}

// Restore replaces the state with a snapshot written by Persist or
// WriteState. On error the state is left unchanged.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, cat, err := readSnapshotWith(rc)
	if err != nil {
		return fmt.Errorf("restore election state: %w", err)
	}
	dedup := make(map[string]struct{}, len(st.Dedup))
	for _, id := range st.Dedup {
		dedup[id] = struct{}{}
	}
	f.mu.Lock()
	f.st, f.dedup, f.cat = st, dedup, cat
	f.mu.Unlock()
	if f.onChange != nil {
		f.onChange(Change{Restored: true})
	}
	return nil
}

type fsmSnapshot struct {
	st  State
	cat catalog // shares the FSM's immutable entries
}

// Persist writes the snapshot to sink.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeSnapshotWith(sink, s.st, &s.cat); err != nil {
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

// writeSnapshot encodes st as snapshot records, without a catalog.
func writeSnapshot(w io.Writer, st State) error { return writeSnapshotWith(w, st, nil) }

// writeSnapshotWith encodes st and, if not nil, cat as snapshot records.
func writeSnapshotWith(w io.Writer, st State, cat *catalog) error {
	bw := bufio.NewWriter(w)
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
	recs = append(recs, record{recDedup, snapDedup{IDs: st.Dedup}})
	if cat != nil {
		recs = append(recs, catalogRecords(cat)...)
	}
	recs = append(recs, record{recEnd, struct{}{}})
	for _, r := range recs {
		if err := encodeRecord(bw, r); err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	return nil
}

// encodeRecord writes one record.
func encodeRecord(w io.Writer, r record) error {
	body, err := json.Marshal(r.v)
	if err != nil {
		return fmt.Errorf("encode record 0x%02x: %w", r.typ, err)
	}
	hdr := binary.AppendUvarint([]byte{r.typ, recordVersion}, uint64(len(body)))
	if _, err := w.Write(hdr); err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	if _, err := w.Write(body); err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	return nil
}

// readSnapshot decodes snapshot records into a State, leaving out the
// catalog.
func readSnapshot(r io.Reader) (State, error) {
	st, _, err := readSnapshotWith(r)
	return st, err
}

// readSnapshotWith decodes snapshot records into a State and a catalog
// (empty when the snapshot has none: a state pull, an older agent's).
// Unknown ignorable records are skipped; anything else unknown or
// inconsistent is an error.
func readSnapshotWith(r io.Reader) (State, catalog, error) {
	st, cat, err := readRecords(r)
	if err != nil {
		return State{}, newCatalog(), err
	}
	return st, cat, nil
}

func readRecords(r io.Reader) (State, catalog, error) {
	br := bufio.NewReader(r)
	var st State
	cat := newCatalog()
	first, ended := true, false
	for !ended {
		typ, version, body, err := readRecord(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return State{}, cat, fmt.Errorf("%w: no end record", ErrBadSnapshot)
			}
			return State{}, cat, err
		}
		if first && typ != recHeader {
			return State{}, cat, fmt.Errorf("%w: first record is 0x%02x, not a header", ErrBadSnapshot, typ)
		}
		first = false
		if typ == recCatalogMeta || typ == recCatalogEntry {
			if version == 0 || version > recordVersion {
				continue // ignorable: a newer agent's catalog
			}
			if err := decodeCatalogRecord(&cat, typ, body); err != nil {
				return State{}, cat, err
			}
			continue
		}
		known := typ >= recHeader && typ <= recDedup || typ == recEnd
		if !known || version == 0 || version > recordVersion {
			if typ&FlagIgnorable != 0 {
				continue
			}
			if !known {
				return State{}, cat, fmt.Errorf("%w: snapshot record 0x%02x", ErrUnknownType, typ)
			}
			return State{}, cat, fmt.Errorf("%w: snapshot record 0x%02x version %d", ErrUnsupportedVersion, typ, version)
		}
		if err := decodeRecord(&st, typ, body); err != nil {
			return State{}, cat, err
		}
		ended = typ == recEnd
	}
	if err := checkState(st); err != nil {
		return State{}, cat, err
	}
	return st, cat, nil
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

// decodeCatalogRecord applies one catalog record to cat.
func decodeCatalogRecord(cat *catalog, typ byte, body []byte) error {
	bad := func(err error) error {
		return fmt.Errorf("%w: record 0x%02x: %w", ErrBadSnapshot, typ, err)
	}
	switch typ {
	case recCatalogMeta:
		var m snapCatalogMeta
		if err := json.Unmarshal(body, &m); err != nil {
			return bad(err)
		}
		if len(cat.entries) > 0 {
			return bad(errors.New("catalog meta after entries"))
		}
		cat.seq, cat.applied = m.Seq, m.Applied
	case recCatalogEntry:
		var w wireCatalog
		if err := json.Unmarshal(body, &w); err != nil {
			return bad(err)
		}
		if err := restoreCatalogRecord(cat, w); err != nil {
			return bad(err)
		}
	}
	return nil
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
