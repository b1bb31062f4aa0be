package peer

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/redleader-p2p/redleader/config"
)

const (
	testAPIToken     = "api-token-0123456789abcdef0123456789abcdef"
	testMetricsToken = "metrics-token-0123456789abcdef0123456789ab"
)

// The config's name limit is what the gossip metadata carries, so a valid
// name is never cut.
func TestNameLimitMatchesMeta(t *testing.T) {
	if config.MaxNameLen != maxMetaString {
		t.Fatalf("config.MaxNameLen %d != maxMetaString %d", config.MaxNameLen, maxMetaString)
	}
}

// writeToken writes a token file with mode (chmod, so the umask does not
// interfere).
func writeToken(t *testing.T, path, tok string, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func fileMode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// newTestAgent makes an agent (New only: nothing touches the network)
// whose logs go to the returned buffer.
func newTestAgent(t *testing.T, cfg config.Config) (*Agent, *bytes.Buffer, error) {
	t.Helper()
	var logs bytes.Buffer
	a, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err == nil {
		t.Cleanup(func() { a.lock.Close() })
	}
	return a, &logs, err
}

func testConfig(t *testing.T) config.Config {
	c := config.Default()
	c.DataDir = t.TempDir()
	return c
}

// TestGeneratedTokenFile: <data_dir>/api-token is created 0600; a valid
// token found with a looser mode is kept, repaired to 0600 and logged
// once; an unusable one is replaced.
func TestGeneratedTokenFile(t *testing.T) {
	if !checkFileModes {
		t.Skip("file modes do not say who may read a file here")
	}
	tests := []struct {
		name     string
		existing string      // "" = no file
		mode     fs.FileMode // of the existing file
		keep     bool        // the existing token is kept
		warn     bool
	}{
		{name: "created"},
		{name: "kept", existing: testAPIToken, mode: 0o600, keep: true},
		{name: "owner read-only kept", existing: testAPIToken, mode: 0o400, keep: true},
		{name: "world-readable repaired", existing: testAPIToken, mode: 0o644, keep: true, warn: true},
		{name: "group-readable repaired", existing: testAPIToken, mode: 0o640, keep: true, warn: true},
		{name: "too short replaced", existing: "short", mode: 0o644},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			path := filepath.Join(cfg.DataDir, tokenFile)
			if tt.existing != "" {
				writeToken(t, path, tt.existing, tt.mode)
			}
			a, logs, err := newTestAgent(t, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got := a.token == tt.existing; got != tt.keep {
				t.Errorf("token kept = %v, want %v", got, tt.keep)
			}
			if validToken(a.token) != nil {
				t.Errorf("token %q is not valid", a.token)
			}
			want := fs.FileMode(0o600)
			if tt.keep && tt.mode&0o077 == 0 {
				want = tt.mode
			}
			if m := fileMode(t, path); m != want {
				t.Errorf("mode %04o, want %04o", m, want)
			}
			if tok, err := ReadTokenFor(cfg); err != nil || tok != a.token {
				t.Errorf("ReadTokenFor = %q, %v; want the agent's token", tok, err)
			}
			warned := strings.Count(logs.String(), "level=WARN") == 1 && strings.Contains(logs.String(), "repaired to 0600") &&
				strings.Contains(logs.String(), fmt.Sprintf("was=%04o", tt.mode))
			if warned != tt.warn {
				t.Errorf("warned = %v, want %v; logs:\n%s", warned, tt.warn, logs)
			}
		})
	}
}

// TestDeployedTokenFiles: api_token_file and api_metrics_token_file are
// read, never written; a file group or others may read, a missing one, or
// one without a usable token stops the agent with an error naming the key.
func TestDeployedTokenFiles(t *testing.T) {
	tests := []struct {
		name        string
		api         string // token in api_token_file ("" = key unset)
		apiMode     fs.FileMode
		metrics     string // token in api_metrics_token_file ("" = key unset)
		metricsMode fs.FileMode
		errKey      string // "" = success
		modes       bool   // needs file modes to mean something
	}{
		{name: "api token", api: testAPIToken, apiMode: 0o600},
		{name: "api token read-only", api: testAPIToken, apiMode: 0o400},
		{name: "both", api: testAPIToken, apiMode: 0o600, metrics: testMetricsToken, metricsMode: 0o600},
		{name: "metrics only", metrics: testMetricsToken, metricsMode: 0o600},
		{name: "api world-readable", api: testAPIToken, apiMode: 0o644, errKey: "api_token_file", modes: true},
		{name: "api group-readable", api: testAPIToken, apiMode: 0o640, errKey: "api_token_file", modes: true},
		{name: "api others-writable", api: testAPIToken, apiMode: 0o602, errKey: "api_token_file", modes: true},
		{name: "api short", api: "0123456789", apiMode: 0o600, errKey: "api_token_file"},
		{name: "api with a space", api: "0123456789abcdef 0123456789abcdef", apiMode: 0o600, errKey: "api_token_file"},
		{name: "metrics world-readable", api: testAPIToken, apiMode: 0o600, metrics: testMetricsToken, metricsMode: 0o644,
			errKey: "api_metrics_token_file", modes: true},
		{name: "metrics is the api token", api: testAPIToken, apiMode: 0o600, metrics: testAPIToken, metricsMode: 0o600,
			errKey: "api_metrics_token_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.modes && !checkFileModes {
				t.Skip("file modes do not say who may read a file here")
			}
			cfg := testConfig(t)
			dir := t.TempDir()
			if tt.api != "" {
				cfg.APITokenFile = filepath.Join(dir, "api")
				writeToken(t, cfg.APITokenFile, tt.api, tt.apiMode)
			}
			if tt.metrics != "" {
				cfg.APIMetricsTokenFile = filepath.Join(dir, "metrics")
				writeToken(t, cfg.APIMetricsTokenFile, tt.metrics, tt.metricsMode)
			}
			a, _, err := newTestAgent(t, cfg)
			if tt.errKey != "" {
				if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tt.errKey+":") {
					t.Fatalf("err = %v, want config.ErrInvalid naming %s", err, tt.errKey)
				}
				if strings.Contains(err.Error(), "0123456789abcdef") {
					t.Fatalf("the error shows the token: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.api != "" {
				if a.token != tt.api {
					t.Errorf("token %q, want the deployed one", a.token)
				}
				if _, err := os.Stat(filepath.Join(cfg.DataDir, tokenFile)); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s written with a deployed token (stat: %v)", tokenFile, err)
				}
				if m := fileMode(t, cfg.APITokenFile); runtime.GOOS != "windows" && m != tt.apiMode {
					t.Errorf("deployed file's mode changed to %04o", m)
				}
				if tok, err := ReadTokenFor(cfg); err != nil || tok != tt.api {
					t.Errorf("ReadTokenFor = %q, %v", tok, err)
				}
			}
			if a.metricsToken != tt.metrics {
				t.Errorf("metrics token %q, want %q", a.metricsToken, tt.metrics)
			}
		})
	}
	// A missing file names the key too.
	cfg := testConfig(t)
	cfg.APITokenFile = filepath.Join(t.TempDir(), "nope")
	if _, _, err := newTestAgent(t, cfg); !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "api_token_file:") {
		t.Errorf("missing file: err = %v", err)
	}
}

// TestAPIAuthorization: who may call what, on loopback and with
// api_allow_remote, by token.
func TestAPIAuthorization(t *testing.T) {
	const (
		none = iota
		apiTok
		metricsTok
		wrongTok
	)
	tokenName := []string{"no token", "API token", "metrics token", "wrong token"}
	type call struct {
		method, path string
		token        int
		ok           bool
		host         string // "" is 127.0.0.1
	}
	// Reads and /metrics: open on loopback. Mutating endpoints pass this
	// layer on loopback (their handlers check the token).
	loopback := []call{
		{"GET", "/v1/status", none, true, ""},
		{"HEAD", "/v1/members", none, true, ""},
		{"GET", "/metrics", none, true, ""},
		{"GET", "/v1/nope", none, true, ""}, // a 404 from the mux
		{"PUT", "/v1/policy", none, true, ""},
		{"GET", "/debug/pprof/", none, false, ""},
		{"GET", "/debug/pprof/goroutine", none, false, ""},
		{"GET", "/debug/pprof/profile", wrongTok, false, ""},
		{"GET", "/debug/pprof", none, false, ""},
		{"GET", "/debug//pprof/heap", none, false, ""},
		{"GET", "/v1/../debug/pprof/heap", none, false, ""},
		{"GET", "/debug/pprof/goroutine", apiTok, true, ""},
		{"GET", "/debug/pprof/goroutine", metricsTok, false, ""},
		{"GET", "/metrics", metricsTok, true, ""},
		{"GET", "/v1/status", metricsTok, false, ""},
		{"PUT", "/v1/policy", metricsTok, false, ""},
		// DNS rebinding: a page's name pointed at 127.0.0.1.
		{"GET", "/v1/status", none, false, "rebind.attacker.test:7380"},
		{"GET", "/ui/", none, false, "rebind.attacker.test"},
		{"GET", "/metrics", none, false, "10.0.0.5:7380"},
		{"GET", "/v1/status", none, true, "localhost:7380"},
		{"GET", "/v1/status", none, true, "[::1]:7380"},
		{"GET", "/v1/status", none, true, "127.0.0.2"},
		{"GET", "/v1/status", apiTok, true, "rebind.attacker.test"},
	}
	remote := []call{
		{"GET", "/v1/status", none, false, ""},
		{"GET", "/v1/status", wrongTok, false, ""},
		{"GET", "/v1/status", apiTok, true, ""},
		{"HEAD", "/v1/members", none, false, ""},
		{"GET", "/v1/events", metricsTok, false, ""},
		{"GET", "/v1/nope", none, false, ""},
		{"GET", "/metrics", none, false, ""},
		{"GET", "/metrics", wrongTok, false, ""},
		{"GET", "/metrics", metricsTok, true, ""},
		{"HEAD", "/metrics", metricsTok, true, ""},
		{"POST", "/metrics", metricsTok, false, ""},
		{"GET", "/metrics/../v1/status", metricsTok, false, ""},
		{"GET", "/metrics", apiTok, true, ""},
		{"PUT", "/v1/policy", none, false, ""},
		{"POST", "/v1/cache", metricsTok, false, ""},
		{"GET", "/debug/pprof/", none, false, ""},
		{"GET", "/debug/pprof/", apiTok, true, ""},
	}
	for _, mode := range []struct {
		name   string
		remote bool
		calls  []call
	}{{"loopback", false, loopback}, {"api_allow_remote", true, remote}} {
		t.Run(mode.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.APIAllowRemote = mode.remote
			cfg.APIMetricsTokenFile = filepath.Join(t.TempDir(), "metrics")
			writeToken(t, cfg.APIMetricsTokenFile, testMetricsToken, 0o600)
			a, _, err := newTestAgent(t, cfg)
			if err != nil {
				t.Fatal(err)
			}
			reached := false
			h := a.apiAuth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached = true }))
			for _, c := range mode.calls {
				reached = false
				r := httptest.NewRequest(c.method, "http://127.0.0.1"+c.path, nil)
				if c.host != "" {
					r.Host = c.host
				}
				switch c.token {
				case apiTok:
					r.Header.Set("Authorization", "Bearer "+a.token)
				case metricsTok:
					r.Header.Set("Authorization", "Bearer "+testMetricsToken)
				case wrongTok:
					r.Header.Set("Authorization", "Bearer "+strings.Repeat("x", 64))
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if reached != c.ok || (!c.ok && w.Code != http.StatusUnauthorized) {
					t.Errorf("%s %s with %s: passed %v (status %d), want %v", c.method, c.path, tokenName[c.token], reached, w.Code, c.ok)
				}
				if !c.ok && !strings.HasPrefix(w.Body.String(), `{"error":`) {
					t.Errorf("%s %s: refusal body %q, want an ErrorResponse", c.method, c.path, w.Body)
				}
			}
		})
	}
}
