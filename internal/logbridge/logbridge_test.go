package logbridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// capture returns a slog logger at min and a function that decodes what it
// logged, one map per record (time left out).
func capture(t *testing.T, min slog.Level) (*slog.Logger, func() []map[string]any) {
	t.Helper()
	var buf bytes.Buffer
	h := slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: min, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}})
	return slog.New(h), func() []map[string]any {
		var out []map[string]any
		for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
			if len(line) == 0 {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal(line, &m); err != nil {
				t.Fatalf("bad record %q: %v", line, err)
			}
			out = append(out, m)
		}
		buf.Reset()
		return out
	}
}

func TestParseLine(t *testing.T) {
	tests := []struct {
		line  string
		level slog.Level
		msg   string
		ok    bool
	}{
		{"2026/01/02 15:04:05 [DEBUG] memberlist: Stream connection from=10.0.0.1:7946\n", slog.LevelDebug, "memberlist: Stream connection from=10.0.0.1:7946", true},
		{"2026/01/02 15:04:05.123456 [INFO] memberlist: Suspect node-b has failed", slog.LevelInfo, "memberlist: Suspect node-b has failed", true},
		{"[WARN] memberlist: Was able to connect to b over TCP but not UDP", slog.LevelWarn, "memberlist: Was able to connect to b over TCP but not UDP", true},
		{"2026-01-02T15:04:05.000Z [ERR] memberlist: Failed to send ping: no route", slog.LevelError, "memberlist: Failed to send ping: no route", true},
		{"[ERROR] raft: failed to heartbeat", slog.LevelError, "raft: failed to heartbeat", true},
		{"[TRACE] fine detail", LevelTrace, "fine detail", true},
		{"no tag at all\n", slog.LevelInfo, "no tag at all", false},
		{"memberlist: quoting [ERR] inside a message", slog.LevelInfo, "memberlist: quoting [ERR] inside a message", false},
		{"2026/01/02 15:04:05 [NOTICE] unknown tag", slog.LevelInfo, "2026/01/02 15:04:05 [NOTICE] unknown tag", false},
		{"", slog.LevelInfo, "", false},
	}
	for _, tt := range tests {
		level, msg, ok := ParseLine(tt.line)
		if level != tt.level || msg != tt.msg || ok != tt.ok {
			t.Errorf("ParseLine(%q) = %v, %q, %v; want %v, %q, %v", tt.line, level, msg, ok, tt.level, tt.msg, tt.ok)
		}
	}
}

func TestWriterLogsAtTheTagLevel(t *testing.T) {
	l, records := capture(t, slog.LevelDebug)
	std := StdLogger(l.With("component", "memberlist"))
	std.Printf("[DEBUG] memberlist: Initiating push/pull sync with: %s", "b")
	std.Printf("[WARN] memberlist: Refuting a suspect message (from: %s)", "c")
	std.Printf("[TRACE] below the handler's level")
	got := records()
	want := []struct{ level, msg string }{
		{"DEBUG", "memberlist: Initiating push/pull sync with: b"},
		{"WARN", "memberlist: Refuting a suspect message (from: c)"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d: %v", len(got), len(want), got)
	}
	for i, w := range want {
		if got[i]["level"] != w.level || got[i]["msg"] != w.msg || got[i]["component"] != "memberlist" {
			t.Errorf("record %d = %v, want level %s msg %q component memberlist", i, got[i], w.level, w.msg)
		}
	}
}

func TestHCLogLevels(t *testing.T) {
	tests := []struct {
		name  string
		log   func(hclog.Logger)
		level string // "" = nothing logged
	}{
		{"trace", func(h hclog.Logger) { h.Trace("m") }, "DEBUG-4"},
		{"debug", func(h hclog.Logger) { h.Debug("m") }, "DEBUG"},
		{"info", func(h hclog.Logger) { h.Info("m") }, "INFO"},
		{"warn", func(h hclog.Logger) { h.Warn("m") }, "WARN"},
		{"error", func(h hclog.Logger) { h.Error("m") }, "ERROR"},
		{"Log with NoLevel", func(h hclog.Logger) { h.Log(hclog.NoLevel, "m") }, "INFO"},
		{"Log with Off", func(h hclog.Logger) { h.Log(hclog.Off, "m") }, ""},
		{"below SetLevel", func(h hclog.Logger) { h.SetLevel(hclog.Warn); h.Info("m") }, ""},
		{"at SetLevel", func(h hclog.Logger) { h.SetLevel(hclog.Warn); h.Warn("m") }, "WARN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, records := capture(t, LevelTrace)
			tt.log(HCLog(l))
			got := records()
			if tt.level == "" {
				if len(got) != 0 {
					t.Fatalf("logged %v, want nothing", got)
				}
				return
			}
			if len(got) != 1 || got[0]["level"] != tt.level || got[0]["msg"] != "m" {
				t.Fatalf("got %v, want one record at %s", got, tt.level)
			}
		})
	}
}

func TestHCLogEnabledFollowsTheHandler(t *testing.T) {
	l, records := capture(t, slog.LevelInfo)
	h := HCLog(l)
	if h.IsTrace() || h.IsDebug() || !h.IsInfo() || !h.IsWarn() || !h.IsError() {
		t.Fatalf("Is* = %v %v %v %v %v, want only info and above", h.IsTrace(), h.IsDebug(), h.IsInfo(), h.IsWarn(), h.IsError())
	}
	if h.GetLevel() != hclog.Info {
		t.Fatalf("GetLevel = %v, want info", h.GetLevel())
	}
	h.Debug("dropped")
	if got := records(); len(got) != 0 {
		t.Fatalf("debug reached an info handler: %v", got)
	}
}

func TestHCLogArgsNamesAndWith(t *testing.T) {
	l, records := capture(t, LevelTrace)
	h := HCLog(l).Named("raft").With("cluster", "c1")
	sub := h.Named("snapshot")
	sub.Warn("failed to heartbeat", "peer", "n2", "error", errors.New("boom"),
		"servers", hclog.Fmt("%d of %d", 1, 3), "odd")
	got := records()
	if len(got) != 1 {
		t.Fatalf("got %d records", len(got))
	}
	r := got[0]
	want := map[string]any{"level": "WARN", "msg": "failed to heartbeat", "logger": "raft.snapshot", "cluster": "c1",
		"peer": "n2", "error": "boom", "servers": "1 of 3", "!BADKEY": "odd"}
	for k, v := range want {
		if r[k] != v {
			t.Errorf("%s = %v, want %v (record %v)", k, r[k], v, r)
		}
	}
	if sub.Name() != "raft.snapshot" || len(sub.ImpliedArgs()) != 2 {
		t.Errorf("Name = %q, ImpliedArgs = %v", sub.Name(), sub.ImpliedArgs())
	}
	if strings.Contains(r["msg"].(string), "[WARN]") {
		t.Errorf("level tag left in the message: %q", r["msg"])
	}
}

func TestHCLogStandardLogger(t *testing.T) {
	tests := []struct {
		name  string
		opts  *hclog.StandardLoggerOptions
		line  string
		level string
		msg   string
	}{
		{"infer", &hclog.StandardLoggerOptions{InferLevels: true}, "[WARN] slow disk", "WARN", "slow disk"},
		{"force wins", &hclog.StandardLoggerOptions{InferLevels: true, ForceLevel: hclog.Error}, "[DEBUG] x", "ERROR", "x"},
		{"no inference", &hclog.StandardLoggerOptions{}, "[WARN] kept whole", "INFO", "[WARN] kept whole"},
		{"nil options", nil, "plain", "INFO", "plain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, records := capture(t, LevelTrace)
			HCLog(l).StandardLogger(tt.opts).Print(tt.line)
			got := records()
			if len(got) != 1 || got[0]["level"] != tt.level || got[0]["msg"] != tt.msg {
				t.Fatalf("got %v, want one record %s %q", got, tt.level, tt.msg)
			}
		})
	}
}

func TestLimitKey(t *testing.T) {
	tests := []struct{ msg, key string }{
		{`memberlist: discarding packet with unacceptable label "": from=10.77.1.12:40000`,
			"memberlist: discarding packet with unacceptable label"},
		{`memberlist: discarding packet with unacceptable label "x": from=[fe80::1]:7946`,
			"memberlist: discarding packet with unacceptable label"},
		{"memberlist: UDP packet too short (3 bytes) from=10.0.0.1:1", "memberlist: UDP packet too short"},
		{"memberlist: Got invalid checksum for UDP packet: 1f, 2e", "memberlist: Got invalid checksum for UDP packet"},
		{"memberlist: Failed to send gossip to 10.0.0.2:7946: no route", "memberlist: Failed to send gossip to"},
		{"memberlist: msg type (12) not supported from=10.0.0.1:9", "memberlist: msg type"},
		{"failed to decode incoming command", "failed to decode incoming command"},
		{"no component prefix: then a detail", "no component prefix"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := LimitKey(tt.msg); got != tt.key {
			t.Errorf("LimitKey(%q) = %q, want %q", tt.msg, got, tt.key)
		}
	}
}

// countBy counts records by level and message prefix.
func countBy(recs []map[string]any, level, prefix string) (n int, suppressed []any) {
	for _, r := range recs {
		if r["level"] == level && strings.HasPrefix(r["msg"].(string), prefix) {
			n++
			if s, ok := r["suppressed"]; ok {
				suppressed = append(suppressed, s)
			}
		}
	}
	return n, suppressed
}

func TestWriterRateLimitsWarnAndAbove(t *testing.T) {
	const every = 200 * time.Millisecond
	l, records := capture(t, slog.LevelDebug)
	std := log.New(newWriter(l.With("component", "memberlist"), every, 1), "", 0)
	start := time.Now()
	for i := range 500 { // junk from 500 addresses: one kind
		std.Printf("[ERR] memberlist: discarding packet with unacceptable label %q: from=10.0.%d.%d:%d", "", i/250, i%250, 40000+i)
	}
	for i := range 3 {
		std.Printf("[WARN] memberlist: Got invalid checksum for UDP packet: %x, %x", i, i+1)
		std.Printf("[DEBUG] memberlist: Stream connection from=10.0.0.%d:1", i) // below WARN: never limited
	}
	got := records()
	if time.Since(start) >= every {
		t.Skip("too slow to stay inside one period")
	}
	for _, c := range []struct {
		level, prefix string
		want          int
	}{
		{"ERROR", "memberlist: discarding packet", 1},
		{"WARN", "memberlist: Got invalid checksum", 1},
		{"DEBUG", "memberlist: Stream connection", 3},
	} {
		if n, supp := countBy(got, c.level, c.prefix); n != c.want || len(supp) != 0 {
			t.Errorf("%s %q: %d lines (suppressed attrs %v), want %d without", c.level, c.prefix, n, supp, c.want)
		}
	}
	if got[0]["component"] != "memberlist" {
		t.Errorf("component attribute lost: %v", got[0])
	}
	time.Sleep(every)
	std.Printf("[ERR] memberlist: discarding packet with unacceptable label %q: from=10.9.9.9:1", "")
	got = records()
	if n, supp := countBy(got, "ERROR", "memberlist: discarding packet"); n != 1 || len(supp) != 1 || supp[0] != float64(499) {
		t.Fatalf("after the period: %d lines, suppressed %v; want 1 line with suppressed=499 (%v)", n, supp, got)
	}
}

func TestHCLogRateLimitsWarnAndAbove(t *testing.T) {
	l, records := capture(t, LevelTrace)
	h := HCLog(l).Named("raft")
	for i := range 50 {
		h.Error("failed to decode incoming command", "error", fmt.Sprintf("junk %d", i))
		h.Warn("failed to contact", "server-id", i)
		h.Info("entering follower state", "term", i)
	}
	got := records()
	for _, c := range []struct {
		level, msg string
		want       int
	}{
		{"ERROR", "failed to decode incoming command", 1},
		{"WARN", "failed to contact", 1},
		{"INFO", "entering follower state", 50},
	} {
		if n, _ := countBy(got, c.level, c.msg); n != c.want {
			t.Errorf("%s %q: %d lines, want %d", c.level, c.msg, n, c.want)
		}
	}
	// The line let through keeps its attributes and the logger's name.
	n, _ := countBy(got, "ERROR", "failed to decode")
	for _, r := range got {
		if r["level"] == "ERROR" && (r["error"] != "junk 0" || r["logger"] != "raft") {
			t.Errorf("limited line lost attributes: %v", r)
		}
	}
	// A derived logger has a budget of its own.
	h.With("cluster", "c2").Error("failed to decode incoming command")
	if m, _ := countBy(records(), "ERROR", "failed to decode"); n != 1 || m != 1 {
		t.Errorf("derived logger: %d lines, want 1", m)
	}
}
