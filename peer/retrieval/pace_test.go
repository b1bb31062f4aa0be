package retrieval

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/shaping"
)

// countingPace is a ServerConfig.Pace that counts the writers it makes
// and the bytes written through them, and records their contexts.
type countingPace struct {
	mu    sync.Mutex
	calls int
	bytes int
	ctxs  []context.Context
}

func (p *countingPace) pace(ctx context.Context, w io.Writer) io.Writer {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	p.ctxs = append(p.ctxs, ctx)
	return countingWriter{p: p, w: w}
}

func (p *countingPace) counts() (calls, bytes int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls, p.bytes
}

type countingWriter struct {
	p *countingPace
	w io.Writer
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.p.mu.Lock()
	c.p.bytes += n
	c.p.mu.Unlock()
	return n, err
}

// TestServerPace: every reply that carries a block, and only those, is
// written through Pace, whole, with a context bounded by UploadTimeout.
func TestServerPace(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	defer http.DefaultClient.CloseIdleConnections()
	info, data := testContent(t, 3*content.BlockSize+5)
	seg := &info.Segments[0]
	st := newMemStore(info, data, func(_, b int) bool { return b != 1 })
	p := &countingPace{}
	const timeout = 10 * time.Second
	ts, srv, _ := startPeer(t, st, ServerConfig{Pace: p.pace, UploadTimeout: timeout})
	url := ts.URL + Path
	send := func(m Message) []byte {
		t.Helper()
		req, err := m.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		code, body := post(t, url, req)
		if code != http.StatusOK {
			t.Fatalf("status %d", code)
		}
		return body
	}

	// Replies without a block are not paced.
	send(&NegoReq{Min: Version1, Max: Version1})
	send(&GetBlkList{SegmentID: seg.ID, Ranges: []BlockRange{{0, 4}}})
	send(&GetBlks{SegmentID: seg.ID, Ranges: []BlockRange{{1, 1}}}) // not held: empty
	if calls, n := p.counts(); calls != 0 || n != 0 {
		t.Fatalf("replies without a block paced: %d writers, %d bytes", calls, n)
	}

	// Block replies are, every byte of them.
	var want int
	for k, i := range []int{0, 2, 3, 0} { // the last one replayed from the cipher cache
		start := time.Now()
		body := send(&GetBlks{SegmentID: seg.ID, Ranges: []BlockRange{{uint32(i), 1}}})
		m, err := ParseResponse(body)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decryptBlock(seg, i, m.(*Blk)); err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
		want += len(body)
		p.mu.Lock()
		ctxs := p.ctxs
		p.mu.Unlock()
		if len(ctxs) != k+1 {
			t.Fatalf("block %d: %d paced replies so far, want %d", i, len(ctxs), k+1)
		}
		ctx := ctxs[k]
		if dl, ok := ctx.Deadline(); !ok || dl.Before(start) || dl.After(start.Add(timeout+time.Second)) {
			t.Fatalf("block %d: pace context deadline %v (set %v), want within UploadTimeout of the request", i, dl, ok)
		}
		// The handler ends (and its context with it) just after the reply
		// reached the client: wait for it, briefly.
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("block %d: pace context still live 5 s after the request", i)
		}
	}
	if calls, n := p.counts(); calls != 4 || n != want {
		t.Fatalf("paced %d writers, %d bytes; want 4, %d (the whole replies)", calls, n, want)
	}
	if s := srv.Stats(); s.BlocksServed != 4 {
		t.Fatalf("stats %+v", s)
	}
}

// TestServerPacedByLimiter: concurrent requests served through one
// shaping.Limiter share its rate. Only a lower bound on the time is
// asserted: a slow machine can only make it longer.
func TestServerPacedByLimiter(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	const blocks = 8
	info, data := testContent(t, blocks*content.BlockSize)
	seg := &info.Segments[0]
	lan := shaping.NewLimiter(8e6, 0) // 1 MB/s, a 64 KiB burst
	pace := func(ctx context.Context, w io.Writer) io.Writer { return shaping.NewWriter(ctx, w, lan) }
	ts, srv, _ := startPeer(t, newMemStore(info, data, nil), ServerConfig{Pace: pace})
	c := NewClient(ClientConfig{RequestTimeout: time.Minute})
	defer c.Close()

	start := time.Now()
	errs := make(chan error, blocks)
	for i := range blocks {
		go func() {
			_, err := c.FetchBlock(t.Context(), ts.URL, seg, i)
			errs <- err
		}()
	}
	for range blocks {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(start)
	// About 8 × 65.6 kB, less the 64 KiB burst, at 1 MB/s: 0.46 s.
	if min := 300 * time.Millisecond; took < min {
		t.Fatalf("%d blocks served in %v at 1 MB/s, want at least %v", blocks, took, min)
	}
	if s := srv.Stats(); s.BlocksServed != blocks {
		t.Fatalf("stats %+v", s)
	}
}

// TestServerPaceEndsWithUploadTimeout: a reply waiting for a thin rate
// gives up when its UploadTimeout is up instead of holding an upload slot
// for as long as the rate would take; the client sees a failed request.
func TestServerPaceEndsWithUploadTimeout(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	defer http.DefaultClient.CloseIdleConnections()
	info, data := testContent(t, content.BlockSize)
	seg := &info.Segments[0]
	// 100 bit/s: the 64 KiB burst passes at once, the rest of the reply
	// (about 80 bytes) would wait for 6 s or more.
	lan := shaping.NewLimiter(100, 0)
	pace := func(ctx context.Context, w io.Writer) io.Writer { return shaping.NewWriter(ctx, w, lan) }
	ts, srv, _ := startPeer(t, newMemStore(info, data, nil), ServerConfig{Pace: pace, UploadTimeout: 200 * time.Millisecond})
	c := NewClient(ClientConfig{RequestTimeout: time.Minute})
	defer c.Close()

	start := time.Now()
	_, err := c.FetchBlock(t.Context(), ts.URL, seg, 0)
	took := time.Since(start)
	if err == nil {
		t.Fatal("a reply cut short by the upload timeout was accepted")
	}
	if errors.Is(err, ErrNotHeld) {
		t.Fatalf("err %v: the block was held, the reply was cut", err)
	}
	if took > 4*time.Second {
		t.Fatalf("the request took %v: the paced reply outlived its upload timeout", took)
	}
	if n := len(srv.slots); n != 0 {
		t.Fatalf("%d upload slots still held", n)
	}
}
