package logtest

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// TestRecorder: concurrent loggers at every level; every record is kept
// with its level and attributes, counted by message, and Records is a copy.
func TestRecorder(t *testing.T) {
	var r Recorder
	log := slog.New(&r)
	const writers, each = 4, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				log.Debug("tick", "writer", w, "i", i)
			}
		})
	}
	wg.Wait()
	log.Warn("done", "writers", writers)

	if got := r.Count("tick"); got != writers*each {
		t.Errorf("Count(tick) = %d, want %d", got, writers*each)
	}
	if got := r.Count("done"); got != 1 {
		t.Errorf("Count(done) = %d, want 1", got)
	}
	if got := r.Count("never logged"); got != 0 {
		t.Errorf("Count(never logged) = %d, want 0", got)
	}
	recs := r.Records()
	if len(recs) != writers*each+1 {
		t.Fatalf("%d records, want %d", len(recs), writers*each+1)
	}
	last := recs[len(recs)-1]
	if last.Level != slog.LevelWarn || last.Message != "done" {
		t.Errorf("last record %v %q, want WARN done", last.Level, last.Message)
	}
	var attrs []string
	last.Attrs(func(a slog.Attr) bool {
		attrs = append(attrs, a.String())
		return true
	})
	if len(attrs) != 1 || attrs[0] != "writers=4" {
		t.Errorf("attributes of the last record %v, want [writers=4]", attrs)
	}
	recs[0].Message = "changed by the caller"
	if r.Records()[0].Message != "tick" {
		t.Error("Records returned the recorder's own slice")
	}
}

// TestBuffer: concurrent writers and readers; every line arrives whole.
func TestBuffer(t *testing.T) {
	var b Buffer
	const writers, each = 4, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				fmt.Fprintf(&b, "writer %d line %d\n", w, i)
				_ = b.String()
			}
		})
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != writers*each {
		t.Fatalf("%d lines, want %d", len(lines), writers*each)
	}
	seen := map[string]bool{}
	for _, l := range lines {
		var w, i int
		if _, err := fmt.Sscanf(l, "writer %d line %d", &w, &i); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		seen[l] = true
	}
	if len(seen) != writers*each {
		t.Errorf("%d distinct lines, want %d", len(seen), writers*each)
	}
}
