//go:build linux

package lab

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

func TestLiteralAddr(t *testing.T) {
	for _, tc := range []struct {
		network, addr, want string
		err                 error
	}{
		{"tcp", "10.77.1.10:80", "10.77.1.10:80", nil},
		{"tcp", ":0", ":0", nil},
		{"tcp4", "localhost:7380", "127.0.0.1:7380", nil},
		{"tcp6", "localhost:7380", "[::1]:7380", nil},
		{"udp", "[ff02::c]:3702", "[ff02::c]:3702", nil},
		{"tcp", "example.com:80", "", ErrNotLiteral},
		{"tcp", "no-port", "", nil}, // split error, checked below
		{"unix", "/tmp/x.sock", "/tmp/x.sock", nil},
	} {
		got, err := literalAddr(tc.network, tc.addr)
		switch {
		case tc.addr == "no-port":
			if err == nil {
				t.Errorf("%s %q: no error", tc.network, tc.addr)
			}
		case !errors.Is(err, tc.err) || got != tc.want:
			t.Errorf("%s %q = %q, %v; want %q, %v", tc.network, tc.addr, got, err, tc.want, tc.err)
		}
	}
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Options
		ok   bool
	}{
		{"zero", Options{}, true},
		{"max subnets", Options{Subnets: maxSubnets}, true},
		{"negative subnets", Options{Subnets: -1}, false},
		{"too many subnets", Options{Subnets: maxSubnets + 1}, false},
		{"space in rate", Options{WANRate: "8 mbit"}, false},
		{"shaping off", Options{WANRate: "off"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := tc.in.withDefaults()
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrOptions) {
				t.Errorf("err = %v, want ErrOptions", err)
			}
			if err == nil && (o.Subnets == 0 || o.WANRate == "" || o.WANBurst == "" || o.WANLatency == "") {
				t.Errorf("defaults missing: %+v", o)
			}
		})
	}
}

func TestLabIDOf(t *testing.T) {
	for _, tc := range []struct {
		ns, id string
		ok     bool
	}{
		{"rllab3fa9c1-r", "rllab3fa9c1", true},
		{"rllab3fa9c1-h12", "rllab3fa9c1", true},
		{"rllab3fa9c1", "", false},
		{"rllab3f-r", "", false},
		{"other-r", "", false},
	} {
		id, ok := labIDOf(tc.ns)
		if id != tc.id || ok != tc.ok {
			t.Errorf("labIDOf(%q) = %q, %v; want %q, %v", tc.ns, id, ok, tc.id, tc.ok)
		}
	}
}

func TestCleanStale(t *testing.T) {
	t.Parallel()
	live := New(t, Options{Subnets: 1, WANRate: "off"})
	live.AddHost(1)

	// A crashed run with a lock file nobody holds, and one whose lock file
	// is gone: both are stale.
	unlocked, err := randomID()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(lockDir, unlocked+".lock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	nolock, err := randomID()
	if err != nil {
		t.Fatal(err)
	}
	stale := []string{unlocked + "-r", unlocked + "-h1", nolock + "-o"}
	for _, ns := range stale {
		if err := run("ip", "netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = deleteNS(ns) })
	}
	// A process left running in a stale namespace.
	orphan := exec.Command("ip", "netns", "exec", stale[0], "sleep", "600")
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}

	removed, err := CleanStale()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range stale {
		if !slices.Contains(removed, ns) {
			t.Errorf("stale %s not removed (removed %v)", ns, removed)
		}
		if _, err := os.Stat(filepath.Join(netnsDir, ns)); err == nil {
			t.Errorf("stale %s still exists", ns)
		}
	}
	for _, ns := range live.Namespaces() {
		if slices.Contains(removed, ns) {
			t.Errorf("live namespace %s removed", ns)
		}
		if _, err := os.Stat(filepath.Join(netnsDir, ns)); err != nil {
			t.Errorf("live namespace %s: %v", ns, err)
		}
	}
	if _, err := os.Stat(filepath.Join(lockDir, unlocked+".lock")); err == nil {
		t.Errorf("stale lock file left")
	}
	if err := orphan.Wait(); err == nil {
		t.Errorf("orphan in stale namespace was not killed")
	}
}

func TestBuildOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Go programs")
	}
	module := func(t *testing.T, main string) string {
		t.Helper()
		root := t.TempDir()
		if err := os.MkdirAll(filepath.Join(root, "cmd", "redleader", "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		files := map[string]string{
			"go.mod":                  "module example.com/fake\n\ngo 1.21\n",
			"cmd/redleader/main.go":   main,
			"cmd/redleader/sub/x.txt": "",
		}
		for name, body := range files {
			if err := os.WriteFile(filepath.Join(root, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return filepath.Join(root, "cmd", "redleader", "sub") // found from below the root
	}

	t.Run("builds once", func(t *testing.T) {
		from := module(t, "package main\n\nfunc main() { println(\"fake redleader\") }\n")
		dir := t.TempDir()
		bin, err := buildOnce(dir, from)
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin).CombinedOutput()
		if err != nil || string(out) != "fake redleader\n" {
			t.Fatalf("run %s: %q, %v", bin, out, err)
		}
		before, err := os.Stat(bin)
		if err != nil {
			t.Fatal(err)
		}
		again, err := buildOnce(dir, from)
		if err != nil || again != bin {
			t.Fatalf("second buildOnce = %q, %v", again, err)
		}
		if after, err := os.Stat(bin); err != nil || !after.ModTime().Equal(before.ModTime()) {
			t.Errorf("binary rebuilt on second call")
		}
	})
	t.Run("failure is remembered", func(t *testing.T) {
		from := module(t, "package main\n\nfunc main() { undefined() }\n")
		dir := t.TempDir()
		_, err1 := buildOnce(dir, from)
		_, err2 := buildOnce(dir, from)
		if err1 == nil || err2 == nil || err1.Error() != err2.Error() {
			t.Errorf("errors %v / %v, want the same build error twice", err1, err2)
		}
	})
}
