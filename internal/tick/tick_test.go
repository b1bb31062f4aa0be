package tick

import (
	"testing"
	"time"
)

func TestAt(t *testing.T) {
	base := time.Unix(1_700_000_000, 0) // a multiple of every period below
	for _, tc := range []struct {
		name   string
		offset time.Duration
		phase  time.Duration
		d      time.Duration
		want   time.Duration
	}{
		{"on a tick waits a full period", 0, 0, time.Second, time.Second},
		{"just after a tick", time.Millisecond, 0, time.Second, 999 * time.Millisecond},
		{"just before a tick", 999 * time.Millisecond, 0, time.Second, time.Millisecond},
		{"half-second period", 700 * time.Millisecond, 0, 500 * time.Millisecond, 300 * time.Millisecond},
		{"five-second period", 7 * time.Second, 0, 5 * time.Second, 3 * time.Second},
		{"phase shifts the ticks", 100 * time.Millisecond, 250 * time.Millisecond, time.Second, 150 * time.Millisecond},
		{"phase longer than the period", 100 * time.Millisecond, 2250 * time.Millisecond, time.Second, 150 * time.Millisecond},
		{"phase just passed", 300 * time.Millisecond, 250 * time.Millisecond, time.Second, 950 * time.Millisecond},
		{"zero period", time.Millisecond, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := at(base.Add(tc.offset), tc.phase, tc.d); got != tc.want {
				t.Errorf("at(+%v, phase %v, %v) = %v, want %v", tc.offset, tc.phase, tc.d, got, tc.want)
			}
		})
	}
}

// TestPeriodsShareInstants: a 500 ms loop and a 1 s loop armed at
// different times aim at the same instant when their ticks meet.
func TestPeriodsShareInstants(t *testing.T) {
	const ph = 1234567 * time.Microsecond
	now := time.Unix(1_700_000_000, 300*int64(time.Millisecond))
	half := now.Add(at(now, ph, 500*time.Millisecond))
	next := half.Add(at(half, ph, 500*time.Millisecond))
	later := now.Add(40 * time.Millisecond)
	whole := later.Add(at(later, ph, time.Second))
	if !whole.Equal(half) && !whole.Equal(next) {
		t.Errorf("1 s loop wakes at %v, 500 ms loop at %v and %v: want one of the same instants", whole, half, next)
	}
}

func TestUntilInPeriod(t *testing.T) {
	for _, d := range []time.Duration{time.Millisecond, 500 * time.Millisecond, time.Second, time.Minute} {
		if got := Until(d); got <= 0 || got > d {
			t.Errorf("Until(%v) = %v, want in (0, %v]", d, got, d)
		}
	}
}
