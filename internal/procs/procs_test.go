package procs

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
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
		{"first idle sample starts the run", state{}, 0.01, t0, state{idleSince: t0}},
		{"idle, not long enough", state{idleSince: t0}, 0.01, after(29 * time.Second), state{idleSince: t0}},
		{"idle long enough: idle", state{idleSince: t0}, 0.01, after(30 * time.Second), state{idle: true, idleSince: t0}},
		{"light work breaks the idle run", state{idleSince: t0}, 0.10, after(29 * time.Second), state{}},
		{"light work while idle stays idle", state{idle: true, idleSince: t0}, 0.10, after(40 * time.Second), state{idle: true}},
		{"busy while idle: busy at once", state{idle: true, idleSince: t0}, 0.30, after(40 * time.Second), state{}},
		{"busy while busy: nothing to do", state{}, 1.5, t0, state{}},
		{"still idle", state{idle: true, idleSince: t0}, 0, after(time.Hour), state{idle: true, idleSince: t0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.s.step(cfg, tc.use, tc.now); got != tc.want {
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

// TestGovernorRun: idle, the process drops to one P, GOGC 50 and (if it
// may set it) DefaultIdleTimerSlack; spinning goroutines get every P, the
// GOGC before and the default slack back; Run returns the defaults when
// cancelled. It changes this test binary's GOMAXPROCS, GOGC and timer
// slack, so nothing else runs in parallel with it.
func TestGovernorRun(t *testing.T) {
	if os.Getenv("GOMAXPROCS") != "" || os.Getenv("GOGC") != "" || runtime.NumCPU() < 2 {
		t.Skip("needs 2 CPUs and GOMAXPROCS, GOGC unset")
	}
	defer debug.SetGCPercent(debug.SetGCPercent(80)) // a busy value Run must give back
	// The runtime's default, which Run restores; a test binary may start
	// with another value (go test -cpu).
	runtime.SetDefaultGOMAXPROCS()
	max := runtime.GOMAXPROCS(0)
	g := New(Config{IdleAfter: 500 * time.Millisecond, Sample: 100 * time.Millisecond})
	if g == nil {
		t.Fatal("New returned nil with several CPUs")
	}
	idleSlack, busySlack := g.busySlack, g.busySlack // not governed: stays
	if g.slack {
		idleSlack = DefaultIdleTimerSlack
	}
	t.Logf("timer slack governed: %v", g.slack)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.Run(ctx) }()
	defer func() { cancel(); <-done }()

	slack := func() time.Duration { d, _ := timerSlack(); return d }
	waitProcs := func(what string, want, wantGC int, wantSlack time.Duration) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for runtime.GOMAXPROCS(0) != want || gogc() != wantGC || slack() != wantSlack {
			if time.Now().After(deadline) {
				t.Fatalf("%s: GOMAXPROCS %d, GOGC %d, timer slack %v; want %d, %d, %v",
					what, runtime.GOMAXPROCS(0), gogc(), slack(), want, wantGC, wantSlack)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitProcs("idle", 1, DefaultIdleGCPercent, idleSlack)

	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for !stop.Load() { // spin: CPU use
			}
		})
	}
	waitProcs("busy", max, 80, busySlack)
	stop.Store(true)
	wg.Wait()
	waitProcs("idle again", 1, DefaultIdleGCPercent, idleSlack)

	cancel()
	<-done
	if got := runtime.GOMAXPROCS(0); got != max || gogc() != 80 || slack() != busySlack {
		t.Errorf("after Run: GOMAXPROCS %d, GOGC %d, timer slack %v; want the default %d, 80, %v", got, gogc(), slack(), max, busySlack)
	}
}

// gogc reads GOGC from runtime/metrics.
func gogc() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

func TestNewOff(t *testing.T) {
	slackOK, _ := slackGoverned(Config{IdleTimerSlack: DefaultIdleTimerSlack, Log: slog.New(slog.DiscardHandler)})
	for _, tc := range []struct {
		name              string
		env               map[string]string
		nilGov            bool
		wantProcs, wantGC bool
	}{
		// The timer slack, governed when this test may set it, keeps a
		// Governor with both set.
		{"both set", map[string]string{"GOMAXPROCS": "2", "GOGC": "100"}, !slackOK, false, false},
		{"GOMAXPROCS set", map[string]string{"GOMAXPROCS": "2"}, false, false, true},
		{"GOGC set", map[string]string{"GOGC": "off"}, runtime.NumCPU() < 2, runtime.NumCPU() > 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"GOMAXPROCS", "GOGC"} {
				t.Setenv(k, tc.env[k])
			}
			g := New(Config{})
			if (g == nil) != tc.nilGov {
				t.Fatalf("New = %v, want nil: %v", g, tc.nilGov)
			}
			if g != nil && (g.procs != tc.wantProcs || g.gc != tc.wantGC) {
				t.Errorf("governs GOMAXPROCS %v, GOGC %v; want %v, %v", g.procs, g.gc, tc.wantProcs, tc.wantGC)
			}
		})
	}
	var nilGov *Governor
	nilGov.Run(context.Background()) // returns at once
}
