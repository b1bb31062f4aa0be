package service

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// decodePlist decodes a property list of dicts, arrays, strings, integers
// and booleans into Go values, checking its structure as it goes.
func decodePlist(t *testing.T, b []byte) map[string]any {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	var value func(start xml.StartElement) any
	next := func() (xml.StartElement, bool) {
		for {
			tok, err := d.Token()
			if err != nil {
				t.Fatalf("plist: %v", err)
			}
			switch tok := tok.(type) {
			case xml.StartElement:
				return tok, true
			case xml.EndElement:
				return xml.StartElement{}, false
			}
		}
	}
	value = func(start xml.StartElement) any {
		switch start.Name.Local {
		case "dict":
			m := map[string]any{}
			for {
				k, ok := next()
				if !ok {
					return m
				}
				if k.Name.Local != "key" {
					t.Fatalf("plist: <%s> where a <key> belongs", k.Name.Local)
				}
				var key string
				if err := d.DecodeElement(&key, &k); err != nil {
					t.Fatal(err)
				}
				v, ok := next()
				if !ok {
					t.Fatalf("plist: key %s without a value", key)
				}
				m[key] = value(v)
			}
		case "array":
			var a []any
			for {
				v, ok := next()
				if !ok {
					return a
				}
				a = append(a, value(v))
			}
		case "string":
			var s string
			if err := d.DecodeElement(&s, &start); err != nil {
				t.Fatal(err)
			}
			return s
		case "integer":
			var s string
			if err := d.DecodeElement(&s, &start); err != nil {
				t.Fatal(err)
			}
			n, err := strconv.Atoi(s)
			if err != nil {
				t.Fatalf("plist: integer %q", s)
			}
			return n
		case "true", "false":
			if err := d.Skip(); err != nil {
				t.Fatal(err)
			}
			return start.Name.Local == "true"
		}
		t.Fatalf("plist: unexpected <%s>", start.Name.Local)
		return nil
	}
	root, ok := next()
	if !ok || root.Name.Local != "plist" {
		t.Fatalf("plist: root <%s>", root.Name.Local)
	}
	top, ok := next()
	if !ok || top.Name.Local != "dict" {
		t.Fatalf("plist: top-level <%s>, want <dict>", top.Name.Local)
	}
	m := value(top).(map[string]any)
	// Then only </plist> and white space.
	ends := 0
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("plist: %v", err)
		}
		if e, ok := tok.(xml.EndElement); ok && e.Name.Local == "plist" {
			ends++
			continue
		}
		if !isSpace(tok) {
			t.Fatalf("plist: %v after the top-level dict", tok)
		}
	}
	if ends != 1 {
		t.Fatalf("plist: %d </plist>", ends)
	}
	return m
}

func isSpace(tok xml.Token) bool {
	cd, ok := tok.(xml.CharData)
	return ok && strings.TrimSpace(string(cd)) == ""
}

func TestLaunchdPlist(t *testing.T) {
	for _, bin := range []string{"/usr/local/bin/redleader", "/Applications/R&D <tools>/redleader"} {
		p := LaunchdPlist(PlistParams{Binary: bin, Config: LaunchdConfigPath, DataDir: LaunchdDataDir, Log: LaunchdLogPath})
		got := decodePlist(t, p)
		want := map[string]any{
			"Label":             LaunchdLabel,
			"ProgramArguments":  []any{bin, "agent", "--config", "/etc/redleader/redleader.yaml", "--data-dir", "/Library/Application Support/redleader"},
			"RunAtLoad":         true,
			"KeepAlive":         map[string]any{"SuccessfulExit": false},
			"ThrottleInterval":  5,
			"ExitTimeOut":       30,
			"Umask":             0o077,
			"StandardOutPath":   "/Library/Logs/redleader.log",
			"StandardErrorPath": "/Library/Logs/redleader.log",
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("plist for %s decodes to\n%#v\nwant\n%#v", bin, got, want)
		}
		if plutil, err := exec.LookPath("plutil"); err == nil { // macOS
			path := filepath.Join(t.TempDir(), "x.plist")
			if err := os.WriteFile(path, p, 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(plutil, "-lint", path).CombinedOutput(); err != nil {
				t.Errorf("plutil -lint: %v: %s", err, out)
			}
		}
	}
}

// fakeLaunchctl is launchctl with one daemon's loaded state.
type fakeLaunchctl struct {
	loaded bool
	state  string
	calls  []string
}

func (f *fakeLaunchctl) run(_ context.Context, name string, args ...string) (string, error) {
	f.calls = append(f.calls, strings.Join(append([]string{name}, args...), " "))
	if name != "launchctl" || len(args) == 0 {
		return "", fmt.Errorf("unexpected %s %q", name, args)
	}
	switch args[0] {
	case "print":
		if !f.loaded {
			return "Could not find service \"" + LaunchdLabel + "\" in domain for system\n", errExit
		}
		return "system/" + LaunchdLabel + " = {\n\tactive count = 1\n\tstate = " + f.state + "\n\tpid = 77\n\tlast exit code = 0\n\tendpoints = {\n\t\tstate = nested\n\t}\n}\n", nil
	case "enable":
	case "bootstrap":
		if f.loaded {
			return "Bootstrap failed: 5: Input/output error\n", errExit
		}
		f.loaded, f.state = true, "running"
	case "bootout":
		f.loaded = false
	default:
		return "", fmt.Errorf("unexpected launchctl %q", args)
	}
	return "", nil
}

func (f *fakeLaunchctl) mutations() []string {
	var out []string
	for _, c := range f.calls {
		if !strings.HasPrefix(c, "launchctl print") {
			out = append(out, c)
		}
	}
	f.calls = nil
	return out
}

func TestLaunchdInstallIdempotent(t *testing.T) {
	ctx := context.Background()
	f := &fakeLaunchctl{}
	var out bytes.Buffer
	l := &Launchd{Root: t.TempDir(), Binary: "/usr/local/bin/redleader", Run: f.run, Out: &out}
	target := "system/" + LaunchdLabel

	if err := l.Install(ctx, InstallOptions{}); err != nil {
		t.Fatalf("install: %v", err)
	}
	if got, want := f.mutations(), []string{"launchctl enable " + target, "launchctl bootstrap system " + LaunchdPlistPath}; !slices.Equal(got, want) {
		t.Errorf("first install ran %q, want %q", got, want)
	}
	if b, err := os.ReadFile(l.path(LaunchdPlistPath)); err != nil || !strings.Contains(string(b), "<string>/usr/local/bin/redleader</string>") {
		t.Errorf("plist %s: %v", b, err)
	}
	if b, err := os.ReadFile(l.path(LaunchdConfigPath)); err != nil || !bytes.Equal(b, GeneratedConfig(LaunchdDataDir)) {
		t.Errorf("config %q: %v", b, err)
	}

	out.Reset()
	if err := l.Install(ctx, InstallOptions{}); err != nil {
		t.Fatalf("second install: %v", err)
	}
	if got := f.mutations(); len(got) != 0 {
		t.Errorf("second install ran %q", got)
	}
	if !strings.Contains(out.String(), "nothing changed") {
		t.Errorf("second install output:\n%s", out.String())
	}

	// A changed plist: booted out, then bootstrapped again.
	l.Binary = "/opt/redleader/redleader"
	if err := l.Install(ctx, InstallOptions{}); err != nil {
		t.Fatalf("install with a new binary: %v", err)
	}
	if got, want := f.mutations(), []string{"launchctl bootout " + target, "launchctl enable " + target, "launchctl bootstrap system " + LaunchdPlistPath}; !slices.Equal(got, want) {
		t.Errorf("install with a new binary ran %q, want %q", got, want)
	}

	out.Reset()
	if err := l.Status(ctx); err != nil {
		t.Fatalf("status: %v", err)
	}
	if !strings.Contains(out.String(), "state:     running, pid 77, last exit code 0\n") {
		t.Errorf("status output:\n%s", out.String())
	}

	if err := os.MkdirAll(l.path(LaunchdDataDir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := l.Uninstall(ctx, UninstallOptions{}); err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	if got, want := f.mutations(), []string{"launchctl bootout " + target}; !slices.Equal(got, want) {
		t.Errorf("uninstall ran %q, want %q", got, want)
	}
	if exists(l.path(LaunchdPlistPath)) || !exists(l.path(LaunchdDataDir)) || !exists(l.path(LaunchdConfigPath)) {
		t.Error("uninstall: plist left, or data dir or config removed")
	}
	if err := l.Status(ctx); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("status after uninstall: %v", err)
	}
	if err := l.Uninstall(ctx, UninstallOptions{Purge: true}); err != nil {
		t.Fatalf("uninstall --purge: %v", err)
	}
	if exists(l.path(LaunchdDataDir)) || exists(l.path(LaunchdConfigPath)) {
		t.Error("uninstall --purge left the data dir or the config")
	}
}
