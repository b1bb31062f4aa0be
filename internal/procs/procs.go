// Package procs runs an idle agent's goroutines on one processor (P) and
// a busy agent's on all of them.
//
// An idle agent does nothing but wake up: a timer, a packet. With
// GOMAXPROCS > 1, the Go scheduler meets each wake-up by waking a second
// thread to look for more work, which finds none and sleeps again: on the
// 2-core lab VM an idle agent with one P costs about a fifth less CPU. A
// busy agent (serving blocks, hashing, fetching) wants every core.
//
// A Governor samples the process's CPU time on the shared tick
// (package tick: it adds no wake-up of its own) and sets GOMAXPROCS to 1
// once the agent has stayed under IdleBelow for IdleAfter, and back to the
// runtime's default (the CPUs the process may use) within a tick of it
// using BusyAbove. GOMAXPROCS set in the environment turns it off.
package procs

import (
	"context"
	"log/slog"
	"os"
	"runtime"
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
)

// Config tunes a Governor; zero fields take the defaults above.
type Config struct {
	IdleBelow float64       // CPU use, in cores, under which a sample is idle
	BusyAbove float64       // CPU use, in cores, over which one P is not enough
	IdleAfter time.Duration // idle this long → one P
	Sample    time.Duration // sampling period
	Log       *slog.Logger
}

// Governor sets GOMAXPROCS from the agent's CPU use. Run owns it.
type Governor struct {
	cfg Config
	max int // the runtime's default GOMAXPROCS
}

// New returns a Governor, or nil when there is nothing to govern: one CPU,
// GOMAXPROCS set in the environment (the operator's choice stands), or no
// way to read the process's CPU time.
func New(cfg Config) *Governor {
	if os.Getenv("GOMAXPROCS") != "" {
		return nil
	}
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
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	max := runtime.GOMAXPROCS(0)
	if max < 2 || processCPU() < 0 {
		return nil
	}
	return &Governor{cfg: cfg, max: max}
}

// Run governs until ctx is done, then gives the runtime its default back.
// A nil Governor returns at once.
func (g *Governor) Run(ctx context.Context) {
	if g == nil {
		return
	}
	defer runtime.SetDefaultGOMAXPROCS()
	s := state{procs: g.max}
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
		next := s.step(g.cfg, g.max, use, now)
		if next.procs != s.procs {
			if next.procs == g.max {
				runtime.SetDefaultGOMAXPROCS()
				next.procs = runtime.GOMAXPROCS(0) // the default may have moved (cgroup)
			} else {
				runtime.GOMAXPROCS(next.procs)
			}
			g.cfg.Log.Debug("GOMAXPROCS set", "procs", next.procs, "cpu_cores", use)
		}
		s = next
		t.Reset(tick.Until(g.cfg.Sample))
	}
}

// state is what the decision needs between samples.
type state struct {
	procs     int       // current GOMAXPROCS
	idleSince time.Time // start of the current run of idle samples; zero: none
}

// step decides the next state from one sample: use is the CPU the process
// used since the last sample, in cores.
func (s state) step(cfg Config, max int, use float64, now time.Time) state {
	switch {
	case s.procs == 1 && use >= cfg.BusyAbove:
		return state{procs: max}
	case use >= cfg.IdleBelow:
		s.idleSince = time.Time{}
	case s.idleSince.IsZero():
		s.idleSince = now
	case s.procs > 1 && now.Sub(s.idleSince) >= cfg.IdleAfter:
		s.procs = 1
	}
	return s
}
