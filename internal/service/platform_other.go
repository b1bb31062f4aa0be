//go:build !linux && !darwin && !windows

package service

import (
	"fmt"
	"io"
	"runtime"
)

// New: no service manager is supported on this OS.
func New(_, _ string, _ io.Writer) (Manager, error) {
	return nil, fmt.Errorf("redleader service supports Linux (systemd), macOS (launchd) and Windows, not %s", runtime.GOOS)
}
