package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/redleader-p2p/redleader/peer/api"
)

// TestReloadCommand: `redleader reload` POSTs /v1/reload with the token and
// no body, and prints one line per changed key (applied, with the policy's
// override; or needing a restart), or the answer as JSON; an agent that
// refuses the file is told in one line with exit 1.
func TestReloadCommand(t *testing.T) {
	answer := api.ReloadResponse{File: "/etc/redleader.yaml",
		Applied: []api.ReloadChange{
			{Key: "log_level", Old: "info", New: "debug"},
			{Key: "shaping.leader_rate", Old: "0", New: "50Mbit", Policy: "20Mbit"},
		},
		Restart: []api.ReloadChange{{Key: "gossip_port", Old: "7946", New: "7950"}},
	}
	var (
		mu   sync.Mutex
		seen []string
		bad  bool // answer 422
	)
	addr := fakeAgent(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, strings.TrimSpace(r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("Authorization")+" "+string(b)))
		refuse := bad
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if refuse {
			w.WriteHeader(http.StatusUnprocessableEntity)
			json.NewEncoder(w).Encode(api.ErrorResponse{Error: `invalid config: log_level: "loud": want debug, info, warn or error (the running config stays)`})
			return
		}
		json.NewEncoder(w).Encode(answer)
	}))
	dir := tokenDir(t)
	requests := func() []string {
		mu.Lock()
		defer mu.Unlock()
		out := seen
		seen = nil
		return out
	}

	code, out, stderr := runCLI(t, "reload", "--api", addr, "--data-dir", dir)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if got := requests(); len(got) != 1 || got[0] != "POST /v1/reload Bearer "+testToken {
		t.Errorf("requests %q, want one POST /v1/reload with the token and no body", got)
	}
	want := "reloaded /etc/redleader.yaml\n" +
		"  applied          log_level: info -> debug\n" +
		"  applied          shaping.leader_rate: 0 -> 50Mbit (the committed policy's 20Mbit stays in force: `redleader policy set` changes it)\n" +
		"  needs a restart  gossip_port: 7946 -> 7950 (left as it was)\n"
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}

	code, out, _ = runCLI(t, "reload", "--api", addr, "--data-dir", dir, "--json")
	var got api.ReloadResponse
	if code != exitOK || json.Unmarshal([]byte(out), &got) != nil || len(got.Applied) != 2 || got.Applied[1].Policy != "20Mbit" ||
		len(got.Restart) != 1 || got.File != answer.File {
		t.Errorf("--json: exit %d, %s", code, out)
	}
	requests()

	mu.Lock()
	bad = true
	mu.Unlock()
	code, out, stderr = runCLI(t, "reload", "--api", addr, "--data-dir", dir)
	wantErr := "redleader: agent at " + addr + ` answered 422: invalid config: log_level: "loud": want debug, info, warn or error (the running config stays)` + "\n"
	if code != exitFail || out != "" || stderr != wantErr {
		t.Errorf("refused file: exit %d, stdout %q, stderr %q; want exit 1, %q", code, out, stderr, wantErr)
	}
	requests()

	// No token: nothing is sent.
	code, _, stderr = runCLI(t, "reload", "--api", addr, "--data-dir", t.TempDir())
	if code != exitFail || !strings.Contains(stderr, "api token") || len(requests()) != 0 {
		t.Errorf("no token: exit %d, stderr %q", code, stderr)
	}
}

func TestPrintReloadNothingChanged(t *testing.T) {
	for _, tt := range []struct {
		file, want string
	}{
		{"/etc/redleader.yaml", "reloaded /etc/redleader.yaml: no key changed\n"},
		{"", "reloaded (no config file: environment and flags): no key changed\n"},
	} {
		var b strings.Builder
		if err := printReload(&b, api.ReloadResponse{File: tt.file}); err != nil || b.String() != tt.want {
			t.Errorf("printReload = %q, %v; want %q", b.String(), err, tt.want)
		}
	}
}
