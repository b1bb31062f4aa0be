//go:build linux

package lab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const (
	// EnvBinary names a prebuilt redleader binary for lab tests.
	EnvBinary = "REDLEADER_BIN"
	// envBuildDir is set by Main: the directory Binary builds into, once
	// for the whole test binary.
	envBuildDir = "REDLEADER_LAB_BUILD_DIR"
	binName     = "redleader"
)

// Main runs a lab test package: it removes namespaces left by crashed runs
// (when root), lets Binary build the redleader binary at most once for the
// whole test binary, runs the tests and removes the build. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(lab.Main(m)) }
//
// m is a *testing.M, or a wrapper of one (for goleak.VerifyTestMain).
func Main(m interface{ Run() int }) int {
	if os.Geteuid() == 0 {
		removed, err := CleanStale()
		if len(removed) > 0 {
			fmt.Fprintf(os.Stderr, "lab: removed stale namespaces %s\n", strings.Join(removed, " "))
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "lab: clean stale namespaces: %v\n", err)
		}
	}
	if os.Getenv(EnvBinary) == "" && os.Getenv(envBuildDir) == "" {
		dir, err := os.MkdirTemp("", "rllab-bin-")
		if err != nil {
			fmt.Fprintf(os.Stderr, "lab: %v\n", err)
			return 1
		}
		defer os.RemoveAll(dir)
		if err := os.Setenv(envBuildDir, dir); err != nil {
			fmt.Fprintf(os.Stderr, "lab: %v\n", err)
			return 1
		}
	}
	return m.Run()
}

// Binary returns the path of the redleader binary for lab tests: $REDLEADER_BIN
// when set, otherwise a `go build` of ./cmd/redleader (without -race) from
// the module root. Under Main the build happens once per test binary;
// without Main every call builds into tb.TempDir(). It fails the test if the
// binary is missing or does not build.
func Binary(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv(EnvBinary); p != "" {
		fi, err := os.Stat(p)
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			tb.Fatalf("lab: $%s=%q is not an executable file (%v)", EnvBinary, p, err)
		}
		return p
	}
	dir := os.Getenv(envBuildDir)
	if dir == "" {
		p, err := build(tb.TempDir(), "")
		if err != nil {
			tb.Fatalf("lab: %v", err)
		}
		return p
	}
	p, err := buildOnce(dir, "")
	if err != nil {
		tb.Fatalf("lab: %v", err)
	}
	return p
}

// buildOnce builds into dir unless an earlier call (in any goroutine) already
// did or failed; a file lock serialises callers. from is as for build.
func buildOnce(dir, from string) (string, error) {
	lock, err := os.OpenFile(filepath.Join(dir, "build.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", fmt.Errorf("build lock: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return "", fmt.Errorf("build lock: %w", err)
	}
	bin := filepath.Join(dir, binName)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	errFile := filepath.Join(dir, "build.err")
	if msg, err := os.ReadFile(errFile); err == nil {
		return "", errors.New(string(msg))
	}
	p, err := build(dir, from)
	if err != nil {
		_ = os.WriteFile(errFile, []byte(err.Error()), 0o600)
		return "", err
	}
	return p, nil
}

// build runs `go build -o dir/redleader ./cmd/redleader` in the root of the
// module that contains directory from ("" for the working directory).
func build(dir, from string) (string, error) {
	env := exec.Command("go", "env", "GOMOD")
	env.Dir = from
	out, err := env.Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("build redleader: not inside a Go module")
	}
	bin := filepath.Join(dir, binName)
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/redleader")
	cmd.Dir = filepath.Dir(gomod)
	var msg bytes.Buffer
	cmd.Stdout, cmd.Stderr = &msg, &msg
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/redleader: %w\n%s", err, msg.String())
	}
	return bin, nil
}
