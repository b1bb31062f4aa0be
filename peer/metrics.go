package peer

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/redleader-p2p/redleader/discovery"
)

// agentStats holds the agent's Prometheus metrics. Each agent has its own
// registry (no global state), so several agents can run in one process.
type agentStats struct {
	rehomes   prometheus.Counter
	redLeader prometheus.Gauge // 1 while this agent holds the Red Leader role
	// gossipRefused counts inbound gossip streams closed over the caps.
	gossipRefused *prometheus.CounterVec

	mu         sync.Mutex
	oldBeacons discovery.BeaconStats // counts of beacons closed by re-homes
}

func newAgentStats(a *Agent) *agentStats {
	s := &agentStats{
		rehomes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "redleader_rehomes_total", Help: "Moves to another subnet or address without restart.",
		}),
		redLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "redleader_red_leader", Help: "1 while this agent holds the Red Leader role (fencing lease included), else 0.",
		}),
		gossipRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "redleader_gossip_streams_refused_total",
			Help: "Inbound TCP streams on the gossip port closed at once, over the per_source or total cap.",
		}, []string{"reason"}),
	}
	for _, r := range []string{streamRefusedPerSource, streamRefusedTotal} {
		s.gossipRefused.WithLabelValues(r)
	}
	beacon := func(f func(discovery.BeaconStats) uint64) func() float64 {
		return func() float64 { return float64(f(s.beaconTotals(a))) }
	}
	a.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		s.rehomes,
		s.redLeader,
		s.gossipRefused,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "redleader_uptime_seconds", Help: "Seconds since the agent started.",
		}, func() float64 { return time.Since(a.boot).Seconds() }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "redleader_beacons_sent_total", Help: "LAN discovery beacons sent.",
		}, beacon(func(b discovery.BeaconStats) uint64 { return b.Sent })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "redleader_beacons_received_total", Help: "Valid beacons received from other agents.",
		}, beacon(func(b discovery.BeaconStats) uint64 { return b.Received })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "redleader_beacons_dropped_total", Help: "Datagrams on the beacon port that were not a valid beacon of this cluster.",
		}, beacon(func(b discovery.BeaconStats) uint64 { return b.Dropped })),
		&memberCollector{a: a, desc: prometheus.NewDesc("redleader_members",
			"Members of the agent's subnet pool by status, itself included.", []string{"status"}, nil)},
	)
	if a.opts.Version != "" {
		a.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "redleader_build_info", Help: "Always 1; the version label names the build.",
			ConstLabels: prometheus.Labels{"version": a.opts.Version},
		}, func() float64 { return 1 }))
	}
	return s
}

func (s *agentStats) addBeacon(b discovery.BeaconStats) {
	s.mu.Lock()
	s.oldBeacons.Sent += b.Sent
	s.oldBeacons.Received += b.Received
	s.oldBeacons.Dropped += b.Dropped
	s.mu.Unlock()
}

func (s *agentStats) beaconTotals(a *Agent) discovery.BeaconStats {
	a.mu.Lock()
	var cur discovery.BeaconStats
	if a.beacon != nil {
		cur = a.beacon.Stats()
	}
	a.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	return discovery.BeaconStats{
		Sent: s.oldBeacons.Sent + cur.Sent, Received: s.oldBeacons.Received + cur.Received,
		Dropped: s.oldBeacons.Dropped + cur.Dropped,
	}
}

// memberCollector reports member counts at scrape time.
type memberCollector struct {
	a    *Agent
	desc *prometheus.Desc
}

func (c *memberCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *memberCollector) Collect(ch chan<- prometheus.Metric) {
	counts := countStatuses(c.a.Members())
	for _, st := range []string{StatusAlive, StatusSuspect, StatusLeft, StatusDead} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[st]), st)
	}
}

func countStatuses(ms []Member) map[string]int {
	out := map[string]int{}
	for _, m := range ms {
		out[m.Status]++
	}
	return out
}

// setRedLeader records whether this agent holds the Red Leader role.
func (s *agentStats) setRedLeader(held bool) {
	v := 0.0
	if held {
		v = 1
	}
	s.redLeader.Set(v)
}
