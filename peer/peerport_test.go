package peer

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/internal/logtest"
	"github.com/redleader-p2p/redleader/internal/wait"
)

func TestClusterTLSIsDeterministic(t *testing.T) {
	k := bytes.Repeat([]byte{3}, 32)
	s1, _, err := clusterTLS(k)
	if err != nil {
		t.Fatal(err)
	}
	s2, _, _ := clusterTLS(k)
	s3, _, _ := clusterTLS(bytes.Repeat([]byte{4}, 32))
	if !bytes.Equal(s1.Certificates[0].Certificate[0], s2.Certificates[0].Certificate[0]) {
		t.Fatal("same key gave different certificates")
	}
	if bytes.Equal(s1.Certificates[0].Certificate[0], s3.Certificates[0].Certificate[0]) {
		t.Fatal("different keys gave the same certificate")
	}
}

// serveEach runs handle on its own goroutine for every connection of l,
// until l is closed.
func serveEach(l net.Listener, handle func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go handle(c)
	}
}

// echoServe answers every connection of l by echoing one line, prefixed.
func echoServe(l net.Listener, prefix string) {
	serveEach(l, func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		c.Write(append([]byte(prefix), buf[:n]...))
	})
}

func TestPeerPortRouting(t *testing.T) {
	key := bytes.Repeat([]byte{9}, 32)
	srvTLS, cliTLS, _ := clusterTLS(key)
	_, wrongTLS, _ := clusterTLS(bytes.Repeat([]byte{8}, 32))
	tests := []struct {
		name      string
		serverTLS *tls.Config
		clientTLS *tls.Config
		wantOK    bool
	}{
		{"plain cluster, plain client", nil, nil, true},
		{"keyed cluster, keyed client", srvTLS, cliTLS, true},
		{"keyed cluster, plain client", srvTLS, nil, false},
		{"keyed cluster, wrong key", srvTLS, wrongTLS, false},
	}
	log := slog.New(slog.DiscardHandler)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := listenPeerPort("127.0.0.1:0", tt.serverTLS, log)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			go echoServe(p.Raft, "raft:")
			go echoServe(p.RPC, "rpc:")
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "http:"+r.URL.Path) })}
			go srv.Serve(p.HTTP)
			defer srv.Close()
			addr := p.ln.Addr().String()

			for kind, want := range map[byte]string{connRaft: "raft:hi", connRPC: "rpc:hi"} {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				c, err := dialPeer(ctx, addr, kind, tt.clientTLS)
				cancel()
				got := ""
				if err == nil {
					c.SetDeadline(time.Now().Add(3 * time.Second))
					c.Write([]byte("hi"))
					b, _ := io.ReadAll(c)
					got = string(b)
					c.Close()
				}
				if (got == want) != tt.wantOK {
					t.Errorf("kind %d: got %q (dial err %v), want ok=%v", kind, got, err, tt.wantOK)
				}
			}
			// Plain HTTP (PCCRR) always works, key or not.
			resp, err := http.Get("http://" + addr + "/116B50EB-ECE2-41ac-8429-9F9E963361B7/")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "http:/116B50EB-ECE2-41ac-8429-9F9E963361B7/" {
				t.Errorf("http got %q", b)
			}
		})
	}
}

// testLimits are small limits for tests: caps as given, short deadlines.
func testLimits(total, reserved, perSource, memberPerSource int) portLimits {
	return portLimits{Total: total, Reserved: reserved, PerSource: perSource, MemberPerSource: memberPerSource,
		Sniff: 5 * time.Second, Idle: time.Minute, Write: time.Minute}
}

// startPort starts a peer port on 127.0.0.1 with limits, members listed
// as members; it logs to the returned capture.
func startPort(t *testing.T, tlsConf *tls.Config, limits portLimits, members ...string) (*peerPort, *logtest.Recorder) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lc := &logtest.Recorder{}
	p := newPeerPort(ln, tlsConf, slog.New(lc), limits)
	t.Cleanup(func() { p.Close() })
	if len(members) > 0 {
		var addrs []netip.Addr
		for _, m := range members {
			addrs = append(addrs, netip.MustParseAddr(m))
		}
		p.SetMembers(func() []netip.Addr { return addrs })
		wait.For(t, time.Second, "member set loaded", func() bool { return p.memberSet.Load() != nil })
	}
	return p, lc
}

// attrLines returns the messages of the records whose attribute key has
// value val, with their suppressed counts (0: none).
func attrLines(logs *logtest.Recorder, key, val string) (msgs []string, suppressed []int64) {
	for _, r := range logs.Records() {
		match, supp := false, int64(0)
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == key && a.Value.String() == val {
				match = true
			}
			if a.Key == "suppressed" {
				supp = a.Value.Int64()
			}
			return true
		})
		if match {
			msgs, suppressed = append(msgs, r.Message), append(suppressed, supp)
		}
	}
	return msgs, suppressed
}

// dialFrom opens a TCP connection to addr from the loopback address src.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// settled waits until the port has decided on n connections (each is
// open or refused) and returns its stats.
func settled(t *testing.T, p *peerPort, n int) portStats {
	t.Helper()
	var s portStats
	wait.For(t, 2*time.Second, fmt.Sprintf("%d connections decided", n), func() bool {
		s = p.Stats()
		return uint64(s.Open)+s.Refused[refusedPerSource]+s.Refused[refusedTotal] >= uint64(n)
	})
	return s
}

func TestPeerPortCaps(t *testing.T) {
	const member, other1, other2 = "127.0.0.2", "127.0.0.3", "127.0.0.4"
	type burst struct {
		src string
		n   int
	}
	tests := []struct {
		name                string
		limits              portLimits
		bursts              []burst
		open, perSrc, total uint64
	}{
		{"per source", testLimits(100, 10, 3, 5), []burst{{other1, 5}}, 3, 2, 0},
		{"member has a larger per-source cap", testLimits(100, 10, 3, 5), []burst{{member, 7}}, 5, 2, 0},
		{"others share the total minus the reserve", testLimits(6, 2, 3, 10), []burst{{other1, 3}, {other2, 3}}, 4, 0, 2},
		{"reserve is for members", testLimits(6, 2, 10, 10), []burst{{other1, 6}, {member, 3}}, 6, 0, 3},
		{"members may use all of it", testLimits(6, 2, 10, 10), []burst{{member, 8}}, 6, 0, 2},
		{"members count against the others' share", testLimits(6, 2, 10, 10), []burst{{member, 3}, {other1, 3}}, 4, 0, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, logs := startPort(t, nil, tt.limits, member)
			addr := p.ln.Addr().String()
			var conns []net.Conn
			for _, b := range tt.bursts {
				for range b.n {
					conns = append(conns, dialFrom(t, b.src, addr))
				}
				settled(t, p, len(conns)) // in order: the next burst meets a full port
			}
			s := p.Stats()
			if uint64(s.Open) != tt.open || s.Refused[refusedPerSource] != tt.perSrc || s.Refused[refusedTotal] != tt.total {
				t.Fatalf("open %d, refused per_source %d, total %d; want %d, %d, %d",
					s.Open, s.Refused[refusedPerSource], s.Refused[refusedTotal], tt.open, tt.perSrc, tt.total)
			}
			// Refused connections are closed at once.
			closed := 0
			for _, c := range conns {
				c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
					closed++
				}
			}
			if want := len(conns) - int(tt.open); closed != want {
				t.Errorf("%d connections closed by the port, want %d", closed, want)
			}
			// One log line per reason however many were refused.
			for reason, n := range map[string]uint64{"per_source": tt.perSrc, "total": tt.total} {
				msgs, _ := attrLines(logs, "reason", reason)
				if want := min(int(n), 1); len(msgs) != want {
					t.Errorf("%d log lines for %s (%d refused), want %d", len(msgs), reason, n, want)
				}
			}
			// Closing frees the places.
			for _, c := range conns {
				c.Close()
			}
			wait.For(t, 2*time.Second, "all places free", func() bool { return p.Stats().Open == 0 })
			c := dialFrom(t, other1, addr)
			defer c.Close()
			wait.For(t, 2*time.Second, "a new connection admitted", func() bool { return p.Stats().Open == 1 })
		})
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestSourceKey(t *testing.T) {
	tests := []struct{ in, want string }{
		{"10.0.0.7", "10.0.0.7"},
		{"::ffff:10.0.0.7", "10.0.0.7"},
		{"2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::"},
		{"2001:db8:1:2::1", "2001:db8:1:2::"},
		{"fe80::1", "fe80::"},
	}
	for _, tt := range tests {
		if got := sourceKey(netip.MustParseAddr(tt.in)); got != netip.MustParseAddr(tt.want) {
			t.Errorf("sourceKey(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// serveSink reads and discards everything on each connection of l until it
// closes, and reports on closed when it does.
func serveSink(l net.Listener, closed chan<- time.Time) {
	serveEach(l, func(c net.Conn) {
		io.Copy(io.Discard, c)
		c.Close()
		closed <- time.Now()
	})
}

func TestPeerPortIdleDeadline(t *testing.T) {
	const idle = 300 * time.Millisecond
	key := bytes.Repeat([]byte{9}, 32)
	srvTLS, cliTLS, _ := clusterTLS(key)
	tests := []struct {
		name       string
		serverTLS  *tls.Config
		clientTLS  *tls.Config
		kind       byte
		send       []byte        // sent once after the channel byte
		tick       time.Duration // then one byte every tick (0: silent)
		wantClosed bool
	}{
		{"silent raft", nil, nil, connRaft, nil, 0, true},
		{"raft stuck in a message", nil, nil, connRaft, []byte{0x00, 0x85, 0xa1}, 0, true},
		{"silent rpc over TLS", srvTLS, cliTLS, connRPC, nil, 0, true},
		{"rpc with an unfinished body", nil, nil, connRPC, []byte("POST /rpc/apply HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"), 0, true},
		{"raft that keeps talking", nil, nil, connRaft, nil, idle / 3, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limits := testLimits(100, 10, 10, 10)
			limits.Idle = idle
			p, _ := startPort(t, tt.serverTLS, limits)
			closed := make(chan time.Time, 4)
			go serveSink(p.Raft, closed)
			go serveSink(p.RPC, closed)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			c, err := dialPeerOnce(ctx, p.ln.Addr().String(), tt.kind, tt.clientTLS)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			if len(tt.send) > 0 {
				if _, err := c.Write(tt.send); err != nil {
					t.Fatal(err)
				}
			}
			stop := make(chan struct{})
			defer close(stop)
			if tt.tick > 0 {
				go func() {
					tk := time.NewTicker(tt.tick)
					defer tk.Stop()
					for {
						select {
						case <-stop:
							return
						case <-tk.C:
							if _, err := c.Write([]byte{0}); err != nil {
								return
							}
						}
					}
				}()
			}
			select {
			case at := <-closed:
				took := at.Sub(start)
				if !tt.wantClosed {
					t.Fatalf("closed after %v, want open", took)
				}
				if took < idle-50*time.Millisecond || took > idle+time.Second {
					t.Errorf("closed after %v, want about %v", took, idle)
				}
			case <-time.After(4 * idle):
				if tt.wantClosed {
					t.Fatalf("still open after %v", 4*idle)
				}
			}
			if tt.wantClosed {
				wait.For(t, time.Second, "place given back", func() bool { return p.Stats().Open == 0 })
			}
		})
	}
}

// TestDeadlineConn: a Read or Write ends at the earlier of its own bound
// (idle or write) and the deadline the user set, before or while it waits.
func TestDeadlineConn(t *testing.T) {
	const short, long = 150 * time.Millisecond, 3 * time.Second
	tests := []struct {
		name    string
		write   bool
		max     time.Duration // the conn's idle or write bound (0: none)
		user    time.Duration // the user's deadline from the start (0: none)
		during  bool          // the user sets it while the operation waits
		wantMin time.Duration
		wantMax time.Duration
	}{
		{"read: idle bound", false, short, 0, false, short, long / 2},
		{"read: earlier user deadline", false, long, short, false, short, long / 2},
		{"read: later user deadline", false, short, long, false, short, long / 2},
		{"read: user deadline only", false, 0, short, false, short, long / 2},
		{"read: later user deadline while waiting", false, short, long, true, short, long / 2},
		{"read: earlier user deadline while waiting", false, long, short, true, short, long / 2},
		{"write: write bound", true, short, 0, false, short, long / 2},
		{"write: earlier user deadline", true, long, short, false, short, long / 2},
		{"write: later user deadline while waiting", true, short, long, true, short, long / 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, b := net.Pipe() // nobody reads or writes b: a's operation waits
			defer a.Close()
			defer b.Close()
			idle, write := tt.max, time.Duration(0)
			if tt.write {
				idle, write = 0, tt.max
			}
			c := newDeadlineConn(a, idle, write)
			set := c.SetReadDeadline
			if tt.write {
				set = c.SetWriteDeadline
			}
			start := time.Now()
			if tt.user > 0 && !tt.during {
				set(start.Add(tt.user))
			}
			if tt.during {
				timer := time.AfterFunc(20*time.Millisecond, func() { set(start.Add(tt.user)) })
				defer timer.Stop()
			}
			var err error
			if tt.write {
				_, err = c.Write([]byte("x"))
			} else {
				_, err = c.Read(make([]byte, 1))
			}
			took := time.Since(start)
			if !isTimeout(err) {
				t.Fatalf("ended with %v after %v, want a timeout", err, took)
			}
			if took < tt.wantMin || took > tt.wantMax {
				t.Errorf("timed out after %v, want between %v and %v", took, tt.wantMin, tt.wantMax)
			}
		})
	}
}

func TestPeerPortWriteDeadline(t *testing.T) {
	limits := testLimits(100, 10, 10, 10)
	limits.Write = 300 * time.Millisecond
	p, _ := startPort(t, nil, limits)
	errc := make(chan error, 1)
	go func() {
		c, err := p.Raft.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		buf := make([]byte, 1<<20)
		for {
			if _, err := c.Write(buf); err != nil { // the client never reads
				errc <- err
				return
			}
		}
	}()
	c, err := dialPeerOnce(context.Background(), p.ln.Addr().String(), connRaft, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case err := <-errc:
		if !isTimeout(err) {
			t.Fatalf("write ended with %v, want a timeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a write to a peer that does not read is still blocked after 5 s")
	}
}

func TestPeerPortUnservedAndSilent(t *testing.T) {
	limits := testLimits(100, 10, 10, 10)
	limits.Sniff = 200 * time.Millisecond
	p, logs := startPort(t, nil, limits)
	addr := p.ln.Addr().String()
	silent := dialFrom(t, "127.0.0.1", addr)                             // never sends its first byte
	raft, err := dialPeerOnce(context.Background(), addr, connRaft, nil) // nobody serves Raft
	if err != nil {
		t.Fatal(err)
	}
	defer raft.Close()
	for name, c := range map[string]net.Conn{"silent": silent, "unserved raft": raft} {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); isTimeout(err) {
			t.Errorf("%s connection still open after 2 s", name)
		}
	}
	// The counters may move just after the connections close: wait for
	// them too (a slow CI machine saw the sniff refusal not counted yet).
	wait.For(t, 2*time.Second, "places given back and refusals counted", func() bool {
		s := p.Stats()
		return s.Open == 0 && s.Refused[refusedSniff] >= 1 && s.Refused[refusedUnserved] >= 1
	})
	s := p.Stats()
	if s.Refused[refusedSniff] != 1 || s.Refused[refusedUnserved] != 1 {
		t.Errorf("refused %v, want sniff 1 and unserved 1", s.Refused)
	}
	if msgs, _ := attrLines(logs, "reason", "sniff"); len(msgs) != 0 {
		t.Errorf("a silent connection was logged: %v", msgs)
	}
}

// flakyListener fails every Accept with EMFILE while failing is set, and
// counts the calls.
type flakyListener struct {
	net.Listener
	failing atomic.Bool
	calls   atomic.Int64
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.calls.Add(1)
	if l.failing.Load() {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

func TestPeerPortAcceptBacksOffOnEMFILE(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: inner}
	fl.failing.Store(true)
	lc := &logtest.Recorder{}
	p := newPeerPort(fl, nil, slog.New(lc), testLimits(100, 10, 10, 10))
	defer p.Close()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	go srv.Serve(p.HTTP)
	defer srv.Close()

	time.Sleep(400 * time.Millisecond)
	// Pauses of 5, 10, 20, 40, 80, 160 ms…: a handful of calls, not a spin.
	if n := fl.calls.Load(); n < 3 || n > 12 {
		t.Errorf("%d accept calls in 400 ms of EMFILE, want a few", n)
	}
	if nlog := len(lc.Records()); nlog != 1 {
		t.Errorf("%d log lines about failed accepts, want 1 (rate-limited)", nlog)
	}
	// Descriptors are back: the port serves again (after at most one more pause).
	fl.failing.Store(false)
	hc := &http.Client{Timeout: 3 * time.Second}
	resp, err := hc.Get("http://" + inner.Addr().String() + "/")
	if err != nil {
		t.Fatalf("no answer after EMFILE cleared: %v", err)
	}
	resp.Body.Close()
	if p.Stats().AcceptErrors < 3 {
		t.Errorf("accept errors counted: %d", p.Stats().AcceptErrors)
	}
	// Close does not wait out a pause.
	fl.failing.Store(true)
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	p.Close()
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("Close took %v while backing off", took)
	}
}

// echoAll echoes every byte on every connection of l, and counts them.
func echoAll(l net.Listener, accepted *atomic.Int64) {
	serveEach(l, func(c net.Conn) {
		accepted.Add(1)
		io.Copy(c, c)
		c.Close()
	})
}

func TestRaftConnRedialsAfterAQuietSpell(t *testing.T) {
	const serverIdle = 300 * time.Millisecond
	key := bytes.Repeat([]byte{5}, 32)
	srvTLS, cliTLS, _ := clusterTLS(key)
	tests := []struct {
		name        string
		serverTLS   *tls.Config
		clientTLS   *tls.Config
		redialAfter time.Duration
		wantDials   int64 // connections the server saw
		wantOK      bool  // the exchange after the quiet spell works
	}{
		{"plain", nil, nil, serverIdle / 2, 2, true},
		{"TLS", srvTLS, cliTLS, serverIdle / 2, 2, true},
		{"without re-dial the server closed it", nil, nil, time.Hour, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limits := testLimits(100, 10, 10, 10)
			limits.Idle = serverIdle
			p, _ := startPort(t, tt.serverTLS, limits)
			var accepted atomic.Int64
			go echoAll(p.Raft, &accepted)
			addr := p.ln.Addr().String()
			first, err := dialPeerOnce(context.Background(), addr, connRaft, tt.clientTLS)
			if err != nil {
				t.Fatal(err)
			}
			rc := newRaftConn(first, tt.redialAfter, func(dl time.Time) (net.Conn, error) {
				ctx, cancel := context.WithDeadline(context.Background(), dl)
				defer cancel()
				return dialPeerOnce(ctx, addr, connRaft, tt.clientTLS)
			})
			defer rc.Close()
			exchange := func(msg string) error {
				rc.SetDeadline(time.Now().Add(2 * time.Second))
				if _, err := rc.Write([]byte(msg)); err != nil {
					return err
				}
				buf := make([]byte, len(msg))
				if _, err := io.ReadFull(rc, buf); err != nil {
					return err
				}
				if string(buf) != msg {
					return fmt.Errorf("echo %q, want %q", buf, msg)
				}
				return nil
			}
			if err := exchange("one"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(serverIdle / 4)
			if err := exchange("two"); err != nil { // busy: same connection
				t.Fatal(err)
			}
			time.Sleep(2 * serverIdle) // the server closes its side
			err = exchange("three")
			if (err == nil) != tt.wantOK {
				t.Fatalf("exchange after the quiet spell: %v, want ok=%v", err, tt.wantOK)
			}
			if n := accepted.Load(); n != tt.wantDials {
				t.Errorf("server accepted %d connections, want %d", n, tt.wantDials)
			}
		})
	}
}

func TestDefaultPortLimitsFollowTheFDLimit(t *testing.T) {
	n, ok := fdLimit()
	l := defaultPortLimits()
	if !ok {
		t.Skip("no file-descriptor limit on this platform")
	}
	want := int(min(max(n/fdShare, minTotalConns), maxTotalConns))
	if l.Total != want || l.Reserved != want/memberReserveDiv || l.Total > int(n) {
		t.Errorf("limit %d: total %d, reserved %d; want %d, %d", n, l.Total, l.Reserved, want, want/memberReserveDiv)
	}
	t.Logf("RLIMIT_NOFILE %d: peer port total %d, reserved %d", n, l.Total, l.Reserved)
}
