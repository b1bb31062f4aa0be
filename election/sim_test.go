package election

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"github.com/redleader-p2p/redleader/config"
	"github.com/redleader-p2p/redleader/internal/sublisten"
)

// Scale simulations, in two parts, because 1,000 memberlist instances do
// not fit on a 2-core test machine (their join alone is O(n²) messages and
// took over 5 minutes here):
//
//   - BenchmarkElectionSim1000: 1,000 real election.Nodes (real Raft with
//     bolt stores for the voters and standbys, real cluster RPC over HTTP,
//     real state pulls) on in-memory pipes that count what every host
//     writes. Gossip is an ideal shared member table: a head a node
//     publishes reaches every other node simGossipDelay later, all at once
//     (the worst case for pull bursts). It counts head publications.
//   - BenchmarkGossipSim: real memberlist pools on an in-memory transport
//     that counts each member's bytes, with the agent's metadata layout
//     (peer/meta.go), for the steady gossip rate and the cost of one head
//     (metadata) update, scaled to 1,000 members by memberlist's
//     retransmit limit.

const (
	simSubnet     = "10.99.0.0/16" // memberlist label, as the agent sets it
	simGossipPort = 7946
	simPeerPort   = 7381
	// simPacketQueue is each member's receive queue; a full queue drops
	// the datagram, as a full UDP socket buffer does.
	simPacketQueue = 512
	// simGossipDelay is how long a head takes to reach everyone through
	// memberlist on a 1,000-member LAN (about log₃(1000) gossip rounds of
	// 200 ms).
	simGossipDelay = 1300 * time.Millisecond
)

var errSimUnreachable = errors.New("sim: no such host")

// simNet is the in-memory network: hosts by IP.
type simNet struct {
	mu    sync.RWMutex
	hosts map[string]*simHost

	headUpdates atomic.Int64 // heads published (SetHead calls)
}

func (s *simNet) lookup(addr string) *simHost {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.hosts[host]
}

// simHost is one simulated machine: its gossip endpoint, its peer port and
// what it wrote to the wire.
type simHost struct {
	i    int
	id   string
	ip   net.IP
	net  *simNet
	done chan struct{}

	packets chan *memberlist.Packet
	streams chan net.Conn
	raftLn  *sublisten.Listener // Raft instances take it through Sub, as on the peer port
	rpcLn   *sublisten.Listener

	gossipBytes   atomic.Int64 // UDP payloads and TCP stream bytes memberlist wrote
	gossipPackets atomic.Int64
	gossipDrops   atomic.Int64
	rpcServed     atomic.Int64 // bytes this host wrote as an RPC server
	pullsServed   atomic.Int64 // GET /rpc/state requests this host received
	raftBytes     atomic.Int64 // bytes this host wrote on Raft connections

	pool *simPool
	node *Node
}

func newSimHost(n *simNet, i int) *simHost {
	ip := net.IPv4(10, 99, byte(i>>8), byte(i))
	h := &simHost{
		i: i, id: uuid.NewString(), ip: ip, net: n, done: make(chan struct{}),
		packets: make(chan *memberlist.Packet, simPacketQueue),
		streams: make(chan net.Conn, 16),
	}
	h.raftLn = sublisten.New(&net.TCPAddr{IP: ip, Port: simPeerPort}, 64, nil)
	h.rpcLn = sublisten.New(&net.TCPAddr{IP: ip, Port: simPeerPort}, 64, nil)
	return h
}

// simGossip is a host's memberlist transport.
type simGossip struct{ h *simHost }

func (g simGossip) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return g.h.ip, simGossipPort, nil
}

func (g simGossip) WriteTo(b []byte, addr string) (time.Time, error) {
	dst := g.h.net.lookup(addr)
	if dst == nil {
		return time.Time{}, fmt.Errorf("%w: %s", errSimUnreachable, addr)
	}
	g.h.gossipBytes.Add(int64(len(b)))
	g.h.gossipPackets.Add(1)
	now := time.Now()
	select {
	case dst.packets <- &memberlist.Packet{Buf: b, From: &net.UDPAddr{IP: g.h.ip, Port: simGossipPort}, Timestamp: now}:
	default:
		g.h.gossipDrops.Add(1)
	}
	return now, nil
}

func (g simGossip) PacketCh() <-chan *memberlist.Packet { return g.h.packets }
func (g simGossip) StreamCh() <-chan net.Conn           { return g.h.streams }
func (g simGossip) Shutdown() error                     { return nil }

func (g simGossip) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	dst := g.h.net.lookup(addr)
	if dst == nil {
		return nil, fmt.Errorf("%w: %s", errSimUnreachable, addr)
	}
	c1, c2 := net.Pipe()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case dst.streams <- &countConn{Conn: c2, written: &dst.gossipBytes}:
		return &countConn{Conn: c1, written: &g.h.gossipBytes}, nil
	case <-dst.done:
	case <-t.C:
	}
	c1.Close()
	c2.Close()
	return nil, fmt.Errorf("%w: %s refused the stream", errSimUnreachable, addr)
}

// simPeer is a host's election transport (its peer port).
type simPeer struct{ h *simHost }

func (p simPeer) RaftListener() net.Listener { return p.h.raftLn.Sub() }
func (p simPeer) RPCListener() net.Listener  { return p.h.rpcLn }
func (p simPeer) Advertise() net.Addr        { return p.h.raftLn.Addr() }

func (p simPeer) Dial(ctx context.Context, addr string, rpc bool) (net.Conn, error) {
	dst := p.h.net.lookup(addr)
	if dst == nil {
		return nil, fmt.Errorf("%w: %s", errSimUnreachable, addr)
	}
	c1, c2 := net.Pipe()
	client := &countConn{Conn: c1, written: &p.h.raftBytes}
	server := &countConn{Conn: c2, written: &dst.raftBytes}
	ln := dst.raftLn
	if rpc {
		client = &countConn{Conn: c1, written: new(atomic.Int64), pulls: &dst.pullsServed}
		server = &countConn{Conn: c2, written: &dst.rpcServed}
		ln = dst.rpcLn
	}
	if err := ln.Deliver(ctx, server); err != nil {
		c1.Close()
		c2.Close()
		return nil, fmt.Errorf("%w: %s refused the connection: %w", errSimUnreachable, addr, err)
	}
	return client, nil
}

// countConn counts the bytes written through it and, on the client side of
// RPC connections, the state pulls it sends (net/http writes each request's
// head in one Write, starting with the request line).
type countConn struct {
	net.Conn
	written *atomic.Int64
	pulls   *atomic.Int64
}

var pullRequestLine = []byte("GET /rpc/state ")

func (c *countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	if c.pulls != nil && bytes.HasPrefix(p, pullRequestLine) {
		c.pulls.Add(1)
	}
	return n, err
}

// simMeta is the agent's gossip metadata (peer/meta.go, version 1): same
// fields, same layout, so the same size on the wire.
type simMeta struct {
	Priority  Priority
	Version   uint8
	Progress  uint64
	Boot      time.Time
	PeerPort  uint16
	Name      string
	Location  string
	Subnet    string
	Class     uint8
	Role      uint8
	Index     uint64
	ClusterID string
}

func (m simMeta) encode() []byte {
	b := []byte{1, 0, byte(m.Priority), m.Version}
	b = binary.BigEndian.AppendUint64(b, m.Progress)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Boot.UnixMilli()))
	b = binary.BigEndian.AppendUint16(b, m.PeerPort)
	for _, s := range []string{m.Name, m.Location, m.Subnet} {
		b = append(append(b, byte(len(s))), s...)
	}
	b = append(b, m.Class, m.Role)
	b = binary.BigEndian.AppendUint64(b, m.Index)
	return append(append(b, byte(len(m.ClusterID))), m.ClusterID...)
}

func decodeSimMeta(b []byte) (simMeta, error) {
	const fixed = 22
	if len(b) < fixed {
		return simMeta{}, fmt.Errorf("sim meta: %d bytes", len(b))
	}
	m := simMeta{Priority: Priority(b[2]), Version: b[3], Progress: binary.BigEndian.Uint64(b[4:]),
		Boot: time.UnixMilli(int64(binary.BigEndian.Uint64(b[12:]))), PeerPort: binary.BigEndian.Uint16(b[20:])}
	rest := b[fixed:]
	str := func() string {
		if len(rest) < 1 || len(rest) < 1+int(rest[0]) {
			rest = nil
			return ""
		}
		s := string(rest[1 : 1+rest[0]])
		rest = rest[1+rest[0]:]
		return s
	}
	m.Name, m.Location, m.Subnet = str(), str(), str()
	if len(rest) < 10 {
		return simMeta{}, errors.New("sim meta: truncated head")
	}
	m.Class, m.Role, m.Index = rest[0], rest[1], binary.BigEndian.Uint64(rest[2:])
	rest = rest[10:]
	m.ClusterID = str()
	return m, nil
}

// simPool is a host's gossip pool in BenchmarkGossipSim: memberlist's
// delegates, like peer's pool.
type simPool struct {
	h    *simHost
	ml   *memberlist.Memberlist
	kick chan struct{}

	mu      sync.Mutex
	meta    simMeta
	members map[string]Member
}

func (p *simPool) NodeMeta(limit int) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.meta.encode()
	if len(b) > limit {
		return nil
	}
	return b
}

func (p *simPool) NotifyMsg([]byte)                           {}
func (p *simPool) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (p *simPool) LocalState(join bool) []byte                { return nil }
func (p *simPool) MergeRemoteState(buf []byte, join bool)     {}

func (p *simPool) NotifyJoin(n *memberlist.Node)   { p.put(n, StatusAlive, true) }
func (p *simPool) NotifyUpdate(n *memberlist.Node) { p.put(n, StatusAlive, false) }
func (p *simPool) NotifyLeave(n *memberlist.Node)  { p.put(n, StatusDead, true) }

func (p *simPool) put(n *memberlist.Node, status MemberStatus, since bool) {
	meta, err := decodeSimMeta(n.Meta)
	if err != nil {
		return
	}
	now := time.Now()
	m := Member{
		Node: n.Name, RaftAddr: net.JoinHostPort(n.Addr.String(), fmt.Sprint(meta.PeerPort)),
		Status: status, Since: now,
		Head:     Head{ClusterID: meta.ClusterID, Index: meta.Index, Role: Role(meta.Role)},
		Priority: meta.Priority, Version: int(meta.Version), Progress: meta.Progress,
		Uptime: time.Since(meta.Boot), Class: MachineClass(meta.Class),
	}
	p.mu.Lock()
	if old, ok := p.members[m.Node]; ok && !since {
		m.Since = old.Since
	}
	p.members[m.Node] = m
	p.mu.Unlock()
}

// size counts the members the pool lists.
func (p *simPool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.members)
}

// setIndex publishes a new head index, as the agent's SetHead does.
func (p *simPool) setIndex(i uint64) {
	p.mu.Lock()
	p.meta.Index = i
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *simPool) metaLoop() {
	for {
		select {
		case <-p.h.done:
			return
		case <-p.kick:
		}
		_ = p.ml.UpdateNode(time.Second)
	}
}

// simTable is the ideal gossip of BenchmarkElectionSim1000: one member
// table that every node reads. A head a node publishes reaches all readers
// simGossipDelay later, at once. Members returns a shared snapshot, rebuilt
// only after a change (the election never modifies it).
type simTable struct {
	net  *simNet
	done chan struct{}

	mu      sync.Mutex
	members map[string]Member
	snap    []Member
}

func (t *simTable) add(m Member) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.members[m.Node] = m
	t.snap = nil
}

func (t *simTable) snapshot() []Member {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.snap == nil {
		t.snap = make([]Member, 0, len(t.members))
		for _, m := range t.members {
			t.snap = append(t.snap, m)
		}
		slices.SortFunc(t.snap, func(a, b Member) int { return strings.Compare(a.Node, b.Node) })
	}
	return t.snap
}

func (t *simTable) setHead(node string, h Head) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.members[node]
	m.Head = h
	t.members[node] = m
	t.snap = nil
}

// simView is one node's Membership.
type simView struct {
	t    *simTable
	node string
}

func (v simView) Members() []Member { return v.t.snapshot() }

func (v simView) SetHead(h Head) {
	v.t.net.headUpdates.Add(1)
	time.AfterFunc(simGossipDelay, func() {
		select {
		case <-v.t.done:
		default:
			v.t.setHead(v.node, h)
		}
	})
}

// simTotals is a snapshot of the counters of every host.
type simTotals struct {
	at                                 time.Time
	gossipBytes, gossipPackets, drops  int64
	raftBytes, headUpdates             int64
	pulls, served                      map[string]int64 // by host ID, Raft members only
	raftMembers                        []string         // voters and standbys then, leader first
	leader                             string
	applied                            uint64
	stateBytes                         int
	voters, standbys                   int
	allGossipBytes, allPulls, allServe int64
}

type sim struct {
	root  string // data directories
	table *simTable
	net   *simNet
	hosts []*simHost
	wg    sync.WaitGroup // metaLoops

	closeOnce sync.Once
}

func (s *sim) totals() simTotals {
	t := simTotals{at: time.Now(), headUpdates: s.net.headUpdates.Load(), pulls: map[string]int64{}, served: map[string]int64{}}
	for _, h := range s.hosts {
		t.gossipBytes += h.gossipBytes.Load()
		t.gossipPackets += h.gossipPackets.Load()
		t.drops += h.gossipDrops.Load()
		t.raftBytes += h.raftBytes.Load()
		t.allPulls += h.pullsServed.Load()
		t.allServe += h.rpcServed.Load()
		if h.node == nil {
			continue
		}
		r := h.node.raftNode()
		if r == nil {
			continue
		}
		t.pulls[h.id] = h.pullsServed.Load()
		t.served[h.id] = h.rpcServed.Load()
		if r.raft.State() == raft.Leader {
			t.leader = h.id
			t.raftMembers = append([]string{h.id}, t.raftMembers...)
			t.applied = r.fsm.index()
			var buf bytes.Buffer
			if r.fsm.WriteState(&buf) == nil {
				t.stateBytes = buf.Len()
			}
			for _, sv := range r.configuration().Servers {
				if sv.Suffrage == raft.Voter {
					t.voters++
				} else {
					t.standbys++
				}
			}
		} else {
			t.raftMembers = append(t.raftMembers, h.id)
		}
	}
	return t
}

// agreed reports whether every node reports the same confirmed Red Leader
// and epoch and exactly one acts as Red Leader (peer's agreedRedLeader).
func (s *sim) agreed() bool {
	var first RedLeader
	acting := 0
	for i, h := range s.hosts {
		st := h.node.Status()
		if !st.Seat.Confirmed() {
			return false
		}
		if i == 0 {
			first = st.Seat
		} else if st.Seat.Node != first.Node || st.Seat.Epoch != first.Epoch {
			return false
		}
		if st.RedLeader {
			acting++
		}
	}
	return acting == 1
}

// describe summarises what the nodes report, for failures.
func (s *sim) describe() string {
	seats := map[string]int{}
	raftStates := map[string]int{}
	clusters := map[string]int{}
	acting := 0
	for _, h := range s.hosts {
		if h.node == nil {
			continue
		}
		st := h.node.Status()
		seats[fmt.Sprintf("%.8s/%d/confirmed=%v/index=%d", st.Seat.Node, st.Seat.Epoch, st.Seat.Confirmed(), h.node.State().Index)]++
		raftStates[st.Raft.State]++
		clusters[fmt.Sprintf("%.8s", st.Raft.ClusterID)]++
		if st.RedLeader {
			acting++
		}
	}
	return fmt.Sprintf("seats %v; raft %v; clusters %v; acting Red Leaders %d", seats, raftStates, clusters, acting)
}

// caughtUp counts the nodes whose state has reached index.
func (s *sim) caughtUp(index uint64) int {
	n := 0
	for _, h := range s.hosts {
		if h.node.State().Index >= index {
			n++
		}
	}
	return n
}

func (s *sim) waitFor(b *testing.B, timeout time.Duration, what string, cond func() bool) time.Time {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("sim: timed out after %v waiting for %s; %s", timeout, what, s.describe())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Now()
}

func (s *sim) close() { s.closeOnce.Do(s.shutdown) }

func (s *sim) shutdown() {
	var wg sync.WaitGroup
	for _, h := range s.hosts {
		if h.node != nil {
			wg.Go(func() { _ = h.node.Close() })
		}
	}
	wg.Wait()
	close(s.table.done)
	for _, h := range s.hosts {
		close(h.done)
		if h.pool != nil && h.pool.ml != nil {
			wg.Go(func() { _ = h.pool.ml.Shutdown() })
		}
		h.raftLn.Close()
		h.rpcLn.Close()
	}
	wg.Wait()
	s.wg.Wait()
}

// newSim creates n hosts. With pools, each runs a memberlist pool (not
// joined yet); without, they share the ideal gossip table.
func newSim(b *testing.B, n int, pools bool) *sim {
	b.Helper()
	s := &sim{net: &simNet{hosts: map[string]*simHost{}}, root: b.TempDir()}
	s.table = &simTable{net: s.net, done: make(chan struct{}), members: map[string]Member{}}
	b.Cleanup(s.close) // before TempDir's own cleanup: cleanups run last first
	boot := time.Now().Add(-time.Hour)
	for i := range n {
		h := newSimHost(s.net, i)
		s.net.mu.Lock()
		s.net.hosts[h.ip.String()] = h
		s.net.mu.Unlock()
		s.hosts = append(s.hosts, h)
		hboot := boot.Add(-time.Duration(i) * time.Second)
		if !pools {
			s.table.add(Member{Node: h.id, RaftAddr: h.raftLn.Addr().String(), Status: StatusAlive, Since: boot,
				Version: 2, Uptime: time.Since(hboot)})
			continue
		}
		p := &simPool{h: h, kick: make(chan struct{}, 1), members: map[string]Member{}, meta: simMeta{
			Version: 2, Boot: hboot, PeerPort: simPeerPort, Name: fmt.Sprintf("pc-%04d", i), Subnet: simSubnet,
		}}
		h.pool = p
		mc := memberlist.DefaultLANConfig()
		mc.Name = h.id
		mc.Label = simSubnet
		mc.Transport = simGossip{h}
		mc.Delegate = p
		mc.Events = p
		mc.DeadNodeReclaimTime = 30 * time.Second
		mc.LogOutput = io.Discard
		ml, err := memberlist.Create(mc)
		if err != nil {
			b.Fatalf("memberlist %d: %v", i, err)
		}
		p.ml = ml
		s.wg.Go(p.metaLoop)
	}
	return s
}

// join makes every host join host 0, a few at a time, and waits until every
// pool lists every host.
func (s *sim) join(b *testing.B) {
	b.Helper()
	seed := []string{net.JoinHostPort(s.hosts[0].ip.String(), fmt.Sprint(simGossipPort))}
	work := make(chan *simHost)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for h := range work {
				if _, err := h.pool.ml.Join(seed); err != nil {
					b.Errorf("join %d: %v", h.i, err)
				}
			}
		})
	}
	for _, h := range s.hosts[1:] {
		work <- h
	}
	close(work)
	wg.Wait()
	s.waitFor(b, 2*time.Minute, "every pool to list every host", func() bool {
		for _, h := range s.hosts {
			if h.pool.size() != len(s.hosts) {
				return false
			}
		}
		return true
	})
}

// start starts an election Node on every host with the product's default
// timings.
func (s *sim) start(b *testing.B) {
	b.Helper()
	e := config.Default().Election
	for _, h := range s.hosts {
		n, err := New(Config{
			Node: h.id, DataDir: filepath.Join(s.root, fmt.Sprint(h.i)), Voter: true, Class: ClassDesktop,
			RaftMultiplier: e.RaftMultiplier, CheckinInterval: e.CheckinInterval, CheckinTimeout: e.CheckinTimeout,
			ConfirmTimeout: e.ConfirmTimeout, NLMTTL: e.NLMTTL, DeadVoterGrace: e.DeadVoterGrace,
			QuorumLossTimeout: e.QuorumLossTimeout, Settle: e.BootstrapSettle, Stabilization: e.VoterStabilization,
			InitialPolicy: Policy{LeaderRate: "0", PeerRate: "256kbit", LANRate: "0"},
		}, simView{s.table, h.id}, simPeer{h})
		if err != nil {
			b.Fatalf("node %d: %v", h.i, err)
		}
		if err := n.Start(context.Background()); err != nil {
			b.Fatalf("start node %d: %v", h.i, err)
		}
		h.node = n
	}
}

// fullState is the size of a state transfer once the event log and the
// dedup window are full, as they are on any subnet that has run a while.
func fullState(b *testing.B) int {
	b.Helper()
	f := NewFSM(FSMOptions{})
	now := time.Now()
	apply := func(i uint64, c Command) {
		data, err := EncodeCommand(c)
		if err != nil {
			b.Fatal(err)
		}
		f.Apply(&raft.Log{Index: i, Type: raft.LogCommand, Data: data})
	}
	apply(1, NewInitCommand(uuid.NewString(), now, uuid.NewString(), make([]byte, SecretSize), Policy{Version: 1, PeerRate: "256kbit"}))
	for i := range uint64(DedupWindow + EventLogSize) {
		apply(i+2, NewNoteCommand(uuid.NewString(), now, uuid.NewString(), SeverityInfo, "Red Leader appointed: fresh choice (highest uptime among equals)"))
	}
	var buf bytes.Buffer
	if err := f.WriteState(&buf); err != nil {
		b.Fatal(err)
	}
	return buf.Len()
}

// voterLoad is the pull load on the Raft members between two snapshots.
type voterLoad struct {
	pulls, maxPulls         int64   // all Raft members; the busiest one
	maxBytes                int64   // bytes served by the busiest one
	busiest                 string  // "leader" or "follower"
	perSec, bytesPerSec     float64 // on the busiest Raft member
	gossipBps, gossipPps    float64 // per member
	headUpdatesPerSec       float64 // metadata re-publications, all members
	raftBps                 float64 // all Raft traffic
	secs                    float64
	memberPulls, allServedB int64 // everything served over RPC (incl. check-ins)
}

func load(from, to simTotals, members int) voterLoad {
	l := voterLoad{secs: to.at.Sub(from.at).Seconds()}
	for _, id := range to.raftMembers {
		p := to.pulls[id] - from.pulls[id]
		bs := to.served[id] - from.served[id]
		l.pulls += p
		if p > l.maxPulls || (p == l.maxPulls && bs > l.maxBytes) {
			l.maxPulls, l.maxBytes, l.busiest = p, bs, "follower"
			if id == to.leader {
				l.busiest = "leader"
			}
		}
	}
	l.memberPulls = to.allPulls - from.allPulls
	l.allServedB = to.allServe - from.allServe
	l.perSec = float64(l.maxPulls) / l.secs
	l.bytesPerSec = float64(l.maxBytes) / l.secs
	l.gossipBps = float64(to.gossipBytes-from.gossipBytes) / l.secs / float64(members)
	l.gossipPps = float64(to.gossipPackets-from.gossipPackets) / l.secs / float64(members)
	l.headUpdatesPerSec = float64(to.headUpdates-from.headUpdates) / l.secs
	l.raftBps = float64(to.raftBytes-from.raftBytes) / l.secs
	return l
}

// BenchmarkElectionSim1000 runs the election of 1,000 members (see the top
// of this file) with the product's default timings and reports:
//
//   - s_to_leader: from starting every Node until all 1,000 report the same
//     confirmed Red Leader and epoch and exactly one acts as Red Leader;
//   - s_to_voters: until the Raft group has 5 voters and 2 standbys;
//   - pulls/s/voter, served_B/s/voter and head_updates/s: steady state
//     (10 s without a commit); the voter figures are the busiest Raft
//     member's, served bytes include the Red Leader's check-ins;
//   - s_commit_to_all: one `policy set` committed through a member, until
//     all 1,000 hold it;
//   - commit_pulls/busiest_voter, commit_pulls/s/busiest_voter,
//     commit_served_B/s/busiest_voter and commit_head_updates: over the
//     5 s after that commit;
//   - state_B: the state transfer now; full_state_B: with the event log and
//     the dedup window full (a subnet that has run a while), which every
//     pull costs from then on.
func BenchmarkElectionSim1000(b *testing.B) {
	if testing.Short() {
		b.Skip("simulates 1,000 members; skipped with -short")
	}
	for range b.N {
		runSim(b, 1000)
	}
}

func runSim(b *testing.B, n int) {
	b.Helper()
	s := newSim(b, n, false)
	start := s.totals()
	s.start(b)
	agreedAt := s.waitFor(b, 90*time.Second, "one agreed Red Leader", s.agreed)
	b.ReportMetric(agreedAt.Sub(start.at).Seconds(), "s_to_leader")
	formedAt := s.waitFor(b, 90*time.Second, "5 voters and 2 standbys", func() bool {
		t := s.totals()
		return t.voters == 5 && t.standbys == 2
	})
	formed := s.totals()
	startup := load(start, formed, n)
	b.ReportMetric(formedAt.Sub(start.at).Seconds(), "s_to_voters")
	b.Logf("%d members: agreed Red Leader after %v; 5 voters and 2 standbys after %v; meanwhile %d heads published, %d pulls (busiest Raft member, the %s: %d)",
		n, agreedAt.Sub(start.at).Round(time.Millisecond), formedAt.Sub(start.at).Round(time.Millisecond),
		formed.headUpdates-start.headUpdates, startup.pulls, startup.busiest, startup.maxPulls)

	// Steady state: every member has the leader's state; nothing commits.
	s.waitFor(b, time.Minute, "every member to hold the latest state", func() bool {
		return s.caughtUp(s.totals().applied) == n
	})
	time.Sleep(2 * simGossipDelay)
	quiet := s.totals()
	time.Sleep(10 * time.Second)
	steadyEnd := s.totals()
	steady := load(quiet, steadyEnd, n)
	if steadyEnd.applied != quiet.applied {
		b.Logf("note: %d commits during the steady window", steadyEnd.applied-quiet.applied)
	}
	b.ReportMetric(steady.perSec, "pulls/s/voter")
	b.ReportMetric(steady.bytesPerSec, "served_B/s/voter")
	b.ReportMetric(steady.headUpdatesPerSec, "head_updates/s")
	b.Logf("steady: %d pulls in all; busiest Raft member %.1f pulls/s, %.0f B/s served; %.1f heads published/s; Raft %.0f B/s in all",
		steady.pulls, steady.perSec, steady.bytesPerSec, steady.headUpdatesPerSec, steady.raftBps)

	// One commit, as `policy set` on a member does.
	var proposer *simHost
	for _, h := range s.hosts {
		if h.node.raftNode() == nil {
			proposer = h
			break
		}
	}
	before := s.totals()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err := proposer.node.Apply(ctx, NewSetPolicyCommand(uuid.NewString(), time.Now(),
		Policy{LeaderRate: "20Mbit", PeerRate: "128kbit", LANRate: "0"}, 0))
	cancel()
	if err != nil {
		b.Fatalf("policy set: %v", err)
	}
	target := s.totals().applied
	allAt := s.waitFor(b, time.Minute, "every member to hold the committed policy", func() bool {
		return s.caughtUp(target) == n
	})
	if d := time.Until(before.at.Add(5 * time.Second)); d > 0 {
		time.Sleep(d)
	}
	after := s.totals()
	commit := load(before, after, n)
	full := fullState(b)
	b.ReportMetric(allAt.Sub(before.at).Seconds(), "s_commit_to_all")
	b.ReportMetric(float64(commit.maxPulls), "commit_pulls/busiest_voter")
	b.ReportMetric(commit.perSec, "commit_pulls/s/busiest_voter")
	b.ReportMetric(commit.bytesPerSec, "commit_served_B/s/busiest_voter")
	b.ReportMetric(float64(after.headUpdates-before.headUpdates), "commit_head_updates")
	b.ReportMetric(float64(after.stateBytes), "state_B")
	b.ReportMetric(float64(full), "full_state_B")
	b.ReportMetric(0, "ns/op")
	b.Logf("commit: all %d members hold it after %v; over %.1fs: %d pulls (%d on the busiest Raft member, the %s: %.0f pulls/s, %.0f B/s served), %d heads published; state %d B now, %d B when full",
		n, allAt.Sub(before.at).Round(time.Millisecond), commit.secs, commit.pulls, commit.maxPulls, commit.busiest,
		commit.perSec, commit.bytesPerSec, after.headUpdates-before.headUpdates, after.stateBytes, full)
}

// BenchmarkGossipSim runs 200 real memberlist pools (the agent's LAN
// configuration and metadata layout) on the counting in-memory transport
// and reports:
//
//   - gossip_B/s/member and gossip_pkts/s/member: steady state over 10 s,
//     pool formed and quiet (no push/pull falls in so short a window at
//     this size: push/pull is every 60 s × ⌈log₂ n − 5⌉ per member);
//   - head_update_B/member: what one metadata (head) update costs each
//     member on average while it spreads (every member relays it up to
//     4 × ⌈log₁₀(n+1)⌉ times); head_update_B/member@1000 scales it to
//     1,000 members by that limit (16 instead of 12 relays).
func BenchmarkGossipSim(b *testing.B) {
	if testing.Short() {
		b.Skip("simulates 200 gossip members; skipped with -short")
	}
	const n, updates = 200, 20
	for range b.N {
		s := newSim(b, n, true)
		t0 := time.Now()
		s.join(b)
		b.Logf("%d pools formed in %v", n, time.Since(t0).Round(time.Millisecond))
		time.Sleep(5 * time.Second) // the join broadcasts drain
		quiet := s.totals()
		time.Sleep(10 * time.Second)
		steadyEnd := s.totals()
		steady := load(quiet, steadyEnd, n)
		for i := range updates {
			s.hosts[i*n/updates].pool.setIndex(uint64(i + 1))
		}
		time.Sleep(10 * time.Second)
		end := s.totals()
		spread := load(steadyEnd, end, n)
		perUpdate := (spread.gossipBps - steady.gossipBps) * spread.secs / updates
		b.ReportMetric(steady.gossipBps, "gossip_B/s/member")
		b.ReportMetric(steady.gossipPps, "gossip_pkts/s/member")
		b.ReportMetric(perUpdate, "head_update_B/member")
		b.ReportMetric(perUpdate*16/12, "head_update_B/member@1000")
		b.ReportMetric(0, "ns/op")
		b.Logf("steady %.0f B/s and %.2f datagrams/s per member; one head update costs %.0f B per member (%.0f at 1,000 members); %d datagrams dropped",
			steady.gossipBps, steady.gossipPps, perUpdate, perUpdate*16/12, end.drops)
		s.close()
	}
}
