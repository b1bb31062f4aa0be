// Package service installs, removes and runs the redleader agent as an OS
// service: a systemd unit on Linux (systemd.go), a launchd daemon on macOS
// (launchd.go) and a Windows service (windows.go, firewall.go). The
// generators and the install logic are plain Go without build tags, so that
// they are unit-tested on any OS; only the calls into the Windows service
// manager are Windows-only. Control of a running Windows service (stop,
// shutdown, parameter change) is Serve in control.go, driven in tests
// through a channel like the one golang.org/x/sys/windows/svc hands over.
//
// Whatever the OS, the service runs `redleader` with an explicit --config
// and --data-dir, and its data dir is the one the redleader CLI picks by
// default for an administrator (root, or an elevated prompt): an admin
// typing `redleader fetch` finds the service's API token with no flag.
package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/redleader-p2p/redleader/config"
	"github.com/redleader-p2p/redleader/internal/atomicfile"
)

// Name is the service's name: the systemd unit redleader.service, the
// Windows service and Event Log source "redleader".
const Name = "redleader"

// ErrNotInstalled: the service is not installed on this machine.
var ErrNotInstalled = errors.New("the redleader service is not installed")

// ErrNotRunning: the service is installed but not running.
var ErrNotRunning = errors.New("the redleader service is not running")

// InstallOptions are the choices of `redleader service install`.
type InstallOptions struct {
	// ConfigFile is the admin's config file (--config) the service runs
	// with. Empty: the platform's config file, written with data_dir if
	// there is none (an existing one is kept).
	ConfigFile string
}

// UninstallOptions are the choices of `redleader service uninstall`.
type UninstallOptions struct {
	// Purge also removes the data dir (node ID, API token, Raft state,
	// cache, jobs) and the generated config file.
	Purge bool
}

// Manager installs, removes and inspects the agent's OS service. Every
// method says what it did, or found, on its writer.
type Manager interface {
	Install(ctx context.Context, o InstallOptions) error
	Uninstall(ctx context.Context, o UninstallOptions) error
	Status(ctx context.Context) error
}

// Runner runs a command and returns its combined output. A command that
// exits non-zero returns an error (an *exec.ExitError) and its output.
type Runner func(ctx context.Context, name string, args ...string) (string, error)

// ExecRunner runs commands with os/exec.
func ExecRunner(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// run runs a command with r and words its failure as one error naming the
// command and quoting its output.
func run(ctx context.Context, r Runner, name string, args ...string) (string, error) {
	out, err := r(ctx, name, args...)
	if err != nil {
		line := strings.Join(append([]string{name}, args...), " ")
		if msg := strings.TrimSpace(out); msg != "" {
			return out, fmt.Errorf("%s: %w: %s", line, err, oneLine(msg))
		}
		return out, fmt.Errorf("%s: %w", line, err)
	}
	return out, nil
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// GeneratedConfig is the config file install writes when the admin gives
// none: every key at its default (redleader.example.yaml documents them)
// but data_dir, named explicitly so that the CLI run with this --config
// agrees with the service on the API token.
func GeneratedConfig(dataDir string) []byte {
	var b bytes.Buffer
	b.WriteString("# redleader agent configuration, written by `redleader service install`.\n")
	b.WriteString("# Every key and its default: redleader.example.yaml; `redleader config --config FILE`\n")
	b.WriteString("# prints the effective configuration. The service keeps its data in data_dir:\n")
	b.WriteString("# do not change it (the service passes the same --data-dir).\n")
	v, _ := yaml.Marshal(map[string]string{"data_dir": dataDir})
	b.Write(v)
	return b.Bytes()
}

// writeIfChanged writes data to path (atomically, creating its directory)
// unless the file already holds exactly data. It reports whether it wrote.
func writeIfChanged(path string, data []byte, perm os.FileMode) (bool, error) {
	old, err := os.ReadFile(path)
	if err == nil && bytes.Equal(old, data) {
		fi, err := os.Stat(path)
		if err == nil && fi.Mode().Perm() == perm {
			return false, nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := atomicfile.Write(path, data, perm); err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	return true, nil
}

// exists reports whether path exists (a dangling symlink counts).
func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// root prefixes the paths a manager reads and writes: "" is the real
// file system, tests use a temporary directory. Paths written inside the
// unit, plist and config are never prefixed.
type root string

func (r root) path(p string) string {
	if r == "" {
		return p
	}
	return filepath.Join(string(r), p)
}

// serviceConfig settles the config file a service runs with and returns
// it and whether it wrote it. With the admin's file (userConfig) it checks
// that the agent would accept it and that it names no other data dir than
// the service's. Without one it is layoutConfig, written by
// GeneratedConfig when missing (an existing file is checked the same way
// and kept). It says what it did on w.
func serviceConfig(w io.Writer, r root, userConfig, layoutConfig, dataDir string) (string, bool, error) {
	path := userConfig
	if path == "" {
		path = layoutConfig
		if !exists(r.path(path)) {
			if _, err := writeIfChanged(r.path(path), GeneratedConfig(dataDir), 0o644); err != nil {
				return "", false, err
			}
			fmt.Fprintf(w, "wrote %s (data_dir: %s)\n", path, dataDir)
			return path, true, nil
		}
	}
	if err := checkConfig(r.path(path), dataDir); err != nil {
		return "", false, err
	}
	fmt.Fprintf(w, "kept %s (the service's config file)\n", path)
	return path, false, nil
}

// checkConfig loads path as the agent would (refusing what the agent would
// refuse) and checks that its data_dir, if it sets one, is dataDir.
func checkConfig(path, dataDir string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var keys map[string]any
	if err := yaml.Unmarshal(raw, &keys); err != nil {
		return fmt.Errorf("%w: config file %s: %w", config.ErrInvalid, path, err)
	}
	if v, ok := keys["data_dir"]; ok {
		if s, _ := v.(string); filepath.Clean(s) != filepath.Clean(dataDir) {
			return fmt.Errorf("%w: config file %s: data_dir is %v, but the service keeps its data in %s: remove data_dir or set it to that",
				config.ErrInvalid, path, v, dataDir)
		}
	}
	if _, err := config.Load(path, nil, nil); err != nil {
		return err
	}
	return nil
}

// removeAll removes path and says so on w, or says it was not there.
func removeAll(w io.Writer, path string) error {
	if !exists(path) {
		return nil
	}
	if err := os.RemoveAll(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	fmt.Fprintf(w, "removed %s\n", path)
	return nil
}

// removeFile removes the file path if it exists and says so on w.
func removeFile(w io.Writer, path string) error {
	err := os.Remove(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("remove %s: %w", path, err)
	}
	fmt.Fprintf(w, "removed %s\n", path)
	return nil
}

// removeEmptyDir removes dir if it is empty (a directory install made).
func removeEmptyDir(w io.Writer, dir string) {
	if err := os.Remove(dir); err == nil {
		fmt.Fprintf(w, "removed %s\n", dir)
	}
}
