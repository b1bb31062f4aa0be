package discovery

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/redleader-p2p/redleader/internal/promreg"
)

// Reasons a datagram is dropped as malformed (label "reason").
const (
	dropOversized = "oversized" // longer than MaxMessageSize
	dropInvalid   = "invalid"   // not well-formed, or a PCCRD message with bad content
	dropForeign   = "foreign"   // well-formed but another WS-Discovery message or type
)

// Reasons a ProbeMatch is ignored by the prober (label "reason").
const (
	ignoreType        = "type"            // Types differ from the Probe's version
	ignoreSubnet      = "subnet"          // no XAddrs inside a local subnet
	ignoreOutstanding = "not_outstanding" // no segment of an outstanding Probe
	ignoreDuplicate   = "duplicate"       // a second reply from the same peer
)

// Reasons a ProbeMatch is not sent (label "reason").
const (
	suppressPolicy = "policy" // reply-suppression rule
	suppressBusy   = "busy"   // too many replies pending
)

// Log lines that repeat per datagram (bad datagrams, read and send errors)
// go through a ratelog.Logger: at most logBurst lines per key and logEvery.
const (
	logEvery = time.Minute
	logBurst = 5
)

// Metrics are the Prometheus metrics of discovery. One Metrics may be
// shared by a Prober and a Responder.
type Metrics struct {
	// ProbesSent counts Probes sent, retransmissions included.
	ProbesSent prometheus.Counter
	// ProbesReceived counts well-formed Probes received, duplicates excluded.
	ProbesReceived prometheus.Counter
	// MatchesSent counts ProbeMatches sent.
	MatchesSent prometheus.Counter
	// MatchesReceived counts ProbeMatches the prober accepted.
	MatchesReceived prometheus.Counter
	// MatchesIgnored counts well-formed ProbeMatches the prober ignored,
	// by reason: type, subnet, not_outstanding, duplicate.
	MatchesIgnored *prometheus.CounterVec
	// MatchesSuppressed counts replies not sent for held segments, by
	// reason: policy (reply suppression), busy (too many pending).
	MatchesSuppressed *prometheus.CounterVec
	// MalformedDropped counts datagrams that are not well-formed PCCRD
	// messages, by reason: oversized, invalid, foreign.
	MalformedDropped *prometheus.CounterVec
	// FirstMatchLatency observes the time from a Probe to its first
	// accepted ProbeMatch.
	FirstMatchLatency prometheus.Histogram
}

// NewMetrics creates the discovery metrics (names prefixed
// redleader_discovery_) and registers them with reg when it is not nil.
// Metrics already registered with reg (another agent in the same process)
// are reused.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns, sub = "redleader", "discovery"
	m := &Metrics{
		ProbesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "probes_sent_total",
			Help: "PCCRD Probes sent (each retransmission counts).",
		}),
		ProbesReceived: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "probes_received_total",
			Help: "Well-formed PCCRD Probes received (duplicates excluded).",
		}),
		MatchesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "matches_sent_total",
			Help: "PCCRD ProbeMatches sent.",
		}),
		MatchesReceived: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "matches_received_total",
			Help: "PCCRD ProbeMatches accepted by the prober.",
		}),
		MatchesIgnored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "matches_ignored_total",
			Help: "Well-formed ProbeMatches the prober ignored, by reason.",
		}, []string{"reason"}),
		MatchesSuppressed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "matches_suppressed_total",
			Help: "ProbeMatches not sent for held segments, by reason (policy = reply suppression, busy = too many pending).",
		}, []string{"reason"}),
		MalformedDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "malformed_dropped_total",
			Help: "Datagrams dropped as not a well-formed PCCRD message, by reason.",
		}, []string{"reason"}),
		FirstMatchLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "probe_first_match_seconds",
			Help:    "Time from sending a Probe to its first accepted ProbeMatch.",
			Buckets: []float64{.001, .0025, .005, .01, .02, .035, .05, .065, .08, .1, .15, .2, .3, .5},
		}),
	}
	if reg == nil {
		return m
	}
	m.ProbesSent = promreg.Register(reg, m.ProbesSent)
	m.ProbesReceived = promreg.Register(reg, m.ProbesReceived)
	m.MatchesSent = promreg.Register(reg, m.MatchesSent)
	m.MatchesReceived = promreg.Register(reg, m.MatchesReceived)
	m.MatchesIgnored = promreg.Register(reg, m.MatchesIgnored)
	m.MatchesSuppressed = promreg.Register(reg, m.MatchesSuppressed)
	m.MalformedDropped = promreg.Register(reg, m.MalformedDropped)
	m.FirstMatchLatency = promreg.Register(reg, m.FirstMatchLatency)
	return m
}

// dropped counts a datagram dropped by err (from ParseProbe/ParseProbeMatch).
func (m *Metrics) dropped(err error) {
	reason := dropInvalid
	switch {
	case errors.Is(err, ErrTooLarge):
		reason = dropOversized
	case errors.Is(err, ErrNotPCCRD):
		reason = dropForeign
	}
	m.MalformedDropped.WithLabelValues(reason).Inc()
}
