package cache

import (
	"bytes"
	"testing"

	"github.com/redleader-p2p/redleader/peer/content"
)

// FuzzDecodeDesc feeds arbitrary bytes to the segment description parser:
// it must never panic, and what it accepts must re-encode to the same bytes.
func FuzzDecodeDesc(f *testing.F) {
	full := genSegment(f, 9, 3*content.BlockSize+10).seg
	partial := cloneSegment(full)
	partial.BlockHashes = partial.BlockHashes[:1]
	for _, s := range []*content.Segment{full, &partial} {
		b := encodeDesc(s)
		f.Add(b)
		f.Add(b[:len(b)-1])
		f.Add(b[:descHeaderSize])
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeDesc(b)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeDesc(s), b) {
			t.Fatal("accepted description does not re-encode to its bytes")
		}
		if err := validateDesc(s); err != nil {
			t.Fatalf("accepted an invalid description: %v", err)
		}
	})
}

// FuzzParseLog feeds arbitrary bytes to the commit log parser: it must
// never panic and must account for every byte.
func FuzzParseLog(f *testing.F) {
	r1, r2 := encodeRecord(0, content.BlockSize), encodeRecord(511, 100)
	f.Add(append(r1[:], r2[:]...))
	f.Add(append(r1[:], r2[:7]...))
	f.Add([]byte("RL\x01\x00garbage garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, skipped := parseLog(b)
		if len(entries)*recordSize+skipped != len(b) {
			t.Fatalf("%d entries and %d skipped bytes of %d", len(entries), skipped, len(b))
		}
		for _, e := range entries {
			rec := encodeRecord(e.index, e.length)
			if !bytes.Contains(b, rec[:]) {
				t.Fatalf("entry %+v not in the input", e)
			}
		}
	})
}
