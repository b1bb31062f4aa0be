package retrieval

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/redleader-p2p/redleader/peer/content"
)

// BenchmarkServeBlock measures PCCRR block serving over loopback HTTP,
// cycling over 64 blocks of 64 KiB; the client reads each reply without
// decrypting it. "encrypt-every-block" disables the cipher cache, so the
// server reads, pads and AES-256-CBC-encrypts every block; "cipher-cache"
// is the default server, which encrypts each block once and replays it.
// Those two send one request at a time over one connection, which no
// redleader client does: FetchSegment keeps DefaultPerPeer (4) requests in
// flight to each peer. The "-parallel" variants are that client: 4
// requests at once (at least GOMAXPROCS), each on its own connection, so
// that the server encrypts on every core.
func BenchmarkServeBlock(b *testing.B) {
	for _, bc := range []struct {
		name     string
		cache    int
		parallel bool
	}{
		{"encrypt-every-block", -1, false},
		{"cipher-cache", 0, false},
		{"encrypt-every-block-parallel", -1, true},
		{"cipher-cache-parallel", 0, true},
	} {
		b.Run(bc.name, func(b *testing.B) { benchServe(b, bc.cache, bc.parallel) })
	}
}

func benchServe(b *testing.B, cacheBytes int, parallel bool) {
	info, data := testContent(b, 64*content.BlockSize)
	seg := &info.Segments[0]
	ts, _, _ := startPeer(b, newMemStore(info, data, nil), ServerConfig{CipherCacheBytes: cacheBytes})
	var reqs [][]byte
	for i := range 64 {
		req, err := (&GetBlks{Crypto: CryptoAES128, SegmentID: seg.ID, Ranges: []BlockRange{{Index: uint32(i), Count: 1}}}).AppendBinary(nil)
		if err != nil {
			b.Fatal(err)
		}
		reqs = append(reqs, req)
	}
	client := &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	url := ts.URL + Path
	// fetch sends request i and reads the reply into buf.
	fetch := func(i int, buf []byte) error {
		resp, err := client.Post(url, "application/octet-stream", bytes.NewReader(reqs[i%64]))
		if err != nil {
			return err
		}
		w := bytes.NewBuffer(buf[:0])
		n, err := io.Copy(w, resp.Body)
		resp.Body.Close()
		if err != nil || n < content.BlockSize {
			return fmt.Errorf("%d bytes, %v", n, err)
		}
		return nil
	}
	b.SetBytes(content.BlockSize)
	b.ReportAllocs()
	if !parallel {
		buf := make([]byte, 0, 70000)
		i := 0
		for b.Loop() {
			if err := fetch(i, buf); err != nil {
				b.Fatal(err)
			}
			i++
		}
		return
	}
	b.SetParallelism(max(1, DefaultPerPeer/runtime.GOMAXPROCS(0)))
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 0, 70000)
		for pb.Next() {
			if err := fetch(int(next.Add(1)), buf); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkFetchBlock measures the full path: request, serve and encrypt,
// then decrypt and verify the block hash on the client.
func BenchmarkFetchBlock(b *testing.B) {
	info, data := testContent(b, 64*content.BlockSize)
	seg := &info.Segments[0]
	ts, _, _ := startPeer(b, newMemStore(info, data, nil), ServerConfig{})
	c := NewClient(ClientConfig{})
	defer c.Close()
	b.SetBytes(content.BlockSize)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := c.FetchBlock(context.Background(), ts.URL, seg, i%64); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkFetchSegment measures a parallel fetch of a full 32 MiB segment
// from two peers.
func BenchmarkFetchSegment(b *testing.B) {
	info, data := testContent(b, content.SegmentSize)
	seg := &info.Segments[0]
	var peers []string
	for range 2 {
		ts, _, _ := startPeer(b, newMemStore(info, data, nil), ServerConfig{})
		peers = append(peers, ts.URL)
	}
	c := NewClient(ClientConfig{})
	defer c.Close()
	b.SetBytes(content.SegmentSize)
	for b.Loop() {
		if _, err := c.FetchSegment(context.Background(), seg, nil, peers, func(int, []byte) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncrypt measures block encryption alone.
func BenchmarkEncrypt(b *testing.B) {
	var kp content.Digest
	buf := make([]byte, content.BlockSize, content.BlockSize+16)
	iv := make([]byte, 16)
	b.SetBytes(content.BlockSize)
	for b.Loop() {
		if _, err := encryptInPlace(buf[:content.BlockSize], 0, kp, iv); err != nil {
			b.Fatal(err)
		}
	}
}
