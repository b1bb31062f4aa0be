//go:build linux

package lab_test

// Helpers shared by the lab's end-to-end tests of real agents.

import (
	"context"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/internal/wait"
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

// apiAddr is where every lab agent's local API listens, inside its host.
const apiAddr = "127.0.0.1:7380"

// client is an API client of the agent, dialing inside its host.
func (a *agent) client(opts ...api.Option) *api.Client {
	return api.New(apiAddr, append([]api.Option{api.WithHTTPClient(a.h.HTTPClient())}, opts...)...)
}

func (a *agent) members(t *testing.T) []api.MemberInfo {
	t.Helper()
	ms, err := a.client().Members(shortCtx(t, 2*time.Second))
	if err != nil {
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
	wait.For(t, 10*time.Second, a.h.Name+" API up", func() bool {
		st, err := a.client().Status(shortCtx(t, 2*time.Second))
		if err != nil {
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

// sampler runs a check every period on its own goroutine until finish,
// counting the samples and keeping the violations each check reports,
// stamped with the time of their sample. check only ever runs on that
// goroutine: what it keeps for itself needs no lock, and may be read once
// finish has returned.
type sampler struct {
	stop, done chan struct{}
	once       sync.Once

	samples    int // written by the sampler's goroutine, read after done
	violations []string
}

func newSampler(period time.Duration, check func() []string) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			found := check()
			s.samples++
			for _, v := range found {
				s.violations = append(s.violations, stamp()+": "+v)
			}
		}
	}()
	return s
}

// finish stops the sampler (once; later calls just report) and returns
// the sample count and the violations.
func (s *sampler) finish() (samples int, violations []string) {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	return s.samples, s.violations
}

// stamp is the time of day to the millisecond, as samples are stamped.
func stamp() string { return time.Now().Format("15:04:05.000") }
