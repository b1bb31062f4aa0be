package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/redleader-p2p/redleader/config"
	"github.com/redleader-p2p/redleader/discovery"
	"github.com/redleader-p2p/redleader/election"
	"github.com/redleader-p2p/redleader/internal/tick"
)

// Sentinel errors.
var (
	// ErrDataDirLocked: another agent holds the data dir.
	ErrDataDirLocked = errors.New("another redleader agent is already running on this data dir")
	// ErrClosed: the agent was closed (Start after or during Close).
	ErrClosed = errors.New("agent closed")
)

// ContentProtocolVersion is the content protocol this build speaks
// (1 = PCCRC v1, 2 = v1+v2): a ranking input.
const ContentProtocolVersion = 1

const leaveTimeout = 2 * time.Second

// Options are the parts of an agent that do not come from the config file.
type Options struct {
	// Version is the build version shown by the API.
	Version string
	// Logger receives all logs; nil discards them.
	Logger *slog.Logger
	// Level, if set, is the level of Logger's handler (slog.HandlerOptions'
	// Level): New sets it to log_level, and Reload to a new log_level.
	// Nil: a new log_level needs a restart.
	Level *slog.LevelVar
	// LoadConfig reads the agent's config again from where it was read at
	// start (the same file, environment and flags): ReloadConfig, SIGHUP
	// and POST /v1/reload call it. Nil: the agent cannot reload (the API
	// answers 409).
	LoadConfig func() (config.Config, error)
	// ConfigFile is the file LoadConfig reads ("" for none), for the
	// reload's answer and log line.
	ConfigFile string
}

// Agent is one redleader agent: New → Start → Close.
//
// Lifecycle: life serializes the three things that start or stop the
// per-home parts (pool, beacon, discovery, election): Start, a re-home and
// Close. Close first sets closing, so a re-home waiting for life gives up
// instead of starting parts nobody would stop. Lock order: life, then mu.
type Agent struct {
	cfg   config.Config
	opts  Options
	log   *slog.Logger
	id    string
	uuid  [16]byte
	token string
	boot  time.Time
	lock  *os.File
	key   []byte   // primary cluster key; nil in open mode
	keys  [][]byte // every cluster key, primary first (rotation)
	reg   *prometheus.Registry
	stats *agentStats

	// metricsToken opens GET /metrics only (api_metrics_token_file; "": none).
	metricsToken string

	life    sync.Mutex
	closing atomic.Bool
	// findHome reads the primary interface (netif.go); a field so that
	// tests can move the agent without moving a real address.
	findHome func(iface string) (homeAddr, error)

	mu     sync.Mutex // guards home, pool, beacon, elect
	home   homeAddr
	pool   *pool
	beacon *discovery.Beacon
	elect  *election.Node

	content   *content
	jobs      *agentJobs  // download queue (jobs.go)
	port      *peerPort   // Raft, cluster RPC and PCCRR
	serverTLS *tls.Config // nil without a cluster key
	clientTLS *tls.Config
	metaKick  chan struct{}

	// metaMu guards meta on its own: memberlist asks for the metadata
	// from inside calls made while a.mu is held.
	metaMu sync.Mutex
	meta   Meta

	// liveMu guards live, the config in force: cfg as started, with the
	// keys a reload may change replaced by Reload (reload.go), and
	// liveGen, closed and replaced by each reload that applied a key: it
	// wakes the loops whose timings may have changed. reloadMu runs one
	// Reload at a time. Lock order: reloadMu, life, mu, liveMu.
	reloadMu sync.Mutex
	liveMu   sync.Mutex
	live     config.Config
	liveGen  chan struct{}

	joinCh chan string
	apiLn  net.Listener
	api    *http.Server

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed sync.Once
}

// New validates cfg, takes the data dir lock and loads (or creates) the
// node identity. Nothing touches the network until Start.
func New(cfg config.Config, opts Options) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Level != nil {
		var l slog.Level
		_ = l.UnmarshalText([]byte(cfg.LogLevel)) // validated above
		opts.Level.Set(l)
	}
	keys, _ := cfg.Keyring() // validated above; primary first
	var key []byte
	if len(keys) > 0 {
		key = keys[0]
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	lock, err := lockDataDir(filepath.Join(cfg.DataDir, "agent.lock"))
	if err != nil {
		if errors.Is(err, ErrDataDirLocked) {
			return nil, fmt.Errorf("%w (%s)", ErrDataDirLocked, cfg.DataDir)
		}
		return nil, err
	}
	a := &Agent{cfg: cfg, opts: opts, log: log, key: key, keys: keys, boot: time.Now(), lock: lock,
		joinCh: make(chan string, 64), metaKick: make(chan struct{}, 1), findHome: findHome,
		live: cfg, liveGen: make(chan struct{})}
	fail := func(err error) (*Agent, error) { lock.Close(); return nil, err }
	if a.id, err = loadOrCreateNodeID(cfg.DataDir); err != nil {
		return fail(err)
	}
	a.uuid = uuid.MustParse(a.id)
	if err = a.loadTokens(); err != nil { // apiauth.go
		return fail(err)
	}
	if len(keys) > 0 {
		if a.serverTLS, a.clientTLS, err = clusterTLS(keys...); err != nil {
			return fail(err)
		}
	}
	a.meta = Meta{
		NotLeaderMaterial: cfg.NotLeaderMaterial,
		VoterOptOut:       cfg.Election.Voter == "never",
		Class:             uint8(a.electionConfig().Class),
		ProtoVersion:      ContentProtocolVersion,
		Boot:              a.boot,
		PeerPort:          uint16(cfg.PeerPort),
		Name:              cfg.NodeName,
		Location:          cfg.Location,
	}
	a.reg = prometheus.NewRegistry()
	a.stats = newAgentStats(a)
	return a, nil
}

// DataDir is the agent's data directory.
func (a *Agent) DataDir() string { return a.cfg.DataDir }

// ID is the node's UUID.
func (a *Agent) ID() string { return a.id }

// Start joins the subnet's gossip pool, starts LAN discovery, the local
// API and the background loops. On error everything started is stopped.
// A Close during Start waits for Start to return, then stops everything.
func (a *Agent) Start(ctx context.Context) error {
	if err := a.start(ctx); err != nil {
		a.Close() // stops whatever did start; Close is idempotent
		return err
	}
	return nil
}

func (a *Agent) start(ctx context.Context) (err error) {
	a.life.Lock()
	defer a.life.Unlock()
	if a.closing.Load() || a.ctx != nil {
		return ErrClosed
	}
	a.ctx, a.cancel = context.WithCancel(ctx)
	home, err := a.resolveHome()
	if err != nil {
		return err
	}
	if a.apiLn, err = net.Listen("tcp", a.cfg.APIAddr); err != nil {
		return fmt.Errorf("local api on %s: %w", a.cfg.APIAddr, err)
	}
	a.port, err = listenPeerPort(net.JoinHostPort(a.cfg.BindAddr, strconv.Itoa(a.cfg.PeerPort)), a.serverTLS, a.log)
	if err != nil {
		return err
	}
	a.guardPeerPort() // caps with room for members, /metrics (peerguard.go)
	a.updateMeta(func(m *Meta) { m.PeerPort = uint16(a.port.Port()) })
	if err := a.startContent(); err != nil {
		return err
	}
	if err := a.startJobs(); err != nil {
		return err
	}
	// Each step below is one a Close would have to undo: stop early.
	if a.closing.Load() {
		return ErrClosed
	}
	if err := a.enterHome(home); err != nil {
		return err
	}
	a.goLoop(a.metaLoop)
	if a.closing.Load() {
		return ErrClosed
	}
	if err := a.startElection(); err != nil {
		return fmt.Errorf("start election: %w", err)
	}
	ln := a.apiLn
	// net/http's own lines (a bad request, a client gone) through slog, so
	// that log_format holds for them too; they are the clients' doing: debug.
	a.api = &http.Server{Handler: a.apiHandler(), ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelDebug)}
	a.goLoop(func() {
		if err := a.api.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("local api stopped", "err", err)
		}
	})
	a.goLoop(a.joinLoop)
	a.goLoop(a.rejoinLoop)
	if a.cfg.Subnet == "" && a.cfg.AdvertiseAddr == "" {
		a.goLoop(a.rehomeLoop)
	}
	if join := a.liveConfig().Join; len(join) > 0 {
		a.requestJoin(join...)
	}
	a.log.Info("agent started", "node", a.id, "name", a.cfg.NodeName, "subnet", home.Subnet,
		"addr", a.GossipAddr(), "api", ln.Addr().String())
	if a.key == nil {
		a.log.Warn("no cluster key: gossip, Raft and the cluster RPC are open to every host of the LAN, in the clear "+
			"(set cluster_key on every agent; see docs/SECURITY.md)", "allow_open_admin", a.cfg.AllowOpenAdmin)
	}
	return nil
}

// APIAddr is the local API's listening address (useful with port 0).
func (a *Agent) APIAddr() string { return a.apiLn.Addr().String() }

// GossipAddr is this agent's advertised gossip address.
func (a *Agent) GossipAddr() netip.AddrPort {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pool == nil {
		return netip.AddrPort{}
	}
	return a.pool.Addr()
}

// Subnet is the subnet (gossip pool label) the agent is on now.
func (a *Agent) Subnet() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.home.Subnet.String()
}

// Members lists the members of the agent's current pool, itself included.
func (a *Agent) Members() []Member {
	a.mu.Lock()
	p := a.pool
	a.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.Members(time.Now())
}

// Close leaves the pool gracefully (others see "left"), then stops
// everything in reverse order of Start. It waits for a Start or re-home in
// progress to finish first. It is safe to call more than once.
func (a *Agent) Close() error {
	a.closing.Store(true)
	var errs []error
	a.closed.Do(func() {
		a.life.Lock()
		// Hand over while everything still runs, then stop the loops. The
		// re-home loop may be waiting for life: it sees closing and returns.
		errs = append(errs, a.stopElection())
		if a.cancel != nil {
			a.cancel()
		}
		a.life.Unlock()
		if a.api != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			errs = append(errs, a.api.Shutdown(ctx))
			cancel()
		} else if a.apiLn != nil {
			a.apiLn.Close()
		}
		// Jobs stop before the cache they will store into; they resume at
		// the next start.
		errs = append(errs, a.stopJobs())
		// The PCCRR server's goroutine is one of ours: stop it before waiting.
		errs = append(errs, a.stopContent())
		a.wg.Wait()
		errs = append(errs, a.leaveHome(false))
		if a.port != nil {
			errs = append(errs, a.port.Close())
		}
		errs = append(errs, a.lock.Close())
		if a.api != nil {
			a.log.Info("agent stopped")
		}
	})
	return errors.Join(errs...)
}

func (a *Agent) goLoop(f func()) {
	a.wg.Add(1)
	go func() { defer a.wg.Done(); f() }()
}

// resolveHome finds the subnet and address, honouring config overrides.
func (a *Agent) resolveHome() (homeAddr, error) {
	var h homeAddr
	if a.cfg.Subnet == "" || a.cfg.AdvertiseAddr == "" || a.cfg.LANDiscovery.Interface == "" {
		found, err := a.findHome(a.cfg.LANDiscovery.Interface)
		if err != nil && (a.cfg.Subnet == "" || a.cfg.AdvertiseAddr == "") {
			return homeAddr{}, fmt.Errorf("find primary interface: %w", err)
		}
		h = found
	}
	if a.cfg.LANDiscovery.Interface != "" {
		h.Iface = a.cfg.LANDiscovery.Interface
	}
	if a.cfg.AdvertiseAddr != "" {
		h.Addr = netip.MustParseAddr(a.cfg.AdvertiseAddr)
	}
	if a.cfg.Subnet != "" {
		h.Subnet = netip.MustParsePrefix(a.cfg.Subnet).Masked()
	} else if h.Addr.IsValid() && !h.Subnet.Contains(h.Addr) {
		return homeAddr{}, fmt.Errorf("advertise_addr %s is outside the primary subnet %s: set subnet too", h.Addr, h.Subnet)
	}
	return h, nil
}

// enterHome starts the gossip pool and the beacon for home.
func (a *Agent) enterHome(h homeAddr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.updateMeta(func(m *Meta) { m.Subnet, m.Leaving, m.Roaming = h.Subnet.String(), false, false })
	p, err := newPool(poolConfig{
		Node:      a.id,
		Subnet:    h.Subnet.String(),
		BindAddr:  a.cfg.BindAddr,
		BindPort:  a.cfg.GossipPort,
		Advertise: h.Addr,
		Keys:      a.keys,
		Meta:      a.encodedMeta,
		Retention: a.cfg.MemberRetention,
		Log:       a.log,
		StreamRefused: func(reason string) {
			a.stats.gossipRefused.WithLabelValues(reason).Inc()
		},
	})
	if err != nil {
		return err
	}
	a.home, a.pool = h, p
	if a.cfg.LANDiscovery.Enabled {
		if err := a.startBeaconLocked(); err != nil {
			// Not fatal: join addresses still work; say why once.
			a.log.Warn("LAN discovery of agents is off", "err", err)
		}
	}
	if err := a.startDiscoveryLocked(); err != nil {
		// Not fatal: peers can still fetch from us and we from the origin.
		a.log.Warn("MS-PCCRD discovery is off", "err", err)
	}
	return nil
}

func (a *Agent) startBeaconLocked() error {
	ifc, err := net.InterfaceByName(a.home.Iface)
	if err != nil {
		return fmt.Errorf("interface %q: %w", a.home.Iface, err)
	}
	b, err := discovery.NewBeacon(discovery.BeaconConfig{
		Group:     netip.MustParseAddr(a.cfg.LANDiscovery.Group),
		Port:      a.cfg.LANDiscovery.Port,
		Interface: ifc,
		Interval:  a.liveConfig().LANDiscovery.Interval, // reload.go may change it
		Keys:      a.keys,
	}, a.announce, a.onBeacon, a.log.With("component", "beacon"))
	if err != nil {
		return err
	}
	if err := b.Start(a.ctx); err != nil {
		b.Close()
		return err
	}
	a.beacon = b
	return nil
}

// leaveHome stops the beacon and leaves the pool. roaming marks the
// departure as a move to another subnet, so old peers forget us at once.
func (a *Agent) leaveHome(roaming bool) error {
	// The beacon is closed without a.mu: its send loop reads the agent's
	// announce under a.mu, so Close (which waits for the loop) under the
	// lock could deadlock.
	a.mu.Lock()
	b := a.beacon
	a.beacon = nil
	a.mu.Unlock()
	var errs []error
	if b != nil {
		a.stats.addBeacon(b.Stats())
		errs = append(errs, b.Close())
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	errs = append(errs, a.stopDiscoveryLocked())
	if a.pool != nil {
		a.updateMeta(func(m *Meta) { m.Leaving, m.Roaming = true, roaming })
		if err := a.pool.UpdateMeta(leaveTimeout); err != nil {
			a.log.Debug("leaving flag not broadcast", "err", err)
		}
		if err := a.pool.Leave(leaveTimeout); err != nil {
			// Peers that missed the leave will see us dead instead: not an error.
			a.log.Warn("leave not acknowledged", "err", err)
		}
		a.pool = nil
	}
	return errors.Join(errs...)
}

func (a *Agent) encodedMeta() []byte { return a.metaSnapshot().encode() }

func (a *Agent) metaSnapshot() Meta {
	a.metaMu.Lock()
	defer a.metaMu.Unlock()
	return a.meta
}

func (a *Agent) updateMeta(f func(*Meta)) {
	a.metaMu.Lock()
	f(&a.meta)
	a.metaMu.Unlock()
}

func (a *Agent) announce() discovery.Announce {
	a.mu.Lock()
	defer a.mu.Unlock()
	var addr netip.AddrPort
	if a.pool != nil {
		addr = a.pool.Addr()
	}
	return discovery.Announce{Node: a.uuid, Subnet: a.home.Subnet.String(), Addr: addr}
}

// onBeacon runs on the beacon's goroutine: never block.
func (a *Agent) onBeacon(ann discovery.Announce) {
	a.mu.Lock()
	p, subnet := a.pool, a.home.Subnet.String()
	a.mu.Unlock()
	if p == nil || ann.Subnet != subnet || p.Known(uuid.UUID(ann.Node).String()) {
		return
	}
	a.requestJoin(ann.Addr.String())
}

func (a *Agent) requestJoin(addrs ...string) {
	for _, addr := range addrs {
		select {
		case a.joinCh <- addr:
		default: // a join storm: the periodic rejoin and the next beacon catch up
		}
	}
}

// joinLoop performs joins one at a time, off the callers' goroutines. A
// join in progress ends when the agent closes (JoinContext), and Close
// wins over joins still queued (select picks at random among ready cases,
// so the context is checked again before each join).
func (a *Agent) joinLoop() {
	for {
		select {
		case <-a.ctx.Done():
			return
		case addr := <-a.joinCh:
			if a.ctx.Err() != nil {
				return
			}
			a.mu.Lock()
			p := a.pool
			a.mu.Unlock()
			if p == nil {
				continue
			}
			if _, err := p.JoinContext(a.ctx, []string{addr}); err != nil {
				a.log.Debug("join failed", "addr", addr, "err", err)
			}
		}
	}
}

// rejoinLoop retries join addresses that are not alive members and members
// that died, so partitions heal even without multicast. Alive members are
// never re-joined: each join is a full state exchange. The interval and
// the join list are the live config's: a reload starts a new round.
func (a *Agent) rejoinLoop() {
	for {
		live, reloaded := a.liveState()
		// Jitter keeps agents that started together from rejoining in step.
		t := time.NewTimer(live.RejoinInterval + time.Duration(rand.Int64N(int64(live.RejoinInterval/5)+1)))
		select {
		case <-a.ctx.Done():
			t.Stop()
			return
		case <-reloaded:
			t.Stop()
			continue
		case <-t.C:
		}
		alive := map[string]bool{}
		var addrs []string
		for _, m := range a.Members() {
			switch m.Status {
			case StatusAlive:
				alive[m.Addr.String()] = true
			case StatusDead:
				if m.Addr.IsValid() {
					addrs = append(addrs, m.Addr.String())
				}
			}
		}
		for _, j := range live.Join {
			if !alive[j] {
				addrs = append(addrs, j)
			}
		}
		a.requestJoin(addrs...)
		a.mu.Lock()
		if a.beacon != nil && a.pool != nil && a.pool.NumMembers() <= 1 {
			a.beacon.Kick() // alone: look around faster
		}
		a.mu.Unlock()
	}
}

// rehomeLoop notices when the primary address moves (a roaming laptop) and
// moves the agent to the new subnet's pool without a restart.
func (a *Agent) rehomeLoop() {
	live, reloaded := a.liveState()
	t := time.NewTimer(tick.Until(live.RehomeInterval))
	defer t.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-reloaded: // rehome_interval may have changed
			live, reloaded = a.liveState()
			t.Reset(tick.Until(live.RehomeInterval))
			continue
		case <-t.C:
			t.Reset(tick.Until(live.RehomeInterval))
		}
		h, err := a.findHome(a.cfg.LANDiscovery.Interface)
		if err != nil {
			continue // no address right now (Wi-Fi reconnecting): keep the old home
		}
		a.mu.Lock()
		old := a.home
		a.mu.Unlock()
		if h.Addr == old.Addr && h.Subnet == old.Subnet && h.Iface == old.Iface {
			continue
		}
		if !a.rehome(old, h) {
			return
		}
	}
}

// rehome moves the agent from old to h. It returns false when the agent is
// closing (nothing was changed then).
func (a *Agent) rehome(old, h homeAddr) bool {
	a.life.Lock()
	defer a.life.Unlock()
	if a.closing.Load() {
		return false
	}
	a.log.Info("primary address moved: re-homing", "from", old.Addr, "from_subnet", old.Subnet,
		"to", h.Addr, "to_subnet", h.Subnet)
	if err := a.stopElection(); err != nil {
		a.log.Debug("stopping election for re-home", "err", err)
	}
	err := a.leaveHome(h.Subnet != old.Subnet)
	if err != nil {
		a.log.Debug("leaving old pool", "err", err)
	}
	if err := a.enterHome(h); err != nil {
		a.log.Error("re-home failed; will retry", "err", err)
		a.mu.Lock()
		a.home = homeAddr{} // force another attempt next tick
		a.mu.Unlock()
		return true
	}
	if err := a.startElection(); err != nil {
		a.log.Error("election not restarted after re-home", "err", err)
	}
	a.stats.rehomes.Inc()
	return true
}

// publishMeta asks the meta loop to re-broadcast this node's metadata.
func (a *Agent) publishMeta() {
	select {
	case a.metaKick <- struct{}{}:
	default:
	}
}

// metaLoop broadcasts metadata changes off the callers' goroutines
// (memberlist's UpdateNode waits for the broadcast to go out).
func (a *Agent) metaLoop() {
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-a.metaKick:
		}
		a.mu.Lock()
		p := a.pool
		a.mu.Unlock()
		if p != nil {
			if err := p.UpdateMeta(time.Second); err != nil {
				a.log.Debug("metadata broadcast", "err", err)
			}
		}
	}
}
