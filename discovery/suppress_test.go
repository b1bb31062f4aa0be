package discovery

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/peer/content"
)

// fixedRand returns a *rand.Rand whose Float64 always returns u (exact for
// multiples of 2^-53).
func fixedRand(u float64) *rand.Rand {
	return rand.New(constSource(uint64(u * (1 << 53))))
}

// constSource is a rand.Source returning one 53-bit value, so that
// rand.Float64 returns value/2^53.
type constSource uint64

func (c constSource) Uint64() uint64 { return uint64(c) }

func TestSuppressionRule(t *testing.T) {
	const n, p = DefaultReplyThreshold, DefaultReplyProbability
	tests := []struct {
		name          string
		recorded      bool
		replies, full int
		u             float64 // the random draw
		want          bool
		wantDraw      bool // the random source is consulted
	}{
		{name: "never fetched", recorded: false, want: true},
		{name: "no replies", recorded: true, replies: 0, full: 0, want: true},
		{name: "fewer than n replies", recorded: true, replies: n - 1, full: n - 1, want: true},
		{name: "n replies all full", recorded: true, replies: n, full: n, want: false},
		{name: "many replies, many full", recorded: true, replies: 40, full: 25, want: false},
		{name: "n replies, n-1 full, draw below p", recorded: true, replies: n, full: n - 1, u: 0.25, want: true, wantDraw: true},
		{name: "n replies, none full, draw at p", recorded: true, replies: n, full: 0, u: p, want: false, wantDraw: true},
		{name: "many replies, few full, draw above p", recorded: true, replies: 30, full: 3, u: 0.9, want: false, wantDraw: true},
		{name: "many replies, few full, draw zero", recorded: true, replies: 30, full: 3, u: 0, want: true, wantDraw: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSuppressor(n, p)
			id := testSegment(9)
			if tt.recorded {
				s.record(id, tt.replies, tt.full)
			}
			drew := false
			got := s.answer(id, func() float64 { drew = true; return tt.u })
			if got != tt.want || drew != tt.wantDraw {
				t.Errorf("answer = %v (drew %v), want %v (drew %v)", got, drew, tt.want, tt.wantDraw)
			}
		})
	}
}

// TestSuppressionProbability: with a seeded source the partial branch
// answers close to 33% of the time.
func TestSuppressionProbability(t *testing.T) {
	s := newSuppressor(DefaultReplyThreshold, DefaultReplyProbability)
	id := testSegment(1)
	s.record(id, 12, 2)
	r := rand.New(rand.NewPCG(1, 2))
	yes := 0
	const trials = 10000
	for range trials {
		if s.answer(id, r.Float64) {
			yes++
		}
	}
	if got := float64(yes) / trials; math.Abs(got-DefaultReplyProbability) > 0.02 {
		t.Errorf("answered %.3f of probes, want about %.2f", got, DefaultReplyProbability)
	}
}

func TestSuppressorBounded(t *testing.T) {
	nth := func(i int) content.SegmentID {
		var id content.SegmentID
		id[0], id[1], id[2], id[3] = 0xff, byte(i), byte(i>>8), byte(i>>16)
		return id
	}
	s := newSuppressor(1, 0)
	for i := range maxFetchRecords {
		s.record(nth(i), 5, 5)
	}
	// Consulting the oldest record makes it the most recently used.
	if s.answer(nth(0), func() float64 { return 0 }) {
		t.Fatal("recorded segment answered")
	}
	const extra = 10
	for i := range extra {
		s.record(nth(maxFetchRecords+i), 5, 5)
	}
	if n := s.records.Len(); n != maxFetchRecords {
		t.Errorf("%d records, want %d", n, maxFetchRecords)
	}
	// The least recently used records went: 1..extra, not the consulted
	// record 0 and none of the newest.
	for i := 1; i <= extra; i++ {
		if _, ok := s.records.Peek(nth(i)); ok {
			t.Errorf("record %d kept, want it evicted", i)
		}
		if !s.answer(nth(i), func() float64 { return 0 }) {
			t.Errorf("evicted record %d: segment not answered", i)
		}
	}
	for _, i := range []int{0, extra + 1, maxFetchRecords - 1, maxFetchRecords, maxFetchRecords + extra - 1} {
		if _, ok := s.records.Peek(nth(i)); !ok {
			t.Errorf("record %d evicted, want it kept", i)
		}
	}

	s.record(testSegment(0), -3, -1)
	if rec, _ := s.records.Peek(testSegment(0)); rec.replies != 0 || rec.full != 0 {
		t.Errorf("negative counts stored: %+v", rec)
	}
	s.forget(testSegment(0))
	if _, ok := s.records.Peek(testSegment(0)); ok {
		t.Error("forgotten record kept")
	}
}

// TestRecentSet: keys are duplicates within the window only; a full set
// drops the key recorded longest ago and keeps the newest.
func TestRecentSet(t *testing.T) {
	const window = 500 * time.Millisecond
	t0 := time.Unix(1000, 0)
	s := newRecentSet(window, 3)
	steps := []struct {
		key  string
		at   time.Duration
		want bool
	}{
		{"a", 0, false},
		{"b", 0, false},
		{"c", time.Millisecond, false},
		{"a", 2 * time.Millisecond, true},  // a duplicate does not refresh a
		{"d", 3 * time.Millisecond, false}, // full: evicts a, the oldest
		{"d", 4 * time.Millisecond, true},  // the newest key is remembered
		{"c", 5 * time.Millisecond, true},
		{"a", 6 * time.Millisecond, false}, // a was evicted; now evicts b
		{"b", 7 * time.Millisecond, false},
		{"a", window - time.Nanosecond + 6*time.Millisecond, true},
		{"a", window + 6*time.Millisecond, false}, // expired
	}
	for i, st := range steps {
		if got := s.seen(st.key, t0.Add(st.at)); got != st.want {
			t.Fatalf("step %d: seen(%q, +%v) = %v, want %v", i, st.key, st.at, got, st.want)
		}
	}
}

func TestBackoffRange(t *testing.T) {
	for _, maxB := range []time.Duration{time.Millisecond, 2 * time.Millisecond, DefaultMaxBackoff, time.Second} {
		// The extremes of the random draw.
		if d := backoff(maxB, 0); d != time.Millisecond {
			t.Errorf("max %v: backoff(0) = %v, want 1ms", maxB, d)
		}
		if d := backoff(maxB, math.Nextafter(1, 0)); d < time.Millisecond || d > maxB {
			t.Errorf("max %v: backoff(~1) = %v", maxB, d)
		}
		// A seeded responder's draws.
		cfg := DefaultResponderConfig()
		cfg.MaxBackoff = maxB
		cfg.Rand = rand.New(rand.NewPCG(7, uint64(maxB)))
		cfg.XAddrs = staticXAddrs("127.0.0.1:1")
		r, err := NewResponder(cfg, newMemoryHolder(), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		lo, hi := time.Hour, time.Duration(0)
		for range 20000 {
			d := r.backoffLocked()
			lo, hi = min(lo, d), max(hi, d)
		}
		if lo < time.Millisecond || hi > maxB {
			t.Errorf("max %v: backoffs in [%v, %v]", maxB, lo, hi)
		}
		if span := maxB - time.Millisecond; span > 0 && (lo-time.Millisecond > span/100 || maxB-hi > span/100) {
			t.Errorf("max %v: backoffs [%v, %v] do not cover the range", maxB, lo, hi)
		}
	}
}
