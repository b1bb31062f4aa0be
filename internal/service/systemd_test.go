package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/redleader-p2p/redleader/config"
)

// unitDirectives parses a unit file: section → key → values, in order.
func unitDirectives(t *testing.T, unit string) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{}
	section := ""
	for _, line := range strings.Split(unit, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("unit line %q: not key=value in a section", line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

func TestSystemdUnitDirectives(t *testing.T) {
	unit := SystemdUnit(UnitParams{Binary: "/usr/local/bin/redleader", Config: "/etc/redleader/redleader.yaml", DataDir: SystemdDataDir, Version: "v1.2.3"})
	svc := unitDirectives(t, unit)["Service"]
	want := map[string]string{
		"ExecStart":             "/usr/local/bin/redleader agent --config /etc/redleader/redleader.yaml --data-dir /var/lib/redleader",
		"StateDirectory":        "redleader",
		"DynamicUser":           "yes",
		"Restart":               "on-failure",
		"NoNewPrivileges":       "yes",
		"ProtectSystem":         "strict",
		"ProtectHome":           "yes",
		"PrivateTmp":            "yes",
		"KillSignal":            "SIGTERM",
		"TimeoutStopSec":        "30",
		"ExecReload":            "/bin/kill -HUP $MAINPID",
		"CapabilityBoundingSet": "",
	}
	for k, v := range want {
		if got := svc[k]; len(got) != 1 || got[0] != v {
			t.Errorf("[Service] %s = %q, want [%q]", k, got, v)
		}
	}
	// StateDirectory is the only writable path: no ReadWritePaths.
	if rw := svc["ReadWritePaths"]; len(rw) != 0 {
		t.Errorf("ReadWritePaths = %q, want none", rw)
	}
	if got := unitDirectives(t, unit)["Install"]["WantedBy"]; !slices.Equal(got, []string{"multi-user.target"}) {
		t.Errorf("WantedBy = %q", got)
	}
}

// TestDataDirAgreesWithCLI: the CLI run as root picks the service's data
// dir by default, so it finds the API token with no flag.
func TestDataDirAgreesWithCLI(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("config.DefaultDataDir differs for other users; run as root")
	}
	want := map[string]string{"linux": SystemdDataDir, "darwin": LaunchdDataDir}[runtime.GOOS]
	if want == "" {
		t.Skipf("no unix service layout on %s", runtime.GOOS)
	}
	if got := config.DefaultDataDir(); got != want {
		t.Errorf("config.DefaultDataDir() for root = %s, the service's data dir is %s", got, want)
	}
}

func TestGeneratedConfigLoads(t *testing.T) {
	for _, dir := range []string{SystemdDataDir, LaunchdDataDir, `C:\ProgramData\redleader`} {
		path := filepath.Join(t.TempDir(), "redleader.yaml")
		if err := os.WriteFile(path, GeneratedConfig(dir), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(path, nil, nil)
		if err != nil {
			t.Fatalf("generated config for %s: %v", dir, err)
		}
		if cfg.DataDir != dir {
			t.Errorf("generated config: data_dir %q, want %q", cfg.DataDir, dir)
		}
		if err := checkConfig(path, dir); err != nil {
			t.Errorf("checkConfig(generated): %v", err)
		}
	}
}

// verifyUnit runs systemd-analyze verify on unit (as redleader.service)
// and returns what it says about the unit, if anything.
func verifyUnit(t *testing.T, unit string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, SystemdUnitName)
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	var complaints []string
	for _, l := range strings.Split(string(out), "\n") {
		// Lines about other units (the host's) are not ours to judge.
		if strings.Contains(l, SystemdUnitName) || strings.Contains(l, path) {
			complaints = append(complaints, l)
		}
	}
	if err != nil {
		complaints = append(complaints, fmt.Sprintf("exit: %v: %s", err, out))
	}
	return strings.Join(complaints, "\n")
}

// TestSystemdAnalyzeVerify: systemd-analyze verify accepts the generated
// unit without a warning, and the check does reject a bad unit.
func TestSystemdAnalyzeVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed (.ci/run installs systemd)")
	}
	bin, err := os.Executable() // an executable file: verify checks ExecStart's
	if err != nil {
		t.Fatal(err)
	}
	unit := SystemdUnit(UnitParams{Binary: bin, Config: "/etc/redleader/redleader.yaml", DataDir: SystemdDataDir, Version: "test"})
	for _, tc := range []struct {
		name string
		unit string
		ok   bool
	}{
		{"generated", unit, true},
		{"unknown key", strings.Replace(unit, "[Service]\n", "[Service]\nProtectEverything=yes\n", 1), false},
		{"missing binary", strings.ReplaceAll(unit, bin, "/nonexistent/redleader"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := verifyUnit(t, tc.unit)
			if tc.ok && got != "" {
				t.Errorf("systemd-analyze verify complains:\n%s", got)
			}
			if !tc.ok && got == "" {
				t.Errorf("systemd-analyze verify accepted a bad unit")
			}
		})
	}
}

// fakeSystemctl is systemctl with a service's enabled/active state.
type fakeSystemctl struct {
	enabled, active bool
	failStart       bool // the agent dies at once after a start
	calls           []string
}

var errExit = errors.New("exit status 3")

func (f *fakeSystemctl) run(_ context.Context, name string, args ...string) (string, error) {
	f.calls = append(f.calls, strings.Join(append([]string{name}, args...), " "))
	if name != "systemctl" || len(args) == 0 {
		return "", fmt.Errorf("unexpected command %s %q", name, args)
	}
	now := slices.Contains(args, "--now")
	switch args[0] {
	case "is-enabled":
		if f.enabled {
			return "enabled\n", nil
		}
		return "disabled\n", errExit
	case "is-active":
		switch {
		case f.active:
			return "active\n", nil
		case f.failStart:
			return "failed\n", errExit
		}
		return "inactive\n", errExit
	case "enable":
		f.enabled = true
		if now {
			f.active = !f.failStart
		}
	case "restart":
		f.active = !f.failStart
	case "disable":
		f.enabled = false
		if now {
			f.active = false
		}
	case "show":
		if !f.enabled && !f.active {
			return "LoadState=not-found\nActiveState=inactive\n", nil
		}
		state := map[bool]string{true: "active", false: "inactive"}[f.active]
		return "LoadState=loaded\nUnitFileState=enabled\nActiveState=" + state + "\nSubState=running\nMainPID=42\nNRestarts=0\n", nil
	case "daemon-reload", "reset-failed":
	default:
		return "", fmt.Errorf("unexpected systemctl %q", args)
	}
	return "", nil
}

// mutations are the calls that change something (not is-active, show...).
func (f *fakeSystemctl) mutations() []string {
	var out []string
	for _, c := range f.calls {
		if !strings.HasPrefix(c, "systemctl is-") && !strings.HasPrefix(c, "systemctl show") {
			out = append(out, c)
		}
	}
	f.calls = nil
	return out
}

func newTestSystemd(t *testing.T, f *fakeSystemctl) (*Systemd, *bytes.Buffer) {
	var out bytes.Buffer
	return &Systemd{Root: t.TempDir(), Binary: "/usr/local/bin/redleader", Version: "test", Run: f.run, Out: &out}, &out
}

func TestSystemdInstallIdempotent(t *testing.T) {
	ctx := context.Background()
	f := &fakeSystemctl{}
	s, out := newTestSystemd(t, f)

	if err := s.Install(ctx, InstallOptions{}); err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	if got, want := f.mutations(), []string{"systemctl daemon-reload", "systemctl enable --now redleader.service"}; !slices.Equal(got, want) {
		t.Errorf("first install ran %q, want %q", got, want)
	}
	for _, w := range []string{"wrote /etc/redleader/redleader.yaml", "wrote " + SystemdUnitPath, "is running"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("first install output lacks %q:\n%s", w, out)
		}
	}
	unit, err := os.ReadFile(s.path(SystemdUnitPath))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "ExecStart=/usr/local/bin/redleader agent --config /etc/redleader/redleader.yaml --data-dir /var/lib/redleader\n") {
		t.Errorf("unit's ExecStart:\n%s", unit)
	}
	cfg, err := os.ReadFile(s.path(SystemdConfigPath))
	if err != nil || !bytes.Equal(cfg, GeneratedConfig(SystemdDataDir)) {
		t.Errorf("config %q, %v; want the generated one", cfg, err)
	}

	// Again: nothing to do, and it says so.
	out.Reset()
	if err := s.Install(ctx, InstallOptions{}); err != nil {
		t.Fatalf("second install: %v", err)
	}
	if got := f.mutations(); len(got) != 0 {
		t.Errorf("second install ran %q, want nothing", got)
	}
	if !strings.Contains(out.String(), "nothing changed") || strings.Contains(out.String(), "wrote") {
		t.Errorf("second install output:\n%s", out)
	}

	// An admin's edited config is kept.
	edited := append(GeneratedConfig(SystemdDataDir), "log_level: debug\n"...)
	if err := os.WriteFile(s.path(SystemdConfigPath), edited, 0o644); err != nil {
		t.Fatal(err)
	}
	// A new binary path changes the unit: reload and restart.
	s.Binary = "/opt/redleader/bin/redleader"
	out.Reset()
	if err := s.Install(ctx, InstallOptions{}); err != nil {
		t.Fatalf("install with a new binary: %v", err)
	}
	if got, want := f.mutations(), []string{"systemctl daemon-reload", "systemctl restart redleader.service"}; !slices.Equal(got, want) {
		t.Errorf("install with a new binary ran %q, want %q", got, want)
	}
	if got, _ := os.ReadFile(s.path(SystemdConfigPath)); !bytes.Equal(got, edited) {
		t.Errorf("install rewrote the admin's config: %q", got)
	}

	// Uninstall keeps the data dir and the config.
	token := s.path(filepath.Join(SystemdDataDir, "api-token"))
	if err := os.MkdirAll(filepath.Dir(token), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(token, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := s.Uninstall(ctx, UninstallOptions{}); err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	if got, want := f.mutations(), []string{"systemctl disable --now redleader.service", "systemctl daemon-reload", "systemctl reset-failed redleader.service"}; !slices.Equal(got, want) {
		t.Errorf("uninstall ran %q, want %q", got, want)
	}
	if exists(s.path(SystemdUnitPath)) {
		t.Error("uninstall left the unit")
	}
	if !exists(token) || !exists(s.path(SystemdConfigPath)) {
		t.Error("uninstall without --purge removed the data dir or the config")
	}
	if !strings.Contains(out.String(), "kept /var/lib/redleader (--purge removes it)") {
		t.Errorf("uninstall output:\n%s", out)
	}

	// Purge: the data dir (and DynamicUser's private dir) and the config go.
	private := s.path("/var/lib/private/redleader")
	if err := os.MkdirAll(private, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := s.Uninstall(ctx, UninstallOptions{Purge: true}); err != nil {
		t.Fatalf("uninstall --purge: %v", err)
	}
	for _, p := range []string{s.path(SystemdDataDir), private, s.path(SystemdConfigPath), s.path("/etc/redleader")} {
		if exists(p) {
			t.Errorf("uninstall --purge left %s", p)
		}
	}
}

func TestSystemdInstallFailedStart(t *testing.T) {
	f := &fakeSystemctl{failStart: true}
	s, _ := newTestSystemd(t, f)
	err := s.Install(context.Background(), InstallOptions{})
	if err == nil || !strings.Contains(err.Error(), "journalctl -u redleader.service") {
		t.Fatalf("install of an agent that dies at once: %v, want an error pointing at journalctl", err)
	}
}

func TestSystemdInstallRefuses(t *testing.T) {
	write := func(s *Systemd, path, text string) string {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(s.path(path)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(s.path(path), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, tc := range []struct {
		name    string
		binary  string
		config  string // written under /srv/rl.yaml when not empty
		cfgPath string // --config, when not /srv/rl.yaml
		want    string // in the error; "" = installs
	}{
		{name: "binary in a home", binary: "/home/ann/bin/redleader", want: "sandbox hides /home"},
		{name: "binary in /tmp", binary: "/tmp/redleader", want: "sandbox hides /tmp"},
		{name: "config in a home", cfgPath: "/root/rl.yaml", want: "sandbox hides /root"},
		{name: "config naming another data dir", config: "data_dir: /srv/rl\n", want: "the service keeps its data in /var/lib/redleader"},
		{name: "invalid config", config: "log_level: loud\n", want: "log_level"},
		{name: "unknown key", config: "colour: red\n", want: "colour"},
		{name: "config naming the service's data dir", config: "data_dir: /var/lib/redleader\nlog_level: debug\n"},
		{name: "config without data_dir", config: "log_level: warn\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestSystemd(t, &fakeSystemctl{})
			if tc.binary != "" {
				s.Binary = tc.binary
			}
			var o InstallOptions
			switch {
			case tc.cfgPath != "":
				o.ConfigFile = tc.cfgPath
			case tc.config != "":
				o.ConfigFile = write(s, "/srv/rl.yaml", tc.config) // under s.Root, named as the unit names it
			}
			err := s.Install(context.Background(), o)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("install: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("install: %v, want an error with %q", err, tc.want)
			case tc.want != "" && exists(s.path(SystemdUnitPath)):
				t.Error("a refused install wrote the unit")
			}
			if tc.want == "" {
				unit, _ := os.ReadFile(s.path(SystemdUnitPath))
				if !strings.Contains(string(unit), "--config /srv/rl.yaml --data-dir /var/lib/redleader\n") {
					t.Errorf("unit does not run the admin's config:\n%s", unit)
				}
			}
		})
	}
}

func TestSystemdStatus(t *testing.T) {
	ctx := context.Background()
	f := &fakeSystemctl{}
	s, out := newTestSystemd(t, f)
	if err := s.Status(ctx); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("status before install: %v, want ErrNotInstalled", err)
	}
	if err := s.Install(ctx, InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := s.Status(ctx); err != nil {
		t.Fatalf("status: %v", err)
	}
	if !strings.Contains(out.String(), "active (running), pid 42") || !strings.Contains(out.String(), "data dir:  /var/lib/redleader") {
		t.Errorf("status output:\n%s", out)
	}
	f.active = false
	if err := s.Status(ctx); !errors.Is(err, ErrNotRunning) {
		t.Errorf("status of a stopped service: %v, want ErrNotRunning", err)
	}
}
