//go:build linux

package lab

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Host is one namespace of a lab: a subnet host, the origin or the router.
type Host struct {
	// Name is the short name: "h1", "h2", … for subnet hosts, "origin", "router".
	Name string
	// NS is the network namespace name, usable with `ip netns exec`.
	NS string

	lab  *Lab
	peer string // router-side veth name ("" for the router itself)

	mu     sync.Mutex
	ip     netip.Addr
	subnet int // 0 for origin and router
}

// IP returns the host's current address (it changes on MoveTo).
func (h *Host) IP() netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ip
}

// Subnet returns the host's current subnet number, 0 for origin and router.
func (h *Host) Subnet() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.subnet
}

// String returns "h1(10.77.1.10)".
func (h *Host) String() string { return h.Name + "(" + h.IP().String() + ")" }

// Command returns a command that runs inside the host's namespace (through
// `ip netns exec`, which execs args in place, so Process.Pid is the
// program's own pid).
func (h *Host) Command(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS}, args...)...)
}

// Do runs fn on an OS thread that has entered the host's network namespace,
// so sockets fn creates live in that namespace. fn must create its sockets
// itself, synchronously: goroutines it starts run elsewhere, and name
// resolution would leave the namespace. The calling thread is untouched.
// (Interface lookups inside fn also refresh the net package's process-wide
// interface-name cache; use numeric IPv6 zones in the test process.)
func (h *Host) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// If restoring the original namespace fails, the goroutine exits
		// still locked and the Go runtime discards the thread.
		orig, err := os.Open("/proc/self/task/" + strconv.Itoa(unix.Gettid()) + "/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own namespace: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open(netnsDir + "/" + h.NS)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open namespace %s: %w", h.NS, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: %w", h.NS, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("leave namespace %s: %w", h.NS, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// literalAddr checks that address ("host:port") names an IP literal, maps
// "localhost" to the loopback address and leaves other networks alone.
func literalAddr(network, address string) (string, error) {
	if !strings.HasPrefix(network, "tcp") && !strings.HasPrefix(network, "udp") && !strings.HasPrefix(network, "ip") {
		return address, nil
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return "", fmt.Errorf("address %q: %w", address, err)
	}
	switch {
	case host == "":
		return address, nil
	case host == "localhost" && strings.HasSuffix(network, "6"):
		return net.JoinHostPort("::1", port), nil
	case host == "localhost":
		return net.JoinHostPort("127.0.0.1", port), nil
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return "", fmt.Errorf("%w: %q", ErrNotLiteral, address)
	}
	return address, nil
}

// DialContext dials from inside the host's namespace. The address must be
// an IP literal (or localhost): nothing is resolved.
func (h *Host) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	addr, err := literalAddr(network, address)
	if err != nil {
		return nil, err
	}
	var conn net.Conn
	err = h.Do(func() error {
		// FallbackDelay < 0: no parallel dial goroutines, the socket is
		// created on this thread.
		d := net.Dialer{FallbackDelay: -1}
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: dial %s: %w", h.Name, address, err)
	}
	return conn, nil
}

// Listen opens a stream listener inside the host's namespace ("tcp",
// "10.77.1.10:0", ":0", "127.0.0.1:7380" …). The caller closes it.
func (h *Host) Listen(network, address string) (net.Listener, error) {
	addr, err := literalAddr(network, address)
	if err != nil {
		return nil, err
	}
	var ln net.Listener
	err = h.Do(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: listen %s: %w", h.Name, address, err)
	}
	return ln, nil
}

// ListenPacket opens a packet socket inside the host's namespace. The
// caller closes it.
func (h *Host) ListenPacket(network, address string) (net.PacketConn, error) {
	addr, err := literalAddr(network, address)
	if err != nil {
		return nil, err
	}
	var pc net.PacketConn
	err = h.Do(func() error {
		var err error
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: listen packet %s: %w", h.Name, address, err)
	}
	return pc, nil
}

// ListenMulticastUDP joins group on the host's eth0 and returns the socket
// (see net.ListenMulticastUDP). The caller closes it.
func (h *Host) ListenMulticastUDP(network string, group *net.UDPAddr) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		c, err = net.ListenMulticastUDP(network, ifi, group)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: join %s: %w", h.Name, group, err)
	}
	return c, nil
}

// HTTPClient returns a client whose connections are dialed from inside the
// host's namespace, so http://127.0.0.1:7380/ reaches an agent running in
// that host. Keep-alives are off (no idle connections outlive a request),
// proxies from the environment are ignored, and the dial of a failed or
// cancelled request is abandoned with it.
func (h *Host) HTTPClient() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: abandonDials{&http.Transport{
			Proxy:             nil,
			DialContext:       h.DialContext,
			DisableKeepAlives: true,
		}},
	}
}

// abandonDials stops the dials of failed requests: http.Transport lets a
// dial outlive a cancelled request (to reuse the connection later) until
// CloseIdleConnections, which would leave a goroutine stuck on an
// unreachable lab host.
type abandonDials struct{ t *http.Transport }

func (a abandonDials) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := a.t.RoundTrip(req)
	if err != nil {
		a.t.CloseIdleConnections()
	}
	return resp, err
}

// CloseIdleConnections closes idle connections and abandoned dials.
func (a abandonDials) CloseIdleConnections() { a.t.CloseIdleConnections() }

// MoveTo makes a subnet host roam to another subnet without restarting
// anything in it: its veth is moved to the new subnet's bridge, eth0 gets
// the next free address of the new subnet (the old one is removed) and the
// default route points at the new gateway.
func (h *Host) MoveTo(subnet int) error {
	if h.peer == "" || h == h.lab.origin {
		return fmt.Errorf("%w: %s", ErrNotMovable, h.Name)
	}
	newIP, err := h.lab.allocAddr(subnet)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.lab.router.NS
	steps := [][]string{
		{"-n", r, "link", "set", h.peer, "nomaster"},
		{"-n", r, "link", "set", h.peer, "master", bridgeName(subnet)},
		{"-n", h.NS, "addr", "del", h.ip.String() + "/24", "dev", "eth0"},
		{"-n", h.NS, "addr", "add", newIP.String() + "/24", "dev", "eth0"},
		{"-n", h.NS, "route", "replace", "default", "via", Gateway(subnet).String()},
		{"-n", h.NS, "neigh", "flush", "dev", "eth0"},
	}
	for _, s := range steps {
		if err := run("ip", s...); err != nil {
			return fmt.Errorf("%s: move to subnet %d: %w", h.Name, subnet, err)
		}
	}
	h.ip, h.subnet = newIP, subnet
	return nil
}

// LinkDown partitions the host: its router-side veth goes down (for the
// origin, the router's WAN side), so eth0 loses carrier.
func (h *Host) LinkDown() error { return h.setLink("down") }

// LinkUp undoes LinkDown.
func (h *Host) LinkUp() error { return h.setLink("up") }

func (h *Host) setLink(state string) error {
	if h.peer == "" {
		return fmt.Errorf("%w: %s", ErrNoLink, h.Name)
	}
	if err := run("ip", "-n", h.lab.router.NS, "link", "set", h.peer, state); err != nil {
		return fmt.Errorf("%s: link %s: %w", h.Name, state, err)
	}
	return nil
}
