//go:build unix

package main

import (
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/internal/logtest"
	"github.com/redleader-p2p/redleader/peer/content"
)

// TestOriginSignalExitsZero runs the real command and stops it with SIGINT.
func TestOriginSignalExitsZero(t *testing.T) {
	file, data := testFile(t, 70000)
	var stdout, stderr logtest.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"origin", "--dir", filepath.Dir(file), "--listen", "127.0.0.1:0",
			"--data-dir", t.TempDir(), "--secret-passphrase", "no more secrets"}, &stdout, &stderr)
	}()
	addrRE := regexp.MustCompile(`origin serving.*addr=(127\.0\.0\.1:\d+)`)
	var addr string
	giveUp := time.After(time.Minute) // a hang guard, not a speed check
	// The signal handler is installed before the address is logged.
	for addr == "" {
		select {
		case code := <-done:
			t.Fatalf("origin exited %d: %s", code, stderr.String())
		case <-giveUp:
			t.Fatalf("origin did not log its address: %s", stderr.String())
		case <-time.After(5 * time.Millisecond):
		}
		if m := addrRE.FindStringSubmatch(stderr.String()); m != nil {
			addr = m[1]
		}
	}
	if info := getContentInfo(t, addr, "/file.bin"); !info.Equal(generate(t, data, content.PassphraseSecret("no more secrets"))) {
		t.Fatal("content information not derived from the passphrase")
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := <-done; code != exitOK {
		t.Fatalf("exit %d after SIGINT: %s", code, stderr.String())
	}
}
