package ratelog

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

// line is one record a capture handler received.
type line struct {
	level slog.Level
	msg   string
	attrs map[string]any
	file  string // source file of the call
}

// capture is a slog.Handler that keeps every record at or above its level.
type capture struct {
	level *slog.LevelVar
	mu    sync.Mutex
	lines []line
}

func newCapture() *capture { return &capture{level: new(slog.LevelVar)} }

func (c *capture) Enabled(_ context.Context, l slog.Level) bool { return l >= c.level.Level() }
func (c *capture) WithAttrs([]slog.Attr) slog.Handler           { return c }
func (c *capture) WithGroup(string) slog.Handler                { return c }

func (c *capture) Handle(_ context.Context, r slog.Record) error {
	ln := line{level: r.Level, msg: r.Message, attrs: map[string]any{}}
	r.Attrs(func(a slog.Attr) bool {
		ln.attrs[a.Key] = a.Value.Any()
		return true
	})
	if r.PC != 0 {
		f, _ := runtime.CallersFrames([]uintptr{r.PC}).Next()
		ln.file = filepath.Base(f.File)
	}
	c.mu.Lock()
	c.lines = append(c.lines, ln)
	c.mu.Unlock()
	return nil
}

func (c *capture) take() []line {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.lines
	c.lines = nil
	return out
}

// fakeClock is a settable clock.
type fakeClock struct{ t time.Time }

func (f *fakeClock) now() time.Time             { return f.t }
func (f *fakeClock) add(d time.Duration)        { f.t = f.t.Add(d) }
func newFake() *fakeClock                       { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }
func withClock(l *Logger, c *fakeClock) *Logger { l.now = c.now; return l }

func TestBurstThenSuppressedCount(t *testing.T) {
	h, clk := newCapture(), newFake()
	l := withClock(New(slog.New(h), time.Minute, 3), clk)
	type step struct {
		advance    time.Duration
		key        string
		wantLogged bool
		wantSupp   int // suppressed attr on the logged line; 0 = absent
	}
	steps := []step{
		{0, "a", true, 0},
		{time.Second, "a", true, 0},
		{time.Second, "a", true, 0},
		{time.Second, "a", false, 0},                      // burst used up
		{0, "b", true, 0},                                 // another key has its own budget
		{time.Second, "a", false, 0},                      // still in a's period
		{56*time.Second - time.Nanosecond, "a", false, 0}, // one nanosecond before the period ends
		{time.Nanosecond, "a", true, 3},                   // new period: reports the 3 swallowed
		{0, "a", true, 0},                                 // the count was reset
		{0, "a", true, 0},
		{0, "a", false, 0},
		{time.Hour, "a", true, 1},
	}
	for i, st := range steps {
		clk.add(st.advance)
		l.Warn(st.key, "boom", "i", i)
		got := h.take()
		if !st.wantLogged {
			if len(got) != 0 {
				t.Fatalf("step %d: logged %+v, want nothing", i, got)
			}
			continue
		}
		if len(got) != 1 {
			t.Fatalf("step %d: %d lines, want 1", i, len(got))
		}
		ln := got[0]
		if ln.level != slog.LevelWarn || ln.msg != "boom" || ln.attrs["i"] != int64(i) {
			t.Errorf("step %d: line %+v", i, ln)
		}
		supp, has := ln.attrs["suppressed"]
		switch {
		case st.wantSupp == 0 && has:
			t.Errorf("step %d: suppressed=%v, want no attr", i, supp)
		case st.wantSupp != 0 && supp != int64(st.wantSupp):
			t.Errorf("step %d: suppressed=%v, want %d", i, supp, st.wantSupp)
		}
	}
}

func TestLevels(t *testing.T) {
	h, clk := newCapture(), newFake()
	h.level.Set(slog.LevelInfo)
	l := withClock(New(slog.New(h), time.Minute, 1), clk)
	// Below the handler's level: dropped before counting, so the burst is
	// still there when the level is lowered.
	for range 5 {
		l.Debug("k", "quiet")
	}
	if got := h.take(); len(got) != 0 {
		t.Fatalf("debug lines logged at info level: %+v", got)
	}
	h.level.Set(slog.LevelDebug)
	l.Debug("k", "loud")
	got := h.take()
	if len(got) != 1 || got[0].level != slog.LevelDebug || got[0].attrs["suppressed"] != nil {
		t.Fatalf("lines = %+v, want one debug line without suppressed", got)
	}
	// Levels share a key's budget.
	l.Info("k", "info")
	l.Warn("k", "warn")
	l.Error("k", "error")
	l.Log(slog.LevelError, "k", "error")
	if got := h.take(); len(got) != 0 {
		t.Fatalf("burst 1 exceeded: %+v", got)
	}
	clk.add(time.Minute)
	l.Info("k", "info")
	if got := h.take(); len(got) != 1 || got[0].level != slog.LevelInfo || got[0].attrs["suppressed"] != int64(4) {
		t.Fatalf("lines = %+v, want one info line with suppressed=4", got)
	}
}

func TestSourceIsCaller(t *testing.T) {
	h := newCapture()
	h.level.Set(slog.LevelDebug)
	l := New(slog.New(h), time.Minute, 1)
	l.Debug("debug", "m")
	l.Info("info", "m")
	l.Warn("warn", "m")
	l.Error("error", "m")
	l.Log(slog.LevelWarn+2, "log", "m")
	got := h.take()
	if len(got) != 5 {
		t.Fatalf("%d lines, want 5", len(got))
	}
	for i, want := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError, slog.LevelWarn + 2} {
		if got[i].level != want {
			t.Errorf("line %d at %v, want %v", i, got[i].level, want)
		}
	}
	for _, ln := range got {
		if ln.file != "ratelog_test.go" {
			t.Errorf("source file %q, want ratelog_test.go", ln.file)
		}
	}
}

func TestKeysBounded(t *testing.T) {
	h, clk := newCapture(), newFake()
	l := withClock(New(slog.New(h), time.Minute, 1), clk)
	for i := range MaxKeys + 1 {
		l.Info(fmt.Sprint(i), "m")
	}
	if n := l.keys.Len(); n != MaxKeys {
		t.Fatalf("%d keys, want %d", n, MaxKeys)
	}
	h.take()
	// Key 0 was logged longest ago and forgotten: it gets a new budget.
	// Key 1 is still remembered and used its budget.
	l.Info("0", "again")
	l.Info(fmt.Sprint(MaxKeys), "again")
	if got := h.take(); len(got) != 1 || got[0].msg != "again" {
		t.Fatalf("lines = %+v, want only the forgotten key's", got)
	}
}

func TestUnlimitedAndNil(t *testing.T) {
	h := newCapture()
	l := New(slog.New(h), 0, 1)
	for range 10 {
		l.Warn("k", "m")
	}
	if got := h.take(); len(got) != 10 {
		t.Errorf("every=0: %d lines, want 10", len(got))
	}
	New(nil, time.Minute, 0).Warn("k", "discarded") // must not panic
}

// TestConcurrent: concurrent callers share one budget (run with -race).
func TestConcurrent(t *testing.T) {
	h := newCapture()
	l := New(slog.New(h), time.Hour, 5)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				l.Warn("shared", "m", "g", g, "i", i)
			}
		})
	}
	wg.Wait()
	if got := h.take(); len(got) != 5 {
		t.Errorf("%d lines, want 5", len(got))
	}
}
