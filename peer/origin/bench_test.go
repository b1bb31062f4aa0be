package origin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// benchOrigin serves a hashed 100 MiB file (4 segments) as "/f" and returns
// a function doing one PeerDist GET with the extra headers, checking status.
func benchOrigin(b *testing.B, status int, extra ...string) func() {
	b.Helper()
	dir := b.TempDir()
	writeFile(b, dir, "f", pseudoRandom(100<<20, 42))
	s, err := New(Options{Dir: dir, Secret: testSecret, HashWait: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if err := s.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(s)
	b.Cleanup(ts.Close)
	c := ts.Client()
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/f", nil)
	req.Header.Set("Accept-Encoding", "peerdist")
	req.Header.Set(HeaderPeerDist, "Version=1.1")
	for i := 0; i+1 < len(extra); i += 2 {
		req.Header.Set(extra[i], extra[i+1])
	}
	get := func() {
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != status || resp.Header.Get("Content-Encoding") != EncodingPeerDist {
			b.Fatalf("status %d, Content-Encoding %q", resp.StatusCode, resp.Header.Get("Content-Encoding"))
		}
	}
	get() // waits for the hashes
	return get
}

// BenchmarkServeContentInfo: whole-file content information (about 51 KiB)
// over loopback HTTP.
func BenchmarkServeContentInfo(b *testing.B) {
	get := benchOrigin(b, http.StatusOK)
	for b.Loop() {
		get()
	}
}

// BenchmarkServeRangeContentInfo: content information of a one-block range,
// sliced and serialized per request.
func BenchmarkServeRangeContentInfo(b *testing.B) {
	get := benchOrigin(b, http.StatusPartialContent, "Range", "bytes=50000000-50065535")
	for b.Loop() {
		get()
	}
}
