package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "redleader.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBadConfigExitsTwoNamingKey(t *testing.T) {
	unreadable := filepath.Join(t.TempDir(), "missing.yaml")
	tests := []struct {
		name    string
		file    string // config file body ("" = no file)
		path    string // config path when not a written body
		env     map[string]string
		args    []string
		wantKey string
	}{
		{name: "unknown key", file: "gossip_prot: 7946\n", wantKey: "gossip_prot"},
		{name: "unknown nested key", file: "lan_discovery:\n  grup: 239.1.1.1\n", wantKey: "lan_discovery.grup"},
		{name: "bad duration", file: "rejoin_interval: soon\n", wantKey: "rejoin_interval"},
		{name: "negative duration", file: "rehome_interval: -5s\n", wantKey: "rehome_interval"},
		{name: "bad rate", file: "shaping:\n  peer_rate: 12 parsecs\n", wantKey: "shaping.peer_rate"},
		{name: "rate without unit", file: "shaping:\n  leader_rate: 50\n", wantKey: "shaping.leader_rate"},
		{name: "bad CIDR", file: "subnet: 10.1.2.0/33\n", wantKey: "subnet"},
		{name: "bad address", file: "advertise_addr: 10.1.2.300\n", wantKey: "advertise_addr"},
		{name: "bad bind address", file: "bind_addr: everywhere\n", wantKey: "bind_addr"},
		{name: "bad api address", file: "api_addr: 127.0.0.1\n", wantKey: "api_addr"},
		{name: "bad join address", file: "join: [\"10.0.0.1\"]\n", wantKey: "join[0]"},
		{name: "not multicast", file: "lan_discovery:\n  group: 10.0.0.1\n", wantKey: "lan_discovery.group"},
		{name: "port out of range", file: "gossip_port: 70000\n", wantKey: "gossip_port"},
		{name: "port not a number", file: "peer_port: http\n", wantKey: "peer_port"},
		{name: "bad cluster key", file: "cluster_key: c2hvcnQ=\n", wantKey: "cluster_key"},
		{name: "bad log level", file: "log_level: loud\n", wantKey: "log_level"},
		{name: "wrong type", file: "join: 5\nlan_discovery: 7\n", wantKey: "lan_discovery"},
		{name: "not yaml", file: "gossip_port: [\n", wantKey: "config file"},
		{name: "unreadable file", path: unreadable, wantKey: "missing.yaml"},
		{name: "bad env", env: map[string]string{"REDLEADER_LAN_DISCOVERY_PORT": "99999"}, wantKey: "lan_discovery.port"},
		{name: "bad flag value", args: []string{"--data-dir", ""}, wantKey: "data_dir"},
		{name: "api on the LAN without opt-in", file: "api_addr: 0.0.0.0:7380\n", wantKey: "api_addr"},
		{name: "api on the LAN without opt-in, env", env: map[string]string{"REDLEADER_API_ADDR": "10.1.2.3:7380"}, wantKey: "api_allow_remote"},
		{name: "relative token file", file: "api_token_file: api-token\n", wantKey: "api_token_file"},
		{name: "node name too long", file: "node_name: " + strings.Repeat("n", 65) + "\n", wantKey: "node_name"},
		{name: "huge node name", env: map[string]string{"REDLEADER_NODE_NAME": strings.Repeat("n", 10<<20)}, wantKey: "node_name"},
		{name: "location too long", file: "location: " + strings.Repeat("l", 65) + "\n", wantKey: "location"},
		{name: "join list too long", file: "join: [" + strings.Repeat("\"10.0.0.1:7946\",", 256) + "\"10.0.0.2:7946\"]\n", wantKey: "join"},
		{name: "unknown env", env: map[string]string{"REDLEADER_GOSIP_PORT": "7946"}, wantKey: "REDLEADER_GOSIP_PORT"},
		{name: "unknown env, empty", env: map[string]string{"REDLEADER_CLUSTERKEY": ""}, wantKey: "REDLEADER_CLUSTERKEY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			// `config` loads and validates exactly as `agent` does but never
			// starts anything, so a row that wrongly passes cannot put an
			// agent on the machine's network.
			args := []string{"config", "--data-dir", t.TempDir()}
			if tt.file != "" {
				args = append(args, "--config", writeConfig(t, tt.file))
			} else if tt.path != "" {
				args = append(args, "--config", tt.path)
			}
			args = append(args, tt.args...)
			code, _, stderr := runCLI(t, args...)
			if code != exitConfig {
				t.Fatalf("exit code %d, want %d (stderr %q)", code, exitConfig, stderr)
			}
			if !strings.Contains(stderr, tt.wantKey) {
				t.Fatalf("stderr %q does not name %q", stderr, tt.wantKey)
			}
			if strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Fatalf("want a one-line message, got %q", stderr)
			}
			if len(stderr) > 1000 {
				t.Fatalf("want a short message, got %d bytes: %.300q", len(stderr), stderr)
			}
		})
	}
}

// TestAgentBadConfigExitsTwo checks the agent command itself; its flags
// keep it on loopback with no multicast should it ever start.
func TestAgentBadConfigExitsTwo(t *testing.T) {
	code, _, stderr := runCLI(t, "agent", "--data-dir", t.TempDir(), "--bind-addr", "127.0.0.1",
		"--advertise-addr", "127.0.0.1", "--subnet", "127.0.0.0/8", "--no-lan-discover",
		"--api-addr", "127.0.0.1:0", "--gossip-port", "70000")
	if code != exitConfig || !strings.Contains(stderr, "gossip_port") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

// TestAgentRefusesDeployedTokenFile: the agent refuses a deployed token
// file that group or others may read, or that holds no usable token, with
// exit code 2 and a line naming the key, before it touches the network
// (its flags keep it on loopback should it ever start).
func TestAgentRefusesDeployedTokenFile(t *testing.T) {
	good := "0123456789abcdef0123456789abcdef-ok\n"
	tests := []struct {
		name, key, body string
		mode            os.FileMode
		missing         bool
	}{
		{name: "world-readable", key: "api_token_file", body: good, mode: 0o644},
		{name: "group-readable", key: "api_token_file", body: good, mode: 0o640},
		{name: "too short", key: "api_token_file", body: "secret\n", mode: 0o600},
		{name: "missing", key: "api_token_file", missing: true},
		{name: "metrics world-readable", key: "api_metrics_token_file", body: good, mode: 0o604},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if runtime.GOOS == "windows" && tt.mode&0o077 != 0 {
				t.Skip("file modes do not say who may read a file on Windows")
			}
			path := filepath.Join(t.TempDir(), "token")
			if !tt.missing {
				if err := os.WriteFile(path, []byte(tt.body), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(path, tt.mode); err != nil {
					t.Fatal(err)
				}
			}
			code, _, stderr := runCLI(t, "agent", "--data-dir", t.TempDir(), "--bind-addr", "127.0.0.1",
				"--advertise-addr", "127.0.0.1", "--subnet", "127.0.0.0/8", "--no-lan-discover",
				"--api-addr", "127.0.0.1:0", "--gossip-port", "0", "--peer-port", "0",
				"--config", writeConfig(t, tt.key+": "+path+"\n"))
			if code != exitConfig || !strings.Contains(stderr, tt.key+":") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Fatalf("exit %d, stderr %q; want exit %d and one line naming %s", code, stderr, exitConfig, tt.key)
			}
			if strings.Contains(stderr, "0123456789abcdef") {
				t.Fatalf("the error shows the token: %q", stderr)
			}
		})
	}
}

// TestConfigAcceptsOwnEnvAndOptIns: the project's own REDLEADER_*
// variables that set no key (the lab's) are allowed, and a non-loopback
// api_addr passes with api_allow_remote.
func TestConfigAcceptsOwnEnvAndOptIns(t *testing.T) {
	t.Setenv("REDLEADER_BIN", "/usr/local/bin/redleader")
	t.Setenv("REDLEADER_LAB_BUILD_DIR", t.TempDir())
	t.Setenv("REDLEADER_ALLOW_OPEN_ADMIN", "true")
	file := writeConfig(t, "api_addr: 0.0.0.0:7380\napi_allow_remote: true\napi_metrics_token_file: /etc/redleader/metrics-token\n")
	code, out, stderr := runCLI(t, "config", "--json", "--config", file, "--data-dir", t.TempDir())
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	if m["api_addr"] != "0.0.0.0:7380" || m["api_allow_remote"] != true || m["allow_open_admin"] != true ||
		m["api_metrics_token_file"] != "/etc/redleader/metrics-token" {
		t.Errorf("config = %v", m)
	}
}

func TestConfigPrecedence(t *testing.T) {
	file := writeConfig(t, "gossip_port: 1001\npeer_port: 2001\napi_addr: 127.0.0.1:3001\nshaping:\n  peer_rate: 1Mbit\n")
	t.Setenv("REDLEADER_PEER_PORT", "2002")
	t.Setenv("REDLEADER_API_ADDR", "127.0.0.1:3002")
	t.Setenv("REDLEADER_SHAPING_LEADER_RATE", "20Mbit")
	code, out, stderr := runCLI(t, "config", "--json", "--config", file, "--data-dir", "/tmp/x")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	shaping := m["shaping"].(map[string]any)
	checks := map[string]any{
		"gossip_port": 1001.0, // file
		"peer_port":   2002.0, // env beats file
		"api_addr":    "127.0.0.1:3002",
		"data_dir":    "/tmp/x", // flag
	}
	for k, want := range checks {
		if m[k] != want {
			t.Errorf("%s = %v, want %v", k, m[k], want)
		}
	}
	if shaping["peer_rate"] != "1Mbit" || shaping["leader_rate"] != "20Mbit" {
		t.Errorf("shaping = %v", shaping)
	}
}

func TestExampleConfigIsValidAndComplete(t *testing.T) {
	code, _, stderr := runCLI(t, "config", "--config", "../../redleader.example.yaml")
	if code != 0 {
		t.Fatalf("example config rejected: %s", stderr)
	}
	b, err := os.ReadFile("../../redleader.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	code, out, _ := runCLI(t, "config", "--json")
	if code != 0 {
		t.Fatal("config --json failed")
	}
	var m map[string]any
	_ = json.Unmarshal([]byte(out), &m)
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			if sub, ok := v.(map[string]any); ok {
				walk(prefix+k+".", sub)
				continue
			}
			// Every key appears, commented, in the example.
			if !strings.Contains(string(b), k+":") {
				t.Errorf("example config lacks key %s%s", prefix, k)
			}
		}
	}
	walk("", m)
}

func TestUnknownCommandAndFlag(t *testing.T) {
	if code, _, _ := runCLI(t, "frobnicate"); code != exitConfig {
		t.Errorf("unknown command: exit %d", code)
	}
	if code, _, _ := runCLI(t, "status", "--bogus"); code != exitConfig {
		t.Errorf("unknown flag: exit %d", code)
	}
}
