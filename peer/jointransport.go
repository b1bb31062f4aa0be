package peer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// memberlist's Join takes no context: it resolves names with the system
// resolver and exchanges state over TCP with a 10 s timeout (TCPTimeout),
// one address after the other. A join to an address that is blackholed,
// or that accepts and never answers, held the agent's Close for that long
// (more with a queue of such addresses: 19.5 s with 500k join entries).
// pool.JoinContext resolves names itself with ctx, and the pool's
// transport binds every TCP stream dialed while a join runs to the join's
// ctx: cancelling it cuts the dial or closes the connection, and the join
// returns at once.

// joinTransport is memberlist's NetTransport whose TCP streams dialed
// during a join end when the join's context does, and whose inbound
// streams are capped (gossipstreams.go).
type joinTransport struct {
	*memberlist.NetTransport
	streams *streamCap

	joinMu sync.Mutex // one join at a time

	mu  sync.Mutex
	ctx context.Context // of the join in progress; nil between joins
}

// newJoinTransport makes the transport memberlist would make for mc (with
// its retries for a dynamic port), and records the port it got in mc.
// refused (if not nil) counts the inbound streams over the caps.
func newJoinTransport(mc *memberlist.Config, log *slog.Logger, refused func(reason string)) (*joinTransport, error) {
	nc := &memberlist.NetTransportConfig{BindAddrs: []string{mc.BindAddr}, BindPort: mc.BindPort, Logger: mc.Logger}
	tries := 1
	if mc.BindPort == 0 {
		tries = 10 // a free port for TCP may be taken for UDP: retry
	}
	var (
		nt  *memberlist.NetTransport
		err error
	)
	for range tries {
		if nt, err = memberlist.NewNetTransport(nc); err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	if mc.BindPort == 0 {
		mc.BindPort = nt.GetAutoBindPort()
		mc.AdvertisePort = mc.BindPort
	}
	return &joinTransport{NetTransport: nt,
		streams: newStreamCap(nt.StreamCh(), gossipStreamsPerSource, gossipStreamsTotal, refused, log)}, nil
}

// StreamCh implements memberlist.Transport: the inbound streams within the
// caps.
func (t *joinTransport) StreamCh() <-chan net.Conn { return t.streams.out }

// Shutdown implements memberlist.Transport.
func (t *joinTransport) Shutdown() error { return t.streams.shutdown(t.NetTransport.Shutdown) }

// DialTimeout implements memberlist.Transport.
func (t *joinTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout implements memberlist.NodeAwareTransport: during a
// join, the dial and the connection end with the join's context.
func (t *joinTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	t.mu.Lock()
	ctx := t.ctx
	t.mu.Unlock()
	if ctx == nil {
		return t.NetTransport.DialAddressTimeout(a, timeout)
	}
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", a.Addr)
	if err != nil {
		return nil, err
	}
	return &ctxConn{Conn: c, stop: context.AfterFunc(ctx, func() { c.Close() })}, nil
}

// ctxConn is a connection closed when its context ends (AfterFunc).
type ctxConn struct {
	net.Conn
	stop func() bool
}

func (c *ctxConn) Close() error {
	c.stop()
	return c.Conn.Close()
}

// JoinContext is Join that cancelling ctx ends at once: name lookups,
// dials and state exchanges in progress. (A pool on a transport of its
// own, in tests, joins as Join does.)
func (p *pool) JoinContext(ctx context.Context, addrs []string) (int, error) {
	if len(addrs) == 0 {
		return 0, nil
	}
	resolved, rerr := resolveJoin(ctx, addrs)
	if len(resolved) == 0 {
		return 0, rerr
	}
	t := p.tr
	if t == nil {
		return p.ml.Join(resolved)
	}
	t.joinMu.Lock()
	defer t.joinMu.Unlock()
	t.mu.Lock()
	t.ctx = ctx
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		t.ctx = nil
		t.mu.Unlock()
	}()
	if err := ctx.Err(); err != nil { // dials from here on fail at once
		return 0, err
	}
	n, err := p.ml.Join(resolved)
	if cerr := ctx.Err(); cerr != nil && n == 0 {
		return 0, cerr
	}
	if n == 0 && rerr != nil {
		err = errors.Join(rerr, err)
	}
	return n, err
}

// resolveJoin turns host:port join addresses into ip:port ones, looking
// names up with ctx (memberlist's own lookup cannot be cancelled).
// Addresses that do not resolve are left out and reported in the error.
func resolveJoin(ctx context.Context, addrs []string) ([]string, error) {
	var (
		out  []string
		errs []error
	)
	for _, addr := range addrs {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("join address %q: %w", addr, err))
			continue
		}
		if _, err := netip.ParseAddr(host); err == nil {
			out = append(out, addr)
			continue
		}
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			errs = append(errs, fmt.Errorf("join address %q: %w", addr, err))
			continue
		}
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip.Unmap().String(), port))
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return out, errors.Join(errs...)
}
