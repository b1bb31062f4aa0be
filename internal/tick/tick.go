// Package tick lines an agent's periodic loops up on shared instants.
//
// Most of what an idle agent costs is waking its process up, not the
// work done once awake: each loop with its own time.Ticker wakes the
// process at its own phase. A loop that waits Until(d) instead wakes on
// the instants phase + k·d, with one phase for the whole process, so loops
// whose periods divide one another (500 ms, 1 s, 5 s…) wake the process
// together and the Go runtime fires their timers in one pass.
//
// The phase is drawn at random when the process starts: agents across a
// subnet do not all wake (and pull from the Raft leader) at the same
// instant, as they would on bare multiples of the wall clock.
package tick

import (
	"math/rand/v2"
	"time"
)

// phase is this process's offset of every tick, drawn once at start and
// never changed.
var phase = time.Duration(rand.Int64N(int64(time.Hour)))

// Until is the wait from now to this process's next tick of period d (in
// (0, d]). Loops re-arm their timer with it after every tick:
//
//	t := time.NewTimer(tick.Until(d))
//	for { <-t.C; work(); t.Reset(tick.Until(d)) }
func Until(d time.Duration) time.Duration {
	return at(time.Now(), phase, d)
}

// at is the wait from now to the next instant phase + k·d.
func at(now time.Time, phase, d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d - time.Duration((now.UnixNano()-int64(phase))%int64(d)+int64(d))%d
}
