package cache

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redleader-p2p/redleader/peer/content"
)

// BenchmarkPutBlock stores 64 KiB blocks (verify, write, commit record),
// with and without fsync.
func BenchmarkPutBlock(b *testing.B) {
	ts := genSegment(b, 10, content.SegmentSize)
	for _, bc := range []struct {
		name   string
		noSync bool
	}{{"fsync", false}, {"nosync", true}} {
		b.Run(bc.name, func(b *testing.B) {
			c := openCache(b, b.TempDir(), Options{NoSync: bc.noSync})
			if err := c.AddSegment(ts.seg); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(content.BlockSize)
			i := 0
			for b.Loop() {
				if i == content.BlocksPerSegment {
					b.StopTimer()
					if err := c.Remove(ts.seg.ID); err != nil {
						b.Fatal(err)
					}
					if err := c.AddSegment(ts.seg); err != nil {
						b.Fatal(err)
					}
					i = 0
					b.StartTimer()
				}
				if err := c.PutBlock(ts.seg.ID, i, ts.block(i)); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkPutBlockParallel stores a whole segment per iteration from
// four writers at once, as a parallel fetch from several peers does; the
// writers share fsyncs.
func BenchmarkPutBlockParallel(b *testing.B) {
	ts := genSegment(b, 10, content.SegmentSize)
	for _, bc := range []struct {
		name   string
		noSync bool
	}{{"fsync", false}, {"nosync", true}} {
		b.Run(bc.name, func(b *testing.B) {
			c := openCache(b, b.TempDir(), Options{NoSync: bc.noSync})
			b.SetBytes(content.SegmentSize)
			for b.Loop() {
				b.StopTimer()
				_ = c.Remove(ts.seg.ID)
				if err := c.AddSegment(ts.seg); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				var next atomic.Int64
				var wg sync.WaitGroup
				for range 4 {
					wg.Go(func() {
						for i := int(next.Add(1) - 1); i < content.BlocksPerSegment; i = int(next.Add(1) - 1) {
							if err := c.PutBlock(ts.seg.ID, i, ts.block(i)); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
			}
		})
	}
}

// BenchmarkReadBlock reads 64 KiB blocks of a full segment (page cache
// warm), serially and from parallel readers.
func BenchmarkReadBlock(b *testing.B) {
	ts := genSegment(b, 11, content.SegmentSize)
	c := openCache(b, b.TempDir(), Options{NoSync: true})
	putAll(b, c, ts)
	b.Run("serial", func(b *testing.B) {
		b.SetBytes(content.BlockSize)
		buf := make([]byte, 0, content.BlockSize)
		i := 0
		for b.Loop() {
			var err error
			if buf, err = c.ReadBlock(ts.seg.ID, uint32(i%content.BlocksPerSegment), buf[:0]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetBytes(content.BlockSize)
		b.RunParallel(func(pb *testing.PB) {
			buf := make([]byte, 0, content.BlockSize)
			i := 0
			for pb.Next() {
				var err error
				if buf, err = c.ReadBlock(ts.seg.ID, uint32(i%content.BlocksPerSegment), buf[:0]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	})
}

// BenchmarkOpen measures the start-up re-verification of a full segment.
func BenchmarkOpen(b *testing.B) {
	ts := genSegment(b, 12, content.SegmentSize)
	dir := b.TempDir()
	c, err := Open(dir, Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	putAll(b, c, ts)
	if err := c.Close(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(content.SegmentSize)
	for b.Loop() {
		c, err := Open(dir, Options{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		if c.Stats().Blocks != content.BlocksPerSegment {
			b.Fatal("blocks lost")
		}
		_ = c.Close()
	}
}
