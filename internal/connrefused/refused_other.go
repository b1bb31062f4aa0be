//go:build !windows

package connrefused

import (
	"errors"
	"syscall"
)

// Is reports whether err is a refused TCP connection (ECONNREFUSED).
func Is(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
