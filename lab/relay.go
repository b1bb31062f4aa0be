//go:build linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

const (
	// relayChunk is the most a relay reads at once; each read is one
	// delayed chunk.
	relayChunk = 32 << 10
	// relayQueue bounds the chunks in flight per direction (8 MiB): at
	// 100 Mbit/s, 40 ms of delay hold about 500 KB.
	relayQueue = 256
	// relayDialTimeout bounds the dial of the relayed server.
	relayDialTimeout = 10 * time.Second
)

// Relay is a TCP relay that delays what it forwards: a round trip in front
// of a server, as a far-away origin has (tc netem is not available on the
// project's machines, and tbf's latency only bounds its queue). Each
// connection it accepts is relayed to a new connection to the server.
// Bytes from the client reach the server half a round trip after they
// arrive, and no sooner than one round trip after the connection was
// accepted (the TCP handshake a far-away client pays before its first
// byte leaves); bytes from the server reach the client half a round trip
// after the relay read them. So a request on a new connection is answered
// two round trips after connect, as over a real link, and on a reused
// connection one round trip after it was sent. The relay does not limit
// the rate: shape the link in front of it (Options.WANRate).
type Relay struct {
	ln   net.Listener
	dial func(ctx context.Context) (net.Conn, error)
	rtt  time.Duration

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the accept loop and every connection

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// StartRelay listens on listen inside h's namespace and relays every
// connection to target, dialed inside h's namespace too, with a round trip
// of rtt (see Relay). Both addresses are IP literals. The relay is closed
// at tb's cleanup; it fails the test if it cannot listen.
func (h *Host) StartRelay(tb testing.TB, listen, target string, rtt time.Duration) *Relay {
	tb.Helper()
	if _, err := literalAddr("tcp", target); err != nil {
		tb.Fatalf("lab: relay on %s: %v", h.Name, err)
	}
	ln, err := h.Listen("tcp", listen)
	if err != nil {
		tb.Fatalf("lab: relay: %v", err)
	}
	r := NewRelay(ln, func(ctx context.Context) (net.Conn, error) {
		return h.DialContext(ctx, "tcp", target)
	}, rtt)
	tb.Cleanup(func() { _ = r.Close() })
	return r
}

// NewRelay serves ln until Close, relaying every connection it accepts to
// a connection dial makes, with a round trip of rtt. The relay owns ln.
func NewRelay(ln net.Listener, dial func(ctx context.Context) (net.Conn, error), rtt time.Duration) *Relay {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Relay{ln: ln, dial: dial, rtt: rtt, ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go r.accept()
	return r
}

// Addr returns the address the relay listens on.
func (r *Relay) Addr() net.Addr { return r.ln.Addr() }

// Close stops the relay: the listener and every relayed connection are
// closed, and Close returns once all of the relay's goroutines are gone.
func (r *Relay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	conns := make([]net.Conn, 0, len(r.conns))
	for c := range r.conns {
		conns = append(conns, c)
	}
	r.mu.Unlock()
	r.cancel()
	err := r.ln.Close()
	for _, c := range conns {
		_ = c.Close()
	}
	r.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// track records c so that Close closes it; false (and c closed) once the
// relay is closed.
func (r *Relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		_ = c.Close()
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *Relay) untrack(c net.Conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
	_ = c.Close()
}

func (r *Relay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			if r.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient accept error (out of descriptors): try again
			// shortly, unless the relay closes meanwhile.
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		if !r.track(c) {
			return
		}
		r.wg.Add(1)
		go r.serve(c, time.Now())
	}
}

// serve relays client c, accepted at accepted, until both directions end.
func (r *Relay) serve(c net.Conn, accepted time.Time) {
	defer r.wg.Done()
	defer r.untrack(c)
	ctx, cancel := context.WithTimeout(r.ctx, relayDialTimeout)
	up, err := r.dial(ctx)
	cancel()
	if err != nil || !r.track(up) {
		return
	}
	defer r.untrack(up)
	half := r.rtt / 2
	// A failed direction ends both: closing both connections stops the
	// other one's read.
	fail := sync.OnceFunc(func() { _ = c.Close(); _ = up.Close() })
	var wg sync.WaitGroup
	wg.Go(func() { r.pipe(up, c, accepted.Add(r.rtt), half, fail) })
	wg.Go(func() { r.pipe(c, up, accepted, half, fail) })
	wg.Wait()
}

// chunk is bytes read from one side, to be written at due.
type chunk struct {
	due time.Time
	b   []byte
}

// pipe copies src to dst, each chunk delay after it was read (and no
// sooner than start + delay). At src's EOF it half-closes dst; on any
// other error it calls fail.
func (r *Relay) pipe(dst, src net.Conn, start time.Time, delay time.Duration, fail func()) {
	ch := make(chan chunk, relayQueue)
	stop := make(chan struct{}) // the writer gave up: the reader stops too
	readErr := make(chan error, 1)
	go func() { // owned by pipe, which waits for readErr
		defer close(ch)
		for {
			buf := make([]byte, relayChunk)
			n, err := src.Read(buf)
			if n > 0 {
				at := time.Now()
				if at.Before(start) {
					at = start
				}
				select {
				case ch <- chunk{due: at.Add(delay), b: buf[:n]}:
				case <-stop:
					readErr <- nil
					return
				}
			}
			if err != nil {
				readErr <- err
				return
			}
		}
	}()
	ok := r.write(dst, ch)
	if !ok {
		fail() // unblocks a reader inside src.Read
	}
	close(stop) // unblocks a reader waiting to queue
	for range ch {
	}
	if err := <-readErr; ok && errors.Is(err, io.EOF) {
		if cw, isTCP := dst.(interface{ CloseWrite() error }); isTCP && cw.CloseWrite() == nil {
			return
		}
	}
	fail()
}

// write writes the chunks of ch to dst at their due times. It returns
// false if a write failed or the relay closed.
func (r *Relay) write(dst net.Conn, ch <-chan chunk) bool {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for c := range ch {
		if d := time.Until(c.due); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-r.ctx.Done():
				return false
			}
		}
		if _, err := dst.Write(c.b); err != nil {
			return false
		}
	}
	return true
}

// String describes the relay for logs.
func (r *Relay) String() string {
	return fmt.Sprintf("relay %s (round trip %v)", r.ln.Addr(), r.rtt)
}
