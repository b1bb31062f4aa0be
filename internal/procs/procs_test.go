package procs

import (
	"context"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestStep(t *testing.T) {
	cfg := Config{IdleBelow: 0.05, BusyAbove: 0.25, IdleAfter: 30 * time.Second}
	t0 := time.Unix(1000, 0)
	after := func(d time.Duration) time.Time { return t0.Add(d) }
	for _, tc := range []struct {
		name string
		s    state
		use  float64
		now  time.Time
		want state
	}{
		{"first idle sample starts the run", state{procs: 4}, 0.01, t0, state{procs: 4, idleSince: t0}},
		{"idle, not long enough", state{procs: 4, idleSince: t0}, 0.01, after(29 * time.Second), state{procs: 4, idleSince: t0}},
		{"idle long enough: one P", state{procs: 4, idleSince: t0}, 0.01, after(30 * time.Second), state{procs: 1, idleSince: t0}},
		{"light work breaks the idle run", state{procs: 4, idleSince: t0}, 0.10, after(29 * time.Second), state{procs: 4}},
		{"light work on one P keeps one P", state{procs: 1, idleSince: t0}, 0.10, after(40 * time.Second), state{procs: 1}},
		{"busy on one P: every P at once", state{procs: 1, idleSince: t0}, 0.30, after(40 * time.Second), state{procs: 4}},
		{"busy with every P: nothing to do", state{procs: 4}, 1.5, t0, state{procs: 4}},
		{"still idle on one P", state{procs: 1, idleSince: t0}, 0, after(time.Hour), state{procs: 1, idleSince: t0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.s.step(cfg, 4, tc.use, tc.now); got != tc.want {
				t.Errorf("step(%+v, use %.2f) = %+v, want %+v", tc.s, tc.use, got, tc.want)
			}
		})
	}
}

func TestProcessCPUCounts(t *testing.T) {
	c0 := processCPU()
	if c0 < 0 {
		t.Skip("no process CPU time on this platform")
	}
	end := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(end) {
	}
	if d := processCPU() - c0; d < 0.1 {
		t.Errorf("200 ms of spinning counted as %.3f s of CPU", d)
	}
}

// TestGovernorRun: idle, the process drops to one P; spinning goroutines
// get every P back; Run returns the default when cancelled. It changes
// this test binary's GOMAXPROCS, so nothing else runs in parallel with it.
func TestGovernorRun(t *testing.T) {
	if os.Getenv("GOMAXPROCS") != "" || runtime.NumCPU() < 2 {
		t.Skip("needs 2 CPUs and GOMAXPROCS unset")
	}
	// The runtime's default, which Run restores; a test binary may start
	// with another value (go test -cpu).
	runtime.SetDefaultGOMAXPROCS()
	max := runtime.GOMAXPROCS(0)
	g := New(Config{IdleAfter: 500 * time.Millisecond, Sample: 100 * time.Millisecond})
	if g == nil {
		t.Fatal("New returned nil with several CPUs")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.Run(ctx) }()
	defer func() { cancel(); <-done }()

	waitProcs := func(what string, want int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for runtime.GOMAXPROCS(0) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: GOMAXPROCS %d, want %d", what, runtime.GOMAXPROCS(0), want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitProcs("idle", 1)

	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for !stop.Load() { // spin: CPU use
			}
		})
	}
	waitProcs("busy", max)
	stop.Store(true)
	wg.Wait()
	waitProcs("idle again", 1)

	cancel()
	<-done
	if got := runtime.GOMAXPROCS(0); got != max {
		t.Errorf("after Run: GOMAXPROCS %d, want the default %d", got, max)
	}
}

func TestNewOff(t *testing.T) {
	t.Setenv("GOMAXPROCS", "2")
	if g := New(Config{}); g != nil {
		t.Error("New governs although GOMAXPROCS is set in the environment")
	}
	var nilGov *Governor
	nilGov.Run(context.Background()) // returns at once
}
