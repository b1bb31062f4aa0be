package election

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// testKey returns a content key ID made from s.
func testKey(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// testEntry returns an entry for length bytes of content whose block
// hashes derive from seed: equal seeds give equal descriptions.
func testEntry(key string, length int64, seed string) CatalogEntry {
	e := CatalogEntry{Key: key, Length: length}
	for i := range CatalogSegments(length) {
		off := int64(i) * CatalogSegmentSize
		s := CatalogSegment{Offset: off, Length: min(CatalogSegmentSize, length-off)}
		for b := range s.BlockCount() {
			h := sha256.Sum256(fmt.Appendf(nil, "%s/%d/%d", seed, i, b))
			s.Hashes = append(s.Hashes, h[:]...)
		}
		e.Segments = append(e.Segments, s)
	}
	return e
}

// seated returns a harness whose FSM has node-a confirmed as Red Leader
// at epoch 1.
func seated(t *testing.T) *harness {
	h := newHarness(t)
	h.must(NewInitCommand(h.id(), t0, "c1", testSecret(), Policy{}))
	h.must(NewAppointCommand(h.id(), t0, "node-a", 1, "test"))
	h.must(NewConfirmCommand(h.id(), t0, "node-a", 1))
	return h
}

// commit applies e's catalog commands as node at epoch and returns the
// first error.
func (h *harness) commit(node string, epoch uint64, e CatalogEntry) error {
	h.t.Helper()
	for _, c := range NewCatalogCommands(h.id(), t0.Add(time.Minute), node, epoch, e) {
		if res := h.apply(c); res.Err != nil {
			return res.Err
		}
	}
	return nil
}

func TestCatalogCommitOnlyByCurrentRedLeader(t *testing.T) {
	h := seated(t)
	e := testEntry(testKey("a"), 3*CatalogSegmentSize+100, "a")
	before := h.f.State()
	for _, tt := range []struct {
		name  string
		node  string
		epoch uint64
		want  error
	}{
		{"another node", "node-b", 1, ErrNotAppointee},
		{"an old epoch", "node-a", 0, ErrInvalid}, // epoch 0 does not even encode
		{"a future epoch", "node-a", 2, ErrStaleEpoch},
	} {
		err := func() error {
			for _, c := range NewCatalogCommands(h.id(), t0, tt.node, tt.epoch, e) {
				if _, err := EncodeCommand(c); err != nil {
					return err
				}
				if res := h.apply(c); res.Err != nil {
					return res.Err
				}
			}
			return nil
		}()
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	if _, ok := h.f.CatalogLookup(e.Key); ok {
		t.Fatal("a refused commit left an entry")
	}
	// An appointed but unconfirmed seat does not commit either.
	h.must(NewAppointCommand(h.id(), t0, "node-c", 2, "next"))
	if err := h.commit("node-c", 2, e); !errors.Is(err, ErrNotAppointee) {
		t.Errorf("unconfirmed seat: %v", err)
	}
	h.must(NewConfirmCommand(h.id(), t0, "node-c", 2))
	mid := h.f.State()
	if err := h.commit("node-c", 2, e); err != nil {
		t.Fatal(err)
	}
	accepted := h.index
	got, ok := h.f.CatalogLookup(e.Key)
	if !ok || !got.Complete() || got.Node != "node-c" || got.Epoch != 2 || !reflect.DeepEqual(got.Segments, e.Segments) {
		t.Fatalf("entry %+v ok=%v", got.Key, ok)
	}
	// The old Red Leader of epoch 1 cannot commit any more.
	if err := h.commit("node-a", 1, testEntry(testKey("b"), 10, "b")); !errors.Is(err, ErrStaleEpoch) {
		t.Errorf("deposed Red Leader: %v", err)
	}
	// The catalog is no part of the State: no index, event or dedup change.
	after := h.f.State()
	if after.Index != mid.Index || len(after.Events) != len(mid.Events) || len(after.Dedup) != len(mid.Dedup) {
		t.Errorf("catalog commits changed the State: index %d→%d, %d→%d events, %d→%d dedup", mid.Index, after.Index,
			len(mid.Events), len(after.Events), len(mid.Dedup), len(after.Dedup))
	}
	if before.Index >= mid.Index {
		t.Error("the seat commands did not advance the index")
	}
	if st := h.f.CatalogStats(); st.Applied != accepted || st.Entries != 1 {
		t.Errorf("stats %+v, last accepted catalog index %d", st, accepted)
	}
}

func TestCatalogShapeChecks(t *testing.T) {
	key := testKey("shape")
	good := testEntry(key, 2*CatalogSegmentSize+3*CatalogBlockSize+1, "s")
	part := func(first int, segs ...CatalogSegment) *CatalogPart {
		return &CatalogPart{Key: key, Length: good.Length, First: first, Segments: segs}
	}
	short := good.Segments[0]
	short.Length -= CatalogBlockSize
	short.Hashes = short.Hashes[:len(short.Hashes)-BlockHashSize]
	moved := good.Segments[1]
	moved.Offset += CatalogBlockSize
	fewHashes := good.Segments[2]
	fewHashes.Hashes = fewHashes.Hashes[:BlockHashSize]
	long := good.Segments[2]
	long.Length++
	tests := []struct {
		name string
		p    *CatalogPart
		want string
	}{
		{"bad key", &CatalogPart{Key: "ABC", Length: 1, Segments: good.Segments[:1]}, "hex"},
		{"upper-case key", &CatalogPart{Key: strings.ToUpper(key), Length: good.Length, Segments: good.Segments[:1]}, "hex"},
		{"no length", &CatalogPart{Key: key, Segments: good.Segments[:1]}, "length"},
		{"no segment", part(0), "no segment"},
		{"too many segments in one command", part(0, good.Segments...), "at most"},
		{"short first segment", part(0, short), "contiguous"},
		{"a gap between segments", part(0, good.Segments[0], moved), "contiguous"},
		{"a hash short", part(2, fewHashes), "block hashes"},
		{"last segment too long", part(2, long), "contiguous"},
		{"past the end", part(3, good.Segments[2]), "content with 3"},
		{"bad digest", &CatalogPart{Key: key, Length: good.Length, SHA256: "x", Segments: good.Segments[:1]}, "sha256"},
	}
	for _, tt := range tests {
		c := Command{Type: CmdCatalog, RequestID: "r", Time: t0, Node: "node-a", Epoch: 1, Catalog: tt.p}
		err := c.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want ErrInvalid with %q", tt.name, err, tt.want)
		}
	}
	// A shape the decoder refuses is a rejection on apply too, and a
	// part that does not follow what the catalog has (a gap) is refused
	// by the FSM.
	h := seated(t)
	body, err := json.Marshal(wireCommand{ID: h.id(), T: t0.UnixNano(), Node: "node-a", Epoch: 1,
		Catalog: &wireCatalog{Key: key, Length: good.Length, Segments: toWireSegments([]CatalogSegment{short})}})
	if err != nil {
		t.Fatal(err)
	}
	before := h.f.State()
	if res := h.raw(append([]byte{byte(CmdCatalog), 1}, body...)); !errors.Is(res.Err, ErrInvalid) {
		t.Errorf("short segment: %v", res.Err)
	}
	if after := h.f.State(); after.Index != before.Index {
		t.Error("a malformed catalog entry advanced the state index")
	}
	gap := Command{Type: CmdCatalog, RequestID: h.id(), Time: t0, Node: "node-a", Epoch: 1, Catalog: part(2, good.Segments[2])}
	if res := h.apply(gap); !errors.Is(res.Err, ErrInvalid) || !strings.Contains(res.Err.Error(), "not contiguous") {
		t.Errorf("gap: %v", res.Err)
	}
	if _, ok := h.f.CatalogLookup(key); ok {
		t.Error("refused parts left an entry")
	}
	// Part by part, in order: incomplete until the last.
	cmds := NewCatalogCommands("p", t0, "node-a", 1, good)
	h.must(cmds[0])
	if e, ok := h.f.CatalogLookup(key); !ok || e.Complete() || len(e.Segments) != 2 {
		t.Fatalf("after the first part: ok=%v complete=%v segments=%d", ok, e.Complete(), len(e.Segments))
	}
	h.must(cmds[0]) // a resubmission changes nothing
	h.must(cmds[1])
	if e, ok := h.f.CatalogLookup(key); !ok || !e.Complete() || !reflect.DeepEqual(e.Segments, good.Segments) {
		t.Fatalf("after the last part: ok=%v complete=%v", ok, e.Complete())
	}
	// Content too large for the catalog is refused as a whole.
	huge := CatalogPart{Key: testKey("huge"), Length: 1 << 50, Segments: testEntry(testKey("huge"), CatalogSegmentSize, "h").Segments}
	if res := h.apply(Command{Type: CmdCatalog, RequestID: h.id(), Time: t0, Node: "node-a", Epoch: 1, Catalog: &huge}); !errors.Is(res.Err, ErrInvalid) ||
		!strings.Contains(res.Err.Error(), "too large") {
		t.Errorf("huge content: %v", res.Err)
	}
}

func TestCatalogConflictAndDigest(t *testing.T) {
	h := seated(t)
	key := testKey("c")
	e := testEntry(key, CatalogSegmentSize+5, "one")
	e.SHA256 = testKey("content-one")
	if err := h.commit("node-a", 1, e); err != nil {
		t.Fatal(err)
	}
	if got, ok := h.f.CatalogByDigest(e.SHA256); !ok || got.Key != key {
		t.Fatalf("by digest: %v %v", got.Key, ok)
	}
	// The same description again (a new Red Leader's, without the digest)
	// is no conflict.
	h.must(NewAppointCommand(h.id(), t0, "node-b", 2, "next"))
	h.must(NewConfirmCommand(h.id(), t0, "node-b", 2))
	same := testEntry(key, CatalogSegmentSize+5, "one")
	if err := h.commit("node-b", 2, same); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.f.CatalogLookup(key); got.Conflicted || got.SHA256 != e.SHA256 || got.Node != "node-b" {
		t.Fatalf("same description: %+v", got)
	}
	// A different one marks the key conflicted for good.
	other := testEntry(key, CatalogSegmentSize+5, "two")
	if err := h.commit("node-b", 2, other); err != nil {
		t.Fatal(err)
	}
	got, ok := h.f.CatalogLookup(key)
	if !ok || !got.Conflicted || len(got.Segments) != 0 || got.Complete() {
		t.Fatalf("after a different description: %+v", got)
	}
	if _, ok := h.f.CatalogByDigest(e.SHA256); ok {
		t.Error("a conflicted entry is still found by digest")
	}
	if err := h.commit("node-b", 2, e); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.f.CatalogLookup(key); !got.Conflicted {
		t.Error("a later commit cleared the conflict")
	}
	// A different digest for equal segments is a conflict too.
	k2 := testKey("d")
	d1 := testEntry(k2, 10, "x")
	d1.SHA256 = testKey("x1")
	d2 := d1
	d2.SHA256 = testKey("x2")
	if err := h.commit("node-b", 2, d1); err != nil {
		t.Fatal(err)
	}
	if err := h.commit("node-b", 2, d2); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.f.CatalogLookup(k2); !got.Conflicted {
		t.Error("two digests for one key: not conflicted")
	}
}

func TestCatalogAging(t *testing.T) {
	h := seated(t)
	for i := range MaxCatalogEntries + 3 {
		if err := h.commit("node-a", 1, testEntry(testKey(fmt.Sprint(i)), 100, "n")); err != nil {
			t.Fatal(err)
		}
	}
	if st := h.f.CatalogStats(); st.Entries != MaxCatalogEntries {
		t.Fatalf("%d entries, want %d", st.Entries, MaxCatalogEntries)
	}
	for i := range 3 {
		if _, ok := h.f.CatalogLookup(testKey(fmt.Sprint(i))); ok {
			t.Errorf("entry %d (among the oldest) not aged out", i)
		}
	}
	if _, ok := h.f.CatalogLookup(testKey(fmt.Sprint(MaxCatalogEntries + 2))); !ok {
		t.Error("the newest entry is missing")
	}
	// Re-committing an old entry makes it young again.
	if err := h.commit("node-a", 1, testEntry(testKey("3"), 100, "n")); err != nil {
		t.Fatal(err)
	}
	if err := h.commit("node-a", 1, testEntry(testKey("new"), 100, "n")); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.f.CatalogLookup(testKey("3")); !ok {
		t.Error("a re-committed entry was aged out")
	}
	if _, ok := h.f.CatalogLookup(testKey("4")); ok {
		t.Error("the oldest entry was kept")
	}
}

// TestCatalogByteBound fills the catalog by size (the command path would
// move 32 MiB of hashes through JSON: the bound is the catalog's).
func TestCatalogByteBound(t *testing.T) {
	c := newCatalog()
	big := int64(400) * CatalogSegmentSize // 12.5 GiB: ~6.3 MiB of descriptions
	var keys []string
	for i := range 6 {
		e := testEntry(testKey(fmt.Sprint("big", i)), big, "b")
		keys = append(keys, e.Key)
		for first := 0; first < len(e.Segments); first += CatalogSegmentsPerCommand {
			p := &CatalogPart{Key: e.Key, Length: e.Length, First: first,
				Segments: e.Segments[first:min(first+CatalogSegmentsPerCommand, len(e.Segments))]}
			if err := c.check(p); err != nil {
				t.Fatal(err)
			}
			c.apply(p, "node-a", 1, t0)
		}
		if c.bytes > MaxCatalogBytes {
			t.Fatalf("%d bytes after entry %d", c.bytes, i)
		}
	}
	if _, ok := c.entries[keys[0]]; ok {
		t.Error("the oldest large entry was kept past the byte bound")
	}
	if e := c.entries[keys[5]]; e == nil || !e.Complete() {
		t.Error("the newest large entry is missing or incomplete")
	}
	var sum int64
	for _, e := range c.entries {
		sum += e.size
	}
	if sum != c.bytes {
		t.Errorf("accounted %d bytes, entries cost %d", c.bytes, sum)
	}
}

func TestCatalogSnapshotRoundTrip(t *testing.T) {
	h := seated(t)
	var entries []CatalogEntry
	for i, n := range []int64{1, CatalogSegmentSize, 70*CatalogSegmentSize + 7} { // the last spans 3 records
		e := testEntry(testKey(fmt.Sprint("snap", i)), n, fmt.Sprint(i))
		if i == 1 {
			e.SHA256 = testKey("digest")
		}
		if err := h.commit("node-a", 1, e); err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	conflicted := testEntry(testKey("conflict"), 5, "a")
	_ = h.commit("node-a", 1, conflicted)
	_ = h.commit("node-a", 1, testEntry(testKey("conflict"), 5, "b"))

	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// A commit after the snapshot is not in it.
	if err := h.commit("node-a", 1, testEntry(testKey("later"), 9, "l")); err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	f2 := NewFSM(FSMOptions{Logger: discardLogger()})
	if err := f2.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		got, ok := f2.CatalogLookup(e.Key)
		if !ok || !got.Complete() || !reflect.DeepEqual(got.Segments, e.Segments) || got.SHA256 != e.SHA256 {
			t.Errorf("entry %s not restored whole (ok=%v)", e.Key[:8], ok)
		}
	}
	if got, ok := f2.CatalogByDigest(testKey("digest")); !ok || got.Key != entries[1].Key {
		t.Error("digest index not restored")
	}
	if got, ok := f2.CatalogLookup(testKey("conflict")); !ok || !got.Conflicted {
		t.Error("conflicted entry not restored")
	}
	if _, ok := f2.CatalogLookup(testKey("later")); ok {
		t.Error("a commit after the snapshot is in it")
	}
	st2 := f2.CatalogStats()
	h2 := seated(t) // the same entries committed fresh: same accounting
	for _, e := range entries {
		_ = h2.commit("node-a", 1, e)
	}
	_ = h2.commit("node-a", 1, conflicted)
	_ = h2.commit("node-a", 1, testEntry(testKey("conflict"), 5, "b"))
	st1 := h2.f.CatalogStats()
	if st1.Entries != st2.Entries || st1.Bytes != st2.Bytes {
		t.Errorf("restored stats %+v, want %+v", st2, st1)
	}
	// Aging continues from the restored sequence: the restored entries
	// are older than a new commit.
	before := f2.CatalogStats()
	h3 := &harness{t: t, f: f2, index: h.index, prefix: "h3"}
	if err := h3.commit("node-a", 1, testEntry(testKey("after-restore"), 9, "r")); err != nil {
		t.Fatal(err)
	}
	if f2.cat.entries[testKey("after-restore")].seq <= f2.cat.entries[entries[2].Key].seq || f2.CatalogStats().Entries != before.Entries+1 {
		t.Error("sequence not restored")
	}

	// The state members pull and the state cache carry no catalog, and
	// restoring one clears it.
	var pulled bytes.Buffer
	if err := h.f.WriteState(&pulled); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(pulled.Bytes(), []byte(entries[0].Key)) {
		t.Error("the state pull carries catalog entries")
	}
	if err := f2.Restore(io.NopCloser(&pulled)); err != nil {
		t.Fatal(err)
	}
	if st := f2.CatalogStats(); st.Entries != 0 {
		t.Errorf("%d entries after restoring a pulled state", st.Entries)
	}
	if sink.Len() <= pulled.Len() {
		t.Error("snapshot not larger than the state")
	}

	// A snapshot written before the catalog existed (no catalog records)
	// still loads.
	var old bytes.Buffer
	if err := writeSnapshot(&old, h.f.State()); err != nil {
		t.Fatal(err)
	}
	if err := NewFSM(FSMOptions{Logger: discardLogger()}).Restore(io.NopCloser(&old)); err != nil {
		t.Errorf("catalog-less snapshot: %v", err)
	}
}

func TestCatalogSnapshotRejectsBadRecords(t *testing.T) {
	h := seated(t)
	if err := h.commit("node-a", 1, testEntry(testKey("x"), 40*CatalogSegmentSize, "x")); err != nil {
		t.Fatal(err)
	}
	st := h.f.State()
	cat := h.f.cat.clone()
	write := func(recs []record) []byte {
		var buf bytes.Buffer
		if err := writeSnapshotWith(&buf, st, nil); err != nil {
			t.Fatal(err)
		}
		b := buf.Bytes()
		end := b[len(b)-5:] // the end record: 0x7f, version, length 2, "{}"
		out := bytes.NewBuffer(append([]byte(nil), b[:len(b)-5]...))
		for _, r := range recs {
			if err := encodeRecord(out, r); err != nil {
				t.Fatal(err)
			}
		}
		return append(out.Bytes(), end...)
	}
	recs := catalogRecords(&cat)
	if len(recs) != 3 {
		t.Fatalf("%d records, want meta + 2 entry records", len(recs))
	}
	if _, c, err := readSnapshotWith(bytes.NewReader(write(recs))); err != nil || len(c.entries) != 1 {
		t.Fatalf("spliced records: %v (%d entries)", err, len(c.entries))
	}
	for name, rs := range map[string][]record{
		"continuation without its entry": {recs[0], recs[2]},
		"entry twice":                    {recs[0], recs[1], recs[1]},
		"entry before meta":              {recs[1], recs[0]},
	} {
		if _, _, err := readSnapshotWith(bytes.NewReader(write(rs))); !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// The records are ignorable: an agent that knows no catalog skips them.
	for _, r := range recs {
		if r.typ&FlagIgnorable == 0 {
			t.Errorf("record 0x%02x is not ignorable", r.typ)
		}
	}
}

// TestCatalogIgnorableOnOldDecoder applies a catalog entry as an agent
// that does not know the type does: it skips it (this test removes the
// type from the command table for a moment, so it does not run in
// parallel).
func TestCatalogIgnorableOnOldDecoder(t *testing.T) {
	if !CmdCatalog.Ignorable() {
		t.Fatal("CmdCatalog is not ignorable")
	}
	cmds := NewCatalogCommands("old", t0, "node-a", 1, testEntry(testKey("old"), 10, "o"))
	data, err := EncodeCommand(cmds[0])
	if err != nil {
		t.Fatal(err)
	}
	name := commandNames[CmdCatalog]
	delete(commandNames, CmdCatalog)
	h := seated(t)
	before := h.f.State()
	res := h.raw(data)
	commandNames[CmdCatalog] = name
	if !res.Skipped || res.Err != nil {
		t.Fatalf("old decoder: %+v", res)
	}
	after := h.f.State()
	if after.Index != h.index || !reflect.DeepEqual(after.Events, before.Events) || after.RedLeader != before.RedLeader {
		t.Error("skipping changed more than the index")
	}
}

// TestCatalogRPC: lookups from members (Raft member or not) and from a
// stranger; a commit by the Red Leader reaches every Raft member; demands
// pass the election's bounds and reach the Red Leader's handler only.
func TestCatalogRPC(t *testing.T) {
	t.Parallel()
	handlers := map[string]*fakeDemand{}
	var mu sync.Mutex
	s := newTestSim(t, 4, func(s *sim, h *simHost, c *Config) {
		if h.i == 3 { // a member outside Raft
			c.Voter = false
			s.table.update(h.id, func(m *Member) { m.VoterOptOut = true })
		}
		d := &fakeDemand{}
		mu.Lock()
		handlers[h.id] = d
		mu.Unlock()
		c.Demand = d
	})
	_, red := formed(t, s)
	var member, other *simHost
	for _, h := range s.hosts {
		if h.node.raftNode() == nil {
			member = h
		}
		if h != red && other == nil {
			other = h
		}
	}
	if member == nil {
		t.Fatal("no member outside Raft")
	}
	e := testEntry(testKey("rpc"), 40*CatalogSegmentSize+1, "rpc") // two pages
	e.SHA256 = testKey("rpc-digest")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, h := range s.hosts {
		if h != red {
			if err := h.node.CommitCatalog(ctx, e); !errors.Is(err, ErrNotRedLeader) {
				t.Errorf("commit by a non-Red-Leader: %v", err)
			}
		}
	}
	if err := red.node.CommitCatalog(ctx, e); err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, 10*time.Second, "the entry on every Raft member", func() bool {
		for _, h := range s.hosts {
			if r := h.node.raftNode(); r != nil {
				if got, ok := r.fsm.CatalogLookup(e.Key); !ok || !got.Complete() {
					return false
				}
			}
		}
		return true
	})
	if member.node.member.CatalogStats().Entries != 0 {
		t.Error("a member's pulled state holds the catalog")
	}
	for _, by := range []struct{ key, sha string }{{e.Key, ""}, {"", e.SHA256}} {
		got, ok, err := member.node.LookupCatalog(ctx, by.key, by.sha)
		if err != nil || !ok || !reflect.DeepEqual(got.Segments, e.Segments) || got.Node != red.id {
			t.Errorf("member lookup %+v: ok=%v err=%v segments=%d", by, ok, err, len(got.Segments))
		}
	}
	if _, ok, err := member.node.LookupCatalog(ctx, testKey("nothing"), ""); ok || err != nil {
		t.Errorf("lookup of a missing key: ok=%v err=%v", ok, err)
	}
	rogue := addHost(s, 200, true)
	stranger := addHost(s, 201, false)
	var raftMember *simHost
	for _, h := range s.hosts {
		if h.node.raftNode() != nil {
			raftMember = h
		}
	}
	q := "/rpc/catalog?key=" + e.Key
	if code, body := rpcFrom(t, rogue, raftMember, "GET", q, nil); code != 200 || !strings.Contains(body, `"found":true`) {
		t.Errorf("lookup from a member: %d %.100s", code, body)
	}
	if code, body := rpcFrom(t, stranger, raftMember, "GET", q, nil); code != 403 {
		t.Errorf("lookup from a stranger: %d %.100s", code, body)
	}
	if code, _ := rpcFrom(t, rogue, member, "GET", q, nil); code != 503 {
		t.Errorf("lookup at a member outside Raft: %d", code)
	}
	if code, _ := rpcFrom(t, rogue, raftMember, "GET", "/rpc/catalog?key=zz", nil); code != 400 {
		t.Errorf("bad key: %d", code)
	}
	// A catalog commit sent by a member for another node is refused.
	fake := NewCatalogCommands("f", time.Now(), red.id, red.node.State().RedLeader.Epoch, testEntry(testKey("f"), 5, "f"))[0]
	if code, body := rpcFrom(t, rogue, raftLeaderHost(s.hosts), "POST", "/rpc/apply", encoded(t, fake)); code != 403 ||
		!strings.Contains(body, "own node") {
		t.Errorf("catalog commit for another node: %d %s", code, body)
	}

	// Demands.
	ok := Demand{From: rogue.id, URL: "http://origin.example/f.iso", Priority: PriorityNormal}
	long := ok
	long.URL = "http://origin.example/" + strings.Repeat("a", MaxDemandURL)
	tests := []struct {
		name     string
		from, to *simHost
		d        Demand
		want     int
		inBody   string
	}{
		{"from a stranger", stranger, red, Demand{From: stranger.id, URL: ok.URL}, 403, "not a member"},
		{"for another node", rogue, red, Demand{From: red.id, URL: ok.URL}, 403, "own node"},
		{"not http", rogue, red, Demand{From: rogue.id, URL: "ftp://origin.example/f"}, 403, "scheme"},
		{"file URL", rogue, red, Demand{From: rogue.id, URL: "file:///etc/passwd"}, 403, "scheme"},
		{"user info", rogue, red, Demand{From: rogue.id, URL: "http://u:p@origin.example/f"}, 403, "user info"},
		{"URL too long", rogue, red, long, 403, "bytes"},
		{"bad key", rogue, red, Demand{From: rogue.id, URL: ok.URL, Key: "ABC"}, 403, "key"},
		{"handler refuses the URL", rogue, red, Demand{From: rogue.id, URL: "http://127.0.0.1/f"}, 403, "loopback"},
		{"handler refuses a link-local URL", rogue, red, Demand{From: rogue.id, URL: "http://[fe80::1]/f"}, 403, "link-local"},
		{"to a non-Red-Leader", rogue, other, ok, 409, "not the Red Leader"},
		{"ok", rogue, red, ok, 200, `"held":`},
	}
	for _, tt := range tests {
		code, body := rpcFrom(t, tt.from, tt.to, "POST", "/rpc/demand", tt.d)
		if code != tt.want || !strings.Contains(body, tt.inBody) {
			t.Errorf("demand %s: %d %.200q, want %d with %q", tt.name, code, body, tt.want, tt.inBody)
		}
	}
	// Per member: MaxDemandsPerMember open demands; polling an open one
	// still works; a done one frees its place.
	for i := 1; i < MaxDemandsPerMember; i++ {
		d := Demand{From: rogue.id, URL: fmt.Sprintf("http://origin.example/%d", i)}
		if code, body := rpcFrom(t, rogue, red, "POST", "/rpc/demand", d); code != 200 {
			t.Fatalf("demand %d: %d %s", i, code, body)
		}
	}
	if code, body := rpcFrom(t, rogue, red, "POST", "/rpc/demand", Demand{From: rogue.id, URL: "http://origin.example/one-too-many"}); code != 429 {
		t.Errorf("demand past the bound: %d %s", code, body)
	}
	if code, _ := rpcFrom(t, rogue, red, "POST", "/rpc/demand", ok); code != 200 {
		t.Errorf("poll of an open demand: %d", code)
	}
	mu.Lock()
	h := handlers[red.id]
	mu.Unlock()
	h.setDone("http://origin.example/1")
	if code, _ := rpcFrom(t, rogue, red, "POST", "/rpc/demand", Demand{From: rogue.id, URL: "http://origin.example/1"}); code != 200 {
		t.Error("poll of the demand that completes")
	}
	if code, body := rpcFrom(t, rogue, red, "POST", "/rpc/demand", Demand{From: rogue.id, URL: "http://origin.example/next"}); code != 200 {
		t.Errorf("demand after one completed: %d %s", code, body)
	}
	// Another member has its own bound.
	if _, err := other.node.SendDemand(ctx, Demand{URL: "http://origin.example/m", Priority: PriorityHigh}); err != nil {
		t.Errorf("SendDemand from another member: %v", err)
	}
	if _, err := red.node.SendDemand(ctx, Demand{URL: "http://origin.example/m"}); err != nil {
		t.Logf("the Red Leader demanding from itself: %v", err) // allowed: it is a member too
	}
	// Only the Red Leader's handler saw demands, each passed the bounds.
	mu.Lock()
	defer mu.Unlock()
	for id, d := range handlers {
		if n := d.count(); (id == red.id) != (n > 0) {
			t.Errorf("handler of %s saw %d demands (Red Leader %s)", id[:8], n, red.id[:8])
		}
	}
}

// fakeDemand is a DemandHandler that refuses loopback and link-local
// hosts (as peer/fetch's CheckDemandURL does) and answers with a fixed
// description; setDone makes a URL's next answer final.
type fakeDemand struct {
	mu   sync.Mutex
	seen []Demand
	done map[string]bool
}

func (f *fakeDemand) Demand(_ context.Context, d Demand) (DemandReply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = append(f.seen, d)
	switch {
	case strings.Contains(d.URL, "//127."):
		return DemandReply{}, errors.New("demanded host is a loopback address")
	case strings.Contains(d.URL, "//[fe80:"):
		return DemandReply{}, errors.New("demanded host is a link-local address")
	}
	return DemandReply{Length: 5, Total: 1, Held: 5, Done: f.done[d.URL]}, nil
}

func (f *fakeDemand) setDone(url string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done == nil {
		f.done = map[string]bool{}
	}
	f.done[url] = true
}

func (f *fakeDemand) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.seen)
}
