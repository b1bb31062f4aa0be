package retrieval

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redleader-p2p/redleader/peer/content"
)

var errNotHeld = errors.New("not held")

// memStore is an in-memory Store over one content's segments.
type memStore struct {
	mu      sync.Mutex
	segs    map[content.SegmentID]*memSegment
	corrupt func(id content.SegmentID, index uint32) bool // flip a bit of these blocks
	gate    chan struct{}                                 // if set, ReadBlock waits on it
	reads   atomic.Int64
}

type memSegment struct {
	kp     content.Digest
	blocks [][]byte
	held   []bool
}

// newMemStore holds the blocks of every segment of info for which hold
// returns true (nil: all).
func newMemStore(info *content.Info, data []byte, hold func(seg, block int) bool) *memStore {
	st := &memStore{segs: make(map[content.SegmentID]*memSegment)}
	for si := range info.Segments {
		s := &info.Segments[si]
		ms := &memSegment{kp: s.Kp}
		for b := range s.BlockCount() {
			off := s.BlockOffset(b)
			ms.blocks = append(ms.blocks, data[off:off+uint64(s.BlockLen(b))])
			ms.held = append(ms.held, hold == nil || hold(si, b))
		}
		st.segs[s.ID] = ms
	}
	return st
}

func (st *memStore) Segment(id content.SegmentID) (content.Digest, []BlockRange, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	ms, ok := st.segs[id]
	if !ok {
		return content.Digest{}, nil, false
	}
	var held []BlockRange
	for i, h := range ms.held {
		if h {
			held = append(held, BlockRange{Index: uint32(i), Count: 1})
		}
	}
	held = NormalizeRanges(held)
	return ms.kp, held, len(held) > 0
}

func (st *memStore) ReadBlock(id content.SegmentID, index uint32, dst []byte) ([]byte, error) {
	if st.gate != nil {
		<-st.gate
	}
	st.reads.Add(1)
	st.mu.Lock()
	defer st.mu.Unlock()
	ms, ok := st.segs[id]
	if !ok || int(index) >= len(ms.blocks) || !ms.held[index] {
		return dst, errNotHeld
	}
	n := len(dst)
	dst = append(dst, ms.blocks[index]...)
	if st.corrupt != nil && st.corrupt(id, index) {
		dst[n+rand.IntN(len(dst)-n)] ^= 0x10
	}
	return dst, nil
}

// testContent returns deterministic content of size bytes and its v1 content information.
func testContent(t testing.TB, size int) (*content.Info, []byte) {
	t.Helper()
	data, err := io.ReadAll(io.LimitReader(rand.NewChaCha8([32]byte{7}), int64(size)))
	if err != nil {
		t.Fatal(err)
	}
	info, err := content.Generate(context.Background(), bytes.NewReader(data), content.PassphraseSecret("retrieval test"))
	if err != nil {
		t.Fatal(err)
	}
	return info, data
}

// countingHandler counts requests to h.
type countingHandler struct {
	h http.Handler
	n atomic.Int64
}

func (c *countingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.n.Add(1)
	c.h.ServeHTTP(w, r)
}

// startPeer serves st over httptest on 127.0.0.1.
func startPeer(t testing.TB, st Store, cfg ServerConfig) (*httptest.Server, *Server, *countingHandler) {
	t.Helper()
	cfg.Store = st
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ch := &countingHandler{h: srv}
	ts := httptest.NewServer(ch)
	t.Cleanup(ts.Close)
	return ts, srv, ch
}
