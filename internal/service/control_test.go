package service

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAgent records the control loop's calls.
type fakeAgent struct {
	mu        sync.Mutex
	calls     []string
	startErr  error
	closeErr  error
	reloadErr error
}

func (a *fakeAgent) record(c string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, c)
}

func (a *fakeAgent) Start(context.Context) error { a.record("start"); return a.startErr }
func (a *fakeAgent) Close() error                { a.record("close"); return a.closeErr }
func (a *fakeAgent) Reload() error               { a.record("reload"); return a.reloadErr }

func (a *fakeAgent) Calls() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.calls)
}

// TestServe drives the control loop as the Windows service manager would:
// a channel of requests, a channel of the statuses reported.
func TestServe(t *testing.T) {
	running := Status{State: StateRunning, Accepts: RunningAccepts}
	startPending := Status{State: StateStartPending, WaitHint: PendingWaitHint}
	stopPending := Status{State: StateStopPending, WaitHint: PendingWaitHint}
	boom := errors.New("boom")
	for _, tc := range []struct {
		name      string
		agent     *fakeAgent
		controls  []Control
		code      uint32
		calls     []string
		statuses  []Status
		logWanted string
	}{
		{
			name:     "stop",
			agent:    &fakeAgent{},
			controls: []Control{ControlStop},
			code:     ExitOK,
			calls:    []string{"start", "close"},
			statuses: []Status{startPending, running, stopPending},
		},
		{
			name:     "shutdown",
			agent:    &fakeAgent{},
			controls: []Control{ControlShutdown},
			code:     ExitOK,
			calls:    []string{"start", "close"},
			statuses: []Status{startPending, running, stopPending},
		},
		{
			name:      "interrogate, parameter change, stop",
			agent:     &fakeAgent{},
			controls:  []Control{ControlInterrogate, ControlParamChange, ControlStop},
			code:      ExitOK,
			calls:     []string{"start", "reload", "close"},
			statuses:  []Status{startPending, running, running, running, stopPending},
			logWanted: "parameter change received",
		},
		{
			name:      "failed reload keeps running",
			agent:     &fakeAgent{reloadErr: boom},
			controls:  []Control{ControlParamChange, ControlParamChange, ControlShutdown},
			code:      ExitOK,
			calls:     []string{"start", "reload", "reload", "close"},
			statuses:  []Status{startPending, running, running, running, stopPending},
			logWanted: "config reload failed",
		},
		{
			name:      "unknown control ignored",
			agent:     &fakeAgent{},
			controls:  []Control{ControlOther, ControlStop},
			code:      ExitOK,
			calls:     []string{"start", "close"},
			statuses:  []Status{startPending, running, running, stopPending},
			logWanted: "unexpected service control",
		},
		{
			name:      "start fails",
			agent:     &fakeAgent{startErr: boom},
			code:      ExitStartFailed,
			calls:     []string{"start", "close"},
			statuses:  []Status{startPending},
			logWanted: "agent did not start",
		},
		{
			name:      "stop fails",
			agent:     &fakeAgent{closeErr: boom},
			controls:  []Control{ControlStop},
			code:      ExitStopFailed,
			calls:     []string{"start", "close"},
			statuses:  []Status{startPending, running, stopPending},
			logWanted: "agent did not stop cleanly",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			reqs := make(chan Request)
			var mu sync.Mutex
			var statuses []Status
			last := func() Status {
				mu.Lock()
				defer mu.Unlock()
				return statuses[len(statuses)-1]
			}
			isRunning := make(chan struct{})
			report := func(s Status) {
				mu.Lock()
				defer mu.Unlock()
				if s.State == StateRunning && !slices.ContainsFunc(statuses, func(s Status) bool { return s.State == StateRunning }) {
					close(isRunning)
				}
				statuses = append(statuses, s)
			}
			done := make(chan uint32, 1)
			go func() { done <- Serve(context.Background(), tc.agent, reqs, report, log) }()
			if len(tc.controls) > 0 {
				// The service manager sends controls once the service
				// reported that it accepts them.
				select {
				case <-isRunning:
				case <-time.After(5 * time.Second):
					t.Fatal("Serve never reports running")
				}
			}
			for _, c := range tc.controls {
				select {
				case reqs <- Request{Control: c, Current: last()}:
				case code := <-done:
					t.Fatalf("Serve returned %d before control %v", code, c)
				case <-time.After(5 * time.Second):
					t.Fatalf("Serve does not take control %v", c)
				}
			}
			var code uint32
			select {
			case code = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Serve did not return")
			}
			if code != tc.code {
				t.Errorf("exit code %d, want %d", code, tc.code)
			}
			if got := tc.agent.Calls(); !slices.Equal(got, tc.calls) {
				t.Errorf("agent calls %q, want %q", got, tc.calls)
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(statuses, tc.statuses) {
				t.Errorf("statuses %+v, want %+v", statuses, tc.statuses)
			}
			if tc.logWanted != "" && !strings.Contains(logs.String(), tc.logWanted) {
				t.Errorf("log lacks %q:\n%s", tc.logWanted, logs.String())
			}
		})
	}
}

// TestServeContext: the end of Serve's context stops the agent like a
// stop control.
func TestServeContext(t *testing.T) {
	a := &fakeAgent{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan uint32, 1)
	started := make(chan struct{})
	report := func(s Status) {
		if s.State == StateRunning {
			close(started)
		}
	}
	go func() { done <- Serve(ctx, a, nil, report, slog.New(slog.DiscardHandler)) }()
	<-started
	cancel()
	select {
	case code := <-done:
		if code != ExitOK {
			t.Errorf("exit code %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve ignores its context")
	}
	if got := a.Calls(); !slices.Equal(got, []string{"start", "close"}) {
		t.Errorf("calls %q", got)
	}
}
