//go:build linux

package lab_test

// End-to-end test of the config reload (issue #11): real agents started
// with a config file, which is changed under them and re-read on SIGHUP.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/internal/wait"
	"github.com/redleader-p2p/redleader/lab"
	"github.com/redleader-p2p/redleader/peer/api"
)

// reloadBase is the start of every agent's config file in the reload
// test: JSON logs (parsed below), and a short rejoin interval so that a
// failing join address is retried (and its failure logged at debug) every
// two seconds.
const reloadBase = "log_format: json\nrejoin_interval: 2s\n"

// deadJoin is a join address nothing listens on, inside each host: a join
// there fails at once, logged at debug ("join failed").
const deadJoin = "127.0.0.1:1"

// configAgent is an agent started with --config path and no --log-level
// flag (flags win over the file: the file must decide the level).
type configAgent struct {
	*agent
	path string
}

func startConfigAgent(t *testing.T, h *lab.Host, body string) *configAgent {
	t.Helper()
	a := &configAgent{agent: &agent{h: h, dir: t.TempDir()}, path: filepath.Join(t.TempDir(), "redleader.yaml")}
	a.write(t, body)
	cmd := h.Command(context.Background(), lab.Binary(t), "agent", "--config", a.path, "--data-dir", a.dir,
		"--node-name", h.Name)
	a.p = h.StartCmd(t, "agent", cmd)
	return a
}

func (a *configAgent) write(t *testing.T, body string) {
	t.Helper()
	if err := os.WriteFile(a.path, []byte(reloadBase+body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// logLines parses the agent's log: every line must be one JSON object
// (log_format: json), Raft's and memberlist's included.
func (a *configAgent) logLines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(a.p.Log()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%s: a log line is not JSON (log_format: json): %q", a.h.Name, line)
		}
		out = append(out, m)
	}
	return out
}

// since returns the lines logged after the first line with msg (nil
// when there is none).
func since(lines []map[string]any, msg string) []map[string]any {
	for i, l := range lines {
		if l["msg"] == msg {
			return lines[i+1:]
		}
	}
	return nil
}

func countLines(lines []map[string]any, match func(map[string]any) bool) int {
	n := 0
	for _, l := range lines {
		if match(l) {
			n++
		}
	}
	return n
}

func isDebug(l map[string]any) bool { return l["level"] == "DEBUG" }

// TestReloadSIGHUP: the Red Leader's config file gets log_level: debug
// and not_leader_material: true; on SIGHUP the same process logs at debug
// and stops being the Red Leader (another agent takes the seat). Then a
// broken file on SIGHUP is refused with the message a start-up gives, and
// the agent runs on with the config it had: still at debug, still not
// leader material.
func TestReloadSIGHUP(t *testing.T) {
	l := lab.New(t, lab.Options{Subnets: 1, WANRate: "off"})
	var agents []*agent
	byAgent := map[*agent]*configAgent{}
	for range 3 {
		a := startConfigAgent(t, l.AddHost(1), "log_level: info\n")
		agents = append(agents, a.agent)
		byAgent[a.agent] = a
	}
	for _, a := range agents {
		a.nodeID(t)
	}
	sts, took := waitAgree(t, agents, 30*time.Second, "one Red Leader", nil)
	rl := byAgent[byNode(agents, sts[0].RedLeader.Node)]
	t.Logf("Red Leader %s after %v", rl.h.Name, took)
	pid := rl.p.Pid()
	before := rl.status()
	if before == nil || before.Role != "leader" {
		t.Fatalf("%s: status %+v, want role leader", rl.h.Name, before)
	}
	if n := countLines(rl.logLines(t), isDebug); n != 0 {
		t.Fatalf("%s: %d debug lines at log_level info", rl.h.Name, n)
	}

	// Reload: debug, not leader material, and a join address nothing
	// listens on (its failure, at debug, shows the level in force).
	rl.write(t, "log_level: debug\nnot_leader_material: true\njoin: [\""+deadJoin+"\"]\n")
	hup := time.Now()
	if err := rl.p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	_, took = waitAgree(t, agents, 20*time.Second, "another Red Leader",
		func(seat api.RedLeaderInfo, _ []*api.StatusResponse) error {
			if seat.Node == rl.node {
				return fmt.Errorf("%s is still the Red Leader", rl.h.Name)
			}
			return nil
		})
	t.Logf("the seat moved %v after SIGHUP", took)
	wait.For(t, 10*time.Second, rl.h.Name+" logs at debug", func() bool {
		return countLines(since(rl.logLines(t), "config reloaded"), isDebug) > 0
	})
	var reloaded map[string]any
	for _, l := range rl.logLines(t) {
		if l["msg"] == "config reloaded" {
			reloaded = l
		}
	}
	for _, want := range []string{"log_level: info → debug", "not_leader_material: false → true", "join: [] → [" + deadJoin + "]"} {
		if !strings.Contains(fmt.Sprint(reloaded["applied"]), want) {
			t.Errorf("reload line %v lacks %q", reloaded, want)
		}
	}
	after := rl.status()
	if after == nil || after.Role == "leader" || after.Node != before.Node {
		t.Fatalf("%s after SIGHUP: %+v", rl.h.Name, after)
	}
	if rl.p.Pid() != pid || after.UptimeS < before.UptimeS+int64(time.Since(hup)/time.Second)-1 {
		t.Fatalf("%s restarted: pid %d → %d, uptime %d s → %d s", rl.h.Name, pid, rl.p.Pid(), before.UptimeS, after.UptimeS)
	}
	select {
	case <-rl.p.Done():
		t.Fatalf("%s exited", rl.h.Name)
	default:
	}
	if m, ok := rl.memberInfo(t, rl.node); !ok || !m.NotLeaderMaterial || m.Eligible {
		t.Errorf("%s lists itself %+v, want not leader material, ineligible", rl.h.Name, m)
	}

	// A broken file: refused, logged with the start-up message; the agent
	// keeps its config (debug, not leader material).
	rl.write(t, "log_level: loud\nnot_leader_material: false\n")
	if err := rl.p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var refusal map[string]any
	wait.For(t, 10*time.Second, rl.h.Name+" refuses the broken file", func() bool {
		for _, l := range rl.logLines(t) {
			if l["msg"] == "config reload refused: the running config stays" {
				refusal = l
				return true
			}
		}
		return false
	})
	const wantErr = `invalid config: log_level: "loud": want debug, info, warn or error`
	if refusal["level"] != "ERROR" || refusal["err"] != wantErr || refusal["file"] != rl.path {
		t.Errorf("refusal line %v, want ERROR with err %q and file %s", refusal, wantErr, rl.path)
	}
	// The same file at start-up: exit 2 with the same message.
	out, err := rl.h.Command(shortCtx(t, 20*time.Second), lab.Binary(t), "agent", "--config", rl.path,
		"--data-dir", t.TempDir()).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || strings.TrimSpace(string(out)) != "redleader: "+wantErr {
		t.Errorf("start-up with the broken file: %v, %q; want exit 2 and %q", err, out, "redleader: "+wantErr)
	}
	// Still at debug: the dead join address is retried (every 2 s) and its
	// failure logged after the refusal.
	wait.For(t, 10*time.Second, rl.h.Name+" still logs at debug after the refusal", func() bool {
		return countLines(since(rl.logLines(t), "config reload refused: the running config stays"), func(l map[string]any) bool {
			return isDebug(l) && l["msg"] == "join failed" && l["addr"] == deadJoin
		}) > 0
	})
	time.Sleep(3 * time.Second) // long enough for the election to act on a flag that changed
	sts = statuses(agents)
	if _, err := agreement(agents, sts); err != nil {
		t.Fatalf("after the refused reload: %v", err)
	}
	if sts[0].RedLeader.Node == rl.node {
		t.Fatalf("%s is the Red Leader again: the refused file's not_leader_material: false was applied", rl.h.Name)
	}
	if m, ok := rl.memberInfo(t, rl.node); !ok || !m.NotLeaderMaterial {
		t.Errorf("%s lists itself %+v after the refused reload, want not leader material still", rl.h.Name, m)
	}
	if rl.p.Pid() != pid {
		t.Fatalf("%s restarted", rl.h.Name)
	}
	for _, a := range agents {
		byAgent[a].logLines(t) // every line of every agent is JSON
	}
}
