//go:build windows

package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/registry"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/eventlog"
	"golang.org/x/sys/windows/svc/mgr"

	"github.com/redleader-p2p/redleader/config"
)

// dataDirSDDL is the data dir's ACL: SYSTEM (the service) and the
// Administrators group, nobody else, inherited by everything inside — the
// API token is readable by an elevated admin only. Protected: nothing is
// inherited from %ProgramData%, whose ACL lets every user read.
const dataDirSDDL = "D:PAI(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)"

const eventLogKey = `SYSTEM\CurrentControlSet\Services\EventLog\Application\` + Name

// New is the Windows service manager of the binary at binary.
func New(binary, version string, out io.Writer) (Manager, error) {
	return &Windows{Binary: binary, Version: version, Out: out, Run: windowsRunner}, nil
}

// windowsRunner runs commands; netsh gets the command line
// NetshCommandLine writes.
func windowsRunner(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if name == "netsh" {
		cmd.SysProcAttr = &syscall.SysProcAttr{CmdLine: NetshCommandLine(args)}
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Windows manages the Windows service: a LocalSystem service started
// automatically, restarted after a failure, logging to the Application
// Event Log, with inbound firewall rules for its ports.
type Windows struct {
	Binary  string
	Version string
	Out     io.Writer
	Run     Runner
}

func requireElevated() error {
	if !windows.GetCurrentProcessToken().IsElevated() {
		return errors.New("redleader service needs an elevated prompt (Run as administrator)")
	}
	return nil
}

// dataDir is %ProgramData%\redleader, config.DefaultDataDir's choice.
func (w *Windows) dataDir() (string, error) {
	pd := os.Getenv("ProgramData")
	if pd == "" {
		return "", errors.New("%ProgramData% is not set")
	}
	return filepath.Join(pd, Name), nil
}

func (w *Windows) firewall(dataDir string) *Firewall {
	return &Firewall{Run: w.Run, Out: w.Out, Program: w.Binary, State: filepath.Join(dataDir, "service-firewall-rules")}
}

// secureDataDir creates dir and gives it dataDirSDDL's ACL, propagated to
// what it holds. It reports whether it changed anything.
func secureDataDir(dir string) (bool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("create data dir: %w", err)
	}
	want, err := windows.SecurityDescriptorFromString(dataDirSDDL)
	if err != nil {
		return false, fmt.Errorf("data dir ACL: %w", err)
	}
	cur, err := windows.GetNamedSecurityInfo(dir, windows.SE_FILE_OBJECT, windows.DACL_SECURITY_INFORMATION)
	if err == nil && cur.String() == want.String() {
		return false, nil
	}
	dacl, _, err := want.DACL()
	if err != nil {
		return false, fmt.Errorf("data dir ACL: %w", err)
	}
	err = windows.SetNamedSecurityInfo(dir, windows.SE_FILE_OBJECT,
		windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION, nil, nil, dacl, nil)
	if err != nil {
		return false, fmt.Errorf("set the ACL of %s: %w", dir, err)
	}
	return true, nil
}

func eventSourceInstalled() bool {
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, eventLogKey, registry.QUERY_VALUE)
	if err != nil {
		return false
	}
	k.Close()
	return true
}

// binaryPathName is what the service manager stores for exe and args
// (mgr.CreateService's quoting).
func binaryPathName(exe string, args []string) string {
	s := syscall.EscapeArg(exe)
	for _, a := range args {
		s += " " + syscall.EscapeArg(a)
	}
	return s
}

// Install creates or updates the service, secures the data dir, writes a
// config if none, registers the Event Log source, adds the firewall rules
// and starts the service. Run again with nothing to change, it changes
// nothing and says so.
func (w *Windows) Install(ctx context.Context, o InstallOptions) error {
	if err := requireElevated(); err != nil {
		return err
	}
	dataDir, err := w.dataDir()
	if err != nil {
		return err
	}
	changed, err := secureDataDir(dataDir)
	if err != nil {
		return err
	}
	if changed {
		fmt.Fprintf(w.Out, "set the ACL of %s: SYSTEM and Administrators only\n", dataDir)
	}
	if o.ConfigFile != "" {
		if o.ConfigFile, err = filepath.Abs(o.ConfigFile); err != nil {
			return fmt.Errorf("config file: %w", err)
		}
	}
	cfgPath, wroteCfg, err := serviceConfig(w.Out, "", o.ConfigFile, filepath.Join(dataDir, Name+".yaml"), dataDir)
	if err != nil {
		return err
	}
	changed = changed || wroteCfg
	cfg, err := config.Load(cfgPath, nil, nil)
	if err != nil {
		return err
	}

	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("connect to the service manager: %w", err)
	}
	defer m.Disconnect()
	spec := WindowsServiceSpec(cfgPath, dataDir)
	s, err := m.OpenService(Name)
	if err != nil {
		s, err = m.CreateService(Name, w.Binary, mgr.Config{
			DisplayName: spec.DisplayName, Description: spec.Description,
			StartType: mgr.StartAutomatic, ErrorControl: mgr.ErrorNormal,
		}, spec.Args...)
		if err != nil {
			return fmt.Errorf("create service %s: %w", Name, err)
		}
		fmt.Fprintf(w.Out, "created service %s: %s\n", Name, binaryPathName(w.Binary, spec.Args))
		changed = true
	} else {
		c, err := s.Config()
		if err != nil {
			s.Close()
			return fmt.Errorf("service %s: %w", Name, err)
		}
		want := binaryPathName(w.Binary, spec.Args)
		if c.BinaryPathName != want || c.StartType != mgr.StartAutomatic || c.DisplayName != spec.DisplayName || c.Description != spec.Description {
			c.BinaryPathName, c.StartType, c.DisplayName, c.Description = want, mgr.StartAutomatic, spec.DisplayName, spec.Description
			if err := s.UpdateConfig(c); err != nil {
				s.Close()
				return fmt.Errorf("update service %s: %w", Name, err)
			}
			fmt.Fprintf(w.Out, "updated service %s: %s\n", Name, want)
			changed = true
		} else {
			fmt.Fprintf(w.Out, "kept service %s (unchanged)\n", Name)
		}
	}
	defer s.Close()
	// Restart after a crash or an exit with an error, like Restart=on-failure.
	restart := []mgr.RecoveryAction{{Type: mgr.ServiceRestart, Delay: 5 * time.Second},
		{Type: mgr.ServiceRestart, Delay: 5 * time.Second}, {Type: mgr.ServiceRestart, Delay: 30 * time.Second}}
	if err := s.SetRecoveryActions(restart, 24*3600); err != nil {
		return fmt.Errorf("service %s recovery actions: %w", Name, err)
	}
	if err := s.SetRecoveryActionsOnNonCrashFailures(true); err != nil {
		return fmt.Errorf("service %s recovery actions: %w", Name, err)
	}
	if !eventSourceInstalled() {
		if err := eventlog.InstallAsEventCreate(Name, eventlog.Error|eventlog.Warning|eventlog.Info); err != nil {
			return fmt.Errorf("register the Event Log source %s: %w", Name, err)
		}
		fmt.Fprintf(w.Out, "registered the Event Log source %s (Application log)\n", Name)
		changed = true
	}
	fwChanged, err := w.firewall(dataDir).Apply(ctx, FirewallRules(cfg))
	if err != nil {
		return err
	}
	changed = changed || fwChanged

	st, err := s.Query()
	if err != nil {
		return fmt.Errorf("service %s: %w", Name, err)
	}
	switch {
	case st.State == svc.Running && !changed:
		fmt.Fprintf(w.Out, "service %s is running: nothing changed\n", Name)
		return nil
	case st.State == svc.Running:
		if err := stopService(ctx, s); err != nil {
			return err
		}
		fallthrough
	default:
		if err := s.Start(); err != nil {
			return fmt.Errorf("start service %s: %w", Name, err)
		}
	}
	if err := waitState(ctx, s, svc.Running); err != nil {
		return fmt.Errorf("%w (see the Application Event Log, source %s)", err, Name)
	}
	fmt.Fprintf(w.Out, "service %s is running; its data dir is %s (redleader run elevated finds its API token there)\n", Name, dataDir)
	return nil
}

// stopService asks s to stop and waits until it has.
func stopService(ctx context.Context, s *mgr.Service) error {
	if _, err := s.Control(svc.Stop); err != nil {
		return fmt.Errorf("stop service %s: %w", Name, err)
	}
	return waitState(ctx, s, svc.Stopped)
}

// waitState polls s until it is in state want, for at most a pending
// state's wait hint and 10 s.
func waitState(ctx context.Context, s *mgr.Service, want svc.State) error {
	deadline := time.Now().Add(PendingWaitHint + 10*time.Second)
	for {
		st, err := s.Query()
		if err != nil {
			return fmt.Errorf("service %s: %w", Name, err)
		}
		if st.State == want {
			return nil
		}
		if st.State == svc.Stopped && want == svc.Running {
			return fmt.Errorf("service %s stopped right after its start (exit code %d)", Name, st.ServiceSpecificExitCode)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("service %s: state %d after %v, want %d", Name, st.State, PendingWaitHint+10*time.Second, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// Uninstall stops and deletes the service, its Event Log source and its
// firewall rules. The data dir (config included) stays unless o.Purge.
func (w *Windows) Uninstall(ctx context.Context, o UninstallOptions) error {
	if err := requireElevated(); err != nil {
		return err
	}
	dataDir, err := w.dataDir()
	if err != nil {
		return err
	}
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("connect to the service manager: %w", err)
	}
	defer m.Disconnect()
	if s, err := m.OpenService(Name); err == nil {
		st, err := s.Query()
		if err == nil && st.State != svc.Stopped {
			if err := stopService(ctx, s); err != nil {
				s.Close()
				return err
			}
			fmt.Fprintf(w.Out, "stopped service %s\n", Name)
		}
		err = s.Delete()
		s.Close()
		if err != nil {
			return fmt.Errorf("delete service %s: %w", Name, err)
		}
		fmt.Fprintf(w.Out, "deleted service %s\n", Name)
	} else {
		fmt.Fprintf(w.Out, "service %s is not installed\n", Name)
	}
	if eventSourceInstalled() {
		if err := eventlog.Remove(Name); err != nil {
			return fmt.Errorf("remove the Event Log source %s: %w", Name, err)
		}
		fmt.Fprintf(w.Out, "removed the Event Log source %s\n", Name)
	}
	var rules []FirewallRule
	if cfg, err := config.Load(filepath.Join(dataDir, Name+".yaml"), nil, nil); err == nil {
		rules = FirewallRules(cfg)
	}
	if err := w.firewall(dataDir).Remove(ctx, rules); err != nil {
		return err
	}
	if !o.Purge {
		if exists(dataDir) {
			fmt.Fprintf(w.Out, "kept %s (--purge removes it)\n", dataDir)
		}
		return nil
	}
	return removeAll(w.Out, dataDir)
}

// Status prints the service's state.
func (w *Windows) Status(ctx context.Context) error {
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("connect to the service manager: %w", err)
	}
	defer m.Disconnect()
	s, err := m.OpenService(Name)
	if err != nil {
		fmt.Fprintf(w.Out, "service %s: not installed (redleader service install)\n", Name)
		return ErrNotInstalled
	}
	defer s.Close()
	st, err := s.Query()
	if err != nil {
		return fmt.Errorf("service %s: %w", Name, err)
	}
	c, err := s.Config()
	if err != nil {
		return fmt.Errorf("service %s: %w", Name, err)
	}
	states := map[svc.State]string{svc.Stopped: "stopped", svc.StartPending: "start pending", svc.StopPending: "stop pending",
		svc.Running: "running", svc.ContinuePending: "continue pending", svc.PausePending: "pause pending", svc.Paused: "paused"}
	state := states[st.State]
	if st.ProcessId != 0 {
		state += fmt.Sprintf(", pid %d", st.ProcessId)
	}
	if st.State == svc.Stopped && st.ServiceSpecificExitCode != 0 {
		state += fmt.Sprintf(", exit code %d", st.ServiceSpecificExitCode)
	}
	dataDir, _ := w.dataDir()
	fmt.Fprintf(w.Out, "service:   %s (%s)\n", Name, strings.TrimSpace(c.BinaryPathName))
	fmt.Fprintf(w.Out, "state:     %s\n", state)
	fmt.Fprintf(w.Out, "data dir:  %s\n", dataDir)
	fmt.Fprintf(w.Out, "logs:      Application Event Log, source %s\n", Name)
	if st.State != svc.Running {
		return ErrNotRunning
	}
	return nil
}

// IsWindowsService reports whether this process was started by the
// Windows service manager.
func IsWindowsService() (bool, error) { return svc.IsWindowsService() }

// OpenEventLog is a logger writing to the Application Event Log under the
// source install registered (text, or JSON with json), and its closer.
func OpenEventLog(level slog.Leveler, json bool) (*slog.Logger, func() error, error) {
	l, err := eventlog.Open(Name)
	if err != nil {
		return nil, nil, fmt.Errorf("open the Event Log source %s: %w", Name, err)
	}
	return slog.New(NewEventLogHandler(l, level, json)), l.Close, nil
}

// RunWindowsService runs a under the Windows service manager until it is
// stopped: Serve drives it with the manager's controls.
func RunWindowsService(a Agent, log *slog.Logger) error {
	return svc.Run(Name, handler{a: a, log: log})
}

type handler struct {
	a   Agent
	log *slog.Logger
}

// Execute is the svc glue around Serve: requests are translated and
// forwarded by one goroutine, which stops when Serve returns.
func (h handler) Execute(_ []string, r <-chan svc.ChangeRequest, s chan<- svc.Status) (bool, uint32) {
	reqs := make(chan Request)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case cr := <-r:
				select {
				case reqs <- Request{Control: fromSvcCmd(cr.Cmd), Current: fromSvcStatus(cr.CurrentStatus)}:
				case <-done:
					return
				}
			}
		}
	}()
	code := Serve(context.Background(), h.a, reqs, func(st Status) { s <- toSvcStatus(st) }, h.log)
	close(done)
	wg.Wait()
	return code != ExitOK, code
}

func fromSvcCmd(c svc.Cmd) Control {
	switch c {
	case svc.Interrogate:
		return ControlInterrogate
	case svc.Stop:
		return ControlStop
	case svc.Shutdown:
		return ControlShutdown
	case svc.ParamChange:
		return ControlParamChange
	}
	return ControlOther
}

func toSvcState(s State) svc.State {
	switch s {
	case StateStartPending:
		return svc.StartPending
	case StateRunning:
		return svc.Running
	case StateStopPending:
		return svc.StopPending
	}
	return svc.Stopped
}

func fromSvcState(s svc.State) State {
	switch s {
	case svc.StartPending:
		return StateStartPending
	case svc.Running:
		return StateRunning
	case svc.StopPending:
		return StateStopPending
	}
	return StateStopped
}

func toSvcStatus(st Status) svc.Status {
	var acc svc.Accepted
	if st.Accepts&AcceptStop != 0 {
		acc |= svc.AcceptStop
	}
	if st.Accepts&AcceptShutdown != 0 {
		acc |= svc.AcceptShutdown
	}
	if st.Accepts&AcceptParamChange != 0 {
		acc |= svc.AcceptParamChange
	}
	return svc.Status{State: toSvcState(st.State), Accepts: acc, WaitHint: uint32(st.WaitHint / time.Millisecond)}
}

func fromSvcStatus(st svc.Status) Status {
	out := Status{State: fromSvcState(st.State), WaitHint: time.Duration(st.WaitHint) * time.Millisecond}
	if st.Accepts&svc.AcceptStop != 0 {
		out.Accepts |= AcceptStop
	}
	if st.Accepts&svc.AcceptShutdown != 0 {
		out.Accepts |= AcceptShutdown
	}
	if st.Accepts&svc.AcceptParamChange != 0 {
		out.Accepts |= AcceptParamChange
	}
	return out
}
