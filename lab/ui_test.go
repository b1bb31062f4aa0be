//go:build linux

package lab_test

// The dashboard in a real browser (issue #11 Build 3): headless Chromium,
// driven with chromedp over a pipe, runs inside a lab host's network
// namespace, where http://127.0.0.1:7380/ui/ is that host's agent.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/redleader-p2p/redleader/lab"
)

// dashboardURL is the page as a browser inside a lab host opens it.
const dashboardURL = "http://" + apiAddr + "/ui/"

// envArtifacts names the directory for the browser test's screenshots;
// default build/ui under the module root. (Not REDLEADER_*: the agents
// the lab starts get the test's environment and refuse REDLEADER_*
// variables that are no config key.)
const envArtifacts = "ARTIFACTS_DIR"

// chromiumPath finds Debian's chromium, or skips the test.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("dashboard browser test needs Chromium (.ci/run installs Debian's: apt-get install -y chromium)")
	return ""
}

// browserLog is what the page did, as the browser reported it.
type browserLog struct {
	mu          sync.Mutex
	requests    []string // URL of every request the page sent
	navigations int      // main-frame navigations (1: no reload)
	problems    []string // JS exceptions, CSP violations, console errors
}

func (b *browserLog) listen(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch e := ev.(type) {
	case *network.EventRequestWillBeSent:
		b.requests = append(b.requests, e.Request.URL)
	case *network.EventWebSocketCreated:
		b.requests = append(b.requests, e.URL)
	case *page.EventFrameNavigated:
		if e.Frame != nil && e.Frame.ParentID == "" {
			b.navigations++
		}
	case *runtime.EventExceptionThrown:
		if x := e.ExceptionDetails; x != nil {
			desc := x.Text
			if x.Exception != nil {
				desc += " " + x.Exception.Description
			}
			b.problems = append(b.problems, fmt.Sprintf("exception at %s:%d: %s", x.URL, x.LineNumber+1, desc))
		}
	case *log.EventEntryAdded:
		if e.Entry != nil && (e.Entry.Source == log.EntrySourceSecurity || e.Entry.Level == log.EntryLevelError) {
			b.problems = append(b.problems, fmt.Sprintf("log %s/%s: %s %s", e.Entry.Source, e.Entry.Level, e.Entry.Text, e.Entry.URL))
		}
	}
}

func (b *browserLog) snapshot() (requests []string, navigations int, problems []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.requests), b.navigations, slices.Clone(b.problems)
}

// startBrowser runs headless Chromium inside h's network namespace (`ip
// netns exec`, which execs in place: the pipe of the DevTools protocol,
// file descriptors 3 and 4, goes along; no socket links the test and the
// browser). Every name resolves to nothing and every request that is not
// to loopback goes to a proxy that is not there (127.0.0.1:9), so nothing
// the browser does on its own can reach another address either.
func startBrowser(t *testing.T, h *lab.Host, bl *browserLog) context.Context {
	t.Helper()
	chrome := chromiumPath(t)
	var out lockedBuffer
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(chrome),
		chromedp.WindowSize(1440, 900),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.Flag("proxy-server", "http://127.0.0.1:9"),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.CombinedOutput(&out),
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			cmd.Args = append([]string{"ip", "netns", "exec", h.NS, cmd.Path}, cmd.Args[1:]...)
			cmd.Path = ipPath(t)
			cmd.Err = nil
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		}),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithListener(bl.listen), chromedp.WithErrorf(t.Logf))
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		if t.Failed() {
			t.Logf("chromium output:\n%s", out.String())
		}
	})
	start := time.Now()
	if err := chromedp.Do(ctx); err != nil { // starts the browser and opens a tab
		t.Fatalf("start chromium in %s: %v\n%s", h.Name, err, out.String())
	}
	t.Logf("chromium started in %s's namespace in %v", h.Name, time.Since(start).Round(time.Millisecond))
	return ctx
}

func ipPath(t *testing.T) string {
	p, err := exec.LookPath("ip")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// lockedBuffer collects the browser's output from the allocator's goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// pageState is what the dashboard shows, read from its DOM.
type pageState struct {
	Agent     string   `json:"agent"`
	RedLeader string   `json:"red_leader"`
	Members   []string `json:"members"` // "name status"
	Jobs      []struct {
		ID    string `json:"id"`
		State string `json:"state"`
		Held  int64  `json:"held"`
		Total int64  `json:"total"`
		Text  string `json:"text"`
	} `json:"jobs"`
	Lines  int    `json:"lines"` // chart lines drawn
	Live   string `json:"live"`
	Marker string `json:"marker"` // set by the test after the first load: gone after a reload
}

const readPage = `(() => {
  const t = (sel) => { const e = document.querySelector(sel); return e ? e.textContent.trim() : ''; };
  return {
    agent: t('#agent-name'),
    red_leader: t('#rl-name'),
    members: [...document.querySelectorAll('#members tbody tr')].map((r) =>
      r.querySelector('td strong').textContent + ' ' + r.dataset.status),
    jobs: [...document.querySelectorAll('#jobs tbody tr')].map((r) => ({
      id: r.dataset.job, state: r.dataset.state, held: Number(r.dataset.held), total: Number(r.dataset.total),
      text: r.querySelector('.progress-text').textContent })),
    lines: document.querySelectorAll('#chart polyline').length,
    live: t('#live'),
    marker: String(window.__labMarker || ''),
  };
})()`

func readState(ctx context.Context) (pageState, error) {
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return chromedp.Run(c, chromedp.Evaluate[pageState](readPage))
}

// waitPage polls the page every 100 ms until ok accepts what it shows, and
// returns that and the time taken; it fails the test after d.
func waitPage(t *testing.T, ctx context.Context, d time.Duration, what string, ok func(pageState) error) (pageState, time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		st, err := readState(ctx)
		if err == nil {
			err = ok(st)
		}
		if err == nil {
			return st, time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("page: not within %v: %s: %v (page: %+v)", d, what, err, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// artifactsDir is $ARTIFACTS_DIR, else build/ui under the module root.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(envArtifacts)
	if dir == "" {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			t.Fatalf("go env GOMOD: %v", err)
		}
		dir = filepath.Join(filepath.Dir(strings.TrimSpace(string(out))), "build", "ui")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(c, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	p := filepath.Join(artifactsDir(t), name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", p, len(png))
}

// TestLabDashboard: a 3-agent subnet; the dashboard of an agent that is
// not leader material (so that neither its job nor the failover ever makes
// it the Red Leader), in headless Chromium inside that agent's namespace,
// shows the 3 members and the Red Leader's name; a job's progress moves on
// it while the job runs; after a SIGKILL of the Red Leader it shows the
// new one within 10 s, without a reload; and every request the page made
// went to 127.0.0.1. Screenshots go to build/ui (or $ARTIFACTS_DIR).
func TestLabDashboard(t *testing.T) {
	t.Parallel()
	chromiumPath(t) // skip early, before building a lab
	requireTools(t, false)
	const file, size = "ui.bin", 80 << 20 // 3 segments
	d := &dpLab{l: lab.New(t, lab.Options{Subnets: 1, WANRate: "40mbit"}), dir: t.TempDir(), files: map[string]dpFile{}}
	d.files[file] = makeFile(t, d.dir, file, size)
	d.startOrigins(t)
	viewer := startAgentEnv(t, d.l.AddHost(1), []string{"REDLEADER_NOT_LEADER_MATERIAL=true"}, "--log-level", "info")
	agents := []*agent{viewer}
	for range 2 {
		agents = append(agents, startAgentEnv(t, d.l.AddHost(1), nil, "--log-level", "info"))
	}
	d.agents = [][]*agent{agents}
	for _, a := range agents {
		a.nodeID(t)
	}
	sts, _ := waitAgree(t, agents, 30*time.Second, "one Red Leader", nil)
	waitProbeReady(t, agents, 30*time.Second)
	seat := sts[0].RedLeader
	if seat.Node == viewer.node {
		t.Fatalf("%s is not leader material but holds the seat", viewer.h.Name)
	}
	t.Logf("Red Leader %s; the browser runs in %s (not leader material)", seat.Name, viewer.h.Name)

	var bl browserLog
	ctx := startBrowser(t, viewer.h, &bl)
	start := time.Now()
	nav, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := chromedp.Do(nav, chromedp.Navigate(dashboardURL))
	cancel()
	if err != nil {
		t.Fatalf("open %s in %s: %v", dashboardURL, viewer.h.Name, err)
	}
	loaded := time.Since(start)
	st, shown := waitPage(t, ctx, 10*time.Second, "3 alive members and the Red Leader", func(st pageState) error {
		alive := 0
		for _, m := range st.Members {
			if strings.HasSuffix(m, " alive") {
				alive++
			}
		}
		if len(st.Members) != 3 || alive != 3 {
			return fmt.Errorf("members %v", st.Members)
		}
		if st.RedLeader != seat.Name {
			return fmt.Errorf("Red Leader %q, want %q", st.RedLeader, seat.Name)
		}
		if st.Agent != viewer.h.Name {
			return fmt.Errorf("agent %q, want %q", st.Agent, viewer.h.Name)
		}
		return nil
	})
	t.Logf("page: loaded in %v, 3 members and Red Leader %s shown %v later; members %v",
		loaded.Round(time.Millisecond), st.RedLeader, shown.Round(time.Millisecond), st.Members)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.__labMarker = 'first load'`)); err != nil {
		t.Fatal(err)
	}

	// A job on the viewer: its progress moves on the page.
	url := d.url(kindOrigin, file)
	b := startFetches(t, []*agent{viewer}, url)
	var seen []int64
	st, took := waitPage(t, ctx, 60*time.Second, "the job's progress moving", func(st pageState) error {
		if len(st.Jobs) != 1 {
			return fmt.Errorf("%d jobs", len(st.Jobs))
		}
		j := st.Jobs[0]
		if j.Held > 0 && j.Held < size && (len(seen) == 0 || j.Held > seen[len(seen)-1]) {
			seen = append(seen, j.Held)
		}
		if len(seen) < 3 || j.Held < size/2 { // a segment is done: its bytes are counted
			return fmt.Errorf("progress %v (%s, %s)", seen, j.State, j.Text)
		}
		if j.Total != size || !strings.Contains(j.Text, "%") {
			return fmt.Errorf("total %d, text %q", j.Total, j.Text)
		}
		return nil
	})
	t.Logf("job progress moved on the page: held %v within %v (%s)", seen, took.Round(time.Millisecond), st.Jobs[0].Text)
	if st.Lines != 3 {
		t.Errorf("chart: %d lines, want 3 (WAN, LAN in, LAN out)", st.Lines)
	}
	screenshot(t, ctx, "dashboard.png")

	// SIGKILL of the Red Leader (as the agents agree now, and the page
	// shows): the page shows the new one.
	sts, _ = waitAgree(t, agents, 10*time.Second, "one Red Leader before the kill", nil)
	old := byNode(agents, sts[0].RedLeader.Node)
	waitPage(t, ctx, 5*time.Second, "the Red Leader before the kill", func(st pageState) error {
		if st.RedLeader != old.h.Name {
			return fmt.Errorf("Red Leader %q, want %q", st.RedLeader, old.h.Name)
		}
		return nil
	})
	if err := old.p.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	survivors := without(agents, old)
	st, _ = waitPage(t, ctx, 10*time.Second, "the new Red Leader", func(st pageState) error {
		if st.RedLeader == old.h.Name || !slices.ContainsFunc(survivors, func(a *agent) bool { return a.h.Name == st.RedLeader }) {
			return fmt.Errorf("Red Leader %q", st.RedLeader)
		}
		return nil
	})
	t.Logf("SIGKILL of %s: the page shows the new Red Leader %s %v later (members %v)",
		old.h.Name, st.RedLeader, time.Since(killed).Round(time.Millisecond), st.Members)
	agreed, _ := waitAgree(t, survivors, 10*time.Second, "survivors agree", nil)
	if agreed[0].RedLeader.Name != st.RedLeader {
		t.Errorf("page shows %s, the survivors agree on %s", st.RedLeader, agreed[0].RedLeader.Name)
	}
	if st.Marker != "first load" {
		t.Errorf("page was reloaded (marker %q)", st.Marker)
	}
	screenshot(t, ctx, "dashboard-failover.png")
	b.kill()

	requests, navigations, problems := bl.snapshot()
	if navigations != 1 {
		t.Errorf("%d main-frame navigations, want 1 (no reload)", navigations)
	}
	var offsite []string
	for _, u := range requests {
		if !strings.HasPrefix(u, "http://127.0.0.1:7380/") {
			offsite = append(offsite, u)
		}
	}
	if len(offsite) > 0 || len(requests) < 20 {
		t.Errorf("requests: %d, not to 127.0.0.1:7380: %v", len(requests), offsite)
	}
	if len(problems) > 0 {
		t.Errorf("the page reported problems: %s", strings.Join(problems, "\n  "))
	}
	t.Logf("network log: %d requests, all to http://127.0.0.1:7380/ (%d distinct paths)", len(requests), distinctPaths(requests))
}

func distinctPaths(urls []string) int {
	seen := map[string]bool{}
	for _, u := range urls {
		u, _, _ = strings.Cut(u, "?")
		seen[u] = true
	}
	return len(seen)
}
