package peer_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redleader-p2p/redleader/config"
	"github.com/redleader-p2p/redleader/internal/logtest"
	"github.com/redleader-p2p/redleader/peer"
	"github.com/redleader-p2p/redleader/peer/peertest"
)

// startLogged starts an agent whose logs go to the returned buffer.
func startLogged(t *testing.T, cfg config.Config) (*peer.Agent, *logtest.Buffer) {
	t.Helper()
	logs := &logtest.Buffer{}
	a, err := peer.New(cfg, peer.Options{Version: "test", Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		a.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a, logs
}

// TestStartWarnsWithoutKey: one warning at start without a cluster key,
// none with one.
func TestStartWarnsWithoutKey(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	for _, tt := range []struct {
		name, key string
		warnings  int
	}{{"open", "", 1}, {"keyed", key, 0}} {
		t.Run(tt.name, func(t *testing.T) {
			a, logs := startLogged(t, peertest.Config(t, 0, peertest.Options{ClusterKey: tt.key}))
			a.Close()
			got := 0
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, "level=WARN") && strings.Contains(l, "no cluster key") {
					got++
				}
			}
			if got != tt.warnings {
				t.Errorf("%d no-key warnings, want %d; logs:\n%s", got, tt.warnings, logs)
			}
		})
	}
}

// TestAPITokensOverHTTP: the token rules end to end, on a real agent's API
// (api_allow_remote, here on loopback).
func TestAPITokensOverHTTP(t *testing.T) {
	const metricsTok = "metrics-0123456789abcdef0123456789abcdef"
	dir := t.TempDir()
	mfile := filepath.Join(dir, "metrics-token")
	if err := os.WriteFile(mfile, []byte(metricsTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	open := peertest.StartAgent(t, peertest.Config(t, 0, peertest.Options{}), false)
	remote := peertest.StartAgent(t, peertest.Config(t, 1, peertest.Options{Configure: func(_ int, c *config.Config) {
		c.APIAllowRemote = true
		c.APIMetricsTokenFile = mfile
	}}), false)
	token := func(a *peer.Agent) string {
		tok, err := peer.ReadToken(a.DataDir())
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tests := []struct {
		agent  *peer.Agent
		path   string
		token  string
		status int
		body   string // in the answer
	}{
		{open, "/v1/status", "", 200, `"node"`},
		{open, "/metrics", "", 200, "redleader_uptime_seconds"},
		{open, "/debug/pprof/", "", 401, "token"},
		{open, "/debug/pprof/goroutine?debug=1", "", 401, "token"},
		{open, "/debug/pprof/goroutine?debug=1", token(open), 200, "goroutine"},
		{remote, "/v1/status", "", 401, "token"},
		{remote, "/v1/members", metricsTok, 401, "metrics token"},
		{remote, "/v1/status", token(remote), 200, `"node"`},
		{remote, "/metrics", "", 401, "token"},
		{remote, "/metrics", metricsTok, 200, "redleader_uptime_seconds"},
		{remote, "/debug/pprof/", metricsTok, 401, "metrics token"},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(http.MethodGet, "http://"+tt.agent.APIAddr()+tt.path, nil)
		if tt.token != "" {
			req.Header.Set("Authorization", "Bearer "+tt.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || !strings.Contains(string(b), tt.body) {
			t.Errorf("GET %s (remote %v, token %v): %d %.200q; want %d with %q", tt.path, tt.agent == remote,
				tt.token != "", resp.StatusCode, b, tt.status, tt.body)
		}
	}
}
