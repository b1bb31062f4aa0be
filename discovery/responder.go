package discovery

import (
	"container/heap"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/redleader-p2p/redleader/internal/ratelog"
	"github.com/redleader-p2p/redleader/peer/content"
)

// Responder defaults.
const (
	// DefaultMaxBackoff is APP_MAX_DELAY: replies are delayed uniformly in
	// [1 ms, max backoff].
	DefaultMaxBackoff = 65 * time.Millisecond
	// DefaultMaxPending bounds the replies waiting for their backoff.
	DefaultMaxPending = 256
	// minBackoff is the lower bound of the reply backoff.
	minBackoff = time.Millisecond
	// dedupWindow is how long a Probe's (source, MessageID) is remembered,
	// so the copies a multi-socket responder receives and the prober's
	// retransmissions are answered once.
	dedupWindow = 500 * time.Millisecond
	// dedupMax bounds the remembered Probes.
	dedupMax = 4096
	// readBuffer is the socket receive buffer the responder asks for.
	readBuffer = 1 << 20
)

// Holder reports the segments the agent holds (the Available Segment
// List). It must be safe for concurrent use.
type Holder interface {
	// BlockCount returns how many blocks of segment id the agent holds;
	// ok is false when it holds none.
	BlockCount(id content.SegmentID) (blocks uint32, ok bool)
}

// ResponderConfig configures a Responder. Start from
// DefaultResponderConfig; zero values are taken literally.
type ResponderConfig struct {
	// Port is the UDP port to listen on (DefaultPort); 0 picks an
	// ephemeral port, shared by all sockets of the Responder (tests).
	Port int
	// Interfaces names the interfaces to join the groups on; empty means
	// every interface that is up and multicast-capable.
	Interfaces []string
	// Groups are the multicast groups to join (MulticastIPv4 and
	// MulticastIPv6). IPv6 is best-effort: interfaces without IPv6 skip it.
	Groups []netip.Addr
	// NoMulticast listens with one plain unicast socket on BindAddr:Port
	// instead of joining groups (tests on hosts where lo has no MULTICAST).
	NoMulticast bool
	// BindAddr is the unicast listen address with NoMulticast; the zero
	// value means all addresses.
	BindAddr netip.Addr
	// XAddrs returns the agent's peer (retrieval) addresses to advertise;
	// required. Replies are skipped while it returns none.
	XAddrs func() []netip.AddrPort
	// MaxBackoff is APP_MAX_DELAY (DefaultMaxBackoff), 1 ms to 1 s.
	MaxBackoff time.Duration
	// ReplyThreshold is n of the suppression rule (DefaultReplyThreshold).
	ReplyThreshold int
	// ReplyProbability is the answer probability of the suppression rule
	// when n replies but fewer than n full ones were seen (0.33).
	ReplyProbability float64
	// MaxPending bounds replies waiting for their backoff (DefaultMaxPending).
	MaxPending int
	// Rand is the random source for backoffs and suppression; nil means a
	// randomly seeded one. Tests inject a seeded source.
	Rand *rand.Rand
}

// DefaultResponderConfig returns the defaults: port 3702, both groups on
// every multicast interface, 65 ms max backoff, n = 10, p = 0.33. XAddrs
// must still be set.
func DefaultResponderConfig() ResponderConfig {
	return ResponderConfig{
		Port:             DefaultPort,
		Groups:           []netip.Addr{netip.MustParseAddr(MulticastIPv4), netip.MustParseAddr(MulticastIPv6)},
		MaxBackoff:       DefaultMaxBackoff,
		ReplyThreshold:   DefaultReplyThreshold,
		ReplyProbability: DefaultReplyProbability,
		MaxPending:       DefaultMaxPending,
	}
}

func (c *ResponderConfig) validate() error {
	switch {
	case c.Port < 0 || c.Port > 65535:
		return fmt.Errorf("%w: port %d", ErrInvalidConfig, c.Port)
	case c.XAddrs == nil:
		return fmt.Errorf("%w: XAddrs not set", ErrInvalidConfig)
	case c.MaxBackoff < minBackoff || c.MaxBackoff > time.Second:
		return fmt.Errorf("%w: max backoff %v not in [1ms, 1s]", ErrInvalidConfig, c.MaxBackoff)
	case c.ReplyThreshold < 1:
		return fmt.Errorf("%w: reply threshold %d", ErrInvalidConfig, c.ReplyThreshold)
	case !(c.ReplyProbability >= 0 && c.ReplyProbability <= 1):
		return fmt.Errorf("%w: reply probability %v not in [0, 1]", ErrInvalidConfig, c.ReplyProbability)
	case c.MaxPending < 1:
		return fmt.Errorf("%w: max pending %d", ErrInvalidConfig, c.MaxPending)
	case !c.NoMulticast && len(c.Groups) == 0:
		return fmt.Errorf("%w: no multicast groups", ErrInvalidConfig)
	}
	for _, g := range c.Groups {
		if !g.IsMulticast() {
			return fmt.Errorf("%w: group %v is not multicast", ErrInvalidConfig, g)
		}
	}
	return nil
}

// Responder answers PCCRD Probes for held segments (the server role).
type Responder struct {
	cfg        ResponderConfig
	holder     Holder
	m          *Metrics
	log        *slog.Logger
	rlog       *ratelog.Logger // for lines that repeat per datagram
	address    string          // wsa:Address, a urn:uuid made at start
	instanceID uint32          // AppSequence InstanceId: start time in seconds

	wake chan struct{}
	wg   sync.WaitGroup

	mu        sync.Mutex
	rand      *rand.Rand
	supp      *suppressor
	seen      *recentSet
	pending   replyQueue
	msgNumber uint32
	conns     []*net.UDPConn
	cancel    context.CancelFunc
	started   bool
	closed    bool
}

// NewResponder checks cfg and returns a Responder that answers for the
// segments h holds. m and log may be nil.
func NewResponder(cfg ResponderConfig, h Holder, m *Metrics, log *slog.Logger) (*Responder, error) {
	if h == nil {
		return nil, fmt.Errorf("%w: nil holder", ErrInvalidConfig)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := cfg.Rand
	if r == nil {
		var seed [32]byte
		_, _ = crand.Read(seed[:]) // crypto/rand.Read never fails
		r = rand.New(rand.NewChaCha8(seed))
	}
	log = log.With("component", "pccrd-responder")
	return &Responder{
		cfg:     cfg,
		holder:  h,
		m:       m,
		log:     log,
		rlog:    ratelog.New(log, logEvery, logBurst),
		address: uuidURNPrefix + uuid.NewString(),
		wake:    make(chan struct{}, 1),
		rand:    r,
		supp:    newSuppressor(cfg.ReplyThreshold, cfg.ReplyProbability),
		seen:    newRecentSet(dedupWindow, dedupMax),
	}, nil
}

// RecordFetch records what the agent's own Probe for segment id saw: how
// many ProbeMatches it got and how many of them were full-segment replies.
// The agent calls it right after each Probe; it is the agent's only memory
// of probes. The reply-suppression rule uses the latest record of each
// segment once the agent holds it. Records live in an LRU of
// maxFetchRecords entries.
func (r *Responder) RecordFetch(id content.SegmentID, replies, full int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.supp.record(id, replies, full)
}

// Forget drops the fetch record of id (e.g. when the segment is evicted).
func (r *Responder) Forget(id content.SegmentID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.supp.forget(id)
}

// Start opens the sockets and starts answering until ctx is cancelled or
// Close is called.
func (r *Responder) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	if r.started {
		return errors.New("responder already started")
	}
	conns, err := r.listen()
	if err != nil {
		return fmt.Errorf("start responder: %w", err)
	}
	for _, c := range conns {
		// Best-effort: absorb bursts of WS-Discovery traffic.
		_ = c.SetReadBuffer(readBuffer)
	}
	r.started = true
	r.conns = conns
	r.instanceID = uint32(time.Now().Unix())
	ctx, r.cancel = context.WithCancel(ctx)
	r.wg.Add(2 + len(conns))
	go func() {
		defer r.wg.Done()
		<-ctx.Done()
		for _, c := range conns {
			_ = c.Close() // unblocks the readers
		}
	}()
	go func() {
		defer r.wg.Done()
		r.sendLoop(ctx)
	}()
	for _, c := range conns {
		go func() {
			defer r.wg.Done()
			r.readLoop(ctx, c)
		}()
	}
	r.log.Info("responder started", "addr", conns[0].LocalAddr().String(), "sockets", len(conns))
	return nil
}

// Addr returns the local address of the Responder's first socket (a
// wildcard address with multicast), or the zero value before Start.
func (r *Responder) Addr() netip.AddrPort {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.conns) == 0 {
		return netip.AddrPort{}
	}
	return r.conns[0].LocalAddr().(*net.UDPAddr).AddrPort()
}

// Endpoint returns the Responder's wsa:Address (urn:uuid), which its
// ProbeMatches carry as Match.Endpoint: an agent can use it to ignore its
// own replies.
func (r *Responder) Endpoint() string { return r.address }

// Close stops the Responder and waits for its goroutines. Pending replies
// are dropped.
func (r *Responder) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	cancel := r.cancel
	r.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	r.wg.Wait()
	return nil
}

// listen opens the sockets: one per (interface, group), or one unicast.
func (r *Responder) listen() ([]*net.UDPConn, error) {
	if r.cfg.NoMulticast {
		addr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(r.cfg.BindAddr, uint16(r.cfg.Port)))
		if !r.cfg.BindAddr.IsValid() {
			addr = &net.UDPAddr{Port: r.cfg.Port}
		}
		c, err := net.ListenUDP("udp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen %v: %w", addr, err)
		}
		return []*net.UDPConn{c}, nil
	}
	ifaces, err := r.interfaces()
	if err != nil {
		return nil, err
	}
	port := r.cfg.Port
	var conns []*net.UDPConn
	for _, ifi := range ifaces {
		for _, g := range r.cfg.Groups {
			network := "udp4"
			if g.Is6() {
				network = "udp6"
			}
			c, err := net.ListenMulticastUDP(network, &ifi, &net.UDPAddr{IP: g.AsSlice(), Port: port})
			if err != nil {
				// IPv6 and interfaces without an address are best-effort.
				r.log.Debug("join group failed", "interface", ifi.Name, "group", g, "err", err)
				continue
			}
			if port == 0 {
				port = c.LocalAddr().(*net.UDPAddr).Port
			}
			conns = append(conns, c)
		}
	}
	if len(conns) == 0 {
		return nil, fmt.Errorf("no multicast group joined on %d interfaces", len(ifaces))
	}
	return conns, nil
}

// interfaces returns the configured interfaces, or every interface that is
// up and multicast-capable.
func (r *Responder) interfaces() ([]net.Interface, error) {
	if len(r.cfg.Interfaces) > 0 {
		out := make([]net.Interface, 0, len(r.cfg.Interfaces))
		for _, name := range r.cfg.Interfaces {
			ifi, err := net.InterfaceByName(name)
			if err != nil {
				return nil, fmt.Errorf("interface %q: %w", name, err)
			}
			out = append(out, *ifi)
		}
		return out, nil
	}
	all, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var out []net.Interface
	for _, ifi := range all {
		if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagMulticast != 0 {
			out = append(out, ifi)
		}
	}
	return out, nil
}

func (r *Responder) readLoop(ctx context.Context, c *net.UDPConn) {
	buf := make([]byte, MaxMessageSize+1) // one spare byte detects oversized datagrams
	for {
		n, src, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			r.rlog.Debug("read", "read failed", "err", err)
			continue
		}
		r.handle(c, buf[:n], src)
	}
}

// handle answers one datagram: parse, deduplicate, look up held segments,
// apply suppression and queue a reply after a random backoff.
func (r *Responder) handle(c *net.UDPConn, b []byte, src netip.AddrPort) {
	p, err := ParseProbe(b)
	if err != nil {
		r.m.dropped(err)
		r.rlog.Debug("drop "+src.Addr().String(), "dropped datagram", "from", src, "err", err)
		return
	}
	now := time.Now()
	r.mu.Lock()
	dup := r.seen.seen(src.String()+" "+p.MessageID, now)
	r.mu.Unlock()
	if dup {
		return
	}
	r.m.ProbesReceived.Inc()

	type heldSegment struct {
		index  int
		id     content.SegmentID
		blocks uint32
	}
	var held []heldSegment
	for i, s := range p.Segments {
		id, ok := segmentID(s)
		if !ok {
			continue
		}
		if blocks, ok := r.holder.BlockCount(id); ok && blocks > 0 {
			held = append(held, heldSegment{i, id, blocks})
		}
	}
	if len(held) == 0 {
		return
	}
	xaddrs := r.cfg.XAddrs()
	if len(xaddrs) == 0 {
		r.rlog.Debug("no xaddrs", "no peer address to advertise; probe not answered")
		return
	}

	m := &ProbeMatch{
		Version:   p.Version,
		MessageID: uuidURNPrefix + uuid.NewString(),
		RelatesTo: p.MessageID,
		Address:   r.address,
	}
	for _, x := range xaddrs[:min(len(xaddrs), maxXAddrs)] {
		m.XAddrs = append(m.XAddrs, x.String())
	}
	if p.Version == V2 {
		m.Availability = make([]byte, (2*len(p.Segments)+7)/8)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	answered := 0
	for _, h := range held {
		if !r.supp.answer(h.id, r.rand.Float64) {
			continue
		}
		answered++
		if p.Version == V1 {
			m.Segments = append(m.Segments, h.id[:])
			m.BlockCounts = append(m.BlockCounts, h.blocks)
		} else {
			// A v2 segment is a single block: holding it means holding it all.
			setAvailability(m.Availability, h.index, true, true)
		}
	}
	switch {
	case answered == 0:
		r.m.MatchesSuppressed.WithLabelValues(suppressPolicy).Inc()
	case r.closed:
	case len(r.pending) >= r.cfg.MaxPending:
		r.m.MatchesSuppressed.WithLabelValues(suppressBusy).Inc()
	default:
		heap.Push(&r.pending, &pendingReply{due: now.Add(r.backoffLocked()), conn: c, dst: src, match: m})
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

// backoffLocked returns a delay uniform in [1 ms, MaxBackoff]. r.mu held.
func (r *Responder) backoffLocked() time.Duration {
	return backoff(r.cfg.MaxBackoff, r.rand.Float64())
}

// backoff maps u in [0, 1) to a delay in [1 ms, maxBackoff].
func backoff(maxBackoff time.Duration, u float64) time.Duration {
	return minBackoff + time.Duration(u*float64(maxBackoff-minBackoff))
}

// sendLoop sends queued replies when their backoff expires.
func (r *Responder) sendLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		r.mu.Lock()
		now := time.Now()
		var due []*pendingReply
		for len(r.pending) > 0 && !r.pending[0].due.After(now) {
			due = append(due, heap.Pop(&r.pending).(*pendingReply))
		}
		wait := time.Hour
		if len(r.pending) > 0 {
			wait = r.pending[0].due.Sub(now)
		}
		r.mu.Unlock()
		for _, p := range due {
			r.send(p)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			r.mu.Lock()
			r.pending = nil
			r.mu.Unlock()
			return
		case <-r.wake:
		case <-timer.C:
		}
	}
}

func (r *Responder) send(p *pendingReply) {
	r.mu.Lock()
	r.msgNumber++
	p.match.InstanceID, p.match.MessageNumber = r.instanceID, r.msgNumber
	r.mu.Unlock()
	b, err := p.match.Marshal()
	if err != nil {
		r.rlog.Warn("build", "build probe match", "err", err)
		return
	}
	if _, err := p.conn.WriteToUDPAddrPort(b, p.dst); err != nil {
		r.rlog.Debug("send "+p.dst.Addr().String(), "send probe match", "to", p.dst, "err", err)
		return
	}
	r.m.MatchesSent.Inc()
}

// pendingReply is a ProbeMatch waiting for its backoff.
type pendingReply struct {
	due   time.Time
	conn  *net.UDPConn
	dst   netip.AddrPort
	match *ProbeMatch
}

// replyQueue is a min-heap of pending replies by due time.
type replyQueue []*pendingReply

func (q replyQueue) Len() int           { return len(q) }
func (q replyQueue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q replyQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }

func (q *replyQueue) Push(x any) { *q = append(*q, x.(*pendingReply)) }

func (q *replyQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return x
}

// recentSet remembers keys for a time window, in an LRU of bounded size:
// when it is full the key recorded longest ago is dropped (the one closest
// to expiring anyway). Expired keys stay until they are evicted or seen
// again. Not safe for concurrent use.
type recentSet struct {
	window time.Duration
	keys   *simplelru.LRU[string, time.Time]
}

func newRecentSet(window time.Duration, max int) *recentSet {
	return &recentSet{window: window, keys: newLRU[string, time.Time](max)}
}

// seen reports whether key was seen within the window; if not, it records
// key as seen at now.
func (s *recentSet) seen(key string, now time.Time) bool {
	if t, ok := s.keys.Peek(key); ok && now.Sub(t) < s.window {
		return true
	}
	s.keys.Add(key, now)
	return false
}
