//go:build linux

package lab_test

// End-to-end test of the MS-PCCRR serving counters: a LAN host fetches a
// known content from an agent's peer port, and the agent's /metrics
// count exactly the requests, blocks and bytes it served.

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/lab"
	"github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/retrieval"
)

// pccrrMetrics returns a's redleader_pccrr_* series from /metrics, keyed
// by name and labels as the text exposition shows them.
func pccrrMetrics(t *testing.T, a *agent) map[string]float64 {
	t.Helper()
	ctx, cancel := apiCtx()
	defer cancel()
	b, err := a.client().Metrics(ctx)
	if err != nil {
		t.Fatalf("%s: /metrics: %v", a.h.Name, err)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "redleader_pccrr_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("%s: /metrics line %q: %v", a.h.Name, line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// TestLabServingCounters: a LAN host that runs no agent fetches every
// block of a 5-block segment (the last one short) from the holder over
// MS-PCCRR, asks for its block list, negotiates, asks for a block of a
// segment nobody holds and sends a malformed request. Each of the
// holder's redleader_pccrr_* series moves by exactly what that traffic
// should count, and no other.
func TestLabServingCounters(t *testing.T) {
	t.Parallel()
	l := lab.New(t, lab.Options{Subnets: 1, WANRate: "off"})
	holder := startPCCRDAgent(t, l.AddHost(1), pccrdEnv(true))
	client := l.AddHost(1)
	waitProbeReady(t, []*agent{holder}, 30*time.Second)

	const size = 4*content.BlockSize + 1000
	data := make([]byte, size)
	if _, err := crand.Read(data); err != nil {
		t.Fatal(err)
	}
	info, err := content.Generate(context.Background(), bytes.NewReader(data), content.PassphraseSecret("lab"))
	if err != nil {
		t.Fatal(err)
	}
	c := pccrdContentOf(t, data, info)
	if err := holder.hold(c); err != nil {
		t.Fatal(err)
	}
	seg := &info.Segments[0]
	unknown := newPCCRDContent(t, 1).info.Segments[0] // held by nobody

	before := pccrrMetrics(t, holder)
	if len(before) != 15 {
		t.Fatalf("%d redleader_pccrr_ series before the fetch, want 15 (5 request types, 8 error reasons, 2 counters): %v",
			len(before), before)
	}

	peerAddr := holder.peerAddr()
	rc := retrieval.NewClient(retrieval.ClientConfig{HTTPClient: client.HTTPClient()})
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got := make([]byte, size)
	res, err := rc.FetchSegment(ctx, seg, nil, []string{peerAddr}, func(b int, p []byte) error {
		copy(got[seg.BlockOffset(b):], p)
		return nil
	})
	if err != nil || res.Blocks[peerAddr] != seg.BlockCount() || !bytes.Equal(got, data) {
		t.Fatalf("fetch: %v, %+v; want all %d blocks from %s, equal to the content", err, res, seg.BlockCount(), peerAddr)
	}
	if l, err := rc.BlockList(ctx, peerAddr, seg.ID, []retrieval.BlockRange{{Index: 0, Count: 5}}); err != nil ||
		!slices.Equal(l.Ranges, []retrieval.BlockRange{{Index: 0, Count: 5}}) {
		t.Fatalf("block list: %+v %v; want blocks 0-4", l, err)
	}
	if _, err := rc.Negotiate(ctx, peerAddr); err != nil {
		t.Fatalf("negotiate: %v", err)
	}
	if _, err := rc.FetchBlock(ctx, peerAddr, &unknown, 0); err == nil {
		t.Fatal("fetched a block of a segment nobody holds")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+peerAddr+retrieval.Path, strings.NewReader("not a PCCRR message"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("malformed request: HTTP %d, want 400", resp.StatusCode)
	}

	want := map[string]float64{
		`redleader_pccrr_requests_total{type="GETBLKS"}`:         float64(seg.BlockCount() + 1),
		`redleader_pccrr_requests_total{type="GETBLKLIST"}`:      1,
		`redleader_pccrr_requests_total{type="NEGO_REQ"}`:        1,
		`redleader_pccrr_requests_total{type="other"}`:           1,
		`redleader_pccrr_blocks_served_total`:                    float64(seg.BlockCount()),
		`redleader_pccrr_bytes_served_total`:                     size,
		`redleader_pccrr_errors_total{reason="unknown_segment"}`: 1,
		`redleader_pccrr_errors_total{reason="malformed"}`:       1,
	}
	after := pccrrMetrics(t, holder)
	if !slices.Equal(slices.Sorted(maps.Keys(after)), slices.Sorted(maps.Keys(before))) {
		t.Fatalf("series changed: before %v, after %v", before, after)
	}
	for name, v := range after {
		if d := v - before[name]; d != want[name] {
			t.Errorf("%s moved by %v, want %v", name, d, want[name])
		}
	}
	t.Logf("%s served %d blocks (%d bytes) to %s; counters: %v", holder.h, seg.BlockCount(), size, client, after)
}
