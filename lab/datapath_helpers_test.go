//go:build linux

package lab_test

// The data-path harness (issue #10 Build 11): origins in the lab's origin
// namespace behind the WAN link — `redleader origin` (MS-PCCRTP), the same
// behind a delaying relay (a round trip to the origin), and a plain HTTP
// server that knows nothing of BranchCache, Range or ETag
// (`python3 -m http.server`) —, agents on the subnets, WAN byte counting at
// the origin's end of the link, the calibration (one curl download alone:
// the bytes one copy costs on the WAN and the time it takes) and runs of
// `redleader fetch` or of curl on many hosts at once.

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/internal/wait"
	"github.com/redleader-p2p/redleader/lab"
	"github.com/redleader-p2p/redleader/peer/api"
)

// The origin namespace's servers.
const (
	dpOriginPort = 8080 // redleader origin
	dpRelayPort  = 8081 // the relay in front of it, with a round trip
	dpPlainPort  = 8000 // python3 -m http.server
)

// originKind names how a case reaches its file.
type originKind int

const (
	kindOrigin originKind = iota // redleader origin (MS-PCCRTP)
	kindRTT                      // redleader origin behind the delaying relay
	kindPlain                    // python3 -m http.server
)

func (k originKind) String() string {
	return [...]string{"redleader origin", "redleader origin + round trip", "plain http (python3 -m http.server)"}[k]
}

// dpFile is a file the origins serve.
type dpFile struct {
	name string
	size int64
	sum  string // hex SHA-256
}

// dpConfig shapes a data-path lab.
type dpConfig struct {
	subnets   []int            // agents per subnet
	wanRate   string           // tc syntax
	files     map[string]int64 // name → size, made before the origins start
	plain     bool             // start python3 -m http.server too
	rtt       time.Duration    // > 0: start the relay with this round trip
	agentArgs []string         // extra agent flags
}

// dpLab is a lab with origins and agents.
type dpLab struct {
	l      *lab.Lab
	cfg    dpConfig
	dir    string // what the origins serve
	files  map[string]dpFile
	agents [][]*agent // per subnet
}

// requireTools skips unless the lab can run and curl (and python3 when
// asked) exist; .ci/run installs both.
func requireTools(t *testing.T, plain bool) {
	t.Helper()
	lab.Require(t)
	tools := []string{"curl"}
	if plain {
		tools = append(tools, "python3")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("data-path lab needs %s (.ci/run installs it): %v", tool, err)
		}
	}
}

// newDPLab builds the lab, makes the files, starts the origins and the
// agents, and waits until every subnet agrees on its Red Leader and every
// agent answers probes.
func newDPLab(t *testing.T, cfg dpConfig) *dpLab {
	t.Helper()
	requireTools(t, cfg.plain)
	start := time.Now()
	d := &dpLab{
		l:     lab.New(t, lab.Options{Subnets: len(cfg.subnets), WANRate: cfg.wanRate}),
		cfg:   cfg,
		dir:   t.TempDir(),
		files: map[string]dpFile{},
	}
	for name, size := range cfg.files {
		d.files[name] = makeFile(t, d.dir, name, size)
	}
	d.startOrigins(t)
	var all []*agent
	for s, n := range cfg.subnets {
		var as []*agent
		for range n {
			as = append(as, startAgentEnv(t, d.l.AddHost(s+1), nil, append([]string{"--log-level", "info"}, cfg.agentArgs...)...))
		}
		d.agents = append(d.agents, as)
		all = append(all, as...)
	}
	for _, a := range all {
		a.nodeID(t)
	}
	for s, as := range d.agents {
		waitAgree(t, as, 60*time.Second, fmt.Sprintf("one Red Leader on subnet %d", s+1), nil)
	}
	waitProbeReady(t, all, 30*time.Second)
	t.Logf("data-path lab: %d subnets %v, WAN %s, %d files, origins and agents ready in %v",
		len(cfg.subnets), cfg.subnets, cfg.wanRate, len(cfg.files), time.Since(start).Round(time.Millisecond))
	return d
}

// makeFile writes size random bytes to dir/name and returns the file.
func makeFile(t *testing.T, dir, name string, size int64) dpFile {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	if _, err := io.CopyN(w, crand.Reader, size); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return dpFile{name: name, size: size, sum: hex.EncodeToString(h.Sum(nil))}
}

// startOrigins starts redleader origin on the files (and waits until it
// has hashed them all: a peerdist request gets content information), the
// relay when asked, and python3 -m http.server when asked.
func (d *dpLab) startOrigins(t *testing.T) {
	t.Helper()
	o := d.l.Origin()
	o.Start(t, "origin", lab.Binary(t), "origin", "--dir", d.dir, "--listen", ":"+strconv.Itoa(dpOriginPort),
		"--data-dir", t.TempDir(), "--rescan", "0", "--secret-passphrase", "lab origin")
	if d.cfg.rtt > 0 {
		o.StartRelay(t, ":"+strconv.Itoa(dpRelayPort), "127.0.0.1:"+strconv.Itoa(dpOriginPort), d.cfg.rtt)
	}
	if d.cfg.plain {
		o.Start(t, "plain-http", "python3", "-m", "http.server", strconv.Itoa(dpPlainPort),
			"--bind", "10.78.0.2", "--directory", d.dir)
	}
	c := o.HTTPClient() // inside the origin namespace: nothing crosses the WAN
	ready := func(url string, peerdist bool) error {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if peerdist {
			req.Header.Set("Accept-Encoding", "peerdist")
			req.Header.Set("X-P2P-PeerDist", "Version=1.1")
		} else {
			req.Method = http.MethodHead
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		switch {
		case resp.StatusCode != http.StatusOK:
			return fmt.Errorf("%s: %s", url, resp.Status)
		case peerdist && resp.Header.Get("Content-Encoding") != "peerdist":
			return fmt.Errorf("%s: not hashed yet", url)
		}
		return nil
	}
	for name := range d.files {
		wait.ForErr(t, 2*time.Minute, "redleader origin has hashed "+name, func() error {
			return ready(d.url(kindOrigin, name), true)
		})
		if d.cfg.plain {
			wait.ForErr(t, 30*time.Second, "python3 -m http.server serves "+name, func() error {
				return ready(d.url(kindPlain, name), false)
			})
		}
	}
}

// url is the URL of a file as a case reaches it.
func (d *dpLab) url(k originKind, name string) string {
	port := map[originKind]int{kindOrigin: dpOriginPort, kindRTT: dpRelayPort, kindPlain: dpPlainPort}[k]
	return "http://10.78.0.2:" + strconv.Itoa(port) + "/" + name
}

// all returns every agent, subnet by subnet.
func (d *dpLab) all() []*agent { return slices.Concat(d.agents...) }

// wan reads the WAN counters.
func (d *dpLab) wan(t *testing.T) lab.WANCounters {
	t.Helper()
	c, err := d.l.WAN()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// calibration is what one copy of a file costs on the WAN, measured with
// one curl download alone.
type calibration struct {
	bytes int64         // WAN bytes towards the subnets, headers included
	took  time.Duration // the curl process, start to exit
}

// calibrate downloads url once with curl on h, alone on the WAN.
func (d *dpLab) calibrate(t *testing.T, h *lab.Host, f dpFile, url string) calibration {
	t.Helper()
	before := d.wan(t)
	start := time.Now()
	out, err := h.Command(shortCtx(t, 10*time.Minute), "curl", "-sS", "--fail", "-o", "/dev/null",
		"-w", "%{size_download}", url).CombinedOutput()
	took := time.Since(start)
	if err != nil || strings.TrimSpace(string(out)) != strconv.FormatInt(f.size, 10) {
		t.Fatalf("calibration: curl %s: %v: %s (want %d bytes)", url, err, out, f.size)
	}
	c := calibration{bytes: d.wan(t).Sub(before).Down, took: took}
	t.Logf("calibration: one copy of %s (%s) from %s: %d WAN bytes (%.4f per content byte) in %v",
		f.name, mib(f.size), url, c.bytes, float64(c.bytes)/float64(f.size), took.Round(time.Millisecond))
	return c
}

// dpResult is one run of many downloads at once.
type dpResult struct {
	what   string        // "redleader" or "curl"
	copies float64       // WAN bytes / one copy
	last   time.Duration // launch to the last completion
	bound  time.Duration // copies needed × one copy's time
	ok     []string      // hosts whose download completed with the right SHA-256
	failed []string      // "host: why", for the others
	took   []string      // "host time" of every download, in completion order

	reasons map[string]int64 // redleader: origin bytes of all jobs by reason
	rss     int64            // redleader: the largest peak RSS of an agent so far
}

// ratio is the time to the last completion over the bound.
func (r dpResult) ratio() float64 { return float64(r.last) / float64(r.bound) }

func (r dpResult) String() string {
	return fmt.Sprintf("%s: %.3f WAN copies; last completion after %v = %.2f × the bound (%v); %d right, %d failed; completions: %s",
		r.what, r.copies, r.last.Round(time.Millisecond), r.ratio(), r.bound.Round(time.Millisecond), len(r.ok), len(r.failed),
		strings.Join(r.took, " "))
}

// download is one CLI process of a run.
type download struct {
	h      *lab.Host
	a      *agent // nil for curl
	file   string // destination
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr bytes.Buffer
	err    error
	took   time.Duration
	done   chan struct{}
}

// batch is downloads started together.
type batch struct {
	start time.Time
	dls   []*download
	wg    sync.WaitGroup
}

// startFetches starts `redleader fetch url -o FILE` on every agent at once.
func startFetches(t *testing.T, agents []*agent, url string, extra ...string) *batch {
	t.Helper()
	var cmds []*download
	for _, a := range agents {
		file := filepath.Join(t.TempDir(), "fetched.bin")
		args := append([]string{lab.Binary(t), "fetch", url, "-o", file, "--data-dir", a.dir}, extra...)
		cmds = append(cmds, &download{h: a.h, a: a, file: file, cmd: a.h.Command(context.Background(), args...)})
	}
	return startBatch(t, cmds)
}

// startCurls starts `curl -o FILE url` on every host at once: the naive
// baseline, every machine downloading for itself.
func startCurls(t *testing.T, hosts []*lab.Host, url string) *batch {
	t.Helper()
	var cmds []*download
	for _, h := range hosts {
		file := filepath.Join(t.TempDir(), "curled.bin")
		cmds = append(cmds, &download{h: h, file: file,
			cmd: h.Command(context.Background(), "curl", "-sS", "--fail", "-o", file, url)})
	}
	return startBatch(t, cmds)
}

func startBatch(t *testing.T, dls []*download) *batch {
	t.Helper()
	b := &batch{start: time.Now(), dls: dls}
	for _, dl := range dls {
		dl.cmd.Stdout, dl.cmd.Stderr = &dl.stdout, &dl.stderr
		dl.done = make(chan struct{})
		if err := dl.cmd.Start(); err != nil {
			t.Fatalf("%s: start %v: %v", dl.h.Name, dl.cmd.Args, err)
		}
		b.wg.Go(func() {
			dl.err = dl.cmd.Wait()
			dl.took = time.Since(b.start)
			close(dl.done)
		})
	}
	t.Cleanup(func() { b.kill(); b.wg.Wait() })
	return b
}

// kill ends the processes still running.
func (b *batch) kill() {
	for _, dl := range b.dls {
		select {
		case <-dl.done:
		default:
			_ = dl.cmd.Process.Kill()
		}
	}
}

// wait waits up to d for every process; those still running are killed
// (and reported as failed by result).
func (b *batch) wait(t *testing.T, d time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Errorf("downloads still running after %v: killed", d)
		b.kill()
		<-done
	}
}

// result checks every download but those of skip (right exit, the file's
// SHA-256) and puts the run in numbers.
func (b *batch) result(t *testing.T, what string, f dpFile, wanBytes int64, c calibration, needed int, skip ...*download) dpResult {
	t.Helper()
	r := dpResult{what: what, copies: float64(wanBytes) / float64(c.bytes), bound: time.Duration(needed) * c.took}
	byTime := slices.SortedFunc(slices.Values(b.dls), func(a, b *download) int { return cmp.Compare(a.took, b.took) })
	for _, dl := range byTime {
		if !slices.Contains(skip, dl) {
			r.took = append(r.took, fmt.Sprintf("%s %.1fs", dl.h.Name, dl.took.Seconds()))
		}
	}
	for _, dl := range b.dls {
		if slices.Contains(skip, dl) {
			continue
		}
		r.last = max(r.last, dl.took)
		sum, err := fileSHA256(dl.file)
		switch {
		case dl.err != nil:
			r.failed = append(r.failed, fmt.Sprintf("%s: %v: %s", dl.h.Name, dl.err, strings.TrimSpace(dl.stderr.String())))
		case err != nil || sum != f.sum:
			r.failed = append(r.failed, fmt.Sprintf("%s: file %s: sha256 %s, want %s (%v)", dl.h.Name, dl.file, sum, f.sum, err))
		default:
			r.ok = append(r.ok, dl.h.Name)
		}
		_ = os.Remove(dl.file)
	}
	return r
}

// fileSHA256 is the hex SHA-256 of a file.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// jobOf returns a's newest job for url.
func (a *agent) jobOf(url string) (api.JobInfo, error) {
	ctx, cancel := apiCtx()
	defer cancel()
	list, err := a.client().Jobs(ctx)
	if err != nil {
		return api.JobInfo{}, err
	}
	for i := len(list) - 1; i >= 0; i-- {
		if list[i].URL == url {
			return list[i], nil
		}
	}
	return api.JobInfo{}, fmt.Errorf("%s: no job for %s", a.h.Name, url)
}

// logJobs logs where each agent's job for url got its bytes, and returns
// the origin bytes of every job by reason and the largest peak RSS of the
// agents.
func logJobs(t *testing.T, agents []*agent, url string) (reasons map[string]int64, rss int64) {
	t.Helper()
	reasons = map[string]int64{}
	var b strings.Builder
	for _, a := range agents {
		rss = max(rss, peakRSS(a))
		j, err := a.jobOf(url)
		if err != nil {
			fmt.Fprintf(&b, "\n  %s: %v", a.h.Name, err)
			continue
		}
		for k, v := range j.Bytes.OriginByReason {
			reasons[k] += v
		}
		fmt.Fprintf(&b, "\n  %s %s: %s, cache %s, peers %s, origin %s %v, resumes %d, peak RSS %s",
			a.h.Name, j.ID, j.State, mib(j.Bytes.Cache), mib(j.Bytes.Peers), mib(j.Bytes.Origin), j.Bytes.OriginByReason,
			j.Resumes, mib(peakRSS(a)))
	}
	t.Logf("jobs for %s:%s", url, b.String())
	return reasons, rss
}

// peakRSS is the agent's peak resident set size (VmHWM), 0 if unknown.
func peakRSS(a *agent) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", a.p.Pid()))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// removeJobs deletes every job of the agents for url, with its content,
// so that the next case's disk use starts over (their caches keep the
// blocks: each case uses a file of its own).
func removeJobs(t *testing.T, agents []*agent, url string) {
	t.Helper()
	for _, a := range agents {
		j, err := a.jobOf(url)
		if err != nil {
			continue
		}
		ctx, cancel := apiCtx()
		if _, err := a.client(api.WithToken(a.token(t))).DeleteJob(ctx, j.ID); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Logf("%s: remove job %s: %v", a.h.Name, j.ID, err)
		}
		cancel()
	}
}

// mib formats a byte count in MiB.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
