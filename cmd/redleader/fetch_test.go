package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/config"
	"github.com/redleader-p2p/redleader/internal/loopback"
	"github.com/redleader-p2p/redleader/internal/wait"
	"github.com/redleader-p2p/redleader/peer"
	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/peer/cache"
	"github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/peertest"
)

// testOrigin serves data at /file.bin (Range, ETag); /slow.bin sends
// 1000 bytes and then waits for release or the client to leave.
func testOrigin(t *testing.T, data []byte) (base string, release func()) {
	t.Helper()
	gate := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/file.bin", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"1"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	})
	mux.HandleFunc("/slow.bin", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		if r.Method == http.MethodHead {
			return
		}
		w.Write(data[:1000])
		w.(http.Flusher).Flush()
		select {
		case <-gate:
			w.Write(data[1000:])
		case <-r.Context().Done():
		}
	})
	srv := httptest.NewServer(mux)
	closed := false
	release = func() {
		if !closed {
			closed = true
			close(gate)
		}
	}
	t.Cleanup(srv.Close)
	t.Cleanup(release)
	return srv.URL, release
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// leftovers lists the files of dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// changingFile is a file of more than one segment that changes while it
// is downloaded: HEAD and the range at offset 0 (the first segment) get
// version 1 (ETag "v1"), any other GET version 2 (other bytes, ETag "v2");
// fix makes it version 1 throughout. Unless conditional, it ignores the
// conditional headers (If-Match, If-Range) and sends version 2 anyway.
type changingFile struct {
	v1, v2      []byte
	conditional bool
	mu          sync.Mutex
	fixed       bool
}

func (f *changingFile) fix() {
	f.mu.Lock()
	f.fixed = true
	f.mu.Unlock()
}

func (f *changingFile) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	fixed := f.fixed
	f.mu.Unlock()
	data, etag := f.v1, `"v1"`
	if !fixed && r.Method == http.MethodGet && !strings.HasPrefix(r.Header.Get("Range"), "bytes=0-") {
		data, etag = f.v2, `"v2"`
		if !f.conditional {
			for _, h := range []string{"If-Match", "If-None-Match", "If-Range", "If-Modified-Since", "If-Unmodified-Since"} {
				r.Header.Del(h)
			}
		}
	}
	w.Header().Set("ETag", etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
}

// randomBytes returns n pseudo-random bytes (distinct blocks, unlike a
// repeated pattern).
func randomBytes(n int, seed uint64) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

// checkCache closes agent a and opens its segment cache, which verifies
// every held block: none may be corrupt, every one must still verify
// against its segment's description, and the cache keeps its cap.
func checkCache(t *testing.T, a *peer.Agent, maxBytes int64) {
	t.Helper()
	if err := a.Close(); err != nil {
		t.Errorf("close agent: %v", err)
	}
	c, err := cache.Open(filepath.Join(a.DataDir(), "cache"), cache.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st := c.Stats()
	if st.CorruptDropped != 0 || st.BadSegments != 0 || (maxBytes > 0 && st.Bytes > maxBytes) {
		t.Errorf("cache inconsistent: %+v (cap %d)", st, maxBytes)
	}
	for _, id := range c.Segments() {
		d, ok := c.Describe(id)
		if !ok {
			continue
		}
		for _, b := range c.Held(id) {
			data, err := c.ReadBlock(id, uint32(b), nil)
			if err == nil {
				err = content.VerifyBlock(&d, b, data)
			}
			if err != nil {
				t.Errorf("cache inconsistent: segment %v block %d: %v", id, b, err)
			}
		}
	}
}

// failedJob matches the job a failed fetch names.
var failedJob = regexp.MustCompile(`job ([0-9a-f]{12}) failed: `)

// fetchCase is one `redleader fetch` of TestFetch.
type fetchCase struct {
	name   string
	agent  *peer.Agent // nil: the test's default agent
	args   []string    // after "fetch"; OUT is the destination
	code   int
	stdout string // substring
	stderr string // substring
	cause  string // also a substring of stderr (the OS's word for it)
	older  bool   // an older file is at OUT before the fetch (else nothing)
	// After a failure (exitFail) the same agent fetches again (URL, ""
	// for the good file) and must get want: after fix, if set, mended the
	// origin.
	fix   func()
	again string
	want  []byte
}

// TestFetch runs `redleader fetch` against in-process agents and loopback
// origins: success, and each error of issue #10's Build 10 (404, refused,
// TLS failure, a file that changes mid-download, the agent's cache full,
// an unwritable destination, an expected SHA-256 that does not match) and
// the command's own refusals, each with its one-line message and exit
// code, nothing at the destination (no file, or an older file there
// untouched, and no temporary file beside it), the failed job's data gone
// from the agent, the agent still serving and fetching right afterwards,
// and in the end every block its cache holds verified.
func TestFetch(t *testing.T) {
	a := peertest.StartAgent(t, peertest.Config(t, 0, peertest.Options{}), false)
	const smallCap = 256 << 10
	capped := peertest.StartAgent(t, peertest.Config(t, 1, peertest.Options{
		Configure: func(_ int, c *config.Config) { c.Cache.MaxSize = "256KiB" }}), false)
	data := bytes.Repeat([]byte("0123456789abcdef"), 40_000) // 640 KB: more than capped's cache
	base, _ := testOrigin(t, data)

	// A second origin: a file that changes mid-download and a small one.
	v1 := randomBytes(content.SegmentSize+3*content.BlockSize+17, 1)
	v2 := append(bytes.Clone(v1[:content.SegmentSize]), randomBytes(len(v1)-content.SegmentSize, 2)...)
	changing := &changingFile{v1: v1, v2: v2, conditional: true}
	unconditional := &changingFile{v1: v1, v2: v2}
	small := randomBytes(100_000, 3)
	mux := http.NewServeMux()
	mux.Handle("/changing.bin", changing)
	mux.Handle("/unconditional.bin", unconditional)
	mux.HandleFunc("/small.bin", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"s"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(small))
	})
	other := httptest.NewServer(mux)
	t.Cleanup(other.Close)
	// An HTTPS origin whose certificate the agent does not trust.
	tlsSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}))
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshake errors are the point
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)

	noDir := filepath.Join(t.TempDir(), "missing", "f")
	aFile := filepath.Join(t.TempDir(), "file")
	os.WriteFile(aFile, nil, 0o644)
	tests := []fetchCase{
		{name: "whole file", args: []string{base + "/file.bin", "-o", "OUT"}, older: true,
			stdout: "sha256 " + sha256Hex(data) + ", from peers 0%, origin 100%, cache 0%"},
		{name: "expected sha256", args: []string{base + "/file.bin?sig=x", "-o", "OUT", "--sha256", strings.ToUpper(sha256Hex(data)),
			"--priority", "high", "-H", "Authorization: Bearer t0ken"}, older: true, stdout: "queued: " + base + "/file.bin?… (priority high)"},
		{name: "sha256 mismatch", args: []string{base + "/file.bin", "-o", "OUT", "--sha256", strings.Repeat("a", 64)}, code: exitFail, older: true,
			stderr: "content does not match the expected SHA-256: got " + sha256Hex(data) + ", want " + strings.Repeat("a", 64)},
		{name: "404", args: []string{base + "/missing.bin", "-o", "OUT"}, code: exitFail,
			stderr: base + "/missing.bin: origin has no such file (HTTP 404 Not Found)"},
		{name: "origin refused", args: []string{"http://" + loopback.ClosedAddr(t) + "/f", "-o", "OUT"}, code: exitFail, older: true,
			stderr: "origin refused the connection"},
		{name: "TLS failure", args: []string{tlsSrv.URL + "/file.bin", "-o", "OUT"}, code: exitFail,
			stderr: tlsSrv.URL + "/file.bin: TLS handshake with the origin failed: tls: failed to verify certificate: x509: certificate signed by unknown authority"},
		{name: "file changes mid-download", args: []string{other.URL + "/changing.bin", "-o", "OUT"}, code: exitFail, older: true,
			stderr: "GET " + other.URL + "/changing.bin: origin's file changed (validator mismatch): precondition failed (HTTP 412)",
			fix:    changing.fix, again: other.URL + "/changing.bin", want: v1},
		{name: "file changes mid-download, origin ignores If-Match", args: []string{other.URL + "/unconditional.bin", "-o", "OUT"}, code: exitFail,
			stderr: "GET " + other.URL + "/unconditional.bin: origin's file changed (validator mismatch): ETag \"v2\", identified \"v1\"",
			fix:    unconditional.fix, again: other.URL + "/unconditional.bin", want: v1},
		{name: "agent's cache full", agent: capped, args: []string{base + "/file.bin", "-o", "OUT"}, code: exitFail,
			stderr: "failed: cache: put block ", cause: ": cache full", again: other.URL + "/small.bin", want: small},
		{name: "no such directory", args: []string{base + "/file.bin", "-o", noDir}, code: exitFail,
			stderr: "cannot write " + noDir + ": ", cause: ": no such file or directory"},
		{name: "under a file", args: []string{base + "/file.bin", "-o", aFile + "/f"}, code: exitFail,
			stderr: "cannot write " + aFile + "/f: ", cause: ": not a directory"},
		{name: "no agent", args: []string{base + "/file.bin", "-o", "OUT", "--api", loopback.ClosedAddr(t)}, code: exitFail,
			stderr: "no redleader agent is running at"},
		{name: "no -o", args: []string{base + "/file.bin"}, code: exitConfig, stderr: "fetch needs -o FILE (or --detach)"},
		{name: "-o and --detach", args: []string{base + "/file.bin", "-o", "OUT", "--detach"}, code: exitConfig, stderr: "--detach writes no file"},
		{name: "bad priority", args: []string{base + "/file.bin", "-o", "OUT", "--priority", "none"}, code: exitConfig, stderr: `--priority "none"`},
		{name: "bad sha256", args: []string{base + "/file.bin", "-o", "OUT", "--sha256", "abc"}, code: exitConfig, stderr: "64 hex digits"},
		{name: "bad header", args: []string{base + "/file.bin", "-o", "OUT", "-H", "NoColon"}, code: exitConfig, stderr: "want 'Name: value'"},
		{name: "header the agent refuses", args: []string{base + "/file.bin", "-o", "OUT", "-H", "Range: bytes=1-"}, code: exitFail,
			stderr: "answered 400: bad job request: header Range is set by the agent itself"},
	}
	if os.Geteuid() != 0 { // root writes anywhere
		ro := t.TempDir()
		os.Chmod(ro, 0o500)
		t.Cleanup(func() { os.Chmod(ro, 0o700) })
		tests = append(tests, fetchCase{name: "read-only directory", args: []string{base + "/file.bin", "-o", filepath.Join(ro, "f")},
			code: exitFail, stderr: "cannot write " + filepath.Join(ro, "f") + ": ", cause: ": permission denied"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ag := a
			if tt.agent != nil {
				ag = tt.agent
			}
			addr, dataDir := ag.APIAddr(), ag.DataDir()
			dir := t.TempDir()
			out := filepath.Join(dir, "out.bin")
			if tt.older {
				if err := os.WriteFile(out, []byte("older file"), 0o640); err != nil {
					t.Fatal(err)
				}
			}
			args := []string{"fetch"}
			for _, arg := range tt.args {
				args = append(args, strings.ReplaceAll(arg, "OUT", out))
			}
			if !strings.Contains(strings.Join(args, " "), "--api") {
				args = append(args, "--api", addr)
			}
			args = append(args, "--data-dir", dataDir)
			code, stdout, stderr := runCLI(t, args...)
			if tt.code == exitFail && !strings.HasPrefix(stderr, "redleader: ") {
				t.Errorf("stderr %q", stderr)
			}
			if code != tt.code || !strings.Contains(stdout, tt.stdout) || !strings.Contains(stderr, tt.stderr) || !strings.Contains(stderr, tt.cause) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %d, %q, %q %q", code, stdout, stderr, tt.code, tt.stdout, tt.stderr, tt.cause)
			}
			got, err := os.ReadFile(out)
			wantFiles := []string(nil)
			if tt.older || tt.code == 0 {
				wantFiles = []string{"out.bin"}
			}
			switch {
			case tt.code == 0:
				fi, _ := os.Stat(out)
				if !bytes.Equal(got, data) || fi.Mode().Perm() != 0o640 {
					t.Errorf("destination: %d bytes, mode %v", len(got), fi.Mode().Perm())
				}
			case strings.Count(strings.TrimSpace(stderr), "\n") != 0 || strings.Contains(stderr, "t0ken"):
				t.Errorf("not one clean line: %q", stderr)
			case tt.older && string(got) != "older file":
				t.Errorf("destination changed on failure: %q", got)
			case !tt.older && !errors.Is(err, fs.ErrNotExist):
				t.Errorf("destination written on failure: %d bytes, %v", len(got), err)
			}
			if files := leftovers(t, dir); !slices.Equal(files, wantFiles) {
				t.Errorf("files left in the destination's directory: %q, want %q", files, wantFiles)
			}
			if m := failedJob.FindStringSubmatch(stderr); m == nil && strings.HasPrefix(stderr, "redleader: job ") {
				t.Errorf("no failed job named in %q", stderr)
			} else if m != nil {
				if _, err := os.Stat(filepath.Join(dataDir, "jobs", m[1], "data")); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("failed job %s left its data at the agent: %v", m[1], err)
				}
			}
			if code, _, stderr := runCLI(t, "status", "--api", addr); code != 0 {
				t.Fatalf("agent no longer serving: %s", stderr)
			}
			if tt.code != exitFail {
				return
			}
			if tt.fix != nil {
				tt.fix()
			}
			url, wantAgain := base+"/file.bin", data
			if tt.again != "" {
				url, wantAgain = tt.again, tt.want
			}
			again := filepath.Join(t.TempDir(), "again.bin")
			code, stdout, stderr = runCLI(t, "fetch", url, "-o", again, "--api", addr, "--data-dir", dataDir)
			if got, _ := os.ReadFile(again); code != 0 || !bytes.Equal(got, wantAgain) {
				t.Errorf("the agent fetches %s wrong after the failure: exit %d, %d bytes (want %d), stdout %q, stderr %q",
					url, code, len(got), len(wantAgain), stdout, stderr)
			}
		})
	}
	checkCache(t, a, 0)
	checkCache(t, capped, smallCap)
}

// TestFetchJSONAndDetach: fetch --json, fetch --detach with jobs get,
// and the jobs commands (list, show, cancel, rm).
func TestFetchJSONAndDetach(t *testing.T) {
	a := peertest.StartAgent(t, peertest.Config(t, 0, peertest.Options{}), false)
	g := []string{"--api", a.APIAddr(), "--data-dir", a.DataDir()}
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		return runCLI(t, append(args, g...)...)
	}
	data := bytes.Repeat([]byte("redleader "), 50_000)
	base, release := testOrigin(t, data)
	dir := t.TempDir()

	code, stdout, stderr := cli("fetch", base+"/file.bin", "-o", filepath.Join(dir, "a"), "--json")
	var res fetchResult
	if code != 0 || json.Unmarshal([]byte(stdout), &res) != nil || res.Job.State != "done" || res.Bytes != int64(len(data)) ||
		res.SHA256 != sha256Hex(data) || res.File != filepath.Join(dir, "a") {
		t.Fatalf("fetch --json: %d %q %q", code, stdout, stderr)
	}

	code, stdout, stderr = cli("fetch", base+"/file.bin", "--detach", "--priority", "low")
	id := strings.TrimSpace(stdout)
	if code != 0 || len(id) != 12 {
		t.Fatalf("fetch --detach: %d %q %q", code, stdout, stderr)
	}
	var detail api.JobDetail
	wait.For(t, 30*time.Second, "detached job done", func() bool {
		_, out, _ := cli("jobs", "show", id, "--json")
		return json.Unmarshal([]byte(out), &detail) == nil && detail.State == "done"
	})
	if len(detail.Segments) != 1 || detail.Segments[0].Source != "origin" || detail.Segments[0].Reason == "" {
		t.Fatalf("audit: %+v", detail.Segments)
	}
	reason := detail.Segments[0].Reason
	steps := []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr string
	}{
		{"list", []string{"jobs"}, 0, []string{res.Job.ID + "  done", id + "  done   low", "from peers 0%, origin 100%", base + "/file.bin"}, ""},
		{"show", []string{"jobs", "show", id[:6]}, 0, []string{"State:", "done", "0        0       488.3 KiB  origin  488.3 KiB  " + reasonText(reason),
			"origin 488.3 KiB (" + reason + " 488.3 KiB)"}, ""},
		{"get", []string{"jobs", "get", id, "-o", filepath.Join(dir, "b")}, 0, []string{"488.3 KiB, sha256 " + sha256Hex(data)}, ""},
		{"get without -o", []string{"jobs", "get", id}, exitConfig, nil, "needs -o FILE"},
		{"cancel a done job", []string{"jobs", "cancel", id}, exitFail, nil, "job " + id + " is already done (`redleader jobs rm " + id + "` removes it)"},
		{"rm", []string{"jobs", "rm", id}, 0, []string{"removed " + id}, ""},
		{"show removed", []string{"jobs", "show", id}, exitFail, nil, "answered 404: no such job"},
		{"get removed", []string{"jobs", "get", id, "-o", filepath.Join(dir, "c")}, exitFail, nil, "answered 404: no such job"},
	}
	for _, s := range steps {
		code, stdout, stderr := cli(s.args...)
		if code != s.code || !strings.Contains(stderr, s.stderr) {
			t.Errorf("%s: exit %d, stderr %q; want %d, %q", s.name, code, stderr, s.code, s.stderr)
			continue
		}
		for _, want := range s.stdout {
			if !strings.Contains(stdout, want) {
				t.Errorf("%s: stdout lacks %q:\n%s", s.name, want, stdout)
			}
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "b")); !bytes.Equal(b, data) {
		t.Error("jobs get wrote other bytes")
	}
	if files := leftovers(t, dir); strings.Join(files, " ") != "a b" {
		t.Errorf("files: %q", files)
	}

	// A running job: get refuses, cancel cancels.
	_, stdout, _ = cli("fetch", base+"/slow.bin", "--detach")
	slow := strings.TrimSpace(stdout)
	wait.For(t, 30*time.Second, "slow job running", func() bool {
		_, out, _ := cli("jobs", "show", slow, "--json")
		return strings.Contains(out, `"state": "running"`)
	})
	if code, _, stderr := cli("jobs", "get", slow, "-o", filepath.Join(dir, "d")); code != exitFail || !strings.Contains(stderr, "job "+slow+" running: -") {
		t.Errorf("get of a running job: %d %q", code, stderr)
	}
	if code, _, stderr := cli("jobs", "rm", slow); code != exitFail || !strings.Contains(stderr, "`redleader jobs cancel "+slow+"` first") {
		t.Errorf("rm of a running job: %d %q", code, stderr)
	}
	if code, stdout, stderr := cli("jobs", "cancel", slow); code != 0 || stdout != "cancelled "+slow+"\n" {
		t.Errorf("cancel: %d %q %q", code, stdout, stderr)
	}
	release()
	if code, stdout, _ := cli("jobs", "--json"); code != 0 || !strings.Contains(stdout, `"state": "cancelled"`) {
		t.Errorf("jobs --json after cancel: %q", stdout)
	}
	if files := leftovers(t, dir); strings.Join(files, " ") != "a b" {
		t.Errorf("files: %q", files)
	}
}

// fullFile is a destination file on a disk that fills up after room
// bytes.
type fullFile struct {
	*os.File
	room int
}

func (f *fullFile) Write(p []byte) (int, error) {
	if len(p) > f.room {
		n, _ := f.File.Write(p[:f.room])
		f.room = 0
		return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	f.room -= len(p)
	return f.File.Write(p)
}

// TestDestDiskFull: a destination that runs out of space fails with a
// line naming the cause and leaves nothing at the destination nor beside
// it; a stream cut short or with another digest likewise.
func TestDestDiskFull(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 1<<20)
	tests := []struct {
		name   string
		room   int
		src    io.Reader
		size   int64
		sum    string
		want   string
		wantIs error
	}{
		{"disk full", 100_000, bytes.NewReader(data), int64(len(data)), sha256Hex(data), "image.iso: no space left on device (nothing was written to it)", syscall.ENOSPC},
		{"cut short", len(data), bytes.NewReader(data[:1000]), int64(len(data)), "", "the agent sent 1000 bytes of 1048576", nil},
		{"other digest", len(data), bytes.NewReader(data), int64(len(data)), strings.Repeat("0", 64), "the job says 000", nil},
		{"broken stream", len(data), io.MultiReader(bytes.NewReader(data[:10]), iotestErr{}), -1, "", "read the content: agent gone", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "image.iso")
			d, err := openDest(path)
			if err != nil {
				t.Fatal(err)
			}
			d.f = &fullFile{File: d.f.(*os.File), room: tt.room}
			_, err = d.write(tt.src, tt.size, tt.sum)
			d.abort()
			if err == nil || !strings.Contains(err.Error(), tt.want) || (tt.wantIs != nil && !errors.Is(err, tt.wantIs)) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if files := leftovers(t, dir); len(files) != 0 {
				t.Errorf("left behind: %q", files)
			}
		})
	}
}

// TestFetchDestDiskFull: the destination's disk fills up while the CLI
// writes a done job's content streamed by a real agent (the code fetch and
// jobs get share, its file swapped for one that runs out of room after
// 100 KB; no test can fill a real disk in-process): the error names the
// destination and the cause in one line, nothing is left at the
// destination nor beside it, and the agent still serves the content right.
func TestFetchDestDiskFull(t *testing.T) {
	cfg := peertest.Config(t, 0, peertest.Options{})
	a := peertest.StartAgent(t, cfg, false)
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		return runCLI(t, append(args, "--api", a.APIAddr(), "--data-dir", a.DataDir())...)
	}
	data := bytes.Repeat([]byte("disk full "), 64_000)
	base, _ := testOrigin(t, data)
	code, stdout, stderr := cli("fetch", base+"/file.bin", "--detach")
	id := strings.TrimSpace(stdout)
	if code != 0 {
		t.Fatalf("fetch --detach: %d %q", code, stderr)
	}
	var job api.JobDetail
	wait.For(t, 30*time.Second, "job done", func() bool {
		_, out, _ := cli("jobs", "show", id, "--json")
		return json.Unmarshal([]byte(out), &job) == nil && job.Over()
	})
	if job.State != "done" {
		t.Fatalf("job %s: %s", job.State, job.Error)
	}
	tok, err := peer.ReadTokenFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := api.New(a.APIAddr(), api.WithToken(tok))
	dir := t.TempDir()
	path := filepath.Join(dir, "image.iso")
	d, err := openDest(path)
	if err != nil {
		t.Fatal(err)
	}
	d.f = &fullFile{File: d.f.(*os.File), room: 100_000}
	g := &globals{stdout: io.Discard, stderr: io.Discard}
	_, err = g.writeContent(t.Context(), c, job.JobInfo, d)
	d.abort()
	want := "cannot write " + path + ": no space left on device (nothing was written to it)"
	if err == nil || err.Error() != want || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("err = %v, want %q", err, want)
	}
	if files := leftovers(t, dir); len(files) != 0 {
		t.Errorf("left behind: %q", files)
	}
	good := filepath.Join(t.TempDir(), "good.iso")
	if code, _, stderr := cli("jobs", "get", id, "-o", good); code != 0 {
		t.Fatalf("jobs get after the failure: %d %q", code, stderr)
	}
	if got, _ := os.ReadFile(good); !bytes.Equal(got, data) {
		t.Errorf("jobs get after the failure wrote %d other bytes", len(got))
	}
	if code, _, stderr := cli("status"); code != 0 {
		t.Errorf("agent no longer serving: %s", stderr)
	}
	checkCache(t, a, 0)
}

type iotestErr struct{}

func (iotestErr) Read([]byte) (int, error) { return 0, errors.New("agent gone") }
