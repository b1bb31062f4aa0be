package peer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/redleader-p2p/redleader/election"
	pccrc "github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/fetch"
	"github.com/redleader-p2p/redleader/peer/retrieval"
	"github.com/redleader-p2p/redleader/shaping"
)

// dataPath is the jobs' runner on the agent's parts: the per-segment
// pipeline (peer/fetch) over the segment cache, the MS-PCCRD probe, an
// MS-PCCRR client, the origin access and the one WAN limiter of the agent,
// whose rate follows the Red Leader role and the committed policy.
type dataPath struct {
	pipe   *fetch.Pipeline
	origin *fetch.Origin
	peers  *retrieval.Client
	wan    *shaping.WAN
	// wanBytes is the pipelines' WAN limiter: wan's, counting the bytes
	// charged to it (every origin byte, live).
	wanBytes *countingLimiter
	// single is the subnet's single flight: the pipelines' catalog and,
	// on the Red Leader, the server of members' demands. Demanded URLs
	// are fetched through demandOrigin, which refuses the agent's own,
	// loopback and link-local addresses at connect time — unless
	// origin_proxy names a proxy: every connection then goes to it, and
	// only the check of the demanded URL (CheckDemandURL) applies.
	single       *fetch.SingleFlight
	demandOrigin *fetch.Origin

	rankMu       sync.Mutex
	jobsPriority election.Priority // highest of the active jobs
	jobsProgress uint64
	served       fetch.Served // the demands served (Red Leader)
}

// newDataPath builds the pipeline on the agent's cache (startContent runs
// first). The WAN starts at the configured rates as a non-leader; the
// election's role watch and the committed policy move it (followRole,
// followPolicy).
func (a *Agent) newDataPath(log *slog.Logger) (*dataPath, error) {
	if a.content == nil {
		return nil, errors.New("data path: content not started")
	}
	wan := shaping.NewWAN(a.cfg.Shaping.LeaderRate, a.cfg.Shaping.PeerRate, 0)
	// The pipeline paces origin bytes through wan itself: no Options.Pace.
	// Both origins go through origin_proxy (validated by the config).
	o, err := fetch.NewOrigin(fetch.Options{Logger: log, Proxy: a.cfg.OriginProxy})
	if err != nil {
		return nil, fmt.Errorf("data path: %w", err)
	}
	// With an explicit proxy every connection goes to it: the check of
	// connect-time addresses would only see the proxy the admin chose (a
	// local one such as 127.0.0.1:3128 included), so it is left out and
	// demanded URLs are checked before the fetch only (CheckDemandURL).
	checkDemand := func(ip netip.Addr) error { return fetch.CheckDemandAddr(ip, a.selfAddrs()) }
	if px := a.cfg.OriginProxy; px != "" && px != fetch.ProxyDirect {
		checkDemand = nil
	}
	demandOrigin, err := fetch.NewOrigin(fetch.Options{Logger: log, Proxy: a.cfg.OriginProxy, CheckAddr: checkDemand})
	if err != nil {
		o.Close()
		return nil, fmt.Errorf("data path: %w", err)
	}
	d := &dataPath{origin: o, demandOrigin: demandOrigin, wan: wan, wanBytes: &countingLimiter{l: wan.Limiter()},
		peers: retrieval.NewClient(retrieval.ClientConfig{Logger: log})}
	e := a.cfg.Election
	m := time.Duration(e.RaftMultiplier)
	d.single = fetch.NewSingleFlight(fetch.SingleFlightConfig{
		Subnet:        a.subnetNode,
		Secret:        a.contentSecret,
		Role:          wan,
		Self:          a.selfAddrs,
		PeerAddr:      a.peerAddr,
		FallbackDelay: a.cfg.Shaping.WANFallbackDelay,
		AppointWait:   (e.ConfirmTimeout + e.CheckinTimeout) * m,
		DemandDir:     filepath.Join(a.cfg.DataDir, "demand"),
		PublishServed: func(sv fetch.Served) { a.publishServed(d, sv) },
		Node:          a.id,
		Logger:        log,
	})
	pipeline := func(origin *fetch.Origin) (*fetch.Pipeline, error) {
		return fetch.NewPipeline(fetch.PipelineConfig{
			Origin:  fetch.OriginOf(origin),
			Cache:   a.content.cache,
			Prober:  agentProber{a},
			Peers:   d.peers,
			WAN:     d.wanBytes,
			Role:    wan,
			Secret:  a.contentSecret,
			Catalog: d.single,
			Logger:  log,
		})
	}
	p, err := pipeline(o)
	var dp *fetch.Pipeline
	if err == nil {
		dp, err = pipeline(demandOrigin)
	}
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("data path: %w", err)
	}
	d.pipe = p
	d.single.Attach(dp)
	limit := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "redleader_wan_limit_bits_per_second",
		Help: "The WAN rate in force for this agent's origin downloads (0: unlimited): the leader or peer rate of the policy, by role."},
		func() float64 { return float64(wan.Limit()) })
	badBlocks := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "redleader_bad_blocks_total",
		Help: "Blocks LAN peers served to this agent's jobs, or to the downloads it makes for members' demands, that failed verification (each rejected)."},
		func() float64 { return float64(p.Stats().BadBlocks + dp.Stats().BadBlocks) })
	originRanges := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "redleader_origin_ranges_total",
		Help: "Ranges this agent's jobs, and the downloads it makes for members' demands, asked of origins (one request each, unless the origin ignores Range)."},
		func() float64 { return float64(p.Stats().OriginRanges + dp.Stats().OriginRanges) })
	for _, c := range []prometheus.Collector{limit, badBlocks, originRanges} {
		if err := a.reg.Register(c); err != nil {
			d.Close()
			return nil, fmt.Errorf("data path metrics: %w", err)
		}
	}
	return d, nil
}

// Close stops the single flight's downloads, then closes the idle
// connections to origins and peers.
func (d *dataPath) Close() {
	d.single.Close()
	d.origin.Close()
	d.demandOrigin.Close()
	d.peers.Close()
}

// countingLimiter is a fetch.Limiter that counts the bytes charged to it.
type countingLimiter struct {
	l fetch.Limiter
	n atomic.Int64
}

func (c *countingLimiter) WaitN(ctx context.Context, n int) error {
	c.n.Add(int64(n))
	return c.l.WaitN(ctx, n)
}

// subnetNode is the single flight's view of the election: the running
// node, or a nil interface while there is none (re-homing).
func (a *Agent) subnetNode() fetch.Subnet {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.elect == nil {
		return nil
	}
	return a.elect
}

// selfAddrs are the agent's own addresses: a demand never makes the Red
// Leader fetch from itself.
func (a *Agent) selfAddrs() []netip.Addr {
	var out []netip.Addr
	a.mu.Lock()
	if a.home.Addr.IsValid() {
		out = append(out, a.home.Addr)
	}
	a.mu.Unlock()
	addrs, _ := net.InterfaceAddrs()
	for _, ad := range addrs {
		if ipn, ok := ad.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

// peerAddr is this agent's MS-PCCRR address as LAN peers dial it.
func (a *Agent) peerAddr() string {
	a.mu.Lock()
	ip := a.home.Addr
	a.mu.Unlock()
	return netip.AddrPortFrom(ip, uint16(a.port.Port())).String()
}

// publishServed records the ranking inputs of the demands the Red Leader
// serves and republishes the agent's.
func (a *Agent) publishServed(d *dataPath, sv fetch.Served) {
	d.rankMu.Lock()
	d.served = sv
	prio, prog := d.rankLocked()
	d.rankMu.Unlock()
	a.updateMeta(func(m *Meta) { m.Priority, m.Progress = prio, prog })
	a.publishMeta()
}

// rankLocked combines the jobs' ranking inputs with the demands served: the
// higher priority, with the larger progress at it (the jobs' when theirs,
// the length of the content members demand at it or above).
// d.rankMu must be held.
func (d *dataPath) rankLocked() (election.Priority, uint64) {
	prio := max(d.jobsPriority, d.served.Priority)
	progress := d.served.Length[prio]
	if d.jobsPriority == prio {
		progress = max(progress, d.jobsProgress)
	}
	return prio, progress
}

// demandHandler hands the election's demand RPC to the single flight.
type demandHandler struct{ a *Agent }

func (h demandHandler) Demand(ctx context.Context, dm election.Demand) (election.DemandReply, error) {
	if h.a.jobs == nil || h.a.jobs.data == nil {
		return election.DemandReply{}, election.ErrNotRedLeader
	}
	return h.a.jobs.data.single.Demand(ctx, dm)
}

// agentProber is the pipeline's Prober: the agent's MS-PCCRD Probe, which
// leaves the agent itself out (and feeds reply suppression).
type agentProber struct{ a *Agent }

func (p agentProber) Probe(ctx context.Context, id pccrc.SegmentID) ([]fetch.Holder, error) {
	res, err := p.a.Probe(ctx, id, 0)
	if err != nil {
		return nil, err
	}
	out := make([]fetch.Holder, 0, len(res.Matches))
	for _, m := range res.Matches {
		out = append(out, fetch.Holder{Peer: m.Peer, Blocks: m.Blocks})
	}
	return out, nil
}

// contentSecret is the subnet content secret of the election state, nil
// while there is none (the pipeline then keys plain-origin segments with
// the empty key).
func (a *Agent) contentSecret() []byte {
	a.mu.Lock()
	n := a.elect
	a.mu.Unlock()
	if n == nil {
		return nil
	}
	return n.Secret()
}

// followRole sets the WAN rate for the role: the leader rate from the
// moment the agent holds the Red Leader role, the peer rate from the
// moment it loses it.
func (a *Agent) followRole(held bool) {
	if a.jobs != nil && a.jobs.data != nil {
		a.jobs.data.wan.SetRole(held)
		a.jobs.data.single.RoleChanged() // a former Red Leader serves no demand
	}
}

// followPolicy sets the rates of the committed policy: the LAN rate of
// the blocks served and the WAN rates. A rate the policy leaves empty, or
// that does not parse, keeps the configured one (the live config's: a
// reload may change it).
func (a *Agent) followPolicy(p election.Policy) {
	conf := a.liveConfig().Shaping
	rate := func(s string, def shaping.Rate) shaping.Rate {
		if r, err := shaping.ParseRate(s); err == nil {
			return r
		}
		return def
	}
	if a.content != nil {
		a.content.lan.SetRate(rate(p.LANRate, conf.LANRate))
	}
	if a.jobs == nil || a.jobs.data == nil {
		return
	}
	a.jobs.data.wan.SetPolicy(rate(p.LeaderRate, conf.LeaderRate), rate(p.PeerRate, conf.PeerRate))
}
