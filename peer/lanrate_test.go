package peer_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/config"
	"github.com/redleader-p2p/redleader/internal/wait"
	"github.com/redleader-p2p/redleader/peer"
	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/peertest"
	"github.com/redleader-p2p/redleader/peer/retrieval"
)

func lanMetric(t *testing.T, a *peer.Agent) string {
	return metric(t, a, "redleader_lan_limit_bits_per_second")
}

// peerAddr is a's MS-PCCRR address (its own member's peer port).
func peerAddr(t *testing.T, a *peer.Agent) string {
	t.Helper()
	for _, m := range a.Members() {
		if m.Node == a.ID() {
			return fmt.Sprintf("127.0.0.1:%d", m.Meta.PeerPort)
		}
	}
	t.Fatal("the agent is not among its members")
	return ""
}

// TestLANRateFollowsPolicy: the LAN limit of the blocks an agent serves
// starts at shaping.lan_rate, follows `policy set lan_rate=…` within 2 s,
// and paces what the agent's MS-PCCRR server sends.
func TestLANRateFollowsPolicy(t *testing.T) {
	agents := peertest.Start(t, 1, peertest.Options{Configure: func(_ int, c *config.Config) {
		c.AllowOpenAdmin = true // policy set is an admin command
		c.Shaping.LANRate = 8e6
	}})
	a := agents[0]
	wait.For(t, 5*time.Second, "the configured LAN limit", func() bool { return lanMetric(t, a) == "8e+06" })
	waitRedLeader(t, agents, 30*time.Second) // the cluster, and so the policy, exists

	setLAN := func(rate, want string) {
		t.Helper()
		if _, err := client(t, a, true).SetPolicy(ctxFor(t, 10*time.Second), api.PolicyInfo{LANRate: rate}); err != nil {
			t.Fatalf("policy set lan_rate=%s: %v", rate, err)
		}
		start := time.Now()
		wait.For(t, 10*time.Second, "lan_rate "+rate+" in force", func() bool { return lanMetric(t, a) == want })
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("lan_rate %s took %v to reach the LAN limiter, want ≤ 2 s", rate, took)
		}
	}
	setLAN("1Mbit", "1e+06")

	// Serving is paced: 5 blocks of about 65.6 kB, less the 64 KiB burst,
	// at 125 kB/s take 2.1 s. Only a lower bound is asserted.
	const bs = content.BlockSize
	f := newTestContent(t, 3, 5*bs)
	seg := &f.info.Segments[0]
	ctx := ctxFor(t, 30*time.Second)
	if _, err := client(t, a, true).CacheAdd(ctx, f.ci, bytes.NewReader(f.data)); err != nil {
		t.Fatal(err)
	}
	rc := retrieval.NewClient(retrieval.ClientConfig{RequestTimeout: time.Minute})
	defer rc.Close()
	var got [5][]byte
	start := time.Now()
	if _, err := rc.FetchSegment(ctx, seg, nil, []string{peerAddr(t, a)}, func(i int, b []byte) error {
		got[i] = b
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if !bytes.Equal(bytes.Join(got[:], nil), f.data) {
		t.Fatal("the blocks served differ from the content")
	}
	if min := 1200 * time.Millisecond; took < min {
		t.Fatalf("5 blocks served in %v at lan_rate 1Mbit, want at least %v", took, min)
	}

	setLAN("0", "0")
}

// proxyOrigin is a forward HTTP proxy that answers every request itself
// with data (Range, ETag), as the origin behind it would, and records the
// request targets it was asked for.
type proxyOrigin struct {
	data []byte

	mu      sync.Mutex
	targets []string
}

func (p *proxyOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.targets = append(p.targets, r.Method+" "+r.RequestURI)
	p.mu.Unlock()
	if r.URL.Host != "origin.invalid" || r.URL.Path != "/file" {
		http.Error(w, "not proxied here", http.StatusBadGateway)
		return
	}
	w.Header().Set("ETag", `"v1"`)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(p.data))
}

// TestOriginProxyKey: with origin_proxy set, a job's origin requests go
// through that proxy, as absolute-URI proxy requests for an origin the
// agent could not reach itself (.invalid never resolves).
func TestOriginProxyKey(t *testing.T) {
	data := testData(300_000)
	px := &proxyOrigin{data: data}
	srv := httptest.NewServer(px)
	t.Cleanup(srv.Close)
	a := peertest.StartAgent(t, peertest.Config(t, 0, peertest.Options{Configure: func(_ int, c *config.Config) {
		c.OriginProxy = srv.URL
	}}), false)
	tok := client(t, a, true)
	ctx := ctxFor(t, 60*time.Second)
	j, err := tok.SubmitJob(ctx, api.JobRequest{URL: "http://origin.invalid/file", SHA256: hexSHA(data)})
	if err != nil {
		t.Fatal(err)
	}
	wait.ForErr(t, 30*time.Second, "job done", func() error {
		d, err := tok.Job(ctx, j.ID, false)
		if err == nil && d.State == "failed" {
			t.Fatalf("job failed: %s", d.Error)
		}
		if err == nil && d.State != "done" {
			err = fmt.Errorf("state %s", d.State)
		}
		return err
	})
	body, _, err := tok.JobContent(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	got, err := io.ReadAll(body)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("content: %d bytes, %v; want the %d bytes the proxy served", len(got), err, len(data))
	}
	px.mu.Lock()
	defer px.mu.Unlock()
	if len(px.targets) == 0 {
		t.Fatal("the proxy saw no request")
	}
	for _, tg := range px.targets {
		if !strings.Contains(tg, " http://origin.invalid/file") {
			t.Errorf("proxy request %q, want an absolute-URI request for the origin", tg)
		}
	}
}
