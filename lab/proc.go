//go:build linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// logTail is how much of a process log is dumped when a test fails.
const logTail = 64 << 10

// Proc is a process started in a lab host by Start or StartCmd.
type Proc struct {
	// Name is the label given to Start.
	Name string

	host *Host
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed when the process has exited
	err  error         // exit status, readable once done is closed
}

// Start runs args (program and arguments) in the host's namespace. name
// labels the process in logs. stdout and stderr go to a log file that is
// dumped with tb.Log when the test fails; the process is killed at tb's
// cleanup. It fails the test if the process cannot be started.
func (h *Host) Start(tb testing.TB, name string, args ...string) *Proc {
	tb.Helper()
	return h.StartCmd(tb, name, h.Command(context.Background(), args...))
}

// StartCmd is Start for a command built with Host.Command, for callers that
// need to set Env or Dir. Stdout and Stderr, when nil, go to the log file.
func (h *Host) StartCmd(tb testing.TB, name string, cmd *exec.Cmd) *Proc {
	tb.Helper()
	logPath := filepath.Join(h.lab.dir, h.Name+"-"+sanitize(name)+".log")
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		tb.Fatalf("lab: %s: open log: %v", name, err)
	}
	defer f.Close() // the child keeps its own copy
	if cmd.Stdout == nil {
		cmd.Stdout = f
	}
	if cmd.Stderr == nil {
		cmd.Stderr = f
	}
	// Own process group (cleanup kills the group, children included), and
	// SIGKILL if the test binary dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("lab: %s on %s: start: %v", name, h.Name, err)
	}
	p := &Proc{Name: name, host: h, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	tb.Cleanup(func() {
		_ = p.Kill()
		if err := p.Wait(10 * time.Second); errors.Is(err, ErrWaitTimeout) {
			tb.Errorf("lab: %s on %s (pid %d) survived SIGKILL", name, h.Name, p.Pid())
		}
		if tb.Failed() {
			tb.Logf("lab: log of %s on %s:\n%s", name, h.Name, p.tail(logTail))
		}
	})
	return p
}

// Pid returns the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Host returns the host the process runs in.
func (p *Proc) Host() *Host { return p.host }

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("%s: signal %v: %w", p.Name, sig, err)
	}
	return nil
}

// Kill sends SIGKILL to the process and its process group. Killing a
// process that already exited is not an error.
func (p *Proc) Kill() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = syscall.Kill(-p.Pid(), syscall.SIGKILL) // the group: children too
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("%s: kill: %w", p.Name, err)
	}
	return nil
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits up to timeout for the process to exit and returns its exit
// status (nil, or an *exec.ExitError), or ErrWaitTimeout.
func (p *Proc) Wait(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.err
	case <-t.C:
		return ErrWaitTimeout
	}
}

// LogPath returns the path of the process log.
func (p *Proc) LogPath() string { return p.log }

// Log returns what the process has written to stdout and stderr so far.
func (p *Proc) Log() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return fmt.Sprintf("(read log: %v)", err)
	}
	return string(b)
}

func (p *Proc) tail(n int64) string {
	f, err := os.Open(p.log)
	if err != nil {
		return fmt.Sprintf("(read log: %v)", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(read log: %v)", err)
	}
	prefix := ""
	if fi.Size() > n {
		if _, err := f.Seek(fi.Size()-n, io.SeekStart); err != nil {
			return fmt.Sprintf("(read log: %v)", err)
		}
		prefix = fmt.Sprintf("(last %d of %d bytes)\n", n, fi.Size())
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(read log: %v)", err)
	}
	return prefix + string(b)
}

// sanitize makes name safe as part of a file name.
func sanitize(name string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == os.PathSeparator || r == 0 {
			return '_'
		}
		return r
	}, name)
}
