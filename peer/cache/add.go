package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/redleader-p2p/redleader/peer/content"
)

// ErrContentMismatch means the bytes given to AddContent are not the
// content its content information describes: a block hash or the length
// differs.
var ErrContentMismatch = errors.New("content does not match its content information")

// AddResult tells what AddContent did.
type AddResult struct {
	// Bytes is the number of content bytes read.
	Bytes int64
	// Verified is the number of blocks read and verified; Stored of them
	// were not held before.
	Verified, Stored int
	// Kept are the segments the call stored blocks of and kept, in
	// content order.
	Kept []content.SegmentID
	// RolledBack is the segment being added when the call failed, removed
	// again because the call had created it; nil when none was.
	RolledBack *content.SegmentID
}

// AddContent pre-stages content the caller already has (a file from a USB
// disk): it reads exactly the bytes of info's range (Info.Range) from r
// and stores every block that lies wholly inside the range and whose hash
// info lists, verifying each against its hash before it is stored (also
// when the block is already held). info's segment descriptions are
// validated like AddSegment's (ID = HoHoDk(Kp, HoD), HoD against a
// complete v1 hash list) before a segment is registered, which happens
// only once its first block verified: content that does not match from
// the start leaves nothing in the cache.
//
// On failure (ErrContentMismatch when a block or the length is wrong, a
// read error, ctx done, ErrFull, ErrConflict…) the segments completed
// before the failing one are kept: every block stored of them verified.
// The segment being added when the failure came is removed again if this
// call created it (AddResult.RolledBack); if it was in the cache before,
// it keeps its old blocks plus the verified new ones. The segments of one
// call are pinned until it returns, so a content larger than the cache's
// cap fails with ErrFull instead of evicting its own beginning.
//
// AddContent calls run one at a time (a second one waits for the first,
// or for its ctx), so that one call's rollback never removes a segment
// another call is adding.
func (c *Cache) AddContent(ctx context.Context, info *content.Info, r io.Reader) (AddResult, error) {
	var res AddResult
	select {
	case c.addContentSem <- struct{}{}:
		defer func() { <-c.addContentSem }()
	case <-ctx.Done():
		return res, fmt.Errorf("add content: %w", ctx.Err())
	}
	if err := checkLayout(info); err != nil {
		return res, fmt.Errorf("add content: %w", err)
	}
	a := &contentAdder{c: c, ctx: ctx, r: r, res: &res}
	defer a.unpinAll()
	start, end := info.Range()
	a.pos, a.start, a.end = start, start, end
	for i := range info.Segments {
		if err := a.addSegment(i, &info.Segments[i]); err != nil {
			return res, fmt.Errorf("add content: %w", err)
		}
	}
	// Nothing may follow the range.
	var one [1]byte
	for {
		n, err := r.Read(one[:])
		if n > 0 {
			return res, fmt.Errorf("add content: more than the %d bytes of the range [%d, %d): %w",
				end-start, start, end, ErrContentMismatch)
		}
		if errors.Is(err, io.EOF) {
			return res, nil
		}
		if err != nil {
			return res, fmt.Errorf("add content: read after the last byte: %w", err)
		}
	}
}

// checkLayout checks that info's segments follow each other without gaps
// and that its range is not empty, so that AddContent reads the range in
// one pass.
func checkLayout(info *content.Info) error {
	if len(info.Segments) == 0 {
		return fmt.Errorf("no segments: %w", ErrBadDescription)
	}
	for i := 1; i < len(info.Segments); i++ {
		if info.Segments[i].Offset != info.Segments[i-1].End() {
			return fmt.Errorf("segment %d starts at %d, not at %d: %w",
				i, info.Segments[i].Offset, info.Segments[i-1].End(), ErrBadDescription)
		}
	}
	if start, end := info.Range(); start >= end {
		return fmt.Errorf("empty range [%d, %d): %w", start, end, ErrBadDescription)
	}
	return nil
}

// contentAdder is the state of one AddContent call.
type contentAdder struct {
	c     *Cache
	ctx   context.Context
	r     io.Reader
	res   *AddResult
	start uint64 // range start
	end   uint64 // range end
	pos   uint64 // content offset of the next byte of r
	buf   []byte
	unpin []func()
}

func (a *contentAdder) unpinAll() {
	for _, u := range a.unpin {
		u()
	}
}

// addSegment reads the range's bytes of segment i and stores its blocks.
func (a *contentAdder) addSegment(i int, seg *content.Segment) error {
	registered, created := false, false
	fail := func(err error) error {
		if created {
			if rerr := a.c.Remove(seg.ID); rerr == nil || errors.Is(rerr, ErrUnknownSegment) {
				id := seg.ID
				a.res.RolledBack = &id
			} else {
				err = errors.Join(err, rerr)
			}
		}
		return err
	}
	for b := range seg.BlockCount() {
		if err := a.ctx.Err(); err != nil {
			return fail(err)
		}
		bs := seg.BlockOffset(b)
		be := bs + uint64(seg.BlockLen(b))
		switch {
		case be <= a.pos: // before the range
			continue
		case bs >= a.end: // after it
			continue
		case bs < a.pos || be > a.end || b >= len(seg.BlockHashes):
			// Partly outside the range, or no hash listed: its bytes
			// cannot be verified; skip them.
			if err := a.skip(min(be, a.end) - a.pos); err != nil {
				return fail(err)
			}
			continue
		}
		n := seg.BlockLen(b)
		a.buf = slices.Grow(a.buf[:0], n)[:n]
		if err := a.read(a.buf); err != nil {
			return fail(err)
		}
		if err := content.VerifyBlock(seg, b, a.buf); err != nil {
			for _, cause := range []error{content.ErrBlockHash, content.ErrBlockLength} {
				if errors.Is(err, cause) {
					err = cause // the rest of its message is said below
				}
			}
			return fail(fmt.Errorf("bytes %d-%d (block %d of segment %d, %v): %w: %w",
				bs, be-1, b, i, seg.ID, ErrContentMismatch, err))
		}
		if !registered {
			_, existed := a.c.Describe(seg.ID)
			if err := a.c.AddSegment(seg); err != nil {
				return fail(err)
			}
			created = !existed
			registered = true
			unpin, err := a.c.Pin(seg.ID)
			if err != nil {
				return fail(err)
			}
			a.unpin = append(a.unpin, unpin)
		}
		held := a.c.Has(seg.ID, b)
		if err := a.c.PutBlock(seg.ID, b, a.buf); err != nil {
			return fail(err)
		}
		a.res.Verified++
		if !held {
			a.res.Stored++
		}
	}
	if registered {
		a.res.Kept = append(a.res.Kept, seg.ID)
	}
	return nil
}

// read fills p from the content stream; an early end is a mismatch.
func (a *contentAdder) read(p []byte) error {
	for len(p) > 0 {
		n, err := a.r.Read(p)
		p = p[n:]
		a.pos += uint64(n)
		a.res.Bytes += int64(n)
		switch {
		case len(p) == 0:
			return nil
		case errors.Is(err, io.EOF):
			return fmt.Errorf("content ends at byte %d, its content information describes bytes [%d, %d): %w",
				a.pos, a.start, a.end, ErrContentMismatch)
		case err != nil:
			return fmt.Errorf("read content at byte %d: %w", a.pos, err)
		}
	}
	return nil
}

// skip reads and drops n bytes of the content stream.
func (a *contentAdder) skip(n uint64) error {
	var buf [32 << 10]byte
	for n > 0 {
		if err := a.read(buf[:min(n, uint64(len(buf)))]); err != nil {
			return err
		}
		n -= min(n, uint64(len(buf)))
	}
	return nil
}
