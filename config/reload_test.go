package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// TestLogFormat: log_format is text (the default) or json, from the file
// or the environment; anything else is refused naming the key.
func TestLogFormat(t *testing.T) {
	if got := Default().LogFormat; got != "text" {
		t.Fatalf("default log_format = %q, want text", got)
	}
	tests := []struct {
		name    string
		file    string
		env     string
		want    string
		wantErr string
	}{
		{name: "default", want: "text"},
		{name: "json in the file", file: "log_format: json\n", want: "json"},
		{name: "text in the file", file: "log_format: text\n", want: "text"},
		{name: "env wins over the file", file: "log_format: text\n", env: "json", want: "json"},
		{name: "unknown format", file: "log_format: xml\n", wantErr: `log_format: "xml": want text or json`},
		{name: "case matters", file: "log_format: JSON\n", wantErr: `log_format: "JSON"`},
		{name: "empty", file: "log_format: \"\"\n", wantErr: `log_format: "": want text or json`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Setenv("REDLEADER_DATA_DIR", dir)
			if tt.env != "" {
				t.Setenv("REDLEADER_LOG_FORMAT", tt.env)
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
					t.Fatalf("err = %v, want ErrInvalid with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.LogFormat != tt.want {
				t.Fatalf("log_format = %q, want %q", cfg.LogFormat, tt.want)
			}
		})
	}
}

// TestChanges: every key that differs is listed once, sorted, with both
// values as `redleader config` shows them; equal configs (an empty and a
// nil list included) list nothing; a changed cluster key is listed but
// never shown.
func TestChanges(t *testing.T) {
	base := Default()
	base.DataDir = "/var/lib/redleader"
	tests := []struct {
		name string
		edit func(*Config)
		want []Change
	}{
		{name: "same", edit: func(*Config) {}},
		{name: "nil and empty join", edit: func(c *Config) { c.Join = nil }},
		{name: "log level", edit: func(c *Config) { c.LogLevel = "debug" },
			want: []Change{{"log_level", "info", "debug"}}},
		{name: "nested keys, sorted", edit: func(c *Config) {
			c.Shaping.PeerRate = 1e6
			c.Discovery.RequestTimer = 400 * time.Millisecond
			c.NotLeaderMaterial = true
		}, want: []Change{
			{"discovery.request_timer", "300ms", "400ms"},
			{"not_leader_material", "false", "true"},
			{"shaping.peer_rate", "256kbit", "1Mbit"},
		}},
		{name: "join list", edit: func(c *Config) { c.Join = []string{"10.0.0.1:7946", "10.0.0.2:7946"} },
			want: []Change{{"join", "[]", "[10.0.0.1:7946, 10.0.0.2:7946]"}}},
		{name: "cluster key hidden", edit: func(c *Config) { c.ClusterKey = testKey(7) },
			want: []Change{{"cluster_key", "", "(set)"}}},
		{name: "proxy password hidden", edit: func(c *Config) { c.OriginProxy = "http://u:secret@proxy.example:3128" },
			want: []Change{{"origin_proxy", "", "http://u:xxxxx@proxy.example:3128"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := base
			next.Join = append([]string{}, base.Join...)
			tt.edit(&next)
			got := Changes(base, next)
			if len(got) != len(tt.want) {
				t.Fatalf("Changes = %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("change %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}

	// A rotated key shows "(set)" on both sides, and is still a change.
	a, b := base, base
	a.ClusterKey, b.ClusterKey = testKey(1), testKey(2)
	got := Changes(a, b)
	if len(got) != 1 || got[0] != (Change{"cluster_key", "(set)", "(set)"}) {
		t.Fatalf("rotated cluster key: Changes = %+v", got)
	}
}
