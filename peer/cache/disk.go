package cache

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redleader-p2p/redleader/peer/content"
)

// Names of transient directories in the cache directory; both are deleted
// at Open.
const (
	trashPrefix = ".trash-" // evicted or removed segments being deleted
	newPrefix   = ".new-"   // segments being created
	tmpSuffix   = ".tmp"    // files being replaced inside a segment directory
)

// loaded is the outcome of loading one segment directory at Open.
type loaded struct {
	seg     *segment
	mtime   time.Time
	corrupt int   // blocks that failed verification
	err     error // the directory is unusable and was deleted
}

// load rebuilds the index from disk, verifying every held block.
func (c *Cache) load() error {
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return fmt.Errorf("read directory: %w", err)
	}
	var paths []string
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, trashPrefix) || strings.HasPrefix(name, newPrefix):
			if err := os.RemoveAll(filepath.Join(c.dir, name)); err != nil {
				c.log.Warn("cache: deleting leftover", "path", name, "err", err)
			}
		case e.IsDir() && isSegmentName(name):
			paths = append(paths, filepath.Join(c.dir, name))
		default:
			c.log.Debug("cache: ignoring unknown entry", "path", name)
		}
	}

	// Verify segments in parallel: hashing is the cost of a restart.
	results := make([]loaded, len(paths))
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(paths)) {
		wg.Go(func() {
			buf := make([]byte, 0, content.BlockSize)
			for i := range work {
				results[i] = c.loadSegment(paths[i], &buf)
			}
		})
	}
	for i := range paths {
		work <- i
	}
	close(work)
	wg.Wait()

	var segs []loaded
	for i, r := range results {
		c.corrupt += uint64(r.corrupt)
		if r.err != nil {
			c.badSegments++
			c.log.Warn("cache: dropping unreadable segment", "path", paths[i], "err", r.err)
			if err := os.RemoveAll(paths[i]); err != nil {
				c.log.Warn("cache: deleting unreadable segment", "path", paths[i], "err", err)
			}
			continue
		}
		segs = append(segs, r)
	}
	// Least recently written first, so that LRU order survives a restart
	// approximately (reads before the restart are not remembered).
	slices.SortFunc(segs, func(a, b loaded) int { return a.mtime.Compare(b.mtime) })
	for _, r := range segs {
		c.segs[r.seg.id] = r.seg
		c.used += r.seg.size
		c.touch(r.seg)
	}
	return nil
}

// isSegmentName reports whether name is a lower-case hex segment ID.
func isSegmentName(name string) bool {
	if len(name) != 2*content.DigestSize {
		return false
	}
	_, err := hex.DecodeString(name)
	return err == nil && strings.ToLower(name) == name
}

// loadSegment opens one segment directory: its description, then every
// committed block, verified; the commit log is rewritten without the
// records that did not hold up. buf is a scratch buffer.
func (c *Cache) loadSegment(path string, buf *[]byte) loaded {
	for _, name := range []string{descFile, logFile} {
		// Leftovers of an interrupted atomic replace.
		_ = os.Remove(filepath.Join(path, name+tmpSuffix))
	}
	raw, err := os.ReadFile(filepath.Join(path, descFile))
	if err != nil {
		return loaded{err: fmt.Errorf("read description: %w", err)}
	}
	desc, err := decodeDesc(raw)
	if err != nil {
		return loaded{err: err}
	}
	if desc.ID.String() != filepath.Base(path) {
		return loaded{err: fmt.Errorf("description of segment %v in %s: %w", desc.ID, path, ErrBadDescription)}
	}
	s := &segment{
		id:   desc.ID,
		path: path,
		desc: *desc,
		held: make([]bool, desc.BlockCount()),
		size: int64(len(raw)),
	}
	s.data, err = os.OpenFile(filepath.Join(path, dataFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return loaded{err: fmt.Errorf("open data: %w", err)}
	}
	logPath := filepath.Join(path, logFile)
	rawLog, err := os.ReadFile(logPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		_ = s.data.Close()
		return loaded{err: fmt.Errorf("read commit log: %w", err)}
	}
	entries, skipped := parseLog(rawLog)
	var res loaded
	dirty := skipped > 0
	for _, e := range entries {
		i := int(e.index)
		if i >= len(desc.BlockHashes) || int(e.length) != desc.BlockLen(i) || s.held[i] {
			dirty = true // unverifiable, impossible or duplicate record
			continue
		}
		*buf = slices.Grow((*buf)[:0], int(e.length))[:e.length]
		_, rerr := s.data.ReadAt(*buf, int64(i)*int64(desc.BlockSize))
		verr := rerr
		if rerr == nil {
			verr = content.VerifyBlock(desc, i, *buf)
		}
		if verr != nil {
			res.corrupt++
			dirty = true
			c.log.Warn("cache: dropping corrupt block", "segment", desc.ID, "block", i, "err", verr)
			continue
		}
		s.held[i] = true
		s.nheld++
		s.size += int64(e.length)
	}
	if dirty {
		if err := c.rewriteLog(s); err != nil {
			_ = s.data.Close()
			return loaded{err: err}
		}
	}
	s.log, err = os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		_ = s.data.Close()
		return loaded{err: fmt.Errorf("open commit log: %w", err)}
	}
	if fi, err := s.log.Stat(); err == nil {
		res.mtime = fi.ModTime()
	}
	res.seg = s
	return res
}

// rewriteLog atomically replaces the commit log of s by one record per held block.
func (c *Cache) rewriteLog(s *segment) error {
	b := make([]byte, 0, s.nheld*recordSize)
	for i, h := range s.held {
		if h {
			rec := encodeRecord(uint32(i), uint32(s.desc.BlockLen(i)))
			b = append(b, rec[:]...)
		}
	}
	if err := c.writeFileAtomic(filepath.Join(s.path, logFile), b); err != nil {
		return fmt.Errorf("rewrite commit log: %w", err)
	}
	return nil
}

// createSegment makes the directory of a new segment: built under a
// temporary name, then renamed into place, so a crash never leaves a
// half-made segment.
func (c *Cache) createSegment(desc *content.Segment) (*segment, error) {
	tmp, err := os.MkdirTemp(c.dir, newPrefix)
	if err != nil {
		return nil, fmt.Errorf("create segment directory: %w", err)
	}
	raw := encodeDesc(desc)
	err = c.writeFile(filepath.Join(tmp, descFile), raw)
	for _, name := range []string{dataFile, logFile} {
		if err == nil {
			err = c.writeFile(filepath.Join(tmp, name), nil)
		}
	}
	if err == nil {
		err = c.syncDir(tmp)
	}
	final := filepath.Join(c.dir, desc.ID.String())
	if err == nil {
		// Not in the index, so anything at final is a stale leftover.
		if err = os.RemoveAll(final); err == nil {
			err = os.Rename(tmp, final)
		}
	}
	if err == nil {
		err = c.syncDir(c.dir)
	}
	if err != nil {
		_ = os.RemoveAll(tmp)
		return nil, fmt.Errorf("create segment directory: %w", err)
	}
	s := &segment{
		id:   desc.ID,
		path: final,
		desc: *desc,
		held: make([]bool, desc.BlockCount()),
		size: int64(len(raw)),
	}
	s.data, err = os.OpenFile(filepath.Join(final, dataFile), os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open data: %w", err)
	}
	s.log, err = os.OpenFile(filepath.Join(final, logFile), os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		_ = s.data.Close()
		return nil, fmt.Errorf("open commit log: %w", err)
	}
	return s, nil
}

// updateDesc merges desc into the cached description of s: same segment,
// possibly more block hashes. Called with s marked as being written.
func (c *Cache) updateDesc(s *segment, desc *content.Segment) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	old := &s.desc
	s.mu.RLock()
	gone := s.gone
	s.mu.RUnlock()
	if gone {
		return ErrClosed // only Close marks a segment being written gone
	}
	n := min(len(old.BlockHashes), len(desc.BlockHashes))
	if old.Length != desc.Length || old.BlockSize != desc.BlockSize || old.HashAlgo != desc.HashAlgo ||
		old.HoD != desc.HoD || old.Kp != desc.Kp ||
		!slices.Equal(old.BlockHashes[:n], desc.BlockHashes[:n]) {
		return ErrConflict
	}
	if len(desc.BlockHashes) <= len(old.BlockHashes) {
		return nil
	}
	next := cloneSegment(old)
	next.BlockHashes = slices.Clone(desc.BlockHashes)
	raw := encodeDesc(&next)
	oldSize := int64(len(encodeDesc(old)))
	if err := c.writeFileAtomic(filepath.Join(s.path, descFile), raw); err != nil {
		return fmt.Errorf("update description: %w", err)
	}
	s.mu.Lock()
	s.desc = next
	s.mu.Unlock()
	c.mu.Lock()
	delta := int64(len(raw)) - oldSize
	s.size += delta
	c.used += delta
	c.mu.Unlock()
	return nil
}

// writeFile creates path with data, synced.
func (c *Cache) writeFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil && !c.noSync {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

// writeFileAtomic replaces path with data: temporary file, sync, rename,
// sync of the directory.
func (c *Cache) writeFileAtomic(path string, data []byte) error {
	tmp := path + tmpSuffix
	if err := c.writeFile(tmp, data); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return c.syncDir(filepath.Dir(path))
}

// syncDir makes renames in dir durable. Windows cannot sync a directory
// (NTFS journals renames itself).
func (c *Cache) syncDir(dir string) error {
	if c.noSync || runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
