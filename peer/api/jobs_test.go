package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestJobCalls: each jobs method sends its method, path, token and body,
// and decodes the answer.
func TestJobCalls(t *testing.T) {
	var seen []string
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen = append(seen, strings.TrimSpace(r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("Authorization")+" "+string(b)))
		switch r.Method + " " + r.URL.Path {
		case "POST /v1/jobs":
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, `{"id": "abc123", "state": "queued", "priority": "high", "total": -1, "headers": ["Authorization"]}`)
		case "GET /v1/jobs":
			io.WriteString(w, `[{"id": "abc123", "state": "running", "held": 10, "total": 20,
				"bytes": {"origin": 10, "origin_by_reason": {"standalone": 10}}}]`)
		case "GET /v1/jobs/a b":
			io.WriteString(w, `{"id": "abc123", "state": "done", "segments": [{"segment": 0, "length": 20, "source": "origin",
				"reason": "standalone", "bytes": 20}]}`)
		case "DELETE /v1/jobs/abc123":
			io.WriteString(w, `{"id": "abc123", "state": "cancelled", "cancelled": true}`)
		default:
			http.Error(w, "unexpected", http.StatusTeapot)
		}
	})
	ctx := context.Background()
	j, err := c.SubmitJob(ctx, JobRequest{URL: "https://o/f", Priority: "high", Headers: []string{"Authorization: Bearer x"}})
	if err != nil || j.ID != "abc123" || j.Total != -1 || !slices.Equal(j.Headers, []string{"Authorization"}) || j.Over() {
		t.Fatalf("SubmitJob: %+v %v", j, err)
	}
	list, err := c.Jobs(ctx)
	if err != nil || len(list) != 1 || list[0].Bytes.OriginByReason["standalone"] != 10 {
		t.Fatalf("Jobs: %+v %v", list, err)
	}
	d, err := c.Job(ctx, "a b", true)
	if err != nil || !d.Over() || len(d.Segments) != 1 || d.Segments[0].Reason != "standalone" {
		t.Fatalf("Job: %+v %v", d, err)
	}
	del, err := c.DeleteJob(ctx, "abc123")
	if err != nil || del != (JobDeleteResponse{ID: "abc123", State: "cancelled", Cancelled: true}) {
		t.Fatalf("DeleteJob: %+v %v", del, err)
	}
	want := []string{
		`POST /v1/jobs Bearer secret {"url":"https://o/f","priority":"high","headers":["Authorization: Bearer x"]}`,
		`GET /v1/jobs Bearer secret`,
		`GET /v1/jobs/a%20b?brief Bearer secret`,
		`DELETE /v1/jobs/abc123 Bearer secret`,
	}
	if !slices.Equal(seen, want) {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
}

// TestJobContent: the content is streamed with the token; an error
// answer is an *Error; a stream cut short is an error, not a short file.
func TestJobContent(t *testing.T) {
	data := bytes.Repeat([]byte("redleader"), 100_000)
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Header.Get("Authorization") != "Bearer secret":
			w.WriteHeader(http.StatusUnauthorized)
		case r.URL.Path == "/v1/jobs/done/content":
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
		case r.URL.Path == "/v1/jobs/cut/content":
			w.Header().Set("Content-Length", "1000000")
			w.Write(data[:1000])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		default:
			w.WriteHeader(http.StatusConflict)
			json.NewEncoder(w).Encode(ErrorResponse{Error: "job is not done: job running is running"})
		}
	})
	ctx := context.Background()
	body, size, err := c.JobContent(ctx, "done")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(body)
	body.Close()
	if err != nil || size != int64(len(data)) || !bytes.Equal(got, data) {
		t.Fatalf("content: %d bytes of %d, err %v", len(got), size, err)
	}
	_, _, err = c.JobContent(ctx, "running")
	var e *Error
	if !errors.As(err, &e) || e.Status != http.StatusConflict || !strings.Contains(e.Message, "not done") {
		t.Fatalf("not done: %v", err)
	}
	body, _, err = c.JobContent(ctx, "cut")
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(body)
	body.Close()
	if err == nil || !strings.Contains(err.Error(), "/v1/jobs/cut/content") {
		t.Fatalf("cut stream: err = %v", err)
	}
}
