// Package origin is a small HTTP content server that speaks MS-PCCRTP: it
// serves the files of one directory (GET and HEAD with Range, ETag,
// Last-Modified and conditional requests) and, to clients that ask with
// "Accept-Encoding: peerdist" and X-P2P-PeerDist, answers
// "Content-Encoding: peerdist" with the file's v1 content information
// (MS-PCCRC) instead of its bytes.
//
// Files are hashed in a bounded pool of background workers: every file at
// Start (and at each optional rescan), and any file whose version (size,
// modification time, inode) a request finds unhashed. Each version is hashed
// once and its content information kept in memory. A PeerDist request for a
// file still being hashed waits up to Options.HashWait, then gets the plain
// file, as MS-PCCRTP allows (the client downloads it the usual way).
//
// Paths are resolved inside an os.Root: ".." segments are refused, and
// symbolic links may not leave the directory. Directories are not listed.
package origin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redleader-p2p/redleader/peer/content"
)

// Sentinel errors.
var (
	// ErrNoDir means Options.Dir is empty.
	ErrNoDir = errors.New("no directory to serve")
	// ErrStarted means Start was called twice.
	ErrStarted = errors.New("origin already started")
	// ErrClosed means the server is closed.
	ErrClosed = errors.New("origin closed")
	// ErrChanged means a file changed while it was being hashed; the new
	// version is hashed when it is next requested or scanned.
	ErrChanged = errors.New("file changed while hashing")
	// ErrNotRegular means a path names something other than a regular file.
	ErrNotRegular = errors.New("not a regular file")
	// ErrBadSecret means a secret file is empty or too large.
	ErrBadSecret = errors.New("bad server secret file")
)

// Defaults for zero Options fields.
const (
	// DefaultHashWait is how long a PeerDist request waits for hashes.
	DefaultHashWait = 2 * time.Second
	// DefaultWorkers is the number of files hashed at once.
	DefaultWorkers = 2
)

// Options configure a Server.
type Options struct {
	// Dir is the directory whose files are served. Required.
	Dir string
	// Secret is the server secret the segment secrets (Kp) derive from.
	Secret content.ServerSecret
	// HashWait bounds how long a PeerDist request for a file still being
	// hashed waits before the plain file is sent. 0 means DefaultHashWait;
	// a negative value means no wait.
	HashWait time.Duration
	// Workers is the number of files hashed at once. 0 or less means
	// DefaultWorkers.
	Workers int
	// Rescan is the interval between directory scans after the one at
	// Start; 0 means no rescans (a changed file is still noticed, and
	// hashed, when it is requested).
	Rescan time.Duration
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
}

// Server is the origin's http.Handler. Create it with New, start hashing
// with Start, and stop it with Close.
type Server struct {
	secret   content.ServerSecret
	hashWait time.Duration
	workers  int
	rescan   time.Duration
	log      *slog.Logger
	root     *os.Root

	closing chan struct{} // closed by Close
	wake    chan struct{} // capacity 1: the hash queue has entries

	mu      sync.Mutex
	files   map[string]*entry // by slash path relative to the root
	urgent  []*entry          // hash queue: requested files first
	queue   []*entry          // then scanned ones
	started bool
	closed  bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// New returns a Server for opts.Dir. Nothing is hashed until Start.
func New(opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, ErrNoDir
	}
	root, err := os.OpenRoot(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("open content directory: %w", err)
	}
	s := &Server{
		secret:   opts.Secret,
		hashWait: opts.HashWait,
		workers:  opts.Workers,
		rescan:   opts.Rescan,
		log:      opts.Logger,
		root:     root,
		closing:  make(chan struct{}),
		wake:     make(chan struct{}, 1),
		files:    map[string]*entry{},
	}
	if s.hashWait == 0 {
		s.hashWait = DefaultHashWait
	}
	if s.workers <= 0 {
		s.workers = DefaultWorkers
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// Start scans the directory, queues every file for hashing and starts the
// hash workers (and the rescans, if configured). They stop when ctx is
// cancelled or Close is called.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.started:
		return ErrStarted
	}
	s.started = true
	ctx, s.cancel = context.WithCancel(ctx)
	s.wg.Add(s.workers + 1)
	for range s.workers {
		go s.worker(ctx)
	}
	go s.scanLoop(ctx)
	return nil
}

// Close stops the workers and scans, waits for them, and closes the
// directory. Requests still being served may fail. Close is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	if s.cancel != nil {
		s.cancel()
	}
	s.mu.Unlock()
	s.wg.Wait()
	if err := s.root.Close(); err != nil {
		return fmt.Errorf("close content directory: %w", err)
	}
	return nil
}

// ServeHTTP serves GET and HEAD for the files under the directory.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
		return
	}
	name, ok := cleanName(r.URL.Path)
	if !ok {
		s.log.Debug("refused path", "path", r.URL.Path, "remote", r.RemoteAddr)
		http.Error(w, http.StatusText(http.StatusBadRequest), http.StatusBadRequest)
		return
	}
	f, fi, err := s.open(name)
	if err != nil {
		status := http.StatusNotFound
		if errors.Is(err, fs.ErrPermission) {
			status = http.StatusForbidden
		}
		s.log.Debug("not served", "path", name, "err", err, "remote", r.RemoteAddr)
		http.Error(w, http.StatusText(status), status)
		return
	}
	defer f.Close()
	s.serveFile(w, r, name, f, fi)
}

// cleanName turns a request path into a slash path relative to the root.
// Paths with ".." segments, backslashes or NUL bytes, and names the
// platform cannot represent locally, are refused.
func cleanName(p string) (string, bool) {
	if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\\\x00") {
		return "", false
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == ".." {
			return "", false
		}
	}
	name := strings.TrimPrefix(path.Clean(p), "/")
	if name == "" {
		name = "."
	}
	if _, err := filepath.Localize(name); err != nil {
		return "", false
	}
	return name, true
}

// open opens the regular file name inside the root. It checks the type
// before opening, so that a FIFO or device cannot block or be read.
func (s *Server) open(name string) (*os.File, fs.FileInfo, error) {
	local, err := filepath.Localize(name)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", name, err)
	}
	fi, err := s.root.Stat(local)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("open %s: %w", name, ErrNotRegular)
	}
	f, err := s.root.Open(local)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", name, err)
	}
	if fi, err = f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("open %s: %w", name, errors.Join(err, ErrNotRegular))
	}
	return f, fi, nil
}

// serveFile answers with the content information when the request asks
// for PeerDist and the hashes of this version are (or soon become) ready,
// and with the file otherwise.
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, name string, f *os.File, fi fs.FileInfo) {
	ver := versionOf(fi)
	h := w.Header()
	h.Set("ETag", ver.etag())
	h.Set("Vary", "Accept-Encoding, "+HeaderPeerDist+", "+HeaderPeerDistEx)
	h.Set("Content-Type", contentType(name, f))
	e := s.lookup(name, ver, true)
	neg := negotiate(r.Header)
	if r.Method == http.MethodGet && neg.peerDist && ver.size > 0 {
		if s.wait(r, e) && s.servePeerDist(w, r, neg, e, ver, fi.ModTime()) {
			s.log.Debug("served content information", "path", name, "version", neg.version, "remote", r.RemoteAddr)
			return
		}
		s.log.Debug("content information not ready, serving the file", "path", name, "remote", r.RemoteAddr)
	}
	http.ServeContent(w, r, name, fi.ModTime(), f)
}

// contentType guesses the media type from the extension, else from the
// first 512 bytes, as http.ServeContent would.
func contentType(name string, f *os.File) string {
	if t := mime.TypeByExtension(path.Ext(name)); t != "" {
		return t
	}
	buf := make([]byte, 512)
	n, _ := f.ReadAt(buf, 0) // a short read still sniffs
	return http.DetectContentType(buf[:n])
}

// servePeerDist writes the PeerDist-encoded answer: the whole file's
// content information, or a 206 with the content information of one byte
// range. It returns false, having written nothing, when the request is
// better answered by http.ServeContent (several ranges, an unsatisfiable
// or malformed range).
func (s *Server) servePeerDist(w http.ResponseWriter, r *http.Request, neg negotiation, e *entry, ver version, modtime time.Time) bool {
	etag := ver.etag()
	start, end, partial := int64(0), ver.size, false
	if rh := r.Header.Get("Range"); rh != "" && ifRangeAllows(r, etag, modtime) {
		var ok bool
		if start, end, ok = parseRange(rh, ver.size); !ok {
			return false
		}
		partial = true
	}
	if code := checkPreconditions(r, etag, modtime); code != 0 {
		writeConditional(w, code)
		return true
	}
	ci := e.ci
	if partial {
		sub, err := e.info.Slice(uint64(start), uint64(end))
		if err == nil {
			ci, err = sub.MarshalBinary()
		}
		if err != nil {
			s.log.Warn("slice content information", "path", e.name, "start", start, "end", end, "err", err)
			return false
		}
	}
	h := w.Header()
	h.Set("Content-Encoding", EncodingPeerDist)
	h[HeaderPeerDist] = []string{peerDistHeader(neg.version, end-start)} // spelled as in the spec on the wire
	h.Set("Content-Length", strconv.Itoa(len(ci)))
	h.Set("Last-Modified", modtime.UTC().Format(http.TimeFormat))
	h.Set("Accept-Ranges", "bytes")
	status := http.StatusOK
	if partial {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end-1, ver.size))
		status = http.StatusPartialContent
	}
	w.WriteHeader(status)
	_, _ = w.Write(ci) // a failed write means the client left
	return true
}

// writeConditional answers 304 Not Modified or 412 Precondition Failed.
func writeConditional(w http.ResponseWriter, code int) {
	h := w.Header()
	if code == http.StatusNotModified {
		h.Del("Content-Type")
		h.Del("Content-Length")
		h.Del("Content-Encoding")
		w.WriteHeader(code)
		return
	}
	http.Error(w, http.StatusText(code), code)
}
