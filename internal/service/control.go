package service

import (
	"context"
	"log/slog"
	"time"
)

// The Windows service's control loop, without Windows: the svc glue
// (windows.go) translates golang.org/x/sys/windows/svc's change requests
// and statuses to and from these types and calls Serve; tests drive Serve
// with a channel of their own.

// Control is a request of the service manager to the running service.
type Control int

// Controls the agent handles; every other one is ControlOther.
const (
	ControlInterrogate Control = iota + 1 // report the current status
	ControlStop                           // stop, like SIGTERM
	ControlShutdown                       // the machine shuts down: stop, like SIGTERM
	ControlParamChange                    // re-read the config, like SIGHUP
	ControlOther
)

func (c Control) String() string {
	switch c {
	case ControlInterrogate:
		return "interrogate"
	case ControlStop:
		return "stop"
	case ControlShutdown:
		return "shutdown"
	case ControlParamChange:
		return "paramchange"
	}
	return "other"
}

// State is the service's state as the service manager sees it.
type State int

// States a service reports.
const (
	StateStopped State = iota + 1
	StateStartPending
	StateRunning
	StateStopPending
)

// Accepts is the set of controls the service accepts in its state.
type Accepts uint8

// Controls a running agent accepts (interrogate is always accepted).
const (
	AcceptStop Accepts = 1 << iota
	AcceptShutdown
	AcceptParamChange
)

// Status is what the service reports to the service manager.
type Status struct {
	State   State
	Accepts Accepts
	// WaitHint is how long the pending state may last before the service
	// manager considers the service hung.
	WaitHint time.Duration
}

// Request is one control and the status the manager last received.
type Request struct {
	Control Control
	Current Status
}

// Agent is what a service runs: the agent's lifecycle as the control loop
// drives it.
type Agent interface {
	// Start starts the agent; it returns once it runs.
	Start(ctx context.Context) error
	// Close stops the agent gracefully: it hands over the Red Leader seat
	// and leaves the pool, as on SIGTERM.
	Close() error
	// Reload re-reads the config file and applies what can change live, as
	// on SIGHUP.
	Reload() error
}

// Exit codes Serve returns (service-specific exit codes on Windows).
const (
	ExitOK          uint32 = 0
	ExitStartFailed uint32 = 1
	ExitStopFailed  uint32 = 2
)

// PendingWaitHint is the wait hint of the start and stop pending states:
// a graceful stop hands over the Red Leader seat and leaves the pool.
const PendingWaitHint = 30 * time.Second

// RunningAccepts are the controls a running agent accepts.
const RunningAccepts = AcceptStop | AcceptShutdown | AcceptParamChange

// Serve runs a as a service: it reports start pending, starts a, reports
// running, then serves the requests of reqs until a stop or shutdown (or
// ctx's end), which close a gracefully. A parameter change calls
// a.Reload; a failed reload is logged and the agent keeps running with the
// config it had. Every status goes to report. Serve returns the exit code
// of the service: ExitOK after a clean stop.
func Serve(ctx context.Context, a Agent, reqs <-chan Request, report func(Status), log *slog.Logger) uint32 {
	report(Status{State: StateStartPending, WaitHint: PendingWaitHint})
	if err := a.Start(ctx); err != nil {
		log.Error("agent did not start", "err", err)
		_ = a.Close() // release what Start took
		return ExitStartFailed
	}
	running := Status{State: StateRunning, Accepts: RunningAccepts}
	report(running)
	log.Info("service running")
	for {
		var stop Control
		select {
		case <-ctx.Done():
			stop = ControlStop
		case r := <-reqs:
			switch r.Control {
			case ControlInterrogate:
				report(r.Current)
				continue
			case ControlParamChange:
				log.Info("parameter change received: re-reading the config")
				if err := a.Reload(); err != nil {
					log.Error("config reload failed; the agent keeps its config", "err", err)
				}
				report(running)
				continue
			case ControlStop, ControlShutdown:
				stop = r.Control
			default:
				log.Warn("unexpected service control ignored", "control", r.Control)
				report(running)
				continue
			}
		}
		log.Info("service "+stop.String()+" received: leaving the cluster", "control", stop)
		report(Status{State: StateStopPending, WaitHint: PendingWaitHint})
		if err := a.Close(); err != nil {
			log.Error("agent did not stop cleanly", "err", err)
			return ExitStopFailed
		}
		return ExitOK
	}
}
