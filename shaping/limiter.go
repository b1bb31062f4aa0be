package shaping

import (
	"context"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMinBurst is the smallest burst a Limiter is built with when its
// caller names none: one MS-PCCRR block (64 KiB, peer/content.BlockSize;
// shaping does not import peer). A burst of at least one block lets a
// block pass through the limiter in one piece at any rate.
const DefaultMinBurst = 64 << 10

// burstWindow is how much traffic, at the rate, the bucket holds when that
// is more than the minimum burst. A bucket of exactly one chunk would lose
// the tokens of every timer that fires late, so a fast rate would be cut
// by the timer's slack; a few tens of milliseconds of headroom absorb it.
const burstWindow = 50 * time.Millisecond

// maxBurst caps the bucket of very fast rates (tokens, not memory).
const maxBurst = 1 << 30

// A Limiter paces a byte stream at a Rate that can change at any moment.
// It is a token bucket (golang.org/x/time/rate) counted in bytes whose
// burst is the larger of the minimum burst and 50 ms of traffic at the
// rate. The zero Rate is unlimited: waits return at once.
//
// SetRate takes effect at once, for the goroutines already waiting too:
// x/time/rate's SetLimit changes the rate of later reservations only, and
// a WaitN already asleep would keep the delay it computed at the old rate
// (seconds at a thin peer rate after the agent became the Red Leader). A
// waiter here keeps its place in the queue and, when the rate changes,
// its remaining wait is rescaled by old rate / new rate (ended at once
// when the new rate is unlimited).
//
// A Limiter is safe for concurrent use. A nil *Limiter is unlimited.
type Limiter struct {
	minBurst int

	mu      sync.Mutex
	cur     *generation   // the rate in force
	burst   int           // bucket size at cur.rate; 0 while unlimited
	inner   *rate.Limiter // nil while unlimited
	waiting int           // goroutines asleep in WaitN
}

// A generation is one period of a rate. SetRate ends the current one:
// it links the new generation as next, then closes done, which wakes the
// waiters that reserved under it.
type generation struct {
	rate  Rate
	since time.Time
	done  chan struct{}
	next  *generation // set (under Limiter.mu) before done is closed
}

// NewLimiter returns a Limiter at rate r (0 = unlimited) whose burst is at
// least minBurst bytes; a minBurst below 1 means DefaultMinBurst.
func NewLimiter(r Rate, minBurst int) *Limiter {
	if minBurst < 1 {
		minBurst = DefaultMinBurst
	}
	if minBurst > maxBurst {
		minBurst = maxBurst
	}
	l := &Limiter{minBurst: minBurst, cur: &generation{done: make(chan struct{})}}
	l.setRateAt(time.Now(), r)
	return l
}

// burstFor is the bucket size at rate r: at least minBurst, else the bytes
// of burstWindow at r, at most maxBurst (or minBurst when that is larger).
func burstFor(r Rate, minBurst int) int {
	b := math.Ceil(r.BytesPerSecond() * burstWindow.Seconds())
	switch {
	case b <= float64(minBurst):
		return minBurst
	case b >= maxBurst:
		return maxBurst
	}
	return int(b)
}

// Rate is the rate in force (0 = unlimited).
func (l *Limiter) Rate() Rate {
	if l == nil {
		return Unlimited
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur.rate
}

// Burst is the bucket size in bytes at the rate in force, 0 while unlimited.
func (l *Limiter) Burst() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.burst
}

// MinBurst is the minimum burst the Limiter was built with: the largest
// piece a Reader or Writer moves between two waits while a rate is set.
func (l *Limiter) MinBurst() int {
	if l == nil {
		return DefaultMinBurst
	}
	return l.minBurst
}

// SetRate changes the rate at once (0 or less = unlimited), for the
// goroutines already waiting too. Setting the rate in force does nothing.
func (l *Limiter) SetRate(r Rate) { l.setRateAt(time.Now(), r) }

func (l *Limiter) setRateAt(now time.Time, r Rate) {
	if r < 0 {
		r = Unlimited
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if r == l.cur.rate {
		return
	}
	switch {
	case r == Unlimited:
		// The debt of the finite rate is forgiven: the inner limiter is
		// dropped (not set to rate.Inf, which would keep the debt for
		// the next finite rate) and the next finite rate starts with a
		// full bucket.
		l.inner, l.burst = nil, 0
	case l.inner == nil:
		l.burst = burstFor(r, l.minBurst)
		l.inner = rate.NewLimiter(rate.Limit(r.BytesPerSecond()), l.burst)
	default:
		// The bucket's tokens (or debt) carry over and are paid at the
		// new rate from now on.
		l.burst = burstFor(r, l.minBurst)
		l.inner.SetLimitAt(now, rate.Limit(r.BytesPerSecond()))
		l.inner.SetBurstAt(now, l.burst)
	}
	next := &generation{rate: r, since: now, done: make(chan struct{})}
	l.cur.next = next
	close(l.cur.done)
	l.cur = next
}

// A ticket is one reserved piece: the bytes may pass at `at`, a time
// computed under generation gen.
type ticket struct {
	at  time.Time
	gen *generation
	res *rate.Reservation // nil while unlimited
}

// reserveAt reserves up to n bytes at now and returns the piece's size
// (at most the burst, so a reservation never fails) and its ticket.
func (l *Limiter) reserveAt(now time.Time, n int) (int, ticket) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inner == nil {
		return n, ticket{at: now, gen: l.cur}
	}
	n = min(n, l.burst)
	res := l.inner.ReserveN(now, n)
	return n, ticket{at: now.Add(res.DelayFrom(now)), gen: l.cur, res: res}
}

// rescale follows t from its generation to the rate in force: at each
// rate change after the reservation, the wait left at that moment is
// scaled by old rate / new rate. Called with l.mu held.
func (l *Limiter) rescale(t ticket) ticket {
	for g := t.gen; g.next != nil; g = g.next {
		t.at = rescaleAt(t.at, g.next.since, g.rate, g.next.rate)
		t.gen = g.next
	}
	return t
}

// rescaleAt is when a wait due at `at` ends if the rate changes from
// `from` to `to` at `change`.
func rescaleAt(at, change time.Time, from, to Rate) time.Time {
	switch {
	case !at.After(change):
		return at
	case to == Unlimited:
		return change
	case from == Unlimited:
		return at // an unlimited reservation never waits
	}
	d := float64(at.Sub(change)) * (float64(from) / float64(to))
	if d >= math.MaxInt64 {
		return change.Add(math.MaxInt64)
	}
	return change.Add(time.Duration(d))
}

// WaitN blocks until n bytes may pass, or ctx is done. It takes the bytes
// in pieces of at most the burst, so any n is allowed; a rate change
// takes effect for the piece being waited for and the ones after it. On
// ctx's end it returns ctx.Err() and gives back the piece being waited
// for if the rate has not changed since it was reserved.
func (l *Limiter) WaitN(ctx context.Context, n int) error {
	if l == nil || n <= 0 {
		return nil
	}
	for n > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		piece, t := l.reserveAt(time.Now(), n)
		n -= piece
		if err := l.sleep(ctx, t); err != nil {
			return err
		}
	}
	return nil
}

// sleep waits until t is due, following rate changes, or until ctx ends.
func (l *Limiter) sleep(ctx context.Context, t ticket) error {
	d := time.Until(t.at)
	if d <= 0 {
		return nil
	}
	l.mu.Lock()
	l.waiting++
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.waiting--
		l.mu.Unlock()
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
			return nil
		case <-ctx.Done():
			l.mu.Lock()
			if t.gen == l.cur && t.res != nil {
				t.res.CancelAt(time.Now())
			}
			l.mu.Unlock()
			return ctx.Err()
		case <-t.gen.done:
			l.mu.Lock()
			t = l.rescale(t)
			l.mu.Unlock()
			d := time.Until(t.at)
			if d <= 0 {
				return nil
			}
			timer.Reset(d)
		}
	}
}

// waiters is the number of goroutines asleep in WaitN.
func (l *Limiter) waiters() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waiting
}
