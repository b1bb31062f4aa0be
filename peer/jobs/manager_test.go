package jobs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/election"
	"github.com/redleader-p2p/redleader/internal/wait"
)

// run is one call of fakeRunner.Run, which the test ends.
type run struct {
	w   *Work
	p   Progress
	end chan runEnd
}

type runEnd struct {
	res Result
	err error
}

// fakeRunner hands every Run to the test and returns what the test sends
// (or the context's error).
type fakeRunner struct{ runs chan run }

func newFakeRunner() *fakeRunner { return &fakeRunner{runs: make(chan run, 16)} }

func (f *fakeRunner) Run(ctx context.Context, w *Work, p Progress) (Result, error) {
	r := run{w: w, p: p, end: make(chan runEnd, 1)}
	f.runs <- r
	select {
	case e := <-r.end:
		return e.res, e.err
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

// next waits for the next Run.
func (f *fakeRunner) next(t *testing.T) run {
	t.Helper()
	select {
	case r := <-f.runs:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no job started")
	}
	return run{}
}

// none checks that no Run starts for a while.
func (f *fakeRunner) none(t *testing.T) {
	t.Helper()
	select {
	case r := <-f.runs:
		t.Fatalf("job %s started", r.w.ID)
	case <-time.After(100 * time.Millisecond):
	}
}

// rankLog records the published ranking inputs.
type rankLog struct {
	mu  sync.Mutex
	got []rankInputs
}

func (r *rankLog) PublishRank(p election.Priority, progress uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, rankInputs{p, progress})
}

func (r *rankLog) last() (rankInputs, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) == 0 {
		return rankInputs{}, 0
	}
	return r.got[len(r.got)-1], len(r.got)
}

func newManager(t *testing.T, dir string, runner Runner, edit func(*Config)) *Manager {
	t.Helper()
	cfg := Config{Dir: dir, MaxRunning: 1, Runner: runner}
	if edit != nil {
		edit(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func submit(t *testing.T, m *Manager, p election.Priority, headers ...string) Job {
	t.Helper()
	j, err := m.Submit(Request{URL: "https://origin.example/file?sig=secret", Priority: p, Headers: headers})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// TestScheduleOrder: jobs start highest priority first, first submitted
// first within a priority, one at a time with MaxRunning 1.
func TestScheduleOrder(t *testing.T) {
	tests := []struct {
		name  string
		prios []election.Priority // in submission order
		want  []int               // submission indexes in start order
	}{
		{"fifo", []election.Priority{election.PriorityNormal, election.PriorityNormal, election.PriorityNormal}, []int{0, 1, 2}},
		{"priority first", []election.Priority{election.PriorityLow, election.PriorityNormal, election.PriorityForeground, election.PriorityHigh}, []int{2, 3, 1, 0}},
		{"mixed", []election.Priority{election.PriorityNormal, election.PriorityHigh, election.PriorityNormal, election.PriorityHigh, election.PriorityLow}, []int{1, 3, 0, 2, 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeRunner()
			m := newManager(t, t.TempDir(), f, nil)
			var ids []string
			for _, p := range tt.prios {
				ids = append(ids, submit(t, m, p).ID)
			}
			m.Start()
			for _, i := range tt.want {
				r := f.next(t)
				if r.w.ID != ids[i] {
					t.Fatalf("started %s, want job %d (%s)", r.w.ID, i, ids[i])
				}
				f.none(t) // one at a time
				r.end <- runEnd{res: Result{SHA256: "00", Size: 0}}
			}
		})
	}
}

// TestMaxRunning: MaxRunning jobs run at once; the next starts when one
// ends.
func TestMaxRunning(t *testing.T) {
	f := newFakeRunner()
	m := newManager(t, t.TempDir(), f, func(c *Config) { c.MaxRunning = 2 })
	m.Start()
	for range 3 {
		submit(t, m, election.PriorityNormal)
	}
	a, b := f.next(t), f.next(t)
	f.none(t)
	if c := m.Counts(); c[StateRunning] != 2 || c[StateQueued] != 1 {
		t.Fatalf("counts %v", c)
	}
	a.end <- runEnd{err: errors.New("boom\nsecond line")}
	c := f.next(t)
	b.end <- runEnd{res: Result{SHA256: "ab", Size: 3}}
	c.end <- runEnd{res: Result{SHA256: "cd", Size: 4}}
	wait.For(t, 10*time.Second, "all finished", func() bool { return m.Counts()[StateDone] == 2 })
	j, err := m.Get(a.w.ID)
	if err != nil || j.State != StateFailed || j.Error != "boom second line" {
		t.Fatalf("failed job: %+v %v", j, err)
	}
	j, _ = m.Get(b.w.ID)
	if j.State != StateDone || j.ContentSHA256 != "ab" || j.Total != 3 || j.Held != 3 || j.Finished.IsZero() {
		t.Fatalf("done job: %+v", j)
	}
}

// TestPersistAndResume: a job running when the Manager closes resumes at
// the next start with its checkpoint and headers; the files are private
// and the record never holds a header's value.
func TestPersistAndResume(t *testing.T) {
	dir := t.TempDir()
	f := newFakeRunner()
	m := newManager(t, dir, f, nil)
	m.Start()
	j := submit(t, m, election.PriorityHigh, "Authorization: Bearer s3cret", "x-trace: 1")
	r := f.next(t)
	if r.w.Resume || r.w.Checkpoint != nil || !slices.Equal(r.w.Request.Headers, []string{"Authorization: Bearer s3cret", "X-Trace: 1"}) ||
		r.w.Request.URL != "https://origin.example/file?sig=secret" {
		t.Fatalf("first run's work: %+v", r.w)
	}
	origin := From{Source: SourceOrigin, Reason: ReasonStandalone}
	r.p.SetTotal(1000)
	r.p.Fetched(origin, 600)
	r.p.SetHeld(600)
	r.p.Audit(AuditRecord{Segment: 0, Length: 1000, From: origin, Bytes: 600})
	if err := r.p.Checkpoint([]byte(`{"offset":600}`)); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	jobDir := filepath.Join(dir, j.ID)
	rec, err := os.ReadFile(filepath.Join(jobDir, recordFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(rec), "s3cret") || !strings.Contains(string(rec), `"state":"running"`) {
		t.Fatalf("record: %s", rec)
	}
	if runtime.GOOS != "windows" {
		for name, want := range map[string]os.FileMode{jobDir: 0o700, filepath.Join(jobDir, recordFile): 0o600,
			filepath.Join(jobDir, headersFile): 0o600} {
			if fi, err := os.Stat(name); err != nil || fi.Mode().Perm() != want {
				t.Errorf("%s: mode %v, err %v; want %v", name, fi.Mode().Perm(), err, want)
			}
		}
	}

	f2 := newFakeRunner()
	m2 := newManager(t, dir, f2, nil)
	if got, _ := m2.Get(j.ID); got.State != StateQueued || got.Held != 600 || got.Total != 1000 || got.Bytes.Origin != 600 {
		t.Fatalf("reloaded: %+v", got)
	}
	m2.Start()
	r2 := f2.next(t)
	if !r2.w.Resume || string(r2.w.Checkpoint) != `{"offset":600}` || len(r2.w.Request.Headers) != 2 {
		t.Fatalf("resumed work: %+v", r2.w)
	}
	r2.p.Fetched(origin, 400)
	r2.end <- runEnd{res: Result{SHA256: "ff", Size: 1000}}
	wait.For(t, 10*time.Second, "done", func() bool { got, _ := m2.Get(j.ID); return got.State == StateDone })
	got, _ := m2.Get(j.ID)
	if got.Resumes != 1 || got.Bytes.Origin != 1000 || got.Bytes.OriginByReason[ReasonStandalone] != 1000 || len(got.Audit) != 1 {
		t.Fatalf("after resume: %+v", got)
	}
	if got.URL != "https://origin.example/file?…" || !slices.Equal(got.Headers, []string{"Authorization", "X-Trace"}) {
		t.Fatalf("view leaks: URL %q headers %q", got.URL, got.Headers)
	}
}

// TestCancelAndRemove: cancelling a queued or a running job, removing a
// finished one.
func TestCancelAndRemove(t *testing.T) {
	dir := t.TempDir()
	f := newFakeRunner()
	m := newManager(t, dir, f, nil)
	m.Start()
	running := submit(t, m, election.PriorityNormal)
	r := f.next(t)
	queued := submit(t, m, election.PriorityLow)
	if err := os.WriteFile(r.w.DataPath, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	j, err := m.Cancel(ctx, queued.ID[:6]) // a prefix will do
	if err != nil || j.State != StateCancelled || j.Error != "cancelled" {
		t.Fatalf("cancel queued: %+v %v", j, err)
	}
	j, err = m.Cancel(ctx, running.ID)
	if err != nil || j.State != StateCancelled {
		t.Fatalf("cancel running: %+v %v", j, err)
	}
	if _, err := os.Stat(r.w.DataPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a cancelled job's content stays: %v", err)
	}
	f.none(t) // the cancelled queued job never starts
	if _, _, err := m.Open(running.ID); !errors.Is(err, ErrNotDone) {
		t.Errorf("Open of a cancelled job: %v", err)
	}
	if _, err := m.Remove(ctx, running.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get(running.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("removed job still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, running.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("removed job's dir stays: %v", err)
	}
	if _, err := m.Get("zz"); !errors.Is(err, ErrNotFound) {
		t.Errorf("short unknown prefix: %v", err)
	}
}

// TestDoneContent: a done job's content can be opened; a failed job's
// content is removed.
func TestDoneContent(t *testing.T) {
	f := newFakeRunner()
	m := newManager(t, t.TempDir(), f, nil)
	m.Start()
	done := submit(t, m, election.PriorityNormal)
	r := f.next(t)
	os.WriteFile(r.w.DataPath, []byte("hello"), 0o600)
	r.end <- runEnd{res: Result{SHA256: "2cf24dba", Size: 5}}
	failed := submit(t, m, election.PriorityNormal)
	r = f.next(t)
	os.WriteFile(r.w.DataPath, []byte("hel"), 0o600)
	r.end <- runEnd{err: errors.New("origin went away")}
	wait.For(t, 10*time.Second, "finished", func() bool { j, _ := m.Get(failed.ID); return j.State == StateFailed })

	fh, j, err := m.Open(done.ID)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 10)
	n, _ := fh.Read(b)
	fh.Close()
	if string(b[:n]) != "hello" || j.ContentSHA256 != "2cf24dba" {
		t.Errorf("content %q, job %+v", b[:n], j)
	}
	if _, err := os.Stat(r.w.DataPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed job's content stays: %v", err)
	}
}

// TestRankInputs: the published inputs are the highest active priority
// and that job's progress; none once no job is active.
func TestRankInputs(t *testing.T) {
	f := newFakeRunner()
	ranks := &rankLog{}
	m := newManager(t, t.TempDir(), f, func(c *Config) { c.Rank = ranks })
	m.Start()
	want := func(p election.Priority, progress uint64) {
		t.Helper()
		wait.For(t, 10*time.Second, "rank inputs", func() bool {
			got, _ := ranks.last()
			return got == rankInputs{p, progress}
		})
	}
	submit(t, m, election.PriorityLow)
	low := f.next(t)
	want(election.PriorityLow, 0)
	high := submit(t, m, election.PriorityHigh) // queued behind low: still active
	want(election.PriorityHigh, 0)
	low.p.SetHeld(500) // not the highest priority: no change
	_, n := ranks.last()
	time.Sleep(3 * rankInterval / 2)
	if got, n2 := ranks.last(); n2 != n || got != (rankInputs{election.PriorityHigh, 0}) {
		t.Fatalf("published %v after a lower job's progress", got)
	}
	low.end <- runEnd{res: Result{Size: 500}}
	h := f.next(t)
	h.p.SetHeld(4096)
	want(election.PriorityHigh, 4096) // within rankInterval
	if _, err := m.Cancel(context.Background(), high.ID); err != nil {
		t.Fatal(err)
	}
	want(election.PriorityNone, 0)
}

// TestMaxJobs: a full queue pushes out its oldest finished job, or
// refuses a new one when none is finished.
func TestMaxJobs(t *testing.T) {
	f := newFakeRunner()
	dir := t.TempDir()
	m := newManager(t, dir, f, func(c *Config) { c.MaxJobs = 2 })
	m.Start()
	first := submit(t, m, election.PriorityNormal)
	submit(t, m, election.PriorityNormal)
	if _, err := m.Submit(Request{URL: "http://o/x", Priority: election.PriorityLow}); !errors.Is(err, ErrTooMany) {
		t.Fatalf("third job: %v", err)
	}
	f.next(t).end <- runEnd{res: Result{}}
	wait.For(t, 10*time.Second, "first done", func() bool { j, _ := m.Get(first.ID); return j.State == StateDone })
	if _, err := m.Submit(Request{URL: "http://o/x", Priority: election.PriorityLow}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get(first.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("oldest finished job kept: %v", err)
	}
}

// TestRetentionAndLoad: finished jobs past the retention time are swept;
// a submission that never wrote its record is removed at load, an
// unreadable record is skipped.
func TestRetentionAndLoad(t *testing.T) {
	dir := t.TempDir()
	f := newFakeRunner()
	m := newManager(t, dir, f, nil)
	m.Start()
	j := submit(t, m, election.PriorityNormal)
	f.next(t).end <- runEnd{res: Result{}}
	wait.For(t, 10*time.Second, "done", func() bool { g, _ := m.Get(j.ID); return g.State == StateDone })
	m.Close()
	os.Mkdir(filepath.Join(dir, "incomplete"), 0o700)
	os.Mkdir(filepath.Join(dir, "garbled"), 0o700)
	os.WriteFile(filepath.Join(dir, "garbled", recordFile), []byte("{"), 0o600)

	m2 := newManager(t, dir, newFakeRunner(), func(c *Config) { c.Retention = time.Hour })
	if len(m2.List()) != 1 {
		t.Fatalf("jobs after reload: %+v", m2.List())
	}
	if _, err := os.Stat(filepath.Join(dir, "incomplete")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("incomplete submission kept: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "garbled")); err != nil {
		t.Errorf("unreadable record removed: %v", err)
	}
	m2.sweep()
	if len(m2.List()) != 1 {
		t.Fatal("a fresh job was swept")
	}
	m2.Close()
	m3 := newManager(t, dir, newFakeRunner(), func(c *Config) { c.Retention = time.Nanosecond })
	m3.Start() // sweeps at once
	wait.For(t, 10*time.Second, "swept", func() bool { return len(m3.List()) == 0 })
	if _, err := os.Stat(filepath.Join(dir, j.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("swept job's dir stays: %v", err)
	}
}

// TestBadProgress: a runner's report without a proper source is refused.
func TestBadProgress(t *testing.T) {
	f := newFakeRunner()
	m := newManager(t, t.TempDir(), f, nil)
	m.Start()
	j := submit(t, m, election.PriorityNormal)
	r := f.next(t)
	r.p.Fetched(From{Source: SourceOrigin, Reason: "because"}, 10)
	r.p.Fetched(From{Source: SourcePeer}, 10)
	r.p.Audit(AuditRecord{From: From{Source: "elsewhere"}})
	if err := r.p.Checkpoint(make([]byte, MaxCheckpoint+1)); err == nil {
		t.Error("oversized checkpoint accepted")
	}
	got, _ := m.Get(j.ID)
	if got.Bytes.Origin != 0 || got.Bytes.Peers != 0 || len(got.Audit) != 0 {
		t.Fatalf("bad reports counted: %+v", got)
	}
}

// TestTickPeriod: an idle manager's loop wakes only to sweep; a running
// job, or progress not yet flushed, makes it flush every flushInterval.
func TestTickPeriod(t *testing.T) {
	f := newFakeRunner()
	m := newManager(t, t.TempDir(), f, nil)
	m.Start()
	if got := m.tickPeriod(); got != sweepInterval {
		t.Fatalf("idle: tick every %v, want %v", got, sweepInterval)
	}
	j := submit(t, m, election.PriorityNormal)
	r := f.next(t)
	if got := m.tickPeriod(); got != flushInterval {
		t.Errorf("running: tick every %v, want %v", got, flushInterval)
	}
	r.p.SetHeld(3)
	wait.For(t, 10*time.Second, "the progress flushed", func() bool {
		b, err := os.ReadFile(filepath.Join(m.cfg.Dir, j.ID, recordFile))
		return err == nil && bytes.Contains(b, []byte(`"held":3`))
	})
	os.WriteFile(r.w.DataPath, []byte("hel"), 0o600)
	r.end <- runEnd{res: Result{SHA256: "abc", Size: 3}}
	wait.For(t, 10*time.Second, "idle again", func() bool { return m.tickPeriod() == sweepInterval })
	if got, _ := m.Get(j.ID); got.State != StateDone {
		t.Errorf("job %+v, want done", got)
	}
}
