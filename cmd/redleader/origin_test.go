package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/redleader-p2p/redleader/internal/logtest"
	"github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/origin"
)

// getContentInfo asks the origin at addr for path's content information.
func getContentInfo(t *testing.T, addr, path string) *content.Info {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept-Encoding", "peerdist")
	req.Header.Set("X-P2P-PeerDist", "Version=1.1")
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "peerdist" {
		t.Fatalf("status %d, Content-Encoding %q", resp.StatusCode, resp.Header.Get("Content-Encoding"))
	}
	info, err := content.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// TestOriginServesWithGeneratedSecret: with no configuration the origin
// generates a secret in the data dir, serves content information derived
// from it, and stops cleanly when its context ends.
func TestOriginServesWithGeneratedSecret(t *testing.T) {
	defer goleak.VerifyNone(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	t.Setenv("REDLEADER_DATA_DIR", dataDir)
	file, data := testFile(t, 200000)
	var stderr logtest.Buffer
	g := &globals{stdout: io.Discard, stderr: &stderr}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	o := originFlags{dir: filepath.Dir(file), listen: "127.0.0.1:0", hashWait: time.Minute, workers: 1}
	go func() { done <- g.runOrigin(ctx, originCmd(g), o, func(a net.Addr) { addrc <- a }) }()
	var addr net.Addr
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("origin ended: %v\n%s", err, stderr.String())
	}
	info := getContentInfo(t, addr.String(), "/file.bin")
	fi, err := os.Stat(filepath.Join(dataDir, origin.SecretFile))
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode %v", fi.Mode().Perm())
	}
	secret, err := origin.LoadSecret(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Equal(generate(t, data, secret)) {
		t.Fatal("content information not derived from the stored secret")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr.String(), "generated a server secret") {
		t.Fatalf("no log of the generated secret:\n%s", stderr.String())
	}
}

func TestOriginConfigErrors(t *testing.T) {
	badSecret := badSecretDir(t)
	file, _ := testFile(t, 10)
	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{name: "no dir", args: []string{"origin", "--listen", "127.0.0.1:0"}, msg: "--dir"},
		{name: "missing dir", args: []string{"origin", "--dir", filepath.Join(t.TempDir(), "nope"), "--listen", "127.0.0.1:0"}, msg: "nope"},
		{name: "dir is a file", args: []string{"origin", "--dir", file, "--listen", "127.0.0.1:0"}, msg: "file.bin"},
		{name: "empty secret file", args: []string{"origin", "--dir", t.TempDir(), "--listen", "127.0.0.1:0", "--data-dir", badSecret}, msg: origin.SecretFile},
		{name: "bad workers", args: []string{"origin", "--dir", t.TempDir(), "--listen", "127.0.0.1:0", "--hash-workers", "0"}, msg: "--hash-workers"},
		{name: "bad log level", args: []string{"origin", "--dir", t.TempDir(), "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--log-level", "loud"}, msg: "log_level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tt.args...)
			if code != exitConfig || !strings.Contains(stderr, tt.msg) {
				t.Fatalf("exit %d, stderr %q; want %d naming %q", code, stderr, exitConfig, tt.msg)
			}
		})
	}
}
