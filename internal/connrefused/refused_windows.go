//go:build windows

package connrefused

import (
	"errors"
	"syscall"
)

// wsaeConnRefused is WSAECONNREFUSED, the error Winsock reports for a
// refused connection (syscall.ECONNREFUSED is a made-up value there).
const wsaeConnRefused = syscall.Errno(10061)

// Is reports whether err is a refused TCP connection (WSAECONNREFUSED).
func Is(err error) bool {
	return errors.Is(err, wsaeConnRefused) || errors.Is(err, syscall.ECONNREFUSED)
}
