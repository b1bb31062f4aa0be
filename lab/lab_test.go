//go:build linux

package lab_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/redleader-p2p/redleader/lab"
)

type labMain struct{ m *testing.M }

func (l labMain) Run() int { return lab.Main(l.m) }

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "http" {
		os.Exit(helperHTTP())
	}
	goleak.VerifyTestMain(labMain{m})
}

// helperEnv makes the test binary act as a tiny agent-like server: it serves
// its IPv4 addresses on 127.0.0.1:7380 until SIGTERM, then exits 0.
const helperEnv = "LAB_TEST_HELPER"

func helperHTTP() int {
	ln, err := net.Listen("tcp", "127.0.0.1:7380")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addrs, _ := net.InterfaceAddrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() {
				fmt.Fprintln(w, ipn.IP)
			}
		}
	})}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	go func() {
		<-sig
		_ = srv.Close()
	}()
	fmt.Println("helper listening on", ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return 1
	}
	fmt.Println("helper stopped")
	return 0
}

// serve runs an HTTP server on ln until the test ends. It answers every
// request with "<name> <client IP>" and echoes the size of a request body.
func serve(t *testing.T, name string, ln net.Listener) {
	t.Helper()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "%s %s %d", name, host, n)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
}

// get fetches url from inside h and returns the body.
func get(ctx context.Context, h *lab.Host, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := h.HTTPClient().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func shortCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func mustListen(t *testing.T, h *lab.Host, addr string) net.Listener {
	t.Helper()
	ln, err := h.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func TestTCP(t *testing.T) {
	t.Parallel()
	l := lab.New(t, lab.Options{Subnets: 2})
	h1, h2, h3 := l.AddHost(1), l.AddHost(1), l.AddHost(2)
	if got, want := h1.IP().String(), "10.77.1.10"; got != want {
		t.Errorf("h1 IP = %s, want %s", got, want)
	}
	if got, want := h3.IP().String(), "10.77.2.10"; got != want {
		t.Errorf("h3 IP = %s, want %s", got, want)
	}

	ln := mustListen(t, h2, h2.IP().String()+":0")
	serve(t, "h2", ln)
	port := ln.Addr().(*net.TCPAddr).Port
	oln := mustListen(t, l.Origin(), ":80")
	serve(t, "origin", oln)

	for _, tc := range []struct {
		name   string
		client *lab.Host
		url    string
		want   string
	}{
		{"same subnet", h1, fmt.Sprintf("http://%s:%d/", h2.IP(), port), "h2 " + h1.IP().String() + " 0"},
		{"across router", h3, fmt.Sprintf("http://%s:%d/", h2.IP(), port), "h2 " + h3.IP().String() + " 0"},
		{"to origin", h1, "http://10.78.0.2/", "origin " + h1.IP().String() + " 0"},
		{"from origin", l.Origin(), fmt.Sprintf("http://%s:%d/", h2.IP(), port), "h2 10.78.0.2 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := get(shortCtx(t, 10*time.Second), tc.client, tc.url)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}

	t.Run("loopback is per host", func(t *testing.T) {
		lo := mustListen(t, h2, "127.0.0.1:0")
		serve(t, "h2-lo", lo)
		url := "http://" + lo.Addr().String() + "/"
		got, err := get(shortCtx(t, 10*time.Second), h2, url)
		if err != nil || got != "h2-lo 127.0.0.1 0" {
			t.Errorf("h2 → own loopback: %q, %v", got, err)
		}
		localhost := strings.Replace(url, "127.0.0.1", "localhost", 1)
		if got, err := get(shortCtx(t, 10*time.Second), h2, localhost); err != nil || got != "h2-lo 127.0.0.1 0" {
			t.Errorf("h2 → localhost: %q, %v", got, err)
		}
		if _, err := get(shortCtx(t, 10*time.Second), h1, url); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("h1 → h2's loopback: err = %v, want connection refused", err)
		}
	})

	t.Run("names are not resolved", func(t *testing.T) {
		if _, err := h1.DialContext(context.Background(), "tcp", "example.invalid:80"); !errors.Is(err, lab.ErrNotLiteral) {
			t.Errorf("dial by name: err = %v, want ErrNotLiteral", err)
		}
	})
}

// The WS-Discovery groups the agents use.
var (
	group4 = &net.UDPAddr{IP: net.IPv4(239, 255, 255, 250), Port: 3702}
	group6 = &net.UDPAddr{IP: net.ParseIP("ff02::c"), Port: 3702}
)

// sendMulticast sends msg from h's eth0 to group, TTL (hop limit) 1, a few times.
func sendMulticast(t *testing.T, h *lab.Host, group *net.UDPAddr, msg string) {
	t.Helper()
	network, laddr, level, opt := "udp4", h.IP().String()+":0", unix.IPPROTO_IP, unix.IP_MULTICAST_TTL
	dst := *group
	if group.IP.To4() == nil {
		network, laddr, level, opt = "udp6", "[::]:0", unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS
		var index int
		if err := h.Do(func() error {
			ifi, err := net.InterfaceByName("eth0")
			if err == nil {
				index = ifi.Index
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		dst.Zone = strconv.Itoa(index) // numeric: names resolve in the test's namespace
	}
	pc, err := h.ListenPacket(network, laddr)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	rc, err := pc.(*net.UDPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), level, opt, 1)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	for range 3 {
		if _, err := pc.WriteTo([]byte(msg), &dst); err != nil {
			t.Fatalf("%s: send multicast to %v: %v", h.Name, &dst, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// received returns the distinct messages c receives until quiet for wait.
func received(t *testing.T, c *net.UDPConn, wait time.Duration) []string {
	t.Helper()
	var got []string
	buf := make([]byte, 1500)
	for {
		if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
			t.Fatal(err)
		}
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return got
		}
		if m := string(buf[:n]); !slices.Contains(got, m) {
			got = append(got, m)
		}
	}
}

func joinGroup(t *testing.T, h *lab.Host, group *net.UDPAddr) *net.UDPConn {
	t.Helper()
	network := "udp4"
	if group.IP.To4() == nil {
		network = "udp6"
	}
	c, err := h.ListenMulticastUDP(network, group)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestMulticast(t *testing.T) {
	t.Parallel()
	l := lab.New(t, lab.Options{Subnets: 2})
	h1, h2 := l.AddHost(1), l.AddHost(1)
	h3, h4 := l.AddHost(2), l.AddHost(2)
	for _, group := range []*net.UDPAddr{group4, group6} {
		t.Run(group.IP.String(), func(t *testing.T) {
			c2, c3 := joinGroup(t, h2, group), joinGroup(t, h3, group)
			sendMulticast(t, h1, group, "from h1")
			sendMulticast(t, h4, group, "from h4")
			if got, want := received(t, c2, time.Second), []string{"from h1"}; !slices.Equal(got, want) {
				t.Errorf("h2 (subnet 1) received %q, want %q", got, want)
			}
			if got, want := received(t, c3, 200*time.Millisecond), []string{"from h4"}; !slices.Equal(got, want) {
				t.Errorf("h3 (subnet 2) received %q, want %q", got, want)
			}
		})
	}
}

// hostState reads what the lab must never change in the test's own namespace.
func hostState(t *testing.T) string {
	t.Helper()
	fwd, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	links, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	qdiscs, err := exec.Command("tc", "qdisc", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	// Statistics and flags of links change on their own; names do not.
	var names []string
	for line := range strings.SplitSeq(string(links), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			names = append(names, f[1])
		}
	}
	return fmt.Sprintf("forward=%s links=%v\n%s", strings.TrimSpace(string(fwd)), names, qdiscs)
}

func TestWANRate(t *testing.T) {
	lab.Require(t) // hostState needs ip and tc
	// Not parallel: it checks that the test process's namespace is
	// unchanged by building a lab, which other tests' labs do not touch
	// either, but the comparison is simplest alone.
	before := hostState(t)
	l := lab.New(t, lab.Options{Subnets: 1, WANRate: "8mbit"})
	h1 := l.AddHost(1)
	if after := hostState(t); after != before {
		t.Errorf("test namespace changed by lab.New:\nbefore %s\nafter  %s", before, after)
	}
	out, err := l.Router().Command(context.Background(), "cat", "/proc/sys/net/ipv4/ip_forward").Output()
	if err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Errorf("router ip_forward = %q, %v; want 1", out, err)
	}

	const size = 2 << 20
	payload := bytes.Repeat([]byte("x"), size)
	ln := mustListen(t, l.Origin(), ":80")
	done := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		if n == 0 {
			_, _ = w.Write(payload)
		}
	})}
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})

	// 8 mbit/s is 1 MB/s: 2 MB take ~2 s, 1 MB ~1 s (each way).
	for _, tc := range []struct {
		name string
		body []byte
		min  time.Duration
	}{
		{"download 2MB", nil, 1500 * time.Millisecond},
		{"upload 1MB", payload[:size/2], 750 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			resp, err := h1.HTTPClient().Post("http://10.78.0.2/", "application/octet-stream", bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			elapsed := time.Since(start)
			t.Logf("%s: %d bytes back in %v", tc.name, n, elapsed)
			if elapsed < tc.min || elapsed > 30*time.Second {
				t.Errorf("%s took %v, want ≥ %v at 8mbit", tc.name, elapsed, tc.min)
			}
		})
	}
}

func TestMoveTo(t *testing.T) {
	t.Parallel()
	l := lab.New(t, lab.Options{Subnets: 2})
	h1, h2, h3 := l.AddHost(1), l.AddHost(1), l.AddHost(2)
	oldIP := h1.IP()
	ln := mustListen(t, h1, ":0") // all addresses: survives the move
	serve(t, "h1", ln)
	port := ln.Addr().(*net.TCPAddr).Port
	c2, c3 := joinGroup(t, h2, group4), joinGroup(t, h3, group4)

	if err := h1.MoveTo(2); err != nil {
		t.Fatal(err)
	}
	if h1.Subnet() != 2 || h1.IP().String() != "10.77.2.11" {
		t.Fatalf("after move: subnet %d ip %s, want 2 10.77.2.11", h1.Subnet(), h1.IP())
	}
	out, err := h1.Command(context.Background(), "ip", "-4", "-o", "addr", "show", "dev", "eth0").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), h1.IP().String()+"/24") || strings.Contains(string(out), oldIP.String()) {
		t.Errorf("eth0 addresses after move:\n%s", out)
	}

	url := fmt.Sprintf("http://%s:%d/", h1.IP(), port)
	if got, err := get(shortCtx(t, 10*time.Second), h3, url); err != nil || got != "h1 "+h3.IP().String()+" 0" {
		t.Errorf("h3 → moved h1: %q, %v", got, err)
	}
	if got, err := get(shortCtx(t, 10*time.Second), h2, url); err != nil || got != "h1 "+h2.IP().String()+" 0" {
		t.Errorf("h2 → moved h1 through the router: %q, %v", got, err)
	}
	oldURL := fmt.Sprintf("http://%s:%d/", oldIP, port)
	if _, err := get(shortCtx(t, time.Second), h2, oldURL); err == nil {
		t.Errorf("h2 still reaches h1 at its old address %s", oldIP)
	}

	sendMulticast(t, h1, group4, "moved h1")
	if got := received(t, c3, time.Second); !slices.Equal(got, []string{"moved h1"}) {
		t.Errorf("h3 (new subnet) received %q", got)
	}
	if got := received(t, c2, 200*time.Millisecond); len(got) != 0 {
		t.Errorf("h2 (old subnet) received %q", got)
	}

	if err := l.Origin().MoveTo(1); !errors.Is(err, lab.ErrNotMovable) {
		t.Errorf("origin.MoveTo: err = %v, want ErrNotMovable", err)
	}
	if err := h1.MoveTo(7); !errors.Is(err, lab.ErrBadSubnet) {
		t.Errorf("MoveTo(7): err = %v, want ErrBadSubnet", err)
	}
}

func TestLinkDown(t *testing.T) {
	t.Parallel()
	l := lab.New(t, lab.Options{Subnets: 1, WANRate: "off"})
	h1, h2 := l.AddHost(1), l.AddHost(1)
	for _, h := range []*lab.Host{h2, l.Origin()} {
		ln := mustListen(t, h, ":80")
		serve(t, h.Name, ln)
	}

	for _, tc := range []struct {
		name   string
		target *lab.Host
	}{
		{"lan host", h2},
		{"wan", l.Origin()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := "http://" + tc.target.IP().String() + "/"
			if _, err := get(shortCtx(t, 10*time.Second), h1, url); err != nil {
				t.Fatalf("before LinkDown: %v", err)
			}
			if err := tc.target.LinkDown(); err != nil {
				t.Fatal(err)
			}
			if _, err := get(shortCtx(t, time.Second), h1, url); err == nil {
				t.Errorf("%s still reachable after LinkDown", tc.target)
			}
			if err := tc.target.LinkUp(); err != nil {
				t.Fatal(err)
			}
			if _, err := get(shortCtx(t, 10*time.Second), h1, url); err != nil {
				t.Errorf("after LinkUp: %v", err)
			}
		})
	}
	if err := l.Router().LinkDown(); !errors.Is(err, lab.ErrNoLink) {
		t.Errorf("router.LinkDown: err = %v, want ErrNoLink", err)
	}
}

func TestProc(t *testing.T) {
	t.Parallel()
	l := lab.New(t, lab.Options{Subnets: 1, WANRate: "off"})
	h := l.AddHost(1)

	p := h.Start(t, "script", "sh", "-c", "echo hello; ip -4 -o addr show dev eth0; exit 3")
	var exit *exec.ExitError
	if err := p.Wait(10 * time.Second); !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Errorf("Wait = %v, want exit status 3", err)
	}
	if log := p.Log(); !strings.Contains(log, "hello") || !strings.Contains(log, h.IP().String()) {
		t.Errorf("log lacks hello or %s:\n%s", h.IP(), log)
	}

	for _, tc := range []struct {
		name string
		stop func(*lab.Proc) error
		want string
	}{
		{"sigterm", func(p *lab.Proc) error { return p.Signal(syscall.SIGTERM) }, "signal: terminated"},
		{"kill", (*lab.Proc).Kill, "signal: killed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := h.Start(t, tc.name, "sleep", "60")
			if p.Pid() <= 0 {
				t.Fatalf("pid %d", p.Pid())
			}
			if err := p.Wait(100 * time.Millisecond); !errors.Is(err, lab.ErrWaitTimeout) {
				t.Fatalf("Wait on a sleeping process = %v, want ErrWaitTimeout", err)
			}
			if err := tc.stop(p); err != nil {
				t.Fatal(err)
			}
			if err := p.Wait(10 * time.Second); err == nil || err.Error() != tc.want {
				t.Errorf("Wait = %v, want %s", err, tc.want)
			}
			if err := p.Kill(); err != nil {
				t.Errorf("Kill after exit: %v", err)
			}
		})
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z")
}

func TestCleanup(t *testing.T) {
	lab.Require(t)
	t.Parallel()
	var (
		names    []string
		proc     *lab.Proc
		stray    *exec.Cmd
		failures bool
	)
	t.Run("lab", func(t *testing.T) {
		l := lab.New(t, lab.Options{Subnets: 3})
		h := l.AddHost(2)
		l.AddHost(3)
		proc = h.Start(t, "sleeper", "sleep", "600")
		// A process the test forgot about: the lab kills it too.
		stray = l.Origin().Command(context.Background(), "sleep", "600")
		if err := stray.Start(); err != nil {
			t.Fatal(err)
		}
		names = l.Namespaces()
		if len(names) != 4 {
			t.Errorf("namespaces %v, want router, origin, 2 hosts", names)
		}
		for _, n := range names {
			if !strings.HasPrefix(n, l.ID()+"-") || !strings.HasPrefix(n, lab.NamePrefix) {
				t.Errorf("namespace %q lacks prefix %s-", n, l.ID())
			}
		}
		failures = t.Failed()
	})
	if failures {
		return
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Errorf("namespace %s left behind:\n%s", n, out)
		}
	}
	if alive(proc.Pid()) {
		t.Errorf("started process %d still alive", proc.Pid())
	}
	if err := stray.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("stray process: Wait = %v, want killed", err)
	}
}

func TestBinaryFromEnv(t *testing.T) {
	bin := t.TempDir() + "/redleader"
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(lab.EnvBinary, bin)
	if got := lab.Binary(t); got != bin {
		t.Errorf("Binary = %q, want %q", got, bin)
	}
}

// TestAgentLikeProcesses runs the same server on 127.0.0.1:7380 in two
// hosts and reaches each through the host's HTTP client: the way lab tests
// talk to the local API of real agents.
func TestAgentLikeProcesses(t *testing.T) {
	t.Parallel()
	l := lab.New(t, lab.Options{Subnets: 2, WANRate: "off"})
	hosts := []*lab.Host{l.AddHost(1), l.AddHost(2)}
	procs := make([]*lab.Proc, len(hosts))
	for i, h := range hosts {
		cmd := h.Command(context.Background(), os.Args[0])
		cmd.Env = append(os.Environ(), helperEnv+"=http")
		procs[i] = h.StartCmd(t, "helper", cmd)
	}
	for i, h := range hosts {
		var body string
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if body, err = get(shortCtx(t, 2*time.Second), h, "http://127.0.0.1:7380/"); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("%s: local API never answered: %v\n%s", h, err, procs[i].Log())
		}
		if want := h.IP().String() + "\n"; body != want {
			t.Errorf("%s answered %q, want %q", h, body, want)
		}
	}
	for i, p := range procs {
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := p.Wait(10 * time.Second); err != nil {
			t.Errorf("%s: exit after SIGTERM: %v\n%s", hosts[i], err, p.Log())
		}
		if !strings.Contains(p.Log(), "helper stopped") {
			t.Errorf("%s: log lacks clean stop:\n%s", hosts[i], p.Log())
		}
	}
}
