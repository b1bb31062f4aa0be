package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/internal/loopback"
	"github.com/redleader-p2p/redleader/peer/api"
)

const testToken = "tok-123"

// tokenDir is a data dir holding the API token, as an agent writes it.
func tokenDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "api-token"), []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// fakeAgent serves h on loopback and returns its address.
func fakeAgent(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// clientCommands are the commands that talk to the agent, with the args
// each needs (the data dir holds the token for the mutating ones).
func clientCommands(t *testing.T) [][]string {
	seg := strings.Repeat("AB", 32)
	return [][]string{
		{"status"}, {"members"}, {"events"}, {"policy"}, {"probe", seg, "--blocks", "8"},
		{"policy", "set", "peer_rate=1Mbit", "--data-dir", tokenDir(t)},
		{"nlm", "pc-7", "on", "--data-dir", tokenDir(t)},
	}
}

// TestClientErrorsAreTold: every client command tells "no agent running"
// from "the agent answered an error", in one line with exit code 1.
func TestClientErrorsAreTold(t *testing.T) {
	answer := func(status int, ctype, body string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", ctype)
			w.WriteHeader(status)
			io.WriteString(w, body)
		})
	}
	tests := []struct {
		name string
		addr func(t *testing.T) string
		want string // after "redleader: "; ADDR is the address
	}{
		{"no agent", func(t *testing.T) string { return loopback.ClosedAddr(t) }, "no redleader agent is running at ADDR (start one with `redleader agent`)"},
		{"500 JSON", func(t *testing.T) string {
			return fakeAgent(t, answer(500, "application/json", `{"error": "disk on fire"}`))
		}, "agent at ADDR answered 500: disk on fire"},
		{"500 plain", func(t *testing.T) string {
			return fakeAgent(t, answer(500, "text/plain", "panic: oops\n"))
		}, "agent at ADDR answered 500: Internal Server Error"},
		{"503 JSON", func(t *testing.T) string {
			return fakeAgent(t, answer(503, "application/json", `{"error": "election not running (agent re-homing?)"}`))
		}, "agent at ADDR answered 503: election not running (agent re-homing?)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := tt.addr(t)
			want := "redleader: " + strings.ReplaceAll(tt.want, "ADDR", addr) + "\n"
			for _, args := range clientCommands(t) {
				for _, js := range []bool{false, true} {
					args := append(append([]string{}, args...), "--api", addr)
					if js {
						args = append(args, "--json")
					}
					code, out, stderr := runCLI(t, args...)
					if code != exitFail || out != "" || stderr != want {
						t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d, stderr %q", args, code, out, stderr, exitFail, want)
					}
				}
			}
		})
	}
}

// TestClientCommandsTalkToAgent drives each command against a fake agent:
// what it sends (method, path, query, token, body) and what it prints.
func TestClientCommandsTalkToAgent(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []string // "METHOD PATH?QUERY AUTH BODY"
	)
	mux := http.NewServeMux()
	reply := func(v any) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			seen = append(seen, strings.TrimSpace(r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("Authorization")+" "+string(b)))
			mu.Unlock()
			if r.Method != http.MethodGet && r.Header.Get("Authorization") != "Bearer "+testToken {
				w.WriteHeader(http.StatusUnauthorized)
				json.NewEncoder(w).Encode(api.ErrorResponse{Error: "missing or wrong API token"})
				return
			}
			json.NewEncoder(w).Encode(v)
		}
	}
	mux.Handle("GET /v1/status", reply(api.StatusResponse{Node: "5f0c1d2e-aaaa", Name: "pc-042", Role: "leader",
		Members: api.MemberCounts{Total: 3, Alive: 3}, Raft: api.RaftInfo{State: "leader", Voters: 3}}))
	mux.Handle("GET /v1/members", reply([]api.MemberInfo{{Node: "5f0c1d2e-aaaa", Name: "pc-042", Self: true, Status: "alive", Rank: 1, Eligible: true}}))
	mux.Handle("GET /v1/events", reply([]api.EventInfo{{Seq: 7, Kind: "appoint", Node: "5f0c1d2e-aaaa", Reason: "ranked first"}}))
	mux.Handle("GET /v1/policy", reply(api.PolicyInfo{Version: 2, PeerRate: "256kbit"}))
	mux.Handle("PUT /v1/policy", reply(api.PolicyInfo{Version: 3, PeerRate: "1Mbit"}))
	mux.Handle("POST /v1/nlm", reply(api.NLMResponse{Node: "5f0c1d2e-aaaa", NotLeaderMaterial: true}))
	mux.Handle("GET /v1/probe", reply(api.ProbeResponse{Segment: "AB", Matches: []api.ProbeMatch{{Peer: "10.1.2.7:7381", Blocks: 8, Full: true}}}))
	addr := fakeAgent(t, mux)
	dir := tokenDir(t)
	seg := strings.Repeat("AB", 32)
	tests := []struct {
		args    []string
		request string
		output  []string
	}{
		{[]string{"status"}, "GET /v1/status", []string{"5f0c1d2e-aaaa", "pc-042", "3 (3 alive", "Role:", "leader"}},
		{[]string{"members"}, "GET /v1/members", []string{"NODE", "5f0c1d2e", "pc-042 (self)", "alive"}},
		{[]string{"events"}, "GET /v1/events", []string{"SEQ", "appoint", "ranked first"}},
		{[]string{"policy"}, "GET /v1/policy", []string{"version:", "2", "256kbit"}},
		{[]string{"policy", "set", "peer_rate=1Mbit", "--data-dir", dir},
			`PUT /v1/policy Bearer tok-123 {"peer_rate":"1Mbit"}`, []string{"version:", "3", "1Mbit"}},
		{[]string{"nlm", "pc-042", "on", "--reason", "flaky", "--data-dir", dir},
			`POST /v1/nlm Bearer tok-123 {"node":"pc-042","on":true,"reason":"flaky"}`,
			[]string{"5f0c1d2e-aaaa: not leader material on"}},
		{[]string{"probe", seg, "--blocks", "8"}, "GET /v1/probe?blocks=8&segment=" + seg, []string{"10.1.2.7:7381", "8", "yes"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args[:min(2, len(tt.args))], " "), func(t *testing.T) {
			mu.Lock()
			seen = nil
			mu.Unlock()
			code, out, stderr := runCLI(t, append(tt.args, "--api", addr)...)
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			mu.Lock()
			got := append([]string{}, seen...)
			mu.Unlock()
			if len(got) != 1 || got[0] != tt.request {
				t.Errorf("requests %q, want [%q]", got, tt.request)
			}
			for _, w := range tt.output {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}

	// A wrong token is an error answer, told as such.
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "api-token"), []byte("wrong"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCLI(t, "policy", "set", "peer_rate=1Mbit", "--data-dir", bad, "--api", addr)
	if want := "redleader: agent at " + addr + " answered 401: missing or wrong API token\n"; code != exitFail || stderr != want {
		t.Errorf("wrong token: exit %d, stderr %q, want %q", code, stderr, want)
	}
	// No token in the data dir: nothing is sent.
	mu.Lock()
	seen = nil
	mu.Unlock()
	code, _, stderr = runCLI(t, "nlm", "pc-042", "on", "--data-dir", t.TempDir(), "--api", addr)
	mu.Lock()
	sent := len(seen)
	mu.Unlock()
	if code != exitFail || !strings.Contains(stderr, "api token") || !strings.Contains(stderr, "--data-dir") || sent != 0 {
		t.Errorf("no token: exit %d, stderr %q, %d requests sent", code, stderr, sent)
	}
}

// TestClientFindsDeployedToken: with api_token_file in the config,
// mutating commands send that file's token, and so do reads when the
// config sets api_allow_remote (the agent wants it everywhere then), not
// otherwise; without a readable token, reads go without one and mutating
// calls are not sent.
func TestClientFindsDeployedToken(t *testing.T) {
	var (
		mu   sync.Mutex
		auth []string
	)
	addr := fakeAgent(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, "{}")
	}))
	tokFile := filepath.Join(t.TempDir(), "deployed-token")
	if err := os.WriteFile(tokFile, []byte("deployed-0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withFile := writeConfig(t, "api_token_file: "+tokFile+"\n")
	remote := writeConfig(t, "api_token_file: "+tokFile+"\napi_allow_remote: true\n")
	noToken := writeConfig(t, "data_dir: "+t.TempDir()+"\napi_allow_remote: true\n")
	tests := []struct {
		args []string
		want string // the one request, "" = none sent
		code int
	}{
		{[]string{"status", "--config", withFile}, "GET /v1/status ", exitOK},
		{[]string{"status", "--config", remote}, "GET /v1/status Bearer deployed-0123456789abcdef0123456789abcdef", exitOK},
		{[]string{"policy", "--config", remote}, "GET /v1/policy Bearer deployed-0123456789abcdef0123456789abcdef", exitOK},
		{[]string{"policy", "set", "peer_rate=1Mbit", "--config", withFile}, "PUT /v1/policy Bearer deployed-0123456789abcdef0123456789abcdef", exitOK},
		{[]string{"status", "--config", noToken}, "GET /v1/status ", exitOK},
		{[]string{"nlm", "pc-1", "on", "--config", noToken}, "", exitFail},
	}
	for _, tt := range tests {
		mu.Lock()
		auth = nil
		mu.Unlock()
		code, _, stderr := runCLI(t, append(tt.args, "--api", addr)...)
		mu.Lock()
		got := append([]string{}, auth...)
		mu.Unlock()
		want := []string{}
		if tt.want != "" {
			want = append(want, tt.want)
		}
		if code != tt.code || strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("%v: exit %d (stderr %q), requests %q; want exit %d, %q", tt.args, code, stderr, got, tt.code, want)
		}
	}
}

// TestAgentErrorTimeout: a client call that times out is told as such.
func TestAgentErrorTimeout(t *testing.T) {
	release := make(chan struct{})
	addr := fakeAgent(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release) })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := api.New(addr).Status(ctx)
	err = agentError(addr, err)
	if want := "agent at " + addr + " did not answer within 15s"; err == nil || err.Error() != want || !errors.Is(err, api.ErrTimeout) {
		t.Errorf("error %v, want %q wrapping api.ErrTimeout", err, want)
	}
}
