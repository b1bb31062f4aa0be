//go:build !windows

package service

import (
	"errors"
	"log/slog"
)

var errNotWindows = errors.New("`redleader service run` is started by the Windows service manager; elsewhere run `redleader agent`")

// IsWindowsService is false outside Windows.
func IsWindowsService() (bool, error) { return false, nil }

// OpenEventLog exists on Windows only.
func OpenEventLog(slog.Leveler, bool) (*slog.Logger, func() error, error) {
	return nil, nil, errNotWindows
}

// RunWindowsService exists on Windows only.
func RunWindowsService(Agent, *slog.Logger) error { return errNotWindows }
