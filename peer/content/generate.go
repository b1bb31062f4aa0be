package content

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// Generator computes v1 (SHA-256) content information for a stream written
// to it. It holds at most one block of data and the block hashes of the
// current segment. It is not safe for concurrent use.
type Generator struct {
	secret   ServerSecret
	buf      []byte   // partial block
	hashes   []Digest // block hashes of the current segment
	segStart uint64   // offset of the current segment
	segLen   uint32   // bytes of the current segment written so far
	info     *Info
	done     bool
}

// NewGenerator returns a Generator whose segment secrets derive from secret.
func NewGenerator(secret ServerSecret) *Generator {
	return &Generator{
		secret: secret,
		buf:    make([]byte, 0, BlockSize),
		info:   &Info{Version: V1, HashAlgo: SHA256},
	}
}

// Write hashes p as the next bytes of the content. It never fails before
// Info is called.
func (g *Generator) Write(p []byte) (int, error) {
	if g.done {
		return 0, ErrFinished
	}
	n := len(p)
	for len(p) > 0 {
		if len(g.buf) == 0 && len(p) >= BlockSize {
			// Hash whole blocks straight from p.
			g.addBlock(p[:BlockSize])
			p = p[BlockSize:]
			continue
		}
		k := copy(g.buf[len(g.buf):BlockSize], p)
		g.buf = g.buf[:len(g.buf)+k]
		p = p[k:]
		if len(g.buf) == BlockSize {
			g.addBlock(g.buf)
			g.buf = g.buf[:0]
		}
	}
	return n, nil
}

func (g *Generator) addBlock(block []byte) {
	g.hashes = append(g.hashes, HashBlock(SHA256, block))
	g.segLen += uint32(len(block))
	if g.segLen == SegmentSize {
		g.finishSegment()
	}
}

func (g *Generator) finishSegment() {
	if g.segLen == 0 {
		return
	}
	hod := HoDV1(g.hashes)
	kp := g.secret.SegmentSecret(SHA256, hod)
	g.info.Segments = append(g.info.Segments, Segment{
		Offset:      g.segStart,
		Length:      g.segLen,
		BlockSize:   BlockSize,
		HashAlgo:    SHA256,
		HoD:         hod,
		Kp:          kp,
		ID:          HoHoDk(SHA256, kp, hod),
		BlockHashes: append([]Digest(nil), g.hashes...),
	})
	g.segStart += uint64(g.segLen)
	g.segLen = 0
	g.hashes = g.hashes[:0]
}

// Segments returns the segments completed so far (every full 32 MiB
// segment written); the caller must not modify them.
func (g *Generator) Segments() []Segment { return g.info.Segments }

// Info finishes the content (the last block and segment may be short) and
// returns its whole-content information, with OffsetInFirstSegment and
// ReadBytesInLastSegment both 0 as IIS emits them. Later writes fail.
func (g *Generator) Info() *Info {
	if !g.done {
		g.done = true
		if len(g.buf) > 0 {
			g.addBlock(g.buf)
			g.buf = nil
		}
		g.finishSegment()
	}
	return g.info
}

// Generate reads r to EOF and returns its v1 content information. It checks
// ctx between reads.
func Generate(ctx context.Context, r io.Reader, secret ServerSecret) (*Info, error) {
	g := NewGenerator(secret)
	buf := make([]byte, 4*BlockSize)
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("generate content information: %w", err)
		}
		n, err := r.Read(buf)
		_, _ = g.Write(buf[:n]) // never fails before Info
		if errors.Is(err, io.EOF) {
			return g.Info(), nil
		}
		if err != nil {
			return nil, fmt.Errorf("generate content information: %w", err)
		}
	}
}
