package ui

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/peer/api"
)

// counters is a settable source for a Recorder.
type counters struct {
	mu sync.Mutex
	t  api.ThroughputTotals
}

func (c *counters) set(wan, lanIn, lanOut int64) {
	c.mu.Lock()
	c.t = api.ThroughputTotals{WAN: wan, LANIn: lanIn, LANOut: lanOut}
	c.mu.Unlock()
}

func (c *counters) read() api.ThroughputTotals {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// TestRecorder: samples are the growth of the counters per interval, the
// first reading is only a baseline, a counter that went down counts 0,
// the ring keeps the newest samples, and since filters by sequence.
func TestRecorder(t *testing.T) {
	type step struct{ wan, lanIn, lanOut int64 }
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name  string
		keep  int
		steps []step
		since uint64
		want  []api.ThroughputSample // Seq, WAN, LANIn, LANOut
		seq   uint64
	}{
		{name: "baseline only", keep: 5, steps: []step{{100, 50, 7}}, want: nil, seq: 0},
		{name: "growth", keep: 5, steps: []step{{100, 50, 7}, {300, 50, 10}, {300, 90, 10}},
			want: []api.ThroughputSample{{Seq: 1, WAN: 200, LANOut: 3}, {Seq: 2, LANIn: 40}}, seq: 2},
		{name: "reset counts zero", keep: 5, steps: []step{{100, 50, 7}, {20, 10, 1}, {25, 10, 1}},
			want: []api.ThroughputSample{{Seq: 1}, {Seq: 2, WAN: 5}}, seq: 2},
		{name: "ring keeps the newest", keep: 2, steps: []step{{0, 0, 0}, {1, 0, 0}, {3, 0, 0}, {6, 0, 0}, {10, 0, 0}},
			want: []api.ThroughputSample{{Seq: 3, WAN: 3}, {Seq: 4, WAN: 4}}, seq: 4},
		{name: "since", keep: 5, steps: []step{{0, 0, 0}, {1, 0, 0}, {3, 0, 0}, {6, 0, 0}}, since: 2,
			want: []api.ThroughputSample{{Seq: 3, WAN: 3}}, seq: 3},
		{name: "since the newest", keep: 5, steps: []step{{0, 0, 0}, {1, 0, 0}}, since: 1, want: nil, seq: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c counters
			r := NewRecorder(c.read, time.Second, tc.keep)
			for i, s := range tc.steps {
				c.set(s.wan, s.lanIn, s.lanOut)
				r.Sample(t0.Add(time.Duration(i) * time.Second))
			}
			got := r.Snapshot(tc.since)
			if got.Seq != tc.seq || got.IntervalS != 1 || got.Totals != c.read() {
				t.Errorf("seq %d, interval %d, totals %+v; want seq %d, interval 1, totals %+v",
					got.Seq, got.IntervalS, got.Totals, tc.seq, c.read())
			}
			if got.Samples == nil {
				t.Error("samples is nil (JSON null), want []")
			}
			if len(got.Samples) != len(tc.want) {
				t.Fatalf("samples %+v, want %+v", got.Samples, tc.want)
			}
			for i, w := range tc.want {
				g := got.Samples[i]
				wantTime := t0.Add(time.Duration(w.Seq) * time.Second)
				if g.Seq != w.Seq || g.WAN != w.WAN || g.LANIn != w.LANIn || g.LANOut != w.LANOut || !g.Time.Equal(wantTime) {
					t.Errorf("sample %d = %+v, want %+v at %v", i, g, w, wantTime)
				}
			}
		})
	}
}

// TestRecorderRun: Run samples on its own until its context ends, and
// returns then.
func TestRecorderRun(t *testing.T) {
	var c counters
	r := NewRecorder(c.read, 10*time.Millisecond, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	var n int64
	for r.Snapshot(0).Seq < 5 {
		if time.Now().After(deadline) {
			t.Fatal("Run took no 5 samples in 5 s")
		}
		n += 1000
		c.set(n, 0, 0)
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	var sum int64
	snap := r.Snapshot(0)
	for _, s := range snap.Samples {
		sum += s.WAN
	}
	if sum == 0 || sum > snap.Totals.WAN {
		t.Errorf("samples add up to %d of %d counted", sum, snap.Totals.WAN)
	}
}
