package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// PathJobs is the download jobs: POST queues one, GET lists them;
// PathJobs/{id} is one job (GET, DELETE) and PathJobs/{id}/content a done
// job's content (GET, token).
const PathJobs = "/v1/jobs"

// JobRequest is the body of POST /v1/jobs.
type JobRequest struct {
	// URL is an absolute http or https URL.
	URL string `json:"url"`
	// Priority is foreground, high, normal (the default) or low.
	Priority string `json:"priority,omitempty"`
	// SHA256 is the content's expected SHA-256, 64 hex digits: the job
	// fails when the content does not match.
	SHA256 string `json:"sha256,omitempty"`
	// Headers are extra request headers for the origin, "Name: value"
	// each (credentials, for example). The agent keeps them in a file only
	// its user can read; no read endpoint ever returns their values.
	Headers []string `json:"headers,omitempty"`
	// Share lets the subnet learn of content fetched with credentials
	// (recorded; it takes effect with the LAN pipeline).
	Share bool `json:"share,omitempty"`
}

// JobInfo is a job as GET /v1/jobs lists it and POST /v1/jobs answers it.
// It carries no header value, and the URL carries neither its query nor
// its user info ("?…" marks a dropped query): local users may read it.
type JobInfo struct {
	ID       string `json:"id"`
	URL      string `json:"url"`
	Priority string `json:"priority"`
	SHA256   string `json:"sha256,omitempty"`
	Share    bool   `json:"share"`
	// Headers are the names of the extra request headers.
	Headers []string `json:"headers"`
	// State is queued, running, done, failed or cancelled; Error says why
	// a job failed, in one line.
	State    string     `json:"state"`
	Error    string     `json:"error,omitempty"`
	Created  time.Time  `json:"created"`
	Started  *time.Time `json:"started,omitempty"`
	Finished *time.Time `json:"finished,omitempty"`
	// Total is the content's length (-1 while unknown), Held the bytes of
	// it held and verified.
	Total int64    `json:"total"`
	Held  int64    `json:"held"`
	Bytes JobBytes `json:"bytes"`
	// ContentSHA256 is the SHA-256 of a done job's content: GET
	// /v1/jobs/{id}/content streams exactly these bytes.
	ContentSHA256 string `json:"content_sha256,omitempty"`
	// Resumes counts the agent restarts the job resumed after.
	Resumes int `json:"resumes"`
}

// JobBytes counts a job's bytes by source: every byte received, also
// those received again after a restart.
type JobBytes struct {
	Cache  int64 `json:"cache"`
	Peers  int64 `json:"peers"`
	Origin int64 `json:"origin"`
	// OriginByReason splits Origin by why the bytes crossed the WAN
	// (red_leader_fetch, no_red_leader, fallback_after_delay,
	// bad_block_from_peer, catalog_conflict, private_content, standalone).
	OriginByReason map[string]int64 `json:"origin_by_reason"`
}

// JobDetail is the body of GET /v1/jobs/{id}: the job and its audit.
type JobDetail struct {
	JobInfo
	// Segments says, per segment of the content, where its bytes came
	// from: one record per segment and source, in the order they were
	// stored. Left out with ?brief.
	Segments []JobSegment `json:"segments"`
}

// JobSegment is one audit record: Bytes bytes of segment Segment (Offset,
// Length) came from Source — "cache", "peer" (Peer is its address) or
// "origin" (Reason says why).
type JobSegment struct {
	Segment int       `json:"segment"`
	Offset  int64     `json:"offset"`
	Length  int64     `json:"length"`
	Source  string    `json:"source"`
	Peer    string    `json:"peer,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Bytes   int64     `json:"bytes"`
	Time    time.Time `json:"time"`
}

// Over reports whether the job is over: done, failed or cancelled.
func (j JobInfo) Over() bool {
	return j.State == "done" || j.State == "failed" || j.State == "cancelled"
}

// JobDeleteResponse is the answer to DELETE /v1/jobs/{id}: a queued or
// running job is cancelled (Cancelled), a finished one removed with its
// content (Removed).
type JobDeleteResponse struct {
	ID        string `json:"id"`
	State     string `json:"state"`
	Cancelled bool   `json:"cancelled"`
	Removed   bool   `json:"removed"`
}

// SubmitJob is POST /v1/jobs (token): it queues a download and returns it.
func (c *Client) SubmitJob(ctx context.Context, req JobRequest) (JobInfo, error) {
	var out JobInfo
	return out, c.Do(ctx, http.MethodPost, PathJobs, req, &out)
}

// Jobs is GET /v1/jobs: every job, oldest first.
func (c *Client) Jobs(ctx context.Context) ([]JobInfo, error) {
	var out []JobInfo
	return out, c.Do(ctx, http.MethodGet, PathJobs, nil, &out)
}

// Job is GET /v1/jobs/{id} (a unique prefix of the ID will do). brief
// leaves the audit (Segments) out. An unknown job is an *Error with
// Status 404.
func (c *Client) Job(ctx context.Context, id string, brief bool) (JobDetail, error) {
	path := PathJobs + "/" + url.PathEscape(id)
	if brief {
		path += "?brief"
	}
	var out JobDetail
	return out, c.Do(ctx, http.MethodGet, path, nil, &out)
}

// DeleteJob is DELETE /v1/jobs/{id} (token): it cancels a queued or
// running job, or removes a finished one.
func (c *Client) DeleteJob(ctx context.Context, id string) (JobDeleteResponse, error) {
	var out JobDeleteResponse
	return out, c.Do(ctx, http.MethodDelete, PathJobs+"/"+url.PathEscape(id), nil, &out)
}

// JobContent is GET /v1/jobs/{id}/content (token): the verified content
// of a done job, streamed. The caller reads it to its end and closes it;
// size is its length. A job that is not done is an *Error with Status
// 409. ctx bounds the whole stream.
func (c *Client) JobContent(ctx context.Context, id string) (body io.ReadCloser, size int64, err error) {
	const method = http.MethodGet
	path := PathJobs + "/" + url.PathEscape(id) + "/content"
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/octet-stream")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, 0, c.transportError(method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		b, _ := readLimited(resp.Body, maxErrorBody)
		return nil, 0, fmt.Errorf("%s %s at %s: %w", method, path, c.addr, newError(resp.StatusCode, b))
	}
	return &streamBody{c: c, method: method, path: path, rc: resp.Body}, resp.ContentLength, nil
}

// streamBody classifies the errors of reading a streamed answer like
// every other error of the client.
type streamBody struct {
	c            *Client
	method, path string
	rc           io.ReadCloser
}

func (s *streamBody) Read(p []byte) (int, error) {
	n, err := s.rc.Read(p)
	if err != nil && err != io.EOF {
		err = s.c.transportError(s.method, s.path, err)
	}
	return n, err
}

func (s *streamBody) Close() error { return s.rc.Close() }
