package peer_test

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/config"
	"github.com/redleader-p2p/redleader/internal/wait"
	"github.com/redleader-p2p/redleader/peer/peertest"
)

// blackhole is a loopback listener that accepts connections and never
// answers: a join to it hangs until memberlist's TCP timeout (10 s).
type blackhole struct {
	ln       net.Listener
	accepted atomic.Int64
	mu       sync.Mutex
	conns    []net.Conn
	done     chan struct{}
}

func newBlackhole(t *testing.T, addr string) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
			b.accepted.Add(1)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-b.done
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, c := range b.conns {
			c.Close()
		}
	})
	return b
}

// TestCloseStopsJoinsInFlight: an agent whose join list names addresses
// that never answer (a listener that accepts and stays silent, and ports
// with nothing listening) closes promptly while a join hangs.
func TestCloseStopsJoinsInFlight(t *testing.T) {
	hole := newBlackhole(t, "127.0.0.1:0")
	// 127.0.0.x ports with nothing listening: refused at once.
	refused := []string{"127.0.0.2:9", "127.0.0.3:9"}
	join := make([]string, 0, config.MaxJoin)
	for len(join) < config.MaxJoin {
		join = append(join, hole.ln.Addr().String(), refused[len(join)%2])
	}
	cfg := peertest.Config(t, 0, peertest.Options{Join: join[:config.MaxJoin]})
	a := peertest.NewAgent(t, cfg, false)
	if err := a.Start(context.Background()); err != nil {
		a.Close()
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "a join to hang on the silent listener", func() bool { return hole.accepted.Load() > 0 })
	start := time.Now()
	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Close still blocked after 20 s")
	}
	took := time.Since(start)
	if took > 3*time.Second {
		t.Fatalf("Close took %v with a join in flight, want under 3 s", took)
	}
	t.Logf("Close took %v with a join in flight", took)
}
