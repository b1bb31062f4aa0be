package peer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/redleader-p2p/redleader/config"
	"github.com/redleader-p2p/redleader/internal/wait"
	"github.com/redleader-p2p/redleader/peer"
	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/peertest"
	"github.com/redleader-p2p/redleader/peer/retrieval"
)

// testContent is a file's bytes and its content information.
type testContent struct {
	data []byte
	info *content.Info
	ci   []byte // info serialized
}

// newTestContent returns n pseudo-random bytes (seeded) and their v1
// content information under the passphrase "peer test".
func newTestContent(tb testing.TB, seed byte, n int) testContent {
	tb.Helper()
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i*7+i>>9) ^ seed
	}
	info, err := content.Generate(context.Background(), bytes.NewReader(data), content.PassphraseSecret("peer test"))
	if err != nil {
		tb.Fatal(err)
	}
	ci, err := info.MarshalBinary()
	if err != nil {
		tb.Fatal(err)
	}
	return testContent{data: data, info: info, ci: ci}
}

// client returns an API client of a with its token ("" for none).
func client(tb testing.TB, a *peer.Agent, withToken bool) *api.Client {
	tb.Helper()
	if !withToken {
		return api.New(a.APIAddr())
	}
	tok, err := peer.ReadToken(a.DataDir())
	if err != nil {
		tb.Fatal(err)
	}
	return api.New(a.APIAddr(), api.WithToken(tok))
}

func ctxFor(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

// TestCacheAddFindsHolders: content added through the API on two agents is
// found by a probe from a third, one of them holding only part of the
// segment (added from a range's content information), and its blocks are
// served over MS-PCCRR; content refused for not matching its content
// information is not found.
func TestCacheAddFindsHolders(t *testing.T) {
	peertest.MulticastOnLo(t)
	port := peertest.FreeUDPPort(t)
	agents := peertest.Start(t, 3, peertest.Options{Configure: func(i int, c *config.Config) {
		c.Discovery.Enabled = true
		c.Discovery.Port = port
		c.Discovery.Group = "239.255.82.102"
		c.Subnet = "127.0.0.0/8" // the XAddrs (127.0.0.1) must be on the prober's subnet
	}})
	const bs = content.BlockSize
	f := newTestContent(t, 1, 4*bs-1000) // one segment of 4 blocks
	seg := &f.info.Segments[0]
	ctx := ctxFor(t, 30*time.Second)
	if got, err := agents[0].Probe(ctx, seg.ID, 4); err != nil || len(got.Matches) != 0 {
		t.Fatalf("probe before anyone holds it: %+v %v", got, err)
	}

	// agent 1: the whole file; agent 2: bytes [0, 2 blocks), a range CI.
	res, err := client(t, agents[1], true).CacheAdd(ctx, f.ci, bytes.NewReader(f.data))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Segments) != 1 || res.Segments[0].Segment != seg.ID.String() || res.Segments[0].Blocks != 4 ||
		res.AddedBlocks != 4 || res.Bytes != int64(len(f.data)) {
		t.Fatalf("add whole file: %+v", res)
	}
	part, err := f.info.Slice(0, 2*bs)
	if err != nil {
		t.Fatal(err)
	}
	partCI, err := part.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if res, err = client(t, agents[2], true).CacheAdd(ctx, partCI, bytes.NewReader(f.data[:2*bs])); err != nil {
		t.Fatal(err)
	}
	if s := res.Segments[0]; s.Blocks != 2 || s.TotalBlocks != 4 || s.Bytes != 2*bs {
		t.Fatalf("add a range: %+v", res)
	}

	got, err := agents[0].Probe(ctx, seg.ID, 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Matches) != 2 {
		t.Fatalf("matches = %+v, want the 2 holders", got.Matches)
	}
	var fullPeer string
	for _, m := range got.Matches {
		if m.Full {
			if fullPeer != "" {
				t.Fatalf("two full replies, want one (one holder has 2 of 4 blocks): %+v", got.Matches)
			}
			fullPeer = m.Peer
		} else if m.Blocks != 2 {
			t.Errorf("partial holder reports %d blocks, want 2", m.Blocks)
		}
	}
	if fullPeer == "" {
		t.Fatalf("no full reply: %+v", got.Matches)
	}

	// Every block, from the full holder, over MS-PCCRR.
	rc := retrieval.NewClient(retrieval.ClientConfig{})
	defer rc.Close()
	var fetched [4][]byte
	if _, err := rc.FetchSegment(ctx, seg, nil, []string{fullPeer}, func(i int, b []byte) error {
		fetched[i] = b
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if joined := bytes.Join(fetched[:], nil); !bytes.Equal(joined, f.data) {
		t.Fatalf("fetched %d bytes, differ from the file's %d", len(joined), len(f.data))
	}

	// A file that does not match its CI: refused, nothing servable.
	g := newTestContent(t, 2, 3*bs)
	bad := slices.Clone(g.data)
	bad[bs+5] ^= 1 // block 1
	_, err = client(t, agents[1], true).CacheAdd(ctx, g.ci, bytes.NewReader(bad))
	if e := (*api.Error)(nil); !errors.As(err, &e) || e.Status != http.StatusUnprocessableEntity ||
		!strings.Contains(e.Message, "does not match") {
		t.Fatalf("bad file: err = %v, want 422 does not match", err)
	}
	if got, err := agents[0].Probe(ctx, g.info.Segments[0].ID, 0); err != nil || len(got.Matches) != 0 {
		t.Fatalf("probe for the refused content: %+v %v; want no holder", got, err)
	}

	// Removed: no longer found.
	if _, err := client(t, agents[1], true).CacheRemove(ctx, seg.ID.String()); err != nil {
		t.Fatal(err)
	}
	if got, err = agents[0].Probe(ctx, seg.ID, 4); err != nil || len(got.Matches) != 1 || got.Matches[0].Full {
		t.Fatalf("probe after removal from the full holder: %+v %v; want the partial holder only", got, err)
	}
}

// TestCacheAPI: list, add and remove through the API of one agent, and
// every refusal with its status and message.
func TestCacheAPI(t *testing.T) {
	a := peertest.StartAgent(t, peertest.Config(t, 0, peertest.Options{}), false)
	const bs = content.BlockSize
	f := newTestContent(t, 3, 3*bs+17)
	seg := f.info.Segments[0]
	other := newTestContent(t, 4, 3*bs+17)
	ctx := ctxFor(t, time.Minute)
	c, anon := client(t, a, true), client(t, a, false)
	wrong := api.New(a.APIAddr(), api.WithToken("not-the-token"))
	big := newTestContent(t, 5, 8<<20) // 8 MiB: refused long before the client is done sending

	list := func() []api.CacheSegment {
		t.Helper()
		l, err := anon.Cache(ctx) // a read endpoint: no token needed
		if err != nil {
			t.Fatal(err)
		}
		return l.Segments
	}
	if l := list(); len(l) != 0 {
		t.Fatalf("new cache lists %+v", l)
	}

	refusals := []struct {
		name   string
		do     func() error
		status int
		msg    string
	}{
		{"no token", func() error { _, err := anon.CacheAdd(ctx, f.ci, bytes.NewReader(f.data)); return err },
			http.StatusUnauthorized, "missing or wrong API token"},
		{"wrong token, big upload", func() error { _, err := wrong.CacheAdd(ctx, big.ci, bytes.NewReader(big.data)); return err },
			http.StatusUnauthorized, "missing or wrong API token"},
		{"wrong token, remove", func() error { _, err := wrong.CacheRemove(ctx, seg.ID.String()); return err },
			http.StatusUnauthorized, "missing or wrong API token"},
		{"other file", func() error { _, err := c.CacheAdd(ctx, f.ci, bytes.NewReader(other.data)); return err },
			http.StatusUnprocessableEntity, "does not match its content information: block hash mismatch (nothing was added"},
		{"bad last block of a big upload", func() error {
			bad := slices.Clone(big.data)
			bad[len(bad)-1] ^= 1
			_, err := c.CacheAdd(ctx, big.ci, bytes.NewReader(bad))
			return err
		}, http.StatusUnprocessableEntity, "nothing was added to the cache; the blocks stored of segment " +
			big.info.Segments[0].ID.String() + " before the failure were removed again"},
		{"bad first block of a big upload", func() error {
			bad := slices.Clone(big.data)
			bad[0] ^= 1
			_, err := c.CacheAdd(ctx, big.ci, bytes.NewReader(bad))
			return err
		}, http.StatusUnprocessableEntity, "nothing was added"},
		{"short file", func() error { _, err := c.CacheAdd(ctx, f.ci, bytes.NewReader(f.data[:len(f.data)-1])); return err },
			http.StatusUnprocessableEntity, "content ends at byte"},
		{"long file", func() error {
			_, err := c.CacheAdd(ctx, f.ci, io.MultiReader(bytes.NewReader(f.data), strings.NewReader("x")))
			return err
		}, http.StatusUnprocessableEntity, "more than the 196625 bytes of the range [0, 196625): content does not match " +
			"its content information (kept 1 segment, every block stored of it verified)"},
		{"bad content information", func() error { _, err := c.CacheAdd(ctx, f.ci[:20], bytes.NewReader(f.data)); return err },
			http.StatusBadRequest, "bad content information"},
		{"upload breaks off", func() error {
			_, err := c.CacheAdd(ctx, f.ci, io.MultiReader(bytes.NewReader(f.data[:bs/2]), iotest.ErrReader(errors.New("disk gone"))))
			return err
		}, 0, "disk gone"},
		{"not multipart", func() error { return c.Do(ctx, http.MethodPost, api.PathCache, bytes.NewReader(f.data), nil) },
			http.StatusUnsupportedMediaType, "multipart/form-data"},
		{"parts swapped", func() error { return postForm(ctx, a, [][2]string{{api.PartContent, "x"}, {api.PartContentInfo, "y"}}) },
			http.StatusBadRequest, `got a "content" part where the "content_info" part belongs`},
		{"no content part", func() error { return postForm(ctx, a, [][2]string{{api.PartContentInfo, string(f.ci)}}) },
			http.StatusBadRequest, `no "content" part`},
		{"remove a segment not cached", func() error { _, err := c.CacheRemove(ctx, seg.ID.String()); return err },
			http.StatusNotFound, "is not in the cache"},
		{"remove a bad ID", func() error { _, err := c.CacheRemove(ctx, "abc"); return err },
			http.StatusBadRequest, "64 hex digits"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do()
			var e *api.Error
			switch {
			case err == nil:
				t.Fatal("accepted")
			case tt.status == 0 && errors.As(err, &e):
				t.Fatalf("err = %v, want a transport error", err)
			case tt.status != 0 && (!errors.As(err, &e) || e.Status != tt.status):
				t.Fatalf("err = %v, want status %d", err, tt.status)
			case !strings.Contains(err.Error(), tt.msg):
				t.Fatalf("err = %v, want it to say %q", err, tt.msg)
			}
			t.Logf("%v", err)
			if tt.name == "long file" { // the verified segment is kept
				if l := list(); len(l) != 1 || l[0].Blocks != 4 {
					t.Fatalf("cache lists %+v, want the verified segment", l)
				}
				if _, err := c.CacheRemove(ctx, seg.ID.String()); err != nil {
					t.Fatal(err)
				}
			}
			// An upload that broke off is refused by the agent a moment
			// after the client gave up.
			wait.For(t, 5*time.Second, "an empty cache after the refusal", func() bool { return len(list()) == 0 })
		})
	}

	res, err := c.CacheAdd(ctx, f.ci, bytes.NewReader(f.data))
	if err != nil {
		t.Fatal(err)
	}
	want := api.CacheSegment{Segment: seg.ID.String(), Offset: 0, Length: seg.Length, Blocks: 4, TotalBlocks: 4,
		Bytes: int64(len(f.data))}
	if len(res.Segments) != 1 || res.Segments[0] != want || res.VerifiedBlocks != 4 || res.AddedBlocks != 4 {
		t.Fatalf("add: %+v, want %+v", res, want)
	}
	if res, err = c.CacheAdd(ctx, f.ci, bytes.NewReader(f.data)); err != nil || res.AddedBlocks != 0 || res.VerifiedBlocks != 4 {
		t.Fatalf("add again: %+v %v; want 4 verified, none added", res, err)
	}
	if l := list(); len(l) != 1 || l[0] != want {
		t.Fatalf("list %+v, want %+v", l, want)
	}
	rm, err := c.CacheRemove(ctx, strings.ToUpper(seg.ID.String()))
	if err != nil || !rm.Removed || rm.Segment != seg.ID.String() {
		t.Fatalf("remove: %+v %v", rm, err)
	}
	if l := list(); len(l) != 0 {
		t.Fatalf("list after remove: %+v", l)
	}
}

// postForm posts a multipart form of (name, value) parts to a's
// /v1/cache with its token; an error status is an *api.Error.
func postForm(ctx context.Context, a *peer.Agent, parts [][2]string) error {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for _, p := range parts {
		w, err := mw.CreateFormFile(p[0], p[0])
		if err != nil {
			return err
		}
		if _, err := io.WriteString(w, p[1]); err != nil {
			return err
		}
	}
	if err := mw.Close(); err != nil {
		return err
	}
	tok, err := peer.ReadToken(a.DataDir())
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+a.APIAddr()+api.PathCache, &b)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var e api.ErrorResponse
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || resp.StatusCode == http.StatusOK {
		return fmt.Errorf("HTTP %d, body %+v, %v", resp.StatusCode, e, err)
	}
	return &api.Error{Status: resp.StatusCode, Message: e.Error}
}
