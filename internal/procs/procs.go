// Package procs runs an idle agent's goroutines on one processor (P) with
// a tighter garbage collector, and a busy agent's on all of them with the
// runtime's defaults.
//
// An idle agent does nothing but wake up: a timer, a packet. With
// GOMAXPROCS > 1, the Go scheduler meets each wake-up by waking a second
// thread to look for more work, which finds none and sleeps again: on the
// 2-core lab VM an idle agent with one P costs about a fifth less CPU. Its
// heap is mostly long-lived state and it allocates little, so collecting at
// 1.5× the live heap (GOGC 50) rather than 2× keeps about 1 MB less
// resident for collections it does not notice. A busy agent (serving
// blocks, hashing, fetching) wants every core and the default GOGC.
//
// A Governor samples the process's CPU time on the shared tick
// (package tick: it adds no wake-up of its own), goes idle once the agent
// has stayed under IdleBelow for IdleAfter, and busy again within a tick
// of it using BusyAbove. GOMAXPROCS or GOGC set in the environment leaves
// that knob to the operator.
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
	Log           *slog.Logger
}

// Governor sets GOMAXPROCS and GOGC from the agent's CPU use. Run owns it.
type Governor struct {
	cfg   Config
	procs bool // GOMAXPROCS is governed: several CPUs, not set in the environment
	gc    bool // GOGC is governed: not set in the environment
	busyG int  // GOGC while busy (the runtime's, saved when going idle)
}

// New returns a Governor, or nil when there is nothing to govern: no way to
// read the process's CPU time, or GOGC set in the environment and
// GOMAXPROCS either set too or without a choice (one CPU). A knob set in
// the environment is the operator's choice and stays as set.
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
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	g := &Governor{
		cfg:   cfg,
		procs: os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) > 1,
		gc:    os.Getenv("GOGC") == "",
	}
	if !g.procs && !g.gc || processCPU() < 0 {
		return nil
	}
	return g
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
