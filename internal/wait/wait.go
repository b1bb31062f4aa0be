// Package wait has the one wait-for-a-condition helper that tests share.
package wait

import (
	"testing"
	"time"
)

// Poll is how often For checks its condition.
const Poll = 50 * time.Millisecond

// For polls cond every Poll until it holds, and returns how long that took.
// It fails the test (t.Fatalf, naming what) when timeout passes first.
func For(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("not within %v: %s", timeout, what)
		}
		time.Sleep(Poll)
	}
	return time.Since(start)
}

// ForErr is For for a condition that says why it does not hold yet: it
// polls until cond returns nil and, on timeout, fails with cond's last error.
func ForErr(t testing.TB, timeout time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("not within %v: %s: %v", timeout, what, err)
		}
		time.Sleep(Poll)
	}
}
