//go:build linux

package lab_test

// The rest of issue #10's "Done when", end to end: a thin WAN link; a peer
// that answers probes and serves corrupt blocks; a plain origin's digest
// against a catalog entry that describes other bytes; the Red Leader's WAN
// rate (a --priority high job, `policy set`); demands for loopback and
// link-local URLs refused; credentials kept out of the catalog and of
// GET /v1/jobs. The harness is datapath_helpers_test.go's.

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/internal/wait"
	"github.com/redleader-p2p/redleader/lab"
	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/peer/fetch"
)

// fallbackReasons are the origin-byte reasons of a non-leader that gave up
// on its Red Leader.
var fallbackReasons = []string{"fallback_after_delay", "no_red_leader", "bad_block_from_peer"}

// TestDataPathThin: one subnet of 5 agents behind a 4 Mbit/s WAN, all
// fetch 16 MiB from `redleader origin` at once (one copy takes ~34 s, more
// than wan_fallback_delay): ≤ 1.10 WAN copies, every file right, and no
// job's origin bytes are a fallback — a Red Leader that makes progress on
// a thin link is waited for.
func TestDataPathThin(t *testing.T) {
	t.Parallel()
	c := dpCase{name: "thin link", kind: kindOrigin, file: "thin.bin", maxCopies: 1.10}
	d := newDPLab(t, dpConfig{subnets: []int{5}, wanRate: "4mbit", files: map[string]int64{c.file: 16 << 20}})
	f := d.files[c.file]
	cal := d.calibrate(t, d.agents[0][0].h, f, d.url(c.kind, c.file))
	r := d.runRedleader(t, c, cal, 1)
	t.Logf("last completion after %v = %.2f × one copy alone (%v)", r.last.Round(time.Millisecond), r.ratio(),
		r.bound.Round(time.Millisecond))
	c.check(t, r)
	for _, why := range fallbackReasons {
		if n := r.reasons[why]; n > 0 {
			t.Errorf("%s of origin bytes with reason %s: a non-leader gave up on its Red Leader", mib(n), why)
		}
	}
}

// TestDataPathCorruptPeer: a real agent that answers probes for a segment
// and serves corrupt blocks of it — it pre-staged the content (`cache
// add`), then its cache's data file rotted on disk (overwritten with
// random bytes: the cache does not hash again on read, and the MS-PCCRR
// server serves what it reads). It is not leader material, so it never
// fetches for the others. Three agents fetch the content at once: every
// file is right, every fetcher rejected and counted blocks from it
// (redleader_bad_blocks_total, equal to the blocks its WARN lines name),
// and no audit record credits it with a byte.
func TestDataPathCorruptPeer(t *testing.T) {
	t.Parallel()
	const name = "corrupt.bin"
	d := newDPLab(t, dpConfig{subnets: []int{3}, wanRate: dpWANRate, files: map[string]int64{name: 8 << 20}})
	f, url := d.files[name], d.url(kindOrigin, name)
	fetchers := d.all()

	bad := startAgent(t, d.l.AddHost(1), "--not-leader", "--log-level", "info")
	bad.nodeID(t)
	waitProbeReady(t, []*agent{bad}, 30*time.Second)
	// The same segment IDs as the origin's content information: the
	// origin's passphrase.
	if out, err := bad.cli(t, "cache", "add", filepath.Join(d.dir, name), "--secret-passphrase", "lab origin"); err != nil {
		t.Fatalf("cache add: %v: %s", err, out)
	}
	segs := corruptCache(t, bad)
	badAddr := bad.peerAddr()
	for _, seg := range segs {
		wait.ForErr(t, 10*time.Second, "a fetcher's probe finds the corrupt peer", func() error {
			res, err := fetchers[0].probe(seg, 0)
			if err != nil {
				return err
			}
			for _, m := range res.Matches {
				if m.Peer == badAddr && m.Blocks > 0 {
					return nil
				}
			}
			return fmt.Errorf("probe of %.16s: %+v, want a match of %s", seg, res.Matches, badAddr)
		})
	}
	t.Logf("%s (%s, not leader material) holds %d segments of %s, every block corrupt on disk, and answers probes for them",
		bad.h.Name, badAddr, len(segs), name)

	cal := d.calibrate(t, fetchers[0].h, f, url)
	before := d.wan(t)
	b := startFetches(t, fetchers, url)
	b.wait(t, 2*time.Minute)
	r := b.result(t, "redleader", f, d.wan(t).Sub(before).Down, cal, 1)
	t.Log(r)
	for _, fail := range r.failed {
		t.Errorf("download failed: %s", fail)
	}
	logJobs(t, fetchers, url)

	var total float64
	for _, a := range fetchers {
		counted := metricSum(t, a, "redleader_bad_blocks_total")
		logged := rejectedIn(a.p.Log(), badAddr)
		total += counted
		t.Logf("%s: redleader_bad_blocks_total %v; its WARN lines name %d blocks rejected from %s", a.h.Name, counted, logged, badAddr)
		if counted < 1 {
			t.Errorf("%s counted %v bad blocks, want ≥ 1: it never met the corrupt peer", a.h.Name, counted)
		}
		if counted != float64(logged) {
			t.Errorf("%s counted %v bad blocks but its WARN lines name %d rejected from %s: some came from elsewhere or were not logged",
				a.h.Name, counted, logged, badAddr)
		}
		j, err := a.jobOf(url)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := apiCtx()
		detail, err := a.client().Job(ctx, j.ID, false)
		cancel()
		if err != nil {
			t.Fatalf("%s: job %s: %v", a.h.Name, j.ID, err)
		}
		for _, s := range detail.Segments {
			if s.Source == "peer" && s.Peer == badAddr {
				t.Errorf("%s: the audit credits the corrupt peer with %s of segment %d", a.h.Name, mib(s.Bytes), s.Segment)
			}
		}
	}
	t.Logf("%v blocks rejected from the corrupt peer in all", total)
}

// corruptCache overwrites the data file of every segment a's cache holds
// with random bytes (the agent keeps its held bitmap: it still answers
// probes for them) and returns the segment IDs.
func corruptCache(t *testing.T, a *agent) []string {
	t.Helper()
	dir := filepath.Join(a.dir, "cache")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var segs []string
	for _, e := range ents {
		if !e.IsDir() || len(e.Name()) != 64 {
			continue
		}
		data := filepath.Join(dir, e.Name(), "data")
		fi, err := os.Stat(data)
		if err != nil {
			t.Fatal(err)
		}
		junk := make([]byte, fi.Size())
		if _, err := crand.Read(junk); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(data, junk, 0o600); err != nil {
			t.Fatal(err)
		}
		segs = append(segs, e.Name())
	}
	if len(segs) == 0 {
		t.Fatalf("no segment in %s", dir)
	}
	return segs
}

// rejectedRE matches the pipeline's WARN line for blocks rejected from a
// peer.
var rejectedRE = regexp.MustCompile(`rejected bad blocks from a LAN peer.* peer=(\S+) blocks=(\d+)`)

// rejectedIn sums the blocks an agent's log says it rejected from peer.
func rejectedIn(log, peer string) int {
	n := 0
	for _, m := range rejectedRE.FindAllStringSubmatch(log, -1) {
		if m[1] == peer {
			k, _ := strconv.Atoi(m[2])
			n += k
		}
	}
	return n
}

// metricSum is the sum of a's series of one metric (every label set).
func metricSum(t *testing.T, a *agent, name string) float64 {
	t.Helper()
	ctx, cancel := apiCtx()
	defer cancel()
	b, err := a.client().Metrics(ctx)
	if err != nil {
		t.Fatalf("%s: /metrics: %v", a.h.Name, err)
	}
	var sum float64
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// caseOrigin is a plain HTTP origin the test process runs in a lab
// namespace: the files of dir with Content-Length, Last-Modified (the
// file's mtime) and Range (http.ServeContent), no ETag, no BranchCache;
// with digest, a Repr-Digest (RFC 9530) of the whole file. Paths in auth
// need that Authorization value (401 otherwise). It records every request.
type caseOrigin struct {
	dir    string
	digest bool
	auth   map[string]string

	mu   sync.Mutex
	reqs []caseRequest
}

// caseRequest is one request a caseOrigin received.
type caseRequest struct {
	from   string // client IP
	method string
	path   string
	auth   string // its Authorization header
}

func (o *caseOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	o.mu.Lock()
	o.reqs = append(o.reqs, caseRequest{from: host, method: r.Method, path: r.URL.Path, auth: r.Header.Get("Authorization")})
	o.mu.Unlock()
	if want, ok := o.auth[r.URL.Path]; ok && r.Header.Get("Authorization") != want {
		http.Error(w, "credentials needed", http.StatusUnauthorized)
		return
	}
	name := path.Base(r.URL.Path)
	file := filepath.Join(o.dir, name)
	data, err := os.ReadFile(file)
	fi, serr := os.Stat(file)
	if err != nil || serr != nil {
		http.NotFound(w, r)
		return
	}
	if o.digest {
		sum := sha256.Sum256(data)
		w.Header().Set("Repr-Digest", "sha-256=:"+base64.StdEncoding.EncodeToString(sum[:])+":")
	}
	http.ServeContent(w, r, name, fi.ModTime(), bytes.NewReader(data))
}

// requests returns the requests received so far.
func (o *caseOrigin) requests() []caseRequest {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.reqs)
}

// serveOn runs o on addr inside h until the test ends.
func (o *caseOrigin) serveOn(t *testing.T, h *lab.Host, addr string) {
	t.Helper()
	ln, err := h.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: o, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
}

// caseKey is the content key ID an agent derives for a caseOrigin file
// (no ETag: the validator is its Last-Modified).
func caseKey(url string, mtime time.Time, size int64) string {
	return fetch.Key{Resource: url, Validator: "lm:" + strconv.FormatInt(mtime.Unix(), 10), Length: size}.ID()
}

// catalogEntry asks at's Raft FSM, through the cluster RPC sent from
// from's host, for the catalog entry of a content key ID: whether there is
// one, and the content SHA-256 it carries.
func catalogEntry(t *testing.T, from, at *agent, key string) (found bool, sha string) {
	t.Helper()
	code, body := clusterRPC(from.h, at.peerAddr(), http.MethodGet, "/rpc/catalog?key="+key, nil)
	var out struct {
		Found bool `json:"found"`
		Entry struct {
			SHA256 string `json:"sha256"`
		} `json:"entry"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &out) != nil {
		t.Fatalf("GET /rpc/catalog on %s from %s: %d %s", at.h.Name, from.h.Name, code, body)
	}
	return out.Found, out.Entry.SHA256
}

// seatOf returns the Red Leader of agents (who all agree) and the others.
func seatOf(t *testing.T, agents []*agent) (*agent, []*agent) {
	t.Helper()
	seat, err := agreement(agents, statuses(agents))
	if err != nil {
		t.Fatal(err)
	}
	rl := byNode(agents, seat.Node)
	if rl == nil {
		t.Fatalf("Red Leader %s is none of the agents", seat.Name)
	}
	return rl, without(agents, rl)
}

// agentConfig writes a YAML configuration file for agents (`--config`).
func agentConfig(t *testing.T, yaml string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "redleader.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// fetchRight runs `redleader fetch url` on a and fails t unless it exits
// 0 with content of SHA-256 sum.
func fetchRight(t *testing.T, a *agent, url, sum string, extra ...string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "fetched.bin")
	stdout, stderr, code := runCLISplit(t, a.h, append([]string{"fetch", url, "-o", out, "--data-dir", a.dir}, extra...)...)
	got, err := fileSHA256(out)
	if code != 0 || err != nil || got != sum {
		t.Fatalf("%s: fetch %s: exit %d, sha256 %s (%v), want exit 0 and %s: %s %s", a.h.Name, url, code, got, err, sum, stdout, stderr)
	}
}

// TestDataPathDigestCatalog: a plain origin that sends Repr-Digest and
// Last-Modified. The Red Leader fetches file A and commits A's segment
// descriptions to the catalog under the content key (URL, Last-Modified,
// length). Then the file is replaced by B, same length, same mtime: the
// key is the same and the catalog entry now describes the wrong bytes.
// A non-leader's job uses the entry (the Red Leader's cache still holds
// A's blocks, which verify against it), is caught by the origin's digest,
// starts over without the entry and completes with B — exit 0, B's
// SHA-256, its log saying why; so does a third agent's job after it. (The
// entry stays in the catalog: logged.)
func TestDataPathDigestCatalog(t *testing.T) {
	t.Parallel()
	const (
		name = "digest.bin"
		// Small: the job's retry without the catalog runs alone, at the
		// peer rate (256 kbit/s) until its agent holds the seat.
		size = 256<<10 + 4321
		addr = "10.78.0.2:8003"
	)
	d := newDPLab(t, dpConfig{subnets: []int{3}, wanRate: dpWANRate})
	o := &caseOrigin{dir: t.TempDir(), digest: true}
	o.serveOn(t, d.l.Origin(), addr)
	url := "http://" + addr + "/" + name
	mtime := time.Now().Add(-time.Hour).Truncate(time.Second)
	fileA := makeFile(t, o.dir, name, size)
	if err := os.Chtimes(filepath.Join(o.dir, name), mtime, mtime); err != nil {
		t.Fatal(err)
	}
	key := caseKey(url, mtime, size)
	rl, others := seatOf(t, d.all())
	n, m := others[0], others[1]

	fetchRight(t, rl, url, fileA.sum)
	wait.ForErr(t, 10*time.Second, "the catalog entry of A", func() error {
		if found, sha := catalogEntry(t, n, rl, key); !found || sha != fileA.sum {
			return fmt.Errorf("entry found %v, sha256 %q; want A's %s", found, sha, fileA.sum)
		}
		return nil
	})
	t.Logf("%s (Red Leader) fetched A; the catalog holds A's descriptions and SHA-256 under key %.16s", rl.h.Name, key)

	// B replaces A: same length, same mtime, so the same key.
	tmp := t.TempDir()
	fileB := makeFile(t, tmp, name, size)
	if err := os.Rename(filepath.Join(tmp, name), filepath.Join(o.dir, name)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(o.dir, name), mtime, mtime); err != nil {
		t.Fatal(err)
	}
	if got := caseKey(url, mtime, fileB.size); got != key {
		t.Fatalf("B's key %s, A's %s", got, key)
	}
	for _, a := range []*agent{n, m} {
		before, start := d.wan(t), time.Now()
		fetchRight(t, a, url, fileB.sum)
		w, took := d.wan(t).Sub(before), time.Since(start)
		j, err := a.jobOf(url)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s fetched B right in %v (%.2f × its size crossed the WAN meanwhile); job %s %s, content %.16s, cache %s, peers %s, origin %s %v",
			a.h.Name, took.Round(time.Millisecond), float64(w.Down)/float64(size), j.ID, j.State, j.ContentSHA256,
			mib(j.Bytes.Cache), mib(j.Bytes.Peers), mib(j.Bytes.Origin), j.Bytes.OriginByReason)
		if j.State != "done" || j.ContentSHA256 != fileB.sum {
			t.Errorf("%s: job %s, content %s; want done with B's %s", a.h.Name, j.State, j.ContentSHA256, fileB.sum)
		}
		if !strings.Contains(a.p.Log(), "catalog entry does not match the content") {
			t.Errorf("%s's log does not say the catalog entry was caught (\"catalog entry does not match the content\")", a.h.Name)
		}
	}
	found, sha := catalogEntry(t, n, rl, key)
	t.Logf("afterwards the catalog entry of the key: found %v, sha256 %.16s (A's %.16s, B's %.16s)", found, sha, fileA.sum, fileB.sum)
}

// wanRecorder samples the WAN counters every period until stopped.
type wanRecorder struct {
	stop, done chan struct{}
	mu         sync.Mutex
	samples    []wanSample
}

type wanSample struct {
	at   time.Time
	down int64
}

func recordWAN(t *testing.T, l *lab.Lab, period time.Duration) *wanRecorder {
	w := &wanRecorder{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			if c, err := l.WAN(); err == nil {
				w.mu.Lock()
				w.samples = append(w.samples, wanSample{at: time.Now(), down: c.Down})
				w.mu.Unlock()
			}
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(w.finish)
	return w
}

func (w *wanRecorder) finish() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// rate is the WAN's downstream rate (bytes/s) between the first sample at
// or after from and the last one at or before to.
func (w *wanRecorder) rate(from, to time.Time) (float64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var first, last *wanSample
	for i := range w.samples {
		s := &w.samples[i]
		if first == nil && !s.at.Before(from) {
			first = s
		}
		if !s.at.After(to) {
			last = s
		}
	}
	if first == nil || last == nil || !last.at.After(first.at) {
		return 0, fmt.Errorf("no WAN samples in [%s, %s]", from.Format("15:04:05.000"), to.Format("15:04:05.000"))
	}
	return float64(last.down-first.down) / last.at.Sub(first.at).Seconds(), nil
}

// sleepUntil sleeps until at.
func sleepUntil(at time.Time) { time.Sleep(time.Until(at)) }

// TestDataPathLeaderRate: WAN 100 Mbit/s, default rates (leader_rate
// unlimited, peer_rate 256 kbit/s). A `--priority high` job on a
// non-leader makes it the Red Leader (/v1/status role=leader, within 10 s)
// and its download then runs at the leader rate: the WAN's throughput is
// that of the link (≥ 85 % of one curl download alone), not the peer
// rate. Then `policy set leader_rate=20Mbit` during the download brings
// the WAN throughput to 20 Mbit/s ± 15 % within 2 s (averaged over 2 to
// 5 s after the command returned). Content rates are WAN bytes converted
// with the calibration's WAN bytes per content byte. When the job does not
// make its agent the Red Leader, that is an error, and the rates are
// measured on the Red Leader that downloads for its demand instead.
//
// Not parallel: it measures rates.
func TestDataPathLeaderRate(t *testing.T) {
	const (
		name    = "rate.bin"
		calName = "rate-cal.bin"
		target  = 20e6 // bit/s
	)
	d := newDPLab(t, dpConfig{subnets: []int{3}, wanRate: dpWANRate,
		files:     map[string]int64{name: 320 << 20, calName: 32 << 20},
		agentArgs: []string{"--config", agentConfig(t, "allow_open_admin: true\n")}})
	f, url := d.files[name], d.url(kindOrigin, name)
	cal := d.calibrate(t, d.agents[0][0].h, d.files[calName], d.url(kindOrigin, calName))
	perByte := float64(cal.bytes) / float64(d.files[calName].size)
	linkRate := float64(d.files[calName].size) * 8 / cal.took.Seconds() // content bit/s, curl alone
	bits := func(wanBytesPerSec float64) float64 { return wanBytesPerSec / perByte * 8 }

	old, others := seatOf(t, d.all())
	x := others[0]
	if st := x.status(); st == nil || st.Role == "leader" {
		t.Fatalf("%s: status %+v, want a non-leader", x.h.Name, st)
	}
	rec := recordWAN(t, d.l, 250*time.Millisecond)
	start := time.Now()
	b := startFetches(t, []*agent{x}, url, "--priority", "high")
	rl := x
	for st := x.status(); st == nil || st.Role != "leader"; st = x.status() {
		if time.Since(start) < 10*time.Second {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		var inputs []string
		for _, m := range x.members(t) {
			inputs = append(inputs, fmt.Sprintf("%s: priority %s, progress %s, rank %d", m.Name, m.Priority, mib(int64(m.Progress)), m.Rank))
		}
		j, _ := x.jobOf(url)
		t.Errorf("%s's --priority high job (%s, held %s) did not make it the Red Leader within 10 s: the seat is still %s's; "+
			"ranking inputs in /v1/members: %s", x.h.Name, j.State, mib(j.Held), old.h.Name, strings.Join(inputs, "; "))
		rl = old
		break
	}
	tRL := time.Now()
	if rl == x {
		t.Logf("%s became the Red Leader %v after its --priority high job started (the seat was %s's)", x.h.Name,
			tRL.Sub(start).Round(time.Millisecond), old.h.Name)
	}

	still := func(when string) {
		if st := rl.status(); st == nil || st.Role != "leader" {
			t.Fatalf("%s no longer the Red Leader %s (status %+v)", rl.h.Name, when, st)
		}
		if j, err := x.jobOf(url); err != nil || j.Over() {
			t.Fatalf("%s's job over %s (%+v, %v): the file is too small for the measurement", x.h.Name, when, j, err)
		}
	}
	sleepUntil(tRL.Add(3500 * time.Millisecond))
	still("3.5 s after the seat was settled")
	r1, err := rec.rate(tRL.Add(1500*time.Millisecond), tRL.Add(3500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s as Red Leader at the default leader rate (unlimited): WAN %.1f Mbit/s of content, one curl alone %.1f Mbit/s (%.0f %%)",
		rl.h.Name, bits(r1)/1e6, linkRate/1e6, 100*bits(r1)/linkRate)
	if bits(r1) < 0.85*linkRate {
		t.Errorf("with %s as Red Leader the WAN carried %.1f Mbit/s of content, want ≥ 85 %% of the link's %.1f Mbit/s (the peer rate is 256 kbit/s)",
			rl.h.Name, bits(r1)/1e6, linkRate/1e6)
	}

	sent := time.Now()
	if out, err := x.cli(t, "policy", "set", "leader_rate=20Mbit"); err != nil {
		t.Fatalf("policy set: %v\n%s", err, out)
	}
	tSet := time.Now()
	sleepUntil(tSet.Add(5 * time.Second))
	still("5 s after policy set")
	r2, err := rec.rate(tSet.Add(2*time.Second), tSet.Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for s := time.Duration(0); s < 5*time.Second; s += time.Second {
		if r, err := rec.rate(tSet.Add(s), tSet.Add(s+time.Second)); err == nil {
			t.Logf("  %v-%v s after policy set returned: %.1f Mbit/s", s.Seconds(), (s + time.Second).Seconds(), bits(r)/1e6)
		}
	}
	t.Logf("policy set leader_rate=20Mbit took %v; 2-5 s after it returned the WAN carried %.2f Mbit/s of content (%+.1f %%)",
		tSet.Sub(sent).Round(time.Millisecond), bits(r2)/1e6, 100*(bits(r2)-target)/target)
	if dev := (bits(r2) - target) / target; dev < -0.15 || dev > 0.15 {
		t.Errorf("2-5 s after policy set leader_rate=20Mbit the WAN carried %.2f Mbit/s of content, want 20 ± 15 %%", bits(r2)/1e6)
	}

	if j, err := x.jobOf(url); err == nil {
		t.Logf("%s's job: held %s of %s", x.h.Name, mib(j.Held), mib(f.size))
	}
	removeJobs(t, []*agent{x}, url)
	b.kill()
}

// TestDataPathDemandChecks: demands naming a loopback or link-local URL
// are refused by the Red Leader, and a job with an Authorization header
// stays private.
func TestDataPathDemandChecks(t *testing.T) {
	t.Parallel()
	d := newDPLab(t, dpConfig{subnets: []int{3}, wanRate: dpWANRate,
		agentArgs: []string{"--config", agentConfig(t, "shaping:\n  wan_fallback_delay: 5s\n")}})
	rl, others := seatOf(t, d.all())
	t.Run("loopback and link-local", func(t *testing.T) { testDemandRefused(t, d, rl, others[0]) })
	rl, others = seatOf(t, d.all())
	t.Run("authorization", func(t *testing.T) { testCredentialsPrivate(t, d, rl, others[0]) })
}

// testDemandRefused: a non-leader fetches a URL on its own loopback (a
// server there serves it): its demand reaches the Red Leader, which
// refuses it (its log says so) and no other agent connects to its own
// loopback (traps listen there); the job completes right (from its own
// origin: after wan_fallback_delay, 5 s here, or at once if its job made
// it the Red Leader). Then demands sent through the cluster RPC as a
// member, to the Red Leader of the moment, for loopback and link-local
// URLs, IPv4 and IPv6, are each answered 403 naming why, while a demand
// for the lab's origin is answered.
func testDemandRefused(t *testing.T, d *dpLab, rl, n *agent) {
	const loop = "127.0.0.1:8090"
	mtime := time.Now().Add(-time.Hour).Truncate(time.Second)
	local := &caseOrigin{dir: t.TempDir()}
	f := makeFile(t, local.dir, "loop.bin", 64<<10+17)
	if err := os.Chtimes(filepath.Join(local.dir, f.name), mtime, mtime); err != nil {
		t.Fatal(err)
	}
	local.serveOn(t, n.h, loop)
	trap := &caseOrigin{dir: local.dir}
	for _, a := range without(d.all(), n) {
		trap.serveOn(t, a.h, loop)
	}
	url := "http://" + loop + "/" + f.name

	fetchRight(t, n, url, f.sum)
	j, err := n.jobOf(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s fetched %s from its own loopback: origin %v", n.h.Name, url, j.Bytes.OriginByReason)
	if reqs := trap.requests(); len(reqs) > 0 {
		t.Errorf("an agent fetched its own loopback for %s's demand: %+v", n.h.Name, reqs)
	}
	refused := false
	for line := range strings.SplitSeq(rl.p.Log(), "\n") {
		if strings.Contains(line, "request refused") && strings.Contains(line, "/rpc/demand") &&
			strings.Contains(line, "127.0.0.1 is a loopback address") && strings.Contains(line, n.h.IP().String()+":") {
			refused = true
			t.Logf("the Red Leader's log: %s", line)
		}
	}
	if !refused {
		t.Errorf("the Red Leader %s's log has no refusal of %s's demand for %s", rl.h.Name, n.h.Name, url)
	}

	// The seat follows jobs (n's may have taken it): the Red Leader now,
	// and a member that is not.
	rl, others := seatOf(t, d.all())
	from := others[0]
	o := &caseOrigin{dir: t.TempDir()}
	ok := makeFile(t, o.dir, "ok.bin", 64<<10)
	o.serveOn(t, d.l.Origin(), "10.78.0.2:8005")
	okURL := "http://10.78.0.2:8005/ok.bin"
	fi, err := os.Stat(filepath.Join(o.dir, ok.name))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ url, why string }{
		{"http://10.78.0.2:8005/ok.bin", ""},
		{"http://127.0.0.1:8090/loop.bin", "127.0.0.1 is a loopback address"},
		{"http://127.5.6.7/x.bin", "127.5.6.7 is a loopback address"},
		{"http://[::1]:8090/loop.bin", "::1 is a loopback address"},
		{"http://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address"},
		{"http://[fe80::1]/x.bin", "fe80::1 is a link-local address"},
		{"http://[::ffff:127.0.0.1]/x.bin", "127.0.0.1 is a loopback address"},
	} {
		key := caseKey(okURL, fi.ModTime(), ok.size)
		code, body := clusterRPC(from.h, rl.peerAddr(), http.MethodPost, "/rpc/demand",
			map[string]any{"from": from.node, "url": tt.url, "key": key, "priority": 2})
		t.Logf("demand from %s to %s for %s: %d %.200s", from.h.Name, rl.h.Name, tt.url, code, body)
		switch {
		case tt.why == "" && code != http.StatusOK:
			t.Errorf("demand for %s: %d %s, want 200 (the check)", tt.url, code, body)
		case tt.why != "" && (code != http.StatusForbidden || !strings.Contains(body, "may not fetch") || !strings.Contains(body, tt.why)):
			t.Errorf("demand for %s: %d %s, want 403 saying %q", tt.url, code, body, tt.why)
		}
	}
	if reqs := trap.requests(); len(reqs) > 0 {
		t.Errorf("an agent connected to its own loopback: %+v", reqs)
	}
}

// testCredentialsPrivate: a job with an Authorization header, on a
// non-leader and on the Red Leader, of a plain origin's file that needs
// it: both complete right with origin bytes private_content only; GET
// /v1/jobs and GET /v1/jobs/{id} (raw bodies) name the header but never
// carry its value, nor does the agent's log; the origin never saw a request for the file without
// the header (nobody fetched it for a demand); and the catalog has no
// entry for its key — while the same origin's public file, fetched by the
// Red Leader without credentials, is in it.
func testCredentialsPrivate(t *testing.T, d *dpLab, rl, n *agent) {
	const (
		secret = "secret123-lab-credential"
		addr   = "10.78.0.2:8004"
	)
	o := &caseOrigin{dir: t.TempDir(), auth: map[string]string{"/private.bin": "Bearer " + secret}}
	priv := makeFile(t, o.dir, "private.bin", 4<<20+99)
	pub := makeFile(t, o.dir, "public.bin", 4<<20+98)
	o.serveOn(t, d.l.Origin(), addr)
	privURL, pubURL := "http://"+addr+"/private.bin", "http://"+addr+"/public.bin"
	keyOf := func(f dpFile, url string) string {
		fi, err := os.Stat(filepath.Join(o.dir, f.name))
		if err != nil {
			t.Fatal(err)
		}
		return caseKey(url, fi.ModTime(), f.size)
	}

	for _, a := range []*agent{n, rl} {
		fetchRight(t, a, privURL, priv.sum, "-H", "Authorization: Bearer "+secret)
		j, err := a.jobOf(privURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: job %s %s, headers %v, origin %v", a.h.Name, j.ID, j.State, j.Headers, j.Bytes.OriginByReason)
		if len(j.Bytes.OriginByReason) != 1 || j.Bytes.OriginByReason["private_content"] != priv.size {
			t.Errorf("%s: origin bytes %v, want all %d private_content", a.h.Name, j.Bytes.OriginByReason, priv.size)
		}
		for _, p := range []string{api.PathJobs, api.PathJobs + "/" + j.ID, api.PathJobs + "/" + j.ID + "?brief"} {
			body := rawGet(t, a, p)
			if strings.Contains(body, secret) || strings.Contains(body, "Bearer") {
				t.Errorf("%s: GET %s carries the credential: %s", a.h.Name, p, body)
			}
			if !strings.Contains(body, `"Authorization"`) || !strings.Contains(body, j.ID) {
				t.Errorf("%s: GET %s does not list the job and its header name: %.300s", a.h.Name, p, body)
			}
		}
		if strings.Contains(a.p.Log(), secret) {
			t.Errorf("%s's log carries the credential", a.h.Name)
		}
	}
	for _, r := range o.requests() {
		if r.path == "/private.bin" && r.auth != "Bearer "+secret {
			t.Errorf("the origin got a request for /private.bin without the job's credential from %s (%s %q): fetched for a demand?",
				r.from, r.method, r.auth)
		}
	}

	fetchRight(t, rl, pubURL, pub.sum)
	pubKey := keyOf(pub, pubURL)
	wait.ForErr(t, 10*time.Second, "the catalog entry of the public file", func() error {
		if found, sha := catalogEntry(t, n, rl, pubKey); !found || sha != pub.sum {
			return fmt.Errorf("public file: entry found %v, sha256 %q, want %s", found, sha, pub.sum)
		}
		return nil
	})
	if found, sha := catalogEntry(t, n, rl, keyOf(priv, privURL)); found {
		t.Errorf("the catalog has an entry for the private content's key (sha256 %s)", sha)
	}
	t.Logf("catalog: the public file's key has its entry; the private file's key has none")
}

// rawGet returns the raw body of GET path on a's local API.
func rawGet(t *testing.T, a *agent, p string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := newGet(ctx, "http://"+apiAddr+p)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := a.h.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("%s: GET %s: %v", a.h.Name, p, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: GET %s: %s %v: %s", a.h.Name, p, resp.Status, err, b)
	}
	return string(b)
}
