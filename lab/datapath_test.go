//go:build linux

package lab_test

// End-to-end tests of the data path (issue #10, "Done when"): `redleader
// fetch` on every agent of two subnets at once, from `redleader origin`
// (with and without a round trip to it) and from a plain HTTP server; the
// Red Leader killed halfway; one agent stopped halfway and started again;
// the errors of Build 10 through the CLI. WAN copies and the bound on the
// time to the last completion are calibrated in the same run with one curl
// download alone (datapath_helpers_test.go). `make bench-lab` runs the
// issue's sizes and prints the table (datapath_bench_test.go).

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/internal/wait"
	"github.com/redleader-p2p/redleader/lab"
	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/peer/content"
)

const (
	// dpWANRate is the WAN of the 2 × 5 cases.
	dpWANRate = "100mbit"
	// dpRTT is the round trip to the origin of the delayed case.
	dpRTT = 80 * time.Millisecond
	// dpSize is the file of each 2 × 5 case: the 64 MiB, two
	// segments, so that a plain origin's segments pipeline. About 2 min
	// for the four cases when they pass.
	dpSize = 64 << 20
)

// dpCase is one measured case: every agent of the lab fetches one file at
// once.
type dpCase struct {
	name      string
	kind      originKind
	file      string
	maxCopies float64 // WAN copies allowed
	maxRatio  float64 // time to the last completion over the bound (0: not checked)
	kill      bool    // SIGKILL subnet 1's Red Leader halfway through its job
}

// dpCases are the 2 × 5 cases.
func dpCases() []dpCase {
	return []dpCase{
		{name: "redleader origin", kind: kindOrigin, file: "origin.bin", maxCopies: 2.10, maxRatio: 1.5},
		{name: "redleader origin, 80 ms round trip", kind: kindRTT, file: "rtt.bin", maxCopies: 2.10, maxRatio: 1.5},
		{name: "plain http", kind: kindPlain, file: "plain.bin", maxCopies: 2.10, maxRatio: 1.5},
		{name: "SIGKILL the Red Leader halfway", kind: kindOrigin, file: "kill.bin", maxCopies: 2.5, kill: true},
	}
}

// runRedleader runs `redleader fetch` of the case's file on every agent at
// once and puts it in numbers; needed is the copies the bound allows for.
func (d *dpLab) runRedleader(t *testing.T, c dpCase, cal calibration, needed int) dpResult {
	t.Helper()
	f, url := d.files[c.file], d.url(c.kind, c.file)
	agents := d.all()
	before := d.wan(t)
	b := startFetches(t, agents, url)
	var skip []*download
	if c.kill {
		// Whoever holds subnet 1's seat once its job is halfway.
		var leader *agent
		wait.For(t, 10*time.Minute, "the Red Leader of subnet 1 halfway through its job", func() bool {
			seat, err := agreement(d.agents[0], statuses(d.agents[0]))
			if leader = byNode(d.agents[0], seat.Node); err != nil || leader == nil {
				return false
			}
			j, err := leader.jobOf(url)
			return err == nil && j.Held >= f.size/2
		})
		if err := leader.p.Kill(); err != nil {
			t.Fatal(err)
		}
		running := 0
		for i, dl := range b.dls {
			select {
			case <-dl.done:
			default:
				if agents[i] != leader {
					running++
				}
			}
		}
		t.Logf("%s, the Red Leader of subnet 1, SIGKILLed halfway through its job, %v after the start; %d other downloads running",
			leader.h.Name, time.Since(b.start).Round(time.Millisecond), running)
		if running == 0 {
			t.Errorf("every other download was over when the Red Leader was killed: the case shows nothing")
		}
		skip = append(skip, b.dls[slices.Index(agents, leader)])
		agents = without(agents, leader)
	}
	b.wait(t, 4*time.Duration(needed)*cal.took+2*time.Minute)
	w := d.wan(t).Sub(before)
	r := b.result(t, "redleader", f, w.Down, cal, needed, skip...)
	r.reasons, r.rss = logJobs(t, agents, url)
	t.Logf("origin bytes of all jobs by reason: %v; largest agent peak RSS %s", r.reasons, mib(r.rss))
	removeJobs(t, agents, url)
	return r
}

// runCurl runs curl of the case's file on every agent's host at once: the
// naive baseline.
func (d *dpLab) runCurl(t *testing.T, c dpCase, cal calibration, needed int) dpResult {
	t.Helper()
	f, url := d.files[c.file], d.url(c.kind, c.file)
	var hosts []*lab.Host
	for _, a := range d.all() {
		hosts = append(hosts, a.h)
	}
	before := d.wan(t)
	b := startCurls(t, hosts, url)
	b.wait(t, 4*time.Duration(len(hosts))*cal.took+2*time.Minute)
	return b.result(t, "curl", f, d.wan(t).Sub(before).Down, cal, needed)
}

// check fails t unless r is within the case's bounds.
func (c dpCase) check(t *testing.T, r dpResult) {
	t.Helper()
	t.Log(r)
	for _, f := range r.failed {
		t.Errorf("download failed: %s", f)
	}
	if r.copies > c.maxCopies {
		t.Errorf("%.3f copies crossed the WAN, want ≤ %.2f", r.copies, c.maxCopies)
	}
	if c.maxRatio > 0 && r.ratio() > c.maxRatio {
		t.Errorf("last completion after %v = %.2f × the bound %v, want ≤ %.2f", r.last.Round(time.Millisecond), r.ratio(),
			r.bound.Round(time.Millisecond), c.maxRatio)
	}
}

// TestDataPath: 2 subnets × 5 agents, WAN 100 Mbit/s; for each case all 10
// agents fetch the same file at once (a file of its own per case, so that
// no cache holds it): all files have the right SHA-256, the WAN carries ≤
// 2.10 copies and the last completion comes within 1.5 × the bound for 2
// copies — from `redleader origin`, from it behind an 80 ms round trip,
// and from python3 -m http.server. Then subnet 1's Red Leader is SIGKILLed
// halfway: every survivor completes right and the WAN carries ≤ 2.5 copies.
//
// Not parallel: it measures times against a calibration, which other
// tests' load would skew.
func TestDataPath(t *testing.T) {

	files := map[string]int64{}
	for _, c := range dpCases() {
		files[c.file] = dpSize
	}
	d := newDPLab(t, dpConfig{subnets: []int{5, 5}, wanRate: dpWANRate, files: files, plain: true, rtt: dpRTT})
	calHost := d.agents[0][0].h
	for _, c := range dpCases() {
		t.Run(c.name, func(t *testing.T) {
			cal := d.calibrate(t, calHost, d.files[c.file], d.url(c.kind, c.file))
			c.check(t, d.runRedleader(t, c, cal, len(d.agents)))
		})
	}
}

// TestDataPathOneSubnet: one subnet of 8 agents (so that some are plain
// members, outside Raft), a plain HTTP origin, 64 MiB, all 8 fetch at
// once: ≤ 1.05 WAN copies, every file right.
func TestDataPathOneSubnet(t *testing.T) {
	t.Parallel()

	c := dpCase{name: "plain http, 8 agents", kind: kindPlain, file: "plain8.bin", maxCopies: 1.05}
	d := newDPLab(t, dpConfig{subnets: []int{8}, wanRate: dpWANRate, files: map[string]int64{c.file: dpSize}, plain: true})
	cal := d.calibrate(t, d.agents[0][0].h, d.files[c.file], d.url(c.kind, c.file))
	c.check(t, d.runRedleader(t, c, cal, 1))
}

// TestDataPathAlone: one agent alone on its subnet, `redleader origin`.
// The errors of Build 10 through the CLI; then its job stopped (SIGTERM)
// halfway and the agent started again: the job resumes, and the origin
// bytes after the restart are at most what was missing plus one segment.
func TestDataPathAlone(t *testing.T) {
	t.Parallel()
	const resumeSize = 5 * content.SegmentSize / 2 // 80 MiB: stopped inside segment 1
	d := newDPLab(t, dpConfig{subnets: []int{1}, wanRate: dpWANRate,
		files: map[string]int64{"small.bin": 3<<20 + 12345, "resume.bin": resumeSize}})
	a := d.agents[0][0]
	t.Run("errors", func(t *testing.T) { testFetchErrors(t, d, a) })
	t.Run("resume", func(t *testing.T) { testFetchResume(t, d, a) })
}

// testFetchErrors: 404, a refused connection, a TLS failure, an expected
// SHA-256 that does not match and an unwritable destination each give a
// one-line error naming the cause, exit 1 and nothing at the destination
// (no temporary file either); the agent still serves, and the content of
// the failed job is then fetched right (a consistent cache).
func testFetchErrors(t *testing.T, d *dpLab, a *agent) {
	small := d.files["small.bin"]
	good := d.url(kindOrigin, small.name)
	notDir := filepath.Join(t.TempDir(), "plain-file")
	if err := os.WriteFile(notDir, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// An HTTPS origin whose certificate nobody trusts.
	ln, err := d.l.Origin().Listen("tcp", "10.78.0.2:8443")
	if err != nil {
		t.Fatal(err)
	}
	tlsOrigin := httptest.NewUnstartedServer(http.FileServer(http.Dir(d.dir)))
	tlsOrigin.Listener.Close()
	tlsOrigin.Listener = ln
	tlsOrigin.StartTLS()
	defer tlsOrigin.Close()
	jobsBefore := countJobs(t, a)
	for _, tt := range []struct {
		name, url, sha, out string
		want                []string
		job                 bool // a job is queued (and fails)
	}{
		{name: "404", url: d.url(kindOrigin, "no-such-file.bin"), job: true,
			want: []string{"origin has no such file", "404"}},
		{name: "connection refused", url: "http://10.78.0.2:9/small.bin", job: true,
			want: []string{"origin refused the connection"}},
		{name: "TLS failure", url: "https://10.78.0.2:8443/small.bin", job: true,
			want: []string{"TLS handshake with the origin failed", "certificate"}},
		{name: "sha256 mismatch", url: good, sha: strings.Repeat("0", 64), job: true,
			want: []string{"does not match the expected SHA-256", small.sum}},
		{name: "unwritable destination", url: good, out: filepath.Join(notDir, "out.bin"),
			want: []string{"cannot write " + filepath.Join(notDir, "out.bin"), "not a directory"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			out := tt.out
			if out == "" {
				out = filepath.Join(dir, "out.bin")
			}
			args := []string{"fetch", tt.url, "-o", out, "--data-dir", a.dir}
			if tt.sha != "" {
				args = append(args, "--sha256", tt.sha)
			}
			n0 := countJobs(t, a)
			stdout, stderr, code := runCLISplit(t, a.h, args...)
			t.Logf("exit %d: %s", code, strings.TrimSpace(stderr))
			if code != 1 {
				t.Errorf("exit %d, want 1 (stdout %q)", code, stdout)
			}
			if lines := strings.Split(strings.TrimSpace(stderr), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "redleader: ") {
				t.Errorf("stderr %q, want one line starting with \"redleader: \"", stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not say %q", stderr, w)
				}
			}
			if _, err := os.Lstat(out); err == nil {
				t.Errorf("%s exists after the failure", out)
			}
			if left, _ := os.ReadDir(filepath.Dir(out)); tt.out == "" && len(left) != 0 {
				t.Errorf("%d files left next to the destination: %v", len(left), left)
			}
			if n := countJobs(t, a); tt.job != (n == n0+1) {
				t.Errorf("%d jobs after, %d before; a job queued: want %v", n, n0, tt.job)
			}
		})
	}
	if st := a.status(); st == nil {
		t.Fatal("the agent no longer answers after the errors")
	}
	// The blocks the sha256-mismatch job stored are verified ones: the
	// same content now fetches right (from the cache).
	file := filepath.Join(t.TempDir(), "small.bin")
	stdout, stderr, code := runCLISplit(t, a.h, "fetch", good, "-o", file, "--data-dir", a.dir)
	sum, err := fileSHA256(file)
	if code != 0 || err != nil || sum != small.sum {
		t.Fatalf("fetch after the errors: exit %d, sha256 %s (%v), want %s: %s %s", code, sum, err, small.sum, stdout, stderr)
	}
	j, _ := a.jobOf(good)
	t.Logf("fetch after the errors: right; cache %s, origin %s; %d jobs now, %d before", mib(j.Bytes.Cache), mib(j.Bytes.Origin),
		countJobs(t, a), jobsBefore)
}

// runCLISplit runs the CLI in h and returns stdout, stderr and the exit
// code.
func runCLISplit(t *testing.T, h *lab.Host, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := h.Command(shortCtx(t, 2*time.Minute), append([]string{lab.Binary(t)}, args...)...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("redleader %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}

func countJobs(t *testing.T, a *agent) int {
	t.Helper()
	ctx, cancel := apiCtx()
	defer cancel()
	list, err := a.client().Jobs(ctx)
	if err != nil {
		t.Fatalf("%s: jobs: %v", a.h.Name, err)
	}
	return len(list)
}

// testFetchResume: SIGTERM the agent halfway through a job, start it
// again: the job resumes by itself (the fetch that followed it says so and
// exits 1), completes with the right content (`jobs get`), and the bytes
// the origin sent after the restart are at most those missing at the
// restart (what the resumed job did not find in the cache) plus one
// segment — counted on the WAN link, converted with the calibration.
func testFetchResume(t *testing.T, d *dpLab, a *agent) {
	f := d.files["resume.bin"]
	url := d.url(kindOrigin, f.name)
	cal := d.calibrate(t, a.h, f, url)
	perByte := float64(cal.bytes) / float64(f.size)

	before := d.wan(t)
	b := startFetches(t, []*agent{a}, url)
	var held int64
	wait.For(t, 5*time.Minute, "the job halfway", func() bool {
		j, err := a.jobOf(url)
		held = j.Held
		return err == nil && j.Held >= f.size/2
	})
	if err := a.p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := a.p.Wait(30 * time.Second); errors.Is(err, lab.ErrWaitTimeout) {
		t.Fatalf("agent after SIGTERM: %v", err)
	}
	stopped := d.wan(t)
	b.wait(t, 30*time.Second)
	dl := b.dls[0]
	t.Logf("SIGTERM at %s held of %s; %s crossed the WAN before the stop; fetch: %v: %s", mib(held), mib(f.size),
		mib(int64(float64(stopped.Sub(before).Down)/perByte)), dl.err, strings.TrimSpace(dl.stderr.String()))
	if dl.err == nil || !strings.Contains(dl.stderr.String(), "resumes when it starts again") {
		t.Errorf("fetch when its agent stopped: %v: %q, want exit 1 saying the job resumes", dl.err, dl.stderr.String())
	}

	a.start(t)
	a.node = ""
	a.nodeID(t)
	var j api.JobInfo
	wait.For(t, 5*time.Minute, "the resumed job done", func() bool {
		var err error
		j, err = a.jobOf(url)
		return err == nil && j.Over()
	})
	after := d.wan(t)
	if j.State != "done" {
		t.Fatalf("resumed job %s: %s", j.State, j.Error)
	}
	// The resumed run reads what the first one stored from the cache:
	// that is what was held at the restart.
	missing := f.size - j.Bytes.Cache
	originAfter := int64(float64(after.Sub(stopped).Down) / perByte)
	t.Logf("resumed job: resumes %d; cache %s (held at the restart), origin %s in all %v; after the restart the WAN carried %s for %s missing",
		j.Resumes, mib(j.Bytes.Cache), mib(j.Bytes.Origin), j.Bytes.OriginByReason, mib(originAfter), mib(missing))
	if j.Resumes < 1 {
		t.Errorf("job resumes %d, want ≥ 1", j.Resumes)
	}
	if j.Bytes.Cache <= 0 || j.Bytes.Cache >= f.size {
		t.Errorf("resumed job read %s from the cache, want part of %s (what the first run stored)", mib(j.Bytes.Cache), mib(f.size))
	}
	if limit := missing + content.SegmentSize; originAfter > limit {
		t.Errorf("the origin sent %s after the restart, want ≤ %s missing + one segment = %s", mib(originAfter), mib(missing), mib(limit))
	}
	file := filepath.Join(t.TempDir(), "resumed.bin")
	if out, err := a.cli(t, "jobs", "get", j.ID, "-o", file); err != nil {
		t.Fatalf("jobs get: %v: %s", err, out)
	}
	if sum, err := fileSHA256(file); err != nil || sum != f.sum {
		t.Fatalf("resumed content: sha256 %s (%v), want %s", sum, err, f.sum)
	}
	var detail api.JobDetail
	if out, err := a.cli(t, "jobs", "show", j.ID, "--json"); err == nil && json.Unmarshal([]byte(out), &detail) == nil {
		for _, s := range detail.Segments {
			t.Logf("audit: segment %d %s %s %s %s", s.Segment, s.Source, s.Peer, s.Reason, mib(s.Bytes))
		}
	}
}
