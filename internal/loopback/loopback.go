// Package loopback has the loopback addresses that tests share.
package loopback

import (
	"net"
	"testing"
)

// ClosedAddr is a loopback address (127.0.0.1:port) nothing listens on: a
// port the system just handed out and that was closed again, so a dial
// there is refused.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
