package peer

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/redleader-p2p/redleader/election"
	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/peer/jobs"
)

// Limits of the jobs endpoints.
const (
	// maxJobRequest bounds POST /v1/jobs: a URL (8 KiB) and headers
	// (16 KiB) with their JSON.
	maxJobRequest = 64 << 10
	// jobCancelTimeout bounds how long DELETE waits for a running job's
	// runner to stop.
	jobCancelTimeout = 30 * time.Second
)

// addJobRoutes registers the download job endpoints. Reads never show a
// header's value nor the URL's query (jobs.Job cannot hold them);
// mutations and the content need the API token.
func (a *Agent) addJobRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+api.PathJobs, a.postJob)
	mux.HandleFunc("GET "+api.PathJobs, a.getJobs)
	mux.HandleFunc("GET "+api.PathJobs+"/{id}", a.getJob)
	mux.HandleFunc("DELETE "+api.PathJobs+"/{id}", a.deleteJob)
	mux.HandleFunc("GET "+api.PathJobs+"/{id}/content", a.getJobContent)
}

// jobManager is the queue, or an answer saying it is not running.
func (a *Agent) jobManager(w http.ResponseWriter, r *http.Request) *jobs.Manager {
	m := a.Jobs()
	if m == nil {
		writeError(w, r, http.StatusServiceUnavailable, errNoJobs)
	}
	return m
}

// jobManagerWithToken is jobManager for a request that needs the API
// token: nil (answered 401) without it.
func (a *Agent) jobManagerWithToken(w http.ResponseWriter, r *http.Request) *jobs.Manager {
	if !a.tokenOK(r) {
		writeError(w, r, http.StatusUnauthorized, errUnauthorized)
		return nil
	}
	return a.jobManager(w, r)
}

// postJob is POST /v1/jobs (token).
func (a *Agent) postJob(w http.ResponseWriter, r *http.Request) {
	m := a.jobManagerWithToken(w, r)
	if m == nil {
		return
	}
	var in api.JobRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxJobRequest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		writeError(w, r, http.StatusBadRequest, fmt.Errorf(`bad job request: want {"url": "...", "priority": "normal", ...}: %w`, err))
		return
	}
	prio := election.PriorityNormal
	if in.Priority != "" {
		p, err := election.ParsePriority(in.Priority)
		if err != nil || p == election.PriorityNone {
			writeError(w, r, http.StatusBadRequest, fmt.Errorf("%w: priority %q: want foreground, high, normal or low", jobs.ErrBadRequest, in.Priority))
			return
		}
		prio = p
	}
	j, err := m.Submit(jobs.Request{URL: in.URL, Priority: prio, SHA256: in.SHA256, Headers: in.Headers, Share: in.Share})
	if err != nil {
		writeError(w, r, jobStatus(err), err)
		return
	}
	w.Header().Set("Location", api.PathJobs+"/"+j.ID)
	writeJSON(w, r, http.StatusCreated, jobInfo(j))
}

// getJobs is GET /v1/jobs.
func (a *Agent) getJobs(w http.ResponseWriter, r *http.Request) {
	m := a.jobManager(w, r)
	if m == nil {
		return
	}
	list := m.List()
	out := make([]api.JobInfo, 0, len(list))
	for _, j := range list {
		out = append(out, jobInfo(j))
	}
	writeJSON(w, r, http.StatusOK, out)
}

// getJob is GET /v1/jobs/{id}[?brief].
func (a *Agent) getJob(w http.ResponseWriter, r *http.Request) {
	m := a.jobManager(w, r)
	if m == nil {
		return
	}
	j, err := m.Get(r.PathValue("id"))
	if err != nil {
		writeError(w, r, jobStatus(err), err)
		return
	}
	out := api.JobDetail{JobInfo: jobInfo(j)}
	if _, brief := r.URL.Query()["brief"]; !brief {
		out.Segments = make([]api.JobSegment, 0, len(j.Audit))
		for _, s := range j.Audit {
			out.Segments = append(out.Segments, api.JobSegment{Segment: s.Segment, Offset: s.Offset, Length: s.Length,
				Source: string(s.Source), Peer: s.Peer, Reason: string(s.Reason), Bytes: s.Bytes, Time: s.Time})
		}
	}
	writeJSON(w, r, http.StatusOK, out)
}

// deleteJob is DELETE /v1/jobs/{id} (token): it cancels a queued or
// running job, and removes a finished one with its content.
func (a *Agent) deleteJob(w http.ResponseWriter, r *http.Request) {
	m := a.jobManagerWithToken(w, r)
	if m == nil {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), jobCancelTimeout)
	defer cancel()
	j, err := m.Get(r.PathValue("id"))
	if err == nil {
		if j.Active() {
			j, err = m.Cancel(ctx, j.ID)
		} else {
			j, err = m.Remove(ctx, j.ID)
			if err == nil {
				a.log.Info("job removed", "job", j.ID)
				writeJSON(w, r, http.StatusOK, api.JobDeleteResponse{ID: j.ID, State: string(j.State), Removed: true})
				return
			}
		}
	}
	if err != nil {
		writeError(w, r, jobStatus(err), err)
		return
	}
	writeJSON(w, r, http.StatusOK, api.JobDeleteResponse{ID: j.ID, State: string(j.State), Cancelled: j.State == jobs.StateCancelled})
}

// getJobContent is GET /v1/jobs/{id}/content (token: content may be
// private): it streams a done job's verified content. The CLI writes it
// where its user wants; the agent never opens a path a client names.
func (a *Agent) getJobContent(w http.ResponseWriter, r *http.Request) {
	m := a.jobManagerWithToken(w, r)
	if m == nil {
		return
	}
	f, j, err := m.Open(r.PathValue("id"))
	if err != nil {
		writeError(w, r, jobStatus(err), err)
		return
	}
	defer f.Close()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	if sum, err := hex.DecodeString(j.ContentSHA256); err == nil {
		h.Set("Repr-Digest", "sha-256=:"+base64.StdEncoding.EncodeToString(sum)+":")
	}
	// Range and HEAD come with ServeContent; a stream ends when the agent
	// closes.
	http.ServeContent(w, r, "", j.Finished, &closingFile{ctx: a.ctx, f: f})
}

// closingFile reads f until ctx ends.
type closingFile struct {
	ctx context.Context
	f   *os.File
}

func (c *closingFile) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.f.Read(p)
}

func (c *closingFile) Seek(off int64, whence int) (int64, error) { return c.f.Seek(off, whence) }

// jobStatus is the HTTP status of a jobs error.
func jobStatus(err error) int {
	switch {
	case errors.Is(err, jobs.ErrBadRequest), errors.Is(err, jobs.ErrAmbiguous):
		return http.StatusBadRequest
	case errors.Is(err, jobs.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, jobs.ErrNotDone):
		return http.StatusConflict
	case errors.Is(err, jobs.ErrTooMany):
		return http.StatusTooManyRequests
	case errors.Is(err, jobs.ErrClosed):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// jobInfo is what the API shows of j.
func jobInfo(j jobs.Job) api.JobInfo {
	out := api.JobInfo{ID: j.ID, URL: j.URL, Priority: j.Priority.String(), SHA256: j.SHA256, Share: j.Share,
		Headers: append([]string{}, j.Headers...), State: string(j.State), Error: j.Error, Created: j.Created,
		Total: j.Total, Held: j.Held, ContentSHA256: j.ContentSHA256, Resumes: j.Resumes,
		Bytes: api.JobBytes{Cache: j.Bytes.Cache, Peers: j.Bytes.Peers, Origin: j.Bytes.Origin, OriginByReason: map[string]int64{}}}
	for r, n := range j.Bytes.OriginByReason {
		out.Bytes.OriginByReason[string(r)] = n
	}
	if !j.Started.IsZero() {
		t := j.Started
		out.Started = &t
	}
	if !j.Finished.IsZero() {
		t := j.Finished
		out.Finished = &t
	}
	return out
}
