package peer

import (
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
)

// guardPeerPort wires the peer port's limits to the agent (once, right
// after the port opens): the members of the pool — the Raft servers are
// members — get the capacity reserved for them, and the port's counters
// go to /metrics.
func (a *Agent) guardPeerPort() {
	a.port.SetMembers(a.memberAddrs)
	a.reg.MustRegister(newPortCollector(a.port))
}

// memberAddrs lists the addresses of the other members of the pool, in any
// state the table still holds: a voter that gossip lost for a moment still
// talks Raft.
func (a *Agent) memberAddrs() []netip.Addr {
	ms := a.Members()
	out := make([]netip.Addr, 0, len(ms))
	for _, m := range ms {
		if m.Node != a.id && m.Addr.IsValid() {
			out = append(out, m.Addr.Addr().Unmap())
		}
	}
	return out
}

// portCollector reports the peer port's counters at scrape time.
type portCollector struct {
	p                          *peerPort
	open, refused, errs, limit *prometheus.Desc
}

func newPortCollector(p *peerPort) *portCollector {
	return &portCollector{p: p,
		open: prometheus.NewDesc("redleader_peer_port_connections",
			"Connections open on the peer port (accepted, not closed yet).", nil, nil),
		refused: prometheus.NewDesc("redleader_peer_port_refused_total",
			"Peer port connections closed before reaching a server, by reason: per_source and total caps, "+
				"sniff (no first byte in time), tls (handshake failed), plain_cluster (plain Raft/RPC with a "+
				"cluster key), channel (no valid channel byte after TLS), unserved (no server took it).",
			[]string{"reason"}, nil),
		errs: prometheus.NewDesc("redleader_peer_port_accept_errors_total",
			"Failed accepts on the peer port (out of file descriptors…); each one pauses accepting briefly.", nil, nil),
		limit: prometheus.NewDesc("redleader_peer_port_limit",
			"The peer port's connection caps: total, reserved (for members, of total), per_source, member_per_source.",
			[]string{"cap"}, nil),
	}
}

func (c *portCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.open
	ch <- c.refused
	ch <- c.errs
	ch <- c.limit
}

func (c *portCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.p.Stats()
	ch <- prometheus.MustNewConstMetric(c.open, prometheus.GaugeValue, float64(s.Open))
	for i, n := range s.Refused {
		ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(n), refusal(i).String())
	}
	ch <- prometheus.MustNewConstMetric(c.errs, prometheus.CounterValue, float64(s.AcceptErrors))
	for name, v := range map[string]int{"total": s.Limits.Total, "reserved": s.Limits.Reserved,
		"per_source": s.Limits.PerSource, "member_per_source": s.Limits.MemberPerSource} {
		ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, float64(v), name)
	}
}
