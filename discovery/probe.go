package discovery

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

	"github.com/google/uuid"

	"github.com/redleader-p2p/redleader/internal/ratelog"
	"github.com/redleader-p2p/redleader/peer/content"
)

// Prober defaults and limits.
const (
	// DefaultRequestTimer is how long a Probe waits for ProbeMatches
	// (Windows 7: 300 ms).
	DefaultRequestTimer = 300 * time.Millisecond
	// MinRequestTimer and MaxRequestTimer bound the request timer.
	MinRequestTimer = 200 * time.Millisecond
	MaxRequestTimer = 500 * time.Millisecond
	// DefaultRetransmits is how many times a Probe is repeated within its
	// request timer (UDP multicast is lossy; responders answer once).
	DefaultRetransmits = 1
	// matchQueue bounds the ProbeMatches queued for one Probe.
	matchQueue = 128
)

// ProberConfig configures a Prober. Start from DefaultProberConfig.
type ProberConfig struct {
	// Targets are where Probes are sent: the WS-Discovery group
	// 239.255.255.250:3702 by default; a responder's unicast address in
	// tests. IPv6 link-local targets need a zone.
	Targets []netip.AddrPort
	// Interface names the interface multicast Probes leave by; empty lets
	// the routing table choose.
	Interface string
	// BindAddr is the local address of the Probe socket; the zero value
	// means all addresses and an ephemeral port. ProbeMatches arrive here.
	BindAddr netip.AddrPort
	// RequestTimer is how long a Probe collects ProbeMatches, 200 to 500 ms
	// and not below MaxBackoff.
	RequestTimer time.Duration
	// MaxBackoff is the responders' maximum reply backoff (65 ms).
	MaxBackoff time.Duration
	// Retransmits is how many extra copies of a Probe are sent, spread
	// evenly over the first half of the request timer.
	Retransmits int
	// LocalNets returns the local subnets; a ProbeMatch counts only if one
	// of its XAddrs is inside one of them. nil means InterfaceNets.
	LocalNets func() []netip.Prefix
}

// DefaultProberConfig returns the defaults: multicast to
// 239.255.255.250:3702, 300 ms request timer, 65 ms responder backoff, one
// retransmission, the host's interface subnets.
func DefaultProberConfig() ProberConfig {
	return ProberConfig{
		Targets:      []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr(MulticastIPv4), DefaultPort)},
		RequestTimer: DefaultRequestTimer,
		MaxBackoff:   DefaultMaxBackoff,
		Retransmits:  DefaultRetransmits,
	}
}

func (c *ProberConfig) validate() error {
	switch {
	case len(c.Targets) == 0:
		return fmt.Errorf("%w: no probe targets", ErrInvalidConfig)
	case c.RequestTimer < MinRequestTimer || c.RequestTimer > MaxRequestTimer:
		return fmt.Errorf("%w: request timer %v not in [%v, %v]", ErrInvalidConfig, c.RequestTimer, MinRequestTimer, MaxRequestTimer)
	case c.RequestTimer < c.MaxBackoff:
		return fmt.Errorf("%w: request timer %v below responder max backoff %v", ErrInvalidConfig, c.RequestTimer, c.MaxBackoff)
	case c.Retransmits < 0 || c.Retransmits > 4:
		return fmt.Errorf("%w: retransmits %d not in [0, 4]", ErrInvalidConfig, c.Retransmits)
	}
	for _, t := range c.Targets {
		if !t.IsValid() || t.Port() == 0 {
			return fmt.Errorf("%w: target %v", ErrInvalidConfig, t)
		}
	}
	return nil
}

// InterfaceNets returns the subnets of this host's interface addresses.
func InterfaceNets() []netip.Prefix {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		ones, bits := ipn.Mask.Size()
		if bits != ip.BitLen() {
			continue
		}
		out = append(out, netip.PrefixFrom(ip, ones).Masked())
	}
	return out
}

// SegmentMatch is one segment a peer reported in a ProbeMatch.
type SegmentMatch struct {
	// ID is the segment.
	ID content.SegmentID
	// Blocks (v1) is how many blocks of it the peer holds; 0 for v2. Compare
	// with the content information to tell a full segment.
	Blocks uint32
	// Full (v2) reports that the peer holds all of the segment; false for v1.
	Full bool
}

// Match is an accepted ProbeMatch: a LAN peer holding probed segments.
type Match struct {
	// Peer is the peer's retrieval address, from its XAddrs.
	Peer netip.AddrPort
	// Source is the UDP source address of the ProbeMatch.
	Source netip.AddrPort
	// Endpoint is the peer's wsa:Address (a stable urn:uuid per start).
	Endpoint string
	// Version is the PCCRD version of the exchange.
	Version Version
	// Segments are the probed segments the peer reported.
	Segments []SegmentMatch
	// Latency is the time from sending the Probe to receiving this reply.
	Latency time.Duration
}

// outstanding is an entry of the Outstanding Probe List.
type outstanding struct {
	messageID string
	version   Version
	ids       []content.SegmentID
	start     time.Time
	peers     map[netip.AddrPort]bool // peers already answered
	ch        chan Match
}

// Prober sends PCCRD Probes and collects ProbeMatches (the client role).
type Prober struct {
	cfg  ProberConfig
	m    *Metrics
	rlog *ratelog.Logger // its lines all repeat per datagram
	wg   sync.WaitGroup

	mu      sync.Mutex
	conns   map[bool]*net.UDPConn // by "is IPv6"
	out     map[string]*outstanding
	nets    []netip.Prefix
	done    chan struct{}
	cancel  context.CancelFunc
	started bool
	closed  bool
}

// NewProber checks cfg and returns a Prober; m and log may be nil.
func NewProber(cfg ProberConfig, m *Metrics, log *slog.Logger) (*Prober, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.LocalNets == nil {
		cfg.LocalNets = InterfaceNets
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Prober{
		cfg:  cfg,
		m:    m,
		rlog: ratelog.New(log.With("component", "pccrd-prober"), logEvery, logBurst),
		out:  map[string]*outstanding{},
		done: make(chan struct{}),
	}, nil
}

// Start opens the Probe sockets (one per address family of the targets)
// and starts reading ProbeMatches until ctx is cancelled or Close.
func (p *Prober) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if p.started {
		return errors.New("prober already started")
	}
	conns := map[bool]*net.UDPConn{}
	for _, t := range p.cfg.Targets {
		v6 := t.Addr().Is6() && !t.Addr().Is4In6()
		if conns[v6] != nil {
			continue
		}
		c, err := p.listen(v6, t.Addr())
		if err != nil {
			for _, c := range conns {
				_ = c.Close()
			}
			return fmt.Errorf("start prober: %w", err)
		}
		conns[v6] = c
	}
	p.started = true
	p.conns = conns
	p.nets = p.cfg.LocalNets()
	ctx, p.cancel = context.WithCancel(ctx)
	p.wg.Add(1 + len(conns))
	go func() {
		defer p.wg.Done()
		<-ctx.Done()
		p.shutdown()
	}()
	for _, c := range conns {
		go func() {
			defer p.wg.Done()
			p.readLoop(c)
		}()
	}
	return nil
}

// listen opens the socket of one address family. With an Interface and a
// multicast target it uses ListenMulticastUDP, which also makes multicast
// leave by that interface (and turns off local loopback of our Probes).
func (p *Prober) listen(v6 bool, target netip.Addr) (*net.UDPConn, error) {
	network := "udp4"
	if v6 {
		network = "udp6"
	}
	if p.cfg.Interface != "" && target.IsMulticast() {
		ifi, err := net.InterfaceByName(p.cfg.Interface)
		if err != nil {
			return nil, fmt.Errorf("interface %q: %w", p.cfg.Interface, err)
		}
		c, err := net.ListenMulticastUDP(network, ifi, &net.UDPAddr{IP: target.AsSlice(), Port: int(p.cfg.BindAddr.Port())})
		if err != nil {
			return nil, fmt.Errorf("listen %s on %s: %w", network, ifi.Name, err)
		}
		return c, nil
	}
	var laddr *net.UDPAddr
	if p.cfg.BindAddr.IsValid() {
		laddr = net.UDPAddrFromAddrPort(p.cfg.BindAddr)
	}
	c, err := net.ListenUDP(network, laddr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", network, err)
	}
	return c, nil
}

// Close stops the Prober and waits for its goroutines; running Probes
// return ErrClosed.
func (p *Prober) Close() error {
	p.shutdown()
	p.wg.Wait()
	return nil
}

func (p *Prober) shutdown() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	close(p.done)
	if p.cancel != nil {
		p.cancel()
	}
	for _, c := range p.conns {
		_ = c.Close()
	}
}

// Probe sends a v1 Probe for ids and returns every accepted ProbeMatch
// received within the request timer.
func (p *Prober) Probe(ctx context.Context, ids ...content.SegmentID) ([]Match, error) {
	var out []Match
	err := p.ProbeEach(ctx, V1, ids, func(m Match) bool {
		out = append(out, m)
		return true
	})
	return out, err
}

// ProbeEach sends a Probe of version v for ids and calls fn for each
// accepted ProbeMatch, in arrival order, until the request timer expires
// or fn returns false. It returns an error wrapping ctx.Err() if ctx ends first and
// ErrClosed if the Prober is closed.
func (p *Prober) ProbeEach(ctx context.Context, v Version, ids []content.SegmentID, fn func(Match) bool) error {
	if !v.valid() || len(ids) == 0 || len(ids) > MaxSegments {
		return fmt.Errorf("%w: %v probe for %d segments", ErrInvalidMessage, v, len(ids))
	}
	probe := &Probe{Version: v, MessageID: uuidURNPrefix + uuid.NewString()}
	for _, id := range ids {
		probe.Segments = append(probe.Segments, id[:])
	}
	msg, err := probe.Marshal()
	if err != nil {
		return fmt.Errorf("build probe: %w", err)
	}
	o := &outstanding{
		messageID: probe.MessageID,
		version:   v,
		ids:       ids,
		peers:     map[netip.AddrPort]bool{},
		ch:        make(chan Match, matchQueue),
	}
	if err := p.register(o); err != nil {
		return err
	}
	defer p.unregister(o)

	timer := time.NewTimer(p.cfg.RequestTimer)
	defer timer.Stop()
	var retransmit <-chan time.Time
	left := p.cfg.Retransmits
	if left > 0 {
		t := time.NewTicker(p.cfg.RequestTimer / 2 / time.Duration(left+1))
		defer t.Stop()
		retransmit = t.C
	}
	if err := p.send(msg); err != nil {
		select {
		case <-p.done: // closed after register: the sockets are gone
			return ErrClosed
		default:
			return err
		}
	}
	first := true
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("probe: %w", ctx.Err())
		case <-p.done:
			return ErrClosed
		case <-timer.C:
			return nil
		case <-retransmit:
			if left > 0 {
				left--
				_ = p.send(msg) // already logged; the first send succeeded
			}
		case m := <-o.ch:
			if first {
				first = false
				p.m.FirstMatchLatency.Observe(m.Latency.Seconds())
			}
			if !fn(m) {
				return nil
			}
		}
	}
}

func (p *Prober) register(o *outstanding) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return ErrClosed
	case !p.started:
		return ErrNotStarted
	}
	p.nets = p.cfg.LocalNets()
	o.start = time.Now()
	p.out[o.messageID] = o
	return nil
}

func (p *Prober) unregister(o *outstanding) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.out, o.messageID)
}

// send sends msg to every target; it fails only if no send succeeded.
func (p *Prober) send(msg []byte) error {
	p.mu.Lock()
	conns := p.conns
	p.mu.Unlock()
	var errs []error
	for _, t := range p.cfg.Targets {
		c := conns[t.Addr().Is6() && !t.Addr().Is4In6()]
		if _, err := c.WriteToUDPAddrPort(msg, t); err != nil {
			p.rlog.Debug("send "+t.String(), "send probe", "to", t, "err", err)
			errs = append(errs, err)
		}
	}
	if len(errs) == len(p.cfg.Targets) {
		return fmt.Errorf("send probe: %w", errors.Join(errs...))
	}
	p.m.ProbesSent.Inc()
	return nil
}

func (p *Prober) readLoop(c *net.UDPConn) {
	buf := make([]byte, MaxMessageSize+1)
	for {
		n, src, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			p.rlog.Debug("read", "read failed", "err", err)
			continue
		}
		p.handle(buf[:n], src, time.Now())
	}
}

// handle checks one ProbeMatch against the Outstanding Probe List: its
// Types must match the Probe's version, one of its XAddrs must be in a
// local subnet and one of its segments must be outstanding.
func (p *Prober) handle(b []byte, src netip.AddrPort, now time.Time) {
	pm, err := ParseProbeMatch(b)
	if err != nil {
		p.m.dropped(err)
		p.rlog.Debug("drop "+src.Addr().String(), "dropped datagram", "from", src, "err", err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	peer, ok := localXAddr(pm.XAddrs, p.nets)
	if !ok {
		p.m.MatchesIgnored.WithLabelValues(ignoreSubnet).Inc()
		return
	}
	reason := ignoreOutstanding
	delivered := false
	for _, o := range p.out {
		segs := o.matched(pm)
		if len(segs) == 0 {
			continue
		}
		switch {
		case pm.Version != o.version:
			reason = ignoreType
			continue
		case o.peers[peer]:
			reason = ignoreDuplicate
			continue
		}
		m := Match{
			Peer: peer, Source: src, Endpoint: pm.Address, Version: pm.Version,
			Segments: segs, Latency: now.Sub(o.start),
		}
		select {
		case o.ch <- m:
			o.peers[peer] = true
			delivered = true
		default: // the Probe's queue is full; drop
		}
	}
	if delivered {
		p.m.MatchesReceived.Inc()
		return
	}
	p.m.MatchesIgnored.WithLabelValues(reason).Inc()
}

// matched returns the segments of o that pm reports. v1 replies match by
// segment ID (as iPXE does); v2 replies carry a bit array relative to the
// Probe, so they must relate to this Probe.
func (o *outstanding) matched(pm *ProbeMatch) []SegmentMatch {
	var out []SegmentMatch
	if pm.Version == V2 {
		if pm.RelatesTo != o.messageID {
			return nil
		}
		for i, id := range o.ids {
			if has, full := pm.Has(i); has {
				out = append(out, SegmentMatch{ID: id, Full: full})
			}
		}
		return out
	}
	for i, s := range pm.Segments {
		id, ok := segmentID(s)
		if !ok || pm.BlockCounts[i] == 0 { // a zero count means "not held"
			continue
		}
		for _, want := range o.ids {
			if id == want {
				out = append(out, SegmentMatch{ID: id, Blocks: pm.BlockCounts[i]})
				break
			}
		}
	}
	return out
}

// localXAddr returns the first of xaddrs inside one of nets. XAddrs are
// "host:port", optionally with a scheme and path ("http://h:p/...").
func localXAddr(xaddrs []string, nets []netip.Prefix) (netip.AddrPort, bool) {
	for _, x := range xaddrs {
		ap, ok := parseXAddr(x)
		if !ok {
			continue
		}
		for _, n := range nets {
			if n.Contains(ap.Addr()) {
				return ap, true
			}
		}
	}
	return netip.AddrPort{}, false
}

func parseXAddr(s string) (netip.AddrPort, bool) {
	if _, rest, ok := strings.Cut(s, "://"); ok {
		s = rest
	}
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port()), true
}
