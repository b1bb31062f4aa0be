package retrieval

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/redleader-p2p/redleader/internal/promreg"
)

// reqType is the "type" label of redleader_pccrr_requests_total: the
// message type in the request's header.
type reqType int

const (
	reqNego      reqType = iota // NEGO_REQ
	reqBlockList                // GETBLKLIST
	reqBlocks                   // GETBLKS
	reqSegList                  // GETSEGLIST: hosted cache (v2.0), not answered
	reqOther                    // other: no readable header, or another message type
	numReqTypes
)

func (t reqType) String() string {
	switch t {
	case reqNego:
		return "NEGO_REQ"
	case reqBlockList:
		return "GETBLKLIST"
	case reqBlocks:
		return "GETBLKS"
	case reqSegList:
		return "GETSEGLIST"
	default:
		return "other"
	}
}

// reason is the "reason" label of redleader_pccrr_errors_total: why a
// request was not answered with what it asked for.
type reason int

const (
	// reasonMalformed: dropped with HTTP 400/404/405 (wrong path or
	// method, unreadable body, unparsable message).
	reasonMalformed reason = iota
	// reasonTooLarge: dropped with HTTP 413 (request over MaxRequestSize).
	reasonTooLarge
	// reasonUnsupported: dropped with HTTP 400, a well-formed message of a
	// type the server does not answer (GETSEGLIST, a response).
	reasonUnsupported
	// reasonUnknownSegment: empty reply, no block of the segment is held.
	reasonUnknownSegment
	// reasonNotHeld: empty reply, the segment is held but not the blocks
	// asked for (or the block could not be read).
	reasonNotHeld
	// reasonBusy: empty reply, MaxUploads replies were under way.
	reasonBusy
	// reasonInternal: the server could not build the reply.
	reasonInternal
	// reasonWrite: a block's reply could not be written in full (the
	// client went away, or the upload timeout or the pace cut it short).
	reasonWrite
	numReasons
)

func (r reason) String() string {
	switch r {
	case reasonMalformed:
		return "malformed"
	case reasonTooLarge:
		return "too_large"
	case reasonUnsupported:
		return "unsupported"
	case reasonUnknownSegment:
		return "unknown_segment"
	case reasonNotHeld:
		return "not_held"
	case reasonBusy:
		return "busy"
	case reasonInternal:
		return "internal"
	default:
		return "write"
	}
}

// Metrics are the Prometheus metrics of a Server (names prefixed
// redleader_pccrr_). Every label value exists from the start, at 0.
type Metrics struct {
	// Requests counts requests by message type: NEGO_REQ, GETBLKLIST,
	// GETBLKS, GETSEGLIST, other.
	Requests *prometheus.CounterVec
	// BlocksServed counts MSG_BLK replies that carried a block (those
	// whose write then failed also count as an Errors "write").
	BlocksServed prometheus.Counter
	// BytesServed counts the plaintext bytes of the blocks served
	// (payload; encryption padding and message fields excluded).
	BytesServed prometheus.Counter
	// Errors counts requests not answered with what they asked for, by
	// reason: malformed, too_large, unsupported, unknown_segment,
	// not_held, busy, internal, write.
	Errors *prometheus.CounterVec
}

// NewMetrics creates the server metrics and registers them with reg when
// it is not nil. Metrics already registered with reg (another agent in the
// same process) are reused.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns, sub = "redleader", "pccrr"
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "requests_total",
			Help: "MS-PCCRR requests received, by message type (other: no readable header or not a request).",
		}, []string{"type"}),
		BlocksServed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "blocks_served_total",
			Help: "MS-PCCRR MSG_BLK replies that carried a block.",
		}),
		BytesServed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "bytes_served_total",
			Help: "Plaintext bytes of the blocks served over MS-PCCRR (padding and headers excluded).",
		}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "errors_total",
			Help: "MS-PCCRR requests not answered with what they asked for, by reason.",
		}, []string{"reason"}),
	}
	if reg != nil {
		m.Requests = promreg.Register(reg, m.Requests)
		m.BlocksServed = promreg.Register(reg, m.BlocksServed)
		m.BytesServed = promreg.Register(reg, m.BytesServed)
		m.Errors = promreg.Register(reg, m.Errors)
	}
	for t := range numReqTypes {
		m.Requests.WithLabelValues(t.String())
	}
	for r := range numReasons {
		m.Errors.WithLabelValues(r.String())
	}
	return m
}

// serverCounters are a server's counters with their labels resolved
// once, so that counting is an atomic add.
type serverCounters struct {
	requests [numReqTypes]prometheus.Counter
	errors   [numReasons]prometheus.Counter
	blocks   prometheus.Counter
	bytes    prometheus.Counter
}

func newServerCounters(m *Metrics) *serverCounters {
	c := &serverCounters{blocks: m.BlocksServed, bytes: m.BytesServed}
	for t := range numReqTypes {
		c.requests[t] = m.Requests.WithLabelValues(t.String())
	}
	for r := range numReasons {
		c.errors[r] = m.Errors.WithLabelValues(r.String())
	}
	return c
}

// requestType is the type of the request whose body starts with b.
func requestType(b []byte) reqType {
	h, err := ParseHeader(b)
	if err != nil {
		return reqOther
	}
	switch h.Type {
	case MsgNegoReq:
		return reqNego
	case MsgGetBlkList:
		return reqBlockList
	case MsgGetBlks:
		return reqBlocks
	case MsgGetSegList:
		return reqSegList
	default:
		return reqOther
	}
}
