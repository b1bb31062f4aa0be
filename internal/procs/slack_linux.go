//go:build linux

package procs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// defaultTimerSlack is the kernel's timer slack for a thread (prctl(2)). A
// process that starts with another value had it set by its operator
// (systemd's TimerSlackNSec=), and the Governor leaves it alone.
const defaultTimerSlack = 50 * time.Microsecond

// timerSlack is the timer slack of the calling thread: every thread's,
// unless set since. (/proc/self/timerslack_ns is the main thread's, which
// another thread may read only with CAP_SYS_NICE.)
func timerSlack() (time.Duration, error) {
	ns, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	if err != nil {
		return 0, fmt.Errorf("read the timer slack: %w", err)
	}
	return time.Duration(ns), nil
}

// setTimerSlack sets the timer slack of every thread of the process. A
// thread created later inherits its creator's. Setting another thread's
// needs CAP_SYS_NICE (root has it).
//
// The file is /proc/TID/timerslack_ns (task directories have none). The
// runtime's threads live as long as the process; one that has exited
// (a goroutine that ended locked to its thread) is skipped.
func setTimerSlack(d time.Duration) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	v := []byte(strconv.FormatInt(d.Nanoseconds(), 10))
	for _, t := range tasks {
		f, err := os.OpenFile("/proc/"+t.Name()+"/timerslack_ns", os.O_WRONLY, 0)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		_, err = f.Write(v)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}
