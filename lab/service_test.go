//go:build linux

package lab_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/internal/service"
	"github.com/redleader-p2p/redleader/lab"
	"github.com/redleader-p2p/redleader/peer/api"
)

// The systemd unit's sandbox, emulated: `redleader service install` writes
// the unit SystemdUnit makes; this test runs that unit's ExecStart the way
// systemd would, as far as the unit's sandbox goes, without systemd:
//
//   - a private network namespace (lo, and a veth pair whose one end holds
//     the default route, so that the agent has a primary interface): no
//     packet leaves it;
//   - a mount namespace where the unit's paths exist (overlays on /etc,
//     /var/lib and /usr/local/bin, so the host is never written): the
//     config the install generates, the binary at the unit's path;
//   - for the agent, a nested mount namespace applying the unit's
//     directives: ProtectSystem=strict (every mount read-only but /proc,
//     /sys, /dev), StateDirectory (and ReadWritePaths) writable again,
//     PrivateTmp (fresh /tmp and /var/tmp), ProtectHome=yes (/home, /root,
//     /run/user empty and inaccessible), DynamicUser (an unprivileged UID of
//     systemd's dynamic range owning the state directory), NoNewPrivileges,
//     an empty CapabilityBoundingSet, UMask, an empty environment.
//
// Not emulated: seccomp and the other Protect*/Restrict* directives, which
// `systemd-analyze verify` checks for syntax only (internal/service).
//
// Then, as an unprivileged user (nobody) with a copy of the API token in a
// file of its own, `redleader fetch` from an origin inside the namespace and
// `redleader cache add` of a file the agent cannot see work; root's
// `redleader` with no flag finds the service's data dir and token; the
// unit's KillSignal stops the agent gracefully within TimeoutStopSec.

const (
	svcUID       = 61777 // in systemd's DynamicUser range 61184–65519
	svcNobody    = 65534
	svcPATH      = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	svcOriginURL = "http://127.0.0.1:8080/"
)

// svcUnit is what the test reads from the unit's [Service] section.
type svcUnit struct {
	argv        []string // ExecStart
	config      string   // --config of ExecStart
	binary      string
	writable    []string // StateDirectory (under /var/lib) and ReadWritePaths
	stateDir    string
	stateMode   string
	hide        []string // ProtectHome=yes
	privateTmp  bool
	noNewPrivs  bool
	dropCaps    bool
	umask       string
	killSignal  syscall.Signal
	stopTimeout time.Duration
	reload      syscall.Signal // ExecReload=/bin/kill -SIG $MAINPID
}

func svcParseUnit(t *testing.T, unit string) svcUnit {
	t.Helper()
	d := map[string]string{}
	section := ""
	for _, line := range strings.Split(unit, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			k, v, _ := strings.Cut(line, "=")
			if _, dup := d[k]; dup {
				t.Fatalf("unit: %s set twice; the emulation reads one value", k)
			}
			d[k] = v
		}
	}
	u := svcUnit{argv: strings.Fields(d["ExecStart"]), umask: d["UMask"], stateMode: d["StateDirectoryMode"]}
	if len(u.argv) < 2 || strings.ContainsAny(d["ExecStart"][:1], "-@+!:") {
		t.Fatalf("unit: ExecStart %q: the emulation runs a plain command line", d["ExecStart"])
	}
	u.binary = u.argv[0]
	if i := slices.Index(u.argv, "--config"); i > 0 && i+1 < len(u.argv) {
		u.config = u.argv[i+1]
	} else {
		t.Fatalf("unit: ExecStart %q names no --config", d["ExecStart"])
	}
	for _, s := range strings.Fields(d["StateDirectory"]) {
		u.writable = append(u.writable, "/var/lib/"+s)
	}
	if len(u.writable) != 1 {
		t.Fatalf("unit: StateDirectory %q: the emulation handles one", d["StateDirectory"])
	}
	u.stateDir = u.writable[0]
	u.writable = append(u.writable, strings.Fields(d["ReadWritePaths"])...)
	if d["ProtectSystem"] != "strict" {
		t.Fatalf("unit: ProtectSystem=%q: the emulation implements strict", d["ProtectSystem"])
	}
	switch d["ProtectHome"] {
	case "yes":
		u.hide = []string{"/home", "/root", "/run/user"}
	case "read-only": // ProtectSystem=strict made them read-only already
	default:
		t.Fatalf("unit: ProtectHome=%q: the agent must not write homes", d["ProtectHome"])
	}
	if d["DynamicUser"] != "yes" || d["User"] != "" {
		t.Fatalf("unit: DynamicUser=%q User=%q: the emulation runs a dynamic user", d["DynamicUser"], d["User"])
	}
	u.privateTmp = d["PrivateTmp"] == "yes"
	u.noNewPrivs = d["NoNewPrivileges"] == "yes"
	_, u.dropCaps = d["CapabilityBoundingSet"]
	u.dropCaps = u.dropCaps && d["CapabilityBoundingSet"] == ""
	sig := map[string]syscall.Signal{"": syscall.SIGTERM, "SIGTERM": syscall.SIGTERM, "SIGINT": syscall.SIGINT}
	var ok bool
	if u.killSignal, ok = sig[d["KillSignal"]]; !ok {
		t.Fatalf("unit: KillSignal=%q", d["KillSignal"])
	}
	n, err := strconv.Atoi(d["TimeoutStopSec"])
	if err != nil {
		t.Fatalf("unit: TimeoutStopSec=%q: want seconds", d["TimeoutStopSec"])
	}
	u.stopTimeout = time.Duration(n) * time.Second
	r := strings.Fields(d["ExecReload"])
	if len(r) != 3 || filepath.Base(r[0]) != "kill" || r[2] != "$MAINPID" || r[1] != "-HUP" {
		t.Fatalf("unit: ExecReload=%q: the emulation sends SIGHUP to the main process", d["ExecReload"])
	}
	u.reload = syscall.SIGHUP
	return u
}

func svcRequire(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("service sandbox: needs root (namespaces, mounts); run `make lab-test`")
	}
	for _, c := range []string{"unshare", "nsenter", "setpriv", "ip", "mount", "bash", "env"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("service sandbox: %s not found (util-linux, iproute2): %v", c, err)
		}
	}
}

// svcNS is the emulation's outer namespaces, held by one shell process.
type svcNS struct {
	holder *exec.Cmd
	stdin  io.WriteCloser
	pid    int
}

// svcRootfs lists the directories to overlay so that paths can be created
// in the namespace: for each path, its nearest existing ancestor directory.
func svcOverlays(paths ...string) []string {
	var dirs []string
	for _, p := range paths {
		d := filepath.Dir(p)
		for {
			if fi, err := os.Stat(d); err == nil && fi.IsDir() {
				break
			}
			d = filepath.Dir(d)
		}
		if !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// svcStartNS starts the namespaces: network, and the unit's files in
// overlays (work under work).
func svcStartNS(t *testing.T, work, bin, cfgFile string, u svcUnit) *svcNS {
	t.Helper()
	script := `set -eu
ip link set lo up
ip link add v0 type veth peer name v1
ip link set v1 up
ip addr add 10.99.0.1/24 dev v0
ip link set v0 up
ip route add default via 10.99.0.254 dev v0
for d in $OVERLAYS; do
  o="$WORK/overlay$d"; mkdir -p "$o/upper" "$o/work"
  mount -t overlay overlay -o "lowerdir=$d,upperdir=$o/upper,workdir=$o/work" "$d"
done
mkdir -p "$(dirname "$CONFIG")" "$(dirname "$BINARY")"
cp "$CFG_SRC" "$CONFIG"
install -m 0755 "$BIN_SRC" "$BINARY"
# What systemd does for StateDirectory: the directory, owned by the service's user.
rm -rf "$STATE"
mkdir -p "$STATE"
chown "$SVC_UID:$SVC_UID" "$STATE"
chmod "$STATE_MODE" "$STATE"
echo ready
read -r _ || true
`
	cmd := exec.Command("unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", script)
	cmd.Env = []string{svcPATH, "WORK=" + work, "OVERLAYS=" + strings.Join(svcOverlays(u.binary, u.config, u.stateDir), " "),
		"CONFIG=" + u.config, "BINARY=" + u.binary, "CFG_SRC=" + cfgFile, "BIN_SRC=" + bin, "STATE=" + u.stateDir,
		"SVC_UID=" + strconv.Itoa(svcUID), "STATE_MODE=" + svcOr(u.stateMode, "0755")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the namespaces: %v", err)
	}
	ns := &svcNS{holder: cmd, stdin: stdin, pid: cmd.Process.Pid}
	t.Cleanup(func() {
		stdin.Close() // the holder reads EOF and exits; its namespaces go with the last process
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("namespaces not ready: %q, %v; stderr:\n%s", line, err, stderr.String())
	}
	return ns
}

func svcOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// command is a command run inside the namespaces (as root unless it
// switches user itself).
func (ns *svcNS) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(ns.pid), "-n", "-m", "--"}, args...)...)
	cmd.Env = []string{svcPATH}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// sandboxed is argv run in a nested mount namespace applying the unit's
// sandbox; asService also switches to the service's user, privileges and
// environment.
func (ns *svcNS) sandboxed(ctx context.Context, u svcUnit, asService bool, argv ...string) *exec.Cmd {
	script := `set -eu
for mp in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do
  case "$mp" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue;; esac
  mount -o remount,bind,ro "$mp"
done
for p in $WRITABLE; do mount --bind "$p" "$p"; mount -o remount,bind,rw "$p"; done
if [ "$PRIVATE_TMP" = yes ]; then
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
fi
for d in $HIDE; do
  if [ -d "$d" ]; then mount -t tmpfs -o ro,mode=000 tmpfs "$d"; fi
done
umask "$UMASK"
exec "$@"
`
	var final []string
	if asService {
		final = []string{"env", "-i", svcPATH, "HOME=/", "LANG=C.UTF-8",
			"setpriv", "--reuid=" + strconv.Itoa(svcUID), "--regid=" + strconv.Itoa(svcUID), "--clear-groups", "--pdeathsig=SIGKILL"}
		if u.noNewPrivs {
			final = append(final, "--no-new-privs")
		}
		if u.dropCaps {
			final = append(final, "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all")
		}
		final = append(final, "--")
	}
	final = append(final, argv...)
	privateTmp := map[bool]string{true: "yes", false: "no"}[u.privateTmp]
	cmd := ns.command(ctx, append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sandbox"}, final...)...)
	cmd.Env = append(cmd.Env, "WRITABLE="+strings.Join(u.writable, " "), "PRIVATE_TMP="+privateTmp,
		"HIDE="+strings.Join(u.hide, " "), "UMASK="+svcOr(u.umask, "0022"))
	return cmd
}

// asUser is argv run inside the namespaces as uid with an environment of
// its own (env: extra variables).
func (ns *svcNS) asUser(ctx context.Context, uid int, env []string, argv ...string) *exec.Cmd {
	args := []string{"setpriv", "--reuid=" + strconv.Itoa(uid), "--regid=" + strconv.Itoa(uid), "--clear-groups", "--",
		"env", "-i", svcPATH, "HOME=/nonexistent"}
	args = append(args, env...)
	return ns.command(ctx, append(args, argv...)...)
}

// svcRun runs cmd and returns its stdout; it fails the test unless cmd
// exits 0.
func svcRun(t *testing.T, what string, cmd *exec.Cmd) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout: %s\nstderr: %s", what, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// svcLog is a process's output, safe to read while it runs.
type svcLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *svcLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *svcLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// svcProc is a process started by svcStart.
type svcProc struct {
	cmd  *exec.Cmd
	log  *svcLog
	done chan struct{} // closed when it has exited; err is then its exit
	err  error
}

// svcStart starts cmd, logs its output on failure and kills it at cleanup.
func svcStart(t *testing.T, name string, cmd *exec.Cmd) *svcProc {
	t.Helper()
	p := &svcProc{cmd: cmd, log: &svcLog{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.log.String())
		}
	})
	return p
}

func svcRandomFile(t *testing.T, path string, size int) string {
	t.Helper()
	b := make([]byte, size)
	_, _ = rand.Read(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func svcChownAll(t *testing.T, dir string, uid int) {
	t.Helper()
	err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, uid)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestServiceSandbox(t *testing.T) {
	svcRequire(t)
	bin := lab.Binary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	unitText := service.SystemdUnit(service.UnitParams{Binary: "/usr/local/bin/redleader", Config: service.SystemdConfigPath,
		DataDir: service.SystemdDataDir, Version: "lab"})
	u := svcParseUnit(t, unitText)
	if u.stateDir != service.SystemdDataDir {
		t.Fatalf("unit's StateDirectory is %s, the service's data dir %s", u.stateDir, service.SystemdDataDir)
	}

	work, err := os.MkdirTemp("", "rlsvc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) }) // runs last: after the namespaces are gone
	if err := os.Chmod(work, 0o755); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(work, "redleader.yaml")
	if err := os.WriteFile(cfgFile, service.GeneratedConfig(service.SystemdDataDir), 0o644); err != nil {
		t.Fatal(err)
	}
	// The unprivileged user's files: an origin's directory, a file to
	// pre-stage, the fetch's destination, a copy of the API token.
	user := filepath.Join(work, "user")
	www := filepath.Join(user, "www")
	if err := os.MkdirAll(www, 0o755); err != nil {
		t.Fatal(err)
	}
	imageSum := svcRandomFile(t, filepath.Join(www, "image.bin"), 6<<20)
	prestage := filepath.Join(user, "prestage.bin")
	svcRandomFile(t, prestage, 3<<20)
	if err := os.Chmod(user, 0o700); err != nil {
		t.Fatal(err)
	}
	svcChownAll(t, user, svcNobody)

	ns := svcStartNS(t, work, bin, cfgFile, u)

	// The sandbox itself, checked as root (who could write anywhere on a
	// writable file system): only the unit's paths are writable, the
	// user's files and the homes are out of sight.
	probe := `for p in "$CONFIG.probe" "$BINARY.probe" /var/lib/probe /probe; do
  touch "$p" 2>&1 | grep -q 'Read-only file system' || echo "writable: $p"
done
touch "$STATE/.probe" && rm "$STATE/.probe" && echo "state writable"
[ ! -e "$USERDIR" ] || echo "sees $USERDIR"
[ -z "$(ls -A /tmp)" ] || echo "/tmp not private"
for d in $HIDE; do if [ -d "$d" ] && [ -n "$(ls -A "$d")" ]; then echo "sees files in $d"; fi; done
true`
	pc := ns.sandboxed(ctx, u, false, "sh", "-c", probe)
	pc.Env = append(pc.Env, "CONFIG="+u.config, "BINARY="+u.binary, "STATE="+u.stateDir, "USERDIR="+user)
	if got := strings.TrimSpace(svcRun(t, "sandbox probe", pc)); got != "state writable" {
		t.Fatalf("sandbox probe says:\n%s\nwant only: state writable", got)
	}
	// And as the service's user: its state dir only; the homes closed.
	// (Its environment is the unit's, empty: the paths come as arguments.)
	probe2 := `state=$1; shift
touch "$state/.probe" && rm "$state/.probe" && echo "state writable"
for d in "$@"; do if [ -d "$d" ]; then ls "$d" >/dev/null 2>&1 && echo "sees $d"; fi; done
grep -E '^(NoNewPrivs|CapBnd|CapEff):' /proc/self/status | tr -s '\t ' ' '
true`
	pc = ns.sandboxed(ctx, u, true, append([]string{"sh", "-c", probe2, "probe", u.stateDir}, u.hide...)...)
	got := svcRun(t, "sandbox probe as the service's user", pc)
	for _, want := range []string{"state writable\n", "NoNewPrivs: 1\n", "CapBnd: 0000000000000000\n", "CapEff: 0000000000000000\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("sandbox probe as the service's user lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "sees ") {
		t.Errorf("the service's user sees a home:\n%s", got)
	}

	// The agent: the unit's ExecStart in the sandbox.
	agent := svcStart(t, "agent", ns.sandboxed(ctx, u, true, u.argv...))
	cli := func(uid int, env []string, args ...string) *exec.Cmd {
		return ns.asUser(ctx, uid, env, append([]string{u.binary}, args...)...)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := cli(0, nil, "status", "--json").Output()
		var st api.StatusResponse
		if err == nil && json.Unmarshal(out, &st) == nil && st.Node != "" {
			break
		}
		select {
		case <-agent.done:
			t.Fatalf("the agent exited at start: %v", agent.err)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent's API does not answer: %v", err)
		}
	}

	// An origin inside the namespace, run by the user.
	origin := svcStart(t, "origin", cli(svcNobody, nil, "origin", "--dir", www, "--listen", "127.0.0.1:8080",
		"--data-dir", filepath.Join(user, "origin-data")))
	for i := 0; ; i++ {
		if ns.command(ctx, "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080").Run() == nil {
			break
		}
		select {
		case <-origin.done:
			t.Fatalf("origin exited: %v", origin.err)
		case <-time.After(100 * time.Millisecond):
		}
		if i > 100 {
			t.Fatal("origin does not listen")
		}
	}

	// The user has no token: mutating commands are refused.
	out, err := cli(svcNobody, nil, "cache", "add", prestage, "--secret-passphrase", "lab").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "api token") {
		t.Fatalf("cache add without the token: %v, %s; want a refusal naming the API token", err, out)
	}

	// The admin hands the user a copy of the token (a file of its own,
	// 0600), named with REDLEADER_API_TOKEN_FILE.
	token := svcRun(t, "read the token", ns.command(ctx, "cat", filepath.Join(u.stateDir, "api-token")))
	tokenFile := filepath.Join(user, "token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(tokenFile, svcNobody, svcNobody); err != nil {
		t.Fatal(err)
	}
	userEnv := []string{"REDLEADER_API_TOKEN_FILE=" + tokenFile}

	// fetch: the agent downloads, the CLI writes the file as the user.
	dst := filepath.Join(user, "out.bin")
	svcRun(t, "fetch as nobody", cli(svcNobody, userEnv, "fetch", svcOriginURL+"image.bin", "-o", dst, "--sha256", imageSum))
	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatalf("fetch wrote no file: %v", err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != svcNobody {
		t.Errorf("fetched file owned by uid %d, want the user's %d", st.Uid, svcNobody)
	}
	b, _ := os.ReadFile(dst)
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != imageSum {
		t.Error("fetched file differs from the origin's")
	}

	// cache add: the CLI reads the user's file (the agent cannot see it)
	// and streams it to the agent.
	svcRun(t, "cache add as nobody", cli(svcNobody, userEnv, "cache", "add", prestage, "--secret-passphrase", "lab"))
	var hash struct {
		Segments []struct {
			ID     string `json:"id"`
			Blocks int    `json:"blocks"`
		} `json:"segments"`
	}
	if err := json.Unmarshal([]byte(svcRun(t, "hash", cli(svcNobody, nil, "hash", prestage, "--secret-passphrase", "lab", "--json"))), &hash); err != nil || len(hash.Segments) == 0 {
		t.Fatalf("hash --json: %v %+v", err, hash)
	}
	cached := func() map[string]api.CacheSegment {
		var l api.CacheListResponse
		if err := json.Unmarshal([]byte(svcRun(t, "cache list", cli(svcNobody, nil, "cache", "list", "--json"))), &l); err != nil {
			t.Fatal(err)
		}
		m := map[string]api.CacheSegment{}
		for _, s := range l.Segments {
			m[s.Segment] = s
		}
		return m
	}
	have := cached()
	for _, s := range hash.Segments {
		if c, ok := have[s.ID]; !ok || c.Blocks != s.Blocks {
			t.Errorf("segment %s of the pre-staged file: cached %+v, want %d blocks", s.ID, c, s.Blocks)
		}
	}

	// root's redleader, no flag: the service's data dir, its token.
	first := hash.Segments[0].ID
	svcRun(t, "cache rm as root", cli(0, nil, "cache", "rm", first))
	if _, ok := cached()[first]; ok {
		t.Errorf("segment %s still cached after root's cache rm", first)
	}

	// Stop as systemd does: KillSignal to the main process, then
	// TimeoutStopSec. The exec chain (nsenter, unshare, sh, env, setpriv)
	// never forks: the process started is the agent.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", agent.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if uid := fmt.Sprintf("\nUid:\t%d\t", svcUID); !strings.Contains(string(status), uid) || !strings.HasPrefix(string(status), "Name:\tredleader\n") {
		t.Fatalf("the process started is not the agent run as uid %d:\n%s", svcUID, status)
	}
	// Reload as systemd does (ExecReload): the config is re-read, the
	// agent keeps running.
	if err := agent.cmd.Process.Signal(u.reload); err != nil {
		t.Fatal(err)
	}
	for i := 0; !strings.Contains(agent.log.String(), "re-reading the config"); i++ {
		select {
		case <-agent.done:
			t.Fatalf("the agent exited on %v: %v", u.reload, agent.err)
		case <-time.After(100 * time.Millisecond):
		}
		if i > 50 {
			t.Fatalf("no reload logged after %v", u.reload)
		}
	}
	svcRun(t, "status after the reload", cli(0, nil, "status"))

	if err := agent.cmd.Process.Signal(u.killSignal); err != nil {
		t.Fatal(err)
	}
	select {
	case <-agent.done:
		if agent.err != nil {
			t.Errorf("agent exit after %v: %v, want 0 (a graceful stop)", u.killSignal, agent.err)
		}
	case <-time.After(u.stopTimeout):
		t.Fatalf("agent still running %v after %v (systemd would kill it)", u.stopTimeout, u.killSignal)
	}
	if !strings.Contains(agent.log.String(), "leaving the cluster") {
		t.Errorf("agent log lacks its graceful stop:\n%s", agent.log.String())
	}
}
