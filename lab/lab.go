//go:build linux

// Package lab builds throw-away Linux network labs for end-to-end tests:
// network namespaces joined by veth pairs, one Linux bridge per subnet in a
// router namespace, and an origin namespace behind a rate-limited WAN link
// (tc tbf). Tests run real processes in the lab hosts, and the test process
// itself can dial and listen from inside any lab namespace.
//
// Everything the lab creates lives in namespaces it made itself: interfaces,
// addresses, routes and qdiscs are never created or changed in the namespace
// of the test process. All of it is torn down by t.Cleanup, even when the test
// fails; CleanStale removes what crashed runs left behind.
//
// The lab needs root and the ip and tc commands (iproute2); Require skips a
// test otherwise.
package lab

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Sentinel errors.
var (
	// ErrWaitTimeout is returned by Proc.Wait when the process is still running
	// at the end of the timeout.
	ErrWaitTimeout = errors.New("lab: process still running after timeout")
	// ErrNotLiteral is returned when a host dials or listens on an address
	// that is neither an IP literal nor "localhost": name resolution would
	// run outside the host's namespace.
	ErrNotLiteral = errors.New("lab: address must be an IP literal or localhost")
	// ErrBadSubnet is returned for a subnet number the lab does not have.
	ErrBadSubnet = errors.New("lab: no such subnet")
	// ErrNotMovable is returned when the origin or router is asked to roam.
	ErrNotMovable = errors.New("lab: only subnet hosts can move")
	// ErrNoLink is returned by LinkDown/LinkUp on the router, which has no
	// link of its own to cut.
	ErrNoLink = errors.New("lab: host has no link to the router")
	// ErrOptions is returned for invalid Options.
	ErrOptions = errors.New("lab: invalid options")
)

const (
	// NamePrefix starts the name of every namespace a lab creates.
	NamePrefix = "rllab"
	// netnsDir is where ip(8) keeps named network namespaces.
	netnsDir = "/var/run/netns"
	// lockDir holds one lock file per live lab (see CleanStale).
	lockDir = "/run/rllab-locks"
	// maxSubnets bounds Options.Subnets (10.77.S.0/24, S ≥ 1).
	maxSubnets = 200
	// firstHostOctet is the last octet of the first host on a subnet.
	firstHostOctet = 10
)

// Options shapes a lab. The zero value is a valid lab of two subnets with
// an 8 mbit/s WAN link.
type Options struct {
	// Subnets is the number of LAN subnets (bridges), 10.77.S.0/24 for S in
	// 1..Subnets. Default 2.
	Subnets int
	// WANRate is the tbf rate applied in both directions of the WAN link
	// between router and origin, in tc syntax ("8mbit", "512kbit").
	// Default "8mbit"; "off" leaves the link unshaped.
	WANRate string
	// WANBurst is the tbf bucket size in tc syntax. Default "32kb".
	WANBurst string
	// WANLatency is the longest a packet may wait in the tbf queue
	// (tc syntax). Default "200ms".
	WANLatency string
}

func (o Options) withDefaults() (Options, error) {
	if o.Subnets == 0 {
		o.Subnets = 2
	}
	if o.Subnets < 1 || o.Subnets > maxSubnets {
		return o, fmt.Errorf("%w: subnets %d not in 1..%d", ErrOptions, o.Subnets, maxSubnets)
	}
	if o.WANRate == "" {
		o.WANRate = "8mbit"
	}
	if o.WANBurst == "" {
		o.WANBurst = "32kb"
	}
	if o.WANLatency == "" {
		o.WANLatency = "200ms"
	}
	for key, v := range map[string]string{"wan rate": o.WANRate, "wan burst": o.WANBurst, "wan latency": o.WANLatency} {
		if strings.ContainsAny(v, " \t\n") {
			return o, fmt.Errorf("%w: %s %q", ErrOptions, key, v)
		}
	}
	return o, nil
}

// Lab is one network lab. Create it with New; it is torn down by the
// cleanup of the test that created it.
type Lab struct {
	tb     testing.TB
	id     string // unique prefix of every namespace name, e.g. "rllab3fa9c1"
	opts   Options
	dir    string // scratch directory for process logs
	lock   *os.File
	router *Host
	origin *Host

	mu         sync.Mutex
	hosts      []*Host
	nextOctet  map[int]int // next free host octet per subnet
	namespaces []string    // in creation order
}

// Require skips the test unless it runs as root with ip and tc available.
func Require(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("lab: network lab tests need root (run `go test ./lab/` as root, or `make lab-test`)")
	}
	for _, cmd := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(cmd); err != nil {
			tb.Skipf("lab: %s not found (install iproute2): %v", cmd, err)
		}
	}
}

// New builds a lab: a router namespace with one bridge per subnet
// (10.77.S.1/24 on brS, multicast snooping off, IP forwarding on) and an
// origin namespace (10.78.0.2/24 on eth0) behind a WAN veth pair shaped with
// tc tbf on both ends. It calls Require first, and fails the test if the lab
// cannot be built. Everything is removed by tb.Cleanup.
func New(tb testing.TB, opts Options) *Lab {
	tb.Helper()
	Require(tb)
	opts, err := opts.withDefaults()
	if err != nil {
		tb.Fatal(err)
	}
	lock, id, err := acquireLabLock()
	if err != nil {
		tb.Fatalf("lab: %v", err)
	}
	l := &Lab{
		tb:        tb,
		id:        id,
		opts:      opts,
		dir:       tb.TempDir(),
		lock:      lock,
		nextOctet: map[int]int{},
	}
	tb.Cleanup(l.cleanup)
	if err := l.build(); err != nil {
		tb.Fatalf("lab: build %s: %v", l.id, err)
	}
	return l
}

// ID returns the lab's unique prefix; every namespace name starts with it.
func (l *Lab) ID() string { return l.id }

// Router returns the router namespace (bridges brS, WAN side wan0).
func (l *Lab) Router() *Host { return l.router }

// Origin returns the origin namespace, 10.78.0.2 behind the WAN link.
func (l *Lab) Origin() *Host { return l.origin }

// Subnets returns the number of subnets.
func (l *Lab) Subnets() int { return l.opts.Subnets }

// Hosts returns the subnet hosts in the order they were added.
func (l *Lab) Hosts() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Host(nil), l.hosts...)
}

// Namespaces returns the names of all namespaces of the lab.
func (l *Lab) Namespaces() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.namespaces...)
}

// SubnetPrefix returns 10.77.S.0/24.
func SubnetPrefix(subnet int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 77, byte(subnet), 0}), 24)
}

// Gateway returns the router's address on a subnet, 10.77.S.1.
func Gateway(subnet int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 77, byte(subnet), 1})
}

var (
	wanRouterAddr = netip.MustParseAddr("10.78.0.1")
	wanOriginAddr = netip.MustParseAddr("10.78.0.2")
)

func (l *Lab) build() error {
	l.router = &Host{Name: "router", NS: l.id + "-r", lab: l, ip: wanRouterAddr}
	l.origin = &Host{Name: "origin", NS: l.id + "-o", lab: l, peer: "wan0", ip: wanOriginAddr}
	r, o := l.router.NS, l.origin.NS
	if err := l.addNS(r); err != nil {
		return err
	}
	if err := l.addNS(o); err != nil {
		return err
	}
	for s := 1; s <= l.opts.Subnets; s++ {
		br := bridgeName(s)
		if err := run("ip", "-n", r, "link", "add", br, "type", "bridge", "mcast_snooping", "0"); err != nil {
			return err
		}
		if err := run("ip", "-n", r, "addr", "add", Gateway(s).String()+"/24", "dev", br); err != nil {
			return err
		}
		if err := run("ip", "-n", r, "link", "set", br, "up"); err != nil {
			return err
		}
	}
	steps := [][]string{
		{"ip", "-n", r, "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns", o},
		{"ip", "-n", r, "addr", "add", wanRouterAddr.String() + "/24", "dev", "wan0"},
		{"ip", "-n", r, "link", "set", "wan0", "up"},
		{"ip", "-n", o, "addr", "add", wanOriginAddr.String() + "/24", "dev", "eth0"},
		{"ip", "-n", o, "link", "set", "eth0", "up"},
		{"ip", "-n", o, "route", "add", "default", "via", wanRouterAddr.String()},
		// A fresh namespace has forwarding off; this writes the router
		// namespace's own sysctl (ip netns exec gives sh that namespace).
		{"ip", "netns", "exec", r, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"},
	}
	if l.opts.WANRate != "off" {
		tbf := []string{"root", "tbf", "rate", l.opts.WANRate, "burst", l.opts.WANBurst, "latency", l.opts.WANLatency}
		steps = append(steps,
			append([]string{"tc", "-n", r, "qdisc", "add", "dev", "wan0"}, tbf...),
			append([]string{"tc", "-n", o, "qdisc", "add", "dev", "eth0"}, tbf...),
		)
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// AddHost adds a host namespace on a subnet: eth0 is a veth whose other end
// is a port of the subnet's bridge, with the next free address 10.77.S.(10+i)/24
// and a default route via 10.77.S.1. It fails the test on error.
func (l *Lab) AddHost(subnet int) *Host {
	l.tb.Helper()
	h, err := l.addHost(subnet)
	if err != nil {
		l.tb.Fatalf("lab: add host on subnet %d: %v", subnet, err)
	}
	return h
}

func (l *Lab) addHost(subnet int) (*Host, error) {
	ip, err := l.allocAddr(subnet)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	n := len(l.hosts) + 1
	h := &Host{
		Name:   "h" + strconv.Itoa(n),
		NS:     l.id + "-h" + strconv.Itoa(n),
		lab:    l,
		peer:   "h" + strconv.Itoa(n),
		ip:     ip,
		subnet: subnet,
	}
	l.hosts = append(l.hosts, h)
	l.mu.Unlock()

	if err := l.addNS(h.NS); err != nil {
		return nil, err
	}
	r := l.router.NS
	steps := [][]string{
		{"-n", r, "link", "add", h.peer, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
		{"-n", r, "link", "set", h.peer, "master", bridgeName(subnet)},
		{"-n", r, "link", "set", h.peer, "up"},
		{"-n", h.NS, "addr", "add", ip.String() + "/24", "dev", "eth0"},
		{"-n", h.NS, "link", "set", "eth0", "up"},
		{"-n", h.NS, "route", "add", "default", "via", Gateway(subnet).String()},
	}
	for _, s := range steps {
		if err := run("ip", s...); err != nil {
			return nil, err
		}
	}
	return h, nil
}

func (l *Lab) allocAddr(subnet int) (netip.Addr, error) {
	if subnet < 1 || subnet > l.opts.Subnets {
		return netip.Addr{}, fmt.Errorf("%w: %d (lab has 1..%d)", ErrBadSubnet, subnet, l.opts.Subnets)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	octet := firstHostOctet + l.nextOctet[subnet]
	if octet > 254 {
		return netip.Addr{}, fmt.Errorf("%w: subnet %d is full", ErrBadSubnet, subnet)
	}
	l.nextOctet[subnet]++
	return netip.AddrFrom4([4]byte{10, 77, byte(subnet), byte(octet)}), nil
}

// addNS creates a namespace, records it for cleanup and brings lo up.
func (l *Lab) addNS(name string) error {
	if err := run("ip", "netns", "add", name); err != nil {
		return err
	}
	l.mu.Lock()
	l.namespaces = append(l.namespaces, name)
	l.mu.Unlock()
	if err := run("ip", "-n", name, "link", "set", "lo", "up"); err != nil {
		return err
	}
	// No IPv6 duplicate address detection: link-local addresses (for
	// ff02::c discovery) are usable as soon as a link is up. The sysctl
	// written is the new namespace's own.
	return run("ip", "netns", "exec", name, "sh", "-c",
		"if [ -d /proc/sys/net/ipv6 ]; then echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad; fi")
}

// cleanup kills every process left in the lab's namespaces and deletes them.
// Processes started with Host.Start have already been stopped by their own
// cleanups, which run first.
func (l *Lab) cleanup() {
	if l.tb.Failed() {
		l.tb.Logf("lab %s state at failure:\n%s", l.id, l.describe())
	}
	names := l.Namespaces()
	for i := len(names) - 1; i >= 0; i-- {
		if err := deleteNS(names[i]); err != nil {
			l.tb.Errorf("lab: cleanup: %v", err)
		}
	}
	releaseLabLock(l.lock)
}

// describe lists addresses and links of every namespace, for failure logs.
func (l *Lab) describe() string {
	var b strings.Builder
	for _, ns := range l.Namespaces() {
		out, _ := exec.Command("ip", "-n", ns, "-br", "addr").CombinedOutput()
		fmt.Fprintf(&b, "[%s]\n%s", ns, out)
	}
	return b.String()
}

// deleteNS kills all processes in a namespace, then deletes it.
func deleteNS(name string) error {
	if _, err := os.Stat(netnsDir + "/" + name); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	killNSProcs(name)
	if err := run("ip", "netns", "del", name); err != nil {
		if _, serr := os.Stat(netnsDir + "/" + name); errors.Is(serr, os.ErrNotExist) {
			return nil // removed concurrently
		}
		return err
	}
	return nil
}

// killNSProcs SIGKILLs every process in the namespace and waits briefly for
// them to go, so that no orphan keeps the namespace alive.
func killNSProcs(name string) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := exec.Command("ip", "netns", "pids", name).Output()
		if err != nil {
			return
		}
		pids := strings.Fields(string(out))
		if len(pids) == 0 || time.Now().After(deadline) {
			return
		}
		for _, p := range pids {
			if pid, err := strconv.Atoi(p); err == nil && pid > 1 && pid != os.Getpid() {
				_ = killPid(pid)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func bridgeName(subnet int) string { return "br" + strconv.Itoa(subnet) }

// run runs a command (ip or tc) and wraps its output into the error.
func run(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// randomID returns a fresh lab prefix such as "rllab3fa9c1".
func randomID() (string, error) {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random lab id: %w", err)
	}
	return NamePrefix + hex.EncodeToString(b[:]), nil
}
