package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
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
