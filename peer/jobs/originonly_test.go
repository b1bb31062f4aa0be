package jobs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/election"
	"github.com/redleader-p2p/redleader/internal/loopback"
	"github.com/redleader-p2p/redleader/peer/content"
)

// progressLog is a Progress that records what a runner reports.
type progressLog struct {
	mu          sync.Mutex
	total, held int64
	fetched     Bytes
	audit       []AuditRecord
	checkpoints [][]byte
}

func (p *progressLog) SetTotal(n int64) { p.mu.Lock(); p.total = n; p.mu.Unlock() }
func (p *progressLog) SetHeld(n int64)  { p.mu.Lock(); p.held = n; p.mu.Unlock() }
func (p *progressLog) Fetched(f From, n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := f.check(); err != nil {
		panic(err)
	}
	p.fetched.add(f, n)
}
func (p *progressLog) Audit(r AuditRecord) { p.mu.Lock(); p.audit = append(p.audit, r); p.mu.Unlock() }
func (p *progressLog) Checkpoint(b []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.checkpoints = append(p.checkpoints, append([]byte(nil), b...))
	return nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{1})
	r.Read(b)
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// origin serves data at /file with ETag and Range (http.ServeContent);
// cut, if set, is how many body bytes an answer may send before the
// connection is cut (0: all).
type origin struct {
	data    []byte
	etag    atomic.Value // string
	cut     atomic.Int64
	noRange bool // ignore Range: always 200 with the whole body
	// cutOnce cuts the first answer after that many body bytes; with
	// changeAfterCut the file has a new ETag from the second answer on.
	cutOnce        int64
	changeAfterCut bool
	requests       atomic.Int32
	ranges         sync.Map // request number -> Range header
	want           http.Header
}

func (o *origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := o.requests.Add(1)
	o.ranges.Store(n, r.Header.Get("Range"))
	for k := range o.want {
		if r.Header.Get(k) != o.want.Get(k) {
			http.Error(w, "missing header "+k, http.StatusForbidden)
			return
		}
	}
	if r.URL.Path != "/file" {
		http.NotFound(w, r)
		return
	}
	if o.changeAfterCut && n > 1 {
		o.etag.Store(`"v2"`)
	}
	if e, _ := o.etag.Load().(string); e != "" {
		w.Header().Set("ETag", e)
	}
	c := o.cut.Load()
	if o.cutOnce > 0 && n == 1 {
		c = o.cutOnce
	}
	var out io.Writer = w
	if c > 0 {
		out = &cutWriter{w: w, left: c}
	}
	if o.noRange {
		w.Header().Set("Content-Length", fmt.Sprint(len(o.data)))
		w.WriteHeader(http.StatusOK)
		out.Write(o.data)
		return
	}
	http.ServeContent(&splitWriter{ResponseWriter: w, body: out}, r, "", time.Time{}, bytes.NewReader(o.data))
}

// splitWriter sends headers through the ResponseWriter and the body to
// body.
type splitWriter struct {
	http.ResponseWriter
	body io.Writer
}

func (s *splitWriter) Write(b []byte) (int, error) { return s.body.Write(b) }

// cutWriter writes left bytes, then aborts the connection.
type cutWriter struct {
	w    io.Writer
	left int64
}

func (c *cutWriter) Write(b []byte) (int, error) {
	if int64(len(b)) > c.left {
		c.w.Write(b[:c.left])
		c.w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	c.left -= int64(len(b))
	return c.w.Write(b)
}

func serveOrigin(t *testing.T, o *origin) string {
	t.Helper()
	if o.etag.Load() == nil {
		o.etag.Store(`"v1"`)
	}
	srv := httptest.NewServer(o)
	t.Cleanup(srv.Close)
	return srv.URL
}

func testRunner() *OriginOnly {
	return NewOriginOnly(OriginOnlyOptions{StallTimeout: 2 * time.Second, Retries: 2, RetryDelay: time.Millisecond})
}

// TestOriginOnly downloads from origins that behave and from origins that
// do not.
func TestOriginOnly(t *testing.T) {
	small := randomBytes(300_000)
	tests := []struct {
		name     string
		origin   *origin
		path     string
		headers  []string
		sha256   string
		wantErr  error
		wantMsg  string // in the error
		requests int32  // expected number of requests (0: don't check)
		fetched  int64  // expected origin bytes (0: the content's length)
	}{
		{name: "whole", origin: &origin{data: small}, requests: 1},
		{name: "expected sha256", origin: &origin{data: small}, sha256: strings.ToUpper(sha(small))},
		{name: "credentials sent", origin: &origin{data: small, want: http.Header{"Authorization": {"Bearer x"}}},
			headers: []string{"Authorization: Bearer x"}},
		{name: "empty", origin: &origin{data: []byte{}}},
		{name: "broken streams are resumed", origin: cutOrigin(small, 100_000), requests: 3},
		{name: "origin ignoring Range", origin: &origin{data: small, noRange: true, cutOnce: 100_000}, requests: 2,
			fetched: 100_000 + int64(len(small))},
		{name: "404", origin: &origin{data: small}, path: "/missing", wantErr: ErrOriginNotFound,
			wantMsg: "/missing?…: origin has no such file (404 Not Found)"},
		{name: "403", origin: &origin{data: small, want: http.Header{"Authorization": {"Bearer x"}}}, wantErr: ErrOriginDenied,
			wantMsg: "origin refused access (403 Forbidden)"},
		{name: "sha256 mismatch", origin: &origin{data: small}, sha256: strings.Repeat("0", 64), wantErr: ErrSHA256Mismatch,
			wantMsg: "content does not match the expected SHA-256: got " + sha(small)},
		{name: "file changes mid-download", origin: changingOrigin(small, 100_000), wantErr: ErrOriginChanged,
			wantMsg: `ETag "v2", was "v1"`},
		{name: "cut short for good", origin: cutOrigin(small, 1), wantErr: ErrOriginTooShort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := serveOrigin(t, tt.origin)
			path := tt.path
			if path == "" {
				path = "/file"
			}
			p := &progressLog{}
			w := &Work{ID: "j1", Request: Request{URL: base + path + "?sig=hidden", Headers: tt.headers, SHA256: tt.sha256,
				Priority: election.PriorityNormal}, DataPath: filepath.Join(t.TempDir(), "data")}
			if err := w.Request.Normalize(); err != nil { // as the Manager hands it over
				t.Fatal(err)
			}
			res, err := testRunner().Run(context.Background(), w, p)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("err = %v, want %v with %q", err, tt.wantErr, tt.wantMsg)
				}
				if strings.Contains(err.Error(), "hidden") || strings.Contains(err.Error(), "\n") {
					t.Fatalf("error shows the query or spans lines: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(w.DataPath)
			data := tt.origin.data
			if !bytes.Equal(got, data) || res.SHA256 != sha(data) || res.Size != int64(len(data)) {
				t.Fatalf("content of %d bytes, result %+v; want %d bytes", len(got), res, len(data))
			}
			if n := tt.origin.requests.Load(); tt.requests != 0 && n != tt.requests {
				t.Errorf("%d requests, want %d", n, tt.requests)
			}
			fetched := tt.fetched
			if fetched == 0 {
				fetched = int64(len(data))
			}
			if p.fetched.Origin != fetched || p.fetched.OriginByReason[ReasonStandalone] != fetched || p.held != int64(len(data)) ||
				p.total != int64(len(data)) {
				t.Errorf("progress %+v, want %d fetched, %d held", p, fetched, len(data))
			}
			var audited int64
			for _, r := range p.audit {
				audited += r.Bytes
			}
			if audited != int64(len(data)) {
				t.Errorf("audit %+v covers %d bytes", p.audit, audited)
			}
		})
	}
}

// cutOrigin cuts every answer after n body bytes.
func cutOrigin(data []byte, n int64) *origin {
	o := &origin{data: data}
	o.cut.Store(n)
	return o
}

// changingOrigin cuts its first answer after n bytes and then serves a
// new version of the file.
func changingOrigin(data []byte, n int64) *origin {
	o := &origin{data: data, cutOnce: n, changeAfterCut: true}
	return o
}

// TestOriginOnlyResume: a resumed job asks only for what its checkpoint
// lacks, with If-Range, and keeps the bytes it had.
func TestOriginOnlyResume(t *testing.T) {
	data := randomBytes(content.SegmentSize + 200_000) // two segments
	o := &origin{data: data}
	base := serveOrigin(t, o)
	dir := t.TempDir()
	path := filepath.Join(dir, "data")
	// A first run stops after the first segment (the origin cuts it).
	o.cut.Store(content.SegmentSize + 1000)
	p := &progressLog{}
	r := NewOriginOnly(OriginOnlyOptions{Retries: 1, RetryDelay: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := r.Run(ctx, &Work{ID: "j", Request: Request{URL: base + "/file"}, DataPath: path}, p)
		done <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		p.mu.Lock()
		n := len(p.checkpoints)
		p.mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel() // the agent stops while the runner waits to retry
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("first run: %v", err)
	}
	if len(p.checkpoints) != 1 || len(p.audit) != 1 || p.audit[0] != (AuditRecord{Segment: 0, Offset: 0, Length: content.SegmentSize,
		From: originStandalone, Bytes: content.SegmentSize, Time: p.audit[0].Time}) {
		t.Fatalf("first run: checkpoints %q, audit %+v", p.checkpoints, p.audit)
	}
	var cp originCheckpoint
	json.Unmarshal(p.checkpoints[0], &cp)
	if cp != (originCheckpoint{Offset: content.SegmentSize, Total: int64(len(data)), ETag: `"v1"`}) {
		t.Fatalf("checkpoint %+v", cp)
	}

	o.cut.Store(0)
	first := o.requests.Load()
	p2 := &progressLog{}
	res, err := r.Run(context.Background(), &Work{ID: "j", Request: Request{URL: base + "/file", SHA256: sha(data)}, DataPath: path,
		Resume: true, Checkpoint: p.checkpoints[0]}, p2)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got, data) || res.SHA256 != sha(data) {
		t.Fatal("resumed content differs")
	}
	rng, _ := o.ranges.Load(first + 1)
	if o.requests.Load() != first+1 || rng != fmt.Sprintf("bytes=%d-", content.SegmentSize) {
		t.Errorf("resume asked %v in %d requests", rng, o.requests.Load()-first)
	}
	if p2.fetched.Origin != 200_000 || len(p2.audit) != 1 || p2.audit[0].Segment != 1 || p2.audit[0].Bytes != 200_000 {
		t.Errorf("resume fetched %d, audit %+v", p2.fetched.Origin, p2.audit)
	}
}

// TestOriginOnlyRefusedAndStalled: a refused connection and an origin
// that never answers are clear errors.
func TestOriginOnlyRefusedAndStalled(t *testing.T) {
	stalled := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(stalled.Close)
	tests := []struct {
		name    string
		url     string
		wantErr error
		wantMsg string
	}{
		{"refused", "http://" + loopback.ClosedAddr(t) + "/f", ErrOriginRefused, "origin refused the connection"},
		{"stalled", stalled.URL + "/f", ErrOriginStalled, "origin stopped sending: nothing received for 200ms at byte 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewOriginOnly(OriginOnlyOptions{StallTimeout: 200 * time.Millisecond, Retries: 1, RetryDelay: time.Millisecond})
			defer r.Close()
			_, err := r.Run(context.Background(), &Work{ID: "j", Request: Request{URL: tt.url},
				DataPath: filepath.Join(t.TempDir(), "data")}, &progressLog{})
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("err = %v, want %v with %q", err, tt.wantErr, tt.wantMsg)
			}
		})
	}
}

// TestOriginOnlyUnknownLength: a chunked answer's length is learned at
// its end.
func TestOriginOnlyUnknownLength(t *testing.T) {
	data := randomBytes(200_000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i < len(data); i += 50_000 {
			w.Write(data[i : i+50_000])
			w.(http.Flusher).Flush()
		}
	}))
	t.Cleanup(srv.Close)
	p := &progressLog{}
	path := filepath.Join(t.TempDir(), "data")
	res, err := testRunner().Run(context.Background(), &Work{ID: "j", Request: Request{URL: srv.URL}, DataPath: path}, p)
	if err != nil || res.Size != int64(len(data)) || p.total != int64(len(data)) {
		t.Fatalf("res %+v, total %d, err %v", res, p.total, err)
	}
}
