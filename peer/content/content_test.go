package content

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
)

type vectorFile struct {
	Constants struct {
		Magic struct {
			Value string `json:"value"`
		} `json:"hohodk_magic_utf16le_hex"`
	} `json:"constants"`
	Vectors []struct {
		ID       string `json:"id"`
		Secret   string `json:"server_secret_raw_hex"`
		CI       string `json:"content_information_hex"`
		CILen    int    `json:"content_information_length"`
		Expected struct {
			Range    [2]uint64 `json:"range"`
			Segments int       `json:"segments"`
			SegTests []struct {
				Index   int       `json:"index"`
				Range   [2]uint64 `json:"range"`
				Blocks  int       `json:"blocks"`
				BlkSize uint32    `json:"blksize"`
				HoD     string    `json:"hod_hex"`
				Kp      string    `json:"kp_hex"`
				HoHoDk  string    `json:"hohodk_hex"`
			} `json:"segment_tests"`
			BlockTests []struct {
				Segment int       `json:"segment"`
				Index   int       `json:"index"`
				Range   [2]uint64 `json:"range"`
				Hash    string    `json:"hash_hex"`
			} `json:"block_tests"`
		} `json:"expected"`
	} `json:"vectors"`
}

func loadVectors(t testing.TB) *vectorFile {
	t.Helper()
	b, err := os.ReadFile("testdata/pccrc-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectorFile
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return &v
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMagic(t *testing.T) {
	v := loadVectors(t)
	if got := hex.EncodeToString([]byte(segmentIDMagic)); got != v.Constants.Magic.Value {
		t.Fatalf("magic %s, want %s", got, v.Constants.Magic.Value)
	}
}

func TestVectors(t *testing.T) {
	v := loadVectors(t)
	for _, vec := range v.Vectors {
		t.Run(vec.ID, func(t *testing.T) {
			raw := unhex(t, vec.CI)
			if len(raw) != vec.CILen {
				t.Fatalf("vector length %d, want %d", len(raw), vec.CILen)
			}
			in, err := Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			if start, end := in.Range(); [2]uint64{start, end} != vec.Expected.Range {
				t.Errorf("range [%d, %d), want %v", start, end, vec.Expected.Range)
			}
			if len(in.Segments) != vec.Expected.Segments {
				t.Fatalf("%d segments, want %d", len(in.Segments), vec.Expected.Segments)
			}
			secret := NewServerSecret(unhex(t, vec.Secret))
			for _, st := range vec.Expected.SegTests {
				s := &in.Segments[st.Index]
				if got := [2]uint64{s.Offset, s.End()}; got != st.Range {
					t.Errorf("segment %d range %v, want %v", st.Index, got, st.Range)
				}
				if s.BlockCount() != st.Blocks || s.BlockSize != st.BlkSize {
					t.Errorf("segment %d: %d blocks of %d, want %d of %d", st.Index, s.BlockCount(), s.BlockSize, st.Blocks, st.BlkSize)
				}
				if s.HoD.String() != st.HoD {
					t.Errorf("segment %d HoD %v, want %s", st.Index, s.HoD, st.HoD)
				}
				if s.Kp.String() != st.Kp {
					t.Errorf("segment %d Kp %v, want %s", st.Index, s.Kp, st.Kp)
				}
				if kp := secret.SegmentSecret(s.HashAlgo, s.HoD); kp.String() != st.Kp {
					t.Errorf("segment %d derived Kp %v, want %s", st.Index, kp, st.Kp)
				}
				if s.ID.String() != st.HoHoDk {
					t.Errorf("segment %d ID %v, want %s", st.Index, s.ID, st.HoHoDk)
				}
				if s.HashAlgo == SHA256 {
					if hod := HoDV1(s.BlockHashes); hod.String() != st.HoD {
						t.Errorf("segment %d HoD from block hashes %v, want %s", st.Index, hod, st.HoD)
					}
				}
			}
			for _, bt := range vec.Expected.BlockTests {
				s := &in.Segments[bt.Segment]
				if got := s.BlockHashes[bt.Index].String(); got != bt.Hash {
					t.Errorf("block %d/%d hash %s, want %s", bt.Segment, bt.Index, got, bt.Hash)
				}
				off := s.BlockOffset(bt.Index)
				if got := [2]uint64{off, off + uint64(s.BlockLen(bt.Index))}; got != bt.Range {
					t.Errorf("block %d/%d range %v, want %v", bt.Segment, bt.Index, got, bt.Range)
				}
			}
			out, err := in.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, raw) {
				t.Fatalf("re-serialized\n%x\nwant\n%x", out, raw)
			}
		})
	}
}

func TestPassphraseSecret(t *testing.T) {
	want := NewServerSecret([]byte("n\x00o\x00 \x00m\x00o\x00r\x00e\x00"))
	if PassphraseSecret("no more") != want {
		t.Fatal("passphrase secret is not the UTF-16LE key")
	}
	if PassphraseSecret("no more") == NewServerSecret([]byte("no more")) {
		t.Fatal("passphrase secret equals the ASCII key")
	}
}

// contentReader returns n deterministic pseudo-random bytes.
func contentReader(n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{1, 2, 3}), n)
}

func TestGenerateMultiSegment(t *testing.T) {
	if testing.Short() {
		t.Skip("hashes 67 MB")
	}
	const size = 2*SegmentSize + 5*BlockSize + 1234 // three segments, last block short
	secret := PassphraseSecret("test secret")
	in, err := Generate(context.Background(), contentReader(size), secret)
	if err != nil {
		t.Fatal(err)
	}
	if start, end := in.Range(); start != 0 || end != size {
		t.Fatalf("range [%d, %d)", start, end)
	}
	if len(in.Segments) != 3 {
		t.Fatalf("%d segments", len(in.Segments))
	}
	// Recompute every block hash independently.
	r := contentReader(size)
	block := make([]byte, BlockSize)
	for si := range in.Segments {
		s := &in.Segments[si]
		if s.Offset != uint64(si)*SegmentSize || s.BlockSize != BlockSize {
			t.Fatalf("segment %d: offset %d block size %d", si, s.Offset, s.BlockSize)
		}
		if len(s.BlockHashes) != s.BlockCount() {
			t.Fatalf("segment %d: %d hashes for %d blocks", si, len(s.BlockHashes), s.BlockCount())
		}
		var cat []byte
		for bi := range s.BlockCount() {
			data := block[:s.BlockLen(bi)]
			if _, err := io.ReadFull(r, data); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(data)
			if Digest(sum) != s.BlockHashes[bi] {
				t.Fatalf("segment %d block %d hash mismatch", si, bi)
			}
			cat = append(cat, sum[:]...)
			if err := VerifyBlock(s, bi, data); err != nil {
				t.Fatal(err)
			}
			bit := rand.IntN(len(data) * 8)
			data[bit/8] ^= 1 << (bit % 8)
			if err := VerifyBlock(s, bi, data); !errors.Is(err, ErrBlockHash) {
				t.Fatalf("segment %d block %d: flipped bit %d not detected: %v", si, bi, bit, err)
			}
		}
		if Digest(sha256.Sum256(cat)) != s.HoD {
			t.Fatalf("segment %d HoD mismatch", si)
		}
		if s.Kp != secret.SegmentSecret(SHA256, s.HoD) || s.ID != HoHoDk(SHA256, s.Kp, s.HoD) {
			t.Fatalf("segment %d Kp or ID mismatch", si)
		}
	}
	last := &in.Segments[2]
	if last.Length != 5*BlockSize+1234 || last.BlockCount() != 6 || last.BlockLen(5) != 1234 {
		t.Fatalf("last segment length %d, %d blocks, last block %d", last.Length, last.BlockCount(), last.BlockLen(5))
	}
	raw, err := in.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Equal(in) {
		t.Fatal("parsed content information differs from the generated one")
	}
}

func TestGenerateEdges(t *testing.T) {
	secret := NewServerSecret([]byte("k"))
	for _, size := range []int64{0, 1, BlockSize - 1, BlockSize, BlockSize + 1, 3*BlockSize + 7} {
		in, err := Generate(context.Background(), contentReader(size), secret)
		if err != nil {
			t.Fatal(err)
		}
		if _, end := in.Range(); end != uint64(size) {
			t.Errorf("size %d: range end %d", size, end)
		}
		raw, err := in.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(raw)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if !back.Equal(in) {
			t.Errorf("size %d: round trip differs", size)
		}
	}
	// Odd write sizes give the same result as one big write.
	data, _ := io.ReadAll(contentReader(5*BlockSize + 99))
	g := NewGenerator(secret)
	for p := data; len(p) > 0; {
		n := min(len(p), 1+rand.IntN(3*BlockSize))
		g.Write(p[:n])
		p = p[n:]
	}
	want, _ := Generate(context.Background(), bytes.NewReader(data), secret)
	if !g.Info().Equal(want) {
		t.Fatal("chunked writes differ")
	}
	if _, err := g.Write([]byte{1}); !errors.Is(err, ErrFinished) {
		t.Fatalf("write after Info: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Generate(ctx, contentReader(10), secret); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled generate: %v", err)
	}
}

// fakeInfo builds a consistent whole-content v1 Info for size bytes without
// hashing any content.
func fakeInfo(size uint64) *Info {
	secret := NewServerSecret([]byte("fake"))
	in := &Info{Version: V1, HashAlgo: SHA256}
	for off := uint64(0); off < size; off += SegmentSize {
		s := Segment{Offset: off, Length: uint32(min(SegmentSize, size-off)), BlockSize: BlockSize, HashAlgo: SHA256}
		for i := range s.BlockCount() {
			s.BlockHashes = append(s.BlockHashes, HashBlock(SHA256, []byte{byte(i), byte(off >> 25)}))
		}
		s.HoD = HoDV1(s.BlockHashes)
		s.Kp = secret.SegmentSecret(SHA256, s.HoD)
		s.ID = HoHoDk(SHA256, s.Kp, s.HoD)
		in.Segments = append(in.Segments, s)
	}
	return in
}

func TestSlice(t *testing.T) {
	const mb125 = 0x7D00000
	tests := []struct {
		name            string
		size            uint64
		start, end      uint64
		offset, read    uint32
		blocks          []int
		serializedBytes int
	}{
		{"spec 3.1 whole 125KB", 128000, 0, 128000, 0, 0, []int{2}, 166},
		{"spec 3.3 range in one segment", 128000, 102400, 128000, 102400, 0, []int{2}, 166},
		{"one segment, short range", 128000, 1000, 2000, 1000, 1000, []int{1}, 134},
		{"spec 3.4 whole 125MB", mb125, 0, mb125, 0, 0, []int{512, 512, 512, 464}, 64354},
		{"spec 3.5 range 100KB..124MB", mb125, 102400, 0x7C00000, 102400, 0x1C00000, []int{512, 512, 512, 448}, 64354 - 16*32},
		{"middle segments", mb125, SegmentSize + 5, 3*SegmentSize - 1, 5, SegmentSize - 1, []int{512, 512}, 18 + 2*80 + 2*(4+512*32)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := fakeInfo(tt.size).Slice(tt.start, tt.end)
			if err != nil {
				t.Fatal(err)
			}
			if s.OffsetInFirstSegment != tt.offset || s.ReadBytesInLastSegment != tt.read {
				t.Errorf("offset %d read %d, want %d %d", s.OffsetInFirstSegment, s.ReadBytesInLastSegment, tt.offset, tt.read)
			}
			var blocks []int
			for i := range s.Segments {
				blocks = append(blocks, len(s.Segments[i].BlockHashes))
			}
			if !equalInts(blocks, tt.blocks) {
				t.Errorf("blocks %v, want %v", blocks, tt.blocks)
			}
			if start, end := s.Range(); start != tt.start || end != tt.end {
				t.Errorf("range [%d, %d), want [%d, %d)", start, end, tt.start, tt.end)
			}
			raw, err := s.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if len(raw) != tt.serializedBytes {
				t.Errorf("%d bytes, want %d", len(raw), tt.serializedBytes)
			}
			back, err := Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			if !back.Equal(s) {
				t.Error("round trip differs")
			}
		})
	}
	for _, r := range [][2]uint64{{5, 5}, {0, 128001}, {10, 3}} {
		if _, err := fakeInfo(128000).Slice(r[0], r[1]); !errors.Is(err, ErrMalformed) {
			t.Errorf("slice %v: %v", r, err)
		}
	}
}

func TestSpec34Offsets(t *testing.T) {
	raw, err := fakeInfo(0x7D00000).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// cBlocks fields at 338, 16726, 33114, 49502 (MS-PCCRC §3.4).
	for _, off := range []int{338, 16726, 33114, 49502} {
		n := int(raw[off]) | int(raw[off+1])<<8
		if n != 512 && n != 464 {
			t.Errorf("cBlocks at %d = %d", off, n)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestParseErrors(t *testing.T) {
	v := loadVectors(t)
	v1 := unhex(t, v.Vectors[0].CI)
	v2 := unhex(t, v.Vectors[1].CI)
	mod := func(b []byte, f func([]byte) []byte) []byte {
		return f(append([]byte(nil), b...))
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"version 3", []byte{0, 3, 0, 0}, ErrVersion},
		{"v1 header only", v1[:10], ErrTruncated},
		{"v1 cut in block hashes", v1[:len(v1)-1], ErrTruncated},
		{"v1 trailing", append(append([]byte(nil), v1...), 0), ErrTrailingData},
		{"v1 sha-512", mod(v1, func(b []byte) []byte { b[2] = 0x0e; return b }), ErrHashAlgo},
		{"v1 huge segment count", mod(v1, func(b []byte) []byte { b[17] = 0xff; return b }), ErrTruncated},
		{"v1 block size", mod(v1, func(b []byte) []byte { b[30] = 1; return b }), ErrMalformed},
		{"v1 too many block hashes", mod(v1, func(b []byte) []byte { b[98] = 3; return b }), ErrMalformed},
		{"v1 HoD mismatch", mod(v1, func(b []byte) []byte { b[40] ^= 1; return b }), ErrHoDMismatch},
		{"v1 offset beyond segment", mod(v1, func(b []byte) []byte { b[9] = 1; return b }), ErrMalformed},
		{"v1 read bytes beyond segment", mod(v1, func(b []byte) []byte { b[13] = 1; return b }), ErrMalformed},
		{"v1 unaligned segment offset", mod(v1, func(b []byte) []byte { b[18] = 1; return b }), ErrMalformed},
		{"v2 header only", v2[:20], ErrTruncated},
		{"v2 bad algo", mod(v2, func(b []byte) []byte { b[2] = 1; return b }), ErrHashAlgo},
		{"v2 no chunks", v2[:31], ErrMalformed},
		{"v2 chunk type", mod(v2, func(b []byte) []byte { b[31] = 1; return b }), ErrMalformed},
		{"v2 chunk size", mod(v2, func(b []byte) []byte { b[35]++; return b }), ErrMalformed},
		{"v2 cut chunk", v2[:len(v2)-1], ErrTruncated},
		{"v2 zero segment", mod(v2, func(b []byte) []byte { copy(b[36:40], []byte{0, 0, 0, 0}); return b }), ErrMalformed},
		{"v2 range too long", mod(v2, func(b []byte) []byte { b[28] = 0xff; return b }), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
		})
	}
}

func TestV2Chunks(t *testing.T) {
	v := loadVectors(t)
	in, err := Parse(unhex(t, v.Vectors[1].CI))
	if err != nil {
		t.Fatal(err)
	}
	in.ChunkSegments = []int{1, 1}
	raw, err := in.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Equal(in) || len(back.ChunkSegments) != 2 {
		t.Fatal("two-chunk round trip differs")
	}
	in.ChunkSegments = []int{3}
	if _, err := in.MarshalBinary(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("bad chunk split: %v", err)
	}
	// v2 block verification is against the segment HoD.
	s := &in.Segments[0]
	if err := VerifyBlock(s, 0, make([]byte, s.Length)); !errors.Is(err, ErrBlockHash) {
		t.Fatalf("v2 verify: %v", err)
	}
	if err := VerifyBlock(s, 1, nil); !errors.Is(err, ErrBlockIndex) {
		t.Fatalf("v2 verify index 1: %v", err)
	}
}

func TestWriteSummary(t *testing.T) {
	v := loadVectors(t)
	in, err := Parse(unhex(t, v.Vectors[0].CI))
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	if err := WriteSummary(&sb, in); err != nil {
		t.Fatal(err)
	}
	out := sb.String()
	for _, want := range []string{"1 segments", "491b217dbee2b5f12ca79b015e06f4bbe64f9745bad7867aef17de59927edce9",
		"d8d976354a4872e925761803f458d9daaa67f8e31c630fb74e6a312ef8a25aba", "blocks 2", "(99710 bytes)"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}

func FuzzParse(f *testing.F) {
	v := loadVectors(f)
	for _, vec := range v.Vectors {
		f.Add(unhex(f, vec.CI))
	}
	small, _ := Generate(context.Background(), contentReader(3*BlockSize+5), NewServerSecret(nil))
	raw, _ := small.MarshalBinary()
	f.Add(raw)
	sl, _ := fakeInfo(128000).Slice(1000, 2000)
	raw, _ = sl.MarshalBinary()
	f.Add(raw)
	f.Add([]byte{0, 1})
	f.Add([]byte{0, 2, 4})
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := Parse(b)
		if err != nil {
			return
		}
		out, err := in.MarshalBinary()
		if err != nil {
			t.Fatalf("marshal parsed info: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("round trip\n%x\nwant\n%x", out, b)
		}
		start, end := in.Range()
		if start > end {
			t.Fatalf("range [%d, %d)", start, end)
		}
		for i := range in.Segments {
			s := &in.Segments[i]
			for k := range s.BlockHashes {
				_ = VerifyBlock(s, k, nil)
			}
		}
		var sb strings.Builder
		_ = WriteSummary(&sb, in)
	})
}

func BenchmarkGenerate(b *testing.B) {
	data, _ := io.ReadAll(contentReader(SegmentSize))
	secret := NewServerSecret([]byte("bench"))
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := Generate(context.Background(), bytes.NewReader(data), secret); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyBlock(b *testing.B) {
	data, _ := io.ReadAll(contentReader(BlockSize))
	in, _ := Generate(context.Background(), bytes.NewReader(data), NewServerSecret(nil))
	b.SetBytes(BlockSize)
	for b.Loop() {
		if err := VerifyBlock(&in.Segments[0], 0, data); err != nil {
			b.Fatal(err)
		}
	}
}
