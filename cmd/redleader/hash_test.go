package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/origin"
)

// testFile writes n deterministic bytes and returns the path and data.
func testFile(t *testing.T, n int) (string, []byte) {
	t.Helper()
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i*7 + i/251)
	}
	p := filepath.Join(t.TempDir(), "file.bin")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, data
}

func generate(t *testing.T, data []byte, secret content.ServerSecret) *content.Info {
	t.Helper()
	info, err := content.Generate(context.Background(), bytes.NewReader(data), secret)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func TestHashSummary(t *testing.T) {
	file, data := testFile(t, 150000)
	want := generate(t, data, content.PassphraseSecret("no more secrets"))
	code, stdout, stderr := runCLI(t, "hash", file, "--secret-passphrase", "no more secrets", "--data-dir", t.TempDir())
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	seg := want.Segments[0]
	for _, s := range []string{"1 segments", "range [0, 150000)", "blocks 3", seg.HoD.String(), seg.ID.String()} {
		if !strings.Contains(stdout, s) {
			t.Errorf("summary lacks %q:\n%s", s, stdout)
		}
	}
}

func TestHashJSONAndOutput(t *testing.T) {
	file, data := testFile(t, 100000)
	dataDir := t.TempDir()
	secret, _, err := origin.LoadOrCreateSecret(dataDir) // as `redleader origin` would
	if err != nil {
		t.Fatal(err)
	}
	want := generate(t, data, secret)
	out := filepath.Join(t.TempDir(), "ci.bin")
	code, stdout, stderr := runCLI(t, "hash", file, "--json", "--data-dir", dataDir, "-o", out)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var got hashJSON
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("bad JSON %q: %v", stdout, err)
	}
	wantCI, _ := want.MarshalBinary()
	if got.Size != 100000 || got.Version != "1.0" || got.HashAlgo != "SHA-256" || got.ContentInfoBytes != len(wantCI) ||
		len(got.Segments) != 1 || got.Segments[0].ID != want.Segments[0].ID.String() ||
		got.Segments[0].HoD != want.Segments[0].HoD.String() || got.Segments[0].Blocks != 2 {
		t.Fatalf("JSON %+v does not describe the file", got)
	}
	ci, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ci, wantCI) {
		t.Fatal("-o bytes differ from the generated content information")
	}
}

func TestHashWithoutSecretWarns(t *testing.T) {
	file, data := testFile(t, 1000)
	code, stdout, stderr := runCLI(t, "hash", file, "--data-dir", t.TempDir())
	if code != exitOK || !strings.Contains(stderr, "no origin secret") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if want := generate(t, data, content.NewServerSecret(nil)); !strings.Contains(stdout, want.Segments[0].ID.String()) {
		t.Fatalf("summary lacks the empty-secret segment ID:\n%s", stdout)
	}
}

// badSecretDir is a data dir whose origin secret file is empty (invalid).
func badSecretDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, origin.SecretFile), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestHashErrors(t *testing.T) {
	badSecret := badSecretDir(t)
	file, _ := testFile(t, 10)
	tests := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{name: "no file", args: []string{"hash"}, code: exitConfig, msg: "one FILE"},
		{name: "two files", args: []string{"hash", "a", "b"}, code: exitConfig, msg: "one FILE"},
		{name: "missing file", args: []string{"hash", filepath.Join(t.TempDir(), "nope"), "--secret-passphrase", "x"}, code: exitFail, msg: "nope"},
		{name: "directory", args: []string{"hash", t.TempDir(), "--secret-passphrase", "x"}, code: exitFail, msg: "not a regular file"},
		{name: "empty secret file", args: []string{"hash", file, "--data-dir", badSecret}, code: exitConfig, msg: origin.SecretFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tt.args...)
			if code != tt.code || !strings.Contains(stderr, tt.msg) {
				t.Fatalf("exit %d, stderr %q; want %d naming %q", code, stderr, tt.code, tt.msg)
			}
		})
	}
}
