// Package procs runs an idle agent's goroutines on one processor (P) with
// a tighter garbage collector and looser timers, and a busy agent's on all
// of them with the runtime's defaults.
//
// An idle agent does nothing but wake up: a timer, a packet. With
// GOMAXPROCS > 1, the Go scheduler meets each wake-up by waking a second
// thread to look for more work, which finds none and sleeps again: on the
// 2-core lab VM an idle agent with one P costs about a fifth less CPU. Its
// heap is mostly long-lived state and it allocates little, so collecting at
// 1.5× the live heap (GOGC 50) rather than 2× keeps about 1 MB less
// resident for collections it does not notice. On Linux its threads also
// get 5 ms of timer slack (prctl(2)): the kernel may fire their timed
// sleeps that much later, to merge wake-ups. That matters for the
// runtime's monitor thread (sysmon): every system call wakes it, and it
// then polls every 20 µs while any goroutine runs; with the slack its next
// look mostly finds the agent asleep again. Timers a few milliseconds
// apart also share one wake-up. Side by side on the lab VM: 60 % fewer
// context switches, 15-30 % less CPU. A busy agent (serving blocks,
// hashing, fetching) wants every core, the default GOGC and prompt timers.
//
// A Governor samples the process's CPU time on the shared tick
// (package tick: it adds no wake-up of its own), goes idle once the agent
// has stayed under IdleBelow for IdleAfter, and busy again within a tick
// of it using BusyAbove. GOMAXPROCS or GOGC set in the environment, or a
// timer slack other than the kernel's default (systemd's TimerSlackNSec=),
// leaves that knob to the operator. Setting the slack of the runtime's
// threads needs CAP_SYS_NICE; without it, that knob is left alone.
package procs

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/redleader-p2p/redleader/internal/tick"
)

// Defaults of Config.
const (
	// DefaultIdleBelow: an idle agent uses under 1 % of a core; 5 % leaves
	// room for a busy VM without counting light work as idle.
	DefaultIdleBelow = 0.05
	// DefaultBusyAbove: a quarter of the one P busy means work has come;
	// a transfer's first second runs on one P, which still serves several
	// hundred MB/s.
	DefaultBusyAbove = 0.25
	// DefaultIdleAfter keeps every P through the short pauses of a
	// transfer; a longer pause costs a second on one P when work resumes.
	DefaultIdleAfter = 10 * time.Second
	// DefaultSample is how often the CPU time is read.
	DefaultSample = time.Second
	// DefaultIdleGCPercent is GOGC while idle: about 1 MB less RSS on the
	// lab VM (17.1-17.7 MB against 17.6-18.7 MB side by side).
	DefaultIdleGCPercent = 50
	// DefaultIdleTimerSlack: 1 ms took the context switches of an idle
	// agent from 76-105/s to 34-42/s on the lab VM. 5 ms also covers the
	// few milliseconds between the agent's ticks and memberlist's, which
	// start just after one (peer): 30-35/s. An idle agent's timers are
	// hundreds of milliseconds long.
	DefaultIdleTimerSlack = 5 * time.Millisecond
)

// Config tunes a Governor; zero fields take the defaults above.
type Config struct {
	IdleBelow float64       // CPU use, in cores, under which a sample is idle
	BusyAbove float64       // CPU use, in cores, over which one P is not enough
	IdleAfter time.Duration // idle this long → one P
	Sample    time.Duration // sampling period
	// IdleGCPercent is GOGC while idle. Lower: less memory held, more
	// collections (an idle agent allocates little).
	IdleGCPercent int
	// IdleTimerSlack is the Linux timer slack of the process's threads
	// while idle: how late the kernel may fire a timed sleep. Longer:
	// fewer wake-ups merged, later timers.
	IdleTimerSlack time.Duration
	Log            *slog.Logger
}

// Governor sets GOMAXPROCS, GOGC and the timer slack from the agent's CPU
// use. Run owns it.
type Governor struct {
	cfg       Config
	procs     bool          // GOMAXPROCS is governed: several CPUs, not set in the environment
	gc        bool          // GOGC is governed: not set in the environment
	slack     bool          // timer slack is governed: Linux, the kernel's default at start, permitted
	busyG     int           // GOGC while busy (the runtime's, saved when going idle)
	busySlack time.Duration // timer slack while busy (the process's at start)
}

// New returns a Governor, or nil when there is nothing to govern: no way to
// read the process's CPU time, or GOGC set in the environment, GOMAXPROCS
// either set too or without a choice (one CPU), and the timer slack not
// ours to set. A knob set by the operator stays as set.
func New(cfg Config) *Governor {
	if cfg.IdleBelow <= 0 {
		cfg.IdleBelow = DefaultIdleBelow
	}
	if cfg.BusyAbove <= 0 {
		cfg.BusyAbove = DefaultBusyAbove
	}
	if cfg.IdleAfter <= 0 {
		cfg.IdleAfter = DefaultIdleAfter
	}
	if cfg.Sample <= 0 {
		cfg.Sample = DefaultSample
	}
	if cfg.IdleGCPercent <= 0 {
		cfg.IdleGCPercent = DefaultIdleGCPercent
	}
	if cfg.IdleTimerSlack == 0 {
		cfg.IdleTimerSlack = DefaultIdleTimerSlack
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	g := &Governor{
		cfg:   cfg,
		procs: os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) > 1,
		gc:    os.Getenv("GOGC") == "",
	}
	g.slack, g.busySlack = slackGoverned(cfg)
	if !g.procs && !g.gc && !g.slack || processCPU() < 0 {
		return nil
	}
	return g
}

// slackGoverned reports whether the Governor may set the timer slack, and
// the process's: on Linux, if it is the kernel's default and setting every
// thread's (to that same value) is permitted.
func slackGoverned(cfg Config) (bool, time.Duration) {
	cur, err := timerSlack()
	if err != nil || cur != defaultTimerSlack || cfg.IdleTimerSlack <= cur {
		return false, cur
	}
	if err := setTimerSlack(cur); err != nil {
		cfg.Log.Debug("timer slack left alone", "err", err)
		return false, cur
	}
	return true, cur
}

// Run governs until ctx is done, then gives the runtime its defaults back.
// A nil Governor returns at once.
func (g *Governor) Run(ctx context.Context) {
	if g == nil {
		return
	}
	var s state
	defer func() {
		if s.idle {
			g.busy()
		}
	}()
	last, lastAt := processCPU(), time.Now()
	t := time.NewTimer(tick.Until(g.cfg.Sample))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now, cpu := time.Now(), processCPU()
		use := (cpu - last) / now.Sub(lastAt).Seconds()
		last, lastAt = cpu, now
		next := s.step(g.cfg, use, now)
		if next.idle != s.idle {
			if next.idle {
				g.idle()
			} else {
				g.busy()
			}
			g.cfg.Log.Debug("runtime set", "idle", next.idle, "procs", runtime.GOMAXPROCS(0), "cpu_cores", use)
		}
		s = next
		t.Reset(tick.Until(g.cfg.Sample))
	}
}

// idle sets the idle values of the governed knobs.
func (g *Governor) idle() {
	if g.procs {
		runtime.GOMAXPROCS(1)
	}
	if g.gc {
		g.busyG = debug.SetGCPercent(g.cfg.IdleGCPercent)
	}
	if g.slack {
		g.setSlack(g.cfg.IdleTimerSlack)
	}
}

// busy gives the governed knobs their busy values back: the runtime's
// default GOMAXPROCS (cgroup-aware: it may have moved) and the GOGC that
// idle replaced.
func (g *Governor) busy() {
	if g.procs {
		runtime.SetDefaultGOMAXPROCS()
	}
	if g.gc {
		debug.SetGCPercent(g.busyG)
	}
	if g.slack {
		g.setSlack(g.busySlack)
	}
}

// setSlack sets every thread's timer slack; a failure (a thread that
// cannot be written) is logged and leaves the others as set.
func (g *Governor) setSlack(d time.Duration) {
	if err := setTimerSlack(d); err != nil {
		g.cfg.Log.Warn("cannot set the timer slack", "slack", d, "err", err)
	}
}

// state is what the decision needs between samples.
type state struct {
	idle      bool      // the idle values are set
	idleSince time.Time // start of the current run of idle samples; zero: none
}

// step decides the next state from one sample: use is the CPU the process
// used since the last sample, in cores.
func (s state) step(cfg Config, use float64, now time.Time) state {
	switch {
	case s.idle && use >= cfg.BusyAbove:
		return state{}
	case use >= cfg.IdleBelow:
		s.idleSince = time.Time{}
	case s.idleSince.IsZero():
		s.idleSince = now
	case !s.idle && now.Sub(s.idleSince) >= cfg.IdleAfter:
		s.idle = true
	}
	return s
}
