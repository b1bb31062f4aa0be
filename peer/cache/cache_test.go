package cache

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/retrieval"
)

func TestPutReadBlocks(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir, Options{NoSync: true})
	ts := genSegment(t, 1, 5*content.BlockSize+1000) // 6 blocks, the last short
	id := ts.seg.ID

	if _, _, ok := c.Segment(id); ok {
		t.Fatal("unknown segment reported held")
	}
	if err := c.PutBlock(id, 0, ts.block(0)); !errors.Is(err, ErrUnknownSegment) {
		t.Fatalf("put before AddSegment: %v", err)
	}
	if err := c.AddSegment(ts.seg); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := c.Segment(id); ok {
		t.Fatal("segment without blocks reported held")
	}
	if _, ok := c.BlockCount(id); ok {
		t.Fatal("segment without blocks counted")
	}

	bad := bytes.Clone(ts.block(2))
	bad[100] ^= 1
	tests := []struct {
		name  string
		index int
		data  []byte
		want  error
	}{
		{"block 2", 2, ts.block(2), nil},
		{"block 2 again", 2, ts.block(2), nil},
		{"short last block", 5, ts.block(5), nil},
		{"block 3", 3, ts.block(3), nil},
		{"flipped bit", 1, bad, content.ErrBlockHash},
		{"wrong length", 1, ts.block(1)[:100], content.ErrBlockLength},
		{"index past the end", 6, ts.block(1), content.ErrBlockIndex},
		{"negative index", -1, ts.block(1), content.ErrBlockIndex},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := c.PutBlock(id, tt.index, tt.data); !errors.Is(err, tt.want) {
				t.Fatalf("PutBlock = %v, want %v", err, tt.want)
			}
		})
	}

	check := func(c *Cache) {
		t.Helper()
		if got := checkHeld(t, c, ts); !slices.Equal(got, []int{2, 3, 5}) {
			t.Fatalf("Held = %v", got)
		}
		kp, ranges, ok := c.Segment(id)
		want := []retrieval.BlockRange{{Index: 2, Count: 2}, {Index: 5, Count: 1}}
		if !ok || kp != ts.seg.Kp || !slices.Equal(ranges, want) {
			t.Fatalf("Segment = %v %v %v", kp, ranges, ok)
		}
		if n, ok := c.BlockCount(id); n != 3 || !ok {
			t.Fatalf("BlockCount = %d %v", n, ok)
		}
		if !c.Has(id, 2) || c.Has(id, 1) || c.Has(id, 99) || c.Complete(id) {
			t.Fatal("Has/Complete wrong")
		}
		dst := []byte("prefix")
		got, err := c.ReadBlock(id, 5, dst)
		if err != nil || !bytes.Equal(got[:6], []byte("prefix")) || !bytes.Equal(got[6:], ts.block(5)) {
			t.Fatalf("ReadBlock appends: %v", err)
		}
		if got, err := c.ReadBlock(id, 1, dst); !errors.Is(err, ErrNotHeld) || string(got) != "prefix" {
			t.Fatalf("ReadBlock of a missing block = %q, %v", got, err)
		}
		if _, err := c.ReadSegmentTo(id, &bytes.Buffer{}); !errors.Is(err, ErrIncomplete) {
			t.Fatalf("ReadSegmentTo of a partial segment: %v", err)
		}
		if d, ok := c.Describe(id); !ok || d.HoD != ts.seg.HoD || len(d.BlockHashes) != 6 {
			t.Fatalf("Describe = %+v %v", d, ok)
		}
		if got := c.Segments(); !slices.Equal(got, []content.SegmentID{id}) {
			t.Fatalf("Segments = %v", got)
		}
		st := c.Stats()
		if st.Segments != 1 || st.Blocks != 3 || st.CorruptDropped != 0 || st.Bytes < 2*content.BlockSize+1000 {
			t.Fatalf("Stats = %+v", st)
		}
	}
	check(c)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = openCache(t, dir, Options{NoSync: true})
	check(c)

	for _, i := range []int{0, 1, 4} {
		if err := c.PutBlock(id, i, ts.block(i)); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if n, err := c.ReadSegmentTo(id, &buf); err != nil || n != int64(len(ts.data)) || !bytes.Equal(buf.Bytes(), ts.data) {
		t.Fatalf("ReadSegmentTo = %d, %v", n, err)
	}
	if !c.Complete(id) {
		t.Fatal("not complete")
	}
	if err := c.Remove(id); err != nil {
		t.Fatal(err)
	}
	if c.Has(id, 0) || len(c.Segments()) != 0 || c.Stats().Bytes != 0 {
		t.Fatalf("after Remove: %+v", c.Stats())
	}
	if err := c.Remove(id); !errors.Is(err, ErrUnknownSegment) {
		t.Fatalf("second Remove: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("files left after Remove: %v", ents)
	}
}

func TestAddSegment(t *testing.T) {
	ts := genSegment(t, 2, 4*content.BlockSize)
	mutate := func(f func(s *content.Segment)) *content.Segment {
		s := cloneSegment(ts.seg)
		f(&s)
		return &s
	}
	tests := []struct {
		name string
		seg  *content.Segment
		want error
	}{
		{"valid", ts.seg, nil},
		{"nil", nil, ErrBadDescription},
		{"ID not HoHoDk", mutate(func(s *content.Segment) { s.ID[0] ^= 1 }), ErrBadDescription},
		{"wrong Kp", mutate(func(s *content.Segment) { s.Kp[0] ^= 1 }), ErrBadDescription},
		{"block hash not matching HoD", mutate(func(s *content.Segment) { s.BlockHashes[1][0] ^= 1 }), content.ErrHoDMismatch},
		{"too many hashes", mutate(func(s *content.Segment) { s.BlockHashes = append(s.BlockHashes, s.HoD) }), ErrBadDescription},
		{"zero length", mutate(func(s *content.Segment) { s.Length = 0 }), ErrBadDescription},
		{"v1 block size", mutate(func(s *content.Segment) { s.BlockSize = 4096 }), ErrBadDescription},
		{"v1 too long", mutate(func(s *content.Segment) { s.Length = content.SegmentSize + 1 }), ErrBadDescription},
		{"unknown algorithm", mutate(func(s *content.Segment) { s.HashAlgo = 7 }), ErrBadDescription},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := openCache(t, t.TempDir(), Options{NoSync: true})
			if err := c.AddSegment(tt.seg); !errors.Is(err, tt.want) {
				t.Fatalf("AddSegment = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestAddSegmentGrowsHashList(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir, Options{NoSync: true})
	ts := genSegment(t, 3, 4*content.BlockSize)
	id := ts.seg.ID
	partial := cloneSegment(ts.seg)
	partial.BlockHashes = partial.BlockHashes[:2] // as a range request's CI lists them
	if err := c.AddSegment(&partial); err != nil {
		t.Fatal(err)
	}
	if err := c.PutBlock(id, 1, ts.block(1)); err != nil {
		t.Fatal(err)
	}
	if err := c.PutBlock(id, 3, ts.block(3)); !errors.Is(err, content.ErrBlockIndex) {
		t.Fatalf("block without a listed hash: %v", err)
	}
	if err := c.AddSegment(ts.seg); err != nil {
		t.Fatal(err)
	}
	if err := c.PutBlock(id, 3, ts.block(3)); err != nil {
		t.Fatal(err)
	}
	if err := c.AddSegment(&partial); err != nil { // a shorter list changes nothing
		t.Fatal(err)
	}
	conflict := cloneSegment(&partial)
	conflict.BlockHashes[0][0] ^= 1
	if err := c.AddSegment(&conflict); !errors.Is(err, ErrConflict) {
		t.Fatalf("conflicting description: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = openCache(t, dir, Options{NoSync: true})
	if d, ok := c.Describe(id); !ok || len(d.BlockHashes) != 4 {
		t.Fatalf("hash list not persisted: %d", len(d.BlockHashes))
	}
	if got := checkHeld(t, c, ts); !slices.Equal(got, []int{1, 3}) {
		t.Fatalf("Held = %v", got)
	}
}

func TestClosed(t *testing.T) {
	c := openCache(t, t.TempDir(), Options{NoSync: true})
	ts := genSegment(t, 4, content.BlockSize)
	putAll(t, c, ts)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	id := ts.seg.ID
	if _, err := c.ReadBlock(id, 0, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("ReadBlock: %v", err)
	}
	if err := c.PutBlock(id, 0, ts.block(0)); !errors.Is(err, ErrClosed) {
		t.Fatalf("PutBlock: %v", err)
	}
	if err := c.AddSegment(ts.seg); !errors.Is(err, ErrClosed) {
		t.Fatalf("AddSegment: %v", err)
	}
	if _, err := c.Pin(id); !errors.Is(err, ErrClosed) {
		t.Fatalf("Pin: %v", err)
	}
	if _, _, ok := c.Segment(id); ok || c.Has(id, 0) {
		t.Fatal("closed cache serves")
	}
}

// TestCorruptOnDisk damages a closed cache's files in various ways and
// checks what the next Open keeps.
func TestCorruptOnDisk(t *testing.T) {
	ts := genSegment(t, 5, 6*content.BlockSize) // 6 full blocks
	all := []int{0, 1, 2, 3, 4, 5}
	segDir := ts.seg.ID.String()
	flip := func(t *testing.T, dir string, off int64) {
		f, err := os.OpenFile(filepath.Join(dir, segDir, dataFile), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := make([]byte, 3)
		if _, err := f.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		for i := range b {
			b[i] ^= 0xa5
		}
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	appendTo := func(t *testing.T, path string, b []byte) {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name        string
		hold        []int // blocks stored before the damage
		damage      func(t *testing.T, dir string)
		wantHeld    []int
		wantCorrupt uint64
		wantBad     uint64
	}{
		{
			name: "intact", hold: all, damage: func(*testing.T, string) {},
			wantHeld: all,
		},
		{
			name: "flipped bytes in two blocks", hold: all,
			damage: func(t *testing.T, dir string) {
				flip(t, dir, 1*content.BlockSize+10)
				flip(t, dir, 4*content.BlockSize+content.BlockSize-3)
			},
			wantHeld: []int{0, 2, 3, 5}, wantCorrupt: 2,
		},
		{
			name: "truncated data file", hold: all,
			damage: func(t *testing.T, dir string) {
				if err := os.Truncate(filepath.Join(dir, segDir, dataFile), 4*content.BlockSize+5); err != nil {
					t.Fatal(err)
				}
			},
			wantHeld: []int{0, 1, 2, 3}, wantCorrupt: 2,
		},
		{
			name: "torn commit record", hold: []int{0, 2},
			damage: func(t *testing.T, dir string) {
				rec := encodeRecord(3, content.BlockSize)
				appendTo(t, filepath.Join(dir, segDir, logFile), rec[:9])
			},
			wantHeld: []int{0, 2},
		},
		{
			name: "garbage record between good ones", hold: []int{0},
			damage: func(t *testing.T, dir string) {
				rec := encodeRecord(1, content.BlockSize)
				rec[5] ^= 1 // checksum no longer matches
				good := encodeRecord(0, content.BlockSize)
				appendTo(t, filepath.Join(dir, segDir, logFile), append(rec[:], good[:]...))
			},
			wantHeld: []int{0},
		},
		{
			name: "committed record for an unwritten block", hold: []int{0},
			damage: func(t *testing.T, dir string) {
				rec := encodeRecord(4, content.BlockSize)
				appendTo(t, filepath.Join(dir, segDir, logFile), rec[:])
			},
			wantHeld: []int{0}, wantCorrupt: 1,
		},
		{
			name: "record with a wrong length", hold: []int{0},
			damage: func(t *testing.T, dir string) {
				rec := encodeRecord(1, 7)
				appendTo(t, filepath.Join(dir, segDir, logFile), rec[:])
			},
			wantHeld: []int{0},
		},
		{
			name: "uncommitted torn write of a block", hold: []int{0},
			damage: func(t *testing.T, dir string) {
				f, err := os.OpenFile(filepath.Join(dir, segDir, dataFile), os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if _, err := f.WriteAt(ts.block(1)[:1000], content.BlockSize); err != nil {
					t.Fatal(err)
				}
			},
			wantHeld: []int{0},
		},
		{
			name: "corrupt description", hold: all,
			damage: func(t *testing.T, dir string) {
				p := filepath.Join(dir, segDir, descFile)
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				b[40] ^= 1
				if err := os.WriteFile(p, b, 0o600); err != nil {
					t.Fatal(err)
				}
			},
			wantBad: 1,
		},
		{
			name: "missing description", hold: all,
			damage: func(t *testing.T, dir string) {
				if err := os.Remove(filepath.Join(dir, segDir, descFile)); err != nil {
					t.Fatal(err)
				}
			},
			wantBad: 1,
		},
		{
			name: "missing commit log", hold: all,
			damage: func(t *testing.T, dir string) {
				if err := os.Remove(filepath.Join(dir, segDir, logFile)); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "leftovers of interrupted operations", hold: []int{1},
			damage: func(t *testing.T, dir string) {
				for _, d := range []string{".new-123", ".trash-7-abc"} {
					if err := os.MkdirAll(filepath.Join(dir, d, "x"), 0o700); err != nil {
						t.Fatal(err)
					}
				}
				if err := os.WriteFile(filepath.Join(dir, segDir, logFile+tmpSuffix), []byte("junk"), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "README"), []byte("not ours"), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			wantHeld: []int{1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			c, err := Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.AddSegment(ts.seg); err != nil {
				t.Fatal(err)
			}
			for _, i := range tt.hold {
				if err := c.PutBlock(ts.seg.ID, i, ts.block(i)); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			tt.damage(t, dir)

			c = openCache(t, dir, Options{})
			st := c.Stats()
			if st.CorruptDropped != tt.wantCorrupt || st.BadSegments != tt.wantBad {
				t.Fatalf("Stats = %+v, want %d corrupt, %d bad", st, tt.wantCorrupt, tt.wantBad)
			}
			if got := checkHeld(t, c, ts); !slices.Equal(got, tt.wantHeld) && len(got)+len(tt.wantHeld) > 0 {
				t.Fatalf("Held = %v, want %v", got, tt.wantHeld)
			}
			if tt.wantBad > 0 && len(c.Segments()) != 0 {
				t.Fatal("bad segment kept")
			}
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if e.Name() != segDir && e.Name() != "README" {
					t.Errorf("left in cache dir: %s", e.Name())
				}
			}
			if _, err := os.Stat(filepath.Join(dir, segDir, logFile+tmpSuffix)); err == nil {
				t.Error("temporary log left")
			}
			// The dropped blocks can be stored again, and the log was
			// compacted: a second Open finds nothing wrong.
			if tt.wantBad == 0 {
				for _, i := range tt.hold {
					if err := c.PutBlock(ts.seg.ID, i, ts.block(i)); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			c = openCache(t, dir, Options{})
			if st := c.Stats(); st.CorruptDropped != 0 || st.BadSegments != 0 {
				t.Fatalf("second Open: %+v", st)
			}
			want := tt.hold
			if tt.wantBad > 0 {
				want = nil
			}
			if got := checkHeld(t, c, ts); !slices.Equal(got, want) && len(got)+len(want) > 0 {
				t.Fatalf("after repair Held = %v, want %v", got, want)
			}
		})
	}
}

// TestReadSegmentToDropsCorrupt corrupts a block under a running cache.
func TestReadSegmentToDropsCorrupt(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir, Options{NoSync: true})
	ts := genSegment(t, 6, 3*content.BlockSize)
	putAll(t, c, ts)
	f, err := os.OpenFile(filepath.Join(dir, ts.seg.ID.String(), dataFile), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{1, 2, 3}, content.BlockSize+77); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	if _, err := c.ReadSegmentTo(ts.seg.ID, &bytes.Buffer{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("ReadSegmentTo: %v", err)
	}
	if c.Has(ts.seg.ID, 1) || c.Stats().CorruptDropped != 1 || c.Stats().Blocks != 2 {
		t.Fatalf("corrupt block kept: %+v", c.Stats())
	}
	if err := c.PutBlock(ts.seg.ID, 1, ts.block(1)); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := c.ReadSegmentTo(ts.seg.ID, &buf); err != nil || !bytes.Equal(buf.Bytes(), ts.data) {
		t.Fatalf("after repair: %v", err)
	}
}

func TestLRUEviction(t *testing.T) {
	const segLen = 4 * content.BlockSize
	segs := make([]testSeg, 4)
	for i := range segs {
		segs[i] = genSegment(t, uint64(100+i), segLen)
	}
	// Room for two and a half segments.
	dir := t.TempDir()
	c := openCache(t, dir, Options{MaxBytes: 2*segLen + segLen/2, NoSync: true})
	putAll(t, c, segs[0])
	putAll(t, c, segs[1])
	if _, err := c.ReadBlock(segs[0].seg.ID, 0, nil); err != nil { // 0 is now more recent than 1
		t.Fatal(err)
	}
	putAll(t, c, segs[2])
	st := c.Stats()
	if c.Complete(segs[1].seg.ID) || !c.Complete(segs[0].seg.ID) || !c.Complete(segs[2].seg.ID) {
		t.Fatalf("wrong segment evicted: %v", c.Segments())
	}
	if st.Evictions != 1 || st.Bytes > st.MaxBytes || st.Segments != 2 {
		t.Fatalf("Stats = %+v", st)
	}
	if _, err := os.Stat(filepath.Join(dir, segs[1].seg.ID.String())); !os.IsNotExist(err) {
		t.Fatalf("evicted segment still on disk: %v", err)
	}

	// Pinned segments stay; the LRU unpinned one goes.
	unpin, err := c.Pin(segs[0].seg.ID)
	if err != nil {
		t.Fatal(err)
	}
	putAll(t, c, segs[3])
	if !c.Complete(segs[0].seg.ID) || c.Complete(segs[2].seg.ID) || !c.Complete(segs[3].seg.ID) {
		t.Fatalf("pinned segment evicted: %v", c.Segments())
	}
	// With every other segment pinned the cap cannot be kept.
	unpin3, err := c.Pin(segs[3].seg.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddSegment(segs[1].seg); err != nil {
		t.Fatal(err)
	}
	var full error
	for i := range segs[1].seg.BlockCount() {
		if full = c.PutBlock(segs[1].seg.ID, i, segs[1].block(i)); full != nil {
			break
		}
	}
	if !errors.Is(full, ErrFull) {
		t.Fatalf("PutBlock over the cap with everything pinned: %v", full)
	}
	unpin()
	unpin() // idempotent
	unpin3()
	if err := c.PutBlock(segs[1].seg.ID, 3, segs[1].block(3)); err != nil {
		t.Fatalf("after unpin: %v", err)
	}
	if st := c.Stats(); st.Bytes > st.MaxBytes {
		t.Fatalf("over the cap: %+v", st)
	}

	// A lower cap at Open evicts the least recently written segments
	// (by the commit log's modification time; set here, as the clock may
	// not tick between the writes above).
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for age, ts := range []testSeg{segs[1], segs[3]} {
		mt := now.Add(-time.Duration(age) * time.Hour)
		if err := os.Chtimes(filepath.Join(dir, ts.seg.ID.String(), logFile), mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	c = openCache(t, dir, Options{MaxBytes: segLen + segLen/2, NoSync: true})
	if st := c.Stats(); st.Bytes > st.MaxBytes || !c.Has(segs[1].seg.ID, 3) || c.Has(segs[3].seg.ID, 0) {
		t.Fatalf("after reopen with a lower cap: %+v, %v", st, c.Segments())
	}
}

// TestServePartialSegment serves a segment over MS-PCCRR while it is
// being written: each block is fetchable from the moment it is stored.
func TestServePartialSegment(t *testing.T) {
	leader := openCache(t, t.TempDir(), Options{NoSync: true})
	peer := openCache(t, t.TempDir(), Options{NoSync: true})
	srv, err := retrieval.NewServer(retrieval.ServerConfig{Store: leader})
	if err != nil {
		t.Fatal(err)
	}
	hs := newTestServer(t, srv)
	client := retrieval.NewClient(retrieval.ClientConfig{})
	defer client.Close()

	ts := genSegment(t, 7, 5*content.BlockSize+123)
	id := ts.seg.ID
	for _, c := range []*Cache{leader, peer} {
		if err := c.AddSegment(ts.seg); err != nil {
			t.Fatal(err)
		}
	}
	order := []int{3, 0, 5, 1, 4, 2}
	for k, i := range order {
		if err := leader.PutBlock(id, i, ts.block(i)); err != nil {
			t.Fatal(err)
		}
		if n, ok := leader.BlockCount(id); !ok || int(n) != k+1 {
			t.Fatalf("BlockCount = %d %v", n, ok)
		}
		res, err := client.FetchSegment(t.Context(), ts.seg, nil, []string{hs}, func(index int, data []byte) error {
			return peer.PutBlock(id, index, data)
		})
		if k < len(order)-1 && !errors.Is(err, retrieval.ErrIncomplete) {
			t.Fatalf("fetch after %d blocks: %v", k+1, err)
		}
		if k == len(order)-1 && err != nil {
			t.Fatalf("fetch of the complete segment: %v", err)
		}
		if want := slices.Sorted(slices.Values(order[:k+1])); !slices.Equal(peer.Held(id), want) {
			t.Fatalf("peer holds %v, want %v (missing %v)", peer.Held(id), want, res.Missing)
		}
	}
	var buf bytes.Buffer
	if _, err := peer.ReadSegmentTo(id, &buf); err != nil || !bytes.Equal(buf.Bytes(), ts.data) {
		t.Fatalf("peer copy: %v", err)
	}
}

func TestFullSegment(t *testing.T) {
	if testing.Short() {
		t.Skip("32 MiB segment")
	}
	segs := genContent(t, 8, content.SegmentSize+3*content.BlockSize+5) // one full segment and a short one
	if len(segs) != 2 || segs[0].seg.BlockCount() != content.BlocksPerSegment {
		t.Fatalf("%d segments", len(segs))
	}
	dir := t.TempDir()
	c := openCache(t, dir, Options{})
	for _, ts := range segs {
		if err := c.AddSegment(ts.seg); err != nil {
			t.Fatal(err)
		}
	}
	// Four writers, each storing every fourth block of both segments, in parallel.
	errs := make(chan error, 4)
	for w := range 4 {
		go func() {
			for _, ts := range segs {
				for i := w; i < ts.seg.BlockCount(); i += 4 {
					if err := c.PutBlock(ts.seg.ID, i, ts.block(i)); err != nil {
						errs <- err
						return
					}
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = openCache(t, dir, Options{})
	for _, ts := range segs {
		var buf bytes.Buffer
		if n, err := c.ReadSegmentTo(ts.seg.ID, &buf); err != nil || n != int64(ts.seg.Length) || !bytes.Equal(buf.Bytes(), ts.data) {
			t.Fatalf("segment %v: %d bytes, %v", ts.seg.ID, n, err)
		}
	}
	if st := c.Stats(); st.Blocks != content.BlocksPerSegment+4 || st.CorruptDropped != 0 {
		t.Fatalf("Stats = %+v", st)
	}
}
