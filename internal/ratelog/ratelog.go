// Package ratelog limits log lines that repeat, such as one per bad
// datagram or per failing peer: at most burst lines per key in each period,
// and the next line of that key that gets through carries a suppressed=N
// attribute with how many were swallowed in between.
//
// A Logger starts no goroutine and keeps at most MaxKeys keys (an LRU: the
// key logged longest ago is forgotten first, with its suppressed count).
// Lines below the handler's level are dropped before any bookkeeping.
package ratelog

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// MaxKeys bounds the keys a Logger remembers.
const MaxKeys = 1024

// Logger is a rate-limited front of a slog.Logger. It is safe for
// concurrent use.
type Logger struct {
	log   *slog.Logger
	every time.Duration
	burst int
	now   func() time.Time // time.Now; tests inject a clock

	mu   sync.Mutex
	keys *simplelru.LRU[string, *window]
}

// window is one key's current period.
type window struct {
	start      time.Time
	logged     int // lines let through since start
	suppressed int // lines swallowed since the last one let through
}

// New returns a Logger that lets at most burst lines per key through in
// each period every (a period starts with the first line of a key after
// the previous period ended). burst below 1 counts as 1; every ≤ 0 turns
// limiting off. A nil log discards everything.
func New(log *slog.Logger, every time.Duration, burst int) *Logger {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	keys, err := simplelru.NewLRU[string, *window](MaxKeys, nil)
	if err != nil {
		panic(err) // only for a size ≤ 0
	}
	return &Logger{log: log, every: every, burst: max(burst, 1), now: time.Now, keys: keys}
}

// Debug logs at debug level, rate-limited by key.
func (l *Logger) Debug(key, msg string, args ...any) { l.logAt(slog.LevelDebug, key, msg, args) }

// Info logs at info level, rate-limited by key.
func (l *Logger) Info(key, msg string, args ...any) { l.logAt(slog.LevelInfo, key, msg, args) }

// Warn logs at warn level, rate-limited by key.
func (l *Logger) Warn(key, msg string, args ...any) { l.logAt(slog.LevelWarn, key, msg, args) }

// Error logs at error level, rate-limited by key.
func (l *Logger) Error(key, msg string, args ...any) { l.logAt(slog.LevelError, key, msg, args) }

// Log logs at level, rate-limited by key.
func (l *Logger) Log(level slog.Level, key, msg string, args ...any) { l.logAt(level, key, msg, args) }

// logAt must be called directly by the exported methods: it reports their
// caller as the line's source.
func (l *Logger) logAt(level slog.Level, key, msg string, args []any) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	now := l.now()
	suppressed, ok := l.allow(key, now)
	if !ok {
		return
	}
	var pcs [1]uintptr
	runtime.Callers(3, pcs[:]) // skip Callers, logAt and Debug/Info/Warn/Error/Log
	r := slog.NewRecord(now, level, msg, pcs[0])
	r.Add(args...)
	if suppressed > 0 {
		r.AddAttrs(slog.Int("suppressed", suppressed))
	}
	_ = l.log.Handler().Handle(ctx, r)
}

// allow reports whether a line of key may be logged at now and, if so, how
// many lines of key were swallowed since the last one let through.
func (l *Logger) allow(key string, now time.Time) (suppressed int, ok bool) {
	if l.every <= 0 {
		return 0, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	w, found := l.keys.Get(key)
	if !found {
		w = &window{start: now}
		l.keys.Add(key, w)
	}
	if now.Sub(w.start) >= l.every {
		w.start, w.logged = now, 0
	}
	if w.logged >= l.burst {
		w.suppressed++
		return 0, false
	}
	w.logged++
	suppressed, w.suppressed = w.suppressed, 0
	return suppressed, true
}
