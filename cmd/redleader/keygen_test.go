package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/redleader-p2p/redleader/config"
)

// TestKeygen: keygen prints one key that config accepts, a new one each
// time, as text or JSON.
func TestKeygen(t *testing.T) {
	seen := map[string]bool{}
	for _, args := range [][]string{{"keygen"}, {"keygen"}, {"keygen", "--json"}} {
		code, out, stderr := runCLI(t, args...)
		if code != exitOK {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		key := strings.TrimSuffix(out, "\n")
		if len(args) > 1 {
			var v struct{ Key string }
			if err := json.Unmarshal([]byte(out), &v); err != nil {
				t.Fatalf("--json output %q: %v", out, err)
			}
			key = v.Key
		} else if strings.Contains(key, "\n") {
			t.Fatalf("output is not one line: %q", out)
		}
		if _, err := config.DecodeKey(key); err != nil {
			t.Fatalf("%v printed %q: %v", args, key, err)
		}
		if seen[key] {
			t.Fatalf("the same key twice: %q", key)
		}
		seen[key] = true
	}
	var keys []string
	for k := range seen {
		keys = append(keys, k)
	}
	c := config.Default()
	c.DataDir = t.TempDir()
	c.ClusterKeys = keys
	if err := c.Validate(); err != nil {
		t.Fatalf("generated keys as cluster_keys: %v", err)
	}
	if code, _, _ := runCLI(t, "keygen", "extra"); code != exitConfig {
		t.Fatalf("keygen with an argument: exit %d, want %d", code, exitConfig)
	}
}

// TestClusterKeysFromEnv: REDLEADER_CLUSTER_KEYS takes a comma-separated
// list; `redleader config` hides the keys; with cluster_key set as well
// the CLI exits 2 naming the keys.
func TestClusterKeysFromEnv(t *testing.T) {
	_, k1, _ := runCLI(t, "keygen")
	_, k2, _ := runCLI(t, "keygen")
	k1, k2 = strings.TrimSpace(k1), strings.TrimSpace(k2)
	t.Setenv("REDLEADER_CLUSTER_KEYS", k2+","+k1)
	code, out, stderr := runCLI(t, "config", "--json", "--data-dir", t.TempDir())
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var cfg map[string]any
	if err := json.Unmarshal([]byte(out), &cfg); err != nil {
		t.Fatal(err)
	}
	if ks, _ := cfg["cluster_keys"].([]any); len(ks) != 2 {
		t.Fatalf("cluster_keys = %v, want 2 entries", cfg["cluster_keys"])
	}
	if strings.Contains(out, k1) || strings.Contains(out, k2) {
		t.Fatal("redleader config shows a key")
	}
	t.Setenv("REDLEADER_CLUSTER_KEY", k1)
	code, _, stderr = runCLI(t, "config", "--data-dir", t.TempDir())
	if code != exitConfig || !strings.Contains(stderr, "cluster_keys") || !strings.Contains(stderr, "cluster_key is set too") {
		t.Fatalf("both keys set: exit %d, %q; want exit 2 naming cluster_key and cluster_keys", code, stderr)
	}
}
