package election

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/redleader-p2p/redleader/internal/atomicfile"
	"github.com/redleader-p2p/redleader/internal/logbridge"
)

const (
	currentFile = "current"    // the cluster ID whose Raft state this node keeps
	cacheFile   = "state.last" // the last election state seen, for re-bootstrap
	raftDirName = "raft"
)

// raftNode is one Raft instance: this node in cluster clusterID.
type raftNode struct {
	clusterID string
	dir       string
	raft      *raft.Raft
	fsm       *FSM
	store     *raftboltdb.BoltStore
	trans     *raft.NetworkTransport
	layer     *streamLayer
	notify    chan bool     // Raft's leadership notifications (Config.NotifyCh)
	hb        *heartbeat    // the heartbeat timeout Raft runs with (heartbeat.go)
	pace      *pacer        // the leader's heartbeat rounds (heartbeat.go)
	stopped   chan struct{} // closed by shutdown
	stopOnce  sync.Once

	leadMu  sync.Mutex
	leading bool   // Raft's last notification: this node leads
	gen     uint64 // counts the notified gains of leadership
}

// leadership reports whether Raft last said this node leads, and which
// gain of leadership that was: a loss and a gain between two reads show
// as a new generation.
func (r *raftNode) leadership() (leading bool, gen uint64) {
	r.leadMu.Lock()
	defer r.leadMu.Unlock()
	return r.leading, r.gen
}

func (r *raftNode) setLeading(v bool) {
	r.leadMu.Lock()
	defer r.leadMu.Unlock()
	if v && !r.leading {
		r.gen++
	}
	r.leading = v
	r.pace.leadershipChanged()
}

// openRaft starts Raft for clusterID in DataDir/raft/<clusterID>. With
// bootstrap, the directory must be new: the node bootstraps a cluster of
// itself and, once leader, commits init carrying carry's durable settings.
func (n *Node) openRaft(clusterID string, bootstrap bool, carry *State) error {
	if _, err := uuid.Parse(clusterID); err != nil {
		return fmt.Errorf("bad cluster id %q", clusterID)
	}
	dir := filepath.Join(n.cfg.DataDir, raftDirName, clusterID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("raft dir: %w", err)
	}
	store, err := raftboltdb.New(raftboltdb.Options{
		Path: filepath.Join(dir, "raft.db"),
		BoltOptions: &bbolt.Options{
			Timeout:        time.Second, // a second agent on this data dir fails instead of hanging
			NoFreelistSync: true,
			FreelistType:   bbolt.FreelistMapType,
		},
	})
	if err != nil {
		return fmt.Errorf("open raft store: %w", err)
	}
	hlog := logbridge.HCLog(n.log.With("component", "raft", "cluster", clusterID))
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hlog)
	if err != nil {
		store.Close()
		return fmt.Errorf("raft snapshots: %w", err)
	}
	logs, err := raft.NewLogCache(512, store)
	if err != nil {
		store.Close()
		return fmt.Errorf("raft log cache: %w", err)
	}
	guard := &raftGuard{Listener: n.tr.RaftListener()}
	guard.allow = func(ip netip.Addr) bool { return n.raftPeerAllowed(guard.raft.Load(), clusterID, ip) }
	guard.closed = n.raftConnClosed
	guard.refused = func(remote net.Addr) {
		n.rlog.Warn("raft-refused", "raft: connection refused: not a server of the configuration nor the leader",
			"cluster", clusterID, "remote", remote.String())
	}
	layer := &streamLayer{Listener: guard, addr: n.tr.Advertise(), dial: n.tr.Dial}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: layer, MaxPool: 3, Timeout: 10 * time.Second, Logger: hlog,
	})
	rc := raft.DefaultConfig()
	m := time.Duration(n.cfg.RaftMultiplier)
	rc.LocalID = raft.ServerID(n.cfg.Node)
	// Raft starts with the fast heartbeat timeout (no leader known yet);
	// settleHeartbeat slows it once a leader is known (heartbeat.go).
	hb := heartbeat{slow: raftSlowHeartbeat * m, fast: raftFastHeartbeat * m, lead: raftLeaderHeartbeat * m,
		cur: raftFastHeartbeat * m, quick: true, since: time.Now()}
	rc.HeartbeatTimeout = hb.fast
	rc.ElectionTimeout = hb.fast
	rc.LeaderLeaseTimeout = raftLeaderLease * m
	// NB: idle followers also get an AppendEntries every CommitTimeout
	// (to learn the commit index); 50 ms (the default) made an idle leader
	// cost ~3% of a core. Entries still go out at once, and apply's barrier
	// carries each commit index to the followers right after the commit:
	// this only paces the idle loop, so 5 s spares an idle leader ~3
	// round trips a second.
	rc.CommitTimeout = 5 * time.Second
	rc.SnapshotInterval = 120 * time.Second
	rc.SnapshotThreshold = 8192
	rc.TrailingLogs = 10240
	rc.Logger = hlog
	notify := make(chan bool, 8)
	rc.NotifyCh = notify
	fsm := NewFSM(FSMOptions{Logger: n.log})
	rn := &raftNode{clusterID: clusterID, dir: dir, fsm: fsm, store: store, trans: trans, layer: layer, notify: notify,
		stopped: make(chan struct{}), hb: &hb, pace: newPacer()}

	if bootstrap {
		has, err := raft.HasExistingState(logs, store, snaps)
		if err == nil && has {
			err = errors.New("state exists")
		}
		if err == nil {
			err = raft.BootstrapCluster(rc, logs, store, snaps, trans, raft.Configuration{Servers: []raft.Server{
				{ID: rc.LocalID, Address: trans.LocalAddr(), Suffrage: raft.Voter},
			}})
		}
		if err != nil {
			trans.Close()
			store.Close()
			return fmt.Errorf("bootstrap raft: %w", err)
		}
	}
	r, err := raft.NewRaft(rc, fsm, logs, store, snaps, trans)
	if err != nil {
		trans.Close()
		store.Close()
		return fmt.Errorf("start raft: %w", err)
	}
	rn.raft = r
	guard.raft.Store(r)
	if err := atomicfile.Write(filepath.Join(n.cfg.DataDir, currentFile), []byte(clusterID+"\n"), 0o600); err != nil {
		n.log.Warn("cannot record the current cluster", "err", err)
	}
	n.revokeLeadership("new Raft instance") // a no-op: Close and abandon revoke before
	n.mu.Lock()
	n.r, n.noLeader = rn, time.Time{}
	if bootstrap && carry != nil {
		n.pendingInit = carry
	}
	n.mu.Unlock()
	n.goLoop(func() { n.watchLeadership(rn) })
	n.goLoop(func() { n.paceLoop(rn) })
	n.log.Info("raft started", "cluster", clusterID, "bootstrap", bootstrap, "addr", trans.LocalAddr())
	return nil
}

// watchLeadership reads Raft's leadership notifications (Raft blocks until
// they are read), records them and wakes the main loop, which establishes
// or revokes the leader duties (syncLeadership).
func (n *Node) watchLeadership(r *raftNode) {
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-r.stopped:
			return
		case v := <-r.notify:
			r.setLeading(v)
			n.wake()
		}
	}
}

// apply commits one encoded command on this leader and returns the FSM's
// result and the entry's index. Once it is committed, an empty barrier entry is appended without
// waiting: its AppendEntries carry the new commit index to the followers at
// once, instead of after the idle CommitTimeout.
func (r *raftNode) apply(b []byte) (Result, uint64, error) {
	f := r.raft.Apply(b, 5*time.Second)
	if err := f.Error(); err != nil {
		return Result{}, 0, err
	}
	r.raft.Barrier(0)
	res, _ := f.Response().(Result)
	return res, f.Index(), nil
}

func (r *raftNode) shutdown() error {
	f := r.raft.Shutdown()
	// Raft waits for its RPCs in flight, which wait for their peer up to
	// the transport's 10 s timeout: a vote request to a voter that no
	// longer serves Raft (its peer port queues the connection, nobody
	// answers) held a re-bootstrap for that long. Cut them.
	r.layer.closeAll()
	err := f.Error()
	r.stopOnce.Do(func() { close(r.stopped) })
	return errors.Join(err, r.trans.Close(), r.store.Close())
}

func (r *raftNode) configuration() raft.Configuration {
	c, _ := r.configurationIndex()
	return c
}

// configurationIndex also returns the index of the configuration entry,
// the prevIndex that makes concurrent membership changes fail safely.
func (r *raftNode) configurationIndex() (raft.Configuration, uint64) {
	f := r.raft.GetConfiguration()
	if f.Error() != nil {
		return raft.Configuration{}, 0
	}
	return f.Configuration(), f.Index()
}

func (r *raftNode) isVoter(node string) bool {
	for _, s := range r.configuration().Servers {
		if string(s.ID) == node {
			return s.Suffrage == raft.Voter
		}
	}
	return false
}

// currentCluster is the cluster whose Raft state this node kept, or "".
func (n *Node) currentCluster() string {
	b, err := os.ReadFile(filepath.Join(n.cfg.DataDir, currentFile))
	if err != nil {
		return ""
	}
	id := strings.TrimSpace(string(b))
	if _, err := os.Stat(filepath.Join(n.cfg.DataDir, raftDirName, id)); err != nil {
		return ""
	}
	return id
}

// loadCache restores the last state this node saw into the member FSM.
func (n *Node) loadCache() error {
	b, err := os.ReadFile(filepath.Join(n.cfg.DataDir, cacheFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return n.member.Restore(io.NopCloser(bytes.NewReader(b)))
}

// maybeWriteCache writes f's state to the cache when it moved on.
func (n *Node) maybeWriteCache(f *FSM) {
	idx := f.index()
	n.mu.Lock()
	stale := idx != n.cachedIndex
	n.cachedIndex = idx
	n.mu.Unlock()
	if stale {
		n.writeCache(f)
	}
}

func (n *Node) writeCache(f *FSM) {
	if !f.summary().Initialized() {
		return
	}
	var buf bytes.Buffer
	if err := f.WriteState(&buf); err != nil {
		n.log.Warn("cannot encode election state cache", "err", err)
		return
	}
	if err := atomicfile.Write(filepath.Join(n.cfg.DataDir, cacheFile), buf.Bytes(), 0o600); err != nil {
		n.log.Warn("cannot write election state cache", "err", err)
	}
}

// restoreMember replaces the member FSM's state with st.
func (n *Node) restoreMember(st State) {
	var buf bytes.Buffer
	if err := writeSnapshot(&buf, st); err != nil {
		return
	}
	if err := n.member.Restore(io.NopCloser(&buf)); err != nil {
		n.log.Debug("restore member state", "err", err)
		return
	}
	n.writeCache(n.member)
}

// streamLayer gives Raft's network transport our peer port: a listener
// of its own (closed with the Raft instance) and the dialer, which keeps
// the connections it made so that shutdown can cut them (closeAll).
type streamLayer struct {
	net.Listener
	addr net.Addr
	dial func(ctx context.Context, addr string, rpc bool) (net.Conn, error)

	mu     sync.Mutex
	conns  map[*layerConn]struct{}
	closed bool
}

// Addr is the advertised address (the listener's may be 0.0.0.0).
func (s *streamLayer) Addr() net.Addr { return s.addr }

// Dial implements raft.StreamLayer.
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := s.dial(ctx, string(address), false)
	if err != nil {
		return nil, err
	}
	lc := &layerConn{Conn: c, layer: s}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	if s.conns == nil {
		s.conns = map[*layerConn]struct{}{}
	}
	s.conns[lc] = struct{}{}
	return lc, nil
}

// closeAll closes every connection dialed and refuses new dials.
func (s *streamLayer) closeAll() {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for c := range conns {
		c.Conn.Close()
	}
}

// layerConn is a dialed Raft connection that leaves its layer's set when
// closed.
type layerConn struct {
	net.Conn
	layer *streamLayer
}

func (c *layerConn) Close() error {
	c.layer.mu.Lock()
	delete(c.layer.conns, c)
	c.layer.mu.Unlock()
	return c.Conn.Close()
}

// raftGuard admits only Raft connections from the servers of the current
// configuration and the current leader (source address), so that no other
// host can inflate terms, call elections or feed entries (issue #9). A
// node with no configuration yet (just prepared, or an empty store) also
// admits the leader that prepared it and a member whose head says it leads
// the cluster. Refused connections are closed at once.
type raftGuard struct {
	net.Listener
	raft    atomic.Pointer[raft.Raft] // set once Raft runs
	allow   func(netip.Addr) bool
	refused func(net.Addr)
	closed  func(net.Addr) // an admitted connection closed
}

// Accept returns the next admitted connection.
func (g *raftGuard) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if g.allow(addrIP(c.RemoteAddr().String())) {
			return &watchedConn{Conn: c, closed: g.closed}, nil
		}
		c.Close()
		g.refused(c.RemoteAddr())
	}
}

// raftPeerAllowed reports whether a Raft connection from ip is admitted
// (see raftGuard). r is nil until Raft runs.
func (n *Node) raftPeerAllowed(r *raft.Raft, clusterID string, ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	if r != nil {
		conf := r.GetConfiguration().Configuration()
		for _, s := range conf.Servers {
			if addrIP(string(s.Address)) == ip {
				return true
			}
		}
		if addr, _ := r.LeaderWithID(); addr != "" && addrIP(string(addr)) == ip {
			return true
		}
		if len(conf.Servers) > 0 {
			return false
		}
	}
	n.mu.Lock()
	prepared := n.preparedFor == clusterID && n.preparedBy == ip
	n.mu.Unlock()
	return prepared || leadsCluster(n.mem.Members(), ip, clusterID)
}
