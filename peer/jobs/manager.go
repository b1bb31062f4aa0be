package jobs

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redleader-p2p/redleader/election"
	"github.com/redleader-p2p/redleader/internal/tick"
)

// Defaults of Config.
const (
	DefaultMaxRunning = 4
	DefaultRetention  = 24 * time.Hour
	DefaultMaxJobs    = 1000
)

// Timing of the Manager.
const (
	// flushInterval: a running job's progress reaches disk at least this
	// often (and at every Checkpoint and state change).
	flushInterval = time.Second
	// rankInterval: progress alone republishes the ranking inputs at most
	// this often (they travel in gossip); a priority change goes at once.
	rankInterval = 2 * time.Second
	// sweepInterval: finished jobs past Retention are removed this often.
	sweepInterval = time.Minute
)

// Config configures a Manager.
type Config struct {
	// Dir holds one directory per job (created 0700).
	Dir string
	// MaxRunning jobs run at once (DefaultMaxRunning when 0).
	MaxRunning int
	// Retention: a finished job (its record and content) is removed this
	// long after it finished (DefaultRetention when 0).
	Retention time.Duration
	// MaxJobs bounds the jobs kept, finished ones included
	// (DefaultMaxJobs when 0): a new job then pushes out the oldest
	// finished one, or is refused when none is finished.
	MaxJobs int
	// Runner moves the bytes.
	Runner Runner
	// Rank, if set, receives the ranking inputs (see RankPublisher).
	Rank RankPublisher
	// Logger receives the logs; nil discards them.
	Logger *slog.Logger
}

// Manager is the queue of download jobs: New → Start → Close. Jobs run in
// order of priority (highest first), first submitted first within a
// priority, at most MaxRunning at once; a running job is not preempted.
// Its methods are safe for concurrent use.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	jobs    map[string]*entry
	seq     uint64
	running int
	started bool
	closed  bool
	totals  Bytes // bytes by source of every job since New, for metrics

	rankMu   sync.Mutex // serializes publishing
	rankLast rankInputs
	rankAt   time.Time

	kick   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the loop and the runs
}

// entry is one job in memory.
type entry struct {
	rec     record
	dir     string
	resume  bool               // the job ran before this Manager: Work.Resume
	cancel  context.CancelFunc // of the run, while running
	done    chan struct{}      // closed when the run ends
	stop    bool               // a cancel was asked for while running
	dirty   bool               // changed since last saved
	removed bool

	saveMu sync.Mutex // serializes writes of the record; taken without m.mu
	ver    uint64     // bumped (under m.mu) by every snapshot to save
	saved  uint64     // last version written (under saveMu)
}

type rankInputs struct {
	prio     election.Priority
	progress uint64
}

// New loads the jobs under cfg.Dir (creating it). A job that was running
// when the agent stopped is queued again and resumes once started.
func New(cfg Config) (*Manager, error) {
	if cfg.Runner == nil {
		return nil, errors.New("jobs: no runner")
	}
	if cfg.MaxRunning <= 0 {
		cfg.MaxRunning = DefaultMaxRunning
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.MaxJobs <= 0 {
		cfg.MaxJobs = DefaultMaxJobs
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create jobs dir: %w", err)
	}
	recs, err := loadRecords(cfg.Dir, log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{cfg: cfg, log: log, jobs: map[string]*entry{}, kick: make(chan struct{}, 1), ctx: ctx, cancel: cancel}
	resumed := 0
	for _, r := range recs {
		e := &entry{rec: *r, dir: filepath.Join(cfg.Dir, r.ID)}
		if r.State == StateRunning {
			e.rec.State, e.resume = StateQueued, true
			resumed++
		}
		m.jobs[r.ID] = e
		m.seq = max(m.seq, r.Seq)
	}
	if len(recs) > 0 {
		log.Info("jobs loaded", "jobs", len(recs), "resuming", resumed)
	}
	return m, nil
}

// Start starts running the queue. The Manager stops on Close.
func (m *Manager) Start() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started || m.closed {
		return
	}
	m.started = true
	m.wg.Add(1)
	go m.loop()
}

// Close stops the running jobs, leaving them to resume at the next start
// (their records say "running"), and waits for them.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
	var errs []error
	m.mu.Lock()
	for _, e := range m.jobs {
		if e.dirty {
			errs = append(errs, m.saveLocked(e))
		}
	}
	m.mu.Unlock()
	return errors.Join(errs...)
}

// Submit queues a new job for req (see Request.Normalize) and returns it.
func (m *Manager) Submit(req Request) (Job, error) {
	if err := req.Normalize(); err != nil {
		return Job{}, err
	}
	id, err := newID()
	if err != nil {
		return Job{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Job{}, ErrClosed
	}
	if err := m.makeRoomLocked(); err != nil {
		return Job{}, err
	}
	dir := filepath.Join(m.cfg.Dir, id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return Job{}, fmt.Errorf("create job dir: %w", err)
	}
	m.seq++
	e := &entry{dir: dir, rec: record{Version: recordVersion, ID: id, Seq: m.seq, URL: req.URL,
		Priority: req.Priority.String(), SHA256: req.SHA256, Share: req.Share, HeaderNames: HeaderNames(req.Headers),
		State: StateQueued, Created: time.Now().UTC(), Total: -1}}
	err = nil
	if len(req.Headers) > 0 {
		err = writeHeaders(dir, req.Headers)
	}
	if err == nil {
		err = m.saveLocked(e)
	}
	if err != nil {
		os.RemoveAll(dir)
		return Job{}, err
	}
	m.jobs[id] = e
	m.log.Info("job queued", "job", id, "url", Redact(req.URL), "priority", req.Priority, "headers", len(req.Headers))
	m.kickLoop()
	return e.rec.view(), nil
}

// makeRoomLocked removes the oldest finished job when the queue is full.
func (m *Manager) makeRoomLocked() error {
	if len(m.jobs) < m.cfg.MaxJobs {
		return nil
	}
	var oldest *entry
	for _, e := range m.jobs {
		if e.rec.State.Finished() && (oldest == nil || e.rec.Finished.Before(oldest.rec.Finished)) {
			oldest = e
		}
	}
	if oldest == nil {
		return fmt.Errorf("%w: %d queued or running, at most %d", ErrTooMany, len(m.jobs), m.cfg.MaxJobs)
	}
	m.removeLocked(oldest)
	return nil
}

func newID() (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// List returns every job, oldest first.
func (m *Manager) List() []Job {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Job, 0, len(m.jobs))
	for _, e := range m.sortedLocked() {
		out = append(out, e.rec.view())
	}
	return out
}

func (m *Manager) sortedLocked() []*entry {
	es := make([]*entry, 0, len(m.jobs))
	for _, e := range m.jobs {
		es = append(es, e)
	}
	slices.SortFunc(es, func(a, b *entry) int { return cmp.Compare(a.rec.Seq, b.rec.Seq) })
	return es
}

// Get returns the job whose ID is id or starts with id (a unique prefix
// of at least 4 characters).
func (m *Manager) Get(id string) (Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.findLocked(id)
	if err != nil {
		return Job{}, err
	}
	return e.rec.view(), nil
}

func (m *Manager) findLocked(id string) (*entry, error) {
	if e, ok := m.jobs[id]; ok {
		return e, nil
	}
	var hit *entry
	if len(id) >= 4 {
		for k, e := range m.jobs {
			if strings.HasPrefix(k, id) {
				if hit != nil {
					return nil, fmt.Errorf("%w: %q", ErrAmbiguous, id)
				}
				hit = e
			}
		}
	}
	if hit == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return hit, nil
}

// Cancel stops a queued or running job (its content is removed) and
// returns it; it waits, within ctx, for a running job's runner to stop.
// A finished job is returned as it is.
func (m *Manager) Cancel(ctx context.Context, id string) (Job, error) {
	m.mu.Lock()
	e, err := m.findLocked(id)
	if err != nil {
		m.mu.Unlock()
		return Job{}, err
	}
	switch e.rec.State {
	case StateQueued:
		m.finishLocked(e, StateCancelled, "cancelled")
		m.mu.Unlock()
		m.publishRank(false)
		return e.rec.view(), nil
	case StateRunning:
		e.stop = true
		e.cancel()
		done := e.done
		m.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return Job{}, fmt.Errorf("cancel job %s: %w", e.rec.ID, ctx.Err())
		}
		return m.Get(e.rec.ID)
	}
	defer m.mu.Unlock()
	return e.rec.view(), nil
}

// Remove forgets a finished job: its record and its content. A job that
// is queued or running is cancelled first.
func (m *Manager) Remove(ctx context.Context, id string) (Job, error) {
	j, err := m.Cancel(ctx, id)
	if err != nil {
		return j, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.jobs[j.ID]; ok {
		m.removeLocked(e)
	}
	return j, nil
}

func (m *Manager) removeLocked(e *entry) {
	delete(m.jobs, e.rec.ID)
	e.removed = true
	e.saveMu.Lock() // no write of the record is under way, and none follows
	defer e.saveMu.Unlock()
	e.saved = math.MaxUint64
	if err := os.RemoveAll(e.dir); err != nil {
		// Windows: the content may be open for a stream; the next start
		// finds no record there and removes the rest.
		m.log.Warn("job files not removed", "job", e.rec.ID, "err", err)
	}
	m.log.Debug("job removed", "job", e.rec.ID)
}

// Open returns a done job's content, open for reading, and the job.
func (m *Manager) Open(id string) (*os.File, Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.findLocked(id)
	if err != nil {
		return nil, Job{}, err
	}
	j := e.rec.view()
	if e.rec.State != StateDone {
		return nil, j, fmt.Errorf("%w: job %s is %s", ErrNotDone, j.ID, j.State)
	}
	f, err := os.Open(filepath.Join(e.dir, dataFile))
	if err != nil {
		return nil, j, fmt.Errorf("open job %s content: %w", j.ID, err)
	}
	return f, j, nil
}

// Counts returns the number of jobs in each state.
func (m *Manager) Counts() map[State]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[State]int{}
	for _, e := range m.jobs {
		out[e.rec.State]++
	}
	return out
}

// Totals returns the bytes by source of every job since New.
func (m *Manager) Totals() Bytes {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.totals.clone()
}

func (m *Manager) kickLoop() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// loop starts queued jobs as slots free up, flushes progress, publishes
// the ranking inputs and sweeps old jobs, until Close.
func (m *Manager) loop() {
	defer m.wg.Done()
	period := flushInterval
	flush := time.NewTimer(tick.Until(period))
	defer flush.Stop()
	lastSweep := time.Now()
	m.sweep()
	for {
		m.schedule()
		m.publishRank(false)
		// An idle agent wakes only to sweep: a job's start and end kick
		// the loop, and only a running job makes progress to flush.
		if p := m.tickPeriod(); p != period {
			period = p
			flush.Reset(tick.Until(p))
		}
		select {
		case <-m.ctx.Done():
			return
		case <-m.kick:
		case now := <-flush.C:
			flush.Reset(tick.Until(period))
			m.flush()
			if now.Sub(lastSweep) >= sweepInterval {
				lastSweep = now
				m.sweep()
			}
		}
	}
}

// tickPeriod is how often the loop must wake: flushInterval while a job
// runs or has progress not yet flushed, else sweepInterval.
func (m *Manager) tickPeriod() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running > 0 {
		return flushInterval
	}
	for _, e := range m.jobs {
		if e.dirty {
			return flushInterval
		}
	}
	return sweepInterval
}

// schedule starts the best queued jobs while slots are free.
func (m *Manager) schedule() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for m.running < m.cfg.MaxRunning && m.ctx.Err() == nil {
		var best *entry
		for _, e := range m.jobs {
			if e.rec.State != StateQueued {
				continue
			}
			if best == nil || e.rec.priority() > best.rec.priority() ||
				(e.rec.priority() == best.rec.priority() && e.rec.Seq < best.rec.Seq) {
				best = e
			}
		}
		if best == nil {
			return
		}
		m.startLocked(best)
	}
}

// startLocked starts e's run on a goroutine of the Manager.
func (m *Manager) startLocked(e *entry) {
	headers, err := readHeaders(e.dir)
	if err != nil {
		m.finishLocked(e, StateFailed, err.Error())
		return
	}
	p, _ := election.ParsePriority(e.rec.Priority)
	w := &Work{ID: e.rec.ID, Resume: e.resume, Checkpoint: append([]byte(nil), e.rec.Checkpoint...),
		DataPath: filepath.Join(e.dir, dataFile),
		Request:  Request{URL: e.rec.URL, Priority: p, SHA256: e.rec.SHA256, Headers: headers, Share: e.rec.Share}}
	if e.resume {
		e.rec.Resumes++
	}
	e.resume = true // a later start (after this Manager stops) resumes
	e.rec.State, e.rec.Error = StateRunning, ""
	if e.rec.Started.IsZero() {
		e.rec.Started = time.Now().UTC()
	}
	ctx, cancel := context.WithCancel(m.ctx)
	e.cancel, e.done, e.stop = cancel, make(chan struct{}), false
	m.running++
	if err := m.saveLocked(e); err != nil {
		m.log.Warn("job record not saved", "job", e.rec.ID, "err", err)
	}
	m.log.Info("job started", "job", e.rec.ID, "priority", p, "resume", w.Resume)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer cancel()
		res, err := m.cfg.Runner.Run(ctx, w, &progress{m: m, e: e})
		m.ended(e, res, err)
	}()
}

// ended records how e's run ended.
func (m *Manager) ended(e *entry, res Result, err error) {
	m.mu.Lock()
	defer func() {
		m.mu.Unlock()
		m.kickLoop()
	}()
	m.running--
	defer close(e.done)
	switch {
	case e.removed:
	case e.stop:
		m.finishLocked(e, StateCancelled, "cancelled")
	case err == nil:
		e.rec.ContentSHA256, e.rec.Total, e.rec.Held = res.SHA256, res.Size, res.Size
		m.finishLocked(e, StateDone, "")
	case m.ctx.Err() != nil:
		// The agent is stopping: the record stays "running" and the job
		// resumes at the next start.
		if err := m.saveLocked(e); err != nil {
			m.log.Warn("job record not saved", "job", e.rec.ID, "err", err)
		}
		m.log.Info("job interrupted: resumes at the next start", "job", e.rec.ID, "held", e.rec.Held)
	default:
		m.finishLocked(e, StateFailed, oneLine(err))
	}
}

// finishLocked puts e in a final state and saves it; only a done job
// keeps its content.
func (m *Manager) finishLocked(e *entry, s State, msg string) {
	e.rec.State, e.rec.Error, e.rec.Finished = s, msg, time.Now().UTC()
	e.rec.Checkpoint = nil
	if s != StateDone {
		if err := os.Remove(filepath.Join(e.dir, dataFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
			m.log.Warn("job content not removed", "job", e.rec.ID, "err", err)
		}
	}
	if err := m.saveLocked(e); err != nil {
		m.log.Warn("job record not saved", "job", e.rec.ID, "err", err)
	}
	lvl := slog.LevelInfo
	if s == StateFailed {
		lvl = slog.LevelWarn
	}
	m.log.Log(context.Background(), lvl, "job "+string(s), "job", e.rec.ID, "err", msg,
		"origin_bytes", e.rec.Bytes.Origin, "peer_bytes", e.rec.Bytes.Peers, "cache_bytes", e.rec.Bytes.Cache)
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// saveLocked writes e's record now (m.mu held: the record cannot
// change meanwhile). Every write of a record takes e.saveMu and carries a
// version: a snapshot older than what is on disk is never written.
func (m *Manager) saveLocked(e *entry) error {
	if e.removed {
		return nil
	}
	e.dirty = false
	e.ver++
	e.saveMu.Lock()
	defer e.saveMu.Unlock()
	e.saved = e.ver
	return writeRecord(e.dir, &e.rec)
}

// flush writes the records changed since last saved, off m.mu (a slow
// disk does not hold the API): each is a snapshot, and an older snapshot
// never overwrites a newer one.
func (m *Manager) flush() {
	type snap struct {
		e   *entry
		rec record
		ver uint64
	}
	var snaps []snap
	m.mu.Lock()
	for _, e := range m.jobs {
		if e.dirty {
			e.dirty = false
			e.ver++
			snaps = append(snaps, snap{e, e.rec.clone(), e.ver})
		}
	}
	m.mu.Unlock()
	for _, s := range snaps {
		s.e.saveMu.Lock()
		if s.ver > s.e.saved {
			if err := writeRecord(s.e.dir, &s.rec); err != nil && !errors.Is(err, os.ErrNotExist) {
				m.log.Warn("job progress not saved", "job", s.rec.ID, "err", err)
			}
			s.e.saved = s.ver
		}
		s.e.saveMu.Unlock()
	}
}

// sweep removes finished jobs older than Retention.
func (m *Manager) sweep() {
	m.mu.Lock()
	defer m.mu.Unlock()
	cut := time.Now().Add(-m.cfg.Retention)
	for _, e := range m.jobs {
		if e.rec.State.Finished() && e.rec.Finished.Before(cut) {
			m.log.Info("finished job removed after the retention time", "job", e.rec.ID, "state", e.rec.State)
			m.removeLocked(e)
		}
	}
}

// rank computes the ranking inputs: the highest priority of the active
// jobs, and the most bytes held among the active jobs of that priority.
func (m *Manager) rank() rankInputs {
	m.mu.Lock()
	defer m.mu.Unlock()
	var in rankInputs
	for _, e := range m.jobs {
		if e.rec.State.Finished() {
			continue
		}
		p := e.rec.priority()
		switch {
		case p > in.prio:
			in = rankInputs{prio: p, progress: uint64(max(e.rec.Held, 0))}
		case p == in.prio:
			in.progress = max(in.progress, uint64(max(e.rec.Held, 0)))
		}
	}
	return in
}

// publishRank hands the ranking inputs to cfg.Rank when they changed: at
// once for a priority change (or with force), else at most every
// rankInterval.
func (m *Manager) publishRank(force bool) {
	if m.cfg.Rank == nil {
		return
	}
	m.rankMu.Lock()
	defer m.rankMu.Unlock()
	in := m.rank()
	if in == m.rankLast {
		return
	}
	if in.prio == m.rankLast.prio && !force && time.Since(m.rankAt) < rankInterval {
		return
	}
	m.rankLast, m.rankAt = in, time.Now()
	m.cfg.Rank.PublishRank(in.prio, in.progress)
}

// progress is the Progress of one run.
type progress struct {
	m *Manager
	e *entry
}

func (p *progress) SetTotal(n int64) {
	p.m.mu.Lock()
	defer p.m.mu.Unlock()
	p.e.rec.Total, p.e.dirty = n, true
}

func (p *progress) SetHeld(n int64) {
	p.m.mu.Lock()
	defer p.m.mu.Unlock()
	p.e.rec.Held, p.e.dirty = n, true
}

func (p *progress) Fetched(from From, n int64) {
	if err := from.check(); err != nil {
		p.m.log.Error("runner reported bytes from nowhere", "job", p.e.rec.ID, "err", err)
		return
	}
	p.m.mu.Lock()
	defer p.m.mu.Unlock()
	p.e.rec.Bytes.add(from, n)
	p.m.totals.add(from, n)
	p.e.dirty = true
}

func (p *progress) Audit(rec AuditRecord) {
	if err := rec.From.check(); err != nil {
		p.m.log.Error("runner audit record from nowhere", "job", p.e.rec.ID, "err", err)
		return
	}
	if rec.Time.IsZero() {
		rec.Time = time.Now().UTC()
	}
	p.m.mu.Lock()
	defer p.m.mu.Unlock()
	p.e.rec.Audit = append(p.e.rec.Audit, rec)
	p.e.dirty = true
}

func (p *progress) Checkpoint(state []byte) error {
	if len(state) > MaxCheckpoint {
		return fmt.Errorf("checkpoint of %d bytes, at most %d", len(state), MaxCheckpoint)
	}
	p.m.mu.Lock()
	p.e.rec.Checkpoint = append([]byte(nil), state...)
	p.e.ver++
	rec, ver := p.e.rec.clone(), p.e.ver
	p.e.dirty = false
	p.m.mu.Unlock()
	p.e.saveMu.Lock()
	defer p.e.saveMu.Unlock()
	if ver > p.e.saved {
		p.e.saved = ver
		return writeRecord(p.e.dir, &rec)
	}
	return nil
}
