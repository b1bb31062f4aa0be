package retrieval

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"testing"

	"github.com/redleader-p2p/redleader/peer/content"
)

func testID() content.SegmentID {
	var id content.SegmentID
	for i := range id {
		id[i] = byte(i + 1)
	}
	return id
}

type unmarshaler interface {
	Message
	UnmarshalBinary([]byte) error
}

// sampleMessages are one of each message, used by round-trip tests and as fuzz seeds.
func sampleMessages() []unmarshaler {
	id := testID()
	return []unmarshaler{
		&NegoReq{Min: Version1, Max: Version1},
		&NegoResp{Min: Version1, Max: NewProtocolVersion(1, 3)},
		&GetBlkList{SegmentID: id, Ranges: []BlockRange{{0, 4}, {10, 502}}},
		&GetBlkList{SegmentID: id},
		&BlkList{SegmentID: id, Ranges: []BlockRange{{1, 2}}, NextBlockIndex: 7},
		&BlkList{SegmentID: id},
		&GetBlks{Crypto: CryptoAES128, SegmentID: id, Ranges: []BlockRange{{5, 1}}},
		&GetBlks{SegmentID: id, Ranges: []BlockRange{{5, 3}, {1, 1}}, VrfData: []byte{1, 2, 3}},
		&Blk{Crypto: CryptoAES256, SegmentID: id, BlockIndex: 3, NextBlockIndex: 4,
			Block: bytes.Repeat([]byte{0xab}, 32), IV: bytes.Repeat([]byte{0xcd}, 16)},
		&Blk{SegmentID: id, BlockIndex: 9},
		&Blk{Crypto: CryptoNone, SegmentID: id, Block: []byte{1, 2, 3, 4, 5}, VrfBlock: []byte{9}, IV: []byte{1, 2, 3, 4}},
	}
}

func newOfType(m Message) unmarshaler {
	return reflect.New(reflect.TypeOf(m).Elem()).Interface().(unmarshaler)
}

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range sampleMessages() {
		t.Run(m.MsgType().String(), func(t *testing.T) {
			b, err := m.AppendBinary(nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(b)%4 != 0 {
				t.Errorf("message of %d bytes is not 4-byte aligned", len(b))
			}
			h, err := ParseHeader(b)
			if err != nil {
				t.Fatal(err)
			}
			if h.Version != Version1 || h.Type != m.MsgType() || int(h.Size) != len(b) {
				t.Errorf("header %+v for %d bytes", h, len(b))
			}
			got := newOfType(m)
			if err := got.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("round trip\n%+v\nwant\n%+v", got, m)
			}
		})
	}
}

func TestWireLayout(t *testing.T) {
	id := testID()
	req, err := (&GetBlks{Crypto: CryptoAES128, SegmentID: id, Ranges: []BlockRange{{Index: 2, Count: 1}}}).AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "00000001" + "00000003" + "00000044" + "00000001" + // header: v1.0, GETBLKS, 68 bytes, AES-128
		"00000020" + hex.EncodeToString(id[:]) + // segment ID
		"00000001" + "00000002" + "00000001" + // one range: block 2, count 1
		"00000000" // no verifier data
	if got := hex.EncodeToString(req); got != want {
		t.Fatalf("GETBLKS\n%s\nwant\n%s", got, want)
	}
	block := bytes.Repeat([]byte{0xee}, 48)
	resp, err := AppendResponse(nil, &Blk{Crypto: CryptoAES256, SegmentID: id, BlockIndex: 2, Block: block, IV: make([]byte, 16)})
	if err != nil {
		t.Fatal(err)
	}
	// The encrypted block starts at byte 68 of the response body (iPXE).
	if !bytes.Equal(resp[68:68+48], block) {
		t.Fatalf("block not at offset 68: %x", resp[:72])
	}
	if got := hex.EncodeToString(resp[:4]); got != "00000088" || len(resp) != 4+0x88 {
		t.Fatalf("transport header %s for %d bytes", got, len(resp))
	}
	nego, _ := (&NegoReq{Min: Version1, Max: Version1}).AppendBinary(nil)
	if len(nego) != 24 {
		t.Fatalf("NEGO_REQ is %d bytes", len(nego))
	}
	// Lenient padding: a final field without its pad still parses.
	odd, _ := (&Blk{SegmentID: id, Block: []byte{1}, IV: []byte{1, 2, 3}}).AppendBinary(nil)
	var m Blk
	if err := m.UnmarshalBinary(odd); err != nil || !bytes.Equal(m.IV, []byte{1, 2, 3}) {
		t.Fatalf("unpadded final IV: %v %x", err, m.IV)
	}
}

func TestParseErrors(t *testing.T) {
	id := testID()
	getBlks, _ := (&GetBlks{SegmentID: id, Ranges: []BlockRange{{1, 1}}}).AppendBinary(nil)
	mod := func(f func([]byte) []byte) []byte { return f(append([]byte(nil), getBlks...)) }
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"short header", getBlks[:10], ErrTruncated},
		{"size beyond body", getBlks[:40], ErrTruncated},
		{"size below header", mod(func(b []byte) []byte { b[11] = 4; return b }), ErrTruncated},
		{"response type", mod(func(b []byte) []byte { b[7] = 5; return b }), ErrMsgType},
		{"unknown type", mod(func(b []byte) []byte { b[7] = 9; return b }), ErrMsgType},
		{"segment ID size", mod(func(b []byte) []byte { b[19] = 48; return b }), ErrSegmentIDSize},
		{"range count", mod(func(b []byte) []byte { b[55] = 200; return b }), ErrTruncated},
		{"zero count range", mod(func(b []byte) []byte { b[63] = 0; return b }), ErrMalformed},
		{"range overflow", mod(func(b []byte) []byte {
			b[56] = 0xff
			b[63] = 0xff
			b[62] = 0xff
			b[61] = 0xff
			b[60] = 0xff
			return b
		}), ErrMalformed},
		{"no ranges", mod(func(b []byte) []byte {
			b = append(b[:52], 0, 0, 0, 0, 0, 0, 0, 0)
			b[11] = byte(len(b))
			return b
		}), ErrMalformed},
		{"vrf beyond message", mod(func(b []byte) []byte { b[67] = 9; return b }), ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseRequest(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
		})
	}
	for _, b := range [][]byte{nil, {0, 0, 0, 9, 1}, {0, 0, 0, 0}} {
		if _, err := ParseResponse(b); !errors.Is(err, ErrTruncated) {
			t.Errorf("response %x: %v", b, err)
		}
	}
	if _, err := ParseResponse(append([]byte{0, 0, 0, 68}, getBlks...)); !errors.Is(err, ErrMsgType) {
		t.Errorf("request as response: %v", err)
	}
}

func TestRanges(t *testing.T) {
	tests := []struct {
		name    string
		a, b    []BlockRange
		norm, x []BlockRange
	}{
		{"empty", nil, nil, nil, nil},
		{"merge", []BlockRange{{5, 2}, {0, 3}, {3, 2}, {9, 0}}, []BlockRange{{0, 512}},
			[]BlockRange{{0, 7}}, []BlockRange{{0, 7}}},
		{"overlap", []BlockRange{{0, 10}, {5, 10}}, []BlockRange{{3, 1}, {12, 10}},
			[]BlockRange{{0, 15}}, []BlockRange{{3, 1}, {12, 3}}},
		{"disjoint", []BlockRange{{0, 2}, {4, 2}}, []BlockRange{{2, 2}, {6, 1}},
			[]BlockRange{{0, 2}, {4, 2}}, nil},
		{"max", []BlockRange{{0xffffffff, 1}, {0, 1}}, []BlockRange{{0xfffffff0, 0x10}},
			[]BlockRange{{0, 1}, {0xffffffff, 1}}, []BlockRange{{0xffffffff, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NormalizeRanges(tt.a); !reflect.DeepEqual(got, tt.norm) && !(len(got) == 0 && len(tt.norm) == 0) {
				t.Errorf("normalize %v = %v, want %v", tt.a, got, tt.norm)
			}
			if got := IntersectRanges(tt.a, tt.b); !reflect.DeepEqual(got, tt.x) {
				t.Errorf("intersect = %v, want %v", got, tt.x)
			}
		})
	}
	held := []BlockRange{{2, 3}, {10, 1}}
	for from, want := range map[uint64]uint32{0: 2, 3: 3, 5: 10, 11: 0} {
		if got := nextHeld(held, from); got != want {
			t.Errorf("nextHeld(%d) = %d, want %d", from, got, want)
		}
	}
}

// fuzzRoundTrip checks that whatever parses re-serializes and parses to the same value.
func fuzzRoundTrip(f *testing.F, t MsgType, newMsg func() unmarshaler) {
	for _, m := range sampleMessages() {
		b, _ := m.AppendBinary(nil)
		f.Add(b)
	}
	f.Fuzz(func(tt *testing.T, b []byte) {
		m := newMsg()
		if err := m.UnmarshalBinary(b); err != nil {
			return
		}
		out, err := m.AppendBinary(nil)
		if errors.Is(err, ErrTooLarge) {
			return
		}
		if err != nil {
			tt.Fatal(err)
		}
		back := newMsg()
		if err := back.UnmarshalBinary(out); err != nil {
			tt.Fatalf("re-parse: %v", err)
		}
		if !reflect.DeepEqual(back, m) {
			tt.Fatalf("round trip\n%+v\nwant\n%+v", back, m)
		}
		if back.MsgType() != t {
			tt.Fatalf("type %v", back.MsgType())
		}
	})
}

func FuzzNegoReq(f *testing.F) {
	fuzzRoundTrip(f, MsgNegoReq, func() unmarshaler { return &NegoReq{} })
}

func FuzzNegoResp(f *testing.F) {
	fuzzRoundTrip(f, MsgNegoResp, func() unmarshaler { return &NegoResp{} })
}

func FuzzGetBlkList(f *testing.F) {
	fuzzRoundTrip(f, MsgGetBlkList, func() unmarshaler { return &GetBlkList{} })
}

func FuzzBlkList(f *testing.F) {
	fuzzRoundTrip(f, MsgBlkList, func() unmarshaler { return &BlkList{} })
}

func FuzzGetBlks(f *testing.F) {
	fuzzRoundTrip(f, MsgGetBlks, func() unmarshaler { return &GetBlks{} })
}

func FuzzBlk(f *testing.F) { fuzzRoundTrip(f, MsgBlk, func() unmarshaler { return &Blk{} }) }

func FuzzParseRequest(f *testing.F) {
	for _, m := range sampleMessages() {
		b, _ := m.AppendBinary(nil)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseRequest(b)
		if err != nil {
			return
		}
		switch m.MsgType() {
		case MsgNegoReq, MsgGetBlkList, MsgGetBlks:
		default:
			t.Fatalf("request parsed as %v", m.MsgType())
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	for _, m := range sampleMessages() {
		b, _ := AppendResponse(nil, m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseResponse(b)
		if err != nil {
			return
		}
		switch m.MsgType() {
		case MsgNegoResp, MsgBlkList, MsgBlk:
		default:
			t.Fatalf("response parsed as %v", m.MsgType())
		}
		if _, err := ParseHeader(b[TransportHeaderSize:]); err != nil {
			t.Fatalf("header of parsed response: %v", err)
		}
	})
}
