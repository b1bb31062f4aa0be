//go:build linux

package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// A live lab holds an exclusive flock on lockDir/<id>.lock for its whole life.
// The kernel drops the lock when the process dies, however it dies, so a lock
// file that can be locked belongs to a dead run: its namespaces are stale.
// This works across concurrent test processes (and PID reuse) without any
// clock or PID guessing.

// acquireLabLock picks a fresh lab id and returns its held lock file.
func acquireLabLock() (*os.File, string, error) {
	if err := os.MkdirAll(lockDir, 0o700); err != nil {
		return nil, "", fmt.Errorf("lock dir: %w", err)
	}
	for range 100 {
		id, err := randomID()
		if err != nil {
			return nil, "", err
		}
		if _, err := os.Stat(filepath.Join(netnsDir, id+"-r")); err == nil {
			continue // leftover of a crashed run with the same id
		}
		path := filepath.Join(lockDir, id+".lock")
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("lock file: %w", err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			_ = f.Close() // CleanStale holds it for a moment: take another id
			continue
		}
		if !samePath(f, path) {
			_ = f.Close() // CleanStale unlinked it before we locked it
			continue
		}
		_, _ = fmt.Fprintf(f, "pid %d\n", os.Getpid())
		return f, id, nil
	}
	return nil, "", errors.New("no free lab id after 100 tries")
}

// releaseLabLock removes and unlocks a lab's lock file, after its
// namespaces are gone.
func releaseLabLock(f *os.File) {
	_ = os.Remove(f.Name())
	_ = f.Close()
}

// samePath reports whether path still names the open file f.
func samePath(f *os.File, path string) bool {
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	pi, err := os.Stat(path)
	if err != nil {
		return false
	}
	return os.SameFile(fi, pi)
}

// CleanStale removes namespaces left by lab runs that died without cleaning
// up (a crash, a killed test binary): every namespace named NamePrefix...
// whose lab lock is no longer held by a live process. Labs of concurrent
// test processes are left alone. Processes still running in a stale
// namespace are killed. It returns the names of the removed namespaces.
func CleanStale() ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	byID := map[string][]string{}
	for _, e := range entries {
		if id, ok := labIDOf(e.Name()); ok {
			byID[id] = append(byID[id], e.Name())
		}
	}
	// Lock files without namespaces (a crash between creating the lock and
	// the first namespace) are stale too.
	if locks, err := os.ReadDir(lockDir); err == nil {
		for _, e := range locks {
			if id, ok := strings.CutSuffix(e.Name(), ".lock"); ok {
				if _, seen := byID[id]; !seen {
					byID[id] = nil
				}
			}
		}
	}
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	sort.Strings(ids)

	var removed []string
	var errs []error
	for _, id := range ids {
		lock, live := lockIfStale(id)
		if live {
			continue
		}
		for _, ns := range byID[id] {
			if err := deleteNS(ns); err != nil {
				errs = append(errs, err)
				continue
			}
			removed = append(removed, ns)
		}
		if lock != nil {
			releaseLabLock(lock)
		}
	}
	return removed, errors.Join(errs...)
}

// lockIfStale tries to take the lock of lab id. live is true when another
// process holds it. Otherwise the returned lock (nil when the lock file is
// missing) is held by the caller, which must release it.
func lockIfStale(id string) (lock *os.File, live bool) {
	path := filepath.Join(lockDir, id+".lock")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		// No lock file: the lab id was never locked or is being torn down.
		return nil, false
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, true
	}
	return f, false
}

// labIDOf extracts the lab id from a namespace name "rllabXXXXXX-suffix".
func labIDOf(ns string) (string, bool) {
	id, _, ok := strings.Cut(ns, "-")
	if !ok || !strings.HasPrefix(id, NamePrefix) || len(id) != len(NamePrefix)+6 {
		return "", false
	}
	return id, true
}

func killPid(pid int) error {
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %d: %w", pid, err)
	}
	return nil
}
