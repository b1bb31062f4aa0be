package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/internal/loopback"
	"github.com/redleader-p2p/redleader/internal/wait"
	"github.com/redleader-p2p/redleader/peer/api"
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

// TestFetch runs `redleader fetch` against an in-process agent and a
// loopback origin: success, and each error with its one-line message,
// exit code, nothing at the destination (an older file there untouched)
// and the agent still serving.
func TestFetch(t *testing.T) {
	a := peertest.StartAgent(t, peertest.Config(t, 0, peertest.Options{}), false)
	addr, dataDir := a.APIAddr(), a.DataDir()
	data := bytes.Repeat([]byte("0123456789abcdef"), 40_000) // 640 KB
	base, _ := testOrigin(t, data)
	noDir := filepath.Join(t.TempDir(), "missing", "f")
	aFile := filepath.Join(t.TempDir(), "file")
	os.WriteFile(aFile, nil, 0o644)
	tests := []struct {
		name   string
		args   []string // after "fetch"; OUT is the destination
		code   int
		stdout string // substring
		stderr string // substring
	}{
		{name: "whole file", args: []string{base + "/file.bin", "-o", "OUT"},
			stdout: "sha256 " + sha256Hex(data) + ", from peers 0%, origin 100%, cache 0%"},
		{name: "expected sha256", args: []string{base + "/file.bin?sig=x", "-o", "OUT", "--sha256", strings.ToUpper(sha256Hex(data)),
			"--priority", "high", "-H", "Authorization: Bearer t0ken"}, stdout: "queued: " + base + "/file.bin?… (priority high)"},
		{name: "sha256 mismatch", args: []string{base + "/file.bin", "-o", "OUT", "--sha256", strings.Repeat("a", 64)}, code: exitFail,
			stderr: "content does not match the expected SHA-256: got " + sha256Hex(data) + ", want " + strings.Repeat("a", 64)},
		{name: "404", args: []string{base + "/missing.bin", "-o", "OUT"}, code: exitFail,
			stderr: base + "/missing.bin: origin has no such file"},
		{name: "origin refused", args: []string{"http://" + loopback.ClosedAddr(t) + "/f", "-o", "OUT"}, code: exitFail,
			stderr: "origin refused the connection"},
		{name: "no such directory", args: []string{base + "/file.bin", "-o", noDir}, code: exitFail,
			stderr: "cannot write " + noDir + ": open "},
		{name: "under a file", args: []string{base + "/file.bin", "-o", aFile + "/f"}, code: exitFail,
			stderr: "cannot write " + aFile + "/f: open "},
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
		tests = append(tests, struct {
			name   string
			args   []string
			code   int
			stdout string
			stderr string
		}{name: "read-only directory", args: []string{base + "/file.bin", "-o", filepath.Join(ro, "f")}, code: exitFail,
			stderr: "permission denied"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "out.bin")
			if err := os.WriteFile(out, []byte("older file"), 0o640); err != nil {
				t.Fatal(err)
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
			if code != tt.code || !strings.Contains(stdout, tt.stdout) || !strings.Contains(stderr, tt.stderr) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %d, %q, %q", code, stdout, stderr, tt.code, tt.stdout, tt.stderr)
			}
			got, _ := os.ReadFile(out)
			if tt.code == 0 {
				fi, _ := os.Stat(out)
				if !bytes.Equal(got, data) || fi.Mode().Perm() != 0o640 {
					t.Errorf("destination: %d bytes, mode %v", len(got), fi.Mode().Perm())
				}
			} else {
				if strings.Count(strings.TrimSpace(stderr), "\n") != 0 || strings.Contains(stderr, "t0ken") {
					t.Errorf("not one clean line: %q", stderr)
				}
				if string(got) != "older file" {
					t.Errorf("destination changed on failure: %q", got)
				}
			}
			if files := leftovers(t, dir); len(files) != 1 {
				t.Errorf("files left in the destination's directory: %q", files)
			}
			if code, _, stderr := runCLI(t, "status", "--api", addr); code != 0 {
				t.Errorf("agent no longer serving: %s", stderr)
			}
		})
	}
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

type iotestErr struct{}

func (iotestErr) Read([]byte) (int, error) { return 0, errors.New("agent gone") }
