//go:build linux

package lab_test

// Rolling upgrade (issue #11, Done when): a subnet running the binary built
// from main as it was before the issue and the new binary side by side keeps
// one Red Leader, and each serves content to the other.
//
// The old binary is built from git history (commit oldRevDefault, or
// $RLLAB_OLD_REV) with `git archive` into a temporary directory and
// `go build`, or taken prebuilt from $RLLAB_OLD_BIN. The variables are not
// REDLEADER_*: agents inherit the test's environment and refuse REDLEADER_*
// variables that are not config keys.

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/lab"
	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/peer/content"
)

const (
	// envOldBin names a prebuilt old redleader binary (no build).
	envOldBin = "RLLAB_OLD_BIN"
	// envOldRev names the commit to build the old binary from.
	envOldRev = "RLLAB_OLD_REV"
	// oldRevDefault is main as it was before issue #11: the last commit
	// before its work began.
	oldRevDefault = "ffd6738"
	// oldVersionPrefix starts the version the old build reports in
	// /v1/status (main.version), so that the test can tell its agents.
	oldVersionPrefix = "main@"
)

// oldBinary returns the old redleader binary and the version it reports
// ("" when prebuilt: unknown). It builds it from git history, or skips the
// test when the tree has no history (a source tarball, a shallow clone).
func oldBinary(t *testing.T) (bin, version string) {
	t.Helper()
	if p := os.Getenv(envOldBin); p != "" {
		fi, err := os.Stat(p)
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			t.Fatalf("$%s=%q is not an executable file (%v)", envOldBin, p, err)
		}
		t.Logf("old binary: $%s=%s (prebuilt)", envOldBin, p)
		return p, ""
	}
	rev := cmp.Or(os.Getenv(envOldRev), oldRevDefault)
	if _, err := exec.LookPath("git"); err != nil {
		t.Skipf("rolling upgrade: git not found, cannot build main at %s (set $%s to a prebuilt old binary): %v", rev, envOldBin, err)
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	root := filepath.Dir(strings.TrimSpace(string(out)))
	if err != nil || root == "." {
		t.Fatalf("go env GOMOD: %v: %s", err, out)
	}
	out, err = exec.Command("git", "-C", root, "rev-parse", "--verify", "--quiet", rev+"^{commit}").Output()
	if err != nil {
		t.Skipf("rolling upgrade: commit %s is not in the history of %s (a source tarball or a shallow clone?): "+
			"cannot build the old binary (set $%s to one, or fetch the history): %v", rev, root, envOldBin, err)
	}
	full := strings.TrimSpace(string(out))
	version = oldVersionPrefix + full[:12]

	start := time.Now()
	tmp := t.TempDir()
	src, tarball := filepath.Join(tmp, "src"), filepath.Join(tmp, "src.tar")
	bin = filepath.Join(tmp, "redleader-old")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	steps := []*exec.Cmd{
		exec.Command("git", "-C", root, "archive", "--format=tar", "-o", tarball, full),
		exec.Command("tar", "-xf", tarball, "-C", src),
		exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version="+version, "-o", bin, "./cmd/redleader"),
	}
	steps[2].Dir = src
	steps[2].Env = append(os.Environ(), "GOWORK=off")
	for _, c := range steps {
		var msg bytes.Buffer
		c.Stdout, c.Stderr = &msg, &msg
		if err := c.Run(); err != nil {
			t.Fatalf("build the old binary from %s: %s: %v\n%s", full, strings.Join(c.Args, " "), err, msg.String())
		}
	}
	t.Logf("old binary: main at %s built in %v (git archive + go build -trimpath)", full, time.Since(start).Round(time.Millisecond))
	return bin, version
}

// startAgentBin starts `bin agent` on a new data dir on h, with the flags
// every version of the agent knows.
func startAgentBin(t *testing.T, h *lab.Host, bin, label string) *agent {
	t.Helper()
	a := &agent{h: h, dir: t.TempDir()}
	cmd := h.Command(context.Background(), bin, "agent", "--data-dir", a.dir, "--log-level", "debug", "--node-name", h.Name)
	a.p = h.StartCmd(t, "agent-"+label, cmd)
	return a
}

// cliBin runs bin's CLI on a's host against a's data dir (for the token).
func cliBin(t *testing.T, a *agent, bin string, args ...string) (string, error) {
	t.Helper()
	cmd := a.h.Command(shortCtx(t, time.Minute), append([]string{bin}, append(args, "--data-dir", a.dir)...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// upgradeAgent is one agent of the mixed subnet and the binary it runs.
type upgradeAgent struct {
	*agent
	bin string
	old bool
}

func (u upgradeAgent) String() string {
	if u.old {
		return u.h.Name + " (old)"
	}
	return u.h.Name + " (new)"
}

// TestRollingUpgrade: two agents of the old binary (main before issue #11)
// and two of the new one on one subnet. All four agree on one confirmed
// Red Leader, and keep agreeing, it alone with role=leader, over 10 s of
// samples every 100 ms. Content pre-staged with `redleader cache add` on an
// old agent is fetched by a new one (`redleader fetch` from the origin: the
// file is verified, the job's audit credits bytes to the old agent and every
// byte to agents of the subnet, none to the origin, and the WAN carries only
// content information), and the reverse; afterwards the seat settles on one
// agent that all four agree on for 3 s, then holds for 2 s more.
// SIGKILL of the Red Leader → the three survivors, of both versions, agree
// on a new one within 10 s, never two with role=leader, and keep it.
func TestRollingUpgrade(t *testing.T) {
	// Not parallel: the old build takes the machine's cores, and the
	// failover below is timed.
	lab.Require(t)
	oldBin, oldVersion := oldBinary(t)
	newBin := lab.Binary(t)
	labStart := time.Now()

	// Three segments (65 MiB, 1.7-2.5 s to fetch): the fetcher's job must last
	// long enough for the seat to move to it (a displacement by priority
	// waits up to two check-in intervals); two segments (~1.4 s) sometimes
	// ended first, and no new agent held the seat.
	const size = 2*content.SegmentSize + 16*content.BlockSize + 123
	d := &dpLab{
		l:     lab.New(t, lab.Options{Subnets: 1, WANRate: "off"}),
		cfg:   dpConfig{files: map[string]int64{"from-old.bin": size, "from-new.bin": size, "from-old-2.bin": size}},
		dir:   t.TempDir(),
		files: map[string]dpFile{},
	}
	for name, sz := range d.cfg.files {
		d.files[name] = makeFile(t, d.dir, name, sz)
	}
	d.startOrigins(t) // the new binary's `redleader origin`, secret passphrase "lab origin"

	var mixed []upgradeAgent
	for i := range 4 {
		old := i%2 == 0 // h1, h3 old; h2, h4 new
		bin, label := newBin, "new"
		if old {
			bin, label = oldBin, "old"
		}
		mixed = append(mixed, upgradeAgent{agent: startAgentBin(t, d.l.AddHost(1), bin, label), bin: bin, old: old})
	}
	agents := make([]*agent, len(mixed))
	for i, u := range mixed {
		agents[i] = u.agent
		u.nodeID(t)
	}
	var versions []string
	for i, st := range statuses(agents) {
		if st == nil {
			t.Fatalf("%s does not answer", mixed[i])
		}
		versions = append(versions, fmt.Sprintf("%s %s protocol %d", mixed[i], st.Version, st.ProtocolVersion))
		if oldVersion != "" && (st.Version == oldVersion) != mixed[i].old {
			t.Fatalf("%s reports version %q: the old build reports %q, not this one", mixed[i], st.Version, oldVersion)
		}
	}
	t.Logf("agents: %s", strings.Join(versions, "; "))

	// One Red Leader for all four, then still the same one, never two.
	sts, took := waitAgree(t, agents, 30*time.Second, "old and new agents agree on one Red Leader", nil)
	seat := *sts[0].RedLeader
	t.Logf("one confirmed Red Leader for all 4 agents after %v: %s, epoch %d",
		took.Round(time.Millisecond), nameOf(mixed, seat.Node), seat.Epoch)
	holdSeat(t, mixed, agents, seat, 10*time.Second)

	// Each version serves content to the other. A fetching member's job
	// outranks an idle Red Leader (rule 3, priority), so the seat moves
	// meanwhile, between versions: every sample in which all four agree
	// names its holder; two with role=leader at once during such a
	// handover are logged, not asserted (see the log line for why).
	waitProbeReady(t, agents, 30*time.Second)
	agreed := map[string]int{} // seat holder → samples all four agreed on it; the sampler's own until finish
	handover := newSampler(100*time.Millisecond, func() []string {
		sts := statuses(agents)
		if got, err := agreement(agents, sts); err == nil {
			agreed[nameOf(mixed, got.Node)]++
		}
		if ls := leaders(agents, sts); len(ls) > 1 {
			return []string{fmt.Sprintf("role=leader on %v", ls)}
		}
		return nil
	})
	for _, tc := range []struct {
		file            string
		holder, fetcher upgradeAgent
	}{
		{"from-old.bin", mixed[0], mixed[1]},   // h1 (old) holds, h2 (new) fetches
		{"from-new.bin", mixed[3], mixed[2]},   // h4 (new) holds, h3 (old) fetches
		{"from-old-2.bin", mixed[2], mixed[3]}, // h3 (old) holds, h4 (new) fetches
	} {
		serves(t, d, tc.file, tc.holder, tc.fetcher, mixed)
	}
	// After the fetches the seat may still move once or twice: a former
	// Red Leader's gossip shows the demands it served for up to a second
	// after its seat moved, and an old Raft leader ranks by gossip alone.
	// It must settle on one agent that all four agree on.
	seat0, took := waitSettled(t, agents, upgradeSettled, 20*time.Second)
	t.Logf("the seat settled on %s@%d %v after the last fetch", nameOf(mixed, seat0.Node), seat0.Epoch, took.Round(time.Millisecond))
	n, overlaps := handover.finish()
	for _, ev := range mixed[1].events(t) {
		if ev.Kind == "appoint" && ev.Epoch > seat.Epoch {
			t.Logf("seat moved while content was fetched: %s appointed at epoch %d: %s", nameOf(mixed, ev.Node), ev.Epoch, ev.Reason)
		}
	}
	t.Logf("%d samples every 100 ms while content was fetched; all four agreed on the seat of (samples): %v", n, agreed)
	newHeld := false
	for name := range agreed {
		newHeld = newHeld || strings.HasSuffix(name, "(new)")
	}
	if !newHeld {
		t.Errorf("no sample in which all four agreed on a new agent's seat: %v (want old agents to follow a new Red Leader too)", agreed)
	}
	if len(overlaps) > 0 {
		// Both versions do this alone too (4 agents of the old binary, 4
		// of the new one): the displaced Red Leader keeps role=leader
		// until its state or its next check-in shows the new epoch, after
		// its successor has confirmed. Not a rolling-upgrade issue.
		t.Logf("during the %d seat handovers by priority, %d of %d samples saw two agents with role=leader "+
			"(the old and the new binary each do this on their own too):\n%s",
			seat0.Epoch-seat.Epoch, len(overlaps), n, strings.Join(overlaps, "\n"))
	}
	holdSeat(t, mixed, agents, seat0, 2*time.Second)

	// SIGKILL of the Red Leader: the survivors, old and new, agree on a
	// new one, never two at once.
	victim, ok := byUpgradeNode(mixed, seat0.Node)
	if !ok {
		t.Fatalf("the Red Leader %s is none of the agents", seat0.Node)
	}
	var survivors []*agent
	var rest []upgradeAgent
	for _, u := range mixed {
		if u.agent != victim.agent {
			survivors, rest = append(survivors, u.agent), append(rest, u)
		}
	}
	failover := startSampler(survivors)
	if err := victim.p.Kill(); err != nil {
		t.Fatal(err)
	}
	sts, took = waitAgree(t, survivors, 10*time.Second, "the survivors agree on a new Red Leader", func(s api.RedLeaderInfo, _ []*api.StatusResponse) error {
		if s.Node == victim.node || s.Epoch <= seat0.Epoch {
			return fmt.Errorf("seat still %s@%d", s.Name, s.Epoch)
		}
		return nil
	})
	seat1 := *sts[0].RedLeader
	t.Logf("SIGKILL of the Red Leader %s: survivors %v agree on %s, epoch %d → %d, in %v",
		victim, rest, nameOf(mixed, seat1.Node), seat0.Epoch, seat1.Epoch, took.Round(time.Millisecond))
	holdSeat(t, rest, survivors, seat1, 3*time.Second)
	if n, violations := failover.finish(); len(violations) > 0 {
		t.Fatalf("%d samples every 100 ms from the SIGKILL on; two survivors reported role=leader at once:\n%s",
			n, strings.Join(violations, "\n"))
	}
	t.Logf("rolling upgrade: lab time %v", time.Since(labStart).Round(time.Millisecond))
}

// upgradeSettled is how long the seat must stay put, agreed by every agent,
// to count as settled after the fetches (waitSettled).
const upgradeSettled = 3 * time.Second

// waitSettled samples agents every 100 ms until all of them have agreed on
// the same seat (node and epoch, confirmed) for stable, and returns it and
// how long that took; it fails the test after d.
func waitSettled(t *testing.T, agents []*agent, stable, d time.Duration) (api.RedLeaderInfo, time.Duration) {
	t.Helper()
	start := time.Now()
	var seat api.RedLeaderInfo
	var since time.Time // zero: no agreement in the last sample
	for {
		got, err := agreement(agents, statuses(agents))
		now := time.Now()
		switch {
		case err != nil:
			since = time.Time{}
		case since.IsZero() || got.Node != seat.Node || got.Epoch != seat.Epoch:
			seat, since = got, now
		case now.Sub(since) >= stable:
			return seat, now.Sub(start)
		}
		if now.Sub(start) > d {
			t.Fatalf("the seat did not settle within %v (last %s@%d, agreed since %v; err %v)", d, seat.Name, seat.Epoch, since, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// holdSeat samples agents every 100 ms for d: every sample, all of them
// agree on seat (node and epoch), confirmed, and it alone reports
// role=leader.
func holdSeat(t *testing.T, us []upgradeAgent, agents []*agent, seat api.RedLeaderInfo, d time.Duration) {
	t.Helper()
	s := newSampler(100*time.Millisecond, func() []string {
		got, err := agreement(agents, statuses(agents))
		switch {
		case err != nil:
			return []string{err.Error()}
		case got.Node != seat.Node || got.Epoch != seat.Epoch:
			return []string{fmt.Sprintf("the seat moved: %s@%d, was %s@%d", got.Name, got.Epoch, seat.Name, seat.Epoch)}
		}
		return nil
	})
	time.Sleep(d)
	n, violations := s.finish()
	if want := int(d / (200 * time.Millisecond)); len(violations) > 0 || n < want {
		t.Fatalf("%d samples over %v; want ≥ %d, every one the same single Red Leader %s@%d; violations:\n%s",
			n, d, want, nameOf(us, seat.Node), seat.Epoch, strings.Join(violations, "\n"))
	}
	t.Logf("%d samples over %v: all %d agents saw %s@%d confirmed, and it alone with role=leader",
		n, d, len(agents), nameOf(us, seat.Node), seat.Epoch)
}

// byUpgradeNode is the agent with node ID node.
func byUpgradeNode(us []upgradeAgent, node string) (upgradeAgent, bool) {
	for _, u := range us {
		if u.node == node {
			return u, true
		}
	}
	return upgradeAgent{}, false
}

// nameOf names node as the test knows it: "h1 (old)".
func nameOf(us []upgradeAgent, node string) string {
	if u, ok := byUpgradeNode(us, node); ok {
		return u.String()
	}
	return "unknown node " + node
}

// serves pre-stages file on holder with holder's own `redleader cache add`
// (content information from the origin's secret passphrase), then fetches
// it from the origin on fetcher with fetcher's own `redleader fetch`, and
// checks the file, the job's audit and the WAN: the holder served the
// fetcher over MS-PCCRR (the two run different versions), every byte came
// from an agent of the subnet and none from the origin, and the WAN carried
// no more than content information and headers meanwhile. Bytes may also
// come from the Red Leader, which fetches what its members are fetching
// (from the holder too: nothing else holds the content) and serves it; the
// seat moves to the fetcher's job and back while this runs (rule 3).
func serves(t *testing.T, d *dpLab, file string, holder, fetcher upgradeAgent, all []upgradeAgent) {
	t.Helper()
	f := d.files[file]
	start := time.Now()
	out, err := cliBin(t, holder.agent, holder.bin, "cache", "add", filepath.Join(d.dir, file), "--secret-passphrase", "lab origin")
	if err != nil {
		t.Fatalf("%s: cache add %s: %v: %s", holder, file, err, out)
	}
	t.Logf("%s: cache add %s: %s", holder, file, strings.TrimSpace(out))

	url := d.url(kindOrigin, file)
	dst := filepath.Join(t.TempDir(), file)
	wan0 := d.wan(t)
	out, err = cliBin(t, fetcher.agent, fetcher.bin, "fetch", url, "-o", dst)
	if err != nil {
		t.Fatalf("%s: fetch %s (%s holds it): %v: %s", fetcher, url, holder, err, out)
	}
	wan := d.wan(t).Sub(wan0)
	if sum, err := fileSHA256(dst); err != nil || sum != f.sum {
		t.Fatalf("%s: fetched %s: sha256 %s, want %s (%v)", fetcher, file, sum, f.sum, err)
	}
	j, err := fetcher.jobOf(url)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := apiCtx()
	detail, err := fetcher.client().Job(ctx, j.ID, false)
	cancel()
	if err != nil {
		t.Fatalf("%s: job %s: %v", fetcher, j.ID, err)
	}
	byAgent := map[string]int64{} // agent name → bytes credited to it
	var total int64
	var others []string
	for _, s := range detail.Segments {
		if u, ok := byUpgradeIP(all, s.Peer); s.Source == "peer" && ok && u.agent != fetcher.agent {
			byAgent[u.String()] += s.Bytes
			total += s.Bytes
			continue
		}
		others = append(others, fmt.Sprintf("segment %d [%d+%d]: %d bytes from %s %s %s", s.Segment, s.Offset, s.Length, s.Bytes, s.Source, s.Peer, s.Reason))
	}
	if byAgent[holder.String()] == 0 || total != f.size || detail.Bytes.Origin != 0 || len(others) > 0 {
		t.Fatalf("%s fetched %s (%s): want all %d bytes from agents of the subnet, some from %s: got %v; bytes %+v; other sources:\n%s",
			fetcher, file, j.State, f.size, holder, byAgent, detail.Bytes, strings.Join(others, "\n"))
	}
	// Content information and headers for 65 MiB are ~70 KB; a copy of the file over
	// the WAN (the fetcher's or the Red Leader's) is not.
	if limit := f.size / 16; wan.Down > limit {
		t.Fatalf("%s fetched %s from the subnet, but the WAN carried %s towards the subnet meanwhile (want ≤ %s: content information and headers)",
			fetcher, file, mib(wan.Down), mib(limit))
	}
	t.Logf("%s served %s to %s over MS-PCCRR: bytes by source %v (audit of job %s: %d records), file verified, WAN %d bytes down, in %v",
		holder, file, fetcher, byAgent, j.ID, len(detail.Segments), wan.Down, time.Since(start).Round(time.Millisecond))
}

// byUpgradeIP is the agent whose host has the IP of addr ("ip:port").
func byUpgradeIP(us []upgradeAgent, addr string) (upgradeAgent, bool) {
	for _, u := range us {
		if strings.HasPrefix(addr, u.h.IP().String()+":") {
			return u, true
		}
	}
	return upgradeAgent{}, false
}
