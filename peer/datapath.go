package peer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

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
	o, err := fetch.NewOrigin(fetch.Options{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("data path: %w", err)
	}
	peers := retrieval.NewClient(retrieval.ClientConfig{Logger: log})
	p, err := fetch.NewPipeline(fetch.PipelineConfig{
		Origin: fetch.OriginOf(o),
		Cache:  a.content.cache,
		Prober: agentProber{a},
		Peers:  peers,
		WAN:    wan.Limiter(),
		Role:   wan,
		Secret: a.contentSecret,
		Logger: log,
	})
	if err != nil {
		o.Close()
		peers.Close()
		return nil, fmt.Errorf("data path: %w", err)
	}
	limit := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "redleader_wan_limit_bits_per_second",
		Help: "The WAN rate in force for this agent's origin downloads (0: unlimited): the leader or peer rate of the policy, by role."},
		func() float64 { return float64(wan.Limit()) })
	badBlocks := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "redleader_bad_blocks_total",
		Help: "Blocks LAN peers served to this agent's jobs that failed verification (each rejected)."},
		func() float64 { return float64(p.Stats().BadBlocks) })
	originRanges := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "redleader_origin_ranges_total",
		Help: "Ranges this agent's jobs asked of origins (one request each, unless the origin ignores Range)."},
		func() float64 { return float64(p.Stats().OriginRanges) })
	for _, c := range []prometheus.Collector{limit, badBlocks, originRanges} {
		if err := a.reg.Register(c); err != nil {
			o.Close()
			peers.Close()
			return nil, fmt.Errorf("data path metrics: %w", err)
		}
	}
	return &dataPath{pipe: p, origin: o, peers: peers, wan: wan}, nil
}

// Close closes the idle connections to origins and peers.
func (d *dataPath) Close() {
	d.origin.Close()
	d.peers.Close()
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
	return n.State().Secret
}

// followRole sets the WAN rate for the role: the leader rate from the
// moment the agent holds the Red Leader role, the peer rate from the
// moment it loses it.
func (a *Agent) followRole(held bool) {
	if a.jobs != nil && a.jobs.data != nil {
		a.jobs.data.wan.SetRole(held)
	}
}

// followPolicy sets the WAN rates of the committed policy. A rate the
// policy leaves empty, or that does not parse, keeps the configured one.
func (a *Agent) followPolicy(p election.Policy) {
	if a.jobs == nil || a.jobs.data == nil {
		return
	}
	rate := func(s string, def shaping.Rate) shaping.Rate {
		if r, err := shaping.ParseRate(s); err == nil {
			return r
		}
		return def
	}
	a.jobs.data.wan.SetPolicy(rate(p.LeaderRate, a.cfg.Shaping.LeaderRate), rate(p.PeerRate, a.cfg.Shaping.PeerRate))
}
