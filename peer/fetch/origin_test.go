package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/redleader-p2p/redleader/internal/logtest"
	"github.com/redleader-p2p/redleader/internal/loopback"
	"github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/origin"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testSecret is the MS-PCCRC §3 example secret, as a Windows passphrase.
var testSecret = content.PassphraseSecret("no more secrets")

func pseudoRandom(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// seen is what a test server saw of one request.
type seen struct {
	method, path, rng, ifRange, ifMatch, ifUnmodified, acceptEncoding, auth, cookie, peerDist string
}

// recorder is a handler that keeps the requests it passes to h.
type recorder struct {
	h    http.Handler
	mu   sync.Mutex
	reqs []seen
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec.mu.Lock()
	rec.reqs = append(rec.reqs, seen{
		method: r.Method, path: r.URL.Path, rng: r.Header.Get("Range"), ifRange: r.Header.Get("If-Range"),
		ifMatch: r.Header.Get("If-Match"), ifUnmodified: r.Header.Get("If-Unmodified-Since"),
		acceptEncoding: r.Header.Get("Accept-Encoding"), auth: r.Header.Get("Authorization"),
		cookie: r.Header.Get("Cookie"), peerDist: r.Header.Get(headerPeerDist),
	})
	rec.mu.Unlock()
	rec.h.ServeHTTP(w, r)
}

func (rec *recorder) requests() []seen {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]seen(nil), rec.reqs...)
}

// gets returns the GET requests seen.
func (rec *recorder) gets() []seen {
	var out []seen
	for _, s := range rec.requests() {
		if s.method == http.MethodGet {
			out = append(out, s)
		}
	}
	return out
}

// quietLog is a server error log that drops lines (TLS handshake errors
// and the like, which the tests provoke).
var quietLog = log.New(io.Discard, "", 0)

// serve starts h on 127.0.0.1 behind a recorder.
func serve(t *testing.T, h http.Handler) (*httptest.Server, *recorder) {
	t.Helper()
	rec := &recorder{h: h}
	ts := httptest.NewUnstartedServer(rec)
	ts.Config.ErrorLog = quietLog
	ts.Start()
	t.Cleanup(ts.Close)
	return ts, rec
}

// newOrigin returns an Origin for opts, closed at cleanup; its logs go to
// the returned recorder.
func newOrigin(t *testing.T, opts Options) (*Origin, *logtest.Recorder) {
	t.Helper()
	logs := &logtest.Recorder{}
	if opts.Logger == nil {
		opts.Logger = slog.New(logs)
	}
	o, err := NewOrigin(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	return o, logs
}

// plainFile serves one file of a plain origin at every path but /missing.
type plainFile struct {
	mu       sync.Mutex
	data     []byte
	etag     string      // ETag value sent; "" sends none
	modified time.Time   // Last-Modified sent; zero sends none
	ranges   bool        // true: http.ServeContent (Range, If-Range, If-Match); false: like python3 -m http.server
	noLength bool        // HEAD without Content-Length
	headers  http.Header // more answer headers
	// strip removes request headers before ServeContent (an origin that
	// ignores them).
	strip []string
}

func (f *plainFile) set(data []byte, etag string, modified time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.data, f.etag, f.modified = data, etag, modified
}

func (f *plainFile) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/missing" {
		http.NotFound(w, r)
		return
	}
	f.mu.Lock()
	data, etag, modified, ranges := f.data, f.etag, f.modified, f.ranges
	f.mu.Unlock()
	h := w.Header()
	for k, v := range f.headers {
		h[k] = v
	}
	if etag != "" {
		h.Set("ETag", etag)
	}
	if ranges {
		for _, k := range f.strip {
			r.Header.Del(k)
		}
		http.ServeContent(w, r, "", modified, bytes.NewReader(data))
		return
	}
	if !modified.IsZero() {
		h.Set("Last-Modified", modified.UTC().Format(http.TimeFormat))
	}
	h.Set("Content-Type", "application/octet-stream")
	if r.Method == http.MethodHead && f.noLength {
		w.WriteHeader(http.StatusOK)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(data)
	}
}

// readRange reads [off, off+n) through r.
func readRange(t *testing.T, r *Reader, off, n int64) ([]byte, error) {
	t.Helper()
	sec, err := r.Range(off, n)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(sec)
}

// wantErr fails unless err wraps want and prints as one line.
func wantErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error %v, want %v", err, want)
	}
	if strings.ContainsAny(err.Error(), "\r\n") {
		t.Fatalf("error %q is not one line", err)
	}
}

var modTime = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

// TestIdentifyPlain: what the HEAD of a plain origin gives, for the
// combinations of ETag, Last-Modified, length, Accept-Ranges and digests.
func TestIdentifyPlain(t *testing.T) {
	data := pseudoRandom(1000, 1)
	sum := sha256.Sum256(data)
	lm := "lm:" + strconv.FormatInt(modTime.Unix(), 10)
	tests := []struct {
		name          string
		file          *plainFile
		wantValidator string
		wantETag      string
		wantLength    int64
		wantRanges    bool
		wantSupport   RangeSupport
		wantAnchor    Algo
	}{
		{"strong etag, ranges", &plainFile{etag: `"v1"`, modified: modTime, ranges: true},
			`etag:"v1"`, `"v1"`, 1000, true, RangesUnknown, ""},
		{"weak etag ignored", &plainFile{etag: `W/"v1"`, modified: modTime, ranges: true},
			lm, "", 1000, true, RangesUnknown, ""},
		{"weak etag only", &plainFile{etag: `W/"v1"`}, "", "", 1000, false, RangesUnknown, ""},
		{"malformed etag ignored", &plainFile{etag: `"a b"`, modified: modTime}, lm, "", 1000, false, RangesUnknown, ""},
		{"python http.server", &plainFile{modified: modTime}, lm, "", 1000, false, RangesUnknown, ""},
		{"no validator", &plainFile{}, "", "", 1000, false, RangesUnknown, ""},
		{"no length", &plainFile{etag: `"v1"`, noLength: true}, `etag:"v1"`, `"v1"`, -1, false, RangesUnknown, ""},
		{"digest only", &plainFile{headers: http.Header{"Repr-Digest": {"sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"}}},
			"sha-256:" + hex.EncodeToString(sum[:]), "", 1000, false, RangesUnknown, SHA256},
		{"etag wins over digest", &plainFile{etag: `"v1"`, headers: http.Header{"Digest": {"SHA-256=" + base64.StdEncoding.EncodeToString(sum[:])}}},
			`etag:"v1"`, `"v1"`, 1000, false, RangesUnknown, SHA256},
		{"accept-ranges none", &plainFile{etag: `"v1"`, headers: http.Header{"Accept-Ranges": {"none"}}},
			`etag:"v1"`, `"v1"`, 1000, false, RangesIgnored, ""},
		{"accept-ranges bytes advertised", &plainFile{modified: modTime, headers: http.Header{"Accept-Ranges": {"bytes"}}},
			lm, "", 1000, true, RangesUnknown, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.file.data = data
			ts, rec := serve(t, tt.file)
			o, _ := newOrigin(t, Options{})
			id, err := o.Identify(t.Context(), ts.URL+"/dir/file.bin", nil)
			if err != nil {
				t.Fatal(err)
			}
			if id.Key.Validator != tt.wantValidator || id.ETag != tt.wantETag || id.Length != tt.wantLength ||
				id.AcceptRanges != tt.wantRanges || id.Ranges() != tt.wantSupport {
				t.Fatalf("identity validator %q etag %q length %d accept-ranges %v ranges %v, want %q %q %d %v %v",
					id.Key.Validator, id.ETag, id.Length, id.AcceptRanges, id.Ranges(),
					tt.wantValidator, tt.wantETag, tt.wantLength, tt.wantRanges, tt.wantSupport)
			}
			if valid := tt.wantValidator != "" && tt.wantLength >= 0; id.Key.Valid() != valid {
				t.Fatalf("Key.Valid = %v, want %v (key %v)", id.Key.Valid(), valid, id.Key)
			}
			if want := ts.URL + "/dir/file.bin"; id.Key.Resource != want || id.Key.Length != tt.wantLength {
				t.Fatalf("key %v, want resource %s length %d", id.Key, want, tt.wantLength)
			}
			switch {
			case tt.wantAnchor == "" && id.Anchor != nil:
				t.Fatalf("anchor %v, want none", id.Anchor)
			case tt.wantAnchor != "" && (id.Anchor == nil || id.Anchor.Algo != tt.wantAnchor):
				t.Fatalf("anchor %v, want %s", id.Anchor, tt.wantAnchor)
			case id.Anchor != nil:
				h := id.Anchor.NewHash()
				h.Write(data)
				if err := id.Anchor.Check(h.Sum(nil)); err != nil {
					t.Fatal(err)
				}
			}
			if id.Info != nil || id.Credentialed {
				t.Fatalf("plain origin: info %v credentialed %v", id.Info, id.Credentialed)
			}
			reqs := rec.requests()
			if len(reqs) != 1 || reqs[0].method != http.MethodHead {
				t.Fatalf("requests %+v, want one HEAD", reqs)
			}
		})
	}
}

// TestKey: the query, fragment and user info are not part of the key; the
// scheme, host, default port and path are normalised; the ID is the
// documented hash of the documented form.
func TestKey(t *testing.T) {
	data := pseudoRandom(64, 2)
	ts, _ := serve(t, &plainFile{data: data, etag: `"e1"`, ranges: true})
	o, _ := newOrigin(t, Options{})
	a, err := o.Identify(t.Context(), ts.URL+"/f.iso?X-Amz-Signature=aaa&exp=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := o.Identify(t.Context(), ts.URL+"/f.iso?X-Amz-Signature=bbb#frag", nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := o.Identify(t.Context(), ts.URL+"/g.iso", nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Key != b.Key || a.Key.ID() != b.Key.ID() {
		t.Fatalf("keys differ with the query only: %v / %v", a.Key, b.Key)
	}
	if a.Key == c.Key || a.Key.ID() == c.Key.ID() {
		t.Fatalf("keys of two paths are equal: %v", a.Key)
	}
	wantForm := ts.URL + `/f.iso etag:"e1" 64`
	if a.Key.String() != wantForm {
		t.Fatalf("key %q, want %q", a.Key.String(), wantForm)
	}
	sum := sha256.Sum256([]byte("redleader content key v1\n" + wantForm))
	if a.Key.ID() != hex.EncodeToString(sum[:]) {
		t.Fatalf("key ID %s, want SHA-256 of the documented form", a.Key.ID())
	}
	if !strings.Contains(a.URL(), "X-Amz-Signature=aaa") || strings.Contains(a.Redacted(), "Signature") {
		t.Fatalf("URL %q / Redacted %q", a.URL(), a.Redacted())
	}

	for _, tt := range []struct{ in, want string }{
		{"HTTP://Example.COM:80/a%20b?x=1#y", "http://example.com/a%20b"},
		{"https://h.example:443", "https://h.example/"},
		{"https://h.example:8443/p/", "https://h.example:8443/p/"},
		{"http://user:pw@h.example/p", "http://h.example/p"},
		{"http://[::1]:8080/p", "http://[::1]:8080/p"},
		{"http://[2001:DB8::1]/p", "http://[2001:db8::1]/p"},
	} {
		u, err := url.Parse(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := resourceOf(u); got != tt.want {
			t.Errorf("resourceOf(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// TestIdentifyErrors: bad URLs, 404, refused, TLS: one line each, naming
// the cause, never the query.
func TestIdentifyErrors(t *testing.T) {
	ts, _ := serve(t, &plainFile{data: []byte("x")})
	tlsSrv := httptest.NewUnstartedServer(http.NotFoundHandler())
	tlsSrv.Config.ErrorLog = quietLog
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)
	denied := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(denied.Close)
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
	}))
	t.Cleanup(broken.Close)
	o, _ := newOrigin(t, Options{})
	tests := []struct {
		name, url string
		want      error
	}{
		{"ftp", "ftp://127.0.0.1/f", ErrURL},
		{"relative", "/f", ErrURL},
		{"not found", ts.URL + "/missing?token=SECRET", ErrNotFound},
		{"refused", "http://" + loopback.ClosedAddr(t) + "/f?token=SECRET", ErrRefused},
		{"untrusted certificate", tlsSrv.URL + "/f?token=SECRET", ErrTLS},
		{"plain http to a TLS port", "http" + strings.TrimPrefix(tlsSrv.URL, "https") + "/f", ErrStatus},
		{"denied", denied.URL + "/f", ErrDenied},
		{"bad gateway", broken.URL + "/f", ErrStatus},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := o.Identify(t.Context(), tt.url, nil)
			wantErr(t, err, tt.want)
			if strings.Contains(err.Error(), "SECRET") {
				t.Fatalf("error %q shows the query", err)
			}
			t.Log(err)
		})
	}
}

// TestTLSTrusted: an HTTPS origin whose certificate the TLS config
// trusts is identified and read.
func TestTLSTrusted(t *testing.T) {
	data := pseudoRandom(5000, 3)
	ts := httptest.NewUnstartedServer(&plainFile{data: data, etag: `"t"`, ranges: true})
	ts.Config.ErrorLog = quietLog
	ts.StartTLS()
	t.Cleanup(ts.Close)
	roots := x509.NewCertPool()
	roots.AddCert(ts.Certificate())
	o, _ := newOrigin(t, Options{TLSConfig: &tls.Config{RootCAs: roots}})
	id, err := o.Identify(t.Context(), ts.URL+"/f", nil)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := o.Range(t.Context(), id, 100, 200)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, data[100:300]) {
		t.Fatalf("range: %d bytes, %v", len(got), err)
	}
}

// startOrigin serves dir with peer/origin (MS-PCCRTP) on 127.0.0.1.
func startOrigin(t *testing.T, dir string, opts origin.Options, start bool) (*httptest.Server, *recorder) {
	t.Helper()
	opts.Dir, opts.Secret = dir, testSecret
	opts.Logger = slog.New(slog.DiscardHandler)
	s, err := origin.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	if start {
		if err := s.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	return serve(t, s)
}

// TestIdentifyPeerDist: from `redleader origin`, Identify returns the
// whole content information (two segments) with one HEAD and one GET whose
// body is the content information; ranges then come as 206s.
func TestIdentifyPeerDist(t *testing.T) {
	dir := t.TempDir()
	size := content.SegmentSize + 3*content.BlockSize + 123
	data := pseudoRandom(size, 4)
	if err := os.WriteFile(filepath.Join(dir, "big.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	want, err := content.Generate(t.Context(), bytes.NewReader(data), testSecret)
	if err != nil {
		t.Fatal(err)
	}
	ts, rec := startOrigin(t, dir, origin.Options{HashWait: time.Minute}, true)
	o, _ := newOrigin(t, Options{})
	id, err := o.Identify(t.Context(), ts.URL+"/big.bin", nil)
	if err != nil {
		t.Fatal(err)
	}
	if id.Info == nil || !id.Info.Equal(want) {
		t.Fatalf("content information %v, want the generated one (%d segments)", id.Info, len(want.Segments))
	}
	if id.Length != int64(size) || id.ETag == "" || !id.Key.Valid() || !id.AcceptRanges {
		t.Fatalf("identity length %d etag %q key %v accept-ranges %v", id.Length, id.ETag, id.Key, id.AcceptRanges)
	}
	reqs := rec.requests()
	if len(reqs) != 2 || reqs[0].method != http.MethodHead || reqs[1].method != http.MethodGet ||
		reqs[1].acceptEncoding != "peerdist" || reqs[1].peerDist == "" {
		t.Fatalf("requests %+v, want a HEAD and a PeerDist GET", reqs)
	}

	r := o.NewReader(t.Context(), id)
	defer r.Close()
	for _, rg := range [][2]int64{{content.SegmentSize, int64(size) - content.SegmentSize}, {0, content.BlockSize}} {
		got, err := readRange(t, r, rg[0], rg[1])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data[rg[0]:rg[0]+rg[1]]) {
			t.Fatalf("range %v: wrong bytes", rg)
		}
	}
	if id.Ranges() != RangesHonoured {
		t.Fatalf("ranges %v, want honoured", id.Ranges())
	}
	gets := rec.gets()[1:]
	if len(gets) != 2 || gets[0].rng != fmt.Sprintf("bytes=%d-%d", content.SegmentSize, size-1) ||
		gets[0].ifMatch != id.ETag || gets[0].ifRange != id.ETag || gets[0].acceptEncoding != "identity" {
		t.Fatalf("range requests %+v", gets)
	}
}

// TestIdentifyPeerDistModes: hashes not ready (the origin sends the file):
// Identify closes it and identifies a plain origin; PeerDistOff never asks;
// PeerDistAlways asks a plain origin too.
func TestIdentifyPeerDistModes(t *testing.T) {
	dir := t.TempDir()
	data := pseudoRandom(300<<10, 5)
	if err := os.WriteFile(filepath.Join(dir, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("not ready", func(t *testing.T) {
		ts, rec := startOrigin(t, dir, origin.Options{HashWait: -1}, false)
		o, logs := newOrigin(t, Options{})
		id, err := o.Identify(t.Context(), ts.URL+"/f", nil)
		if err != nil {
			t.Fatal(err)
		}
		if id.Info != nil || !id.Key.Valid() || id.Length != int64(len(data)) {
			t.Fatalf("identity %+v", id)
		}
		if n := len(rec.gets()); n != 1 || logs.Count("origin sent the file instead of content information, closed it") != 1 {
			t.Fatalf("%d GETs, want the one content information GET, logged", n)
		}
	})
	t.Run("off", func(t *testing.T) {
		ts, rec := startOrigin(t, dir, origin.Options{HashWait: time.Minute}, true)
		o, _ := newOrigin(t, Options{PeerDist: PeerDistOff})
		id, err := o.Identify(t.Context(), ts.URL+"/f", nil)
		if err != nil {
			t.Fatal(err)
		}
		if id.Info != nil || len(rec.gets()) != 0 {
			t.Fatalf("info %v, %d GETs; want none", id.Info, len(rec.gets()))
		}
		if id, err = o.IdentifyWith(t.Context(), ts.URL+"/f", nil, PeerDistAuto); err != nil || id.Info == nil {
			t.Fatalf("IdentifyWith auto: info %v, %v", id.Info, err)
		}
	})
	t.Run("off for one call", func(t *testing.T) {
		ts, rec := startOrigin(t, dir, origin.Options{HashWait: time.Minute}, true)
		o, _ := newOrigin(t, Options{})
		id, err := o.IdentifyWith(t.Context(), ts.URL+"/f", nil, PeerDistOff)
		if err != nil {
			t.Fatal(err)
		}
		if id.Info != nil || len(rec.gets()) != 0 || !id.Key.Valid() {
			t.Fatalf("info %v, %d GETs, key %v; want no content information", id.Info, len(rec.gets()), id.Key)
		}
		if reqs := rec.requests(); len(reqs) != 1 || reqs[0].acceptEncoding != "identity" {
			t.Fatalf("requests %+v, want one plain HEAD", reqs)
		}
	})
	t.Run("always, plain origin", func(t *testing.T) {
		ts, rec := serve(t, &plainFile{data: data, modified: modTime})
		o, _ := newOrigin(t, Options{PeerDist: PeerDistAlways})
		id, err := o.Identify(t.Context(), ts.URL+"/f", nil)
		if err != nil {
			t.Fatal(err)
		}
		if id.Info != nil || !id.Key.Valid() || len(rec.gets()) != 1 {
			t.Fatalf("info %v key %v, %d GETs", id.Info, id.Key, len(rec.gets()))
		}
	})
}

// TestRangesIgnored: an origin like python3 -m http.server (Last-Modified,
// no ETag, no Range) is detected at the first range, once per Identity,
// then read as one stream the ranges are cut from.
func TestRangesIgnored(t *testing.T) {
	data := pseudoRandom(300<<10, 6)
	ts, rec := serve(t, &plainFile{data: data, modified: modTime})
	var paced countingReader
	o, logs := newOrigin(t, Options{Pace: func(_ context.Context, r io.Reader) io.Reader {
		paced.r = r
		return &paced
	}})
	id, err := o.Identify(t.Context(), ts.URL+"/f", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !id.Key.Valid() || id.Ranges() != RangesUnknown {
		t.Fatalf("key %v ranges %v", id.Key, id.Ranges())
	}
	r := o.NewReader(t.Context(), id)
	for _, rg := range [][2]int64{{0, 100 << 10}, {150 << 10, 50 << 10}, {200 << 10, 100 << 10}} {
		got, err := readRange(t, r, rg[0], rg[1])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data[rg[0]:rg[0]+rg[1]]) {
			t.Fatalf("range %v: wrong bytes", rg)
		}
	}
	r.Close()
	if r.Received() != int64(len(data)) || r.Discarded() != 50<<10 || paced.n != r.Received() {
		t.Fatalf("received %d, discarded %d, paced %d; want %d, %d, all", r.Received(), r.Discarded(), paced.n, len(data), 50<<10)
	}
	gets := rec.gets()
	if len(gets) != 1 || gets[0].rng != "bytes=0-102399" || gets[0].ifUnmodified == "" || gets[0].ifRange == "" {
		t.Fatalf("GETs %+v, want one, with the first range and Last-Modified checks", gets)
	}
	if id.Ranges() != RangesIgnored || logs.Count("origin ignores Range, reading it as one stream") != 1 {
		t.Fatalf("ranges %v, want ignored, logged once", id.Ranges())
	}

	// Known now: a new Reader asks without Range; going back restarts.
	r = o.NewReader(t.Context(), id)
	defer r.Close()
	for _, rg := range [][2]int64{{200 << 10, 10}, {10, 20}} {
		got, err := readRange(t, r, rg[0], rg[1])
		if err != nil || !bytes.Equal(got, data[rg[0]:rg[0]+rg[1]]) {
			t.Fatalf("range %v: %d bytes, %v", rg, len(got), err)
		}
	}
	gets = rec.gets()
	if len(gets) != 3 || gets[1].rng != "" || gets[2].rng != "" {
		t.Fatalf("GETs %+v, want two more without Range", gets)
	}
	if logs.Count("origin ignores Range, reading it as one stream") != 1 {
		t.Fatal("detection logged again")
	}
}

// countingReader counts the bytes read through it (Options.Pace).
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// TestRangesHonoured: one request per range with the validator checks; a
// range reader goes stale at the next Range; ranges outside the content
// are refused before any request.
func TestRangesHonoured(t *testing.T) {
	data := pseudoRandom(200<<10, 7)
	ts, rec := serve(t, &plainFile{data: data, etag: `"h1"`, modified: modTime, ranges: true})
	o, _ := newOrigin(t, Options{})
	id, err := o.Identify(t.Context(), ts.URL+"/f", nil)
	if err != nil {
		t.Fatal(err)
	}
	r := o.NewReader(t.Context(), id)
	defer r.Close()
	first, err := r.Range(0, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if _, err := io.ReadFull(first, buf); err != nil || !bytes.Equal(buf, data[:10]) {
		t.Fatalf("first range: %v", err)
	}
	got, err := readRange(t, r, 100<<10, 100<<10)
	if err != nil || !bytes.Equal(got, data[100<<10:]) {
		t.Fatalf("second range: %d bytes, %v", len(got), err)
	}
	if _, err := first.Read(buf); !errors.Is(err, errStaleRange) {
		t.Fatalf("stale range reader: %v", err)
	}
	gets := rec.gets()
	if len(gets) != 2 || gets[1].rng != "bytes=102400-204799" || gets[1].ifMatch != `"h1"` || gets[1].ifRange != `"h1"` {
		t.Fatalf("GETs %+v", gets)
	}
	if id.Ranges() != RangesHonoured {
		t.Fatalf("ranges %v", id.Ranges())
	}
	for _, rg := range [][2]int64{{-1, 10}, {0, 0}, {200 << 10, 1}, {100, 200 << 10}} {
		if _, err := r.Range(rg[0], rg[1]); !errors.Is(err, ErrBadRange) {
			t.Fatalf("range %v: %v, want ErrBadRange", rg, err)
		}
	}
	if len(rec.gets()) != 2 {
		t.Fatal("a refused range sent a request")
	}
}

// TestChanged: a file that changes after Identify (mid-download) is
// ErrChanged however the origin reacts: 412 to If-Match, the whole new
// file for If-Range, a 206 of the new version, or a new Last-Modified.
func TestChanged(t *testing.T) {
	v1, v2 := pseudoRandom(100<<10, 8), pseudoRandom(100<<10, 9)
	later := modTime.Add(time.Hour)
	tests := []struct {
		name string
		file *plainFile
		etag string // the new version's
	}{
		{"if-match honoured (412)", &plainFile{etag: `"a"`, ranges: true}, `"b"`},
		{"if-range honoured (200)", &plainFile{etag: `"a"`, ranges: true, strip: []string{"If-Match"}}, `"b"`},
		{"conditionals ignored (206)", &plainFile{etag: `"a"`, ranges: true, strip: []string{"If-Match", "If-Range"}}, `"b"`},
		{"etag now weak", &plainFile{etag: `"a"`, ranges: true, strip: []string{"If-Match", "If-Range"}}, `W/"a"`},
		{"last-modified, ranges ignored", &plainFile{modified: modTime}, ""},
		{"last-modified, conditionals ignored", &plainFile{modified: modTime, ranges: true, strip: []string{"If-Unmodified-Since", "If-Range"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.file.data = v1
			ts, _ := serve(t, tt.file)
			o, _ := newOrigin(t, Options{})
			id, err := o.Identify(t.Context(), ts.URL+"/f", nil)
			if err != nil {
				t.Fatal(err)
			}
			r := o.NewReader(t.Context(), id)
			defer r.Close()
			if got, err := readRange(t, r, 0, 10<<10); err != nil || !bytes.Equal(got, v1[:10<<10]) {
				t.Fatalf("first range: %v", err)
			}
			tt.file.set(v2, tt.etag, later)
			got, err := readRange(t, r, 50<<10, 10<<10)
			if tt.file.ranges || err != nil {
				wantErr(t, err, ErrChanged)
				return
			}
			// Ranges ignored: the first answer's stream still holds v1; a
			// new stream sees the change.
			if !bytes.Equal(got, v1[50<<10:60<<10]) {
				t.Fatal("stream changed bytes under the same answer")
			}
			_, err = readRange(t, r, 0, 10)
			wantErr(t, err, ErrChanged)
		})
	}
}

// TestChangedPeerDistOrigin: `redleader origin` serving a file that is
// rewritten mid-download answers the next range 412; a file removed, 404.
func TestChangedPeerDistOrigin(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	data := pseudoRandom(256<<10, 10)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	ts, _ := startOrigin(t, dir, origin.Options{HashWait: time.Minute}, true)
	o, _ := newOrigin(t, Options{})
	id, err := o.Identify(t.Context(), ts.URL+"/f", nil)
	if err != nil {
		t.Fatal(err)
	}
	if id.Info == nil {
		t.Fatal("no content information")
	}
	r := o.NewReader(t.Context(), id)
	defer r.Close()
	if got, err := readRange(t, r, 0, 128<<10); err != nil || !bytes.Equal(got, data[:128<<10]) {
		t.Fatalf("first range: %v", err)
	}
	if err := os.WriteFile(path, pseudoRandom(200<<10, 11), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = readRange(t, r, 128<<10, 128<<10)
	wantErr(t, err, ErrChanged)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	_, err = readRange(t, r, 128<<10, 128<<10)
	wantErr(t, err, ErrNotFound)
}

// lyingOrigin answers GETs for [0, size) with the bytes and headers a
// test asks for; HEAD reports size and ETag "x".
type lyingOrigin struct {
	size int64
	get  func(w http.ResponseWriter, r *http.Request)
}

func (l *lyingOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("ETag", `"x"`)
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Length", strconv.FormatInt(l.size, 10))
		w.Header().Set("Accept-Ranges", "bytes")
		return
	}
	l.get(w, r)
}

// TestLyingOrigins: too few or too many bytes for what the answer or the
// identity advertises, a wrong Content-Range, an encoded body, a stall.
func TestLyingOrigins(t *testing.T) {
	const size = 64 << 10
	data := pseudoRandom(size, 12)
	partial := func(first, last, total int64, body []byte, length bool) func(http.ResponseWriter, *http.Request) {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, last, total))
			if length {
				w.Header().Set("Content-Length", strconv.FormatInt(last-first+1, 10))
			}
			w.WriteHeader(http.StatusPartialContent)
			if !length {
				w.(http.Flusher).Flush() // no Content-Length: chunked
			}
			_, _ = w.Write(body)
			w.(http.Flusher).Flush()
		}
	}
	tests := []struct {
		name  string
		get   func(http.ResponseWriter, *http.Request)
		off   int64
		n     int64
		stall time.Duration
		want  error
	}{
		{"206 short of its Content-Length", partial(0, 9999, size, data[:5000], true), 0, 10000, 0, ErrTooShort},
		{"206 longer than its range (chunked)", partial(0, 9999, size, data[:10100], false), 0, 10000, 0, ErrTooLong},
		{"206 of another range", partial(10, 10009, size, data[10:10010], true), 0, 10000, 0, ErrBadResponse},
		{"206 of another length", partial(0, 9999, size+1, data[:10000], true), 0, 10000, 0, ErrChanged},
		{"200 longer than the identity (chunked)", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush() // no Content-Length: chunked
			_, _ = w.Write(append(append([]byte(nil), data...), 1, 2, 3))
		}, size - 100, 100, 0, ErrTooLong},
		{"200 shorter than the identity (chunked)", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			_, _ = w.Write(data[:size-10])
		}, size - 100, 100, 0, ErrTooShort},
		{"200 shorter, skipped over", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			_, _ = w.Write(data[:1000])
		}, 2000, 100, 0, ErrTooShort},
		{"gzip body", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			w.WriteHeader(http.StatusOK)
		}, 0, 100, 0, ErrBadResponse},
		{"stall", func(w http.ResponseWriter, r *http.Request) {
			partial(0, 9999, size, data[:100], true)(w, r)
			<-r.Context().Done()
		}, 0, 10000, 200 * time.Millisecond, ErrStalled},
		{"416 now", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
		}, 0, 100, 0, ErrChanged},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts, _ := serve(t, &lyingOrigin{size: size, get: tt.get})
			o, _ := newOrigin(t, Options{StallTimeout: tt.stall})
			id, err := o.Identify(t.Context(), ts.URL+"/f", nil)
			if err != nil {
				t.Fatal(err)
			}
			rc, err := o.Range(t.Context(), id, tt.off, tt.n)
			if err == nil {
				_, err = io.ReadAll(rc)
				rc.Close()
			}
			wantErr(t, err, tt.want)
			t.Log(err)
		})
	}
}

// TestCredentials: Authorization, Cookie or user info mark the identity
// Credentialed; the headers go with every request; controlled headers in
// them are dropped.
func TestCredentials(t *testing.T) {
	data := pseudoRandom(4096, 13)
	ts, rec := serve(t, &plainFile{data: data, etag: `"c"`, ranges: true})
	u, _ := url.Parse(ts.URL)
	tests := []struct {
		name   string
		url    string
		header http.Header
		want   bool
	}{
		{"none", ts.URL + "/f", http.Header{"X-Trace": {"1"}}, false},
		{"authorization", ts.URL + "/f", http.Header{"Authorization": {"Bearer t"}}, true},
		{"lower-case cookie", ts.URL + "/f", http.Header{"cookie": {"s=1"}}, true},
		{"user info", "http://me:pw@" + u.Host + "/f", nil, true},
		{"range and conditionals dropped", ts.URL + "/f", http.Header{"Range": {"bytes=1-2"}, "If-None-Match": {`"c"`}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, _ := newOrigin(t, Options{})
			before := len(rec.requests())
			id, err := o.Identify(t.Context(), tt.url, tt.header)
			if err != nil {
				t.Fatal(err)
			}
			if id.Credentialed != tt.want {
				t.Fatalf("Credentialed = %v, want %v", id.Credentialed, tt.want)
			}
			if strings.Contains(id.Redacted(), "pw") || strings.Contains(id.Key.String(), "pw") {
				t.Fatalf("user info in %q / %q", id.Redacted(), id.Key)
			}
			rc, err := o.Range(t.Context(), id, 10, 20)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, data[10:30]) {
				t.Fatalf("range: %v", err)
			}
			reqs := rec.requests()[before:]
			if len(reqs) != 2 || reqs[1].rng != "bytes=10-29" {
				t.Fatalf("requests %+v", reqs)
			}
			sent := cleanHeader(tt.header) // canonical keys
			for _, s := range reqs {
				if want := sent.Get("Authorization"); s.auth != want && tt.url == ts.URL+"/f" {
					t.Fatalf("Authorization %q, want %q", s.auth, want)
				}
				if want := sent.Get("Cookie"); s.cookie != want {
					t.Fatalf("Cookie %q, want %q", s.cookie, want)
				}
			}
		})
	}
}

// TestHEADRefused: an origin that refuses HEAD (a URL signed for GET) is
// probed with a one-byte range.
func TestHEADRefused(t *testing.T) {
	data := pseudoRandom(9000, 14)
	file := &plainFile{data: data, etag: `"s"`, ranges: true}
	ts, rec := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		file.ServeHTTP(w, r)
	}))
	o, _ := newOrigin(t, Options{})
	id, err := o.Identify(t.Context(), ts.URL+"/f?sig=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if id.Length != 9000 || id.ETag != `"s"` || id.Ranges() != RangesHonoured || !id.Key.Valid() {
		t.Fatalf("identity length %d etag %q ranges %v", id.Length, id.ETag, id.Ranges())
	}
	if gets := rec.gets(); len(gets) != 1 || gets[0].rng != "bytes=0-0" {
		t.Fatalf("GETs %+v", gets)
	}
}

// TestProxy: with Options.Proxy every request goes through that proxy.
func TestProxy(t *testing.T) {
	data := pseudoRandom(20000, 15)
	ts, rec := serve(t, &plainFile{data: data, etag: `"p"`, ranges: true})
	fwd := &http.Transport{}
	t.Cleanup(fwd.CloseIdleConnections)
	var (
		mu      sync.Mutex
		proxied []string
	)
	proxy, _ := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !r.URL.IsAbs() {
			http.Error(w, "not a proxy request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		proxied = append(proxied, r.Method+" "+r.URL.String())
		mu.Unlock()
		out := r.Clone(r.Context())
		out.RequestURI = ""
		resp, err := fwd.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	o, _ := newOrigin(t, Options{Proxy: proxy.URL})
	id, err := o.Identify(t.Context(), ts.URL+"/f", nil)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := o.Range(t.Context(), id, 0, 20000)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("range: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"HEAD " + ts.URL + "/f", "GET " + ts.URL + "/f"}; strings.Join(proxied, ",") != strings.Join(want, ",") ||
		len(rec.requests()) != 2 {
		t.Fatalf("proxied %q (origin saw %d), want %q", proxied, len(rec.requests()), want)
	}
}

// TestProxySelection: the environment's proxies and NO_PROXY, an explicit
// proxy for everything, "direct", bad proxy URLs. No request is sent.
func TestProxySelection(t *testing.T) {
	t.Setenv("HTTP_PROXY", "http://proxy.example:3128")
	t.Setenv("HTTPS_PROXY", "http://sproxy.example:3129")
	t.Setenv("NO_PROXY", "skip.example")
	t.Setenv("REQUEST_METHOD", "")
	pick := func(o *Origin, target string) string {
		t.Helper()
		if o.proxy == nil {
			return "none"
		}
		req, err := http.NewRequest(http.MethodGet, target, nil)
		if err != nil {
			t.Fatal(err)
		}
		u, err := o.proxy(req)
		if err != nil {
			t.Fatal(err)
		}
		if u == nil {
			return "none"
		}
		return u.String()
	}
	env, _ := newOrigin(t, Options{})
	explicit, _ := newOrigin(t, Options{Proxy: "http://explicit.example:8080"})
	direct, _ := newOrigin(t, Options{Proxy: ProxyDirect})
	for _, tt := range []struct {
		o            *Origin
		target, want string
	}{
		{env, "http://origin.example/f", "http://proxy.example:3128"},
		{env, "https://origin.example/f", "http://sproxy.example:3129"},
		{env, "http://skip.example/f", "none"},
		{env, "http://127.0.0.1:8000/f", "none"},
		{explicit, "http://skip.example/f", "http://explicit.example:8080"},
		{explicit, "https://origin.example/f", "http://explicit.example:8080"},
		{direct, "http://origin.example/f", "none"},
	} {
		if got := pick(tt.o, tt.target); got != tt.want {
			t.Errorf("proxy for %s = %s, want %s", tt.target, got, tt.want)
		}
	}
	for _, bad := range []string{"proxy.example:3128", "ftp://proxy.example", "http://", "http://u:hunter2@[::1"} {
		_, err := NewOrigin(Options{Proxy: bad})
		wantErr(t, err, ErrProxyURL)
		if strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("error %q shows the proxy password", err)
		}
	}
}

// TestCheckAddr: an Origin whose CheckAddr refuses loopback never
// connects to a loopback origin.
func TestCheckAddr(t *testing.T) {
	ts, rec := serve(t, &plainFile{data: []byte("x")})
	o, _ := newOrigin(t, Options{CheckAddr: func(a netip.Addr) error { return CheckDemandAddr(a, nil) }})
	_, err := o.Identify(t.Context(), ts.URL+"/f", nil)
	wantErr(t, err, ErrDemandAddr)
	if len(rec.requests()) != 0 {
		t.Fatal("the origin was reached")
	}
}

// TestIdentifyDigests: digest headers become the anchor; disagreeing ones
// are an error; a content-coded answer's digests are not the content's.
func TestIdentifyDigests(t *testing.T) {
	data := pseudoRandom(3000, 16)
	s256 := sha256.Sum256(data)
	b64 := base64.StdEncoding.EncodeToString
	other := sha256.Sum256([]byte("other"))
	tests := []struct {
		name       string
		headers    http.Header
		wantAlgo   Algo
		wantHeader string
		wantErr    error
	}{
		{"repr-digest", http.Header{"Repr-Digest": {"sha-512=:" + b64(make([]byte, 64)) + ":, sha-256=:" + b64(s256[:]) + ":"}}, SHA256, "Repr-Digest", nil},
		{"digest", http.Header{"Digest": {"MD5=" + b64(make([]byte, 16)) + ",SHA-256=" + b64(s256[:])}}, SHA256, "Digest", nil},
		{"content-md5", http.Header{"Content-Md5": {b64(make([]byte, 16))}}, MD5, "Content-MD5", nil},
		{"malformed repr-digest ignored", http.Header{"Repr-Digest": {"sha-256=" + b64(s256[:])}}, "", "", nil},
		{"conflict", http.Header{"Repr-Digest": {"sha-256=:" + b64(s256[:]) + ":"}, "Digest": {"sha-256=" + b64(other[:])}}, "", "", ErrDigestConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts, _ := serve(t, &plainFile{data: data, etag: `"d"`, headers: tt.headers})
			o, _ := newOrigin(t, Options{})
			id, err := o.Identify(t.Context(), ts.URL+"/f", nil)
			if tt.wantErr != nil {
				wantErr(t, err, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantAlgo == "" {
				if id.Anchor != nil {
					t.Fatalf("anchor %v, want none", id.Anchor)
				}
				return
			}
			if id.Anchor == nil || id.Anchor.Algo != tt.wantAlgo || id.Anchor.Header != tt.wantHeader {
				t.Fatalf("anchor %v, want %s from %s", id.Anchor, tt.wantAlgo, tt.wantHeader)
			}
			if tt.wantAlgo == SHA256 {
				if err := id.Anchor.Check(s256[:]); err != nil {
					t.Fatal(err)
				}
				wantErr(t, id.Anchor.Check(other[:]), ErrDigestMismatch)
			}
		})
	}
}

// TestCancel: a cancelled context ends a read with the context's error,
// not one of the origin's.
func TestCancel(t *testing.T) {
	data := pseudoRandom(10000, 17)
	ts, _ := serve(t, &lyingOrigin{size: 10000, get: func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Range", "bytes 0-9999/10000")
		w.WriteHeader(http.StatusPartialContent)
		_, _ = w.Write(data[:10])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}})
	o, _ := newOrigin(t, Options{})
	id, err := o.Identify(t.Context(), ts.URL+"/f", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	rc, err := o.Range(ctx, id, 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = io.ReadAll(rc)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrStalled) || errors.Is(err, ErrTooShort) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
}
