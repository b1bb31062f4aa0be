// Package sublisten is a net.Listener fed with connections that something
// else accepted (a protocol router, an in-memory network), and
// sub-listeners of it: one takes the parent's connections until it or the
// parent closes, and closing it leaves the parent open, so that one Raft
// instance after another can serve the same port.
package sublisten

import (
	"context"
	"net"
	"sync"
)

// Listener is a net.Listener whose connections arrive through Deliver.
type Listener struct {
	addr   net.Addr
	ch     chan net.Conn
	closed error // what Accept returns once the listener is closed
	once   sync.Once
	done   chan struct{}
}

// New returns a listener that reports addr. queue is how many delivered
// connections may wait for Accept (0: Deliver waits for Accept). Once
// closed, Accept returns closedErr (net.ErrClosed if nil).
func New(addr net.Addr, queue int, closedErr error) *Listener {
	if closedErr == nil {
		closedErr = net.ErrClosed
	}
	return &Listener{addr: addr, ch: make(chan net.Conn, queue), closed: closedErr, done: make(chan struct{})}
}

// Deliver hands c to Accept (of l or of one of its sub-listeners). It
// returns the closed error if l closes first, or ctx's error; either way
// the caller still owns c.
func (l *Listener) Deliver(ctx context.Context, c net.Conn) error {
	select {
	case <-l.done:
		return l.closed
	default:
	}
	select {
	case l.ch <- c:
		return nil
	case <-l.done:
		return l.closed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Accept implements net.Listener.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, l.closed
	}
}

// Close implements net.Listener. Connections still queued are not closed:
// whoever delivered them keeps them (in practice they end with the peer).
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr implements net.Listener.
func (l *Listener) Addr() net.Addr { return l.addr }

// Sub returns a listener that takes l's connections until either is
// closed; closing it leaves l open.
func (l *Listener) Sub() net.Listener {
	return &sub{parent: l, done: make(chan struct{})}
}

type sub struct {
	parent *Listener
	once   sync.Once
	done   chan struct{}
}

// Accept implements net.Listener: net.ErrClosed once the sub-listener is
// closed, the parent's closed error once the parent is.
func (s *sub) Accept() (net.Conn, error) {
	select {
	case <-s.done:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-s.parent.ch:
		return c, nil
	case <-s.done:
		return nil, net.ErrClosed
	case <-s.parent.done:
		return nil, s.parent.closed
	}
}

// Close implements net.Listener.
func (s *sub) Close() error {
	s.once.Do(func() { close(s.done) })
	return nil
}

// Addr implements net.Listener.
func (s *sub) Addr() net.Addr { return s.parent.addr }
