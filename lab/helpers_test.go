//go:build linux

package lab_test

// Helpers shared by the lab's end-to-end tests of real agents.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/lab"
	"github.com/redleader-p2p/redleader/peer"
	"github.com/redleader-p2p/redleader/peer/api"
)

// agent is one redleader process on a lab host. env and args are kept so
// that start can run it again on the same data dir.
type agent struct {
	h    *lab.Host
	p    *lab.Proc
	dir  string
	node string
	env  []string // extra environment (REDLEADER_* config keys)
	args []string // extra agent flags
}

func startAgent(t *testing.T, h *lab.Host, args ...string) *agent {
	t.Helper()
	return startAgentEnv(t, h, nil, args...)
}

// startAgentEnv starts an agent on a new data dir with extra environment.
func startAgentEnv(t *testing.T, h *lab.Host, env []string, args ...string) *agent {
	t.Helper()
	a := &agent{h: h, dir: t.TempDir(), env: env, args: args}
	a.start(t)
	return a
}

// start runs the agent process (again) on its host and data dir. A
// restarted agent keeps its node ID, which lives in the data dir.
func (a *agent) start(t *testing.T) {
	t.Helper()
	full := append([]string{lab.Binary(t), "agent", "--data-dir", a.dir, "--log-level", "debug",
		"--node-name", a.h.Name}, a.args...)
	cmd := a.h.Command(context.Background(), full...)
	if len(a.env) > 0 {
		cmd.Env = append(os.Environ(), a.env...)
	}
	a.p = a.h.StartCmd(t, "agent", cmd)
}

// api GETs path from the agent's local API into v.
func (a *agent) api(ctx context.Context, path string, v any) error {
	req, err := newGet(ctx, "http://127.0.0.1:7380"+path)
	if err != nil {
		return err
	}
	resp, err := a.h.HTTPClient().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: HTTP %d: %s", path, resp.StatusCode, b)
	}
	return json.Unmarshal(b, v)
}

func (a *agent) members(t *testing.T) []api.MemberInfo {
	t.Helper()
	var ms []api.MemberInfo
	if err := a.api(shortCtx(t, 2*time.Second), "/v1/members", &ms); err != nil {
		return nil
	}
	return ms
}

// nodeID waits for the agent's API and returns its node ID.
func (a *agent) nodeID(t *testing.T) string {
	t.Helper()
	if a.node != "" {
		return a.node
	}
	waitFor(t, 10*time.Second, a.h.Name+" API up", func() bool {
		var st api.StatusResponse
		if a.api(shortCtx(t, 2*time.Second), "/v1/status", &st) != nil {
			return false
		}
		a.node = st.Node
		return true
	})
	return a.node
}

func newGet(ctx context.Context, url string) (*http.Request, error) {
	return http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(start)
}

// statusOf returns how a sees node ("" when not listed).
func statusOf(ms []api.MemberInfo, node string) string {
	for _, m := range ms {
		if m.Node == node {
			return m.Status
		}
	}
	return ""
}

// seesExactly reports whether a lists exactly want, all alive.
func (a *agent) seesExactly(t *testing.T, want []*agent) bool {
	ms := a.members(t)
	if len(ms) != len(want) {
		return false
	}
	for _, w := range want {
		if statusOf(ms, w.node) != peer.StatusAlive {
			return false
		}
	}
	return true
}
