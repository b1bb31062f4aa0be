package service

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeSink is an Event Log source that keeps its entries.
type fakeSink struct {
	entries []string // "type id: message"
	err     error
}

func (s *fakeSink) add(typ string, eid uint32, msg string) error {
	s.entries = append(s.entries, typ+" "+string(rune('0'+eid))+": "+msg)
	return s.err
}
func (s *fakeSink) Info(eid uint32, msg string) error    { return s.add("info", eid, msg) }
func (s *fakeSink) Warning(eid uint32, msg string) error { return s.add("warning", eid, msg) }
func (s *fakeSink) Error(eid uint32, msg string) error   { return s.add("error", eid, msg) }

func TestEventLogHandler(t *testing.T) {
	sink := &fakeSink{}
	level := new(slog.LevelVar) // info
	log := slog.New(NewEventLogHandler(sink, level, false)).With("component", "test")
	log.Debug("hidden")
	log.Info("agent started", "node", "5f0c")
	log.Warn("slow peer")
	log.Error("start failed", "err", errors.New("address in use"))
	log.Log(t.Context(), slog.LevelWarn+2, "a custom level")
	level.Set(slog.LevelDebug) // a reload moves the level
	log.Debug("now shown")
	want := []string{
		`info 1: level=INFO msg="agent started" component=test node=5f0c`,
		`warning 1: level=WARN msg="slow peer" component=test`,
		`error 1: level=ERROR msg="start failed" component=test err="address in use"`,
		`warning 1: level=WARN+2 msg="a custom level" component=test`,
		`info 1: level=DEBUG msg="now shown" component=test`,
	}
	if !slices.Equal(sink.entries, want) {
		t.Errorf("entries:\n%s\nwant:\n%s", strings.Join(sink.entries, "\n"), strings.Join(want, "\n"))
	}
}

func TestEventLogHandlerJSON(t *testing.T) {
	sink := &fakeSink{}
	log := slog.New(NewEventLogHandler(sink, slog.LevelInfo, true))
	log.Info("agent started", "node", "5f0c")
	log.Warn("slow peer")
	log.Error("start failed")
	want := []string{
		`info 1: {"level":"INFO","msg":"agent started","node":"5f0c"}`,
		`warning 1: {"level":"WARN","msg":"slow peer"}`,
		`error 1: {"level":"ERROR","msg":"start failed"}`,
	}
	if !slices.Equal(sink.entries, want) {
		t.Errorf("entries:\n%s\nwant:\n%s", strings.Join(sink.entries, "\n"), strings.Join(want, "\n"))
	}
}

func TestEventLogHandlerError(t *testing.T) {
	sink := &fakeSink{err: errors.New("event log full")}
	h := NewEventLogHandler(sink, slog.LevelInfo, false)
	if err := slog.New(h).Handler().Handle(t.Context(), slog.NewRecord(time.Time{}, slog.LevelInfo, "x", 0)); err == nil {
		t.Error("a failing Event Log is not reported to the caller")
	}
}
