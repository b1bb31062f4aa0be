package wait

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestForReturnsOnceTrue(t *testing.T) {
	n := 0
	d := For(t, time.Second, "third poll", func() bool { n++; return n >= 3 })
	if n != 3 {
		t.Fatalf("cond called %d times, want 3", n)
	}
	if d < 2*Poll {
		t.Fatalf("took %v, want at least two polls (%v)", d, 2*Poll)
	}
}

func TestForFailsAfterTimeout(t *testing.T) {
	ft := &fakeT{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		For(ft, 120*time.Millisecond, "never", func() bool { return false })
	}()
	<-done
	if !ft.failed {
		t.Fatal("For did not fail after its timeout")
	}
}

// fakeT records Fatalf and ends the goroutine like testing does.
type fakeT struct {
	testing.TB
	failed bool
	msg    string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestForErrReportsTheLastError(t *testing.T) {
	ft := &fakeT{TB: t}
	n := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		ForErr(ft, 120*time.Millisecond, "never", func() error { n++; return fmt.Errorf("try %d", n) })
	}()
	<-done
	if !ft.failed || !strings.Contains(ft.msg, fmt.Sprintf("try %d", n)) {
		t.Fatalf("failed=%v msg=%q, want a failure naming try %d", ft.failed, ft.msg, n)
	}
	if d := ForErr(t, time.Second, "ok", func() error { return nil }); d > Poll {
		t.Fatalf("a condition that holds took %v", d)
	}
}
