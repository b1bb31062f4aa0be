package origin

import (
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"time"

	"github.com/redleader-p2p/redleader/peer/content"
)

// version identifies one version of a file: any rewrite changes the
// modification time or size, a replacement the inode.
type version struct {
	dev, ino uint64
	size     int64
	mtime    int64 // Unix nanoseconds
}

func versionOf(fi fs.FileInfo) version {
	dev, ino := fileID(fi)
	return version{dev: dev, ino: ino, size: fi.Size(), mtime: fi.ModTime().UnixNano()}
}

// etag is the version's strong entity tag.
func (v version) etag() string {
	return fmt.Sprintf(`"%x-%x-%x"`, v.ino, v.size, v.mtime)
}

// entry is the hashing state of one version of one file. info, ci and err
// are written once, before done is closed, and only read after.
type entry struct {
	name string
	ver  version
	done chan struct{}

	info *content.Info // whole-content v1 content information
	ci   []byte        // info serialized
	err  error
}

// lookup returns the entry for version ver of name, creating and queueing
// a new one when the file is unknown or has changed. Requested files go
// ahead of scanned ones.
func (s *Server) lookup(name string, ver version, requested bool) *entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.files[name]; e != nil && e.ver == ver {
		return e
	}
	e := &entry{name: name, ver: ver, done: make(chan struct{})}
	s.files[name] = e
	if requested {
		s.urgent = append(s.urgent, e)
	} else {
		s.queue = append(s.queue, e)
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return e
}

// next pops the next queued entry, waiting for one; nil when ctx is done.
func (s *Server) next(ctx context.Context) *entry {
	for {
		s.mu.Lock()
		var e *entry
		switch {
		case len(s.urgent) > 0:
			e, s.urgent[0] = s.urgent[0], nil
			s.urgent = s.urgent[1:]
		case len(s.queue) > 0:
			e, s.queue[0] = s.queue[0], nil
			s.queue = s.queue[1:]
		}
		more := len(s.urgent)+len(s.queue) > 0
		s.mu.Unlock()
		if e != nil {
			if more { // pass the wake-up on to another worker
				select {
				case s.wake <- struct{}{}:
				default:
				}
			}
			return e
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		}
	}
}

// worker hashes queued files until ctx is done.
func (s *Server) worker(ctx context.Context) {
	defer s.wg.Done()
	for {
		e := s.next(ctx)
		if e == nil {
			return
		}
		s.mu.Lock()
		current := s.files[e.name] == e
		s.mu.Unlock()
		if !current { // superseded by a newer version while queued
			e.finish(nil, nil, ErrChanged)
			continue
		}
		start := time.Now()
		info, ci, err := s.generate(ctx, e)
		e.finish(info, ci, err)
		if err != nil {
			s.log.Warn("not hashed", "path", e.name, "err", err)
			continue
		}
		s.log.Info("hashed", "path", e.name, "bytes", e.ver.size, "segments", len(info.Segments),
			"took", time.Since(start).Round(time.Millisecond))
	}
}

func (e *entry) finish(info *content.Info, ci []byte, err error) {
	e.info, e.ci, e.err = info, ci, err
	close(e.done)
}

// generate computes the content information of the entry's version. It
// fails with ErrChanged when the file is not (or no longer) that version.
func (s *Server) generate(ctx context.Context, e *entry) (*content.Info, []byte, error) {
	f, fi, err := s.open(e.name)
	if err != nil {
		return nil, nil, fmt.Errorf("hash: %w", err)
	}
	defer f.Close()
	if versionOf(fi) != e.ver {
		return nil, nil, fmt.Errorf("hash %s: %w", e.name, ErrChanged)
	}
	info, err := content.Generate(ctx, f, s.secret)
	if err != nil {
		return nil, nil, fmt.Errorf("hash %s: %w", e.name, err)
	}
	fi, err = f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("hash %s: %w", e.name, err)
	}
	if _, end := info.Range(); versionOf(fi) != e.ver || end != uint64(e.ver.size) {
		return nil, nil, fmt.Errorf("hash %s: %w", e.name, ErrChanged)
	}
	ci, err := info.MarshalBinary()
	if err != nil {
		return nil, nil, fmt.Errorf("hash %s: %w", e.name, err)
	}
	return info, ci, nil
}

// wait waits, at most HashWait, for the entry's hashes and reports whether
// they are ready.
func (s *Server) wait(r *http.Request, e *entry) bool {
	select {
	case <-e.done:
		return e.err == nil
	default:
	}
	if s.hashWait < 0 {
		return false
	}
	t := time.NewTimer(s.hashWait)
	defer t.Stop()
	select {
	case <-e.done:
		return e.err == nil
	case <-t.C:
	case <-r.Context().Done():
	case <-s.closing:
	}
	return false
}

// scanLoop scans the directory now and then every Rescan.
func (s *Server) scanLoop(ctx context.Context) {
	defer s.wg.Done()
	s.scan(ctx)
	if s.rescan <= 0 {
		return
	}
	t := time.NewTicker(s.rescan)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.scan(ctx)
		}
	}
}

// scan queues every regular file whose current version is not known yet,
// and forgets files that are gone. Symbolic links are not followed (a
// linked file is hashed when first requested).
func (s *Server) scan(ctx context.Context) {
	seen := map[string]bool{}
	queued := 0
	err := fs.WalkDir(s.root.FS(), ".", func(name string, d fs.DirEntry, err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			s.log.Debug("scan", "path", name, "err", err)
			return nil // skip what cannot be read
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil // gone since listed
		}
		seen[name] = true
		s.mu.Lock()
		old := s.files[name]
		s.mu.Unlock()
		if old == nil || old.ver != versionOf(fi) {
			s.lookup(name, versionOf(fi), false)
			queued++
		}
		return nil
	})
	if err != nil {
		return // cancelled: leave the cache as it is
	}
	s.mu.Lock()
	var gone []*entry
	for name, e := range s.files {
		if !seen[name] {
			gone = append(gone, e)
		}
	}
	s.mu.Unlock()
	for _, e := range gone { // removed, or reached through a symbolic link
		if f, fi, err := s.open(e.name); err == nil {
			f.Close()
			if versionOf(fi) == e.ver {
				continue
			}
		}
		s.mu.Lock()
		if s.files[e.name] == e {
			delete(s.files, e.name)
		}
		s.mu.Unlock()
	}
	if queued > 0 {
		s.log.Info("scanned content directory", "files", len(seen), "queued", queued)
	}
}
