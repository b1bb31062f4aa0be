package election

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"time"
)

// The subnet catalog of plain-origin content (issue #10, Build 3): for a
// content key (peer/fetch's Key.ID(), 64 hex digits), the MS-PCCRC v1
// segment descriptions the Red Leader computed with the subnet content
// secret as it downloaded. A peer that has them knows every segment ID
// (HoD from the block hashes, Kp from the subnet secret) and can verify
// every block it gets from the LAN.
//
// The catalog lives in the FSM beside the State but is no part of it: it
// is not in State(), WriteState or the state members pull, its commands
// neither advance State.Index (so members do not pull after each) nor add
// events, nor enter the dedup window (re-committing the same description
// is a no-op anyway). Raft snapshots carry it (ignorable records). Members
// look entries up on demand with GET /rpc/catalog from a Raft member.

// MS-PCCRC v1 layout, the only one the catalog holds: 32 MiB segments of
// 64 KiB blocks, each block hashed with SHA-256.
const (
	CatalogSegmentSize = 32 << 20
	CatalogBlockSize   = 64 << 10
	BlockHashSize      = 32
)

// Bounds of the catalog. Like the FSM's other bounds they are replicated
// behaviour: constants, not options.
const (
	// MaxCatalogEntries is how many content keys the catalog holds; the
	// least recently committed is aged out first.
	MaxCatalogEntries = 4096
	// MaxCatalogBytes bounds the catalog's size (block hashes plus a fixed
	// cost per segment and per entry): 32 MiB describes about 64 GiB of
	// content. Larger content is not catalogued.
	MaxCatalogBytes = 32 << 20
	// CatalogSegmentsPerCommand is how many segments one catalog command
	// carries at most: two full segments' hashes fit a log entry (64 KiB).
	CatalogSegmentsPerCommand = 2
	// catalogEntryCost and catalogSegmentCost are the fixed costs counted
	// against MaxCatalogBytes.
	catalogEntryCost   = 256
	catalogSegmentCost = 64
)

// CatalogSegment is one segment of catalogued content.
type CatalogSegment struct {
	Offset int64
	Length int64
	// Hashes are the SHA-256 hashes of the segment's blocks, in order,
	// BlockHashSize bytes each. Do not modify them: they are shared with
	// the FSM.
	Hashes []byte
}

// BlockCount is the number of blocks of the segment.
func (s CatalogSegment) BlockCount() int {
	return int((s.Length + CatalogBlockSize - 1) / CatalogBlockSize)
}

func (s CatalogSegment) equal(o CatalogSegment) bool {
	return s.Offset == o.Offset && s.Length == o.Length && bytes.Equal(s.Hashes, o.Hashes)
}

// CatalogSegments returns how many segments content of length bytes has.
func CatalogSegments(length int64) int {
	if length <= 0 {
		return 0
	}
	return int((length + CatalogSegmentSize - 1) / CatalogSegmentSize)
}

// CatalogPart is what a catalog command carries: segments First,
// First+1, … of the content named by Key (a commit of content with more
// segments than CatalogSegmentsPerCommand takes several commands, in
// order).
type CatalogPart struct {
	Key    string // content key ID: 64 lower-case hex digits
	Length int64  // the content's length
	SHA256 string // the whole content's SHA-256 (hex) when the committer knows it, else ""
	First  int
	// Segments must be the full v1 segments at First, First+1, …: offset
	// i×CatalogSegmentSize, length CatalogSegmentSize but for the
	// content's last one, one hash per block.
	Segments []CatalogSegment
}

// CatalogEntry is the catalog's record of one content key.
type CatalogEntry struct {
	Key    string
	Length int64
	SHA256 string // "" when no committer knew it
	// Segments are the descriptions committed so far, in order from the
	// first; the entry is complete when they cover Length.
	Segments []CatalogSegment
	// Conflicted: two different descriptions were committed for the key
	// (then Segments is empty and everyone fetches it from the origin).
	Conflicted bool
	Node       string    // the Red Leader that committed it last
	Epoch      uint64    // at that epoch
	Time       time.Time // the time of that commit (the committer's clock)

	seq  uint64 // commit order, for aging
	size int64  // its cost against MaxCatalogBytes
}

// Complete reports whether the entry describes the whole content.
func (e CatalogEntry) Complete() bool {
	return !e.Conflicted && len(e.Segments) == CatalogSegments(e.Length)
}

// validKeyHex reports whether s is 64 lower-case hex digits.
func validKeyHex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// validate checks a part's shape: contiguous full v1 segments that stay
// within the content's length.
func (p *CatalogPart) validate() error {
	switch {
	case !validKeyHex(p.Key):
		return fmt.Errorf("content key %.70q is not 64 lower-case hex digits", p.Key)
	case p.Length <= 0:
		return fmt.Errorf("content length %d", p.Length)
	case p.SHA256 != "" && !validKeyHex(p.SHA256):
		return fmt.Errorf("sha256 %.70q is not 64 lower-case hex digits", p.SHA256)
	case p.First < 0:
		return fmt.Errorf("first segment %d", p.First)
	case len(p.Segments) == 0:
		return fmt.Errorf("no segment")
	case len(p.Segments) > CatalogSegmentsPerCommand:
		return fmt.Errorf("%d segments, at most %d per command", len(p.Segments), CatalogSegmentsPerCommand)
	}
	total := CatalogSegments(p.Length)
	if p.First+len(p.Segments) > total {
		return fmt.Errorf("segments %d to %d of content with %d", p.First, p.First+len(p.Segments)-1, total)
	}
	for i, s := range p.Segments {
		off := int64(p.First+i) * CatalogSegmentSize
		want := min(CatalogSegmentSize, p.Length-off)
		if s.Offset != off || s.Length != want {
			return fmt.Errorf("segment %d at %d of %d bytes, want %d of %d bytes (contiguous full segments)",
				p.First+i, s.Offset, s.Length, off, want)
		}
		if len(s.Hashes) != s.BlockCount()*BlockHashSize {
			return fmt.Errorf("segment %d has %d bytes of block hashes, want %d", p.First+i, len(s.Hashes), s.BlockCount()*BlockHashSize)
		}
	}
	return nil
}

// NewCatalogCommands returns the commands that commit e's segments (all
// of them, in order) as node, the Red Leader at epoch. The request IDs are
// idPrefix-0, idPrefix-1, …
func NewCatalogCommands(idPrefix string, now time.Time, node string, epoch uint64, e CatalogEntry) []Command {
	return NewCatalogPartCommands(idPrefix, now, node, epoch,
		CatalogPart{Key: e.Key, Length: e.Length, SHA256: e.SHA256, Segments: e.Segments})
}

// NewCatalogPartCommands returns the commands that commit p's segments (p.First
// on, in order, CatalogSegmentsPerCommand per command) as node, the Red
// Leader at epoch. The request IDs are idPrefix-0, idPrefix-1, …; p.SHA256
// goes with the last command only.
func NewCatalogPartCommands(idPrefix string, now time.Time, node string, epoch uint64, p CatalogPart) []Command {
	var out []Command
	for i := 0; i < len(p.Segments); i += CatalogSegmentsPerCommand {
		end := min(i+CatalogSegmentsPerCommand, len(p.Segments))
		part := &CatalogPart{Key: p.Key, Length: p.Length, First: p.First + i, Segments: slices.Clone(p.Segments[i:end])}
		if end == len(p.Segments) {
			part.SHA256 = p.SHA256
		}
		out = append(out, Command{Type: CmdCatalog, RequestID: fmt.Sprintf("%s-%d", idPrefix, i/CatalogSegmentsPerCommand),
			Time: now, Node: node, Epoch: epoch, Catalog: part})
	}
	return out
}

// wireCatalog is a CatalogPart in a command or a snapshot record.
type wireCatalog struct {
	Key        string        `json:"key"`
	Length     int64         `json:"len"`
	SHA256     string        `json:"sha256,omitempty"`
	First      int           `json:"first,omitempty"`
	Segments   []wireSegment `json:"segs,omitempty"`
	Conflicted bool          `json:"conflicted,omitempty"` // snapshot records only
	Node       string        `json:"node,omitempty"`       // snapshot records only
	Epoch      uint64        `json:"epoch,omitempty"`      // snapshot records only
	T          int64         `json:"t,omitempty"`          // snapshot records only
	Seq        uint64        `json:"seq,omitempty"`        // snapshot records only
}

type wireSegment struct {
	Offset int64  `json:"off"`
	Length int64  `json:"len"`
	Hashes []byte `json:"h"`
}

func toWireSegments(segs []CatalogSegment) []wireSegment {
	out := make([]wireSegment, len(segs))
	for i, s := range segs {
		out[i] = wireSegment(s)
	}
	return out
}

func fromWireSegments(ws []wireSegment) []CatalogSegment {
	if len(ws) == 0 {
		return nil
	}
	out := make([]CatalogSegment, len(ws))
	for i, w := range ws {
		out[i] = CatalogSegment(w)
	}
	return out
}

// catalog is the FSM's catalog. Entries are never modified in place: a
// change replaces the entry (copy on write), so a snapshot can keep the
// pointers it took.
type catalog struct {
	entries  map[string]*CatalogEntry
	byDigest map[string]string // SHA-256 hex → key of a complete entry
	seq      uint64            // the last commit's sequence number
	bytes    int64             // the entries' total cost
	applied  uint64            // the Raft index of the last catalog command applied
}

func newCatalog() catalog {
	return catalog{entries: map[string]*CatalogEntry{}, byDigest: map[string]string{}}
}

// clone returns a catalog sharing c's (immutable) entries.
func (c *catalog) clone() catalog {
	out := *c
	out.entries = make(map[string]*CatalogEntry, len(c.entries))
	for k, e := range c.entries {
		out.entries[k] = e
	}
	out.byDigest = make(map[string]string, len(c.byDigest))
	for k, v := range c.byDigest {
		out.byDigest[k] = v
	}
	return out
}

func entryCost(segs []CatalogSegment) int64 {
	n := int64(catalogEntryCost)
	for _, s := range segs {
		n += int64(len(s.Hashes)) + catalogSegmentCost
	}
	return n
}

// put replaces or inserts e (computing its cost), indexes its digest and
// ages out the oldest other entries while the catalog is over its bounds.
func (c *catalog) put(e *CatalogEntry) {
	if old := c.entries[e.Key]; old != nil {
		c.drop(old)
	}
	e.size = entryCost(e.Segments)
	c.entries[e.Key] = e
	c.bytes += e.size
	if e.SHA256 != "" && e.Complete() {
		c.byDigest[e.SHA256] = e.Key
	}
	for len(c.entries) > MaxCatalogEntries || c.bytes > MaxCatalogBytes {
		var oldest *CatalogEntry
		for _, x := range c.entries {
			if x != e && (oldest == nil || x.seq < oldest.seq) {
				oldest = x
			}
		}
		if oldest == nil {
			break
		}
		c.drop(oldest)
	}
}

// drop removes e.
func (c *catalog) drop(e *CatalogEntry) {
	delete(c.entries, e.Key)
	c.bytes -= e.size
	if e.SHA256 != "" && c.byDigest[e.SHA256] == e.Key {
		delete(c.byDigest, e.SHA256)
	}
}

// check decides whether part may be applied, without changing anything
// (the caller checked the committer's seat).
func (c *catalog) check(p *CatalogPart) error {
	e := c.entries[p.Key]
	if e != nil && e.Conflicted {
		return nil // accepted, changes nothing: the key stays conflicted
	}
	have := 0
	if e != nil && e.Length == p.Length {
		have = len(e.Segments)
	}
	if p.First > have {
		return fmt.Errorf("%w: catalog part for %s starts at segment %d, the catalog has %d (not contiguous)",
			ErrInvalid, keyPrefix(p.Key), p.First, have)
	}
	if n := fullCost(p.Length); n > MaxCatalogBytes {
		return fmt.Errorf("%w: content of %d bytes is too large for the catalog (%d bytes of descriptions, at most %d)",
			ErrInvalid, p.Length, n, MaxCatalogBytes)
	}
	return nil
}

// fullCost is the cost of the complete entry of content of length bytes.
func fullCost(length int64) int64 {
	blocks := (length + CatalogBlockSize - 1) / CatalogBlockSize
	return catalogEntryCost + int64(CatalogSegments(length))*catalogSegmentCost + blocks*BlockHashSize
}

// apply applies an accepted part committed by node at epoch at time t and
// reports whether it marked the entry conflicted.
func (c *catalog) apply(p *CatalogPart, node string, epoch uint64, t time.Time) (conflict bool) {
	c.seq++
	e := c.entries[p.Key]
	if e == nil {
		if p.First != 0 {
			return false // cannot happen: check refused it
		}
		c.put(&CatalogEntry{Key: p.Key, Length: p.Length, SHA256: p.SHA256, Segments: slices.Clone(p.Segments),
			Node: node, Epoch: epoch, Time: t, seq: c.seq})
		return false
	}
	if e.Conflicted {
		return false
	}
	n := *e // copy on write
	n.Node, n.Epoch, n.Time, n.seq = node, epoch, t, c.seq
	differs := e.Length != p.Length || (e.SHA256 != "" && p.SHA256 != "" && e.SHA256 != p.SHA256)
	for i, s := range p.Segments {
		if j := p.First + i; !differs && j < len(e.Segments) && !e.Segments[j].equal(s) {
			differs = true
		}
	}
	if differs {
		n.Conflicted, n.Segments, n.SHA256 = true, nil, ""
		c.put(&n)
		return true
	}
	if n.SHA256 == "" {
		n.SHA256 = p.SHA256
	}
	if end := p.First + len(p.Segments); end > len(e.Segments) {
		n.Segments = append(slices.Clip(slices.Clone(e.Segments)), p.Segments[len(e.Segments)-p.First:]...)
	}
	c.put(&n)
	return false
}

// lookup returns a copy of key's entry with the segments from first on
// (at most max of them; max ≤ 0: all).
func (c *catalog) lookup(key string, first, max int) (CatalogEntry, bool) {
	e := c.entries[key]
	if e == nil {
		return CatalogEntry{}, false
	}
	out := *e
	first = min(max0(first), len(e.Segments))
	end := len(e.Segments)
	if max > 0 {
		end = min(end, first+max)
	}
	out.Segments = slices.Clone(e.Segments[first:end])
	return out, true
}

func max0(n int) int { return max(n, 0) }

// sorted returns the entries, oldest commit first.
func (c *catalog) sorted() []*CatalogEntry {
	out := make([]*CatalogEntry, 0, len(c.entries))
	for _, e := range c.entries {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *CatalogEntry) int { return cmp.Compare(a.seq, b.seq) })
	return out
}

// applyCatalog applies a catalog command (the FSM's lock held). It never
// touches the State: a rejection changes nothing at all.
func (f *FSM) applyCatalog(index uint64, c Command) error {
	seat := f.st.RedLeader
	switch {
	case c.Epoch != seat.Epoch:
		return fmt.Errorf("%w: catalog commit by %s at epoch %d, current epoch %d", ErrStaleEpoch, c.Node, c.Epoch, seat.Epoch)
	case c.Node != seat.Node || !seat.Confirmed():
		return fmt.Errorf("%w: catalog commit by %s, current (confirmed) Red Leader %q", ErrNotAppointee, c.Node, seat.Node)
	}
	if err := f.cat.check(c.Catalog); err != nil {
		return err
	}
	f.cat.applied = index
	if f.cat.apply(c.Catalog, c.Node, c.Epoch, c.Time.UTC()) {
		f.log.Warn("election: catalog entry conflicted: two different descriptions of one content key; everyone fetches it from the origin",
			"key", c.Catalog.Key, "by", c.Node, "epoch", c.Epoch)
	}
	return nil
}

// CatalogLookup returns the catalog's entry for a content key ID (with
// all its segments), as this FSM holds it.
func (f *FSM) CatalogLookup(key string) (CatalogEntry, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.cat.lookup(key, 0, 0)
}

// CatalogByDigest returns the complete entry whose content has this
// SHA-256 (hex), if a committer knew it.
func (f *FSM) CatalogByDigest(sha string) (CatalogEntry, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	key, ok := f.cat.byDigest[sha]
	if !ok {
		return CatalogEntry{}, false
	}
	return f.cat.lookup(key, 0, 0)
}

// catalogPage is lookup by key or digest, under the FSM's lock.
func (f *FSM) catalogPage(key, sha string, first, max int) (CatalogEntry, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if key == "" {
		k, ok := f.cat.byDigest[sha]
		if !ok {
			return CatalogEntry{}, false
		}
		key = k
	}
	return f.cat.lookup(key, first, max)
}

// CatalogStats says how full the catalog is.
type CatalogStats struct {
	Entries int
	Bytes   int64
	Applied uint64 // Raft index of the last catalog command applied
}

// CatalogStats returns the catalog's size.
func (f *FSM) CatalogStats() CatalogStats {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return CatalogStats{Entries: len(f.cat.entries), Bytes: f.cat.bytes, Applied: f.cat.applied}
}

// Snapshot records of the catalog, ignorable (an older agent skips them).
const (
	recCatalogMeta  byte = 0x08 | FlagIgnorable // the last sequence number and applied index
	recCatalogEntry byte = 0x09 | FlagIgnorable // one entry, or the next segments of the entry before
	// catalogRecordSegments bounds the segments per entry record (under
	// maxRecordSize with base64 hashes).
	catalogRecordSegments = 32
)

type snapCatalogMeta struct {
	Seq     uint64 `json:"seq"`
	Applied uint64 `json:"applied,omitempty"`
}

// catalogRecords returns the records of c, oldest entry first; an entry
// with many segments spans several records, each with its First.
func catalogRecords(c *catalog) []record {
	recs := []record{{recCatalogMeta, snapCatalogMeta{Seq: c.seq, Applied: c.applied}}}
	for _, e := range c.sorted() {
		first := 0
		for {
			end := min(first+catalogRecordSegments, len(e.Segments))
			recs = append(recs, record{recCatalogEntry, wireCatalog{Key: e.Key, Length: e.Length, SHA256: e.SHA256, First: first,
				Segments: toWireSegments(e.Segments[first:end]), Conflicted: e.Conflicted, Node: e.Node, Epoch: e.Epoch,
				T: toNanos(e.Time), Seq: e.seq}})
			first = end
			if first >= len(e.Segments) {
				break
			}
		}
	}
	return recs
}

// restoreCatalogRecord adds one entry record to c (being read from a
// snapshot) and checks it.
func restoreCatalogRecord(c *catalog, w wireCatalog) error {
	segs := fromWireSegments(w.Segments)
	if e := c.entries[w.Key]; e != nil {
		if w.First == 0 || w.First != len(e.Segments) || w.Length != e.Length || w.Seq != e.seq {
			return fmt.Errorf("catalog entry %.16s: record at segment %d out of order", w.Key, w.First)
		}
		p := CatalogPart{Key: w.Key, Length: w.Length, First: w.First, Segments: segs}
		if err := p.validateRange(); err != nil {
			return fmt.Errorf("catalog entry %.16s: %w", w.Key, err)
		}
		n := *e
		n.Segments = append(slices.Clip(n.Segments), segs...)
		c.bytes -= e.size
		n.size = entryCost(n.Segments)
		c.bytes += n.size
		c.entries[w.Key] = &n
		if n.SHA256 != "" && n.Complete() {
			c.byDigest[n.SHA256] = n.Key
		}
		return nil
	}
	e := &CatalogEntry{Key: w.Key, Length: w.Length, SHA256: w.SHA256, Segments: segs, Conflicted: w.Conflicted,
		Node: w.Node, Epoch: w.Epoch, Time: fromNanos(w.T), seq: w.Seq}
	if w.First != 0 || (e.Conflicted && len(segs) > 0) || w.Seq == 0 || w.Seq > c.seq {
		return fmt.Errorf("catalog entry %.16s: bad first record", w.Key)
	}
	if len(segs) > 0 {
		p := CatalogPart{Key: w.Key, Length: w.Length, SHA256: w.SHA256, First: 0, Segments: segs}
		if err := p.validateRange(); err != nil {
			return fmt.Errorf("catalog entry %.16s: %w", w.Key, err)
		}
	} else if !validKeyHex(w.Key) || w.Length <= 0 || (w.SHA256 != "" && !validKeyHex(w.SHA256)) {
		return fmt.Errorf("catalog entry %.16q: bad key, length or digest", w.Key)
	}
	e.size = entryCost(segs)
	c.entries[e.Key] = e
	c.bytes += e.size
	if e.SHA256 != "" && e.Complete() {
		c.byDigest[e.SHA256] = e.Key
	}
	if len(c.entries) > MaxCatalogEntries || c.bytes > MaxCatalogBytes {
		return fmt.Errorf("catalog over its bounds (%d entries, %d bytes)", len(c.entries), c.bytes)
	}
	return nil
}

// validateRange is validate without the per-command segment bound (a
// snapshot record holds up to catalogRecordSegments).
func (p *CatalogPart) validateRange() error {
	q := *p
	for first := 0; first < len(p.Segments); first += CatalogSegmentsPerCommand {
		q.First = p.First + first
		q.Segments = p.Segments[first:min(first+CatalogSegmentsPerCommand, len(p.Segments))]
		if err := q.validate(); err != nil {
			return err
		}
	}
	return nil
}

// keyPrefix is a short form of a key for logs.
func keyPrefix(k string) string {
	if len(k) > 16 {
		return k[:16]
	}
	return k
}
