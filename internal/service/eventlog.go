package service

import (
	"log/slog"
	"strings"
)

// EventSink is a Windows Event Log source (golang.org/x/sys/windows/svc/
// eventlog.Log has these methods).
type EventSink interface {
	Info(eid uint32, msg string) error
	Warning(eid uint32, msg string) error
	Error(eid uint32, msg string) error
}

// EventID is the event ID of every entry: the source is registered with
// EventCreate.exe as its message file, which takes IDs 1 to 1000.
const EventID = 1

// NewEventLogHandler is a slog handler writing one Event Log entry per
// record: the record as the text (or, with json, the JSON) handler formats
// it, without the time (the Event Log stamps entries), as an error, warning
// or information entry by its level. level may be a *slog.LevelVar a
// reload moves.
func NewEventLogHandler(sink EventSink, level slog.Leveler, json bool) slog.Handler {
	opts := &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}
	if json {
		return slog.NewJSONHandler(eventWriter{sink}, opts)
	}
	return slog.NewTextHandler(eventWriter{sink}, opts)
}

// eventWriter receives exactly one Write per record from the handler,
// starting with the level: `level=WARN …` or `{"level":"WARN",…`.
type eventWriter struct{ sink EventSink }

func (w eventWriter) Write(p []byte) (int, error) {
	line := strings.TrimSuffix(string(p), "\n")
	level := strings.TrimPrefix(strings.TrimPrefix(line, "level="), `{"level":"`)
	var err error
	switch {
	case strings.HasPrefix(level, "ERROR"):
		err = w.sink.Error(EventID, line)
	case strings.HasPrefix(level, "WARN"):
		err = w.sink.Warning(EventID, line)
	default:
		err = w.sink.Info(EventID, line)
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}
