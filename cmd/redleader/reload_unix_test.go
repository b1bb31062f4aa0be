//go:build unix

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/internal/logtest"
	"github.com/redleader-p2p/redleader/peer/api"
)

// jsonLogLines parses every line of a log_format: json log; a line that
// is not one JSON object fails the test.
func jsonLogLines(t *testing.T, log string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(log) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON (log_format: json): %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// TestAgentReloads runs the real agent command with log_format: json and
// changes its config file: `redleader reload` and SIGHUP apply the live
// keys and name the others; a broken file is refused, logged with the
// start-up messages, and the agent runs on with its config.
func TestAgentReloads(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(t.TempDir(), "redleader.yaml")
	base := fmt.Sprintf(`data_dir: %s
subnet: 10.97.0.0/24
advertise_addr: 127.0.0.1
bind_addr: 127.0.0.1
gossip_port: 0
peer_port: 0
api_addr: 127.0.0.1:0
lan_discovery: {enabled: false, interface: lo}
discovery: {enabled: false}
election: {bootstrap_settle: 100ms}
log_format: json
`, dir)
	write := func(extra string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(base+extra), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("log_level: info\n")
	var stdout, stderr logtest.Buffer
	done := make(chan int, 1)
	go func() { done <- run([]string{"agent", "--config", path}, &stdout, &stderr) }()
	// waitLog waits for a log line with msg (the n-th one) and returns it.
	waitLog := func(msg string, n int) map[string]any {
		t.Helper()
		giveUp := time.After(time.Minute) // a hang guard, not a speed check
		for {
			seen := 0
			for _, l := range jsonLogLines(t, stderr.String()) {
				if l["msg"] == msg {
					if seen++; seen == n {
						return l
					}
				}
			}
			select {
			case code := <-done:
				t.Fatalf("agent exited %d: %s", code, stderr.String())
			case <-giveUp:
				t.Fatalf("no log line %q: %s", msg, stderr.String())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	// The SIGHUP handler is installed before the agent starts.
	addr, _ := waitLog("agent started", 1)["api"].(string)
	if addr == "" {
		t.Fatal("no api address logged")
	}
	status := func() error {
		code, _, stderr := runCLI(t, "status", "--api", addr)
		if code != exitOK {
			return fmt.Errorf("status: exit %d: %s", code, stderr)
		}
		return nil
	}

	// joinFailed counts the debug lines of failed joins to addr.
	joinFailed := func(addr string) int {
		n := 0
		for _, l := range jsonLogLines(t, stderr.String()) {
			if l["msg"] == "join failed" && l["addr"] == addr {
				n++
			}
		}
		return n
	}

	// `redleader reload`: the level goes to debug, and a new join address
	// (nothing listens there) is tried at once: its failure shows at debug.
	write("log_level: debug\njoin: [\"127.0.0.1:1\"]\n")
	code, out, errOut := runCLI(t, "reload", "--api", addr, "--data-dir", dir, "--json")
	var res api.ReloadResponse
	if code != exitOK || json.Unmarshal([]byte(out), &res) != nil {
		t.Fatalf("reload: exit %d: %s %s", code, out, errOut)
	}
	if res.File != path || len(res.Applied) != 2 || res.Applied[0].Key != "join" || res.Applied[1].Key != "log_level" ||
		res.Applied[1].New != "debug" || len(res.Restart) != 0 {
		t.Fatalf("reload answer %+v", res)
	}
	if l := waitLog("config reloaded", 1); !strings.Contains(fmt.Sprint(l["applied"]), "log_level: info → debug") {
		t.Errorf("reload line %v", l)
	}
	waitLog("join failed", 1)

	// A key that needs a restart is named, and left as it was.
	write("log_level: debug\njoin: [\"127.0.0.1:1\"]\nnode_name: renamed\n")
	if code, out, errOut := runCLI(t, "reload", "--api", addr, "--data-dir", dir); code != exitOK ||
		!strings.Contains(out, "needs a restart  node_name: ") || !strings.Contains(out, " -> renamed (left as it was)") {
		t.Fatalf("reload: exit %d: %s %s", code, out, errOut)
	}
	if l := waitLog("config reload: these keys need a restart and were left as they were", 1); !strings.Contains(fmt.Sprint(l["keys"]), "node_name (") {
		t.Errorf("restart line %v", l)
	}

	// A broken file on SIGHUP: refused with the start-up message, the agent runs on.
	write("log_level: loud\n")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	l := waitLog("config reload refused: the running config stays", 1)
	if want := `invalid config: log_level: "loud": want debug, info, warn or error`; !strings.Contains(fmt.Sprint(l["err"]), want) ||
		l["level"] != "ERROR" || l["file"] != path {
		t.Errorf("refusal line %v, want err %q", l, want)
	}
	if code, _, errOut := runCLI(t, "agent", "--config", path, "--data-dir", t.TempDir()); code != exitConfig ||
		!strings.Contains(errOut, fmt.Sprint(l["err"])) {
		t.Errorf("start-up with the broken file: exit %d, %q; want exit 2 with the reload's message %q", code, errOut, l["err"])
	}
	if err := status(); err != nil {
		t.Fatalf("agent gone after a broken file: %v", err)
	}
	// … and through the API: 422, exit 1.
	if code, _, errOut := runCLI(t, "reload", "--api", addr, "--data-dir", dir); code != exitFail ||
		!strings.Contains(errOut, `answered 422: invalid config: log_level: "loud"`) {
		t.Errorf("reload of a broken file: exit %d, %q", code, errOut)
	}

	// Fixed, on SIGHUP: not_leader_material applied, the level back to
	// info: the failure of the next new join address is not logged.
	write("log_level: info\nnot_leader_material: true\njoin: [\"127.0.0.1:1\"]\n")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	l = waitLog("config reloaded", 2)
	if a := fmt.Sprint(l["applied"]); !strings.Contains(a, "not_leader_material: false → true") || !strings.Contains(a, "log_level: debug → info") {
		t.Errorf("second reload line %v", l)
	}
	write("log_level: info\nnot_leader_material: true\njoin: [\"127.0.0.1:2\"]\n")
	if code, out, errOut := runCLI(t, "reload", "--api", addr, "--data-dir", dir); code != exitOK ||
		!strings.Contains(out, "applied          join: [127.0.0.1:1] -> [127.0.0.1:2]") {
		t.Fatalf("reload: exit %d: %s %s", code, out, errOut)
	}
	waitLog("config reloaded", 3)
	time.Sleep(time.Second) // the join is tried at once (it failed within this at debug above)
	if n := joinFailed("127.0.0.1:2"); n != 0 {
		t.Errorf("%d debug lines after the level went back to info", n)
	}
	if err := status(); err != nil {
		t.Fatal(err)
	}

	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := <-done; code != exitOK {
		t.Fatalf("exit %d after SIGTERM: %s", code, stderr.String())
	}
	jsonLogLines(t, stderr.String()) // every line, to the end, is JSON
}
