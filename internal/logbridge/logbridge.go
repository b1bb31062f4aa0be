// Package logbridge sends the log lines of Raft (an hclog.Logger) and of
// memberlist (a standard *log.Logger writing "[LEVEL] text" lines) to
// log/slog, at their real level and without a timestamp of their own:
// the slog handler adds the one timestamp.
//
// Lines at WARN and above are rate-limited, because what remote hosts send
// causes them (memberlist logs one ERROR per bad datagram, Raft one per bad
// connection): at most LimitBurst lines of one kind per LimitEvery, and the
// next line of that kind carries suppressed=N (internal/ratelog). A line's
// kind is LimitKey of its message, which leaves out addresses and details.
package logbridge

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/redleader-p2p/redleader/internal/ratelog"
)

// The rate limit of WARN and ERROR lines: LimitBurst lines of one kind per
// LimitEvery. Lower hides more of a real problem's detail (the count of
// what was left out is always logged); higher lets a flood through.
const (
	LimitEvery = time.Minute
	LimitBurst = 1
)

// LimitKey is the kind of a message, for rate limiting: its text up to the
// first variable part (a digit, a quote, a bracket, '=' or ':'), after an
// optional "component: " prefix. "memberlist: discarding packet with
// unacceptable label \"x\": from=10.0.0.9:7946" and the same line from
// another address share the key "memberlist: discarding packet with
// unacceptable label".
func LimitKey(msg string) string {
	prefix := ""
	if i := strings.Index(msg, ": "); i > 0 && !strings.ContainsAny(msg[:i], " \"'=()[]{}0123456789") {
		prefix, msg = msg[:i+2], msg[i+2:]
	}
	if j := strings.IndexAny(msg, "0123456789\"'`()[]{}<=:%"); j >= 0 {
		msg = msg[:j]
	}
	return prefix + strings.TrimSpace(msg)
}

func newLimiter(l *slog.Logger) *ratelog.Logger { return ratelog.New(l, LimitEvery, LimitBurst) }

// LevelTrace is where hclog's Trace lines go: below slog's Debug.
const LevelTrace = slog.LevelDebug - 4

// SlogLevel maps an hclog level to slog.
func SlogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return LevelTrace
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default: // Info, NoLevel (hclog's "default"), and anything unknown
		return slog.LevelInfo
	}
}

// HCLog returns an hclog.Logger that logs to l. The slog handler decides
// what is enabled; SetLevel can raise the floor further (hclog.Off mutes
// it). Key/value arguments become slog attributes; the logger's name, if
// any (from Named), is the attribute "logger". WARN and ERROR lines are
// rate-limited (see the package doc); a derived logger (With, Named) has a
// budget of its own.
func HCLog(l *slog.Logger) hclog.Logger {
	return &hcLogger{l: l, limit: newLimiter(l), floor: new(atomic.Int32)}
}

type hcLogger struct {
	l       *slog.Logger
	limit   *ratelog.Logger // l's WARN and ERROR lines
	name    string
	implied []any
	floor   *atomic.Int32 // hclog.Level; shared with the loggers derived from this one
}

var _ hclog.Logger = (*hcLogger)(nil)

func (h *hcLogger) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off || !h.enabled(level) {
		return
	}
	if sl := SlogLevel(level); sl >= slog.LevelWarn {
		h.limit.Log(sl, LimitKey(msg), msg, attrsAny(args)...)
		return
	}
	h.l.LogAttrs(context.Background(), SlogLevel(level), msg, attrs(args)...)
}

func (h *hcLogger) enabled(level hclog.Level) bool {
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	if floor := hclog.Level(h.floor.Load()); floor != hclog.NoLevel && level < floor {
		return false
	}
	return h.l.Enabled(context.Background(), SlogLevel(level))
}

func (h *hcLogger) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hcLogger) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hcLogger) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hcLogger) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hcLogger) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *hcLogger) IsTrace() bool { return h.enabled(hclog.Trace) }
func (h *hcLogger) IsDebug() bool { return h.enabled(hclog.Debug) }
func (h *hcLogger) IsInfo() bool  { return h.enabled(hclog.Info) }
func (h *hcLogger) IsWarn() bool  { return h.enabled(hclog.Warn) }
func (h *hcLogger) IsError() bool { return h.enabled(hclog.Error) }

func (h *hcLogger) ImpliedArgs() []any { return h.implied }

func (h *hcLogger) With(args ...any) hclog.Logger {
	c := *h
	c.implied = append(append([]any(nil), h.implied...), args...)
	c.l = h.l.With(attrsAny(args)...)
	c.limit = newLimiter(c.l)
	return &c
}

func (h *hcLogger) Name() string { return h.name }

func (h *hcLogger) Named(name string) hclog.Logger {
	if h.name != "" {
		name = h.name + "." + name
	}
	return h.ResetNamed(name)
}

// ResetNamed replaces the name. slog attributes cannot be removed, so the
// new name is added after the old one (the last "logger" attribute wins
// in most handlers).
func (h *hcLogger) ResetNamed(name string) hclog.Logger {
	c := *h
	c.name = name
	c.l = h.l.With("logger", name)
	c.limit = newLimiter(c.l)
	return &c
}

func (h *hcLogger) SetLevel(level hclog.Level) { h.floor.Store(int32(level)) }

func (h *hcLogger) GetLevel() hclog.Level {
	if floor := hclog.Level(h.floor.Load()); floor != hclog.NoLevel {
		return floor
	}
	for _, l := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if h.enabled(l) {
			return l
		}
	}
	return hclog.Off
}

// StandardLogger returns a *log.Logger whose lines reach this logger:
// at opts.ForceLevel if set, else at the level their "[LEVEL]" prefix
// names when opts.InferLevels, else at Info.
func (h *hcLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(opts), "", 0)
}

// StandardWriter is StandardLogger's writer.
func (h *hcLogger) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	w := &Writer{l: h.l, limit: h.limit}
	if opts != nil {
		w.infer = opts.InferLevels || opts.InferLevelsWithTimestamp
		if opts.ForceLevel != hclog.NoLevel {
			w.force, w.forced = SlogLevel(opts.ForceLevel), true
		}
	} else {
		w.force, w.forced = slog.LevelInfo, true
	}
	return w
}

// attrs turns hclog's key/value list into slog attributes. An hclog.Format
// value is formatted; a key that is not a string, or a missing value, is
// kept under "!BADKEY" as slog does.
func attrs(args []any) []slog.Attr {
	out := make([]slog.Attr, 0, (len(args)+1)/2)
	for i := 0; i < len(args); i += 2 {
		if i+1 == len(args) {
			out = append(out, slog.Any("!BADKEY", value(args[i])))
			break
		}
		key, ok := args[i].(string)
		if !ok {
			key = fmt.Sprint(args[i])
		}
		out = append(out, slog.Any(key, value(args[i+1])))
	}
	return out
}

func attrsAny(args []any) []any {
	as := attrs(args)
	out := make([]any, len(as))
	for i, a := range as {
		out[i] = a
	}
	return out
}

func value(v any) any {
	switch v := v.(type) {
	case hclog.Format:
		if len(v) == 0 {
			return ""
		}
		if f, ok := v[0].(string); ok {
			return fmt.Sprintf(f, v[1:]...)
		}
		return fmt.Sprint(v...)
	case hclog.Quote:
		return string(v)
	case hclog.Hex:
		return fmt.Sprintf("0x%x", int(v))
	case hclog.Octal:
		return fmt.Sprintf("0%o", int(v))
	case hclog.Binary:
		return fmt.Sprintf("0b%b", int(v))
	}
	return v
}

// Writer is an io.Writer for a standard library logger (memberlist's):
// each Write is one line "[LEVEL] text", possibly after a timestamp.
// It logs the text, without the timestamp and the level tag, at the
// tag's level: [TRACE], [DEBUG], [INFO], [WARN], [ERR] or [ERROR]. A line
// without a tag is logged whole at Info. Lines at WARN and above are
// rate-limited by LimitKey (see the package doc).
type Writer struct {
	l      *slog.Logger
	limit  *ratelog.Logger
	infer  bool // read the level from the tag (else log at force)
	force  slog.Level
	forced bool
}

// NewWriter returns a Writer that infers each line's level from its tag.
func NewWriter(l *slog.Logger) *Writer { return newWriter(l, LimitEvery, LimitBurst) }

func newWriter(l *slog.Logger, every time.Duration, burst int) *Writer {
	return &Writer{l: l, limit: ratelog.New(l, every, burst), infer: true}
}

// StdLogger returns a *log.Logger without flags (no timestamp of its own)
// writing through NewWriter(l): what memberlist.Config.Logger takes.
func StdLogger(l *slog.Logger) *log.Logger { return log.New(NewWriter(l), "", 0) }

// Write implements io.Writer.
func (w *Writer) Write(b []byte) (int, error) {
	level, msg := slog.LevelInfo, strings.TrimSpace(string(b))
	if w.infer {
		level, msg, _ = ParseLine(msg)
	}
	if w.forced {
		level = w.force
	}
	if level >= slog.LevelWarn {
		w.limit.Log(level, LimitKey(msg), msg)
		return len(b), nil
	}
	w.l.Log(context.Background(), level, msg)
	return len(b), nil
}

var tags = []struct {
	tag   string
	level slog.Level
}{
	{"[TRACE]", LevelTrace},
	{"[DEBUG]", slog.LevelDebug},
	{"[INFO]", slog.LevelInfo},
	{"[WARN]", slog.LevelWarn},
	{"[ERR]", slog.LevelError},
	{"[ERROR]", slog.LevelError},
}

// ParseLine splits a standard logger's line into its level and its text.
// The tag counts only at the start of the line or right after a
// timestamp (digits and / - : . T Z + and spaces), so a message that
// quotes "[ERR]" keeps its own level. ok is false when there is no tag;
// msg is then the trimmed line.
func ParseLine(line string) (level slog.Level, msg string, ok bool) {
	line = strings.TrimSpace(line)
	i := strings.IndexByte(line, '[')
	if i < 0 || strings.TrimLeft(line[:i], "0123456789/-:.TZ+ ") != "" {
		return slog.LevelInfo, line, false
	}
	for _, t := range tags {
		if strings.HasPrefix(line[i:], t.tag) {
			return t.level, strings.TrimSpace(line[i+len(t.tag):]), true
		}
	}
	return slog.LevelInfo, line, false
}
