package retrieval

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/redleader-p2p/redleader/internal/logtest"
	"github.com/redleader-p2p/redleader/peer/content"
)

func TestDecryptBlock(t *testing.T) {
	info, data := testContent(t, content.BlockSize+100)
	seg := &info.Segments[0]
	plain := data[:content.BlockSize]
	iv := bytes.Repeat([]byte{3}, 16)
	cbc := func(key, p []byte) []byte {
		c, err := aes.NewCipher(key)
		if err != nil {
			t.Fatal(err)
		}
		out := append([]byte(nil), p...)
		if len(out)%16 != 0 {
			out = append(out, make([]byte, 16-len(out)%16)...) // zero padding: must be tolerated
		}
		cipher.NewCBCEncrypter(c, iv).CryptBlocks(out, out)
		return out
	}
	full, err := EncryptBlock(seg.Kp, iv, plain)
	if err != nil {
		t.Fatal(err)
	}
	if len(full) != content.BlockSize+16 {
		t.Fatalf("PKCS#7 ciphertext of %d bytes", len(full))
	}
	tests := []struct {
		name  string
		index int
		blk   Blk
		want  error
	}{
		{"AES-256 full Kp (our server)", 0, Blk{Crypto: CryptoAES256, Block: full, IV: iv}, nil},
		{"AES-128 truncated Kp (iPXE reading)", 0, Blk{Crypto: CryptoAES128, Block: cbc(seg.Kp[:16], plain), IV: iv}, nil},
		{"AES-128 header, full Kp (MSTS reading)", 0, Blk{Crypto: CryptoAES128, Block: cbc(seg.Kp[:], plain), IV: iv}, nil},
		{"AES-192 truncated Kp", 0, Blk{Crypto: CryptoAES192, Block: cbc(seg.Kp[:24], plain), IV: iv}, nil},
		{"short last block", 1, Blk{Crypto: CryptoAES256, Block: cbc(seg.Kp[:], data[content.BlockSize:]), IV: iv}, nil},
		{"plain", 1, Blk{Crypto: CryptoNone, Block: data[content.BlockSize:]}, nil},
		{"wrong key", 0, Blk{Crypto: CryptoAES256, Block: cbc(make([]byte, 32), plain), IV: iv}, ErrBadBlock},
		{"wrong IV", 0, Blk{Crypto: CryptoAES256, Block: full, IV: make([]byte, 16)}, ErrBadBlock},
		{"IV size", 0, Blk{Crypto: CryptoAES256, Block: full, IV: iv[:8]}, ErrBadBlock},
		{"ragged ciphertext", 0, Blk{Crypto: CryptoAES256, Block: full[:100], IV: iv}, ErrBadBlock},
		{"short ciphertext", 0, Blk{Crypto: CryptoAES256, Block: full[:1024], IV: iv}, ErrBadBlock},
		{"unknown algorithm", 0, Blk{Crypto: 7, Block: full, IV: iv}, ErrBadBlock},
		{"plain too short", 0, Blk{Crypto: CryptoNone, Block: plain[:10]}, ErrBadBlock},
		{"plain corrupt", 1, Blk{Crypto: CryptoNone, Block: data[content.BlockSize-1 : len(data)-1]}, ErrBadBlock},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decryptBlock(seg, tt.index, &tt.blk)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			if err == nil && !bytes.Equal(got, data[tt.index*content.BlockSize:][:seg.BlockLen(tt.index)]) {
				t.Fatal("wrong plaintext")
			}
		})
	}
}

// post sends body to the server and returns status and body.
func post(t *testing.T, url string, body []byte) (int, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func TestServer(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	defer http.DefaultClient.CloseIdleConnections()
	info, data := testContent(t, 10*content.BlockSize+5)
	seg := &info.Segments[0]
	st := newMemStore(info, data, func(_, b int) bool { return b < 3 || b == 7 || b == 8 })
	ts, srv, _ := startPeer(t, st, ServerConfig{})
	url := ts.URL + Path
	request := func(m Message) []byte {
		b, err := m.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	roundTrip := func(m Message) Message {
		t.Helper()
		code, body := post(t, url, request(m))
		if code != http.StatusOK {
			t.Fatalf("status %d", code)
		}
		resp, err := ParseResponse(body)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	var unknown content.SegmentID

	t.Run("nego", func(t *testing.T) {
		r := roundTrip(&NegoReq{Min: Version1, Max: NewProtocolVersion(1, 5)}).(*NegoResp)
		if r.Min != Version1 || r.Max != Version1 {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("unsupported version", func(t *testing.T) {
		b := request(&GetBlks{SegmentID: seg.ID, Ranges: []BlockRange{{0, 1}}})
		b[3] = 7 // major 7
		code, body := post(t, url, b)
		if code != http.StatusOK {
			t.Fatalf("status %d", code)
		}
		if m, err := ParseResponse(body); err != nil || m.MsgType() != MsgNegoResp {
			t.Fatalf("%v %v", m, err)
		}
	})
	blkListTests := []struct {
		name   string
		id     content.SegmentID
		ranges []BlockRange
		want   []BlockRange
		next   uint32
	}{
		{"all", seg.ID, []BlockRange{{0, 11}}, []BlockRange{{0, 3}, {7, 2}}, 0},
		{"some", seg.ID, []BlockRange{{1, 5}}, []BlockRange{{1, 2}}, 7},
		{"none", seg.ID, []BlockRange{{4, 2}}, nil, 7},
		{"unknown segment", unknown, []BlockRange{{0, 1}}, nil, 0},
	}
	for _, tt := range blkListTests {
		t.Run("blklist "+tt.name, func(t *testing.T) {
			r := roundTrip(&GetBlkList{SegmentID: tt.id, Ranges: tt.ranges}).(*BlkList)
			if r.SegmentID != tt.id || !slices.Equal(r.Ranges, tt.want) || r.NextBlockIndex != tt.next {
				t.Fatalf("%+v", r)
			}
		})
	}
	blkTests := []struct {
		name   string
		id     content.SegmentID
		ranges []BlockRange
		index  uint32
		held   bool
		next   uint32
	}{
		{"held", seg.ID, []BlockRange{{1, 1}}, 1, true, 2},
		{"last held", seg.ID, []BlockRange{{8, 1}}, 8, true, 0},
		{"several: first one", seg.ID, []BlockRange{{7, 2}, {0, 1}}, 7, true, 8},
		{"not held", seg.ID, []BlockRange{{4, 1}}, 4, false, 7},
		{"unknown segment", unknown, []BlockRange{{0, 1}}, 0, false, 0},
	}
	for _, tt := range blkTests {
		t.Run("blk "+tt.name, func(t *testing.T) {
			r := roundTrip(&GetBlks{Crypto: CryptoAES128, SegmentID: tt.id, Ranges: tt.ranges}).(*Blk)
			if r.SegmentID != tt.id || r.BlockIndex != tt.index || r.NextBlockIndex != tt.next {
				t.Fatalf("%+v", r)
			}
			if !tt.held {
				if len(r.Block) != 0 || r.Crypto != CryptoNone {
					t.Fatalf("not-held reply carries a block: %+v", r)
				}
				return
			}
			if r.Crypto != CryptoAES256 || len(r.IV) != 16 {
				t.Fatalf("crypto %v, IV %d bytes", r.Crypto, len(r.IV))
			}
			if _, err := decryptBlock(seg, int(tt.index), r); err != nil {
				t.Fatal(err)
			}
		})
	}
	getBlks := request(&GetBlks{SegmentID: seg.ID, Ranges: []BlockRange{{0, 1}}})
	badTests := []struct {
		name   string
		method string
		path   string
		body   []byte
		code   int
	}{
		{"GET", http.MethodGet, Path, nil, http.StatusMethodNotAllowed},
		{"wrong path", http.MethodPost, "/other/", getBlks, http.StatusNotFound},
		{"garbage", http.MethodPost, Path, []byte("hello, world"), http.StatusBadRequest},
		{"empty", http.MethodPost, Path, nil, http.StatusBadRequest},
		{"truncated", http.MethodPost, Path, getBlks[:60], http.StatusBadRequest},
		{"response type", http.MethodPost, Path, request(&BlkList{SegmentID: seg.ID}), http.StatusBadRequest},
		{"too large", http.MethodPost, Path, make([]byte, MaxRequestSize+1), http.StatusRequestEntityTooLarge},
		{"lower-case path", http.MethodPost, strings.ToLower(Path), getBlks, http.StatusOK},
	}
	for _, tt := range badTests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, ts.URL+tt.path, bytes.NewReader(tt.body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.code {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.code)
			}
		})
	}
	// Chunked body beyond the limit (no Content-Length).
	t.Run("too large chunked", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, url, io.MultiReader(bytes.NewReader(make([]byte, MaxRequestSize)), strings.NewReader("x")))
		req.ContentLength = -1
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
	s := srv.Stats()
	if s.BlocksServed != 4 || s.NotHeld != 2 || s.Malformed != 8 || s.BytesServed != 4*content.BlockSize {
		t.Fatalf("stats %+v", s)
	}
}

func TestServerBusy(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	info, data := testContent(t, 2*content.BlockSize)
	seg := &info.Segments[0]
	st := newMemStore(info, data, nil)
	st.gate = make(chan struct{})
	reg := prometheus.NewRegistry()
	ts, srv, _ := startPeer(t, st, ServerConfig{MaxUploads: 1, Metrics: NewMetrics(reg)})
	c := NewClient(ClientConfig{RequestTimeout: time.Minute})
	defer c.Close()

	first := make(chan error, 1)
	go func() {
		_, err := c.FetchBlock(context.Background(), ts.URL, seg, 0)
		first <- err
	}()
	// Wait until the first request holds the only upload slot.
	for len(srv.slots) == 0 {
		select {
		case err := <-first:
			t.Fatalf("first fetch ended early: %v", err)
		default:
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := c.FetchBlock(context.Background(), ts.URL, seg, 1); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("busy server: %v", err)
	}
	l, err := c.BlockList(context.Background(), ts.URL, seg.ID, []BlockRange{{0, 2}})
	if err != nil || len(l.Ranges) != 0 {
		t.Fatalf("busy block list: %+v %v", l, err)
	}
	close(st.gate)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if srv.Stats().Busy != 2 {
		t.Fatalf("stats %+v", srv.Stats())
	}
	if got := scrapePCCRR(t, reg)[`redleader_pccrr_errors_total{reason="busy"}`]; got != 2 {
		t.Fatalf("busy errors counted %v, want 2", got)
	}
}

func TestClientNegotiate(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	info, data := testContent(t, 100)
	ts, _, _ := startPeer(t, newMemStore(info, data, nil), ServerConfig{})
	c := NewClient(ClientConfig{RequestTimeout: time.Minute})
	defer c.Close()
	r, err := c.Negotiate(context.Background(), strings.TrimPrefix(ts.URL, "http://"))
	if err != nil || r.Max != Version1 {
		t.Fatalf("%+v %v", r, err)
	}
}

// collector is a Sink that keeps blocks.
type collector struct {
	mu     sync.Mutex
	blocks map[int][]byte
}

func (c *collector) sink(i int, data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.blocks == nil {
		c.blocks = make(map[int][]byte)
	}
	if _, dup := c.blocks[i]; dup {
		return errors.New("block delivered twice")
	}
	c.blocks[i] = data
	return nil
}

func (c *collector) check(t *testing.T, seg *content.Segment, data []byte, want []int) {
	t.Helper()
	if len(c.blocks) != len(want) {
		t.Fatalf("%d blocks delivered, want %d", len(c.blocks), len(want))
	}
	for _, i := range want {
		off := seg.BlockOffset(i)
		if !bytes.Equal(c.blocks[i], data[off:off+uint64(seg.BlockLen(i))]) {
			t.Fatalf("block %d differs", i)
		}
	}
}

func allBlocks(seg *content.Segment) []int {
	var out []int
	for i := range seg.BlockCount() {
		out = append(out, i)
	}
	return out
}

func TestFetchSegment(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	// Two segments; fetch the second (full, 512 blocks) and the short first... of a 40 MiB file.
	info, data := testContent(t, content.SegmentSize+37*content.BlockSize+1000)
	c := NewClient(ClientConfig{RequestTimeout: time.Minute})
	defer c.Close()

	t.Run("three peers, segment split between them", func(t *testing.T) {
		seg := &info.Segments[0]
		var peers []string
		var counts []*countingHandler
		for k := range 3 {
			ts, _, ch := startPeer(t, newMemStore(info, data, func(_, b int) bool { return b%3 != k }), ServerConfig{})
			peers = append(peers, ts.URL)
			counts = append(counts, ch)
		}
		var col collector
		res, err := c.FetchSegment(context.Background(), seg, nil, peers, col.sink)
		if err != nil {
			t.Fatalf("%v (%+v)", err, res)
		}
		col.check(t, seg, data, allBlocks(seg))
		total := 0
		for _, p := range peers {
			total += res.Blocks[p]
		}
		if total != content.BlocksPerSegment || len(res.BadPeers) != 0 || len(res.Missing) != 0 {
			t.Fatalf("result %+v", res)
		}
		for k, ch := range counts {
			if ch.n.Load() == 0 {
				t.Errorf("peer %d never asked", k)
			}
		}
	})
	t.Run("last segment, short last block, chosen blocks", func(t *testing.T) {
		seg := &info.Segments[1]
		ts, _, _ := startPeer(t, newMemStore(info, data, nil), ServerConfig{})
		var col collector
		want := []int{0, 5, 36, 37}
		if _, err := c.FetchSegment(context.Background(), seg, want, []string{ts.URL, ts.URL}, col.sink); err != nil {
			t.Fatal(err)
		}
		col.check(t, seg, data, want)
	})
	t.Run("corrupting peer is caught and avoided", func(t *testing.T) {
		seg := &info.Segments[1]
		bad := newMemStore(info, data, nil)
		var once sync.Once
		bad.corrupt = func(content.SegmentID, uint32) bool {
			hit := false
			once.Do(func() { hit = true })
			return hit
		}
		badTS, _, badCount := startPeer(t, bad, ServerConfig{})
		goodTS, _, _ := startPeer(t, newMemStore(info, data, nil), ServerConfig{})
		c1 := NewClient(ClientConfig{PerPeer: 1, RequestTimeout: time.Minute})
		defer c1.Close()
		var col collector
		res, err := c1.FetchSegment(context.Background(), seg, nil, []string{badTS.URL, goodTS.URL}, col.sink)
		if err != nil {
			t.Fatal(err)
		}
		col.check(t, seg, data, allBlocks(seg))
		if !slices.Equal(res.BadPeers, []string{badTS.URL}) {
			t.Fatalf("bad peers %v", res.BadPeers)
		}
		if len(res.Rejected) != 1 || res.Rejected[badTS.URL] != 1 {
			t.Fatalf("rejected %v, want the bad peer's one block", res.Rejected)
		}
		if n := badCount.n.Load(); n != 1 {
			t.Fatalf("bad peer asked %d times, want 1", n)
		}
		if res.Blocks[goodTS.URL] != seg.BlockCount() {
			t.Fatalf("result %+v", res)
		}
	})
	t.Run("missing blocks and a dead peer", func(t *testing.T) {
		seg := &info.Segments[1]
		partial, _, _ := startPeer(t, newMemStore(info, data, func(_, b int) bool { return b != 4 && b != 9 }), ServerConfig{})
		dead := httptest.NewServer(http.NotFoundHandler())
		dead.Close()
		var col collector
		res, err := c.FetchSegment(context.Background(), seg, nil, []string{partial.URL, dead.URL}, col.sink)
		if !errors.Is(err, ErrIncomplete) {
			t.Fatalf("error %v", err)
		}
		if !slices.Equal(res.Missing, []int{4, 9}) || !slices.Equal(res.FailedPeers, []string{dead.URL}) {
			t.Fatalf("result %+v", res)
		}
		if len(col.blocks) != seg.BlockCount()-2 {
			t.Fatalf("%d blocks", len(col.blocks))
		}
	})
	t.Run("no peers", func(t *testing.T) {
		res, err := c.FetchSegment(context.Background(), &info.Segments[1], []int{1, 2}, nil, (&collector{}).sink)
		if !errors.Is(err, ErrIncomplete) || !slices.Equal(res.Missing, []int{1, 2}) {
			t.Fatalf("%+v %v", res, err)
		}
	})
	t.Run("sink error stops", func(t *testing.T) {
		ts, _, _ := startPeer(t, newMemStore(info, data, nil), ServerConfig{})
		errFull := errors.New("disk full")
		_, err := c.FetchSegment(context.Background(), &info.Segments[0], nil, []string{ts.URL},
			func(int, []byte) error { return errFull })
		if !errors.Is(err, errFull) {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ts, _, _ := startPeer(t, newMemStore(info, data, nil), ServerConfig{})
		ctx, cancel := context.WithCancel(context.Background())
		var n atomic.Int64
		_, err := c.FetchSegment(ctx, &info.Segments[0], nil, []string{ts.URL}, func(int, []byte) error {
			if n.Add(1) == 3 {
				cancel()
			}
			return nil
		})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("bad block index", func(t *testing.T) {
		if _, err := c.FetchSegment(context.Background(), &info.Segments[1], []int{38}, nil, nil); !errors.Is(err, content.ErrBlockIndex) {
			t.Fatalf("error %v", err)
		}
	})
}

func FuzzServeHTTP(f *testing.F) {
	info, data := testContent(f, 3*content.BlockSize)
	seg := &info.Segments[0]
	srv, err := NewServer(ServerConfig{Store: newMemStore(info, data, func(_, b int) bool { return b != 1 })})
	if err != nil {
		f.Fatal(err)
	}
	for _, m := range []Message{
		&NegoReq{Min: Version1, Max: Version1},
		&GetBlkList{SegmentID: seg.ID, Ranges: []BlockRange{{0, 3}}},
		&GetBlks{SegmentID: seg.ID, Ranges: []BlockRange{{0, 1}}},
		&GetBlks{SegmentID: seg.ID, Ranges: []BlockRange{{1, 1}}},
	} {
		b, _ := m.AppendBinary(nil)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body)))
		switch rec.Code {
		case http.StatusOK:
			if _, err := ParseResponse(rec.Body.Bytes()); err != nil {
				t.Fatalf("server sent an unparsable reply: %v", err)
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("status %d", rec.Code)
		}
	})
}

func TestCipherCache(t *testing.T) {
	c := newCipherCache(100)
	k := func(i uint32) cipherKey { return cipherKey{index: i} }
	c.put(k(1), make([]byte, 40), []byte{1}, 30)
	c.put(k(2), make([]byte, 40), []byte{2}, 30)
	if _, ok := c.get(k(1)); !ok { // 1 becomes most recent
		t.Fatal("entry 1 missing")
	}
	c.put(k(3), make([]byte, 40), []byte{3}, 30) // evicts 2
	if _, ok := c.get(k(2)); ok {
		t.Fatal("entry 2 not evicted")
	}
	if e, ok := c.get(k(3)); !ok || e.iv[0] != 3 || e.plain != 30 {
		t.Fatalf("entry 3: %+v", e)
	}
	c.put(k(4), make([]byte, 101), nil, 1) // larger than the cache: ignored
	if _, ok := c.get(k(4)); ok || c.size != 80 {
		t.Fatalf("oversized entry cached, size %d", c.size)
	}
	var none *cipherCache
	none.put(k(1), nil, nil, 0)
	if _, ok := none.get(k(1)); ok {
		t.Fatal("nil cache hit")
	}
}

func TestServerCipherCacheReplay(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	info, data := testContent(t, 2*content.BlockSize)
	seg := &info.Segments[0]
	for _, cacheBytes := range []int{0, -1} {
		st := newMemStore(info, data, nil)
		ts, _, _ := startPeer(t, st, ServerConfig{CipherCacheBytes: cacheBytes})
		req, _ := (&GetBlks{SegmentID: seg.ID, Ranges: []BlockRange{{1, 1}}}).AppendBinary(nil)
		var replies [][]byte
		for range 3 {
			code, body := post(t, ts.URL+Path, req)
			if code != http.StatusOK {
				t.Fatalf("status %d", code)
			}
			m, err := ParseResponse(body)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := decryptBlock(seg, 1, m.(*Blk)); err != nil {
				t.Fatal(err)
			}
			replies = append(replies, body)
		}
		same := bytes.Equal(replies[0], replies[1]) && bytes.Equal(replies[1], replies[2])
		if cached := cacheBytes >= 0; same != cached || (cached && st.reads.Load() != 1) || (!cached && st.reads.Load() != 3) {
			t.Fatalf("cache %d: replies identical %v, %d store reads", cacheBytes, same, st.reads.Load())
		}
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestServerUploadTimeout(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	info, data := testContent(t, 100)
	ts, srv, _ := startPeer(t, newMemStore(info, data, nil), ServerConfig{UploadTimeout: 50 * time.Millisecond})
	conn, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Promise a 68-byte body, send 10 bytes and stall.
	if _, err := io.WriteString(conn, "POST "+Path+" HTTP/1.1\r\nHost: x\r\nContent-Length: 68\r\n\r\n0123456789"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(time.Minute)) // only a guard against hanging
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !resp.Close {
		t.Fatalf("status %d, close %v", resp.StatusCode, resp.Close)
	}
	if srv.Stats().Malformed != 1 {
		t.Fatalf("stats %+v", srv.Stats())
	}
}

// TestFailingPeerLogRateLimited: a peer that fails every fetch is logged
// once per peerLogEvery, not once per segment.
func TestFailingPeerLogRateLimited(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	info, data := testContent(t, 16*content.BlockSize)
	seg := &info.Segments[0]
	good, _, _ := startPeer(t, newMemStore(info, data, nil), ServerConfig{})
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	lines := &logtest.Recorder{}
	c := NewClient(ClientConfig{RequestTimeout: time.Minute, Logger: slog.New(lines)})
	defer c.Close()
	const fetches = 4
	for range fetches {
		var col collector
		res, err := c.FetchSegment(context.Background(), seg, nil, []string{dead.URL, good.URL}, col.sink)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.FailedPeers, []string{dead.URL}) {
			t.Fatalf("failed peers %v, want the dead one", res.FailedPeers)
		}
	}
	if n := lines.Count("dropping failing peer for this segment"); n != peerLogBurst {
		t.Errorf("dead peer dropped in %d fetches, logged %d times, want %d", fetches, n, peerLogBurst)
	}
}
