package jobs

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redleader-p2p/redleader/peer/content"
)

// Errors of OriginOnly. Each is wrapped with the request ("GET
// http://host/path: …", the URL redacted) into one line.
var (
	ErrOriginNotFound    = errors.New("origin has no such file")
	ErrOriginDenied      = errors.New("origin refused access")
	ErrOriginStatus      = errors.New("origin answered with an error status")
	ErrOriginRefused     = errors.New("origin refused the connection")
	ErrOriginTLS         = errors.New("TLS handshake with the origin failed")
	ErrOriginUnreachable = errors.New("cannot reach the origin")
	ErrOriginStalled     = errors.New("origin stopped sending")
	ErrOriginChanged     = errors.New("origin's file changed (validator mismatch)")
	ErrOriginTooShort    = errors.New("origin sent fewer bytes than it advertised")
	ErrOriginBadAnswer   = errors.New("origin sent a malformed answer")
	// ErrSHA256Mismatch: the content does not match the request's SHA256.
	ErrSHA256Mismatch = errors.New("content does not match the expected SHA-256")
)

// retryProgress is the progress a broken stream must have made for its
// retries to start counting again.
const retryProgress = 1 << 20

// errStream marks a body that broke off mid-stream (retried).
var errStream = errors.New("origin stream broke off")

// OriginOnlyOptions configure OriginOnly.
type OriginOnlyOptions struct {
	// Client sends the requests. Default: a client that honours
	// HTTP_PROXY, HTTPS_PROXY and NO_PROXY and never decompresses.
	Client *http.Client
	// StallTimeout: an origin that sends nothing this long (headers
	// included) is given up on, or retried mid-stream. Default 60 s.
	StallTimeout time.Duration
	// Retries: a stream that breaks off (stall, reset, cut short) is
	// resumed from where it stopped, this many times in a row without
	// 1 MiB of progress (default 3), after RetryDelay (default 1 s),
	// doubling.
	Retries    int
	RetryDelay time.Duration
	Logger     *slog.Logger
}

// OriginOnly is the interim Runner — the single-machine path: it downloads
// a job's URL straight from the origin on this machine, as one large range
// (the whole rest of the content, one request; a broken stream is resumed
// with Range and If-Range), into the job's data file, hashing as it goes,
// and checks the request's SHA-256 when there is one. Every byte is
// recorded as from the origin for ReasonStandalone, in one audit record
// per 32 MiB segment; at every segment end the file is synced and a
// Checkpoint saved, so a restarted agent resumes from the last whole
// segment (the validator must be unchanged).
//
// It knows no cache, no LAN peer and no Red Leader: the per-segment
// pipeline (peer/fetch) replaces it.
type OriginOnly struct {
	client  *http.Client
	stall   time.Duration
	retries int
	delay   time.Duration
	log     *slog.Logger
}

// NewOriginOnly returns the interim runner.
func NewOriginOnly(o OriginOnlyOptions) *OriginOnly {
	r := &OriginOnly{client: o.Client, stall: o.StallTimeout, retries: o.Retries, delay: o.RetryDelay, log: o.Logger}
	if r.client == nil {
		r.client = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   15 * time.Second,
			DisableCompression:    true,
			ForceAttemptHTTP2:     true,
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       90 * time.Second,
			ExpectContinueTimeout: time.Second,
		}}
	}
	if r.stall <= 0 {
		r.stall = 60 * time.Second
	}
	if r.retries <= 0 {
		r.retries = 3
	}
	if r.delay <= 0 {
		r.delay = time.Second
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	return r
}

// Close closes the idle connections to origins.
func (o *OriginOnly) Close() { o.client.CloseIdleConnections() }

// originCheckpoint is OriginOnly's resume state.
type originCheckpoint struct {
	Offset       int64  `json:"offset"`
	Total        int64  `json:"total"` // -1: unknown
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"last_modified,omitempty"`
}

// download is one Run.
type download struct {
	o       *OriginOnly
	w       *Work
	p       Progress
	f       *os.File
	u       *url.URL
	where   string // "GET <redacted URL>"
	h       hash.Hash
	st      originCheckpoint
	known   bool  // the validator and length were learned
	segHeld int64 // bytes of the current segment held when this run reached it
}

var originStandalone = From{Source: SourceOrigin, Reason: ReasonStandalone}

// Run downloads w's URL into w.DataPath.
func (o *OriginOnly) Run(ctx context.Context, w *Work, p Progress) (Result, error) {
	u, err := url.Parse(w.Request.URL)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	f, err := os.OpenFile(w.DataPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return Result{}, fmt.Errorf("open job data: %w", err)
	}
	defer f.Close()
	d := &download{o: o, w: w, p: p, f: f, u: u, where: "GET " + Redact(w.Request.URL), h: sha256.New(),
		st: originCheckpoint{Total: -1}}
	if err := d.start(); err != nil {
		return Result{}, err
	}
	for tries := 0; ; {
		before := d.st.Offset
		err := d.fetch(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil || !(errors.Is(err, errStream) || errors.Is(err, ErrOriginStalled) || errors.Is(err, ErrOriginTooShort)) {
			return Result{}, err
		}
		if d.st.Offset-before >= retryProgress {
			tries = 0 // a stream that keeps breaking but delivers goes on
		}
		if tries++; tries > o.retries {
			return Result{}, err
		}
		wait := o.delay << (tries - 1)
		o.log.Info("origin stream broke off: resuming", "job", w.ID, "at", d.st.Offset, "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return Result{}, ctx.Err()
		case <-time.After(wait):
		}
	}
	if err := f.Sync(); err != nil {
		return Result{}, fmt.Errorf("write job data: %w", err)
	}
	sum := hex.EncodeToString(d.h.Sum(nil))
	if want := w.Request.SHA256; want != "" && sum != want {
		return Result{}, fmt.Errorf("%w: got %s, want %s (nothing was kept)", ErrSHA256Mismatch, sum, want)
	}
	return Result{SHA256: sum, Size: d.st.Offset}, nil
}

// start resumes from the checkpoint (the file cut to it, its bytes hashed
// again) or starts from an empty file.
func (d *download) start() error {
	if d.w.Resume && len(d.w.Checkpoint) > 0 {
		var st originCheckpoint
		err := json.Unmarshal(d.w.Checkpoint, &st)
		if err == nil && st.Offset > 0 {
			err = d.rehash(st.Offset)
		}
		if err == nil {
			d.st, d.known = st, true
			d.p.SetTotal(st.Total)
			d.p.SetHeld(st.Offset)
			d.segHeld = st.Offset % content.SegmentSize
			d.o.log.Info("job resumes", "job", d.w.ID, "held", st.Offset, "total", st.Total)
			return nil
		}
		d.o.log.Warn("job checkpoint unusable: starting over", "job", d.w.ID, "err", err)
		d.h.Reset()
	}
	if err := d.f.Truncate(0); err != nil {
		return fmt.Errorf("write job data: %w", err)
	}
	d.p.SetHeld(0)
	return nil
}

// rehash cuts the file to n bytes and hashes them.
func (d *download) rehash(n int64) error {
	fi, err := d.f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() < n {
		return fmt.Errorf("job data holds %d bytes, the checkpoint says %d", fi.Size(), n)
	}
	if err := d.f.Truncate(n); err != nil {
		return err
	}
	_, err = io.Copy(d.h, io.NewSectionReader(d.f, 0, n))
	return err
}

// fetch makes one request for the rest of the content and stores what it
// sends.
func (d *download) fetch(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := time.AfterFunc(d.o.stall, func() { cancel(ErrOriginStalled) })
	defer timer.Stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.u.String(), nil)
	if err != nil {
		return fmt.Errorf("%s: %w", d.where, err)
	}
	for _, h := range d.w.Request.Headers {
		name, value, _ := strings.Cut(h, ":")
		req.Header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	req.Header.Set("Accept-Encoding", "identity")
	if d.st.Offset > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(d.st.Offset, 10)+"-")
		if v := d.validator(); v != "" {
			req.Header.Set("If-Range", v)
		}
	}
	resp, err := d.o.client.Do(req)
	if err != nil {
		return d.requestError(ctx, err)
	}
	defer resp.Body.Close()
	var skip int64
	switch resp.StatusCode {
	case http.StatusOK:
		// A first answer, or an origin that ignores Range (or a file that
		// changed: If-Range): the whole content comes again.
		if err := d.identify(resp, resp.ContentLength); err != nil {
			return err
		}
		skip = d.st.Offset
	case http.StatusPartialContent:
		start, total, err := contentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			return fmt.Errorf("%s: %w: %w", d.where, ErrOriginBadAnswer, err)
		}
		if start != d.st.Offset {
			return fmt.Errorf("%s: %w: range from %d, asked from %d", d.where, ErrOriginBadAnswer, start, d.st.Offset)
		}
		if err := d.identify(resp, total); err != nil {
			return err
		}
	case http.StatusRequestedRangeNotSatisfiable:
		if d.st.Total >= 0 && d.st.Offset == d.st.Total {
			return nil // the checkpoint was at the very end
		}
		return fmt.Errorf("%s: %w (%s) at byte %d", d.where, ErrOriginChanged, resp.Status, d.st.Offset)
	default:
		return statusError(d.where, resp)
	}
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return fmt.Errorf("%s: %w: Content-Encoding %q (asked for identity)", d.where, ErrOriginBadAnswer, ce)
	}
	body := &stallReader{r: resp.Body, t: timer, d: d.o.stall}
	if skip > 0 {
		n, err := io.CopyN(io.Discard, body, skip)
		d.p.Fetched(originStandalone, n)
		if err != nil {
			return d.readError(ctx, err)
		}
	}
	return d.store(ctx, body)
}

// store writes body's bytes from the current offset to the end.
func (d *download) store(ctx context.Context, body io.Reader) error {
	buf := make([]byte, 256<<10)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if d.st.Total >= 0 && d.st.Offset+int64(n) > d.st.Total {
				return fmt.Errorf("%s: %w: more bytes than the %d advertised", d.where, ErrOriginBadAnswer, d.st.Total)
			}
			if _, werr := d.f.WriteAt(buf[:n], d.st.Offset); werr != nil {
				return fmt.Errorf("write job data: %w", werr)
			}
			d.h.Write(buf[:n])
			if werr := d.advance(int64(n)); werr != nil {
				return werr
			}
		}
		switch {
		case errors.Is(err, io.EOF):
			return d.end()
		case err != nil:
			return d.readError(ctx, err)
		}
	}
}

// advance accounts n more bytes stored: progress, and at each segment's
// end its audit record, a sync and a checkpoint.
func (d *download) advance(n int64) error {
	d.p.Fetched(originStandalone, n)
	for n > 0 {
		segEnd := (d.st.Offset/content.SegmentSize + 1) * content.SegmentSize
		step := min(n, segEnd-d.st.Offset)
		d.st.Offset += step
		n -= step
		if d.st.Offset == segEnd {
			if err := d.segmentDone(); err != nil {
				return err
			}
		}
	}
	d.p.SetHeld(d.st.Offset)
	return nil
}

// segmentDone records the segment ending at the current offset, syncs the
// file and checkpoints.
func (d *download) segmentDone() error {
	start := (d.st.Offset - 1) / content.SegmentSize * content.SegmentSize
	if got := d.st.Offset - start - d.segHeld; got > 0 {
		d.p.Audit(AuditRecord{Segment: int(start / content.SegmentSize), Offset: start, Length: d.st.Offset - start,
			From: originStandalone, Bytes: got})
	}
	d.segHeld = 0
	if err := d.f.Sync(); err != nil {
		return fmt.Errorf("write job data: %w", err)
	}
	b, _ := json.Marshal(d.st) // plain fields: never fails
	if err := d.p.Checkpoint(b); err != nil {
		return fmt.Errorf("save job checkpoint: %w", err)
	}
	return nil
}

// end checks that the whole content came and records its last segment.
func (d *download) end() error {
	switch {
	case d.st.Total < 0:
		d.st.Total = d.st.Offset
		d.p.SetTotal(d.st.Total)
	case d.st.Offset < d.st.Total:
		return fmt.Errorf("%s: %w: %d of %d bytes", d.where, ErrOriginTooShort, d.st.Offset, d.st.Total)
	}
	if d.st.Offset%content.SegmentSize != 0 || d.st.Offset == 0 {
		if d.st.Offset == 0 {
			return nil // empty content: no segment
		}
		return d.segmentDone()
	}
	return nil
}

// identify learns the content's validator and length from the first
// answer and checks that later answers are of the same version.
func (d *download) identify(resp *http.Response, total int64) error {
	etag := resp.Header.Get("ETag")
	if strings.HasPrefix(etag, "W/") {
		etag = "" // weak: not for If-Range nor for telling versions apart
	}
	lm := resp.Header.Get("Last-Modified")
	if !d.known {
		d.known = true
		d.st.ETag, d.st.LastModified, d.st.Total = etag, lm, total
		d.p.SetTotal(total)
		return nil
	}
	switch {
	case d.st.ETag != "" && etag != d.st.ETag:
		return fmt.Errorf("%s: %w: ETag %s, was %s", d.where, ErrOriginChanged, orNone(etag), d.st.ETag)
	case d.st.ETag == "" && d.st.LastModified != "" && lm != d.st.LastModified:
		return fmt.Errorf("%s: %w: Last-Modified %s, was %s", d.where, ErrOriginChanged, orNone(lm), d.st.LastModified)
	case d.st.Total >= 0 && total >= 0 && total != d.st.Total:
		return fmt.Errorf("%s: %w: length %d, was %d", d.where, ErrOriginChanged, total, d.st.Total)
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// validator is the If-Range value: the strong ETag, else Last-Modified.
func (d *download) validator() string {
	if d.st.ETag != "" {
		return d.st.ETag
	}
	return d.st.LastModified
}

// contentRange parses "bytes START-END/TOTAL" (TOTAL may be "*": -1).
func contentRange(s string) (start, total int64, err error) {
	rest, ok := strings.CutPrefix(s, "bytes ")
	rng, tot, ok2 := strings.Cut(rest, "/")
	first, _, ok3 := strings.Cut(rng, "-")
	if !ok || !ok2 || !ok3 {
		return 0, 0, fmt.Errorf("Content-Range %q", s)
	}
	if start, err = strconv.ParseInt(first, 10, 64); err != nil || start < 0 {
		return 0, 0, fmt.Errorf("Content-Range %q", s)
	}
	if tot == "*" {
		return start, -1, nil
	}
	if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total < 0 {
		return 0, 0, fmt.Errorf("Content-Range %q", s)
	}
	return start, total, nil
}

// statusError is the error of an answer with an unexpected status.
func statusError(where string, resp *http.Response) error {
	var kind error
	switch resp.StatusCode {
	case http.StatusNotFound, http.StatusGone:
		kind = ErrOriginNotFound
	case http.StatusUnauthorized, http.StatusForbidden:
		kind = ErrOriginDenied
	default:
		kind = ErrOriginStatus
	}
	return fmt.Errorf("%s: %w (%s)", where, kind, resp.Status)
}

// requestError words an error of sending the request. url.Error is
// unwrapped: it quotes the whole URL, query included.
func (d *download) requestError(ctx context.Context, err error) error {
	if errors.Is(context.Cause(ctx), ErrOriginStalled) {
		return fmt.Errorf("%s: %w: no answer for %v", d.where, ErrOriginStalled, d.o.stall)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var (
		unknownCA *x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		certErr   x509.CertificateInvalidError
		verifyErr *tls.CertificateVerificationError
		recordErr tls.RecordHeaderError
		alertErr  tls.AlertError
	)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%s: %w: %w", d.where, ErrOriginRefused, err)
	case errors.As(err, &unknownCA), errors.As(err, &hostErr), errors.As(err, &certErr),
		errors.As(err, &verifyErr), errors.As(err, &recordErr), errors.As(err, &alertErr):
		return fmt.Errorf("%s: %w: %w", d.where, ErrOriginTLS, err)
	}
	return fmt.Errorf("%s: %w: %w", d.where, ErrOriginUnreachable, err)
}

// readError words an error of reading the body.
func (d *download) readError(ctx context.Context, err error) error {
	if errors.Is(context.Cause(ctx), ErrOriginStalled) {
		return fmt.Errorf("%s: %w: nothing received for %v at byte %d", d.where, ErrOriginStalled, d.o.stall, d.st.Offset)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, io.ErrUnexpectedEOF) && d.st.Total >= 0 {
		return fmt.Errorf("%s: %w: %d of %d bytes", d.where, ErrOriginTooShort, d.st.Offset, d.st.Total)
	}
	return fmt.Errorf("%s: %w at byte %d: %w", d.where, errStream, d.st.Offset, err)
}

// stallReader pushes the stall deadline back with every byte read.
type stallReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.t.Reset(s.d)
	}
	return n, err
}
