package peer

import (
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/redleader-p2p/redleader/internal/logbridge"
	"github.com/redleader-p2p/redleader/internal/tick"
)

// Member statuses as the API reports them.
const (
	StatusAlive   = "alive"
	StatusSuspect = "suspect"
	StatusLeft    = "left"
	StatusDead    = "dead"
)

// Member is one agent of the subnet as this agent sees it.
type Member struct {
	Node   string
	Addr   netip.AddrPort // gossip address
	Status string
	Meta   Meta
	Since  time.Time // when it entered Status (alive since, left or dead since)
}

// poolConfig configures one gossip pool (one per subnet the agent is on).
type poolConfig struct {
	Node      string
	Subnet    string // memberlist Label: pools of other subnets are ignored
	BindAddr  string
	BindPort  int
	Advertise netip.Addr
	Keys      [][]byte // cluster keys: the first encrypts, all decrypt; none: plain
	Meta      func() []byte
	Retention time.Duration
	Log       *slog.Logger
	// StreamRefused (if not nil) counts inbound gossip streams closed
	// over the caps, by reason (gossipstreams.go).
	StreamRefused func(reason string)
}

// pool is one memberlist pool. Its member table is built from memberlist's
// event callbacks (which run under memberlist's lock, so copying the node
// there is safe, unlike reading the pointers Members() returns) and keeps
// members that left or died for cfg.Retention.
type pool struct {
	cfg poolConfig
	ml  *memberlist.Memberlist
	tr  *joinTransport // joins can be cancelled (jointransport.go)
	// addr is the advertised address, read once: memberlist rewrites its
	// local node on every metadata update, so reading it later races.
	addr netip.AddrPort

	mu      sync.Mutex
	members map[string]Member
}

func newPool(cfg poolConfig) (*pool, error) {
	p := &pool{cfg: cfg, members: map[string]Member{}}
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Node
	mc.Label = cfg.Subnet
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertisePort = cfg.BindPort
	if cfg.Advertise.IsValid() {
		mc.AdvertiseAddr = cfg.Advertise.String()
	}
	if len(cfg.Keys) > 0 {
		// memberlist's keyring: the primary key encrypts, every key is
		// tried on what arrives (key rotation without a flag day).
		kr, err := memberlist.NewKeyring(cfg.Keys, cfg.Keys[0])
		if err != nil {
			return nil, fmt.Errorf("gossip keyring: %w", err)
		}
		mc.Keyring = kr
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	mc.DeadNodeReclaimTime = 30 * time.Second // a rebooted or re-addressed node may come back at once
	// No LZW compression of what this node sends: memberlist compresses
	// every UDP message, each ping and ack included, with a fresh 64 KiB
	// table, which made it the largest allocator of an idle agent (13 MB
	// in 90 s). Gossip messages are a few hundred bytes on a LAN; received
	// compressed messages (older agents) are still read.
	mc.EnableCompression = false
	mc.Delegate = (*poolDelegate)(p)
	mc.Events = (*poolEvents)(p)
	mc.Logger = logbridge.StdLogger(cfg.Log.With("component", "memberlist"))
	tr, err := newJoinTransport(mc, cfg.Log, cfg.StreamRefused)
	if err != nil {
		return nil, fmt.Errorf("start gossip on %s:%d: %w", cfg.BindAddr, cfg.BindPort, err)
	}
	mc.Transport = tr
	// memberlist's probe and gossip tickers start as Create returns, on
	// their own phase. Created on one of this process's ticks (package
	// tick), they fire with the agent's own loops, 0.5-4 ms after them:
	// with an idle agent's timer slack (internal/procs) one wake-up of the
	// process serves them all. The wait, at most a gossip interval (under
	// the agent's lock), happens at start and on a move to another subnet.
	time.Sleep(tick.Until(mc.GossipInterval))
	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = tr.Shutdown() // memberlist shuts down only a transport it made
		return nil, fmt.Errorf("start gossip on %s:%d: %w", cfg.BindAddr, cfg.BindPort, err)
	}
	p.ml, p.tr = ml, tr
	n := ml.LocalNode()
	ip, _ := netip.AddrFromSlice(n.Addr)
	p.addr = netip.AddrPortFrom(ip.Unmap(), n.Port)
	return p, nil
}

// Addr is this node's advertised gossip address.
func (p *pool) Addr() netip.AddrPort { return p.addr }

// Join contacts the given host:port addresses; it returns how many answered.
func (p *pool) Join(addrs []string) (int, error) {
	if len(addrs) == 0 {
		return 0, nil
	}
	return p.ml.Join(addrs)
}

// Known reports whether node is currently alive in the pool.
func (p *pool) Known(node string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.members[node].Status == StatusAlive
}

// NumMembers counts alive members, this node included.
func (p *pool) NumMembers() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, m := range p.members {
		if m.Status == StatusAlive {
			n++
		}
	}
	return n
}

// UpdateMeta re-publishes this node's metadata.
func (p *pool) UpdateMeta(timeout time.Duration) error { return p.ml.UpdateNode(timeout) }

// Leave tells the pool we are going (others see "left") and stops gossip.
func (p *pool) Leave(timeout time.Duration) error {
	err := p.ml.Leave(timeout)
	if serr := p.ml.Shutdown(); err == nil {
		err = serr
	}
	return err
}

// Members lists every member: alive ones, plus those that left or died
// within the retention period. Sorted by node ID.
func (p *pool) Members(now time.Time) []Member {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Member, 0, len(p.members))
	for id, m := range p.members {
		if m.Status != StatusAlive && now.Sub(m.Since) > p.cfg.Retention {
			delete(p.members, id)
			continue
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// toMember copies a memberlist node; call it only from event callbacks.
func toMember(n *memberlist.Node, log *slog.Logger) Member {
	ip, _ := netip.AddrFromSlice(n.Addr)
	m := Member{Node: n.Name, Addr: netip.AddrPortFrom(ip.Unmap(), n.Port), Status: StatusAlive}
	meta, err := decodeMeta(n.Meta)
	if err != nil {
		log.Debug("undecodable member metadata", "node", n.Name, "err", err)
	}
	m.Meta = meta
	return m
}

// poolDelegate gives memberlist our metadata; we use no user messages.
type poolDelegate pool

func (d *poolDelegate) NodeMeta(limit int) []byte {
	b := d.cfg.Meta()
	if len(b) > limit {
		return b[:0]
	}
	return b
}
func (d *poolDelegate) NotifyMsg([]byte)                           {}
func (d *poolDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *poolDelegate) LocalState(join bool) []byte                { return nil }
func (d *poolDelegate) MergeRemoteState(buf []byte, join bool)     {}

// poolEvents keeps the departed table. Callbacks must not block.
type poolEvents pool

// NotifyJoin records a member that is alive from now on.
func (e *poolEvents) NotifyJoin(n *memberlist.Node) {
	m := toMember(n, e.cfg.Log)
	m.Since = time.Now()
	e.put(m)
}

// NotifyUpdate records new metadata; "alive since" is kept.
func (e *poolEvents) NotifyUpdate(n *memberlist.Node) {
	m := toMember(n, e.cfg.Log)
	e.mu.Lock()
	m.Since = e.members[m.Node].Since
	e.mu.Unlock()
	if m.Since.IsZero() {
		m.Since = time.Now()
	}
	e.put(m)
}

func (e *poolEvents) NotifyLeave(n *memberlist.Node) {
	m := toMember(n, e.cfg.Log)
	m.Since = time.Now()
	switch {
	case m.Meta.Roaming:
		// It moved to another subnet: it is not ours any more, not "left".
		e.mu.Lock()
		delete(e.members, m.Node)
		e.mu.Unlock()
		return
	case m.Meta.Leaving:
		m.Status = StatusLeft
	default:
		m.Status = StatusDead
	}
	e.put(m)
}

func (e *poolEvents) put(m Member) {
	e.mu.Lock()
	e.members[m.Node] = m
	e.mu.Unlock()
}
