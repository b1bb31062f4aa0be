package discovery

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/redleader-p2p/redleader/internal/ratelog"
)

// Beacon errors.
var (
	ErrBadBeacon   = errors.New("bad beacon")
	ErrBeaconAuth  = errors.New("beacon authentication failed")
	ErrNoMulticast = errors.New("interface cannot multicast")
)

// beaconMagic starts every agent beacon, so the datagram can never be
// mistaken for WS-Discovery or anything else sharing a port.
var beaconMagic = [4]byte{'R', 'L', 'D', 'B'}

const (
	beaconVersion  = 1
	beaconFlagAuth = 1 // a 16-byte HMAC-SHA256 tag over the rest follows
	beaconTagLen   = 16
	maxBeaconSize  = 256
	maxSubnetLen   = 64
)

// Announce is what a beacon says: "agent Node of Subnet gossips at Addr".
type Announce struct {
	Node   [16]byte
	Subnet string
	Addr   netip.AddrPort
}

// MarshalBeacon encodes an announcement; with a key it appends an
// HMAC-SHA256 tag (truncated to 16 bytes) so that agents of another
// cluster ignore it.
func MarshalBeacon(a Announce, key []byte) ([]byte, error) {
	if len(a.Subnet) > maxSubnetLen {
		return nil, fmt.Errorf("%w: subnet label longer than %d bytes", ErrBadBeacon, maxSubnetLen)
	}
	if !a.Addr.IsValid() {
		return nil, fmt.Errorf("%w: no address", ErrBadBeacon)
	}
	var flags byte
	if len(key) > 0 {
		flags |= beaconFlagAuth
	}
	ip := a.Addr.Addr().Unmap().AsSlice()
	b := make([]byte, 0, 64)
	b = append(b, beaconMagic[:]...)
	b = append(b, beaconVersion, flags)
	b = append(b, a.Node[:]...)
	b = binary.BigEndian.AppendUint16(b, a.Addr.Port())
	b = append(b, byte(len(ip)))
	b = append(b, ip...)
	b = append(b, byte(len(a.Subnet)))
	b = append(b, a.Subnet...)
	if len(key) > 0 {
		b = append(b, beaconTag(key, b)...)
	}
	return b, nil
}

// UnmarshalBeacon decodes and, when keys are given, authenticates a
// beacon: its tag must match one of the keys (a fleet rotating its key
// holds the old and the new one). Empty keys are ignored. A beacon that is
// unsigned while we have a key, or signed while we have none, is rejected:
// the two agents are not in the same cluster.
func UnmarshalBeacon(b []byte, keys ...[]byte) (Announce, error) {
	const fixed = 4 + 2 + 16 + 2 + 1
	if len(b) > maxBeaconSize {
		return Announce{}, fmt.Errorf("%w: %d bytes", ErrBadBeacon, len(b))
	}
	if len(b) < fixed || [4]byte(b[:4]) != beaconMagic {
		return Announce{}, fmt.Errorf("%w: not a beacon", ErrBadBeacon)
	}
	if b[4] != beaconVersion {
		return Announce{}, fmt.Errorf("%w: version %d", ErrBadBeacon, b[4])
	}
	signed := b[5]&beaconFlagAuth != 0
	if signed != slices.ContainsFunc(keys, func(k []byte) bool { return len(k) > 0 }) {
		return Announce{}, ErrBeaconAuth
	}
	body := b
	if signed {
		if len(b) < fixed+beaconTagLen {
			return Announce{}, fmt.Errorf("%w: short tag", ErrBadBeacon)
		}
		body = b[:len(b)-beaconTagLen]
		tag := b[len(body):]
		if !slices.ContainsFunc(keys, func(k []byte) bool { return len(k) > 0 && hmac.Equal(beaconTag(k, body), tag) }) {
			return Announce{}, ErrBeaconAuth
		}
	}
	var a Announce
	copy(a.Node[:], body[6:22])
	port := binary.BigEndian.Uint16(body[22:])
	ipLen := int(body[24])
	rest := body[25:]
	if (ipLen != 4 && ipLen != 16) || len(rest) < ipLen+1 {
		return Announce{}, fmt.Errorf("%w: bad address", ErrBadBeacon)
	}
	ip, _ := netip.AddrFromSlice(rest[:ipLen])
	a.Addr = netip.AddrPortFrom(ip.Unmap(), port)
	rest = rest[ipLen:]
	sl := int(rest[0])
	if sl > maxSubnetLen || len(rest) != 1+sl {
		return Announce{}, fmt.Errorf("%w: bad subnet label", ErrBadBeacon)
	}
	a.Subnet = string(rest[1:])
	return a, nil
}

func beaconTag(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)[:beaconTagLen]
}

// BeaconConfig configures a Beacon.
type BeaconConfig struct {
	// Group and Port are the multicast destination (TTL 1: never routed).
	Group netip.Addr
	Port  int
	// Interface is the interface to send and listen on.
	Interface *net.Interface
	// Interval between beacons once settled; the first ones go out after
	// 0.5 s, 1 s, 2 s, 4 s … until Interval is reached.
	Interval time.Duration
	// Keys authenticate beacons: the first one signs what this agent
	// sends, a received beacon signed with any of them is accepted (key
	// rotation). None: unauthenticated.
	Keys [][]byte
}

// BeaconStats counts what a Beacon did.
type BeaconStats struct {
	Sent, Received, Dropped uint64
}

// Beacon announces this agent on the LAN and reports other agents'
// announcements. It owns one receive goroutine and one send goroutine;
// Close stops both. Start and Close may be called concurrently.
type Beacon struct {
	cfg    BeaconConfig
	self   func() Announce
	onPeer func(Announce)
	rlog   *ratelog.Logger // its lines all repeat per beacon

	rx   *net.UDPConn
	tx   *ipv4.PacketConn
	txc  net.PacketConn
	dst  *net.UDPAddr
	kick chan struct{}

	mu      sync.Mutex
	stats   BeaconStats
	cancel  context.CancelFunc
	started bool
	closed  bool

	wg sync.WaitGroup
}

// NewBeacon opens the sockets. self is called before every send to get the
// current announcement; onPeer is called from the receive goroutine for
// every valid beacon of another node and must not block. log may be nil.
func NewBeacon(cfg BeaconConfig, self func() Announce, onPeer func(Announce), log *slog.Logger) (*Beacon, error) {
	if cfg.Interface == nil || cfg.Interface.Flags&net.FlagMulticast == 0 {
		name := "<none>"
		if cfg.Interface != nil {
			name = cfg.Interface.Name
		}
		return nil, fmt.Errorf("beacon on %s: %w", name, ErrNoMulticast)
	}
	group := &net.UDPAddr{IP: cfg.Group.AsSlice(), Port: cfg.Port}
	rx, err := net.ListenMulticastUDP("udp4", cfg.Interface, group)
	if err != nil {
		return nil, fmt.Errorf("listen beacon %s on %s: %w", group, cfg.Interface.Name, err)
	}
	txc, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		rx.Close()
		return nil, fmt.Errorf("beacon send socket: %w", err)
	}
	tx := ipv4.NewPacketConn(txc)
	for _, set := range []func() error{
		func() error { return tx.SetMulticastInterface(cfg.Interface) },
		func() error { return tx.SetMulticastTTL(1) },
		func() error { return tx.SetMulticastLoopback(true) },
	} {
		if err := set(); err != nil {
			rx.Close()
			txc.Close()
			return nil, fmt.Errorf("beacon socket options: %w", err)
		}
	}
	return &Beacon{
		cfg: cfg, self: self, onPeer: onPeer, rlog: ratelog.New(log, logEvery, logBurst),
		rx: rx, tx: tx, txc: txc, dst: group,
		kick: make(chan struct{}, 1),
	}, nil
}

// Start runs the send and receive loops until ctx ends or Close. It
// returns ErrClosed after Close and an error when already started.
func (b *Beacon) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return ErrClosed
	case b.started:
		return errors.New("beacon already started")
	}
	b.started = true
	ctx, b.cancel = context.WithCancel(ctx)
	b.wg.Add(2) // under mu: Close cannot be waiting yet
	go func() { defer b.wg.Done(); b.receiveLoop() }()
	go func() { defer b.wg.Done(); b.sendLoop(ctx) }()
	return nil
}

// Kick restarts the fast schedule (after a re-home, or when the agent
// finds itself alone).
func (b *Beacon) Kick() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// Stats returns the counters.
func (b *Beacon) Stats() BeaconStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

// Close stops the loops and closes the sockets; a second Close does
// nothing.
func (b *Beacon) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	cancel := b.cancel
	b.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	err := errors.Join(b.rx.Close(), b.txc.Close())
	b.wg.Wait()
	return err
}

func (b *Beacon) count(f func(*BeaconStats)) {
	b.mu.Lock()
	f(&b.stats)
	b.mu.Unlock()
}

func (b *Beacon) sendLoop(ctx context.Context) {
	wait := 500 * time.Millisecond
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.kick:
			wait = 500 * time.Millisecond
			t.Reset(0)
			continue
		case <-t.C:
		}
		b.send()
		// ±20% jitter keeps agents that booted together from beaconing in step.
		j := time.Duration(float64(wait) * (0.8 + 0.4*rand.Float64()))
		t.Reset(j)
		wait = min(wait*2, b.cfg.Interval)
	}
}

func (b *Beacon) send() {
	var key []byte
	if len(b.cfg.Keys) > 0 {
		key = b.cfg.Keys[0]
	}
	msg, err := MarshalBeacon(b.self(), key)
	if err != nil {
		b.rlog.Warn("marshal", "beacon not sent", "err", err)
		return
	}
	if _, err := b.tx.WriteTo(msg, nil, b.dst); err != nil {
		b.rlog.Debug("send", "beacon send failed", "err", err)
		return
	}
	b.count(func(s *BeaconStats) { s.Sent++ })
}

func (b *Beacon) receiveLoop() {
	buf := make([]byte, maxBeaconSize+1)
	for {
		n, src, err := b.rx.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			b.rlog.Debug("read", "beacon read failed", "err", err)
			time.Sleep(10 * time.Millisecond) // a transient error must not spin
			continue
		}
		a, err := UnmarshalBeacon(buf[:n], b.cfg.Keys...)
		if err != nil {
			b.count(func(s *BeaconStats) { s.Dropped++ })
			b.rlog.Debug("drop "+src.Addr().String(), "beacon dropped", "from", src, "err", err)
			continue
		}
		if a.Node == b.self().Node {
			continue
		}
		b.count(func(s *BeaconStats) { s.Received++ })
		b.onPeer(a)
	}
}
