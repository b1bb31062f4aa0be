//go:build linux

package procs

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSetTimerSlack: every thread of the process gets the slack, and the
// default comes back. Skipped without CAP_SYS_NICE (not root).
func TestSetTimerSlack(t *testing.T) {
	start, err := timerSlack()
	if err != nil {
		t.Fatal(err)
	}
	if err := setTimerSlack(start); err != nil {
		t.Skipf("cannot set the other threads' timer slack (needs CAP_SYS_NICE): %v", err)
	}
	defer setTimerSlack(start)
	for _, want := range []time.Duration{3 * time.Millisecond, start} {
		if err := setTimerSlack(want); err != nil {
			t.Fatal(err)
		}
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		if len(tasks) < 2 {
			t.Fatalf("%d threads: the runtime has several", len(tasks))
		}
		for _, task := range tasks {
			b, err := os.ReadFile("/proc/" + task.Name() + "/timerslack_ns")
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); time.Duration(got) != want {
				t.Errorf("thread %s: timer slack %v, want %v", task.Name(), time.Duration(got), want)
			}
		}
	}
}
