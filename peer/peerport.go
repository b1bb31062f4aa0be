package peer

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redleader-p2p/redleader/internal/ratelog"
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

	// sniffTimeout bounds everything before a connection reaches its
	// server: the first byte, the TLS handshake and the inner channel
	// byte, and the wait for the server to accept it.
	sniffTimeout = 5 * time.Second
)

// Limits of the peer port (see peer/DESIGN.md). Every open connection costs
// a file descriptor, a goroutine and a few KB from accept to close; the
// caps keep a LAN host from taking them all, whatever it sends.
const (
	// perSourceConns caps the open connections of one source that is not a
	// member (an IPv4 address, or an IPv6 /64: one host can hold a whole
	// /64). MS-PCCRR clients fetch a handful of blocks at once; a host past
	// this is flooding. Lower refuses busy BranchCache clients, higher
	// lets fewer hosts fill the port.
	perSourceConns = 16
	// memberPerSourceConns caps one member's connections. An agent needs
	// about a dozen (Raft: a pool of 3 plus pipeline and heartbeat; cluster
	// RPC: 2 idle plus bursts; MS-PCCRR: 4 per download); the cap only
	// bounds a member gone wrong.
	memberPerSourceConns = 128
	// The total cap is the process's file-descriptor limit divided by
	// fdShare, within [minTotalConns, maxTotalConns]: the other half stays
	// for the local API, the Raft stores, the cache files, gossip and the
	// agent's own outgoing connections, so the peer port alone can never
	// run the agent out of descriptors. (Go raises the soft RLIMIT_NOFILE
	// to the hard limit at start; the cap is read after that.) A bigger
	// share serves more peers at once and leaves less for the rest.
	fdShare       = 2
	minTotalConns = 32
	maxTotalConns = 4096
	// defaultTotalConns is the total where the limit cannot be read.
	defaultTotalConns = 1024
	// A memberReserveDiv-th of the total is reserved for members and Raft
	// servers: other sources together never hold more than the rest, so a
	// flood from any number of hosts leaves the cluster its capacity.
	memberReserveDiv = 4

	// clusterIdleTimeout closes a routed connection that sends nothing
	// for this long, and clusterWriteTimeout one that takes no data for
	// this long; both apply to every kind of connection, under the finer
	// timeouts of the HTTP servers. Raft's busy connections carry traffic
	// at least every heartbeat (at most 600 ms x raft_multiplier) and
	// CommitTimeout (5 s); its pooled ones, which idle for a
	// whole term, are re-dialed by the client side first (raftConn). The
	// cluster RPC client drops idle connections after 30 s.
	clusterIdleTimeout  = 2 * time.Minute
	clusterWriteTimeout = 30 * time.Second
	// raftRedialAfter: a Raft client connection quiet for this long is
	// replaced before its next write (well below clusterIdleTimeout).
	raftRedialAfter = 30 * time.Second

	// An accept error (EMFILE, ENFILE, ENOBUFS…) is retried after a
	// pause that doubles from acceptBackoffMin to acceptBackoffMax.
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second

	// Lines about refused connections: at most refusalLogBurst per reason
	// and refusalLogEvery, the next one with the count suppressed.
	refusalLogEvery = time.Minute
	refusalLogBurst = 1

	// memberRefresh is how old the member address set may get.
	memberRefresh = time.Second
)

// ErrPortClosed is returned by the virtual listeners once the port closes.
var ErrPortClosed = errors.New("peer port closed")

// portLimits are the peer port's caps and deadlines.
type portLimits struct {
	Total           int           // open connections, all sources
	Reserved        int           // of Total, only for members
	PerSource       int           // open connections of one non-member source
	MemberPerSource int           // open connections of one member
	Sniff           time.Duration // routing: see sniffTimeout
	Idle            time.Duration // after routing: see clusterIdleTimeout
	Write           time.Duration
}

// defaultPortLimits sizes the caps from the file-descriptor limit.
func defaultPortLimits() portLimits {
	total := defaultTotalConns
	if n, ok := fdLimit(); ok {
		total = int(min(max(n/fdShare, minTotalConns), maxTotalConns))
	}
	return portLimits{Total: total, Reserved: total / memberReserveDiv, PerSource: perSourceConns,
		MemberPerSource: memberPerSourceConns, Sniff: sniffTimeout, Idle: clusterIdleTimeout, Write: clusterWriteTimeout}
}

// Why a connection was refused or dropped before reaching its server: the
// label of redleader_peer_port_refused_total.
type refusal int

const (
	refusedPerSource    refusal = iota // per-source cap
	refusedTotal                       // total cap (or the non-member share of it)
	refusedSniff                       // no first byte within sniffTimeout
	refusedTLS                         // TLS handshake failed (wrong or no key)
	refusedPlainCluster                // plain Raft or RPC while a cluster key is set
	refusedChannel                     // TLS fine, but no valid channel byte
	refusedUnserved                    // no server took it within sniffTimeout
	numRefusals
)

var refusalNames = [numRefusals]string{"per_source", "total", "sniff", "tls", "plain_cluster", "channel", "unserved"}

func (r refusal) String() string { return refusalNames[r] }

// portStats is a snapshot of the port's counters.
type portStats struct {
	Open         int                 // connections accepted and not closed yet
	Refused      [numRefusals]uint64 // by reason
	AcceptErrors uint64              // failed accepts (EMFILE…)
	Limits       portLimits          // the caps in force
}

// peerPort owns the TCP listener and one goroutine per connection until
// its first byte is read.
type peerPort struct {
	ln     net.Listener
	tls    *tls.Config // server side; nil without a cluster key
	log    *slog.Logger
	rlog   *ratelog.Logger // lines caused by what remote hosts send
	limits portLimits
	// The virtual listeners the router feeds; Raft's are taken through
	// Raft.Sub(), one Raft instance after another.
	Raft *sublisten.Listener
	RPC  *sublisten.Listener
	HTTP *sublisten.Listener

	mu    sync.Mutex
	conns connCount // under mu

	// members reports the pool's member addresses (SetMembers); memberSet
	// is its last answer, refreshed in the background when older than
	// memberRefresh so that the accept loop never waits for the pool.
	members    atomic.Pointer[func() []netip.Addr]
	memberSet  atomic.Pointer[memberSnapshot]
	refreshing atomic.Bool

	refused      [numRefusals]atomic.Uint64
	acceptErrors atomic.Uint64

	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

type memberSnapshot struct {
	at    time.Time
	addrs map[netip.Addr]bool
}

func listenPeerPort(addr string, tlsConf *tls.Config, log *slog.Logger) (*peerPort, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("peer port %s: %w", addr, err)
	}
	return newPeerPort(ln, tlsConf, log, defaultPortLimits()), nil
}

// newPeerPort serves ln (which it closes on Close) with limits.
func newPeerPort(ln net.Listener, tlsConf *tls.Config, log *slog.Logger, limits portLimits) *peerPort {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &peerPort{ln: ln, tls: tlsConf, log: log, limits: limits,
		rlog: ratelog.New(log, refusalLogEvery, refusalLogBurst), done: make(chan struct{}),
		Raft: newVListener(ln.Addr()), RPC: newVListener(ln.Addr()), HTTP: newVListener(ln.Addr())}
	p.wg.Add(1)
	go func() { defer p.wg.Done(); p.acceptLoop() }()
	return p
}

// Port is the bound TCP port.
func (p *peerPort) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// SetMembers gives the port the addresses of the pool's members (Raft
// servers are members): they get the capacity reserved for them and the
// larger per-source cap. members is called off the accept loop, at most
// about once per memberRefresh, and may take locks.
func (p *peerPort) SetMembers(members func() []netip.Addr) {
	p.members.Store(&members)
	p.memberSet.Store(nil)
	p.isMember(netip.Addr{}) // load the set now
}

// Stats returns the port's counters.
func (p *peerPort) Stats() portStats {
	s := portStats{AcceptErrors: p.acceptErrors.Load(), Limits: p.limits}
	for i := range s.Refused {
		s.Refused[i] = p.refused[i].Load()
	}
	p.mu.Lock()
	s.Open = p.conns.open
	p.mu.Unlock()
	return s
}

func (p *peerPort) acceptLoop() {
	var backoff time.Duration
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors (EMFILE, ENFILE) or buffers: the
			// connection stays in the kernel's queue. Wait instead of
			// spinning; the pause doubles while it lasts.
			p.acceptErrors.Add(1)
			backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
			p.rlog.Warn("accept", "peer port: accept failed; backing off", "err", err, "pause", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-p.done:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		backoff = 0
		tc, why, ok := p.admit(c)
		if !ok {
			c.Close()
			p.refuse(why, c.RemoteAddr(), slog.LevelWarn)
			continue
		}
		p.wg.Add(1)
		go func() { defer p.wg.Done(); p.route(tc) }()
	}
}

// sourceKey is what the per-source cap counts by: the address, or its /64
// for IPv6.
func sourceKey(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.Is6() {
		return netip.PrefixFrom(ip, 64).Masked().Addr()
	}
	return ip
}

func remoteIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// admit counts c against the caps, or says which one it is over. Members
// are looked up only when the caps for others would refuse c.
func (p *peerPort) admit(c net.Conn) (net.Conn, refusal, bool) {
	ip := remoteIP(c.RemoteAddr())
	key := sourceKey(ip)
	why, ok := p.take(key, false)
	if !ok && p.isMember(ip) {
		why, ok = p.take(key, true)
	}
	if !ok {
		return nil, why, false
	}
	return &trackedConn{Conn: c, release: func() { p.release(key) }}, 0, true
}

func (p *peerPort) take(key netip.Addr, member bool) (refusal, bool) {
	total, perSource := p.limits.Total-p.limits.Reserved, p.limits.PerSource
	if member {
		total, perSource = p.limits.Total, p.limits.MemberPerSource
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch p.conns.take(key, perSource, total) {
	case overPerSource:
		return refusedPerSource, false
	case overTotal:
		return refusedTotal, false
	}
	return 0, true
}

func (p *peerPort) release(key netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns.release(key)
}

// connCount counts open connections in all and by source key (sourceKey),
// for the caps of the peer port and the gossip port. Its owner locks it.
type connCount struct {
	open     int
	bySource map[netip.Addr]int
}

// Which cap a connection is over (connCount.take).
const (
	overNone = iota
	overPerSource
	overTotal
)

// take counts a connection of key, unless that source already has
// perSource open or all sources total: it says which cap refuses it.
func (c *connCount) take(key netip.Addr, perSource, total int) int {
	switch {
	case c.bySource[key] >= perSource:
		return overPerSource
	case c.open >= total:
		return overTotal
	}
	if c.bySource == nil {
		c.bySource = map[netip.Addr]int{}
	}
	c.open++
	c.bySource[key]++
	return overNone
}

// release uncounts a connection take counted.
func (c *connCount) release(key netip.Addr) {
	c.open--
	if c.bySource[key]--; c.bySource[key] <= 0 {
		delete(c.bySource, key)
	}
}

// isMember looks ip up in the last member set, and starts a refresh of the
// set when it is old.
func (p *peerPort) isMember(ip netip.Addr) bool {
	f := p.members.Load()
	if f == nil {
		return false
	}
	snap := p.memberSet.Load()
	if (snap == nil || time.Since(snap.at) > memberRefresh) && p.refreshing.CompareAndSwap(false, true) {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.refreshing.Store(false)
			set := map[netip.Addr]bool{}
			for _, a := range (*f)() {
				set[a.Unmap()] = true
			}
			p.memberSet.Store(&memberSnapshot{at: time.Now(), addrs: set})
		}()
	}
	return snap != nil && snap.addrs[ip]
}

// refuse counts a refusal and logs it (with args), rate-limited by reason.
func (p *peerPort) refuse(why refusal, remote net.Addr, level slog.Level, args ...any) {
	p.refused[why].Add(1)
	p.rlog.Log(level, why.String(), "peer port: connection refused",
		append([]any{"reason", why.String(), "remote", remote.String()}, args...)...)
}

// route reads the first byte(s) and hands the connection to its listener.
func (p *peerPort) route(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(p.limits.Sniff))
	br := bufio.NewReaderSize(c, 512)
	first, err := br.Peek(1)
	if err != nil {
		c.Close()
		p.refused[refusedSniff].Add(1) // scanners and health checks: counted, not logged
		return
	}
	var conn net.Conn = &bufConn{Conn: c, r: br}
	kind := first[0]
	switch {
	case kind == tlsFirst && p.tls != nil:
		tc := tls.Server(conn, p.tls)
		ctx, cancel := context.WithTimeout(context.Background(), p.limits.Sniff)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			tc.Close()
			p.refuse(refusedTLS, c.RemoteAddr(), slog.LevelDebug, "err", err)
			return
		}
		var b [1]byte
		if _, err := tc.Read(b[:]); err != nil || (b[0] != connRaft && b[0] != connRPC) {
			tc.Close()
			p.refuse(refusedChannel, c.RemoteAddr(), slog.LevelDebug)
			return
		}
		kind, conn = b[0], tc
	case kind == connRaft || kind == connRPC:
		if p.tls != nil {
			c.Close()
			p.refuse(refusedPlainCluster, c.RemoteAddr(), slog.LevelDebug)
			return
		}
		_, _ = br.Discard(1)
	default:
		kind = 0 // HTTP
	}
	target := p.HTTP
	switch kind {
	case connRaft:
		target = p.Raft
	case connRPC:
		target = p.RPC
	}
	// From here on, the idle and write bounds hold under whatever
	// deadlines the server sets itself.
	conn = newDeadlineConn(conn, p.limits.Idle, p.limits.Write)
	// A channel nobody serves (Raft on an agent that is no voter) must not
	// keep the connection: give the server the sniff timeout to take it.
	ctx, cancel := context.WithTimeout(context.Background(), p.limits.Sniff)
	err = target.Deliver(ctx, conn)
	cancel()
	if err != nil {
		conn.Close()
		if errors.Is(err, context.DeadlineExceeded) {
			p.refuse(refusedUnserved, c.RemoteAddr(), slog.LevelDebug)
		}
	}
}

// Close stops accepting, closes the virtual listeners and waits. It is
// safe to call more than once.
func (p *peerPort) Close() error {
	var err error
	p.closeOnce.Do(func() {
		close(p.done)
		err = p.ln.Close()
		p.Raft.Close()
		p.RPC.Close()
		p.HTTP.Close()
	})
	p.wg.Wait()
	return err
}

// dialPeer opens a Raft or RPC connection to another agent's peer port.
// A Raft connection comes back as a raftConn (see there).
func dialPeer(ctx context.Context, addr string, kind byte, clientTLS *tls.Config) (net.Conn, error) {
	c, err := dialPeerOnce(ctx, addr, kind, clientTLS)
	if err != nil || kind != connRaft {
		return c, err
	}
	return newRaftConn(c, raftRedialAfter, func(deadline time.Time) (net.Conn, error) {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		return dialPeerOnce(ctx, addr, kind, clientTLS)
	}), nil
}

func dialPeerOnce(ctx context.Context, addr string, kind byte, clientTLS *tls.Config) (net.Conn, error) {
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

// trackedConn gives its place under the caps back when it closes (once,
// whichever layer above closes it).
type trackedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// deadlineConn bounds how long a connection may stay silent (idle: no
// byte arrives while a Read waits) and how long a Write may wait for the
// peer to take data. Deadlines its user sets still apply when they are
// earlier: an HTTP server keeps its own finer timeouts.
type deadlineConn struct {
	net.Conn

	mu          sync.Mutex
	read, write bound
}

// bound is the deadline of one direction of a deadlineConn: the earlier of
// the user's and the bound of the operation in progress.
type bound struct {
	max  time.Duration         // of one operation (0: none); set once
	set  func(time.Time) error // the conn's SetReadDeadline or SetWriteDeadline
	user time.Time             // the deadline the user set (zero: none)
	op   time.Time             // the bound of the current operation
}

func newDeadlineConn(c net.Conn, idle, write time.Duration) *deadlineConn {
	return &deadlineConn{Conn: c,
		read:  bound{max: idle, set: c.SetReadDeadline},
		write: bound{max: write, set: c.SetWriteDeadline},
	}
}

// earlier returns the earlier of two deadlines, zero meaning none.
func earlier(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// start bounds an operation of b's direction that starts now.
func (c *deadlineConn) start(b *bound) {
	if b.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b.op = time.Now().Add(b.max)
	_ = b.set(earlier(b.user, b.op))
}

// setUser applies the user's deadline t to b's direction at once (an
// operation in progress keeps its own bound if that is earlier).
func (c *deadlineConn) setUser(b *bound, t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	b.user = t
	return b.set(earlier(t, b.op))
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	c.start(&c.read)
	return c.Conn.Read(p)
}

func (c *deadlineConn) Write(p []byte) (int, error) {
	c.start(&c.write)
	return c.Conn.Write(p)
}

func (c *deadlineConn) SetDeadline(t time.Time) error {
	return errors.Join(c.SetReadDeadline(t), c.SetWriteDeadline(t))
}

func (c *deadlineConn) SetReadDeadline(t time.Time) error { return c.setUser(&c.read, t) }

func (c *deadlineConn) SetWriteDeadline(t time.Time) error { return c.setUser(&c.write, t) }

// raftConn is the dialing side of a Raft connection. Raft keeps idle
// connections to each server in a pool and takes one out after any pause
// (a vote connection can wait there for a whole term), while the serving
// side closes a connection that has been silent for clusterIdleTimeout. So
// a Write that starts after a quiet spell of redialAfter first replaces the
// connection with a new one: Raft never writes into a connection the other
// side has closed, or is about to. Raft's exchanges are a request then its
// response, and no Read is in progress, so nothing is in flight then.
type raftConn struct {
	redialAfter time.Duration
	redial      func(deadline time.Time) (net.Conn, error)

	mu      sync.Mutex
	c       net.Conn
	last    time.Time // last byte moved
	reading int       // Reads in progress
	closed  bool
	rd, wd  time.Time // deadlines set by the user
}

func newRaftConn(c net.Conn, redialAfter time.Duration, redial func(time.Time) (net.Conn, error)) *raftConn {
	return &raftConn{c: c, redialAfter: redialAfter, redial: redial, last: time.Now()}
}

func (r *raftConn) Read(b []byte) (int, error) {
	r.mu.Lock()
	c := r.c
	r.reading++
	r.mu.Unlock()
	n, err := c.Read(b)
	r.mu.Lock()
	r.reading--
	if n > 0 {
		r.last = time.Now()
	}
	r.mu.Unlock()
	return n, err
}

func (r *raftConn) Write(b []byte) (int, error) {
	r.mu.Lock()
	if !r.closed && r.reading == 0 && time.Since(r.last) >= r.redialAfter {
		deadline := r.wd
		if deadline.IsZero() {
			deadline = time.Now().Add(sniffTimeout)
		}
		nc, err := r.redial(deadline)
		if err != nil {
			r.mu.Unlock()
			return 0, fmt.Errorf("raft connection re-dial: %w", err)
		}
		r.c.Close()
		r.c = nc
		_ = nc.SetReadDeadline(r.rd)
		_ = nc.SetWriteDeadline(r.wd)
	}
	c := r.c
	r.mu.Unlock()
	n, err := c.Write(b)
	if n > 0 {
		r.mu.Lock()
		r.last = time.Now()
		r.mu.Unlock()
	}
	return n, err
}

func (r *raftConn) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return r.c.Close()
}

func (r *raftConn) current() net.Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.c
}

func (r *raftConn) LocalAddr() net.Addr  { return r.current().LocalAddr() }
func (r *raftConn) RemoteAddr() net.Addr { return r.current().RemoteAddr() }

func (r *raftConn) SetDeadline(t time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rd, r.wd = t, t
	return r.c.SetDeadline(t)
}

func (r *raftConn) SetReadDeadline(t time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rd = t
	return r.c.SetReadDeadline(t)
}

func (r *raftConn) SetWriteDeadline(t time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.wd = t
	return r.c.SetWriteDeadline(t)
}
