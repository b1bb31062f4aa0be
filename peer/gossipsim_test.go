package peer

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/memberlist"

	"github.com/redleader-p2p/redleader/internal/wait"
)

// The gossip cost simulation: real memberlist pools (the agent's pool
// delegates, member table and metadata encoding) on an in-memory transport
// that counts what every member writes. 1,000 memberlist instances do not
// fit on a 2-core test machine (their join alone is O(n²) messages and
// took over 5 minutes), so it runs 200 and scales the head-update cost to
// 1,000 by memberlist's retransmit limit. The election side of the same
// subnet is election's BenchmarkElectionSim1000.

const (
	gsimSubnet     = "10.99.0.0/16" // memberlist label, as the agent sets it
	gsimGossipPort = 7946
	gsimPeerPort   = 7381
	// gsimPacketQueue is each member's receive queue; a full queue drops
	// the datagram, as a full UDP socket buffer does.
	gsimPacketQueue = 512
)

var errGsimUnreachable = fmt.Errorf("gossip sim: no such host")

// gsimNet is the in-memory network: hosts by IP.
type gsimNet struct {
	mu    sync.RWMutex
	hosts map[string]*gsimHost
}

func (s *gsimNet) lookup(addr string) *gsimHost {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.hosts[host]
}

// gsimHost is one simulated machine: a memberlist transport that counts
// the bytes and datagrams its member writes, and the agent's pool on it.
type gsimHost struct {
	ip   net.IP
	net  *gsimNet
	done chan struct{}

	packets chan *memberlist.Packet
	streams chan net.Conn

	bytes   atomic.Int64 // UDP payloads and TCP stream bytes memberlist wrote
	dgrams  atomic.Int64
	dropped atomic.Int64

	pool   *pool
	metaMu sync.Mutex
	meta   Meta
}

func (h *gsimHost) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return h.ip, gsimGossipPort, nil
}

func (h *gsimHost) WriteTo(b []byte, addr string) (time.Time, error) {
	dst := h.net.lookup(addr)
	if dst == nil {
		return time.Time{}, fmt.Errorf("%w: %s", errGsimUnreachable, addr)
	}
	h.bytes.Add(int64(len(b)))
	h.dgrams.Add(1)
	now := time.Now()
	select {
	case dst.packets <- &memberlist.Packet{Buf: b, From: &net.UDPAddr{IP: h.ip, Port: gsimGossipPort}, Timestamp: now}:
	default:
		h.dropped.Add(1)
	}
	return now, nil
}

func (h *gsimHost) PacketCh() <-chan *memberlist.Packet { return h.packets }
func (h *gsimHost) StreamCh() <-chan net.Conn           { return h.streams }
func (h *gsimHost) Shutdown() error                     { return nil }

func (h *gsimHost) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	dst := h.net.lookup(addr)
	if dst == nil {
		return nil, fmt.Errorf("%w: %s", errGsimUnreachable, addr)
	}
	c1, c2 := net.Pipe()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case dst.streams <- &gsimConn{Conn: c2, written: &dst.bytes}:
		return &gsimConn{Conn: c1, written: &h.bytes}, nil
	case <-dst.done:
	case <-t.C:
	}
	c1.Close()
	c2.Close()
	return nil, fmt.Errorf("%w: %s refused the stream", errGsimUnreachable, addr)
}

// gsimConn counts the bytes written through it.
type gsimConn struct {
	net.Conn
	written *atomic.Int64
}

func (c *gsimConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

// setIndex publishes a new election head index, as the agent's SetHead
// and metaLoop do (memberlist's UpdateNode waits for the broadcast).
func (h *gsimHost) setIndex(i uint64) error {
	h.metaMu.Lock()
	h.meta.StateIndex = i
	h.metaMu.Unlock()
	return h.pool.UpdateMeta(time.Second)
}

// listed counts the members p's table holds, whatever their status.
func (p *pool) listed() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.members)
}

// memberMeta is the metadata p's member table holds for node.
func (p *pool) memberMeta(node string) Meta {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.members[node].Meta
}

// gsim is the whole simulated subnet.
type gsim struct {
	net       *gsimNet
	hosts     []*gsimHost
	closeOnce sync.Once
}

// newGossipSim starts n pools (not joined yet) with the agent's LAN
// configuration (newPool's, on the in-memory transport).
func newGossipSim(b *testing.B, n int) *gsim {
	b.Helper()
	s := &gsim{net: &gsimNet{hosts: map[string]*gsimHost{}}}
	b.Cleanup(s.close)
	boot := time.Now().Add(-time.Hour)
	quiet := slog.New(slog.DiscardHandler)
	for i := range n {
		h := &gsimHost{ip: net.IPv4(10, 99, byte(i>>8), byte(i)), net: s.net, done: make(chan struct{}),
			packets: make(chan *memberlist.Packet, gsimPacketQueue), streams: make(chan net.Conn, 16),
			meta: Meta{ProtoVersion: 2, Boot: boot.Add(-time.Duration(i) * time.Second), PeerPort: gsimPeerPort,
				Name: fmt.Sprintf("pc-%04d", i), Subnet: gsimSubnet}}
		s.net.mu.Lock()
		s.net.hosts[h.ip.String()] = h
		s.net.mu.Unlock()
		s.hosts = append(s.hosts, h)
		p := &pool{members: map[string]Member{}, cfg: poolConfig{Node: uuid.NewString(), Subnet: gsimSubnet,
			Retention: time.Minute, Log: quiet, Meta: func() []byte {
				h.metaMu.Lock()
				defer h.metaMu.Unlock()
				return h.meta.encode()
			}}}
		mc := memberlist.DefaultLANConfig()
		mc.Name = p.cfg.Node
		mc.Label = gsimSubnet
		mc.Transport = h
		mc.Delegate = (*poolDelegate)(p)
		mc.Events = (*poolEvents)(p)
		mc.DeadNodeReclaimTime = 30 * time.Second
		mc.LogOutput = io.Discard
		ml, err := memberlist.Create(mc)
		if err != nil {
			b.Fatalf("memberlist %d: %v", i, err)
		}
		p.ml = ml
		h.pool = p
	}
	return s
}

func (s *gsim) close() {
	s.closeOnce.Do(func() {
		var wg sync.WaitGroup
		for _, h := range s.hosts {
			close(h.done)
			if h.pool != nil && h.pool.ml != nil {
				wg.Go(func() { _ = h.pool.ml.Shutdown() })
			}
		}
		wg.Wait()
	})
}

// join makes every host join host 0, a few at a time, and waits until
// every pool lists every host (alive, or suspected dead by a pool that
// missed its probes: a loaded 2-core machine drops datagrams).
func (s *gsim) join(b *testing.B) {
	b.Helper()
	seed := []string{net.JoinHostPort(s.hosts[0].ip.String(), fmt.Sprint(gsimGossipPort))}
	work := make(chan *gsimHost)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for h := range work {
				if _, err := h.pool.Join(seed); err != nil {
					b.Errorf("join %v: %v", h.ip, err)
				}
			}
		})
	}
	for _, h := range s.hosts[1:] {
		work <- h
	}
	close(work)
	wg.Wait()
	wait.For(b, 2*time.Minute, "every pool to list every host", func() bool {
		for _, h := range s.hosts {
			if h.pool.listed() != len(s.hosts) {
				return false
			}
		}
		return true
	})
}

// gsimTotals is a snapshot of every host's counters.
type gsimTotals struct {
	at                   time.Time
	bytes, dgrams, drops int64
}

func (s *gsim) totals() gsimTotals {
	t := gsimTotals{at: time.Now()}
	for _, h := range s.hosts {
		t.bytes += h.bytes.Load()
		t.dgrams += h.dgrams.Load()
		t.drops += h.dropped.Load()
	}
	return t
}

// perMember is the bytes and datagrams per second per member between two
// snapshots, and the seconds between them.
func perMember(from, to gsimTotals, members int) (bps, pps, secs float64) {
	secs = to.at.Sub(from.at).Seconds()
	return float64(to.bytes-from.bytes) / secs / float64(members), float64(to.dgrams-from.dgrams) / secs / float64(members), secs
}

// BenchmarkGossipSim runs 200 real memberlist pools (the agent's LAN
// configuration, pool delegates and metadata encoding) on the counting
// in-memory transport and reports:
//
//   - gossip_B/s/member and gossip_pkts/s/member: steady state over 10 s,
//     pool formed and quiet (no push/pull falls in so short a window at
//     this size: push/pull is every 60 s × ⌈log₂ n − 5⌉ per member);
//   - head_update_B/member: what one metadata (election head) update costs
//     each member on average while it spreads (every member relays it up
//     to 4 × ⌈log₁₀(n+1)⌉ times); head_update_B/member@1000 scales it to
//     1,000 members by that limit (16 instead of 12 relays);
//   - head_update_unseen_frac: the share of (pool, update) pairs that
//     still lack the update at the end of the 10 s window (datagrams a
//     loaded machine dropped; push/pull repairs them much later).
func BenchmarkGossipSim(b *testing.B) {
	if testing.Short() {
		b.Skip("simulates 200 gossip members; skipped with -short")
	}
	const n, updates = 200, 20
	for range b.N {
		s := newGossipSim(b, n)
		t0 := time.Now()
		s.join(b)
		b.Logf("%d pools formed in %v", n, time.Since(t0).Round(time.Millisecond))
		time.Sleep(5 * time.Second) // the join broadcasts drain
		quiet := s.totals()
		time.Sleep(10 * time.Second)
		steadyEnd := s.totals()
		steadyBps, steadyPps, _ := perMember(quiet, steadyEnd, n)
		var wg sync.WaitGroup
		for i := range updates {
			h := s.hosts[i*n/updates]
			wg.Go(func() {
				// Like the agent's metaLoop, ignore UpdateNode's timeout: it
				// waits for the broadcast's last retransmit, well over 1 s here.
				_ = h.setIndex(uint64(i + 1))
			})
		}
		time.Sleep(10 * time.Second)
		wg.Wait()
		end := s.totals()
		unseen := 0 // (pool, update) pairs the update has not reached yet
		for _, h := range s.hosts {
			for i := range updates {
				if h.pool.memberMeta(s.hosts[i*n/updates].pool.cfg.Node).StateIndex != uint64(i+1) {
					unseen++
				}
			}
		}
		spreadBps, _, secs := perMember(steadyEnd, end, n)
		perUpdate := (spreadBps - steadyBps) * secs / updates
		b.ReportMetric(steadyBps, "gossip_B/s/member")
		b.ReportMetric(steadyPps, "gossip_pkts/s/member")
		b.ReportMetric(perUpdate, "head_update_B/member")
		b.ReportMetric(perUpdate*16/12, "head_update_B/member@1000")
		b.ReportMetric(float64(unseen)/float64(n*updates), "head_update_unseen_frac")
		b.ReportMetric(0, "ns/op")
		b.Logf("steady %.0f B/s and %.2f datagrams/s per member; one head update costs %.0f B per member (%.0f at 1,000 members); after 10 s, %d of %d (pool, update) pairs still without the update; %d datagrams dropped",
			steadyBps, steadyPps, perUpdate, perUpdate*16/12, unseen, n*updates, end.drops)
		s.close()
	}
}
