package cache

import (
	"testing"

	"github.com/redleader-p2p/redleader/peer/content"
)

// TestSetMaxBytes: a lower cap on an open cache evicts least recently used
// segments at once (pinned ones stay, and say so), a higher or no cap
// evicts nothing, and the new cap holds for later writes.
func TestSetMaxBytes(t *testing.T) {
	const segLen = 4 * content.BlockSize
	segs := make([]testSeg, 4)
	for i := range segs {
		segs[i] = genSegment(t, uint64(200+i), segLen)
	}
	c := openCache(t, t.TempDir(), Options{NoSync: true})
	for _, s := range segs[:3] {
		putAll(t, c, s)
	}
	if _, err := c.ReadBlock(segs[0].seg.ID, 0, nil); err != nil { // 1 is now the least recently used
		t.Fatal(err)
	}
	full := c.Stats().Bytes

	if !c.SetMaxBytes(2 * full) {
		t.Fatal("a cap above the held bytes did not fit")
	}
	if st := c.Stats(); st.Segments != 3 || st.MaxBytes != 2*full || st.Evictions != 0 {
		t.Fatalf("higher cap: %+v", st)
	}

	if !c.SetMaxBytes(full * 3 / 4) {
		t.Fatal("a cap of two segments did not fit")
	}
	st := c.Stats()
	if c.Complete(segs[1].seg.ID) || !c.Complete(segs[0].seg.ID) || !c.Complete(segs[2].seg.ID) {
		t.Fatalf("lower cap evicted the wrong segment: %v", c.Segments())
	}
	if st.Evictions != 1 || st.Bytes > st.MaxBytes || st.MaxBytes != full*3/4 {
		t.Fatalf("lower cap: %+v", st)
	}

	// Every segment pinned: nothing can go, and SetMaxBytes says so.
	unpin0, err := c.Pin(segs[0].seg.ID)
	if err != nil {
		t.Fatal(err)
	}
	unpin2, err := c.Pin(segs[2].seg.ID)
	if err != nil {
		t.Fatal(err)
	}
	if c.SetMaxBytes(full / 4) {
		t.Fatal("a cap below the pinned bytes reported a fit")
	}
	if st := c.Stats(); st.Segments != 2 || st.MaxBytes != full/4 {
		t.Fatalf("pinned: %+v", st)
	}
	unpin0()
	unpin2()

	// No cap: a fourth segment is kept with the others.
	c.SetMaxBytes(0)
	putAll(t, c, segs[3])
	if st := c.Stats(); st.Segments != 3 || st.MaxBytes != 0 {
		t.Fatalf("no cap: %+v", st)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if c.SetMaxBytes(1) {
		t.Fatal("SetMaxBytes on a closed cache reported a fit")
	}
}
