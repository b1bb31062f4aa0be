//go:build !windows

package peer

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// lockDataDir takes an exclusive, non-blocking lock on the data dir's lock
// file. The kernel drops the lock when the process dies, so a crash never
// leaves a stale lock behind.
func lockDataDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, ErrDataDirLocked
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}
