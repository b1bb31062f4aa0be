package shaping

import (
	"context"
	"io"
)

// A Reader is an io.Reader whose bytes pass through a Limiter: an origin
// response body read at the WAN rate, for one. While a rate is set it
// reads at most the Limiter's minimum burst per Read and waits for the
// bytes it read before returning them; unlimited, it reads straight
// through. Once ctx is done, Read returns ctx.Err().
type Reader struct {
	ctx context.Context
	r   io.Reader
	l   *Limiter
}

// NewReader returns a Reader of r paced by l (nil: unlimited) until ctx ends.
func NewReader(ctx context.Context, r io.Reader, l *Limiter) *Reader {
	return &Reader{ctx: ctx, r: r, l: l}
}

// Read implements io.Reader. When the wait for bytes already read ends
// with ctx, it returns them with ctx.Err().
func (r *Reader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	if r.l.Rate() != Unlimited {
		p = p[:min(len(p), r.l.MinBurst())]
	}
	n, err := r.r.Read(p)
	if n > 0 {
		if werr := r.l.WaitN(r.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}

// A Writer is an io.Writer whose bytes pass through a Limiter: blocks
// served to LAN peers at lan_rate, for one. While a rate is set it waits
// for, then writes, at most the Limiter's minimum burst at a time;
// unlimited, it writes straight through. Once ctx is done, Write returns
// ctx.Err().
type Writer struct {
	ctx context.Context
	w   io.Writer
	l   *Limiter
}

// NewWriter returns a Writer to w paced by l (nil: unlimited) until ctx ends.
func NewWriter(ctx context.Context, w io.Writer, l *Limiter) *Writer {
	return &Writer{ctx: ctx, w: w, l: l}
}

// Write implements io.Writer.
func (w *Writer) Write(p []byte) (int, error) {
	var done int
	for len(p) > 0 {
		if err := w.ctx.Err(); err != nil {
			return done, err
		}
		chunk := len(p)
		if w.l.Rate() != Unlimited {
			chunk = min(chunk, w.l.MinBurst())
		}
		if err := w.l.WaitN(w.ctx, chunk); err != nil {
			return done, err
		}
		n, err := w.w.Write(p[:chunk])
		done += n
		if err != nil {
			return done, err
		}
		if n < chunk {
			return done, io.ErrShortWrite
		}
		p = p[chunk:]
	}
	return done, nil
}
