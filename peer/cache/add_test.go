package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"testing/iotest"
	"time"

	"github.com/redleader-p2p/redleader/peer/content"
)

// genInfo returns n deterministic bytes for seed and their v1 content
// information.
func genInfo(tb testing.TB, seed uint64, n int) ([]byte, *content.Info) {
	tb.Helper()
	data := randomBytes(seed, n)
	info, err := content.Generate(context.Background(), bytes.NewReader(data), testSecret)
	if err != nil {
		tb.Fatal(err)
	}
	return data, info
}

// heldBlocks returns the held block indexes of every segment of info.
func heldBlocks(c *Cache, info *content.Info) [][]int {
	out := make([][]int, len(info.Segments))
	for i := range info.Segments {
		out[i] = c.Held(info.Segments[i].ID)
	}
	return out
}

func blockRange(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

func TestAddContent(t *testing.T) {
	const bs = content.BlockSize
	small, smallInfo := genInfo(t, 1, 5*bs+100) // one segment of 6 blocks, the last short
	other, otherInfo := genInfo(t, 2, 5*bs+100) // the same length, other bytes
	// A range CI of bytes [bs+10, 4*bs+5): blocks 2 and 3 lie wholly inside.
	rangeInfo, err := smallInfo.Slice(bs+10, 4*bs+5)
	if err != nil {
		t.Fatal(err)
	}
	flipped := slices.Clone(small)
	flipped[3*bs+7] ^= 1 // block 3

	tests := []struct {
		name    string
		info    *content.Info
		stream  []byte
		wantErr error   // nil: success
		held    [][]int // per segment of info, after the call
		kept    int     // len(AddResult.Kept)
		rolled  bool    // AddResult.RolledBack set
		bytes   int64   // AddResult.Bytes
		check   func(*testing.T, *Cache, AddResult)
	}{
		{name: "whole", info: smallInfo, stream: small, held: [][]int{blockRange(0, 6)}, kept: 1, bytes: int64(len(small))},
		{name: "range CI stores the blocks wholly inside the range", info: rangeInfo, stream: small[bs+10 : 4*bs+5],
			held: [][]int{{2, 3}}, kept: 1, bytes: 3*bs - 5},
		{name: "other content: nothing registered", info: smallInfo, stream: other, wantErr: ErrContentMismatch,
			held: [][]int{nil}, bytes: bs, check: func(t *testing.T, c *Cache, _ AddResult) {
				if got := c.Segments(); len(got) != 0 {
					t.Errorf("cache holds %v", got)
				}
			}},
		{name: "bad block 3: segment rolled back", info: smallInfo, stream: flipped, wantErr: ErrContentMismatch,
			held: [][]int{nil}, rolled: true, bytes: 4 * bs},
		{name: "short stream: rolled back", info: smallInfo, stream: small[:len(small)-1], wantErr: ErrContentMismatch,
			held: [][]int{nil}, rolled: true, bytes: int64(len(small)) - 1},
		{name: "longer stream: verified segments kept", info: smallInfo, stream: append(slices.Clone(small), 0),
			wantErr: ErrContentMismatch, held: [][]int{blockRange(0, 6)}, kept: 1, bytes: int64(len(small))},
		{name: "the other content's CI", info: otherInfo, stream: small, wantErr: ErrContentMismatch, held: [][]int{nil}, bytes: bs},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := openCache(t, t.TempDir(), Options{NoSync: true})
			res, err := c.AddContent(context.Background(), tt.info, bytes.NewReader(tt.stream))
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			t.Logf("err = %v", err)
			if got := heldBlocks(c, tt.info); !equalHeld(got, tt.held) {
				t.Errorf("held %v, want %v", got, tt.held)
			}
			if len(res.Kept) != tt.kept || (res.RolledBack != nil) != tt.rolled || res.Bytes != tt.bytes {
				t.Errorf("result %+v, want %d kept, rolled back %v, %d bytes", res, tt.kept, tt.rolled, tt.bytes)
			}
			for i := range tt.info.Segments {
				checkHeld(t, c, testSeg{seg: &tt.info.Segments[i]}) // every held block verifies
			}
			if tt.check != nil {
				tt.check(t, c, res)
			}
		})
	}
}

func equalHeld(a, b [][]int) bool {
	return slices.EqualFunc(a, b, func(x, y []int) bool { return len(x) == 0 && len(y) == 0 || slices.Equal(x, y) })
}

// TestAddContentSegments: a content of three segments whose last one has a
// bad block keeps the first two (completed) and rolls the third back.
func TestAddContentSegments(t *testing.T) {
	data, info := genInfo(t, 3, 2*content.SegmentSize+3*content.BlockSize)
	bad := slices.Clone(data)
	bad[2*content.SegmentSize+content.BlockSize] ^= 0x80
	c := openCache(t, t.TempDir(), Options{NoSync: true})
	res, err := c.AddContent(context.Background(), info, bytes.NewReader(bad))
	if !errors.Is(err, ErrContentMismatch) {
		t.Fatalf("err = %v, want ErrContentMismatch", err)
	}
	if !slices.Equal(res.Kept, []content.SegmentID{info.Segments[0].ID, info.Segments[1].ID}) ||
		res.RolledBack == nil || *res.RolledBack != info.Segments[2].ID {
		t.Errorf("kept %v, rolled back %v", res.Kept, res.RolledBack)
	}
	if !c.Complete(info.Segments[0].ID) || !c.Complete(info.Segments[1].ID) {
		t.Error("completed segments not kept whole")
	}
	if _, ok := c.Describe(info.Segments[2].ID); ok {
		t.Error("failing segment still registered")
	}
	if res.Verified != 2*content.BlocksPerSegment+1 || res.Stored != res.Verified {
		t.Errorf("verified %d, stored %d", res.Verified, res.Stored)
	}

	// Again with the right bytes: the first two are already held.
	res, err = c.AddContent(context.Background(), info, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if res.Verified != 2*content.BlocksPerSegment+3 || res.Stored != 3 || len(res.Kept) != 3 {
		t.Errorf("second add: %+v", res)
	}
	if st := c.Stats(); st.Segments != 3 || st.Blocks != res.Verified {
		t.Errorf("stats %+v", st)
	}
}

// TestAddContentKeepsExisting: a segment held before the call is never
// removed by its rollback, and a held block is verified again (PutBlock
// alone would accept anything for it).
func TestAddContentKeepsExisting(t *testing.T) {
	data, info := genInfo(t, 4, 4*content.BlockSize)
	seg := &info.Segments[0]
	c := openCache(t, t.TempDir(), Options{NoSync: true})
	if err := c.AddSegment(seg); err != nil {
		t.Fatal(err)
	}
	if err := c.PutBlock(seg.ID, 0, data[:content.BlockSize]); err != nil {
		t.Fatal(err)
	}
	bad := slices.Clone(data)
	bad[10] ^= 1 // block 0, already held
	_, err := c.AddContent(context.Background(), info, bytes.NewReader(bad))
	if !errors.Is(err, ErrContentMismatch) {
		t.Fatalf("bad held block: err = %v, want ErrContentMismatch", err)
	}
	bad = slices.Clone(data)
	bad[2*content.BlockSize] ^= 1 // block 2
	res, err := c.AddContent(context.Background(), info, bytes.NewReader(bad))
	if !errors.Is(err, ErrContentMismatch) || res.RolledBack != nil {
		t.Fatalf("err = %v, rolled back %v; want a mismatch and no rollback", err, res.RolledBack)
	}
	if got := c.Held(seg.ID); !slices.Equal(got, []int{0, 1}) {
		t.Errorf("held %v, want the old block 0 and the verified block 1", got)
	}
}

func TestAddContentErrors(t *testing.T) {
	data, info := genInfo(t, 5, 8*content.BlockSize)
	seg := &info.Segments[0]
	boom := errors.New("boom")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	bad := *info
	bad.Segments = []content.Segment{*seg}
	bad.Segments[0].Kp[0] ^= 1 // ID is no longer HoHoDk(Kp, HoD)
	tests := []struct {
		name     string
		ctx      context.Context
		info     *content.Info
		r        io.Reader
		opts     Options
		want     error
		mismatch bool
	}{
		{name: "read error", r: io.MultiReader(bytes.NewReader(data[:3*content.BlockSize+5]), iotest.ErrReader(boom)), want: boom},
		{name: "unexpected EOF is not a mismatch", r: io.MultiReader(bytes.NewReader(data[:100]), iotest.ErrReader(io.ErrUnexpectedEOF)),
			want: io.ErrUnexpectedEOF},
		{name: "cancelled", ctx: cancelled, r: bytes.NewReader(data), want: context.Canceled},
		{name: "bad description", info: &bad, r: bytes.NewReader(data), want: ErrBadDescription},
		{name: "no segments", info: &content.Info{Version: content.V1}, r: bytes.NewReader(data), want: ErrBadDescription},
		{name: "over the cap", opts: Options{MaxBytes: 5 * content.BlockSize}, r: bytes.NewReader(data), want: ErrFull},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.NoSync = true
			c := openCache(t, t.TempDir(), tt.opts)
			ctx, in := cmpOrCtx(tt.ctx), tt.info
			if in == nil {
				in = info
			}
			_, err := c.AddContent(ctx, in, tt.r)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if errors.Is(err, ErrContentMismatch) {
				t.Errorf("err = %v is a content mismatch", err)
			}
			if got := c.Segments(); len(got) != 0 {
				t.Errorf("cache holds %v after the failure", got)
			}
		})
	}
}

func cmpOrCtx(ctx context.Context) context.Context {
	if ctx == nil {
		return context.Background()
	}
	return ctx
}

// TestAddContentOneAtATime: a second AddContent waits for the first (or
// for its context).
func TestAddContentOneAtATime(t *testing.T) {
	data, info := genInfo(t, 6, 2*content.BlockSize)
	c := openCache(t, t.TempDir(), Options{NoSync: true})
	pr, pw := io.Pipe()
	first := make(chan error, 1)
	go func() {
		_, err := c.AddContent(context.Background(), info, pr)
		first <- err
	}()
	if _, err := pw.Write(data[:content.BlockSize]); err != nil { // the first call is reading
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.AddContent(ctx, info, bytes.NewReader(data)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second call while the first runs: err = %v, want a deadline", err)
	}
	if _, err := pw.Write(data[content.BlockSize:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddContent(context.Background(), info, bytes.NewReader(data)); err != nil {
		t.Fatalf("after the first: %v", err)
	}
}
