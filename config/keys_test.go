package config

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func testKey(b byte) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32)) }

func TestClusterKeysValidate(t *testing.T) {
	k1, k2, k3 := testKey(1), testKey(2), testKey(3)
	tooMany := make([]string, MaxClusterKeys+1)
	for i := range tooMany {
		tooMany[i] = testKey(byte(10 + i))
	}
	tests := []struct {
		name    string
		key     string
		keys    []string
		wantErr string // "" = valid; else the key the error must name
		why     string // and a word of the reason
	}{
		{name: "open mode", keys: []string{}},
		{name: "one key", key: k1},
		{name: "one-element list", keys: []string{k1}},
		{name: "rotation list", keys: []string{k2, k1}},
		{name: "spaces around a key", keys: []string{" " + k2, k1 + " "}},
		{name: "the most keys", keys: tooMany[:MaxClusterKeys]},
		{name: "bad base64", keys: []string{k1, "not*base64"}, wantErr: "cluster_keys[1]", why: "not base64"},
		{name: "wrong length", keys: []string{base64.StdEncoding.EncodeToString([]byte("short"))}, wantErr: "cluster_keys[0]", why: "5 bytes"},
		{name: "empty entry", keys: []string{k1, ""}, wantErr: "cluster_keys[1]", why: "empty"},
		{name: "duplicate", keys: []string{k1, k2, k1}, wantErr: "cluster_keys[2]", why: "cluster_keys[0]"},
		{name: "duplicate spelled differently", keys: []string{k3, " " + k3}, wantErr: "cluster_keys[1]", why: "same key"},
		{name: "too many", keys: tooMany, wantErr: "cluster_keys", why: "at most"},
		{name: "both set", key: k1, keys: []string{k2}, wantErr: "cluster_keys", why: "cluster_key is set too"},
		{name: "bad single key", key: "!!!", wantErr: "cluster_key", why: "not base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.DataDir = t.TempDir()
			c.ClusterKey, c.ClusterKeys = tt.key, tt.keys
			err := c.Validate()
			_, kerr := c.Keyring()
			if tt.wantErr == "" {
				if err != nil || kerr != nil {
					t.Fatalf("Validate = %v, Keyring = %v; want valid", err, kerr)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr+": ") || !strings.Contains(err.Error(), tt.why) {
				t.Fatalf("err = %v, want ErrInvalid naming %s (%s)", err, tt.wantErr, tt.why)
			}
			if kerr == nil {
				t.Fatal("Keyring accepted what Validate refuses")
			}
			for _, k := range append([]string{tt.key}, tt.keys...) {
				if len(k) > 8 && strings.Contains(err.Error(), strings.TrimSpace(k)) {
					t.Fatalf("error echoes a key: %v", err)
				}
			}
		})
	}
}

func TestKeyringOrder(t *testing.T) {
	dec := func(s string) []byte { b, _ := base64.StdEncoding.DecodeString(s); return b }
	tests := []struct {
		name string
		key  string
		keys []string
		want [][]byte
	}{
		{"open mode", "", nil, nil},
		{"cluster_key is a one-element list", testKey(1), nil, [][]byte{dec(testKey(1))}},
		{"cluster_keys keeps its order", "", []string{testKey(2), testKey(1)}, [][]byte{dec(testKey(2)), dec(testKey(1))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{ClusterKey: tt.key, ClusterKeys: tt.keys}
			got, err := c.Keyring()
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("Keyring = %d keys, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if !bytes.Equal(got[i], tt.want[i]) {
					t.Fatalf("key %d differs", i)
				}
			}
			primary, err := c.Key()
			if err != nil {
				t.Fatal(err)
			}
			if len(tt.want) == 0 {
				if primary != nil {
					t.Fatalf("Key = %x in open mode", primary)
				}
			} else if !bytes.Equal(primary, tt.want[0]) {
				t.Fatal("Key is not the first of the keyring")
			}
		})
	}
}

// TestClusterKeysLoad: the list comes from a YAML list or from one
// comma-separated REDLEADER_CLUSTER_KEYS; setting it next to cluster_key
// (in any two sources) is refused naming the keys.
func TestClusterKeysLoad(t *testing.T) {
	k1, k2 := testKey(1), testKey(2)
	tests := []struct {
		name    string
		file    string
		env     map[string]string
		want    []string
		wantErr string
	}{
		{name: "yaml list", file: "cluster_keys:\n  - " + k2 + "\n  - " + k1 + "\n", want: []string{k2, k1}},
		{name: "env list", env: map[string]string{"REDLEADER_CLUSTER_KEYS": k2 + "," + k1}, want: []string{k2, k1}},
		{name: "env overrides file", file: "cluster_keys: [" + k1 + "]\n", env: map[string]string{"REDLEADER_CLUSTER_KEYS": k2}, want: []string{k2}},
		{name: "empty env is unset", env: map[string]string{"REDLEADER_CLUSTER_KEYS": ""}, want: nil},
		{name: "key in file, keys in env", file: "cluster_key: " + k1 + "\n", env: map[string]string{"REDLEADER_CLUSTER_KEYS": k2}, wantErr: "cluster_keys: "},
		{name: "bad entry in env", env: map[string]string{"REDLEADER_CLUSTER_KEYS": k1 + ",nope"}, wantErr: "cluster_keys[1]: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Setenv("REDLEADER_DATA_DIR", dir)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			path := ""
			if tt.file != "" {
				path = filepath.Join(dir, "redleader.yaml")
				if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cfg, err := Load(path, pflag.NewFlagSet("t", pflag.ContinueOnError), nil)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want ErrInvalid naming %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(cfg.ClusterKeys, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("cluster_keys = %q, want %q", cfg.ClusterKeys, tt.want)
			}
			keys, err := cfg.Keyring()
			if err != nil || len(keys) != len(tt.want) {
				t.Fatalf("Keyring = %d keys, %v; want %d", len(keys), err, len(tt.want))
			}
		})
	}
}

func TestMapHidesClusterKeys(t *testing.T) {
	c := Default()
	c.ClusterKeys = []string{testKey(1), testKey(2)}
	out, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), testKey(1)) || strings.Contains(string(out), testKey(2)) {
		t.Fatalf("config output shows a key:\n%s", out)
	}
	if got := c.Map()["cluster_keys"]; len(got.([]string)) != 2 {
		t.Fatalf("cluster_keys printed as %v, want two hidden entries", got)
	}
}
