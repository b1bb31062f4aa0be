// Package cache keeps verified MS-PCCRC segments on disk at block
// granularity. A segment can be partly held; every block is checked against
// its hash before it is written and can be served as soon as it is written,
// so peers can fetch from a Red Leader that is still downloading the
// segment. Writes are crash-safe: at Open the index is rebuilt from disk and
// every held block is verified again, so a torn write or a block corrupted
// on disk is dropped, never served. A size cap evicts least-recently-used
// segments. See DESIGN.md for the on-disk layout.
//
// A Cache implements retrieval.Store (for the MS-PCCRR server) and
// discovery.Holder (for the MS-PCCRD responder). It is safe for concurrent
// use.
package cache

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/redleader-p2p/redleader/discovery"
	"github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/retrieval"
)

// Sentinel errors.
var (
	// ErrClosed means the cache was closed.
	ErrClosed = errors.New("cache closed")
	// ErrUnknownSegment means the segment was never added, or was evicted or removed.
	ErrUnknownSegment = errors.New("segment not in cache")
	// ErrNotHeld means the block is not held.
	ErrNotHeld = errors.New("block not held")
	// ErrFull means the size cap cannot be kept: every other segment is pinned or being written.
	ErrFull = errors.New("cache full")
	// ErrIncomplete means a whole segment was asked for but some blocks are missing.
	ErrIncomplete = errors.New("segment incomplete")
	// ErrBadDescription means a segment description is invalid.
	ErrBadDescription = errors.New("invalid segment description")
	// ErrConflict means a segment description disagrees with the cached one of the same ID.
	ErrConflict = errors.New("segment description conflicts with the cached one")
	// ErrCorrupt means a cached block failed verification when read; it was dropped.
	ErrCorrupt = errors.New("cached block corrupt")
)

// Compile-time checks of the interfaces the agent wires the cache into.
var (
	_ retrieval.Store  = (*Cache)(nil)
	_ discovery.Holder = (*Cache)(nil)
)

// Options configures a Cache.
type Options struct {
	// MaxBytes caps the bytes the cache keeps (held blocks plus segment
	// descriptions); least-recently-used segments are evicted to stay
	// under it. 0 or less means no cap.
	MaxBytes int64
	// Logger receives warnings (corrupt blocks, dropped segments) and
	// debug events (evictions). Nil discards them.
	Logger *slog.Logger
	// NoSync skips fsync. Crash safety against a killed process is the
	// same (the kernel keeps written data); a power loss may then lose
	// recent blocks, which are dropped at the next Open. For tests and
	// benchmarks.
	NoSync bool
}

// Stats is a snapshot of the cache's counters.
type Stats struct {
	// Bytes is the accounted size: held blocks plus segment descriptions.
	Bytes int64
	// MaxBytes is the cap (0: none).
	MaxBytes int64
	// Segments is the number of described segments.
	Segments int
	// Blocks is the number of held blocks.
	Blocks int
	// Evictions is the number of segments evicted to keep the cap.
	Evictions uint64
	// CorruptDropped is the number of blocks dropped because they failed
	// verification (at Open or when read whole).
	CorruptDropped uint64
	// BadSegments is the number of segment directories dropped at Open
	// because their description was unreadable or invalid.
	BadSegments uint64
}

// Cache is a block-granular segment cache in one directory.
type Cache struct {
	dir      string
	maxBytes int64
	noSync   bool
	log      *slog.Logger

	clock         atomic.Uint64 // logical clock for LRU
	addMu         sync.Mutex    // serializes AddSegment and Remove
	addContentSem chan struct{} // one AddContent at a time (add.go)

	mu          sync.RWMutex // guards the fields below and segment.size/pins/writers
	closed      bool
	segs        map[content.SegmentID]*segment
	used        int64
	evictions   uint64
	corrupt     uint64
	badSegments uint64
	trashSeq    uint64
}

// segment is one cached segment. Lock order: Cache.addMu, segment.wmu,
// Cache.mu, segment.mu; logMu and syncMu are taken alone.
type segment struct {
	id      content.SegmentID
	path    string
	lastUse atomic.Uint64

	// Guarded by Cache.mu.
	size    int64 // accounted bytes: held blocks + description file
	pins    int
	writers int // PutBlock/AddSegment calls in flight

	// wmu is read-locked by block writes (which run in parallel) and
	// locked by changes that exclude them: description updates, removal,
	// Close. s.desc changes only under wmu.
	wmu sync.RWMutex

	logMu   sync.Mutex    // serializes commit record appends
	syncMu  sync.Mutex    // serializes fsyncs of the data file; guards synced
	written atomic.Uint64 // data writes done
	synced  uint64        // data writes covered by the last fsync

	mu    sync.RWMutex // guards the fields below; desc also changes only under wmu
	desc  content.Segment
	held  []bool
	nheld int
	data  *os.File
	log   *os.File
	gone  bool // evicted, removed or closed: files closed
}

// Open opens (creating it if needed) the cache in dir, rebuilds its index
// and verifies every held block; corrupt blocks, torn writes and
// unreadable segments are dropped and counted in Stats.
func Open(dir string, opts Options) (*Cache, error) {
	c := &Cache{
		dir:      dir,
		maxBytes: max(opts.MaxBytes, 0),
		noSync:   opts.NoSync,
		log:      opts.Logger,
		segs:     make(map[content.SegmentID]*segment),

		addContentSem: make(chan struct{}, 1),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open cache: %w", err)
	}
	if err := c.load(); err != nil {
		return nil, fmt.Errorf("open cache %s: %w", dir, err)
	}
	c.mu.Lock()
	trash, _ := c.evictLocked(0, nil)
	c.mu.Unlock()
	c.removeTrash(trash)
	return c, nil
}

// Close syncs and closes every segment's files, waiting for writes in
// flight. Later calls fail with ErrClosed.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	segs := slices.Collect(maps.Values(c.segs))
	c.mu.Unlock()
	var errs []error
	for _, s := range segs {
		s.wmu.Lock()
		s.mu.Lock()
		if !s.gone {
			if !c.noSync {
				errs = append(errs, s.log.Sync(), s.data.Sync())
			}
			errs = append(errs, s.closeFiles())
			s.gone = true
		}
		s.mu.Unlock()
		s.wmu.Unlock()
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close cache: %w", err)
	}
	return nil
}

// AddSegment registers a segment description (offset, length, block hashes,
// HoD, Kp, ID) so its blocks can be verified and stored; it is persisted.
// Adding a segment already cached with a longer block hash list extends
// the list; a description that disagrees with the cached one fails with
// ErrConflict. The description is validated: the ID must be HoHoDk(Kp,
// HoD) and a complete v1 hash list must match HoD.
func (c *Cache) AddSegment(seg *content.Segment) error {
	if seg == nil {
		return fmt.Errorf("add segment: nil: %w", ErrBadDescription)
	}
	if err := validateDesc(seg); err != nil {
		return fmt.Errorf("add segment: %w", err)
	}
	desc := cloneSegment(seg)
	c.addMu.Lock()
	defer c.addMu.Unlock()
	s, err := c.beginWrite(desc.ID)
	switch {
	case err == nil:
		defer c.endWrite(s)
		if err := c.updateDesc(s, &desc); err != nil {
			return fmt.Errorf("add segment %v: %w", desc.ID, err)
		}
		c.touch(s)
		return nil
	case !errors.Is(err, ErrUnknownSegment):
		return fmt.Errorf("add segment %v: %w", desc.ID, err)
	}
	s, err = c.createSegment(&desc)
	if err != nil {
		return fmt.Errorf("add segment %v: %w", desc.ID, err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		_ = s.closeFiles()
		return fmt.Errorf("add segment %v: %w", desc.ID, ErrClosed)
	}
	c.segs[s.id] = s
	c.used += s.size
	c.touch(s)
	trash, _ := c.evictLocked(0, s)
	c.mu.Unlock()
	c.removeTrash(trash)
	return nil
}

// PutBlock verifies data against the hash of block index of segment id and
// stores it; the block is servable when PutBlock returns. Storing a block
// already held does nothing. It fails with a content error (for example
// content.ErrBlockHash) when data is not the block, ErrUnknownSegment when
// the segment was not added, and ErrFull when the cap cannot be kept.
func (c *Cache) PutBlock(id content.SegmentID, index int, data []byte) error {
	s, err := c.beginWrite(id)
	if err != nil {
		return fmt.Errorf("put block %d of segment %v: %w", index, id, err)
	}
	defer c.endWrite(s)
	s.wmu.RLock()
	defer s.wmu.RUnlock()
	s.mu.RLock()
	gone := s.gone
	held := index >= 0 && index < len(s.held) && s.held[index]
	s.mu.RUnlock()
	switch {
	case gone:
		return fmt.Errorf("put block %d of segment %v: %w", index, id, ErrUnknownSegment)
	case held:
		c.touch(s)
		return nil
	}
	// s.desc changes only under s.wmu, which is read-locked.
	if err := content.VerifyBlock(&s.desc, index, data); err != nil {
		return fmt.Errorf("put block: %w", err)
	}
	n := int64(len(data))
	if err := c.reserve(s, n); err != nil {
		return fmt.Errorf("put block %d of segment %v: %w", index, id, err)
	}
	if err := c.writeBlock(s, index, data); err != nil {
		c.release(s, n)
		return fmt.Errorf("put block %d of segment %v: %w", index, id, err)
	}
	s.mu.Lock()
	dup := s.held[index] // stored by a concurrent PutBlock of the same block
	if !dup {
		s.held[index] = true
		s.nheld++
	}
	s.mu.Unlock()
	if dup {
		c.release(s, n)
	}
	c.touch(s)
	return nil
}

// syncEvery is how many data writes of a segment share one fsync: a
// power loss loses at most the blocks written since the last one (each
// fetched again; Open re-verifies every committed block, so a record that
// outlives its data is dropped there), and a download pays one fsync per
// 4 MiB instead of one per block.
const syncEvery = 64

// writeBlock writes a verified block to its slot in the data file, syncs
// the file every syncEvery writes and when the block completes the
// segment, then appends the block's commit record. Concurrent writers
// share fsyncs (group commit). Called with s.wmu read-locked.
func (c *Cache) writeBlock(s *segment, index int, data []byte) error {
	if _, err := s.data.WriteAt(data, int64(index)*int64(s.desc.BlockSize)); err != nil {
		return fmt.Errorf("write data: %w", err)
	}
	seq := s.written.Add(1)
	s.mu.Lock()
	last := s.nheld+1 >= s.desc.BlockCount()
	s.mu.Unlock()
	if !c.noSync && (seq%syncEvery == 0 || last) {
		if err := s.syncData(seq); err != nil {
			return fmt.Errorf("sync data: %w", err)
		}
	}
	rec := encodeRecord(uint32(index), uint32(len(data)))
	s.logMu.Lock()
	_, err := s.log.Write(rec[:])
	s.logMu.Unlock()
	if err != nil {
		return fmt.Errorf("write commit record: %w", err)
	}
	return nil
}

// syncData makes data write number seq (and all before it) durable: an
// fsync started after it was written covers it, so writers waiting here
// while one fsync runs need only one more between them.
func (s *segment) syncData(seq uint64) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if s.synced >= seq {
		return nil
	}
	upTo := s.written.Load()
	if err := s.data.Sync(); err != nil {
		return err
	}
	s.synced = upTo
	return nil
}

// ReadBlock appends block index of segment id to dst and returns the
// extended slice; it fails with ErrNotHeld when the block is not held. It
// implements retrieval.Store. Blocks were verified when written and at
// Open; ReadBlock does not hash them again.
func (c *Cache) ReadBlock(id content.SegmentID, index uint32, dst []byte) ([]byte, error) {
	s, err := c.lookup(id)
	if err != nil {
		return dst, fmt.Errorf("read block %d of segment %v: %w", index, id, err)
	}
	dst, err = s.readBlock(int(index), dst)
	if err != nil {
		return dst, fmt.Errorf("read block %d of segment %v: %w", index, id, err)
	}
	c.touch(s)
	return dst, nil
}

// readBlock appends block index to dst.
func (s *segment) readBlock(index int, dst []byte) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.gone || index < 0 || index >= len(s.held) || !s.held[index] {
		return dst, ErrNotHeld
	}
	n, start := s.desc.BlockLen(index), len(dst)
	dst = slices.Grow(dst, n)[:start+n]
	if _, err := s.data.ReadAt(dst[start:], int64(index)*int64(s.desc.BlockSize)); err != nil {
		return dst[:start], fmt.Errorf("read data: %w", err)
	}
	return dst, nil
}

// Segment returns the segment secret Kp of segment id and its held blocks
// as normalized ranges; ok is false when no block is held. It implements
// retrieval.Store.
func (c *Cache) Segment(id content.SegmentID) (kp content.Digest, held []retrieval.BlockRange, ok bool) {
	s, err := c.lookup(id)
	if err != nil {
		return kp, nil, false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.gone || s.nheld == 0 {
		return kp, nil, false
	}
	for i := 0; i < len(s.held); i++ {
		if !s.held[i] {
			continue
		}
		j := i
		for j < len(s.held) && s.held[j] {
			j++
		}
		held = append(held, retrieval.BlockRange{Index: uint32(i), Count: uint32(j - i)})
		i = j
	}
	return s.desc.Kp, held, true
}

// BlockCount returns the number of held blocks of segment id; ok is false
// when none is held. It implements discovery.Holder.
func (c *Cache) BlockCount(id content.SegmentID) (blocks uint32, ok bool) {
	s, err := c.lookup(id)
	if err != nil {
		return 0, false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.gone || s.nheld == 0 {
		return 0, false
	}
	return uint32(s.nheld), true
}

// Has reports whether block index of segment id is held.
func (c *Cache) Has(id content.SegmentID, index int) bool {
	s, err := c.lookup(id)
	if err != nil {
		return false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return !s.gone && index >= 0 && index < len(s.held) && s.held[index]
}

// Held returns the indexes of the held blocks of segment id, ascending.
func (c *Cache) Held(id content.SegmentID) []int {
	s, err := c.lookup(id)
	if err != nil {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.gone {
		return nil
	}
	out := make([]int, 0, s.nheld)
	for i, h := range s.held {
		if h {
			out = append(out, i)
		}
	}
	return out
}

// Complete reports whether every block of segment id is held.
func (c *Cache) Complete(id content.SegmentID) bool {
	s, err := c.lookup(id)
	if err != nil {
		return false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return !s.gone && s.nheld == len(s.held)
}

// Describe returns a copy of the description of segment id.
func (c *Cache) Describe(id content.SegmentID) (content.Segment, bool) {
	s, err := c.lookup(id)
	if err != nil {
		return content.Segment{}, false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.gone {
		return content.Segment{}, false
	}
	return cloneSegment(&s.desc), true
}

// Segments returns the IDs of the described segments (held or not), sorted.
func (c *Cache) Segments() []content.SegmentID {
	c.mu.RLock()
	var ids []content.SegmentID
	if !c.closed {
		ids = slices.Collect(maps.Keys(c.segs))
	}
	c.mu.RUnlock()
	slices.SortFunc(ids, func(a, b content.SegmentID) int { return bytes.Compare(a[:], b[:]) })
	return ids
}

// Stats returns a snapshot of the cache's counters.
func (c *Cache) Stats() Stats {
	c.mu.RLock()
	defer c.mu.RUnlock()
	st := Stats{
		Bytes:          c.used,
		MaxBytes:       c.maxBytes,
		Segments:       len(c.segs),
		Evictions:      c.evictions,
		CorruptDropped: c.corrupt,
		BadSegments:    c.badSegments,
	}
	for _, s := range c.segs {
		s.mu.RLock()
		st.Blocks += s.nheld
		s.mu.RUnlock()
	}
	return st
}

// Pin protects segment id from eviction until unpin is called (unpin is
// idempotent). A job pins the segment it is downloading or assembling.
// Remove still removes a pinned segment.
func (c *Cache) Pin(id content.SegmentID) (unpin func(), err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return func() {}, fmt.Errorf("pin segment %v: %w", id, ErrClosed)
	}
	s := c.segs[id]
	if s == nil {
		return func() {}, fmt.Errorf("pin segment %v: %w", id, ErrUnknownSegment)
	}
	s.pins++
	return sync.OnceFunc(func() {
		c.mu.Lock()
		s.pins--
		c.mu.Unlock()
	}), nil
}

// ReadSegmentTo writes the whole of segment id to w, verifying every block
// on the way, and returns the bytes written. It fails with ErrIncomplete
// when a block is missing; a block that fails verification is dropped and
// the call fails with ErrCorrupt.
func (c *Cache) ReadSegmentTo(id content.SegmentID, w io.Writer) (int64, error) {
	unpin, err := c.Pin(id)
	if err != nil {
		return 0, fmt.Errorf("read segment: %w", err)
	}
	defer unpin()
	s, err := c.lookup(id)
	if err != nil {
		return 0, fmt.Errorf("read segment %v: %w", id, err)
	}
	s.mu.RLock()
	desc, complete := cloneSegment(&s.desc), !s.gone && s.nheld == len(s.held)
	s.mu.RUnlock()
	if !complete {
		return 0, fmt.Errorf("read segment %v: %w", id, ErrIncomplete)
	}
	var total int64
	buf := make([]byte, 0, desc.BlockSize)
	for i := range desc.BlockCount() {
		buf, err = s.readBlock(i, buf[:0])
		if errors.Is(err, ErrNotHeld) {
			return total, fmt.Errorf("read segment %v: block %d: %w", id, i, ErrIncomplete)
		}
		if err != nil {
			return total, fmt.Errorf("read segment %v: block %d: %w", id, i, err)
		}
		if err := content.VerifyBlock(&desc, i, buf); err != nil {
			c.dropBlock(s, i)
			c.log.Warn("cache: dropped corrupt block", "segment", id, "block", i, "err", err)
			return total, fmt.Errorf("read segment %v: block %d: %w", id, i, ErrCorrupt)
		}
		n, err := w.Write(buf)
		total += int64(n)
		if err != nil {
			return total, fmt.Errorf("read segment %v: %w", id, err)
		}
	}
	c.touch(s)
	return total, nil
}

// Remove deletes segment id from the cache and the disk.
func (c *Cache) Remove(id content.SegmentID) error {
	c.addMu.Lock()
	defer c.addMu.Unlock()
	s, err := c.lookup(id)
	if err != nil {
		return fmt.Errorf("remove segment %v: %w", id, err)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	c.mu.Lock()
	if c.closed || c.segs[id] != s {
		closed := c.closed
		c.mu.Unlock()
		if closed {
			return fmt.Errorf("remove segment %v: %w", id, ErrClosed)
		}
		return nil // evicted meanwhile
	}
	trash := c.detachLocked(s)
	c.mu.Unlock()
	c.removeTrash([]string{trash})
	return nil
}

// lookup returns segment id.
func (c *Cache) lookup(id content.SegmentID) (*segment, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return nil, ErrClosed
	}
	s := c.segs[id]
	if s == nil {
		return nil, ErrUnknownSegment
	}
	return s, nil
}

// beginWrite returns segment id, marked as being written (not evictable)
// until endWrite.
func (c *Cache) beginWrite(id content.SegmentID) (*segment, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	s := c.segs[id]
	if s == nil {
		return nil, ErrUnknownSegment
	}
	s.writers++
	return s, nil
}

func (c *Cache) endWrite(s *segment) {
	c.mu.Lock()
	s.writers--
	c.mu.Unlock()
}

// touch marks s as just used.
func (c *Cache) touch(s *segment) { s.lastUse.Store(c.clock.Add(1)) }

// reserve accounts n more bytes to s, evicting other segments if needed.
func (c *Cache) reserve(s *segment, n int64) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	trash, ok := c.evictLocked(n, s)
	if ok {
		c.used += n
		s.size += n
	}
	c.mu.Unlock()
	c.removeTrash(trash)
	if !ok {
		return ErrFull
	}
	return nil
}

// release undoes reserve.
func (c *Cache) release(s *segment, n int64) {
	c.mu.Lock()
	c.used -= n
	s.size -= n
	c.mu.Unlock()
}

// dropBlock forgets a held block found corrupt. Its commit record stays;
// Open verifies the block again and drops it for good.
func (c *Cache) dropBlock(s *segment, index int) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	dropped := !s.gone && s.held[index]
	if dropped {
		s.held[index] = false
		s.nheld--
	}
	n := int64(s.desc.BlockLen(index))
	s.mu.Unlock()
	if dropped {
		c.mu.Lock()
		c.used -= n
		s.size -= n
		c.corrupt++
		c.mu.Unlock()
	}
}

// evictLocked evicts least-recently-used segments, other than keep and
// those pinned or being written, until need more bytes fit under the cap.
// It returns the directories to delete (after c.mu is released) and
// whether the bytes fit. Called with c.mu held.
func (c *Cache) evictLocked(need int64, keep *segment) (trash []string, ok bool) {
	for c.maxBytes > 0 && c.used+need > c.maxBytes {
		var victim *segment
		for _, s := range c.segs {
			if s == keep || s.pins > 0 || s.writers > 0 {
				continue
			}
			if victim == nil || s.lastUse.Load() < victim.lastUse.Load() {
				victim = s
			}
		}
		if victim == nil {
			return trash, false
		}
		c.log.Debug("cache: evicting segment", "segment", victim.id, "bytes", victim.size)
		c.evictions++
		trash = append(trash, c.detachLocked(victim))
	}
	return trash, true
}

// detachLocked removes s from the index, closes its files and moves its
// directory out of the way; it returns the path to delete. Called with
// c.mu held; waits for readers of s.
func (c *Cache) detachLocked(s *segment) string {
	delete(c.segs, s.id)
	c.used -= s.size
	s.mu.Lock()
	if !s.gone {
		s.gone = true
		if err := s.closeFiles(); err != nil {
			c.log.Warn("cache: closing segment files", "segment", s.id, "err", err)
		}
	}
	s.mu.Unlock()
	c.trashSeq++
	trash := filepath.Join(c.dir, fmt.Sprintf("%s%d-%s", trashPrefix, c.trashSeq, s.id))
	if err := os.Rename(s.path, trash); err != nil {
		// Delete in place so that the path is free for the segment again.
		c.log.Warn("cache: moving evicted segment", "segment", s.id, "err", err)
		if err := os.RemoveAll(s.path); err != nil {
			c.log.Warn("cache: deleting evicted segment", "segment", s.id, "err", err)
		}
		return ""
	}
	return trash
}

// removeTrash deletes evicted segment directories.
func (c *Cache) removeTrash(paths []string) {
	for _, p := range paths {
		if p == "" {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			c.log.Warn("cache: deleting evicted segment", "path", p, "err", err)
		}
	}
}

func (s *segment) closeFiles() error {
	return errors.Join(s.data.Close(), s.log.Close())
}

// cloneSegment returns a copy of seg with its own block hash slice.
func cloneSegment(seg *content.Segment) content.Segment {
	out := *seg
	out.BlockHashes = slices.Clone(seg.BlockHashes)
	return out
}
