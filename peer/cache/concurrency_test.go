package cache

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/redleader-p2p/redleader/peer/content"
)

// TestConcurrentReadersWriter runs writers, a remover and several readers
// at once under a cap that forces evictions; every block read must be
// right and the byte accounting must survive.
func TestConcurrentReadersWriter(t *testing.T) {
	defer goleak.VerifyNone(t)
	const segLen = 6*content.BlockSize + 500
	segs := make([]testSeg, 6)
	for i := range segs {
		segs[i] = genSegment(t, uint64(200+i), segLen)
	}
	dir := t.TempDir()
	c, err := Open(dir, Options{MaxBytes: 3 * segLen, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	var (
		wg      sync.WaitGroup
		stop    atomic.Bool
		reads   atomic.Int64
		wholes  atomic.Int64
		errOnce sync.Once
		failure error
	)
	fail := func(err error) {
		errOnce.Do(func() { failure = err })
		stop.Store(true)
	}
	allowed := func(err error) bool {
		return err == nil || errors.Is(err, ErrNotHeld) || errors.Is(err, ErrUnknownSegment) || errors.Is(err, ErrIncomplete)
	}

	// Two writers store every segment in random block orders, five times
	// over; they sometimes store the same block at once.
	for w := range 2 {
		wg.Go(func() {
			defer stop.Store(true)
			rng := rand.New(rand.NewPCG(uint64(w), 2))
			for round := 0; round < 5 && !stop.Load(); round++ {
				for _, si := range rng.Perm(len(segs)) {
					ts := segs[si]
					for _, i := range rng.Perm(ts.seg.BlockCount()) {
						if stop.Load() {
							return
						}
						err := c.PutBlock(ts.seg.ID, i, ts.block(i))
						if errors.Is(err, ErrUnknownSegment) { // evicted or removed: add it again
							if err = c.AddSegment(ts.seg); err == nil {
								err = c.PutBlock(ts.seg.ID, i, ts.block(i))
							}
						}
						// ErrFull: readers pinned the other segments for ReadSegmentTo.
						if err != nil && !errors.Is(err, ErrUnknownSegment) && !errors.Is(err, ErrFull) {
							fail(err)
							return
						}
					}
				}
			}
		})
	}
	// The remover drops a random segment now and then.
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(3, 4))
		for n := 0; !stop.Load(); n++ {
			if n%200 == 0 {
				if err := c.Remove(segs[rng.IntN(len(segs))].seg.ID); !allowed(err) {
					fail(err)
				}
			}
			_ = c.Stats()
			_ = c.Segments()
		}
	})
	// Readers read whatever is held and check it.
	for r := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 5))
			var buf []byte
			for n := 0; !stop.Load(); n++ {
				ts := segs[rng.IntN(len(segs))]
				id := ts.seg.ID
				_, _, _ = c.Segment(id)
				_, _ = c.BlockCount(id)
				held := c.Held(id)
				if len(held) > 0 {
					i := held[rng.IntN(len(held))]
					var err error
					buf, err = c.ReadBlock(id, uint32(i), buf[:0])
					if err == nil && !bytes.Equal(buf, ts.block(i)) {
						fail(errors.New("wrong block bytes"))
					}
					if !allowed(err) {
						fail(err)
					}
					if err == nil {
						reads.Add(1)
					}
				}
				if n%50 == 0 && c.Complete(id) {
					var out bytes.Buffer
					_, err := c.ReadSegmentTo(id, &out)
					if err == nil && !bytes.Equal(out.Bytes(), ts.data) {
						fail(errors.New("wrong segment bytes"))
					}
					if !allowed(err) {
						fail(err)
					}
					if err == nil {
						wholes.Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
	if failure != nil {
		t.Fatal(failure)
	}
	st := c.Stats()
	t.Logf("%d block reads, %d whole segment reads, %+v", reads.Load(), wholes.Load(), st)
	if st.Bytes > st.MaxBytes || st.CorruptDropped != 0 || st.Evictions == 0 {
		t.Fatalf("Stats = %+v", st)
	}
	// The accounting matches what a fresh Open finds on disk.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c2, err := Open(dir, Options{MaxBytes: 3 * segLen, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	st2 := c2.Stats()
	if st2.Bytes != st.Bytes || st2.Blocks != st.Blocks || st2.Segments != st.Segments || st2.CorruptDropped != 0 {
		t.Fatalf("after reopen %+v, before %+v", st2, st)
	}
}
