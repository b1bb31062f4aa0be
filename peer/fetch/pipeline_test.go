package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/election"
	"github.com/redleader-p2p/redleader/internal/loopback"
	"github.com/redleader-p2p/redleader/peer/cache"
	"github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/jobs"
	"github.com/redleader-p2p/redleader/peer/origin"
	"github.com/redleader-p2p/redleader/peer/retrieval"
)

// twoSegments is the size of most test contents: a full segment and a
// short one whose last block is short.
const twoSegments = content.SegmentSize + 5*content.BlockSize + 17

// subnetSecret is the subnet content secret the tests' pipelines hold.
var subnetSecret = bytes.Repeat([]byte{0x5a}, 32)

// testContent returns n pseudo-random bytes (fast: ChaCha8).
func testContent(n int, seed uint64) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

// byteCounter counts the content bytes a test origin sends (not the
// content information of a peerdist answer).
type byteCounter struct {
	h http.Handler
	n atomic.Int64
}

func (c *byteCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.h.ServeHTTP(&countingWriter{ResponseWriter: w, c: c}, r)
}

type countingWriter struct {
	http.ResponseWriter
	c *byteCounter
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	if !hasToken(w.Header().Values("Content-Encoding"), encodingPeerDist) {
		w.c.n.Add(int64(n))
	}
	return n, err
}

// pccrtpOrigin serves data as /f from `redleader origin` (content
// information up front) and returns its URL, the byte counter, the
// request recorder and the content information it gives.
func pccrtpOrigin(t *testing.T, data []byte) (string, *byteCounter, *recorder, *content.Info) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := origin.New(origin.Options{Dir: dir, Secret: testSecret, HashWait: time.Minute, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	bc := &byteCounter{h: s}
	ts, rec := serve(t, bc)
	info, err := content.Generate(t.Context(), bytes.NewReader(data), testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return ts.URL + "/f", bc, rec, info
}

// plainOrigin serves f (a plain origin) and returns its URL and counter.
func plainOrigin(t *testing.T, f *plainFile) (string, *byteCounter, *recorder) {
	t.Helper()
	bc := &byteCounter{h: f}
	ts, rec := serve(t, bc)
	return ts.URL + "/f", bc, rec
}

// testProgress is a jobs.Progress that keeps what it is told.
type testProgress struct {
	mu     sync.Mutex
	total  int64
	held   int64
	bytes  map[jobs.From]int64
	audit  []jobs.AuditRecord
	ckpt   []byte
	onHeld func(int64)                // called with every held count
	onSeg  func(rec jobs.AuditRecord) // called with every audit record
}

func newProgress() *testProgress { return &testProgress{total: -1, bytes: map[jobs.From]int64{}} }

func (p *testProgress) SetTotal(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total = n
}

func (p *testProgress) SetHeld(n int64) {
	p.mu.Lock()
	p.held = n
	f := p.onHeld
	p.mu.Unlock()
	if f != nil {
		f(n)
	}
}

func (p *testProgress) Fetched(from jobs.From, n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bytes[from] += n
}

func (p *testProgress) Audit(rec jobs.AuditRecord) {
	p.mu.Lock()
	p.audit = append(p.audit, rec)
	f := p.onSeg
	p.mu.Unlock()
	if f != nil {
		f(rec)
	}
}

func (p *testProgress) Checkpoint(state []byte) error {
	if len(state) > jobs.MaxCheckpoint {
		return errors.New("checkpoint too large")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ckpt = append([]byte(nil), state...)
	return nil
}

// bySource sums the bytes by source.
func (p *testProgress) bySource() map[jobs.Source]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[jobs.Source]int64{}
	for f, n := range p.bytes {
		out[f.Source] += n
	}
	return out
}

// reasons returns the reasons of origin bytes.
func (p *testProgress) reasons() map[jobs.Reason]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[jobs.Reason]int64{}
	for f, n := range p.bytes {
		if f.Source == jobs.SourceOrigin {
			out[f.Reason] += n
		}
	}
	return out
}

func (p *testProgress) records() []jobs.AuditRecord {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.audit)
}

// fakeProber answers probes from a table and records what it was asked.
type fakeProber struct {
	mu      sync.Mutex
	holders map[content.SegmentID][]Holder
	asked   []content.SegmentID
}

func (f *fakeProber) Probe(_ context.Context, id content.SegmentID) ([]Holder, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, id)
	return f.holders[id], nil
}

func (f *fakeProber) probed() []content.SegmentID {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.asked)
}

// holdAll makes every segment of info held by peers.
func (f *fakeProber) holdAll(info *content.Info, peers ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.holders == nil {
		f.holders = map[content.SegmentID][]Holder{}
	}
	for _, s := range info.Segments {
		for _, p := range peers {
			f.holders[s.ID] = append(f.holders[s.ID], Holder{Peer: p, Blocks: uint32(s.BlockCount())})
		}
	}
}

// countingLimiter is a WAN limiter that lets everything pass and counts.
type countingLimiter struct{ n atomic.Int64 }

func (l *countingLimiter) WaitN(_ context.Context, n int) error {
	l.n.Add(int64(n))
	return nil
}

type role bool

func (r role) Leader() bool { return bool(r) }

// openCache opens a segment cache in a fresh directory, closed at cleanup.
func openCache(t testing.TB, maxBytes int64) *cache.Cache {
	t.Helper()
	c, err := cache.Open(t.TempDir(), cache.Options{NoSync: true, MaxBytes: maxBytes, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// holderOf serves store over MS-PCCRR on 127.0.0.1 and returns its address.
func holderOf(t *testing.T, store retrieval.Store) (string, *retrieval.Server) {
	t.Helper()
	srv, err := retrieval.NewServer(retrieval.ServerConfig{Store: store, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return ts.Listener.Addr().String(), srv
}

// fullHolder returns a LAN holder with all of data (described by info).
func fullHolder(t *testing.T, info *content.Info, data []byte) (*cache.Cache, string) {
	t.Helper()
	c := openCache(t, 0)
	if _, err := c.AddContent(t.Context(), info, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	addr, _ := holderOf(t, c)
	return c, addr
}

// corruptStore serves its cache's blocks with one byte flipped.
type corruptStore struct{ *cache.Cache }

func (s corruptStore) ReadBlock(id content.SegmentID, index uint32, dst []byte) ([]byte, error) {
	start := len(dst)
	dst, err := s.Cache.ReadBlock(id, index, dst)
	if err == nil && len(dst) > start {
		dst[start] ^= 0xff
	}
	return dst, err
}

// pipe builds a pipeline over cfg; missing Origin and Cache are filled.
func pipe(t testing.TB, cfg PipelineConfig) *Pipeline {
	t.Helper()
	if cfg.Origin == nil {
		o, err := NewOrigin(Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(o.Close)
		cfg.Origin = OriginOf(o)
	}
	if cfg.Cache == nil {
		cfg.Cache = openCache(t, 0)
	}
	if cfg.Secret == nil {
		cfg.Secret = func() []byte { return subnetSecret }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p, err := NewPipeline(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// lan returns the LAN side of a pipeline config: the prober and a real
// MS-PCCRR client, closed at cleanup.
func lan(t *testing.T, pr *fakeProber) (Prober, BlockFetcher) {
	c := retrieval.NewClient(retrieval.ClientConfig{Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(c.Close)
	return pr, c
}

func work(t testing.TB, url string) *jobs.Work {
	return &jobs.Work{ID: "job1", Request: jobs.Request{URL: url, Priority: election.PriorityNormal},
		DataPath: filepath.Join(t.TempDir(), "data")}
}

// checkDone checks a finished job: its result, the data file (content,
// mode 0600) and the progress totals.
func checkDone(t *testing.T, res jobs.Result, err error, w *jobs.Work, prog *testProgress, data []byte) {
	t.Helper()
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	sum := sha256.Sum256(data)
	if res.SHA256 != hex.EncodeToString(sum[:]) || res.Size != int64(len(data)) {
		t.Fatalf("result %+v, want sha256 %x size %d", res, sum, len(data))
	}
	got, err := os.ReadFile(w.DataPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("data file differs from the content (%d bytes, want %d)", len(got), len(data))
	}
	if fi, err := os.Stat(w.DataPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("data file mode %v, %v; want 0600", fi.Mode(), err)
	}
	if prog.total != int64(len(data)) {
		t.Fatalf("total %d, want %d", prog.total, len(data))
	}
	var audited int64
	for _, rec := range prog.records() {
		audited += rec.Bytes
	}
	if audited < int64(len(data)) {
		t.Fatalf("audit accounts for %d bytes of %d", audited, len(data))
	}
}

// checkCache checks that every block the cache holds verifies against its
// segment's description.
func checkCache(t *testing.T, c *cache.Cache) {
	t.Helper()
	for _, id := range c.Segments() {
		d, ok := c.Describe(id)
		if !ok {
			continue
		}
		for _, b := range c.Held(id) {
			data, err := c.ReadBlock(id, uint32(b), nil)
			if err != nil {
				t.Fatalf("segment %v block %d: %v", id, b, err)
			}
			if err := content.VerifyBlock(&d, b, data); err != nil {
				t.Fatalf("cache inconsistent: %v", err)
			}
		}
	}
}

// heldBytes returns the bytes of info's segments the cache holds.
func heldBytes(c *cache.Cache, info *content.Info) int64 {
	var n int64
	for _, s := range info.Segments {
		for _, b := range c.Held(s.ID) {
			n += int64(s.BlockLen(b))
		}
	}
	return n
}

// TestPipelinePCCRTPEmptyLAN: from `redleader origin` with nobody on the
// LAN, every segment is probed before the origin is asked for it, the
// origin sends each byte once in one range per segment (paced by the WAN
// limiter), the blocks land in the cache under the origin's segment IDs,
// and the audit says origin, for the reason the role gives.
func TestPipelinePCCRTPEmptyLAN(t *testing.T) {
	for _, leader := range []bool{false, true} {
		t.Run(map[bool]string{false: "non-leader", true: "red leader"}[leader], func(t *testing.T) {
			data := testContent(twoSegments, 1)
			url, bc, rec, info := pccrtpOrigin(t, data)
			pr := &fakeProber{}
			prober, peers := lan(t, pr)
			wan := &countingLimiter{}
			c := openCache(t, 0)
			p := pipe(t, PipelineConfig{Cache: c, Prober: prober, Peers: peers, WAN: wan, Role: role(leader)})
			w, prog := work(t, url), newProgress()
			res, err := p.Run(t.Context(), w, prog)
			checkDone(t, res, err, w, prog, data)

			if got := bc.n.Load(); got != int64(len(data)) {
				t.Fatalf("origin sent %d content bytes, want %d (each once)", got, len(data))
			}
			if got := wan.n.Load(); got != int64(len(data)) {
				t.Fatalf("WAN limiter charged %d bytes, want %d", got, len(data))
			}
			var ranges int
			for _, g := range rec.gets() {
				if g.rng != "" {
					ranges++
				}
			}
			if ranges != len(info.Segments) {
				t.Fatalf("%d range GETs, want one per segment (%d)", ranges, len(info.Segments))
			}
			asked := pr.probed()
			for _, s := range info.Segments {
				if !slices.Contains(asked, s.ID) {
					t.Fatalf("segment %v not probed (asked %v)", s.ID, asked)
				}
				if !c.Complete(s.ID) {
					t.Fatalf("segment %v not complete in the cache", s.ID)
				}
			}
			want := jobs.ReasonStandalone
			if leader {
				want = jobs.ReasonRedLeaderFetch
			}
			if r := prog.reasons(); r[want] != int64(len(data)) || len(r) != 1 {
				t.Fatalf("origin bytes by reason %v, want all %s", r, want)
			}
			recs := prog.records()
			if len(recs) != len(info.Segments) || recs[0].Source != jobs.SourceOrigin || recs[1].Segment != 1 ||
				recs[1].Offset != content.SegmentSize || recs[1].Bytes != int64(len(data))-content.SegmentSize {
				t.Fatalf("audit %+v, want one origin record per segment", recs)
			}
			checkCache(t, c)
		})
	}
}

// TestPipelineLANHolder: a LAN peer holds the content: no content byte
// comes from the origin and the audit names the peer.
func TestPipelineLANHolder(t *testing.T) {
	data := testContent(twoSegments, 2)
	url, bc, _, info := pccrtpOrigin(t, data)
	_, addr := fullHolder(t, info, data)
	pr := &fakeProber{}
	pr.holdAll(info, addr)
	prober, peers := lan(t, pr)
	c := openCache(t, 0)
	p := pipe(t, PipelineConfig{Cache: c, Prober: prober, Peers: peers})
	w, prog := work(t, url), newProgress()
	res, err := p.Run(t.Context(), w, prog)
	checkDone(t, res, err, w, prog, data)
	if got := bc.n.Load(); got != 0 {
		t.Fatalf("origin sent %d content bytes, want 0", got)
	}
	if src := prog.bySource(); src[jobs.SourcePeer] != int64(len(data)) || src[jobs.SourceOrigin] != 0 {
		t.Fatalf("bytes by source %v, want all from the peer", src)
	}
	for _, rec := range prog.records() {
		if rec.Source != jobs.SourcePeer || rec.Peer != addr {
			t.Fatalf("audit record %+v, want peer %s", rec, addr)
		}
	}
	checkCache(t, c)

	// Run again: everything is in the cache now; nothing is fetched.
	w2, prog2 := work(t, url), newProgress()
	res, err = p.Run(t.Context(), w2, prog2)
	checkDone(t, res, err, w2, prog2, data)
	if src := prog2.bySource(); src[jobs.SourceCache] != int64(len(data)) || len(src) != 1 {
		t.Fatalf("second run bytes by source %v, want all from the cache", src)
	}
}

// TestPipelinePartialHolders: two holders with different halves of a
// segment (partial holders count): the blocks come from both, nothing
// from the origin.
func TestPipelinePartialHolders(t *testing.T) {
	data := testContent(content.SegmentSize/2, 3)
	url, bc, _, info := pccrtpOrigin(t, data)
	seg := info.Segments[0]
	half := seg.BlockCount() / 2
	var addrs []string
	for _, blocks := range [][2]int{{0, half}, {half, seg.BlockCount()}} {
		c := openCache(t, 0)
		if err := c.AddSegment(&seg); err != nil {
			t.Fatal(err)
		}
		for b := blocks[0]; b < blocks[1]; b++ {
			off := seg.BlockOffset(b)
			if err := c.PutBlock(seg.ID, b, data[off:off+uint64(seg.BlockLen(b))]); err != nil {
				t.Fatal(err)
			}
		}
		addr, _ := holderOf(t, c)
		addrs = append(addrs, addr)
	}
	pr := &fakeProber{}
	pr.holdAll(info, addrs...)
	prober, peers := lan(t, pr)
	p := pipe(t, PipelineConfig{Prober: prober, Peers: peers})
	w, prog := work(t, url), newProgress()
	res, err := p.Run(t.Context(), w, prog)
	checkDone(t, res, err, w, prog, data)
	if got := bc.n.Load(); got != 0 {
		t.Fatalf("origin sent %d content bytes, want 0", got)
	}
	peersSeen := map[string]bool{}
	for _, rec := range prog.records() {
		peersSeen[rec.Peer] = true
	}
	if !peersSeen[addrs[0]] || !peersSeen[addrs[1]] {
		t.Fatalf("audit %+v, want both holders", prog.records())
	}
}

// TestPipelineCorruptHolder: a holder that serves corrupt blocks: each is
// rejected and counted, and the content still completes right, from
// another holder or else from the origin (for reason bad_block_from_peer).
func TestPipelineCorruptHolder(t *testing.T) {
	for _, withGood := range []bool{true, false} {
		t.Run(map[bool]string{true: "another holder", false: "origin"}[withGood], func(t *testing.T) {
			data := testContent(twoSegments, 4)
			url, bc, _, info := pccrtpOrigin(t, data)
			holder, _ := fullHolder(t, info, data)
			badAddr, badSrv := holderOf(t, corruptStore{holder})
			addrs := []string{badAddr}
			if withGood {
				_, good := fullHolder(t, info, data)
				addrs = append(addrs, good)
			}
			pr := &fakeProber{}
			pr.holdAll(info, addrs...)
			prober, peers := lan(t, pr)
			c := openCache(t, 0)
			p := pipe(t, PipelineConfig{Cache: c, Prober: prober, Peers: peers})
			w, prog := work(t, url), newProgress()
			res, err := p.Run(t.Context(), w, prog)
			checkDone(t, res, err, w, prog, data)
			served := badSrv.Stats().BlocksServed
			if served == 0 || p.Stats().BadBlocks != served {
				t.Fatalf("bad holder served %d blocks, %d rejected; want every one rejected", served, p.Stats().BadBlocks)
			}
			for _, rec := range prog.records() {
				if rec.Peer == badAddr {
					t.Fatalf("audit credits the bad holder: %+v", rec)
				}
			}
			src := prog.bySource()
			if withGood {
				if bc.n.Load() != 0 || src[jobs.SourcePeer] != int64(len(data)) {
					t.Fatalf("origin sent %d, bytes by source %v; want all from the good holder", bc.n.Load(), src)
				}
			} else if r := prog.reasons(); r[jobs.ReasonBadBlockFromPeer] == 0 {
				t.Fatalf("origin bytes by reason %v, want bad_block_from_peer", r)
			}
			checkCache(t, c)
		})
	}
}

// TestPipelinePlainOrigin: an origin that knows nothing of BranchCache,
// Range or ETag (like python3 -m http.server): one GET streams the content,
// the content is right, and its segments are in the cache under the IDs
// content.Generator gives with the subnet secret.
func TestPipelinePlainOrigin(t *testing.T) {
	data := testContent(twoSegments, 5)
	url, bc, rec := plainOrigin(t, &plainFile{data: data, modified: modTime})
	c := openCache(t, 0)
	wan := &countingLimiter{}
	p := pipe(t, PipelineConfig{Cache: c, WAN: wan})
	w, prog := work(t, url), newProgress()
	res, err := p.Run(t.Context(), w, prog)
	checkDone(t, res, err, w, prog, data)
	if gets := rec.gets(); len(gets) != 1 || bc.n.Load() != int64(len(data)) || wan.n.Load() != int64(len(data)) {
		t.Fatalf("%d GETs, %d bytes sent, %d paced; want one stream of %d", len(gets), bc.n.Load(), wan.n.Load(), len(data))
	}
	want, err := content.Generate(t.Context(), bytes.NewReader(data), content.NewServerSecret(subnetSecret))
	if err != nil {
		t.Fatal(err)
	}
	ids := c.Segments()
	if len(ids) != len(want.Segments) {
		t.Fatalf("cache holds %d segments, want %d", len(ids), len(want.Segments))
	}
	for _, s := range want.Segments {
		d, ok := c.Describe(s.ID)
		if !ok || !c.Complete(s.ID) || d.Offset != s.Offset || d.Kp != s.Kp {
			t.Fatalf("segment %v (offset %d) not complete in the cache as generated", s.ID, s.Offset)
		}
	}
	checkCache(t, c)
	var ck checkpoint
	if err := json.Unmarshal(prog.ckpt, &ck); err != nil || len(ck.IDs) != 32*len(want.Segments) {
		t.Fatalf("checkpoint %q (%v), want the %d segment IDs", prog.ckpt, err, len(want.Segments))
	}
}

// TestPipelineResume: a job stopped halfway (its context cancelled) and
// run again fetches from the origin no more than what was missing plus
// one segment: the cache's verified blocks are not fetched again.
func TestPipelineResume(t *testing.T) {
	cases := []struct {
		name  string
		file  func(data []byte) *plainFile // nil: redleader origin
		after int64                        // cancel once this many bytes are held
	}{
		{"content information, mid-segment", nil, content.SegmentSize * 3 / 4},
		{"content information, second segment", nil, content.SegmentSize + 2*content.BlockSize},
		{"plain origin with ranges", func(d []byte) *plainFile {
			return &plainFile{data: d, etag: `"v1"`, modified: modTime, ranges: true}
		}, content.SegmentSize + 2*content.BlockSize},
		{"plain origin, mid-first-segment", func(d []byte) *plainFile {
			return &plainFile{data: d, etag: `"v1"`, modified: modTime, ranges: true}
		}, content.SegmentSize / 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := testContent(twoSegments, 6)
			var url string
			var bc *byteCounter
			if tc.file == nil {
				url, bc, _, _ = pccrtpOrigin(t, data)
			} else {
				url, bc, _ = plainOrigin(t, tc.file(data))
			}
			c := openCache(t, 0)
			p := pipe(t, PipelineConfig{Cache: c})
			w, prog := work(t, url), newProgress()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			prog.onHeld = func(n int64) {
				if n >= tc.after {
					cancel()
				}
			}
			if _, err := p.Run(ctx, w, prog); !errors.Is(err, context.Canceled) {
				t.Fatalf("first run: %v, want cancelled", err)
			}
			if _, err := os.Stat(w.DataPath); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("data file after the cancelled run: %v, want none", err)
			}
			checkCache(t, c)
			info, err := content.Generate(t.Context(), bytes.NewReader(data), testSecret)
			if tc.file != nil {
				info, err = content.Generate(t.Context(), bytes.NewReader(data), content.NewServerSecret(subnetSecret))
			}
			if err != nil {
				t.Fatal(err)
			}
			missing := int64(len(data)) - heldBytes(c, info)
			if missing == int64(len(data)) && tc.after > content.SegmentSize {
				t.Fatalf("nothing held after the first run")
			}
			// Every block held came from the origin in the first run, the
			// segment it was stopped in included: its audit says so.
			if got := prog.bySource()[jobs.SourceOrigin]; got < int64(len(data))-missing {
				t.Fatalf("first run's audit: %d origin bytes, but it stored %d", got, int64(len(data))-missing)
			}

			before := bc.n.Load()
			w.Resume, w.Checkpoint = true, prog.ckpt
			prog2 := newProgress()
			res, err := p.Run(t.Context(), w, prog2)
			checkDone(t, res, err, w, prog2, data)
			after := bc.n.Load() - before
			if after > missing+content.SegmentSize {
				t.Fatalf("origin sent %d bytes after the restart, want ≤ missing %d + one segment", after, missing)
			}
			if tc.file == nil && after != missing {
				t.Fatalf("origin sent %d bytes after the restart, want exactly the missing %d", after, missing)
			}
			if got := prog2.bySource()[jobs.SourceCache]; got != int64(len(data))-missing {
				t.Fatalf("%d bytes from the cache, want %d", got, int64(len(data))-missing)
			}
		})
	}
}

// TestPipelineErrors: each failure is one clear line naming its cause;
// nothing is left at the job's data path and the cache stays consistent.
func TestPipelineErrors(t *testing.T) {
	data := testContent(twoSegments, 7)
	wrongSum := sha256.Sum256([]byte("something else"))
	tlsSrv := httptest.NewUnstartedServer(&plainFile{data: data, modified: modTime})
	tlsSrv.Config.ErrorLog = quietLog
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)

	cases := []struct {
		name     string
		setup    func(t *testing.T) (url string, prog *testProgress)
		maxBytes int64
		sha256   string
		want     error
		text     string
	}{
		{name: "validator changes mid-download", want: ErrChanged, text: "validator mismatch",
			setup: func(t *testing.T) (string, *testProgress) {
				f := &plainFile{data: data, etag: `"v1"`, modified: modTime, ranges: true}
				url, _, _ := plainOrigin(t, f)
				prog := newProgress()
				prog.onSeg = func(rec jobs.AuditRecord) {
					if rec.Segment == 0 {
						f.set(testContent(len(data), 8), `"v2"`, modTime.Add(time.Hour))
					}
				}
				return url, prog
			}},
		{name: "not found", want: ErrNotFound, text: "no such file",
			setup: func(t *testing.T) (string, *testProgress) {
				url, _, _ := plainOrigin(t, &plainFile{data: data})
				return strings.TrimSuffix(url, "/f") + "/missing", newProgress()
			}},
		{name: "connection refused", want: ErrRefused, text: "refused",
			setup: func(t *testing.T) (string, *testProgress) {
				return "http://" + loopback.ClosedAddr(t) + "/f", newProgress()
			}},
		{name: "TLS failure", want: ErrTLS, text: "TLS",
			setup: func(t *testing.T) (string, *testProgress) { return tlsSrv.URL + "/f", newProgress() }},
		{name: "cache full", want: cache.ErrFull, text: "cache full", maxBytes: 2 << 20,
			setup: func(t *testing.T) (string, *testProgress) {
				url, _, _, _ := pccrtpOrigin(t, data)
				return url, newProgress()
			}},
		{name: "cache full, plain origin", want: cache.ErrFull, text: "cache full", maxBytes: 2 << 20,
			setup: func(t *testing.T) (string, *testProgress) {
				url, _, _ := plainOrigin(t, &plainFile{data: data, modified: modTime})
				return url, newProgress()
			}},
		{name: "sha256 mismatch", want: jobs.ErrSHA256Mismatch, text: "expected SHA-256", sha256: hex.EncodeToString(wrongSum[:]),
			setup: func(t *testing.T) (string, *testProgress) {
				url, _, _, _ := pccrtpOrigin(t, data)
				return url, newProgress()
			}},
		{name: "origin digest mismatch", want: ErrDigestMismatch, text: "origin's digest",
			setup: func(t *testing.T) (string, *testProgress) {
				f := &plainFile{data: data, modified: modTime, ranges: true,
					headers: http.Header{"Repr-Digest": {"sha-256=:" + base64.StdEncoding.EncodeToString(wrongSum[:]) + ":"}}}
				url, _, _ := plainOrigin(t, f)
				return url, newProgress()
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url, prog := tc.setup(t)
			c := openCache(t, tc.maxBytes)
			p := pipe(t, PipelineConfig{Cache: c})
			w := work(t, url)
			w.Request.SHA256 = tc.sha256
			_, err := p.Run(t.Context(), w, prog)
			wantErr(t, err, tc.want)
			if !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("error %q does not say %q", err, tc.text)
			}
			if _, serr := os.Stat(w.DataPath); !errors.Is(serr, fs.ErrNotExist) {
				t.Fatalf("data file after %q: %v, want none", err, serr)
			}
			checkCache(t, c)
		})
	}
}

// fakeCatalog is a Catalog with one entry (or a conflict) that records
// commits.
type fakeCatalog struct {
	mu       sync.Mutex
	segs     []content.Segment
	conflict bool
	commits  []content.Segment // in the order committed
	keys     []Key
}

func (f *fakeCatalog) Lookup(_ context.Context, key Key) ([]content.Segment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys = append(f.keys, key)
	if f.conflict {
		return nil, ErrCatalogConflict
	}
	return f.segs, nil
}

func (f *fakeCatalog) Commit(_ context.Context, key Key, first int, segs []content.Segment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if first != len(f.commits) {
		return fmt.Errorf("part at %d does not continue the %d segments committed", first, len(f.commits))
	}
	f.commits = append(f.commits, segs...)
	return nil
}

// TestPipelineCatalog: the Red Leader commits the descriptions it computed
// from a plain origin; another agent that finds them in the catalog gets
// the bytes from the LAN; a conflicted entry sends the job to the origin;
// a planted wrong entry is caught and the job completes from the origin.
func TestPipelineCatalog(t *testing.T) {
	data := testContent(twoSegments, 9)
	url, bc, _ := plainOrigin(t, &plainFile{data: data, etag: `"v1"`, modified: modTime, ranges: true})
	want, err := content.Generate(t.Context(), bytes.NewReader(data), content.NewServerSecret(subnetSecret))
	if err != nil {
		t.Fatal(err)
	}

	// The Red Leader: nothing in the catalog; it commits what it computed.
	cat := &fakeCatalog{}
	leaderCache := openCache(t, 0)
	p := pipe(t, PipelineConfig{Cache: leaderCache, Catalog: cat, Role: role(true)})
	w, prog := work(t, url), newProgress()
	res, err := p.Run(t.Context(), w, prog)
	checkDone(t, res, err, w, prog, data)
	if !(&content.Info{Version: content.V1, HashAlgo: content.SHA256, Segments: cat.commits}).Equal(want) {
		t.Fatalf("%d segments committed, want the %d generated descriptions in order", len(cat.commits), len(want.Segments))
	}
	if len(cat.keys) != 1 || !cat.keys[0].Valid() {
		t.Fatalf("lookups %v, want one by the content key", cat.keys)
	}

	// Another agent: the catalog has the entry, the leader holds the bytes.
	addr, _ := holderOf(t, leaderCache)
	pr := &fakeProber{}
	pr.holdAll(want, addr)
	prober, peers := lan(t, pr)
	before := bc.n.Load()
	p2 := pipe(t, PipelineConfig{Catalog: &fakeCatalog{segs: cat.commits}, Prober: prober, Peers: peers})
	w2, prog2 := work(t, url), newProgress()
	res, err = p2.Run(t.Context(), w2, prog2)
	checkDone(t, res, err, w2, prog2, data)
	if sent := bc.n.Load() - before; sent != 0 || prog2.bySource()[jobs.SourcePeer] != int64(len(data)) {
		t.Fatalf("origin sent %d bytes, bytes by source %v; want all from the LAN", sent, prog2.bySource())
	}

	// An entry with the first segment only (the Red Leader is still
	// downloading): that segment from the LAN, the rest from the origin.
	before = bc.n.Load()
	p5 := pipe(t, PipelineConfig{Catalog: &fakeCatalog{segs: cat.commits[:1]}, Prober: prober, Peers: peers})
	w5, prog5 := work(t, url), newProgress()
	res, err = p5.Run(t.Context(), w5, prog5)
	checkDone(t, res, err, w5, prog5, data)
	if sent, src := bc.n.Load()-before, prog5.bySource(); src[jobs.SourcePeer] != content.SegmentSize ||
		sent != int64(len(data))-content.SegmentSize {
		t.Fatalf("origin sent %d bytes, bytes by source %v; want segment 0 from the LAN, the rest from the origin", sent, src)
	}

	// A conflicted entry: everyone uses the origin.
	p3 := pipe(t, PipelineConfig{Catalog: &fakeCatalog{conflict: true}})
	w3, prog3 := work(t, url), newProgress()
	res, err = p3.Run(t.Context(), w3, prog3)
	checkDone(t, res, err, w3, prog3, data)
	if r := prog3.reasons(); r[jobs.ReasonCatalogConflict] != int64(len(data)) {
		t.Fatalf("origin bytes by reason %v, want catalog_conflict", r)
	}

	// A planted entry: consistent descriptions of other bytes.
	planted, err := content.Generate(t.Context(), bytes.NewReader(testContent(len(data), 10)), content.NewServerSecret(subnetSecret))
	if err != nil {
		t.Fatal(err)
	}
	c4 := openCache(t, 0)
	p4 := pipe(t, PipelineConfig{Cache: c4, Catalog: &fakeCatalog{segs: planted.Segments}})
	w4, prog4 := work(t, url), newProgress()
	res, err = p4.Run(t.Context(), w4, prog4)
	checkDone(t, res, err, w4, prog4, data)
	for _, s := range want.Segments {
		if !c4.Complete(s.ID) {
			t.Fatalf("segment %v not in the cache after the planted entry was dropped", s.ID)
		}
	}
	checkCache(t, c4)
}

// TestPipelineEmptyContent: empty content completes with the empty file.
func TestPipelineEmptyContent(t *testing.T) {
	url, _, _ := plainOrigin(t, &plainFile{data: []byte{}, modified: modTime})
	p := pipe(t, PipelineConfig{})
	w, prog := work(t, url), newProgress()
	res, err := p.Run(t.Context(), w, prog)
	checkDone(t, res, err, w, prog, []byte{})
}

// BenchmarkPipeline: throughput from a loopback `redleader origin`, WAN
// unlimited, into a fresh cache each time.
func BenchmarkPipeline(b *testing.B) {
	data := testContent(2*content.SegmentSize, 11)
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	s, err := origin.New(origin.Options{Dir: dir, Secret: testSecret, HashWait: time.Minute, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ts := httptest.NewServer(s)
	defer ts.Close()
	o, err := NewOrigin(Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer o.Close()
	tmp := b.TempDir()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		// A fresh cache and data file each time, removed before the next.
		cacheDir := filepath.Join(tmp, "cache")
		c, err := cache.Open(cacheDir, cache.Options{NoSync: true, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		p := pipe(b, PipelineConfig{Origin: OriginOf(o), Cache: c})
		w := &jobs.Work{ID: "bench", Request: jobs.Request{URL: ts.URL + "/f", Priority: election.PriorityNormal},
			DataPath: filepath.Join(tmp, "data")}
		if _, err := p.Run(b.Context(), w, newProgress()); err != nil {
			b.Fatal(err)
		}
		if err := errors.Join(c.Close(), os.RemoveAll(cacheDir), os.Remove(w.DataPath)); err != nil {
			b.Fatal(err)
		}
	}
}
