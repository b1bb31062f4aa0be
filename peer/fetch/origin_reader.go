package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"
)

// errStaleRange is returned by a range reader used after the next Range
// call or Close of its Reader.
var errStaleRange = errors.New("range reader used after the next Range or Close")

// Reader reads one content from its origin, range by range, for a
// pipeline that moves forward through it. Each Range call with an origin
// that honours Range is one request for exactly that range (ask for a
// segment or more: never a request per block). With an origin that ignores
// Range (detected once per Identity, see Identity.Ranges), one GET streams
// the whole content and Range cuts the asked ranges from it, skipping
// forward over bytes not asked for; a range behind the stream's position
// starts the stream again.
//
// Every answer is checked against the Identity: validators and length
// (ErrChanged, also for a 412 to the If-Match the requests carry), the
// Content-Range asked for (ErrBadResponse), the bytes sent (ErrTooShort,
// ErrTooLong) and stalls (ErrStalled).
//
// A Reader is used by one goroutine. Close it when done.
type Reader struct {
	o         *Origin
	id        *Identity
	ctx       context.Context
	cur       *stream  // the open answer, nil if none
	sec       *section // the reader the last Range returned
	received  int64    // body bytes read from the origin
	discarded int64    // of which skipped over
}

// NewReader returns a Reader of id's content; its requests end with ctx.
func (o *Origin) NewReader(ctx context.Context, id *Identity) *Reader {
	return &Reader{o: o, id: id, ctx: ctx}
}

// Range returns a reader of the n bytes at off. It reads exactly n bytes
// then io.EOF, or fails with one of the package's errors; it is valid until
// the next Range or Close. n must be positive and [off, off+n) inside the
// content when its length is known (else ErrBadRange).
func (r *Reader) Range(off, n int64) (io.Reader, error) {
	r.invalidate()
	if off < 0 || n <= 0 || r.id.Length >= 0 && (off > r.id.Length || n > r.id.Length-off) {
		return nil, fmt.Errorf("bytes %d+%d of %s (%d bytes): %w", off, n, r.id.Redacted(), r.id.Length, ErrBadRange)
	}
	if err := r.ctx.Err(); err != nil {
		return nil, err
	}
	if c := r.cur; c != nil && (c.err != nil || !c.whole || off < c.pos) {
		c.close()
		r.cur = nil
	}
	if r.cur == nil {
		s, err := r.open(off, n)
		if err != nil {
			return nil, err
		}
		r.cur = s
	}
	if skip := off - r.cur.pos; skip > 0 {
		skipped, err := io.CopyN(io.Discard, r.cur, skip)
		r.discarded += skipped
		if err != nil {
			return nil, r.cur.endErr(err, skip)
		}
	}
	r.sec = &section{s: r.cur, left: n}
	return r.sec, nil
}

// Received returns the number of content bytes the Reader has read from
// the origin so far, the bytes it skipped over included: what crossed the
// WAN in answer bodies.
func (r *Reader) Received() int64 { return r.received }

// Discarded returns the number of those bytes skipped over because the
// origin ignores Range: they crossed the WAN and were thrown away.
func (r *Reader) Discarded() int64 { return r.discarded }

// Close ends the Reader's open request. It is idempotent.
func (r *Reader) Close() error {
	r.invalidate()
	if r.cur != nil {
		r.cur.close()
		r.cur = nil
	}
	return nil
}

func (r *Reader) invalidate() {
	if r.sec != nil {
		r.sec.stale = true
		r.sec = nil
	}
}

// Range is a one-shot Reader.Range: the n bytes at off, with a Close
// that ends the request.
func (o *Origin) Range(ctx context.Context, id *Identity, off, n int64) (io.ReadCloser, error) {
	r := o.NewReader(ctx, id)
	sec, err := r.Range(off, n)
	if err != nil {
		r.Close()
		return nil, err
	}
	return rangeCloser{sec, r}, nil
}

type rangeCloser struct {
	io.Reader
	r *Reader
}

func (c rangeCloser) Close() error { return c.r.Close() }

// conditionals sets the validator checks of a GET for id: If-Match (or
// If-Unmodified-Since) makes an origin whose file changed answer 412, and
// If-Range makes it answer a Range request with the whole new file rather
// than a part of it; either way the change is seen.
func conditionals(h http.Header, id *Identity) (ifRange string) {
	switch {
	case id.ETag != "":
		h.Set("If-Match", id.ETag)
		return id.ETag
	case !id.LastModified.IsZero():
		lm := id.LastModified.Format(http.TimeFormat)
		h.Set("If-Unmodified-Since", lm)
		return lm
	}
	return ""
}

// open sends the GET for [off, off+n): a Range request unless the origin
// is known to ignore Range.
func (r *Reader) open(off, n int64) (*stream, error) {
	id, u := r.id, r.id.url
	ctx, cancel := context.WithCancelCause(r.ctx)
	req, err := r.o.newRequest(ctx, http.MethodGet, id)
	if err != nil {
		cancel(nil)
		return nil, err
	}
	req.Header.Set("Accept-Encoding", "identity")
	ifRange := conditionals(req.Header, id)
	ranged := id.Ranges() != RangesIgnored
	if ranged {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
		if ifRange != "" {
			req.Header.Set("If-Range", ifRange)
		}
	}
	resp, err := r.o.client.Do(req)
	if err != nil {
		cancel(nil)
		return nil, requestErr(r.ctx, "GET", u, err)
	}
	fail := func(err error) (*stream, error) {
		resp.Body.Close()
		cancel(nil)
		return nil, err
	}
	h := resp.Header
	switch resp.StatusCode {
	case http.StatusPartialContent, http.StatusOK:
	case http.StatusPreconditionFailed:
		return fail(fmt.Errorf("GET %s: %w: precondition failed (HTTP 412)", redact(u), ErrChanged))
	case http.StatusRequestedRangeNotSatisfiable:
		if id.Length >= 0 {
			return fail(fmt.Errorf("GET %s: %w: bytes %d-%d not satisfiable (HTTP 416)", redact(u), ErrChanged, off, off+n-1))
		}
		return fail(fmt.Errorf("GET %s: %w: bytes %d-%d (HTTP 416)", redact(u), ErrBadRange, off, off+n-1))
	default:
		return fail(statusErr("GET", u, resp.StatusCode))
	}
	if !identityCoded(h) {
		return fail(fmt.Errorf("GET %s: %w: Content-Encoding %.40q", redact(u), ErrBadResponse, h.Get("Content-Encoding")))
	}
	s := &stream{op: "GET", u: u, ctx: r.ctx, cancel: cancel, received: &r.received}
	if resp.StatusCode == http.StatusPartialContent {
		if !ranged {
			return fail(fmt.Errorf("GET %s: %w: 206 to a request without Range", redact(u), ErrBadResponse))
		}
		first, last, total, ok := parseContentRange(h.Get("Content-Range"))
		if !ok {
			return fail(fmt.Errorf("GET %s: %w: Content-Range %.60q", redact(u), ErrBadResponse, h.Get("Content-Range")))
		}
		if diff := versionOf(h, total, false).check(id); diff != "" {
			return fail(fmt.Errorf("GET %s: %w: %s", redact(u), ErrChanged, diff))
		}
		if first != off || last != off+n-1 {
			return fail(fmt.Errorf("GET %s: %w: asked bytes %d-%d, got %d-%d", redact(u), ErrBadResponse, off, off+n-1, first, last))
		}
		if cl := parseLength(h); cl >= 0 && cl != n {
			return fail(fmt.Errorf("GET %s: %w: Content-Length %d for %d bytes", redact(u), ErrBadResponse, cl, n))
		}
		id.ranges.CompareAndSwap(int32(RangesUnknown), int32(RangesHonoured))
		s.pos, s.start, s.end = off, off, off+n
	} else {
		length := parseLength(h)
		if diff := versionOf(h, length, true).check(id); diff != "" {
			return fail(fmt.Errorf("GET %s: %w: %s", redact(u), ErrChanged, diff))
		}
		if ranged && RangeSupport(id.ranges.Swap(int32(RangesIgnored))) != RangesIgnored {
			r.o.log.Info("origin ignores Range, reading it as one stream", "url", redact(u))
		}
		end := id.Length
		if end < 0 {
			end = length
		}
		s.whole, s.end = true, end
	}
	sr := newStallReader(resp.Body, r.o.stall, cancel)
	s.body, s.closer = sr, sr
	if r.o.pace != nil {
		s.body = r.o.pace(ctx, sr)
	}
	return s, nil
}

// stream is one open answer: the bytes [start, end) of the content (end
// -1: up to EOF), of which the next is at pos.
type stream struct {
	op     string
	u      *url.URL
	ctx    context.Context // the Reader's, for error classification
	cancel context.CancelCauseFunc
	body   io.Reader // the paced body
	closer io.Closer // the answer's body
	whole  bool      // a 200 answer: the whole content
	start  int64
	pos    int64
	end    int64
	eof    bool  // the body's EOF was seen exactly at end
	err    error // sticky

	received *int64 // the Reader's count
}

// Read reads the answer's next bytes, never past end; an early EOF is
// ErrTooShort.
func (s *stream) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.end >= 0 && s.pos >= s.end {
		return 0, s.atEnd()
	}
	if s.end >= 0 && int64(len(p)) > s.end-s.pos {
		p = p[:s.end-s.pos]
	}
	n, err := s.body.Read(p)
	s.pos += int64(n)
	*s.received += int64(n)
	switch {
	case err == nil:
		return n, nil
	case err == io.EOF && s.end < 0:
		s.err = io.EOF
	case err == io.EOF && s.pos == s.end:
		s.eof = true
		if n > 0 {
			return n, nil
		}
		return 0, io.EOF
	case err == io.EOF:
		s.err = fmt.Errorf("%s %s: %w: got %d of %d bytes", s.op, redact(s.u), ErrTooShort, s.pos-s.start, s.end-s.start)
	default:
		s.err = requestErr(s.ctx, s.op, s.u, err)
	}
	return n, s.err
}

// atEnd checks, at end, that the answer ends there too.
func (s *stream) atEnd() error {
	if s.eof {
		return io.EOF
	}
	var b [1]byte
	for range 16 {
		n, err := s.body.Read(b[:])
		*s.received += int64(n)
		switch {
		case n > 0:
			s.err = fmt.Errorf("%s %s: %w: more than %d bytes", s.op, redact(s.u), ErrTooLong, s.end-s.start)
			return s.err
		case err == io.EOF:
			s.eof = true
			return io.EOF
		case err != nil:
			s.err = requestErr(s.ctx, s.op, s.u, err)
			return s.err
		}
	}
	s.err = fmt.Errorf("%s %s: %w: no end after %d bytes", s.op, redact(s.u), ErrTooLong, s.end-s.start)
	return s.err
}

// endErr turns an early io.EOF while skipping want bytes into ErrTooShort.
func (s *stream) endErr(err error, want int64) error {
	if err == io.EOF {
		return fmt.Errorf("%s %s: %w: ended at byte %d, %d bytes to skip", s.op, redact(s.u), ErrTooShort, s.pos, want)
	}
	return err
}

func (s *stream) close() {
	s.closer.Close()
	s.cancel(nil)
}

// section is the reader Range returns: the next left bytes of a stream.
type section struct {
	s     *stream
	left  int64
	stale bool
}

func (c *section) Read(p []byte) (int, error) {
	if c.stale {
		return 0, errStaleRange
	}
	if c.left == 0 {
		if c.s.end >= 0 && c.s.pos == c.s.end {
			return 0, c.s.atEnd() // the answer must end with its last range
		}
		return 0, io.EOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.s.Read(p)
	c.left -= int64(n)
	switch {
	case err == io.EOF && c.left > 0:
		return n, fmt.Errorf("%s %s: %w: ended at byte %d", c.s.op, redact(c.s.u), ErrTooShort, c.s.pos)
	case err == io.EOF:
		return n, nil // EOF comes with the next call, after atEnd
	}
	return n, err
}

// stallReader fails a body read that waits longer than d for bytes: it
// cancels the request, and the read returns errStalled.
type stallReader struct {
	rc    io.ReadCloser
	d     time.Duration
	t     *time.Timer
	fired atomic.Bool
}

func newStallReader(rc io.ReadCloser, d time.Duration, cancel context.CancelCauseFunc) *stallReader {
	s := &stallReader{rc: rc, d: d}
	s.t = time.AfterFunc(d, func() {
		s.fired.Store(true)
		cancel(errStalled)
	})
	s.t.Stop()
	return s
}

func (s *stallReader) Read(p []byte) (int, error) {
	s.t.Reset(s.d)
	n, err := s.rc.Read(p)
	s.t.Stop()
	if err != nil && err != io.EOF && s.fired.Load() {
		return n, fmt.Errorf("%w: nothing for %v", errStalled, s.d)
	}
	return n, err
}

func (s *stallReader) Close() error {
	s.t.Stop()
	return s.rc.Close()
}
