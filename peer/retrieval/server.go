package retrieval

import (
	"context"
	"crypto/aes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redleader-p2p/redleader/peer/content"
)

// Path is the URL path MS-PCCRR requests are POSTed to.
const Path = "/116B50EB-ECE2-41ac-8429-9F9E963361B7/"

// Server defaults.
const (
	// DefaultMaxUploads is the default number of blocks served at once (Windows: 64).
	DefaultMaxUploads = 64
	// DefaultUploadTimeout is the default time to read a request and send its reply (Windows: 15 s).
	DefaultUploadTimeout = 15 * time.Second
)

// Store is what the server serves from; the segment cache implements it.
// Its methods are called concurrently.
type Store interface {
	// Segment returns the segment secret Kp of segment id and the blocks of
	// it that are held and verified, as normalized ranges; ok is false when
	// no block of the segment is held.
	Segment(id content.SegmentID) (kp content.Digest, held []BlockRange, ok bool)
	// ReadBlock appends the bytes of block index of segment id to dst and
	// returns the extended slice. It returns an error when the block is not
	// (or no longer) held; the server then answers "not held".
	ReadBlock(id content.SegmentID, index uint32, dst []byte) ([]byte, error)
}

// ServerConfig configures a Server.
type ServerConfig struct {
	// Store holds the blocks to serve. Required.
	Store Store
	// MaxRequestSize caps a request body; 0 means MaxRequestSize (98,304 bytes).
	MaxRequestSize int64
	// MaxUploads caps the number of GETBLKS/GETBLKLIST requests answered at
	// once; beyond it requests get an empty reply. 0 means DefaultMaxUploads.
	MaxUploads int
	// UploadTimeout bounds reading a request and writing its reply; 0 means
	// DefaultUploadTimeout.
	UploadTimeout time.Duration
	// CipherCacheBytes caps the cache of encrypted blocks replayed to
	// later requesters; 0 means DefaultCipherCacheBytes, negative disables it.
	CipherCacheBytes int
	// Pace, if set, wraps the writer of every reply that carries a block:
	// the agent passes its LAN limiter (shaping.NewWriter), so that
	// lan_rate caps what it serves to LAN peers. Replies without a block
	// (a few dozen bytes) are not paced. ctx ends with the request or when
	// the reply's UploadTimeout is up, whichever comes first: the wrapper
	// then fails the write, the reply is cut short and the client sees a
	// failed request (and asks another peer or the origin).
	Pace func(ctx context.Context, w io.Writer) io.Writer
	// Metrics receives the server's Prometheus counters; nil means
	// unregistered ones (NewMetrics(nil)).
	Metrics *Metrics
	// Logger receives debug logs about dropped requests; nil means slog.Default().
	Logger *slog.Logger
}

// ServerStats are counters of a Server.
type ServerStats struct {
	// BlocksServed counts MSG_BLK replies that carried a block.
	BlocksServed uint64
	// BytesServed counts plaintext block bytes served.
	BytesServed uint64
	// NotHeld counts empty MSG_BLK replies for blocks not held.
	NotHeld uint64
	// Busy counts requests answered empty because MaxUploads was reached.
	Busy uint64
	// Malformed counts requests dropped with an HTTP error.
	Malformed uint64
}

// Server is an http.Handler answering MS-PCCRR requests from a Store.
// Mount it at Path (it also checks the path, case-insensitively).
type Server struct {
	store   Store
	maxReq  int64
	timeout time.Duration
	log     *slog.Logger
	slots   chan struct{}
	cache   *cipherCache // nil when disabled
	pace    func(context.Context, io.Writer) io.Writer
	bufs    sync.Pool // *[]byte response buffers
	count   *serverCounters

	blocksServed, bytesServed, notHeld, busy, malformed atomic.Uint64
}

// NewServer returns a Server for cfg.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Store == nil {
		return nil, fmt.Errorf("new retrieval server: %w", ErrNoStore)
	}
	s := &Server{
		store:   cfg.Store,
		maxReq:  cfg.MaxRequestSize,
		timeout: cfg.UploadTimeout,
		pace:    cfg.Pace,
		log:     cfg.Logger,
	}
	if s.maxReq <= 0 {
		s.maxReq = MaxRequestSize
	}
	if s.timeout <= 0 {
		s.timeout = DefaultUploadTimeout
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	s.count = newServerCounters(cfg.Metrics)
	n := cfg.MaxUploads
	if n <= 0 {
		n = DefaultMaxUploads
	}
	s.slots = make(chan struct{}, n)
	switch {
	case cfg.CipherCacheBytes == 0:
		s.cache = newCipherCache(DefaultCipherCacheBytes)
	case cfg.CipherCacheBytes > 0:
		s.cache = newCipherCache(cfg.CipherCacheBytes)
	}
	return s, nil
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() ServerStats {
	return ServerStats{
		BlocksServed: s.blocksServed.Load(),
		BytesServed:  s.bytesServed.Load(),
		NotHeld:      s.notHeld.Load(),
		Busy:         s.busy.Load(),
		Malformed:    s.malformed.Load(),
	}
}

// fail drops a request with an HTTP error and closes the connection.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, code int, why reason, err error) {
	s.malformed.Add(1)
	s.count.errors[why].Inc()
	s.log.Debug("pccrr request dropped", "remote", r.RemoteAddr, "status", code, "err", err)
	w.Header().Set("Connection", "close")
	http.Error(w, http.StatusText(code), code)
}

// ServeHTTP answers one MS-PCCRR request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.URL.Path, Path) {
		s.count.requests[reqOther].Inc()
		s.fail(w, r, http.StatusNotFound, reasonMalformed, fmt.Errorf("path %q", r.URL.Path))
		return
	}
	if r.Method != http.MethodPost {
		s.count.requests[reqOther].Inc()
		w.Header().Set("Allow", http.MethodPost)
		s.fail(w, r, http.StatusMethodNotAllowed, reasonMalformed, fmt.Errorf("method %s", r.Method))
		return
	}
	if r.ContentLength > s.maxReq {
		s.count.requests[reqOther].Inc()
		s.fail(w, r, http.StatusRequestEntityTooLarge, reasonTooLarge, fmt.Errorf("content length %d", r.ContentLength))
		return
	}
	// UploadTimeout bounds reading the request, then, afresh, writing the reply
	// (so that a request that timed out can still get its error status).
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(s.timeout)) // not supported by every ResponseWriter
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxReq))
	writeBy := time.Now().Add(s.timeout)
	_ = rc.SetWriteDeadline(writeBy)
	s.count.requests[requestType(body)].Inc()
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			s.fail(w, r, http.StatusRequestEntityTooLarge, reasonTooLarge, err)
		} else {
			s.fail(w, r, http.StatusBadRequest, reasonMalformed, err)
		}
		return
	}
	h, err := ParseHeader(body)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, reasonMalformed, err)
		return
	}
	if major := h.Version.Major(); major != 1 && major != 2 {
		// Unsupported version: tell the client what we speak.
		s.reply(w, &NegoResp{Min: Version1, Max: Version1})
		return
	}
	msg, err := ParseRequest(body)
	if err != nil {
		why := reasonMalformed
		if errors.Is(err, ErrMsgType) {
			why = reasonUnsupported
		}
		s.fail(w, r, http.StatusBadRequest, why, err)
		return
	}
	switch m := msg.(type) {
	case *NegoReq:
		s.reply(w, &NegoResp{Min: Version1, Max: Version1})
	case *GetBlkList:
		s.serveBlockList(w, m)
	case *GetBlks:
		s.serveBlock(r.Context(), writeBy, w, m)
	}
}

// acquire takes an upload slot without waiting.
func (s *Server) acquire() bool {
	select {
	case s.slots <- struct{}{}:
		return true
	default:
		s.busy.Add(1)
		s.count.errors[reasonBusy].Inc()
		return false
	}
}

func (s *Server) release() { <-s.slots }

func (s *Server) reply(w http.ResponseWriter, m Message) {
	b, err := AppendResponse(nil, m)
	if err != nil {
		// Only possible for oversized replies, which the server never builds.
		s.count.errors[reasonInternal].Inc()
		s.log.Error("pccrr reply", "err", err)
		http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
		return
	}
	s.writeTo(w, w, b)
}

// writeTo sets w's headers for reply b and writes b to out (w, or w
// paced) in one Write, with a Content-Length (no chunked encoding).
func (s *Server) writeTo(w http.ResponseWriter, out io.Writer, b []byte) error {
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	_, err := out.Write(b)
	return err
}

func (s *Server) serveBlockList(w http.ResponseWriter, m *GetBlkList) {
	reply := &BlkList{SegmentID: m.SegmentID}
	if s.acquire() {
		defer s.release()
		if _, held, ok := s.store.Segment(m.SegmentID); ok {
			held = NormalizeRanges(held)
			reply.Ranges = IntersectRanges(m.Ranges, held)
			after := uint64(0)
			if n := len(reply.Ranges); n > 0 {
				after = reply.Ranges[n-1].End()
			} else if want := NormalizeRanges(m.Ranges); len(want) > 0 {
				after = want[len(want)-1].End()
			}
			reply.NextBlockIndex = nextHeld(held, after)
			if len(reply.Ranges) == 0 {
				s.count.errors[reasonNotHeld].Inc()
			}
		} else {
			s.count.errors[reasonUnknownSegment].Inc()
		}
	}
	s.reply(w, reply)
}

// serveBlock answers a GETBLKS: it reads the block straight into a pooled
// buffer that has room for the reply around it, encrypts it in place (or
// copies the cached ciphertext) and writes the whole reply with one Write.
// A paced reply waits for the limiter until writeBy at most, or until ctx
// (the request's) ends.
func (s *Server) serveBlock(ctx context.Context, writeBy time.Time, w http.ResponseWriter, m *GetBlks) {
	index := m.Ranges[0].Index
	empty := &Blk{SegmentID: m.SegmentID, BlockIndex: index}
	if !s.acquire() {
		s.reply(w, empty)
		return
	}
	defer s.release()
	kp, held, ok := s.store.Segment(m.SegmentID)
	if ok {
		held = NormalizeRanges(held)
	}
	if !ok || !rangesContain(held, index) {
		s.notHeld.Add(1)
		if ok {
			s.count.errors[reasonNotHeld].Inc()
			empty.NextBlockIndex = nextHeld(held, uint64(index)+1)
		} else {
			s.count.errors[reasonUnknownSegment].Inc()
		}
		s.reply(w, empty)
		return
	}
	bp, _ := s.bufs.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, 0, replyBufSize)
		bp = &b
	}
	defer s.bufs.Put(bp)

	blk := &Blk{
		Crypto:         ServerCrypto,
		SegmentID:      m.SegmentID,
		BlockIndex:     index,
		NextBlockIndex: nextHeld(held, uint64(index)+1),
	}
	buf := append((*bp)[:0], 0, 0, 0, 0) // transport header
	buf = blk.appendPrefix(buf)
	sizeAt := len(buf)
	buf = append(buf, 0, 0, 0, 0) // SizeOfBlock
	dataAt := len(buf)
	var plain int
	key := cipherKey{id: m.SegmentID, index: index}
	if ent, ok := s.cache.get(key); ok {
		buf = append(buf, ent.ct...)
		blk.IV, plain = ent.iv, ent.plain
	} else {
		var err error
		buf, err = s.store.ReadBlock(m.SegmentID, index, buf)
		if err != nil || len(buf) == dataAt || len(buf)-dataAt > MaxResponseSize-256 {
			s.notHeld.Add(1)
			s.count.errors[reasonNotHeld].Inc()
			s.log.Debug("pccrr block not readable", "segment", m.SegmentID, "block", index, "err", err)
			s.reply(w, empty)
			return
		}
		plain = len(buf) - dataAt
		blk.IV = make([]byte, aes.BlockSize)
		_, _ = rand.Read(blk.IV) // crypto/rand.Read never fails
		buf, err = encryptInPlace(buf, dataAt, kp, blk.IV)
		if err != nil {
			s.count.errors[reasonInternal].Inc()
			s.log.Error("pccrr encrypt", "err", err)
			s.reply(w, empty)
			return
		}
		s.cache.put(key, buf[dataAt:], blk.IV, plain)
	}
	putU32(buf[sizeAt:], uint32(len(buf)-dataAt))
	buf = blk.appendSuffix(buf) // ciphertext is a multiple of 16: no padding
	putU32(buf[0:], uint32(len(buf)-TransportHeaderSize))
	putU32(buf[TransportHeaderSize+8:], uint32(len(buf)-TransportHeaderSize))
	*bp = buf
	// Counted before the write, so that a client that has the reply sees
	// it counted; a reply cut short also counts as a "write" error.
	s.blocksServed.Add(1)
	s.bytesServed.Add(uint64(plain))
	s.count.blocks.Inc()
	s.count.bytes.Add(float64(plain))
	var out io.Writer = w
	if s.pace != nil {
		// A paced reply waits for the limiter no longer than it may take.
		pctx, cancel := context.WithDeadline(ctx, writeBy)
		defer cancel()
		out = s.pace(pctx, w)
	}
	if err := s.writeTo(w, out, buf); err != nil {
		s.count.errors[reasonWrite].Inc() // the client's loss
	}
}

// replyBufSize is the capacity of a pooled reply buffer: a full block, its
// padding and the message fields around it (with a 32-byte segment ID).
const replyBufSize = 128 + content.BlockSize + aes.BlockSize

func putU32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}
