package peer_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/internal/wait"
	"github.com/redleader-p2p/redleader/peer"
	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/peertest"
)

// gateOrigin serves data at /file (Range, ETag); while held, an answer
// stops after holdAt bytes until released or the client leaves.
type gateOrigin struct {
	data   []byte
	holdAt int64

	mu      sync.Mutex
	gate    chan struct{} // nil: not held
	headers []http.Header
	ranges  []string
}

func newGateOrigin(data []byte, holdAt int64) *gateOrigin {
	return &gateOrigin{data: data, holdAt: holdAt, gate: make(chan struct{})}
}

func (o *gateOrigin) release() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.gate != nil {
		close(o.gate)
		o.gate = nil
	}
}

func (o *gateOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	gate := o.gate
	o.headers = append(o.headers, r.Header.Clone())
	o.ranges = append(o.ranges, r.Header.Get("Range"))
	o.mu.Unlock()
	if r.URL.Path != "/file" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("ETag", `"v1"`)
	var body io.Writer = w
	if gate != nil {
		body = &holdWriter{w: w, left: o.holdAt, gate: gate, done: r.Context().Done()}
	}
	http.ServeContent(&bodyWriter{ResponseWriter: w, body: body}, r, "", time.Time{}, bytes.NewReader(o.data))
}

type bodyWriter struct {
	http.ResponseWriter
	body io.Writer
}

func (b *bodyWriter) Write(p []byte) (int, error) { return b.body.Write(p) }

// holdWriter writes left bytes, then waits for gate (or done).
type holdWriter struct {
	w          io.Writer
	left       int64
	gate, done <-chan struct{}
}

func (h *holdWriter) Write(p []byte) (int, error) {
	if h.left >= 0 && int64(len(p)) > h.left {
		n, _ := h.w.Write(p[:h.left])
		h.w.(http.Flusher).Flush()
		h.left = -1
		select {
		case <-h.gate:
		case <-h.done:
			return n, errors.New("client left")
		}
		m, err := h.w.Write(p[n:])
		return n + m, err
	}
	if h.left >= 0 {
		h.left -= int64(len(p))
	}
	return h.w.Write(p)
}

func serveGate(t *testing.T, o *gateOrigin) string {
	t.Helper()
	srv := httptest.NewServer(o)
	t.Cleanup(srv.Close)
	t.Cleanup(o.release) // before srv.Close: a held answer ends
	return srv.URL
}

func testData(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + i>>11)
	}
	return b
}

func hexSHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestJobsAPI runs a job through the API of a real agent: the token
// rules, redaction of headers and the URL's query on every read endpoint,
// the ranking inputs while it runs, its content, cancel and removal.
func TestJobsAPI(t *testing.T) {
	a := peertest.StartAgent(t, peertest.Config(t, 0, peertest.Options{}), false)
	data := testData(700_000)
	o := newGateOrigin(data, 300_000)
	base := serveGate(t, o)
	anon, tok := client(t, a, false), client(t, a, true)
	ctx := ctxFor(t, 60*time.Second)
	req := api.JobRequest{URL: base + "/file?sig=QUERYSECRET", Priority: "high", SHA256: strings.ToUpper(hexSHA(data)),
		Headers: []string{"Authorization: Bearer HEADERSECRET", "X-Extra: 1"}}

	// Refusals.
	var ae *api.Error
	if _, err := anon.SubmitJob(ctx, req); !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Fatalf("submit without token: %v", err)
	}
	for _, bad := range []struct {
		req  api.JobRequest
		want string
	}{
		{api.JobRequest{URL: "ftp://h/f"}, "not an absolute http or https URL"},
		{api.JobRequest{URL: base, Priority: "none"}, `priority "none"`},
		{api.JobRequest{URL: base, Priority: "urgent"}, `priority "urgent"`},
		{api.JobRequest{URL: base, Headers: []string{"Range: bytes=0-"}}, "set by the agent"},
	} {
		if _, err := tok.SubmitJob(ctx, bad.req); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest ||
			!strings.Contains(ae.Message, bad.want) {
			t.Errorf("submit %+v: %v, want 400 with %q", bad.req, err, bad.want)
		}
	}
	if err := tok.Do(ctx, http.MethodPost, api.PathJobs, strings.NewReader(`{"url": "http://h/", "prio": "x"}`), nil); !errors.As(err, &ae) ||
		ae.Status != http.StatusBadRequest {
		t.Errorf("unknown field: %v", err)
	}

	j, err := tok.SubmitJob(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if j.Priority != "high" || j.URL != base+"/file?…" || strings.Join(j.Headers, ",") != "Authorization,X-Extra" {
		t.Fatalf("submitted: %+v", j)
	}

	// While it runs (the origin holds after 300 kB): high priority and
	// progress are this agent's ranking inputs.
	wait.ForErr(t, 30*time.Second, "ranking inputs", func() error {
		ms, err := anon.Members(ctx)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.Self && (m.Priority != "high" || m.Progress < 300_000) {
				return fmt.Errorf("self: priority %s, progress %d", m.Priority, m.Progress)
			}
		}
		return nil
	})
	if _, _, err := tok.JobContent(ctx, j.ID); !errors.As(err, &ae) || ae.Status != http.StatusConflict {
		t.Errorf("content of a running job: %v", err)
	}
	// No read endpoint shows a secret.
	for _, path := range []string{api.PathJobs, api.PathJobs + "/" + j.ID, api.PathJobs + "/" + j.ID[:5] + "?brief"} {
		var raw []byte
		if err := anon.Do(ctx, http.MethodGet, path, nil, &raw); err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(raw, []byte("SECRET")) || !bytes.Contains(raw, []byte(j.ID)) {
			t.Errorf("GET %s: %s", path, raw)
		}
	}

	o.release()
	var done api.JobDetail
	wait.ForErr(t, 30*time.Second, "job done", func() error {
		done, err = anon.Job(ctx, j.ID, false)
		if err == nil && done.State != "done" {
			err = fmt.Errorf("state %s (%s)", done.State, done.Error)
		}
		return err
	})
	if done.Held != int64(len(data)) || done.Total != int64(len(data)) || done.ContentSHA256 != hexSHA(data) ||
		done.Bytes.Origin != int64(len(data)) || done.Bytes.OriginByReason["private_content"] != int64(len(data)) ||
		len(done.Segments) != 1 || done.Segments[0].Source != "origin" || done.Segments[0].Reason != "private_content" {
		t.Fatalf("done: %+v", done)
	}
	o.mu.Lock()
	sent := o.headers[0]
	o.mu.Unlock()
	if sent.Get("Authorization") != "Bearer HEADERSECRET" || sent.Get("X-Extra") != "1" {
		t.Errorf("origin got headers %v", sent)
	}
	wait.ForErr(t, 10*time.Second, "ranking inputs cleared", func() error {
		ms, _ := anon.Members(ctx)
		for _, m := range ms {
			if m.Self && m.Priority != "none" {
				return fmt.Errorf("self priority %s", m.Priority)
			}
		}
		return nil
	})

	// Content: token only.
	if _, _, err := anon.JobContent(ctx, j.ID); !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Errorf("content without token: %v", err)
	}
	body, size, err := tok.JobContent(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(body)
	body.Close()
	if err != nil || size != int64(len(data)) || !bytes.Equal(got, data) {
		t.Fatalf("content: %d bytes (size %d), err %v", len(got), size, err)
	}
	resp, err := http.Get("http://" + a.APIAddr() + api.PathJobs + "/" + j.ID + "/content")
	if err == nil {
		resp.Body.Close()
	}
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("raw content request without token: %v %v", resp, err)
	}
	sum := sha256.Sum256(data)
	req2, _ := http.NewRequest(http.MethodHead, "http://"+a.APIAddr()+api.PathJobs+"/"+j.ID+"/content", nil)
	tokStr, _ := peer.ReadToken(a.DataDir())
	req2.Header.Set("Authorization", "Bearer "+tokStr)
	if resp, err := http.DefaultClient.Do(req2); err != nil || resp.Header.Get("Repr-Digest") != "sha-256=:"+base64.StdEncoding.EncodeToString(sum[:])+":" {
		t.Errorf("HEAD content: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	metrics, err := anon.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`redleader_jobs{state="done"} 1`, fmt.Sprintf(`redleader_job_origin_bytes_total{reason="private_content"} %d`, len(data)),
		`redleader_job_bytes_total{source="peer"} 0`} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// Cancel a running job, remove a finished one.
	o2 := newGateOrigin(data, 1000)
	base2 := serveGate(t, o2)
	j2, err := tok.SubmitJob(ctx, api.JobRequest{URL: base2 + "/file"})
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "second job running", func() bool {
		d, err := anon.Job(ctx, j2.ID, true)
		return err == nil && d.State == "running" && d.Held > 0
	})
	if _, err := anon.DeleteJob(ctx, j2.ID); !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Errorf("delete without token: %v", err)
	}
	del, err := tok.DeleteJob(ctx, j2.ID)
	if err != nil || !del.Cancelled || del.State != "cancelled" {
		t.Fatalf("cancel: %+v %v", del, err)
	}
	del, err = tok.DeleteJob(ctx, j.ID)
	if err != nil || !del.Removed || del.State != "done" {
		t.Fatalf("remove: %+v %v", del, err)
	}
	if _, err := anon.Job(ctx, j.ID, true); !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Errorf("removed job: %v", err)
	}
	list, err := anon.Jobs(ctx)
	if err != nil || len(list) != 1 || list[0].ID != j2.ID || list[0].State != "cancelled" {
		t.Errorf("list: %+v %v", list, err)
	}
}

// TestJobResumesAfterRestart: an agent stopped in the middle of a job
// resumes it at its next start from the blocks its cache holds (the whole
// first segment), asking the origin only for the rest.
func TestJobResumesAfterRestart(t *testing.T) {
	cfg := peertest.Config(t, 0, peertest.Options{})
	a := peertest.StartAgent(t, cfg, false)
	data := testData(content.SegmentSize + 300_000)
	o := newGateOrigin(data, content.SegmentSize+100_000)
	base := serveGate(t, o)
	ctx := ctxFor(t, 120*time.Second)
	j, err := client(t, a, true).SubmitJob(ctx, api.JobRequest{URL: base + "/file", SHA256: hexSHA(data)})
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 60*time.Second, "first segment held", func() bool {
		d, err := client(t, a, false).Job(ctx, j.ID, true)
		return err == nil && d.Held >= content.SegmentSize
	})
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	o.release()

	b := peertest.StartAgent(t, cfg, false)
	var d api.JobDetail
	wait.ForErr(t, 60*time.Second, "job done after restart", func() error {
		d, err = client(t, b, false).Job(ctx, j.ID, false)
		if err == nil && d.State != "done" {
			err = fmt.Errorf("state %s (%s), held %d", d.State, d.Error, d.Held)
		}
		return err
	})
	o.mu.Lock()
	ranges := append([]string(nil), o.ranges...)
	o.mu.Unlock()
	var asked []string // the GETs of ranges (the HEADs ask for none)
	for _, r := range ranges {
		if r != "" {
			asked = append(asked, r)
		}
	}
	if d.Resumes != 1 || d.ContentSHA256 != hexSHA(data) || len(asked) != 2 ||
		asked[1] != fmt.Sprintf("bytes=%d-%d", content.SegmentSize, len(data)-1) {
		t.Fatalf("resumed job: resumes %d, sha %s, origin ranges %q", d.Resumes, d.ContentSHA256, ranges)
	}
	var cached, fetched int64 // after the restart: segment 0 from the cache, segment 1 from the origin
	for _, s := range d.Segments {
		switch {
		case s.Segment == 0 && s.Source == "cache":
			cached += s.Bytes
		case s.Segment == 1 && s.Source == "origin":
			fetched += s.Bytes
		}
	}
	if cached != content.SegmentSize || fetched != 300_000 {
		t.Errorf("audit %+v", d.Segments)
	}
	body, _, err := client(t, b, true).JobContent(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(body)
	body.Close()
	if !bytes.Equal(got, data) {
		t.Fatal("content after resume differs")
	}
}
