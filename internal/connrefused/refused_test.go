package connrefused

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"
)

// TestIs: a dial to a closed loopback port is refused; a dial that times
// out, a wrapped other error and nil are not.
func TestIs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, refusedErr := net.DialTimeout("tcp", addr, 5*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, cancelledErr := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"refused dial", refusedErr, true},
		{"refused, wrapped", fmt.Errorf("probe: %w", refusedErr), true},
		{"cancelled dial", cancelledErr, false},
		{"other", errors.New("connection refused"), false}, // the text alone is not the error
		{"nil", nil, false},
	} {
		if got := Is(tc.err); got != tc.want {
			t.Errorf("%s: Is(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}
