package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/redleader-p2p/redleader/peer/content"
)

// testSecret is the server secret of every synthetic segment.
var testSecret = content.PassphraseSecret("cache test")

// testSeg is one synthetic segment with its bytes.
type testSeg struct {
	seg  *content.Segment
	data []byte // the segment's bytes
}

// block returns the bytes of block i.
func (ts testSeg) block(i int) []byte {
	off := int(ts.seg.BlockOffset(i) - ts.seg.Offset)
	return ts.data[off : off+ts.seg.BlockLen(i)]
}

// randomBytes returns n deterministic pseudo-random bytes for seed.
func randomBytes(seed uint64, n int) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(key).Read(b)
	return b
}

// genContent returns the v1 segments of n deterministic bytes for seed.
func genContent(tb testing.TB, seed uint64, n int) []testSeg {
	tb.Helper()
	data := randomBytes(seed, n)
	info, err := content.Generate(context.Background(), bytes.NewReader(data), testSecret)
	if err != nil {
		tb.Fatal(err)
	}
	out := make([]testSeg, len(info.Segments))
	for i := range info.Segments {
		s := &info.Segments[i]
		out[i] = testSeg{seg: s, data: data[s.Offset:s.End()]}
	}
	return out
}

// genSegment returns one synthetic segment of n bytes (n <= 32 MiB).
func genSegment(tb testing.TB, seed uint64, n int) testSeg {
	tb.Helper()
	return genContent(tb, seed, n)[0]
}

// openCache opens a cache in dir with opts (NoSync unless sync is wanted)
// and closes it at the end of the test.
func openCache(tb testing.TB, dir string, opts Options) *Cache {
	tb.Helper()
	c, err := Open(dir, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// putAll adds ts and stores every one of its blocks.
func putAll(tb testing.TB, c *Cache, ts testSeg) {
	tb.Helper()
	if err := c.AddSegment(ts.seg); err != nil {
		tb.Fatal(err)
	}
	for i := range ts.seg.BlockCount() {
		if err := c.PutBlock(ts.seg.ID, i, ts.block(i)); err != nil {
			tb.Fatal(err)
		}
	}
}

// checkHeld verifies every block c says it holds of ts and returns their indexes.
func checkHeld(tb testing.TB, c *Cache, ts testSeg) []int {
	tb.Helper()
	held := c.Held(ts.seg.ID)
	for _, i := range held {
		b, err := c.ReadBlock(ts.seg.ID, uint32(i), nil)
		if err != nil {
			tb.Fatalf("held block %d: %v", i, err)
		}
		if err := content.VerifyBlock(ts.seg, i, b); err != nil {
			tb.Fatalf("held block %d: %v", i, err)
		}
	}
	return held
}

// newTestServer serves h on a loopback port until the test ends and
// returns its base URL.
func newTestServer(tb testing.TB, h http.Handler) string {
	tb.Helper()
	hs := httptest.NewServer(h)
	tb.Cleanup(hs.Close)
	return hs.URL
}
