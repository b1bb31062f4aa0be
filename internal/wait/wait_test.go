package wait

import (
	"runtime"
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
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(string, ...any) {
	f.failed = true
	runtime.Goexit()
}
