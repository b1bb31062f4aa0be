package peer

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
)

func newTestPool(t *testing.T) *pool {
	t.Helper()
	p, err := newPool(poolConfig{Node: uuid.NewString(), Subnet: "10.77.0.0/24", BindAddr: "127.0.0.1",
		Advertise: netip.MustParseAddr("127.0.0.1"), Meta: func() []byte { return Meta{Name: "t"}.encode() },
		Retention: time.Minute, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Leave(time.Second) })
	return p
}

// silentListener accepts connections on loopback and never answers; it
// returns its address and a channel that gets each accepted connection.
func silentListener(t *testing.T) (string, <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		close(conns)
		for c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String(), conns
}

// TestJoinContextCancels: a join hanging on a silent peer returns as soon
// as its context ends, and its connection is closed; a join to a real
// pool still works through the same transport.
func TestJoinContextCancels(t *testing.T) {
	p := newTestPool(t)
	addr, conns := silentListener(t)

	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		n   int
		err error
	}
	res := make(chan result, 1)
	start := time.Now()
	go func() {
		n, err := p.JoinContext(ctx, []string{addr})
		res <- result{n, err}
	}()
	var c net.Conn
	select {
	case c = <-conns:
	case <-time.After(5 * time.Second):
		t.Fatal("the join never reached the silent listener")
	}
	cancel()
	select {
	case r := <-res:
		if r.n != 0 || !errors.Is(r.err, context.Canceled) {
			t.Errorf("JoinContext = %d, %v; want 0, context.Canceled", r.n, r.err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("the cancelled join returned after %v", took)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the join did not return after its context was cancelled")
	}
	// The joiner closed its end: the silent side reads EOF, not a timeout.
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Errorf("the cancelled join's connection is still open: %v", err)
	}

	// An already cancelled context joins nothing, at once.
	if n, err := p.JoinContext(ctx, []string{addr}); n != 0 || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %d, %v", n, err)
	}

	q := newTestPool(t)
	n, err := p.JoinContext(context.Background(), []string{q.Addr().String()})
	if n != 1 || err != nil {
		t.Fatalf("join a real pool: %d, %v", n, err)
	}
	// And one that is not cancelled but times out still reports it.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if n, err := p.JoinContext(ctx2, []string{addr}); n != 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("timed-out join: %d, %v", n, err)
	}
}

func TestResolveJoin(t *testing.T) {
	tests := []struct {
		in      []string
		want    []string // must all be in the result
		wantErr bool
	}{
		{[]string{"127.0.0.1:7946", "[::1]:7946"}, []string{"127.0.0.1:7946", "[::1]:7946"}, false},
		{[]string{"localhost:7946"}, []string{"127.0.0.1:7946"}, false},
		{[]string{"no-port", "127.0.0.2:1"}, []string{"127.0.0.2:1"}, true},
	}
	for _, tt := range tests {
		got, err := resolveJoin(context.Background(), tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("%v: err = %v", tt.in, err)
		}
		for _, w := range tt.want {
			if !slices.Contains(got, w) {
				t.Errorf("%v: got %v, want %s in it", tt.in, got, w)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if got, err := resolveJoin(ctx, []string{"localhost:1"}); len(got) != 0 || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v, %v", got, err)
	}
}
