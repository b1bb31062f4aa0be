package peer

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/redleader-p2p/redleader/internal/sublisten"
)

// The peer port carries three protocols on one TCP port, told apart by the
// first byte a client sends:
//
//	0x16       a TLS handshake (only when a cluster key is set); inside the
//	           TLS session, the first byte is connRaft or connRPC
//	connRaft   Raft (plain: only without a cluster key)
//	connRPC    cluster RPC, HTTP/1.1 (plain: only without a cluster key)
//	otherwise  HTTP: MS-PCCRR retrieval, always plain so that any
//	           BranchCache peer can fetch (blocks are encrypted by PCCRR)
//
// With a cluster key, Raft and RPC are only reachable through mutual TLS with
// the certificate derived from the key: an agent without it can do nothing.
const (
	connRaft byte = 0x01
	connRPC  byte = 0x02
	tlsFirst byte = 0x16

	sniffTimeout = 5 * time.Second
)

// ErrPortClosed is returned by the virtual listeners once the port closes.
var ErrPortClosed = errors.New("peer port closed")

// peerPort owns the TCP listener and one goroutine per connection until
// its first byte is read.
type peerPort struct {
	ln  net.Listener
	tls *tls.Config // server side; nil without a cluster key
	log *slog.Logger
	// The virtual listeners the router feeds; Raft's are taken through
	// Raft.Sub(), one Raft instance after another.
	Raft *sublisten.Listener
	RPC  *sublisten.Listener
	HTTP *sublisten.Listener

	wg sync.WaitGroup
}

func listenPeerPort(addr string, tlsConf *tls.Config, log *slog.Logger) (*peerPort, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("peer port %s: %w", addr, err)
	}
	p := &peerPort{ln: ln, tls: tlsConf, log: log,
		Raft: newVListener(ln.Addr()), RPC: newVListener(ln.Addr()), HTTP: newVListener(ln.Addr())}
	p.wg.Add(1)
	go func() { defer p.wg.Done(); p.acceptLoop() }()
	return p, nil
}

// Port is the bound TCP port.
func (p *peerPort) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

func (p *peerPort) acceptLoop() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.wg.Add(1)
		go func() { defer p.wg.Done(); p.route(c) }()
	}
}

// route reads the first byte(s) and hands the connection to its listener.
func (p *peerPort) route(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(sniffTimeout))
	br := bufio.NewReaderSize(c, 512)
	first, err := br.Peek(1)
	if err != nil {
		c.Close()
		return
	}
	var conn net.Conn = &bufConn{Conn: c, r: br}
	kind := first[0]
	switch {
	case kind == tlsFirst && p.tls != nil:
		tc := tls.Server(conn, p.tls)
		ctx, cancel := context.WithTimeout(context.Background(), sniffTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			p.log.Debug("peer port: TLS handshake refused", "remote", c.RemoteAddr(), "err", err)
			tc.Close()
			return
		}
		var b [1]byte
		if _, err := tc.Read(b[:]); err != nil || (b[0] != connRaft && b[0] != connRPC) {
			tc.Close()
			return
		}
		kind, conn = b[0], tc
	case kind == connRaft || kind == connRPC:
		if p.tls != nil {
			p.log.Debug("peer port: plain cluster connection refused (cluster key set)", "remote", c.RemoteAddr())
			c.Close()
			return
		}
		_, _ = br.Discard(1)
	default:
		kind = 0 // HTTP
	}
	_ = c.SetReadDeadline(time.Time{})
	target := p.HTTP
	switch kind {
	case connRaft:
		target = p.Raft
	case connRPC:
		target = p.RPC
	}
	if target.Deliver(context.Background(), conn) != nil {
		conn.Close()
	}
}

// Close stops accepting, closes the virtual listeners and waits.
func (p *peerPort) Close() error {
	err := p.ln.Close()
	p.Raft.Close()
	p.RPC.Close()
	p.HTTP.Close()
	p.wg.Wait()
	return err
}

// dialPeer opens a Raft or RPC connection to another agent's peer port.
func dialPeer(ctx context.Context, addr string, kind byte, clientTLS *tls.Config) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if clientTLS != nil {
		tc := tls.Client(c, clientTLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("cluster TLS with %s: %w", addr, err)
		}
		c = tc
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetWriteDeadline(dl)
	}
	if _, err := c.Write([]byte{kind}); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetWriteDeadline(time.Time{})
	return c, nil
}

// newVListener is a listener fed by the router: Deliver waits until a
// server accepts the connection or the port closes.
func newVListener(addr net.Addr) *sublisten.Listener { return sublisten.New(addr, 0, ErrPortClosed) }

// bufConn is a net.Conn whose first bytes come from a bufio.Reader that
// already peeked at them.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(b []byte) (int, error) { return c.r.Read(b) }
