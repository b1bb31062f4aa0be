package origin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/redleader-p2p/redleader/peer/content"
)

// testSecret is the MS-PCCRC §3 example secret, as a Windows passphrase.
var testSecret = content.PassphraseSecret("no more secrets")

// exampleSize is the identity length in the MS-PCCRTP §4 example
// ("ContentLength=184946"); its v1 content information is 198 bytes, the
// example's Content-Length.
const exampleSize = 184946

func pseudoRandom(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func writeFile(t testing.TB, dir, name string, data []byte) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// startOrigin serves dir on 127.0.0.1 and returns the server and a client
// that sends exactly the headers a request carries (no automatic gzip).
// Unless start is false, hashing starts.
func startOrigin(t *testing.T, dir string, opts Options, start bool) (*Server, *httptest.Server, *http.Client) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
	opts.Dir = dir
	if opts.Secret == (content.ServerSecret{}) {
		opts.Secret = testSecret
	}
	s, err := New(opts)
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
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	c := ts.Client()
	c.Transport.(*http.Transport).DisableCompression = true
	return s, ts, c
}

// request builds a request from header lines ("Name: value"; an optional
// first "GET /path HTTP/1.1" line sets method and path).
func request(t *testing.T, base, path string, lines []string) *http.Request {
	t.Helper()
	method := http.MethodGet
	if len(lines) > 0 && !strings.Contains(strings.SplitN(lines[0], " ", 2)[0], ":") {
		f := strings.Fields(lines[0])
		method, path, lines = f[0], f[1], lines[1:]
	}
	req, err := http.NewRequest(method, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		name, val, ok := strings.Cut(l, ": ")
		if !ok {
			t.Fatalf("bad header line %q", l)
		}
		if strings.EqualFold(name, "Host") {
			req.Host = val
			continue
		}
		req.Header.Add(name, val)
	}
	return req
}

func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// checkCI parses a PeerDist body and checks it describes [start, end) of
// data: same content information as generated from data, and every listed
// block hash matches the data.
func checkCI(t *testing.T, body, data []byte, start, end int64) *content.Info {
	t.Helper()
	info, err := content.Parse(body)
	if err != nil {
		t.Fatalf("parse content information: %v", err)
	}
	if info.Version != content.V1 || info.HashAlgo != content.SHA256 {
		t.Fatalf("content information %v %v, want 1.0 SHA-256", info.Version, info.HashAlgo)
	}
	if s, e := info.Range(); s != uint64(start) || e != uint64(end) {
		t.Fatalf("range [%d, %d), want [%d, %d)", s, e, start, end)
	}
	full, err := content.Generate(context.Background(), bytes.NewReader(data), testSecret)
	if err != nil {
		t.Fatal(err)
	}
	want, err := full.Slice(uint64(start), uint64(end))
	if err != nil {
		t.Fatal(err)
	}
	if !info.Equal(want) {
		t.Fatalf("content information differs from the one generated from the file")
	}
	for i := range info.Segments {
		seg := &info.Segments[i]
		for k := range seg.BlockHashes {
			off := seg.BlockOffset(k)
			if err := content.VerifyBlock(seg, k, data[off:off+uint64(seg.BlockLen(k))]); err != nil {
				t.Fatal(err)
			}
		}
	}
	return info
}

type pccrtpExamples struct {
	IPXE         map[string]json.RawMessage `json:"ipxe"`
	SpecExamples []struct {
		ID    string   `json:"id"`
		Lines []string `json:"lines"`
	} `json:"spec_examples"`
}

func loadExamples(tb testing.TB) (ipxe map[string][]string, spec map[string][]string) {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "pccrtp-examples.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var ex pccrtpExamples
	if err := json.Unmarshal(b, &ex); err != nil {
		tb.Fatal(err)
	}
	ipxe, spec = map[string][]string{}, map[string][]string{}
	for k, raw := range ex.IPXE {
		var lines []string
		if json.Unmarshal(raw, &lines) == nil {
			ipxe[k] = lines
		}
	}
	for _, e := range ex.SpecExamples {
		spec[e.ID] = e.Lines
	}
	return ipxe, spec
}

// TestPCCRTPExamples replays the request headers of pccrtp-examples.json.
func TestPCCRTPExamples(t *testing.T) {
	ipxe, spec := loadExamples(t)
	dir := t.TempDir()
	data := pseudoRandom(exampleSize, 1)
	small := pseudoRandom(102400, 2) // spec §3.2.5.1's ContentLength
	writeFile(t, dir, "index.html", data)
	writeFile(t, dir, "welcome.png", data)
	writeFile(t, dir, "small.bin", small)
	_, ts, c := startOrigin(t, dir, Options{HashWait: time.Minute}, true)

	specResp := spec["spec-4-response-peerdist"]
	tests := []struct {
		name        string
		path        string // used when lines have no request line
		lines       []string
		data        []byte
		wantVersion string // "" = plain answer
		wantHeaders []string
	}{
		{name: "spec §4 request", lines: spec["spec-4-request"], data: data, wantVersion: "1.1", wantHeaders: specResp},
		{name: "spec §4 hash request (no peerdist coding)", lines: spec["spec-4-hash-request"], data: data},
		{name: "spec §4 hash request with peerdist coding", data: data, wantVersion: "1.1",
			lines: append(append([]string{}, spec["spec-4-hash-request"]...), "Accept-Encoding: peerdist")},
		{name: "ipxe v1 only", path: "/index.html", lines: ipxe["request_v1_ci_only_per_pccrc_test_comment"], data: data, wantVersion: "1.0"},
		{name: "ipxe v1 only, spec §3.2.5.1 length", path: "/small.bin", lines: ipxe["request_v1_ci_only_per_pccrc_test_comment"], data: small, wantVersion: "1.0",
			wantHeaders: spec["spec-3.2.5.1-response-headers"]},
		{name: "ipxe v2 only (not generated)", path: "/index.html", lines: ipxe["request_v2_ci_only_per_pccrc_test_comment"], data: data},
		{name: "ipxe normal without Accept-Encoding", path: "/index.html", lines: ipxe["request_normal"], data: data},
		{name: "ipxe normal", path: "/index.html", lines: append(append([]string{}, ipxe["request_normal"]...), "Accept-Encoding: identity, peerdist"),
			data: data, wantVersion: "1.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.lines) == 0 {
				t.Fatal("example missing from testdata")
			}
			resp, body := do(t, c, request(t, ts.URL, tt.path, tt.lines))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if resp.Header.Get("ETag") == "" || resp.Header.Get("Last-Modified") == "" {
				t.Fatalf("missing ETag or Last-Modified: %v", resp.Header)
			}
			if tt.wantVersion == "" {
				if ce := resp.Header.Get("Content-Encoding"); ce != "" {
					t.Fatalf("Content-Encoding %q, want none", ce)
				}
				if !bytes.Equal(body, tt.data) {
					t.Fatalf("plain body differs from the file (%d bytes)", len(body))
				}
				return
			}
			if ce := resp.Header.Get("Content-Encoding"); !strings.EqualFold(ce, "peerdist") {
				t.Fatalf("Content-Encoding %q, want peerdist", ce)
			}
			wantPD := fmt.Sprintf("Version=%s, ContentLength=%d", tt.wantVersion, len(tt.data))
			if pd := resp.Header.Get(HeaderPeerDist); pd != wantPD {
				t.Fatalf("%s %q, want %q", HeaderPeerDist, pd, wantPD)
			}
			if resp.ContentLength != int64(len(body)) {
				t.Fatalf("Content-Length %d, body %d bytes", resp.ContentLength, len(body))
			}
			checkCI(t, body, tt.data, 0, int64(len(tt.data)))
			// Every header of the spec's answer is there, with the same value
			// where it does not depend on the server or the clock.
			for _, l := range tt.wantHeaders[min(1, len(tt.wantHeaders)):] {
				name, val, _ := strings.Cut(l, ": ")
				if strings.HasPrefix(l, "HTTP/") || name == "Server" {
					continue
				}
				got := resp.Header.Get(name)
				if got == "" {
					t.Errorf("missing header %s", name)
				}
				switch name {
				case "Content-Encoding":
					if !strings.EqualFold(got, val) {
						t.Errorf("%s = %q, want %q", name, got, val)
					}
				case "Content-Length", "Accept-Ranges", HeaderPeerDist:
					if got != val {
						t.Errorf("%s = %q, want %q", name, got, val)
					}
				case "Content-Type":
					if !strings.HasPrefix(got, val) {
						t.Errorf("%s = %q, want %q", name, got, val)
					}
				}
			}
		})
	}

	t.Run("ipxe missing data range fallback", func(t *testing.T) {
		lines := append(append([]string{}, ipxe["request_missing_data_range_fallback"]...),
			"Range: bytes=65536-131071", "Accept-Encoding: peerdist")
		resp, body := do(t, c, request(t, ts.URL, "/index.html", lines))
		if resp.StatusCode != http.StatusPartialContent || resp.Header.Get("Content-Encoding") != "" {
			t.Fatalf("status %d, Content-Encoding %q; want 206 plain", resp.StatusCode, resp.Header.Get("Content-Encoding"))
		}
		if !bytes.Equal(body, data[65536:131072]) {
			t.Fatal("range body differs from the file")
		}
	})
}

func TestPlainHTTP(t *testing.T) {
	dir := t.TempDir()
	data := pseudoRandom(200000, 3)
	writeFile(t, dir, "sub/file.bin", data)
	writeFile(t, dir, "page.html", []byte("<html>hi</html>"))
	writeFile(t, dir, "empty", nil)
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(dir, "sub", "file.bin"), mtime, mtime); err != nil {
		t.Fatal(err)
	}
	_, ts, c := startOrigin(t, dir, Options{HashWait: time.Minute}, true)
	resp, _ := do(t, c, request(t, ts.URL, "/sub/file.bin", nil))
	etag := resp.Header.Get("ETag")
	if !strings.HasPrefix(etag, `"`) || !strings.HasSuffix(etag, `"`) || len(etag) < 3 {
		t.Fatalf("ETag %q is not a strong entity tag", etag)
	}
	if lm := resp.Header.Get("Last-Modified"); lm != mtime.Format(http.TimeFormat) {
		t.Fatalf("Last-Modified %q, want %q", lm, mtime.Format(http.TimeFormat))
	}
	pd := []string{"Accept-Encoding: peerdist", "X-P2P-PeerDist: Version=1.1"}
	with := func(a []string, b ...string) []string { return append(append([]string{}, a...), b...) }

	tests := []struct {
		name     string
		method   string
		path     string
		lines    []string
		status   int
		body     []byte // nil: not checked
		encoding string
		header   map[string]string
	}{
		{name: "GET", path: "/sub/file.bin", status: 200, body: data,
			header: map[string]string{"Accept-Ranges": "bytes", "ETag": etag, "Content-Length": "200000"}},
		{name: "GET html", path: "/page.html", status: 200, body: []byte("<html>hi</html>"),
			header: map[string]string{"Content-Type": "text/html; charset=utf-8"}},
		{name: "HEAD", method: "HEAD", path: "/sub/file.bin", status: 200, body: []byte{},
			header: map[string]string{"Content-Length": "200000", "ETag": etag}},
		{name: "HEAD peerdist is plain", method: "HEAD", path: "/sub/file.bin", lines: pd, status: 200, body: []byte{},
			header: map[string]string{"Content-Length": "200000"}},
		{name: "range", path: "/sub/file.bin", lines: []string{"Range: bytes=10-19"}, status: 206, body: data[10:20],
			header: map[string]string{"Content-Range": "bytes 10-19/200000"}},
		{name: "suffix range", path: "/sub/file.bin", lines: []string{"Range: bytes=-5"}, status: 206, body: data[len(data)-5:]},
		{name: "unsatisfiable range", path: "/sub/file.bin", lines: []string{"Range: bytes=300000-"}, status: 416},
		{name: "If-None-Match", path: "/sub/file.bin", lines: []string{"If-None-Match: " + etag}, status: 304, body: []byte{}},
		{name: "If-None-Match other", path: "/sub/file.bin", lines: []string{`If-None-Match: "nope"`}, status: 200, body: data},
		{name: "If-Modified-Since", path: "/sub/file.bin", lines: []string{"If-Modified-Since: " + mtime.Format(http.TimeFormat)}, status: 304},
		{name: "If-Modified-Since older", path: "/sub/file.bin",
			lines: []string{"If-Modified-Since: " + mtime.Add(-time.Hour).Format(http.TimeFormat)}, status: 200, body: data},
		{name: "If-Range stale", path: "/sub/file.bin", lines: []string{"Range: bytes=0-9", `If-Range: "old"`}, status: 200, body: data},
		{name: "If-Range current", path: "/sub/file.bin", lines: []string{"Range: bytes=0-9", "If-Range: " + etag}, status: 206, body: data[:10]},
		{name: "POST", method: "POST", path: "/sub/file.bin", status: 405},
		{name: "missing", path: "/nope", status: 404},
		{name: "root directory", path: "/", status: 404},
		{name: "directory", path: "/sub/", status: 404},
		{name: "peerdist If-None-Match", path: "/sub/file.bin", lines: with(pd, "If-None-Match: "+etag), status: 304, body: []byte{}},
		{name: "peerdist If-Match wrong", path: "/sub/file.bin", lines: with(pd, `If-Match: "x"`), status: 412},
		{name: "peerdist If-Modified-Since", path: "/sub/file.bin", lines: with(pd, "If-Modified-Since: "+mtime.Format(http.TimeFormat)), status: 304},
		{name: "peerdist several ranges", path: "/sub/file.bin", lines: with(pd, "Range: bytes=0-1,5-6"), status: 206},
		{name: "peerdist unsatisfiable range", path: "/sub/file.bin", lines: with(pd, "Range: bytes=999999-"), status: 416},
		{name: "peerdist If-Range stale", path: "/sub/file.bin", lines: with(pd, "Range: bytes=0-9", `If-Range: "old"`), status: 200, encoding: "peerdist",
			header: map[string]string{HeaderPeerDist: "Version=1.1, ContentLength=200000"}},
		{name: "peerdist MissingDataRequest", path: "/sub/file.bin",
			lines: []string{"Accept-Encoding: peerdist", "X-P2P-PeerDist: Version=1.1, MissingDataRequest=true"}, status: 200, body: data},
		{name: "peerdist q=0", path: "/sub/file.bin", lines: []string{"Accept-Encoding: peerdist;q=0", "X-P2P-PeerDist: Version=1.1"}, status: 200, body: data},
		{name: "peerdist without params", path: "/sub/file.bin", lines: []string{"Accept-Encoding: peerdist"}, status: 200, body: data},
		{name: "peerdist version 0.9", path: "/sub/file.bin", lines: []string{"Accept-Encoding: peerdist", "X-P2P-PeerDist: Version=0.9"}, status: 200, body: data},
		{name: "peerdist version 1.23", path: "/sub/file.bin", lines: []string{"Accept-Encoding: PeerDist", "X-P2P-PeerDist: Version=1.23"},
			status: 200, encoding: "peerdist", header: map[string]string{HeaderPeerDist: "Version=1.1, ContentLength=200000"}},
		{name: "peerdist Min 0.5", path: "/sub/file.bin", lines: with(pd, "X-P2P-PeerDistEx: MinContentInformation=0.5, MaxContentInformation=1.0"), status: 200, body: data},
		{name: "peerdist Max 3.0", path: "/sub/file.bin", lines: with(pd, "X-P2P-PeerDistEx: MinContentInformation=1.0, MaxContentInformation=3.0"), status: 200, body: data},
		{name: "peerdist Min > Max", path: "/sub/file.bin", lines: with(pd, "X-P2P-PeerDistEx: MinContentInformation=2.0, MaxContentInformation=1.0"), status: 200, body: data},
		{name: "peerdist Min only", path: "/sub/file.bin", lines: with(pd, "X-P2P-PeerDistEx: MinContentInformation=1.0"), status: 200, body: data},
		{name: "peerdist Ex without Min/Max", path: "/sub/file.bin", lines: with(pd, "X-P2P-PeerDistEx: HashRequest=true"), status: 200, encoding: "peerdist"},
		{name: "peerdist empty file", path: "/empty", lines: pd, status: 200, body: []byte{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := request(t, ts.URL, tt.path, tt.lines)
			if tt.method != "" {
				req.Method = tt.method
			}
			resp, body := do(t, c, req)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.body != nil && !bytes.Equal(body, tt.body) {
				t.Fatalf("body %d bytes, want %d", len(body), len(tt.body))
			}
			if ce := resp.Header.Get("Content-Encoding"); !strings.EqualFold(ce, tt.encoding) {
				t.Fatalf("Content-Encoding %q, want %q", ce, tt.encoding)
			}
			if tt.encoding != "" {
				checkCI(t, body, data, 0, int64(len(data)))
			}
			for k, v := range tt.header {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestPeerDistRange(t *testing.T) {
	dir := t.TempDir()
	small := pseudoRandom(exampleSize, 4)
	big := pseudoRandom(content.SegmentSize+3*content.BlockSize+5, 5)
	writeFile(t, dir, "small", small)
	writeFile(t, dir, "big", big)
	_, ts, c := startOrigin(t, dir, Options{HashWait: time.Minute}, true)
	const seg = content.SegmentSize
	tests := []struct {
		name       string
		path       string
		data       []byte
		rng        string
		start, end int64
		segments   int
	}{
		{name: "inside one segment", path: "/small", data: small, rng: "bytes=70000-140000", start: 70000, end: 140001, segments: 1},
		{name: "open end", path: "/small", data: small, rng: "bytes=100-", start: 100, end: exampleSize, segments: 1},
		{name: "suffix", path: "/small", data: small, rng: "bytes=-10", start: exampleSize - 10, end: exampleSize, segments: 1},
		{name: "end past size", path: "/small", data: small, rng: "bytes=0-999999", start: 0, end: exampleSize, segments: 1},
		{name: "across segments", path: "/big", data: big, rng: fmt.Sprintf("bytes=%d-%d", seg-10, seg+70000), start: seg - 10, end: seg + 70001, segments: 2},
		{name: "second segment", path: "/big", data: big, rng: fmt.Sprintf("bytes=%d-%d", seg+1, seg+2), start: seg + 1, end: seg + 3, segments: 1},
		{name: "first segment", path: "/big", data: big, rng: "bytes=0-65535", start: 0, end: 65536, segments: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := request(t, ts.URL, tt.path, []string{"Accept-Encoding: peerdist", "X-P2P-PeerDist: Version=1.1",
				"X-P2P-PeerDistEx: MinContentInformation=1.0, MaxContentInformation=2.0", "Range: " + tt.rng})
			resp, body := do(t, c, req)
			if resp.StatusCode != http.StatusPartialContent || !strings.EqualFold(resp.Header.Get("Content-Encoding"), "peerdist") {
				t.Fatalf("status %d, Content-Encoding %q", resp.StatusCode, resp.Header.Get("Content-Encoding"))
			}
			wantCR := fmt.Sprintf("bytes %d-%d/%d", tt.start, tt.end-1, len(tt.data))
			if cr := resp.Header.Get("Content-Range"); cr != wantCR {
				t.Fatalf("Content-Range %q, want %q", cr, wantCR)
			}
			wantPD := fmt.Sprintf("Version=1.1, ContentLength=%d", tt.end-tt.start)
			if pd := resp.Header.Get(HeaderPeerDist); pd != wantPD {
				t.Fatalf("%s %q, want %q", HeaderPeerDist, pd, wantPD)
			}
			info := checkCI(t, body, tt.data, tt.start, tt.end)
			if len(info.Segments) != tt.segments {
				t.Fatalf("%d segments, want %d", len(info.Segments), tt.segments)
			}
		})
	}
	t.Run("whole big file", func(t *testing.T) {
		resp, body := do(t, c, request(t, ts.URL, "/big", []string{"Accept-Encoding: peerdist", "X-P2P-PeerDist: Version=1.0"}))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if info := checkCI(t, body, big, 0, int64(len(big))); len(info.Segments) != 2 {
			t.Fatalf("%d segments, want 2", len(info.Segments))
		}
	})
}

// peerDistGet asks for content information and returns the response, its
// body, and whether it was PeerDist-encoded.
func peerDistGet(t *testing.T, c *http.Client, base, path string) (*http.Response, []byte, bool) {
	t.Helper()
	resp, body := do(t, c, request(t, base, path, []string{"Accept-Encoding: peerdist", "X-P2P-PeerDist: Version=1.1"}))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	return resp, body, strings.EqualFold(resp.Header.Get("Content-Encoding"), "peerdist")
}

func TestRehashOnChange(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f.bin")
	a, b, c3 := pseudoRandom(150000, 6), pseudoRandom(150000, 7), pseudoRandom(150000, 8)
	writeFile(t, dir, "f.bin", a)
	_, ts, c := startOrigin(t, dir, Options{HashWait: time.Minute}, true)
	get := func(want []byte) string {
		t.Helper()
		resp, body, pd := peerDistGet(t, c, ts.URL, "/f.bin")
		if !pd {
			t.Fatal("not PeerDist-encoded")
		}
		checkCI(t, body, want, 0, int64(len(want)))
		_, plain := do(t, c, request(t, ts.URL, "/f.bin", nil))
		if !bytes.Equal(plain, want) {
			t.Fatal("plain body is not the current file")
		}
		return resp.Header.Get("ETag")
	}
	etagA := get(a)

	// Rewritten in place (same size and inode), with a new mtime.
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour).Truncate(time.Second)
	if err := os.Chtimes(p, later, later); err != nil {
		t.Fatal(err)
	}
	etagB := get(b)
	if etagB == etagA {
		t.Fatalf("ETag unchanged after rewrite: %s", etagB)
	}
	if runtime.GOOS == "windows" {
		return // no inode in the version there
	}
	// Replaced by rename with the same size and mtime: only the inode differs.
	tmp := filepath.Join(t.TempDir(), "new")
	if err := os.WriteFile(tmp, c3, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(tmp, later, later); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	if etagC := get(c3); etagC == etagB {
		t.Fatalf("ETag unchanged after replacement: %s", etagC)
	}
}

// TestWaitForHashes: a PeerDist request for a file whose hashing has not
// finished waits for it, then answers with content information.
func TestWaitForHashes(t *testing.T) {
	dir := t.TempDir()
	data := pseudoRandom(300000, 9)
	writeFile(t, dir, "late.bin", data)
	s, ts, c := startOrigin(t, dir, Options{HashWait: time.Minute, Workers: 1}, false)
	// Not started: no worker can hash until Start.
	type result struct {
		body []byte
		pd   bool
	}
	done := make(chan result, 1)
	req := request(t, ts.URL, "/late.bin", []string{"Accept-Encoding: peerdist", "X-P2P-PeerDist: Version=1.1"})
	go func() {
		resp, err := c.Do(req)
		if err != nil {
			done <- result{}
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		done <- result{body, strings.EqualFold(resp.Header.Get("Content-Encoding"), "peerdist")}
	}()
	for { // until the request has queued the file
		s.mu.Lock()
		e := s.files["late.bin"]
		s.mu.Unlock()
		if e != nil {
			select {
			case <-e.done:
				t.Fatal("hashed before any worker ran")
			default:
			}
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if !r.pd {
		t.Fatal("request answered without content information")
	}
	checkCI(t, r.body, data, 0, int64(len(data)))
}

// TestNoWaitFallback: with hashes not ready in time, the plain file is sent.
func TestNoWaitFallback(t *testing.T) {
	for _, wait := range []time.Duration{-1, time.Millisecond} {
		t.Run(wait.String(), func(t *testing.T) {
			dir := t.TempDir()
			data := pseudoRandom(100000, 10)
			writeFile(t, dir, "f", data)
			_, ts, c := startOrigin(t, dir, Options{HashWait: wait}, false)
			_, body, pd := peerDistGet(t, c, ts.URL, "/f")
			if pd || !bytes.Equal(body, data) {
				t.Fatalf("PeerDist %v, body %d bytes; want the plain file", pd, len(body))
			}
		})
	}
}

// rawGet sends a request line as is (the Go client would clean it).
func rawGet(t *testing.T, addr, target string) (int, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n", target)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func TestTraversalRefused(t *testing.T) {
	parent := t.TempDir()
	www := filepath.Join(parent, "www")
	writeFile(t, parent, "secret.txt", []byte("TOPSECRET"))
	writeFile(t, www, "index.html", []byte("welcome"))
	writeFile(t, www, "a/b.txt", []byte("bee"))
	links := map[string]string{
		"escape": filepath.Join("..", "secret.txt"),
		"abs":    filepath.Join(parent, "secret.txt"),
		"updir":  "..",
		"inner":  "index.html",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(www, name)); err != nil {
			t.Skipf("no symbolic links here: %v", err)
		}
	}
	_, ts, _ := startOrigin(t, www, Options{HashWait: -1}, true)
	addr := ts.Listener.Addr().String()
	refused := []string{
		"/../secret.txt",
		"/%2e%2e/secret.txt",
		"/%2E%2E%2Fsecret.txt",
		"/a/../../secret.txt",
		"/a/..%2f..%2fsecret.txt",
		"/..%5csecret.txt",
		"/a%5c..%5c..%5csecret.txt",
		"//../secret.txt",
		"/./../secret.txt",
		"/escape",
		"/abs",
		"/updir/secret.txt",
		"/updir/www/index.html",
		"/index.html%00",
		"http://origin/../secret.txt",
	}
	for _, target := range refused {
		t.Run(target, func(t *testing.T) {
			status, body := rawGet(t, addr, target)
			if status < 400 || status >= 500 {
				t.Fatalf("status %d, want a 4xx refusal", status)
			}
			if bytes.Contains(body, []byte("TOPSECRET")) {
				t.Fatal("served a file outside the directory")
			}
		})
	}
	served := map[string]string{"/index.html": "welcome", "/inner": "welcome", "/a/./b.txt": "bee", "/a//b.txt": "bee"}
	for target, want := range served {
		t.Run(target, func(t *testing.T) {
			status, body := rawGet(t, addr, target)
			if status != http.StatusOK || string(body) != want {
				t.Fatalf("status %d body %q, want 200 %q", status, body, want)
			}
		})
	}
}

func TestScanHashesAtStart(t *testing.T) {
	dir := t.TempDir()
	for i := range 5 {
		writeFile(t, dir, "d/f"+strconv.Itoa(i), pseudoRandom(1000*(i+1), uint64(i)))
	}
	s, _, _ := startOrigin(t, dir, Options{HashWait: -1, Rescan: time.Hour}, true)
	if err := s.Start(t.Context()); err == nil {
		t.Fatal("second Start succeeded")
	}
	for i := range 5 { // every file gets hashed without being requested
		for {
			s.mu.Lock()
			e := s.files["d/f"+strconv.Itoa(i)]
			s.mu.Unlock()
			if e != nil {
				<-e.done
				if e.err != nil {
					t.Fatal(e.err)
				}
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(Options{}); err != ErrNoDir {
		t.Fatalf("New without Dir: %v", err)
	}
	if _, err := New(Options{Dir: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Fatal("New with a missing Dir succeeded")
	}
	s, err := New(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != ErrClosed {
		t.Fatalf("Start after Close: %v", err)
	}
}
