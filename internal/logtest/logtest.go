// Package logtest has the log sinks that tests share: a slog.Handler that
// keeps what is logged, to count or inspect it, and a buffer that a text
// logger (or a command's output) and a test can share.
package logtest

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
)

// Recorder is a slog.Handler that keeps every record, at every level
// (debug included). Attributes and groups given to Logger.With and
// Logger.WithGroup are dropped: only those of each call are kept. It is
// safe for concurrent use; the zero value is ready.
type Recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

// Enabled is true at every level.
func (r *Recorder) Enabled(context.Context, slog.Level) bool { return true }

// WithAttrs returns r: the attributes are dropped.
func (r *Recorder) WithAttrs([]slog.Attr) slog.Handler { return r }

// WithGroup returns r: the group is dropped.
func (r *Recorder) WithGroup(string) slog.Handler { return r }

// Handle keeps a copy of rec.
func (r *Recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}

// Records returns the records kept so far, oldest first.
func (r *Recorder) Records() []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]slog.Record, len(r.recs))
	copy(out, r.recs)
	return out
}

// Count is the number of records kept so far with message msg.
func (r *Recorder) Count(msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rec := range r.recs {
		if rec.Message == msg {
			n++
		}
	}
	return n
}

// Buffer is a bytes.Buffer safe for concurrent Write and String: a log sink
// that the goroutines of what is tested and the test can share. The zero
// value is ready.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
