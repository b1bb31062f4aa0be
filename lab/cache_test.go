//go:build linux

package lab_test

// End-to-end test of pre-staging content (`redleader cache add`): an admin
// adds a file to one agent's cache; another agent on the subnet finds it
// with `redleader probe` and every block is fetched from the holder over
// MS-PCCRR.

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/lab"
	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/retrieval"
)

// runCLI runs the redleader CLI with args in h and returns its combined
// output and exit code.
func runCLI(t *testing.T, h *lab.Host, args ...string) (string, int) {
	t.Helper()
	cmd := h.Command(shortCtx(t, time.Minute), append([]string{lab.Binary(t)}, args...)...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	case err != nil:
		t.Fatalf("%s: redleader %s: %v", h.Name, strings.Join(args, " "), err)
	}
	return string(out), 0
}

// TestLabCache: `redleader cache add FILE --content-info CI` on one agent
// (CI from `redleader hash`, as the origin would serve it); another agent
// finds each segment with `redleader probe` and the test fetches every
// block from the holder over MS-PCCRR and compares it with the file. A
// missing or wrong token and a file that does not match are refused with
// a message that says so; `cache rm` takes the content out of discovery.
func TestLabCache(t *testing.T) {
	t.Parallel()
	l := lab.New(t, lab.Options{Subnets: 1, WANRate: "off"})
	holder := startPCCRDAgent(t, l.AddHost(1), pccrdEnv(true))
	prober := startPCCRDAgent(t, l.AddHost(1), pccrdEnv(true))
	waitProbeReady(t, []*agent{holder, prober}, 30*time.Second)

	// Two segments: 32 MiB and 3 blocks and a bit.
	dir := t.TempDir()
	data := make([]byte, content.SegmentSize+3*content.BlockSize+123)
	if _, err := crand.Read(data); err != nil {
		t.Fatal(err)
	}
	file, ci := filepath.Join(dir, "image.wim"), filepath.Join(dir, "image.ci")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := runCLI(t, holder.h, "hash", file, "-o", ci, "--secret-passphrase", "branch office secret")
	if code != 0 {
		t.Fatalf("hash: %s", out)
	}
	ciBytes, err := os.ReadFile(ci)
	if err != nil {
		t.Fatal(err)
	}
	info, err := content.Parse(ciBytes)
	if err != nil || len(info.Segments) != 2 {
		t.Fatalf("content information: %v, %d segments", err, len(info.Segments))
	}
	blocks := 0
	for _, s := range info.Segments {
		blocks += s.BlockCount()
	}

	// Refusals first: nothing may be held after them.
	wrongDir, emptyDir := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(wrongDir, "api-token"), []byte("not-the-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other.wim")
	bad := bytes.Clone(data)
	bad[content.SegmentSize+content.BlockSize] ^= 1 // segment 1, block 1
	if err := os.WriteFile(other, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, file, dataDir, want string
	}{
		{"wrong token", file, wrongDir, "answered 401: missing or wrong API token"},
		{"no token", file, emptyDir, "read api token"},
		{"file does not match", other, holder.dir, "answered 422: add content: bytes 33619968-33685503 (block 1 of segment 1, " +
			info.Segments[1].ID.String() + "): content does not match its content information: block hash mismatch " +
			"(kept 1 segment, every block stored of it verified; the blocks stored of segment " +
			info.Segments[1].ID.String() + " before the failure were removed again)"},
	} {
		out, code := runCLI(t, holder.h, "cache", "add", tt.file, "--content-info", ci, "--data-dir", tt.dataDir)
		if code != 1 || !strings.Contains(out, tt.want) {
			t.Errorf("%s: exit %d, output %q; want 1 and %q", tt.name, code, out, tt.want)
		}
		t.Logf("%s: %s", tt.name, strings.TrimSpace(out))
	}
	// The mismatching file kept segment 0 (verified): drop it.
	if out, err := holder.cli(t, "cache", "rm", info.Segments[0].ID.String()); err != nil {
		t.Fatalf("rm: %v: %s", err, out)
	}
	if r, err := prober.probe(info.Segments[1].ID.String(), 0); err != nil || len(r.Matches) != 0 {
		t.Fatalf("probe after the refusals: %+v %v; want no holder", r, err)
	}

	out, err = holder.cli(t, "cache", "add", file, "--content-info", ci)
	if err != nil || !strings.Contains(out, "verified in "+strconv.Itoa(blocks)+" blocks, "+strconv.Itoa(blocks)+" of them new") {
		t.Fatalf("cache add: %v: %s", err, out)
	}
	t.Logf("cache add:\n%s", out)
	out, err = holder.cli(t, "cache", "list", "--json")
	var list api.CacheListResponse
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list.Segments) != 2 {
		t.Fatalf("cache list: %v: %s", err, out)
	}
	for i, s := range list.Segments {
		if s.Blocks != s.TotalBlocks {
			t.Errorf("listed segment %d: %+v, want every block", i, s)
		}
	}

	// Another agent finds each segment and fetches every block from the
	// holder over MS-PCCRR.
	rc := retrieval.NewClient(retrieval.ClientConfig{HTTPClient: prober.h.HTTPClient()})
	defer rc.Close()
	got := make([]byte, len(data))
	for i := range info.Segments {
		seg := &info.Segments[i]
		out, err := prober.cli(t, "probe", seg.ID.String(), "--blocks", strconv.Itoa(seg.BlockCount()), "--json")
		var r api.ProbeResponse
		if err != nil || json.Unmarshal([]byte(out), &r) != nil {
			t.Fatalf("probe: %v: %s", err, out)
		}
		if len(r.Matches) != 1 || !strings.HasPrefix(r.Matches[0].Peer, holder.h.IP().String()+":") || !r.Matches[0].Full ||
			int(r.Matches[0].Blocks) != seg.BlockCount() {
			t.Fatalf("segment %d: probe found %+v, want the holder %s with all %d blocks", i, r.Matches, holder.h.IP(), seg.BlockCount())
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		res, err := rc.FetchSegment(ctx, seg, nil, []string{r.Matches[0].Peer}, func(b int, p []byte) error {
			copy(got[seg.BlockOffset(b):], p) // blocks of one segment do not overlap
			return nil
		})
		cancel()
		if err != nil {
			t.Fatalf("segment %d: fetch: %v (%+v)", i, err, res)
		}
		if n := res.Blocks[r.Matches[0].Peer]; n != seg.BlockCount() {
			t.Fatalf("segment %d: %d blocks fetched, want %d", i, n, seg.BlockCount())
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the blocks fetched over MS-PCCRR differ from the file")
	}
	t.Logf("%d blocks (%d bytes) fetched from %s over MS-PCCRR, all equal to the file", blocks, len(data), holder.h)

	// Dropped: no longer found.
	ids := []string{info.Segments[0].ID.String(), info.Segments[1].ID.String()}
	if out, err := holder.cli(t, append([]string{"cache", "rm"}, ids...)...); err != nil {
		t.Fatalf("rm: %v: %s", err, out)
	}
	for _, id := range ids {
		if r, err := prober.probe(id, 0); err != nil || len(r.Matches) != 0 {
			t.Errorf("probe after rm: %+v %v; want no holder", r, err)
		}
	}
}
