package peer

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/peer/cache"
	pccrc "github.com/redleader-p2p/redleader/peer/content"
)

// Limits of POST /v1/cache.
const (
	// cacheStallTimeout drops an upload that sends nothing for this long;
	// there is no overall limit (a big file over a slow USB disk takes
	// what it takes).
	cacheStallTimeout = 60 * time.Second
	// formOverhead is what the multipart framing (part headers,
	// boundaries) may add to the parts.
	formOverhead = 64 << 10
	// rejectDrain bounds what the agent still reads of an upload it
	// refused, so that the client gets to read the answer before the
	// connection closes.
	rejectDrain        = 64 << 20
	rejectDrainTimeout = 5 * time.Second
)

// addCacheRoutes registers the segment cache endpoints.
func (a *Agent) addCacheRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+api.PathCache, a.postCache)
	mux.HandleFunc("GET "+api.PathCache, a.getCache)
	mux.HandleFunc("DELETE "+api.PathCache+"/{segment}", a.deleteCache)
}

// tokenOK reports whether r carries the API token.
func (a *Agent) tokenOK(r *http.Request) bool {
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	return subtle.ConstantTimeCompare([]byte(tok), []byte(a.token)) == 1
}

// postCache is POST /v1/cache: a multipart/form-data body with the
// content information, then the content, which is verified block by block
// into the cache (cache.AddContent).
func (a *Agent) postCache(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	_ = rc.EnableFullDuplex() // to answer an error while the client still sends
	defer func() { _ = rc.SetReadDeadline(time.Time{}) }()
	if !a.tokenOK(r) {
		rejectUpload(w, r, http.StatusUnauthorized, errUnauthorized)
		return
	}
	body := &budgetReader{r: &stallReader{r: r.Body, rc: rc}, n: api.MaxContentInfo + formOverhead}
	out, status, err := a.addToCache(r, body)
	if err != nil {
		a.log.Warn("cache add refused", "status", status, "err", err)
		rejectUpload(w, r, status, err)
		return
	}
	writeJSON(w, r, http.StatusOK, out)
}

// addToCache reads the form of POST /v1/cache from body and adds its
// content; it returns the answer, or the error and its status.
func (a *Agent) addToCache(r *http.Request, body *budgetReader) (api.CacheAddResponse, int, error) {
	var out api.CacheAddResponse
	usage := fmt.Errorf("POST %s takes multipart/form-data: a %q part, then a %q part",
		api.PathCache, api.PartContentInfo, api.PartContent)
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return out, http.StatusUnsupportedMediaType, usage
	}
	mr := multipart.NewReader(body, params["boundary"])
	part, err := nextPart(mr, api.PartContentInfo)
	if err != nil {
		return out, uploadStatus(err, http.StatusBadRequest), fmt.Errorf("%w: %w", usage, err)
	}
	ci, err := io.ReadAll(io.LimitReader(part, api.MaxContentInfo+1))
	switch {
	case err != nil:
		return out, uploadStatus(err, http.StatusBadRequest), fmt.Errorf("read content information: %w", err)
	case len(ci) > api.MaxContentInfo:
		return out, http.StatusRequestEntityTooLarge, fmt.Errorf("content information larger than %d bytes", api.MaxContentInfo)
	}
	info, err := pccrc.Parse(ci)
	if err != nil {
		return out, http.StatusBadRequest, fmt.Errorf("bad content information: %w", err)
	}
	start, end := info.Range()
	body.n += int64(end-start) + formOverhead
	if part, err = nextPart(mr, api.PartContent); err != nil {
		return out, uploadStatus(err, http.StatusBadRequest), fmt.Errorf("%w: %w", usage, err)
	}
	res, err := a.content.cache.AddContent(r.Context(), info, part)
	if err != nil {
		return out, addStatus(err), fmt.Errorf("%w (%s)", err, keptSummary(res))
	}
	out = api.CacheAddResponse{Segments: []api.CacheSegment{}, Bytes: res.Bytes,
		VerifiedBlocks: res.Verified, AddedBlocks: res.Stored}
	for i := range info.Segments {
		s := a.cacheSegment(info.Segments[i].ID)
		if s.Segment == "" { // not held: describe it from the content information
			seg := &info.Segments[i]
			s = api.CacheSegment{Segment: seg.ID.String(), Offset: seg.Offset, Length: seg.Length, TotalBlocks: seg.BlockCount()}
		}
		out.Segments = append(out.Segments, s)
	}
	a.log.Info("content added to the cache", "bytes", res.Bytes, "segments", len(res.Kept),
		"verified_blocks", res.Verified, "added_blocks", res.Stored)
	return out, 0, nil
}

// nextPart returns the next part of mr, which must be the form field name.
func nextPart(mr *multipart.Reader, name string) (*multipart.Part, error) {
	p, err := mr.NextPart()
	switch {
	case errors.Is(err, io.EOF):
		return nil, fmt.Errorf("no %q part", name)
	case err != nil:
		return nil, fmt.Errorf("read %q part: %w", name, err)
	case p.FormName() != name:
		return nil, fmt.Errorf("got a %q part where the %q part belongs", p.FormName(), name)
	}
	return p, nil
}

// keptSummary says what a failed add left in the cache.
func keptSummary(res cache.AddResult) string {
	var b strings.Builder
	switch len(res.Kept) {
	case 0:
		b.WriteString("nothing was added to the cache")
	case 1:
		b.WriteString("kept 1 segment, every block stored of it verified")
	default:
		fmt.Fprintf(&b, "kept %d segments, every block stored of them verified", len(res.Kept))
	}
	if res.RolledBack != nil {
		fmt.Fprintf(&b, "; the blocks stored of segment %v before the failure were removed again", *res.RolledBack)
	}
	return b.String()
}

// addStatus is the HTTP status of an AddContent error.
func addStatus(err error) int {
	switch {
	case errors.Is(err, cache.ErrContentMismatch):
		return http.StatusUnprocessableEntity
	case errors.Is(err, cache.ErrBadDescription):
		return http.StatusBadRequest
	case errors.Is(err, cache.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, cache.ErrFull):
		return http.StatusInsufficientStorage
	case errors.Is(err, cache.ErrClosed):
		return http.StatusServiceUnavailable
	}
	return uploadStatus(err, http.StatusInternalServerError)
}

// uploadStatus is the status of an error reading the upload: 408 when it
// stalled, 413 past its size budget, 400 when it broke off, else def.
func uploadStatus(err error, def int) int {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return http.StatusRequestTimeout
	case errors.Is(err, errUploadTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, io.ErrUnexpectedEOF):
		return http.StatusBadRequest
	}
	return def
}

// rejectUpload answers an error to an upload the agent will not read to
// its end. The answer has a Content-Length and is flushed at once; then
// the agent drains what the client still sends for a while (the handler
// must have enabled full duplex), so that the client reads the answer
// before the connection closes instead of failing on a reset connection.
func rejectUpload(w http.ResponseWriter, r *http.Request, status int, err error) {
	b, _ := json.Marshal(api.ErrorResponse{Error: err.Error()}) // a string field: never fails
	b = append(b, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Connection", "close")
	w.WriteHeader(status)
	_, _ = w.Write(b)
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		return
	}
	_ = rc.SetReadDeadline(time.Now().Add(rejectDrainTimeout))
	_, _ = io.CopyN(io.Discard, r.Body, rejectDrain)
}

// getCache is GET /v1/cache.
func (a *Agent) getCache(w http.ResponseWriter, r *http.Request) {
	c := a.content.cache
	st := c.Stats()
	out := api.CacheListResponse{Segments: []api.CacheSegment{}, Bytes: st.Bytes, MaxBytes: st.MaxBytes}
	for _, id := range c.Segments() {
		if s := a.cacheSegment(id); s.Segment != "" {
			out.Segments = append(out.Segments, s)
		}
	}
	writeJSON(w, r, http.StatusOK, out)
}

// cacheSegment describes cached segment id; Segment is empty when it is
// not cached.
func (a *Agent) cacheSegment(id pccrc.SegmentID) api.CacheSegment {
	c := a.content.cache
	desc, ok := c.Describe(id)
	if !ok {
		return api.CacheSegment{}
	}
	out := api.CacheSegment{Segment: id.String(), Offset: desc.Offset, Length: desc.Length, TotalBlocks: desc.BlockCount()}
	for _, i := range c.Held(id) {
		out.Blocks++
		out.Bytes += int64(desc.BlockLen(i))
	}
	return out
}

// deleteCache is DELETE /v1/cache/{segment} (token).
func (a *Agent) deleteCache(w http.ResponseWriter, r *http.Request) {
	if !a.tokenOK(r) {
		writeError(w, r, http.StatusUnauthorized, errUnauthorized)
		return
	}
	id, err := parseSegmentID(r.PathValue("segment"))
	if err != nil {
		writeError(w, r, http.StatusBadRequest, err)
		return
	}
	c := a.content
	switch err := c.cache.Remove(id); {
	case errors.Is(err, cache.ErrUnknownSegment):
		writeError(w, r, http.StatusNotFound, fmt.Errorf("segment %v is not in the cache", id))
		return
	case err != nil:
		writeError(w, r, http.StatusInternalServerError, err)
		return
	}
	c.mu.Lock()
	resp := c.responder
	c.mu.Unlock()
	if resp != nil {
		resp.Forget(id)
	}
	a.log.Info("segment removed from the cache", "segment", id)
	writeJSON(w, r, http.StatusOK, api.CacheRemoveResponse{Segment: id.String(), Removed: true})
}

// errUploadTooLarge: the upload is larger than its parts can be.
var errUploadTooLarge = errors.New("upload larger than its content information describes")

// budgetReader reads at most n more bytes from r (n grows once the
// content information tells the content's length).
type budgetReader struct {
	r io.Reader
	n int64
}

func (b *budgetReader) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, errUploadTooLarge
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	b.n -= int64(n)
	return n, err
}

// stallReader gives every read of r cacheStallTimeout to return.
type stallReader struct {
	r  io.Reader
	rc *http.ResponseController
}

func (s *stallReader) Read(p []byte) (int, error) {
	_ = s.rc.SetReadDeadline(time.Now().Add(cacheStallTimeout))
	n, err := s.r.Read(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = fmt.Errorf("nothing received for %v: %w", cacheStallTimeout, err)
	}
	return n, err
}
