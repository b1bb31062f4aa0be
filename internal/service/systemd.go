package service

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"
)

// Linux layout of the service. The data dir is the unit's StateDirectory
// and config.DefaultDataDir for root, so `sudo redleader …` finds the
// service's API token with no flag.
const (
	SystemdUnitName   = Name + ".service"
	SystemdUnitPath   = "/etc/systemd/system/" + SystemdUnitName
	SystemdConfigPath = "/etc/redleader/redleader.yaml"
	SystemdDataDir    = "/var/lib/redleader"
	// SystemdStopTimeout bounds a graceful stop (hand over the Red Leader
	// seat, leave the pool) before systemd kills the agent.
	SystemdStopTimeout = 30 * time.Second
)

// UnitParams are the parts of the systemd unit that vary.
type UnitParams struct {
	Binary  string // absolute path of the redleader binary
	Config  string // the config file the agent runs with
	DataDir string // SystemdDataDir: /var/lib/<StateDirectory>
	Version string // redleader version, for the header comment
}

// SystemdUnit is the unit file. The agent runs as a dynamic user (no
// account to create, no root: its ports are all above 1024), writes only
// its StateDirectory, sees no home directories and a private /tmp, and
// stops gracefully on SIGTERM. ExecReload sends SIGHUP: the agent re-reads
// its config.
func SystemdUnit(p UnitParams) string {
	state := strings.TrimPrefix(p.DataDir, "/var/lib/")
	var b strings.Builder
	w := func(s string, args ...any) { fmt.Fprintf(&b, s+"\n", args...) }
	w("# Written by `redleader service install` (redleader %s); `redleader service install` rewrites it.", p.Version)
	w("# Local changes belong in a drop-in: systemctl edit %s", SystemdUnitName)
	w("[Unit]")
	w("Description=redleader peer-to-peer content distribution agent")
	w("Documentation=https://github.com/redleader-p2p/redleader")
	w("Wants=network-online.target")
	w("After=network-online.target")
	w("")
	w("[Service]")
	w("Type=simple")
	w("ExecStart=%s agent --config %s --data-dir %s", p.Binary, p.Config, p.DataDir)
	w("ExecReload=/bin/kill -HUP $MAINPID")
	w("KillSignal=SIGTERM")
	w("TimeoutStopSec=%d", int(SystemdStopTimeout/time.Second))
	w("Restart=on-failure")
	w("RestartSec=5")
	w("# Its own user, allocated by systemd; data in /var/lib/%s (0700), the only writable path.", state)
	w("DynamicUser=yes")
	w("StateDirectory=%s", state)
	w("StateDirectoryMode=0700")
	w("UMask=0077")
	w("# Hardening: the agent reads no user's files (the CLI does) and needs no privilege.")
	w("NoNewPrivileges=yes")
	w("ProtectSystem=strict")
	w("ProtectHome=yes")
	w("PrivateTmp=yes")
	w("PrivateDevices=yes")
	w("PrivateMounts=yes")
	w("ProtectProc=invisible")
	w("ProtectKernelTunables=yes")
	w("ProtectKernelModules=yes")
	w("ProtectKernelLogs=yes")
	w("ProtectControlGroups=yes")
	w("ProtectClock=yes")
	w("ProtectHostname=yes")
	w("RestrictNamespaces=yes")
	w("RestrictRealtime=yes")
	w("RestrictSUIDSGID=yes")
	w("LockPersonality=yes")
	w("MemoryDenyWriteExecute=yes")
	w("RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK")
	w("SystemCallArchitectures=native")
	w("CapabilityBoundingSet=")
	w("AmbientCapabilities=")
	w("")
	w("[Install]")
	w("WantedBy=multi-user.target")
	return b.String()
}

// hiddenFromUnit lists the directories the unit's sandbox hides from the
// agent (ProtectHome, PrivateTmp): its binary and config cannot live there.
var hiddenFromUnit = []string{"/home", "/root", "/run/user", "/tmp", "/var/tmp"}

// hiddenBySandbox returns the hidden directory path is under, or "".
func hiddenBySandbox(path string) string {
	for _, d := range hiddenFromUnit {
		if path == d || strings.HasPrefix(path, d+"/") {
			return d
		}
	}
	return ""
}

// Systemd manages the systemd unit.
type Systemd struct {
	// Root prefixes every file path the manager reads or writes ("" = /);
	// the paths inside the unit and config are never prefixed.
	Root    string
	Binary  string // absolute path of the binary the unit runs
	Version string
	Run     Runner
	Out     io.Writer
	// Settle is how long install waits for the agent to stay up.
	Settle time.Duration
	// Admin, if set, returns an error unless the caller may install.
	Admin func() error
}

func (s *Systemd) path(p string) string { return root(s.Root).path(p) }

// systemctl runs systemctl with args.
func (s *Systemd) systemctl(ctx context.Context, args ...string) (string, error) {
	return run(ctx, s.Run, "systemctl", args...)
}

// query runs a systemctl query (is-active, is-enabled) and returns its
// one-word answer, whatever its exit code.
func (s *Systemd) query(ctx context.Context, verb string) string {
	out, _ := s.Run(ctx, "systemctl", verb, SystemdUnitName)
	return strings.TrimSpace(out)
}

// Install writes the unit (and a config if none), reloads systemd, and
// enables and starts the service. Run again with nothing to change, it
// changes nothing and says so.
func (s *Systemd) Install(ctx context.Context, o InstallOptions) error {
	if s.Admin != nil {
		if err := s.Admin(); err != nil {
			return err
		}
	}
	if d := hiddenBySandbox(s.Binary); d != "" {
		return fmt.Errorf("the unit cannot run %s: its sandbox hides %s (copy the binary first: sudo install %s /usr/local/bin/)", s.Binary, d, s.Binary)
	}
	if o.ConfigFile != "" {
		abs, err := filepath.Abs(o.ConfigFile)
		if err != nil {
			return fmt.Errorf("config file %s: %w", o.ConfigFile, err)
		}
		if d := hiddenBySandbox(abs); d != "" {
			return fmt.Errorf("the unit cannot read %s: its sandbox hides %s (put the config under /etc/redleader)", abs, d)
		}
		o.ConfigFile = abs
	}
	cfgPath, wroteCfg, err := serviceConfig(s.Out, root(s.Root), o.ConfigFile, SystemdConfigPath, SystemdDataDir)
	if err != nil {
		return err
	}
	unit := SystemdUnit(UnitParams{Binary: s.Binary, Config: cfgPath, DataDir: SystemdDataDir, Version: s.Version})
	wrote, err := writeIfChanged(s.path(SystemdUnitPath), []byte(unit), 0o644)
	if err != nil {
		return err
	}
	if wrote {
		fmt.Fprintf(s.Out, "wrote %s\n", SystemdUnitPath)
		if _, err := s.systemctl(ctx, "daemon-reload"); err != nil {
			return err
		}
		fmt.Fprintln(s.Out, "ran systemctl daemon-reload")
	} else {
		fmt.Fprintf(s.Out, "kept %s (unchanged)\n", SystemdUnitPath)
	}
	changed := wrote || wroteCfg
	enabled := s.query(ctx, "is-enabled") == "enabled"
	active := s.query(ctx, "is-active") == "active"
	switch {
	case enabled && active && !changed:
		fmt.Fprintf(s.Out, "%s is enabled and running: nothing changed\n", SystemdUnitName)
		return nil
	case active && changed:
		// A changed unit (new binary path, new config) applies at a restart.
		if _, err := s.systemctl(ctx, "restart", SystemdUnitName); err != nil {
			return err
		}
		fmt.Fprintf(s.Out, "ran systemctl restart %s (its unit or config changed)\n", SystemdUnitName)
		if !enabled {
			if _, err := s.systemctl(ctx, "enable", SystemdUnitName); err != nil {
				return err
			}
			fmt.Fprintf(s.Out, "ran systemctl enable %s\n", SystemdUnitName)
		}
	default:
		if _, err := s.systemctl(ctx, "enable", "--now", SystemdUnitName); err != nil {
			return err
		}
		fmt.Fprintf(s.Out, "ran systemctl enable --now %s\n", SystemdUnitName)
	}
	return s.settled(ctx)
}

// settled checks, Settle after a start, that the agent is still running: a
// bad config stops it at once.
func (s *Systemd) settled(ctx context.Context) error {
	if s.Settle > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(s.Settle):
		}
	}
	if st := s.query(ctx, "is-active"); st != "active" {
		return fmt.Errorf("%s is %s after its start: see journalctl -u %s", SystemdUnitName, st, SystemdUnitName)
	}
	fmt.Fprintf(s.Out, "%s is running; its data dir is %s (redleader run as root finds its API token there)\n", SystemdUnitName, SystemdDataDir)
	return nil
}

// Uninstall stops, disables and removes the unit. The data dir and the
// config stay unless o.Purge.
func (s *Systemd) Uninstall(ctx context.Context, o UninstallOptions) error {
	if s.Admin != nil {
		if err := s.Admin(); err != nil {
			return err
		}
	}
	unit := s.path(SystemdUnitPath)
	if exists(unit) {
		if _, err := s.systemctl(ctx, "disable", "--now", SystemdUnitName); err != nil {
			return err
		}
		fmt.Fprintf(s.Out, "ran systemctl disable --now %s\n", SystemdUnitName)
		if err := removeFile(s.Out, unit); err != nil {
			return err
		}
		if _, err := s.systemctl(ctx, "daemon-reload"); err != nil {
			return err
		}
		fmt.Fprintln(s.Out, "ran systemctl daemon-reload")
		_, _ = s.Run(ctx, "systemctl", "reset-failed", SystemdUnitName) // forget a failed state; fine if none
	} else {
		fmt.Fprintf(s.Out, "%s is not installed\n", SystemdUnitPath)
	}
	// With DynamicUser, systemd keeps the state in /var/lib/private/<name>
	// behind the /var/lib/<name> symlink.
	private := filepath.Join(filepath.Dir(SystemdDataDir), "private", filepath.Base(SystemdDataDir))
	if !o.Purge {
		for _, p := range []string{SystemdDataDir, SystemdConfigPath} {
			if exists(s.path(p)) {
				fmt.Fprintf(s.Out, "kept %s (--purge removes it)\n", p)
			}
		}
		return nil
	}
	for _, p := range []string{SystemdDataDir, private} {
		if err := removeAll(s.Out, s.path(p)); err != nil {
			return err
		}
	}
	if err := removeFile(s.Out, s.path(SystemdConfigPath)); err != nil {
		return err
	}
	removeEmptyDir(s.Out, s.path(filepath.Dir(SystemdConfigPath)))
	return nil
}

// Status prints the unit's state. It returns ErrNotInstalled or
// ErrNotRunning when the service is not running.
func (s *Systemd) Status(ctx context.Context) error {
	out, err := s.systemctl(ctx, "show", SystemdUnitName, "--property=LoadState,UnitFileState,ActiveState,SubState,MainPID,NRestarts,ExecMainStartTimestamp")
	if err != nil {
		return err
	}
	p := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			p[k] = v
		}
	}
	if p["LoadState"] == "not-found" || !exists(s.path(SystemdUnitPath)) {
		fmt.Fprintf(s.Out, "%s: not installed (redleader service install)\n", SystemdUnitName)
		return ErrNotInstalled
	}
	fmt.Fprintf(s.Out, "unit:      %s (%s)\n", SystemdUnitPath, p["UnitFileState"])
	state := p["ActiveState"] + " (" + p["SubState"] + ")"
	if p["MainPID"] != "" && p["MainPID"] != "0" {
		state += ", pid " + p["MainPID"]
	}
	if t := p["ExecMainStartTimestamp"]; t != "" && p["ActiveState"] == "active" {
		state += ", since " + t
	}
	if n := p["NRestarts"]; n != "" && n != "0" {
		state += ", restarted " + n + " times"
	}
	fmt.Fprintf(s.Out, "state:     %s\n", state)
	fmt.Fprintf(s.Out, "data dir:  %s\n", SystemdDataDir)
	fmt.Fprintf(s.Out, "logs:      journalctl -u %s\n", SystemdUnitName)
	if p["ActiveState"] != "active" {
		return ErrNotRunning
	}
	return nil
}
