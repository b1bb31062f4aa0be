package sublisten

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

var errPortClosed = errors.New("port closed")

func pipe(t *testing.T) net.Conn {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a
}

// acceptAsync runs Accept on l and returns its result on a channel.
func acceptAsync(l net.Listener) <-chan error {
	out := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err == nil && c == nil {
			err = errors.New("nil conn without error")
		}
		out <- err
	}()
	return out
}

func TestDeliverReachesAccept(t *testing.T) {
	for _, queue := range []int{0, 4} {
		l := New(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7381}, queue, nil)
		c := pipe(t)
		got := make(chan net.Conn, 1)
		go func() { a, _ := l.Accept(); got <- a }()
		if err := l.Deliver(context.Background(), c); err != nil {
			t.Fatalf("queue %d: Deliver: %v", queue, err)
		}
		if a := <-got; a != c {
			t.Fatalf("queue %d: Accept returned %v, want the delivered conn", queue, a)
		}
		if l.Addr().String() != "127.0.0.1:7381" {
			t.Fatalf("Addr = %v", l.Addr())
		}
		l.Close()
	}
}

func TestSubListenersOneAfterAnother(t *testing.T) {
	l := New(&net.TCPAddr{}, 0, errPortClosed)
	s1 := l.Sub()
	c1 := pipe(t)
	go func() { _ = l.Deliver(context.Background(), c1) }()
	if a, err := s1.Accept(); err != nil || a != c1 {
		t.Fatalf("first sub: Accept = %v, %v", a, err)
	}
	s1.Close()
	if _, err := s1.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("closed sub: Accept err = %v, want net.ErrClosed", err)
	}
	// The parent stays open: a second sub takes the next connection.
	s2 := l.Sub()
	c2 := pipe(t)
	go func() { _ = l.Deliver(context.Background(), c2) }()
	if a, err := s2.Accept(); err != nil || a != c2 {
		t.Fatalf("second sub: Accept = %v, %v", a, err)
	}
	if s2.Addr() != l.Addr() {
		t.Fatalf("sub Addr = %v, want the parent's %v", s2.Addr(), l.Addr())
	}
}

func TestParentCloseEndsEverything(t *testing.T) {
	tests := []struct {
		name      string
		closedErr error
		want      error
	}{
		{"default error", nil, net.ErrClosed},
		{"own error", errPortClosed, errPortClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(&net.TCPAddr{}, 0, tt.closedErr)
			sub := l.Sub()
			parentDone, subDone := acceptAsync(l), acceptAsync(sub)
			l.Close()
			for name, ch := range map[string]<-chan error{"parent": parentDone, "sub": subDone} {
				select {
				case err := <-ch:
					if !errors.Is(err, tt.want) {
						t.Errorf("%s Accept err = %v, want %v", name, err, tt.want)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("%s Accept still blocked after the parent closed", name)
				}
			}
			if err := l.Deliver(context.Background(), pipe(t)); !errors.Is(err, tt.want) {
				t.Errorf("Deliver after Close = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDeliverGivesUpWithContext(t *testing.T) {
	l := New(&net.TCPAddr{}, 0, nil)
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := l.Deliver(ctx, pipe(t)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Deliver with nobody accepting = %v, want the context's deadline", err)
	}
}

func TestClosedSubTakesNothing(t *testing.T) {
	l := New(&net.TCPAddr{}, 1, nil)
	defer l.Close()
	old := l.Sub()
	old.Close()
	c := pipe(t)
	if err := l.Deliver(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("closed sub Accept err = %v, want net.ErrClosed", err)
	}
	if a, err := l.Sub().Accept(); err != nil || a != c {
		t.Fatalf("new sub Accept = %v, %v; want the queued conn", a, err)
	}
}
