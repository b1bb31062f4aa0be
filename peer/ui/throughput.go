package ui

import (
	"context"
	"sync"
	"time"

	"github.com/redleader-p2p/redleader/internal/tick"
	"github.com/redleader-p2p/redleader/peer/api"
)

// Defaults of the throughput recorder: one sample a second, five minutes
// kept.
const (
	DefaultInterval = time.Second
	DefaultKeep     = 300
)

// Recorder keeps the last samples of an agent's byte counters: each sample
// is what the counters grew by during one interval. Sample is called by
// Run's loop (or a test); Snapshot by the API handler. It is safe for
// concurrent use.
type Recorder struct {
	read     func() api.ThroughputTotals
	interval time.Duration

	mu     sync.Mutex
	ring   []api.ThroughputSample // circular, len ≤ cap = keep
	start  int                    // index of the oldest sample in ring
	seq    uint64                 // of the newest sample
	last   api.ThroughputTotals   // the counters at the last Sample
	primed bool                   // last is set
}

// NewRecorder returns a recorder of the counters read returns, keeping the
// last keep samples of interval each (DefaultKeep and DefaultInterval when
// ≤ 0). read must be safe to call from Run's goroutine.
func NewRecorder(read func() api.ThroughputTotals, interval time.Duration, keep int) *Recorder {
	if interval <= 0 {
		interval = DefaultInterval
	}
	if keep <= 0 {
		keep = DefaultKeep
	}
	return &Recorder{read: read, interval: interval, ring: make([]api.ThroughputSample, 0, keep)}
}

// Run samples every interval until ctx is done. The first reading only
// sets the baseline.
func (r *Recorder) Run(ctx context.Context) {
	r.Sample(time.Now())
	t := time.NewTimer(tick.Until(r.interval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			t.Reset(tick.Until(r.interval))
			r.Sample(now)
		}
	}
}

// Sample reads the counters and records their growth since the last call
// as the sample ending at now. The first call records nothing. A counter
// that went down (it was reset) counts 0 for that interval.
func (r *Recorder) Sample(now time.Time) {
	cur := r.read()
	r.mu.Lock()
	defer r.mu.Unlock()
	prev, primed := r.last, r.primed
	r.last, r.primed = cur, true
	if !primed {
		return
	}
	r.seq++
	s := api.ThroughputSample{Seq: r.seq, Time: now.UTC(), WAN: grew(prev.WAN, cur.WAN),
		LANIn: grew(prev.LANIn, cur.LANIn), LANOut: grew(prev.LANOut, cur.LANOut)}
	if len(r.ring) < cap(r.ring) {
		r.ring = append(r.ring, s)
		return
	}
	r.ring[r.start] = s
	r.start = (r.start + 1) % len(r.ring)
}

func grew(from, to int64) int64 { return max(to-from, 0) }

// Snapshot returns the counters now and the samples newer than since (all
// those kept when since is 0), oldest first.
func (r *Recorder) Snapshot(since uint64) api.ThroughputResponse {
	totals := r.read()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := api.ThroughputResponse{IntervalS: int(r.interval / time.Second), Seq: r.seq, Totals: totals,
		Samples: []api.ThroughputSample{}}
	for i := range r.ring {
		s := r.ring[(r.start+i)%len(r.ring)]
		if s.Seq > since {
			out.Samples = append(out.Samples, s)
		}
	}
	return out
}
