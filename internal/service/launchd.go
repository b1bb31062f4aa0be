package service

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"
)

// macOS layout of the service: a launchd daemon run as root. The data dir
// is config.DefaultDataDir for root on macOS, so `sudo redleader …` finds
// the service's API token with no flag.
const (
	LaunchdLabel      = "io.github.redleader-p2p.redleader"
	LaunchdPlistPath  = "/Library/LaunchDaemons/" + LaunchdLabel + ".plist"
	LaunchdConfigPath = "/etc/redleader/redleader.yaml"
	LaunchdDataDir    = "/Library/Application Support/redleader"
	LaunchdLogPath    = "/Library/Logs/redleader.log"
	// LaunchdExitTimeout is how long launchd waits after SIGTERM before
	// SIGKILL: the graceful stop's bound.
	LaunchdExitTimeout = 30 * time.Second
)

// PlistParams are the parts of the launchd plist that vary.
type PlistParams struct {
	Binary  string
	Config  string
	DataDir string
	Log     string // stdout and stderr of the agent
}

// LaunchdPlist is the daemon's property list: run at load and kept alive
// when it exits with an error (like systemd's Restart=on-failure), stopped
// with SIGTERM and ExitTimeOut seconds to finish.
func LaunchdPlist(p PlistParams) []byte {
	var b bytes.Buffer
	esc := func(s string) string {
		var e bytes.Buffer
		_ = xml.EscapeText(&e, []byte(s))
		return e.String()
	}
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Written by "redleader service install"; it rewrites this file. -->
<plist version="1.0">
<dict>
`)
	fmt.Fprintf(&b, "\t<key>Label</key>\n\t<string>%s</string>\n", esc(LaunchdLabel))
	b.WriteString("\t<key>ProgramArguments</key>\n\t<array>\n")
	for _, a := range []string{p.Binary, "agent", "--config", p.Config, "--data-dir", p.DataDir} {
		fmt.Fprintf(&b, "\t\t<string>%s</string>\n", esc(a))
	}
	b.WriteString("\t</array>\n")
	b.WriteString("\t<key>RunAtLoad</key>\n\t<true/>\n")
	b.WriteString("\t<key>KeepAlive</key>\n\t<dict>\n\t\t<key>SuccessfulExit</key>\n\t\t<false/>\n\t</dict>\n")
	b.WriteString("\t<key>ThrottleInterval</key>\n\t<integer>5</integer>\n")
	fmt.Fprintf(&b, "\t<key>ExitTimeOut</key>\n\t<integer>%d</integer>\n", int(LaunchdExitTimeout/time.Second))
	b.WriteString("\t<key>Umask</key>\n\t<integer>63</integer>\n") // 0077
	fmt.Fprintf(&b, "\t<key>StandardOutPath</key>\n\t<string>%s</string>\n", esc(p.Log))
	fmt.Fprintf(&b, "\t<key>StandardErrorPath</key>\n\t<string>%s</string>\n", esc(p.Log))
	b.WriteString("</dict>\n</plist>\n")
	return b.Bytes()
}

// Launchd manages the launchd daemon.
type Launchd struct {
	Root    string // prefixes file paths ("" = /), as Systemd.Root
	Binary  string
	Run     Runner
	Out     io.Writer
	Admin   func() error
	Timeout time.Duration // how long a bootout waits for the daemon to go; 0 = ExitTimeOut + 5 s
	// Poll is the interval of that wait; 0 = 200 ms.
	Poll time.Duration
}

func (l *Launchd) path(p string) string { return root(l.Root).path(p) }

const launchdTarget = "system/" + LaunchdLabel

// loaded reports whether launchd knows the daemon.
func (l *Launchd) loaded(ctx context.Context) bool {
	_, err := l.Run(ctx, "launchctl", "print", launchdTarget)
	return err == nil
}

// Install writes the plist (and a config if none) and bootstraps the
// daemon into the system domain; a changed plist is booted out first. Run
// again with nothing to change, it changes nothing and says so.
func (l *Launchd) Install(ctx context.Context, o InstallOptions) error {
	if l.Admin != nil {
		if err := l.Admin(); err != nil {
			return err
		}
	}
	if o.ConfigFile != "" {
		abs, err := filepath.Abs(o.ConfigFile)
		if err != nil {
			return fmt.Errorf("config file %s: %w", o.ConfigFile, err)
		}
		o.ConfigFile = abs
	}
	cfgPath, wroteCfg, err := serviceConfig(l.Out, root(l.Root), o.ConfigFile, LaunchdConfigPath, LaunchdDataDir)
	if err != nil {
		return err
	}
	plist := LaunchdPlist(PlistParams{Binary: l.Binary, Config: cfgPath, DataDir: LaunchdDataDir, Log: LaunchdLogPath})
	wrote, err := writeIfChanged(l.path(LaunchdPlistPath), plist, 0o644)
	if err != nil {
		return err
	}
	if wrote {
		fmt.Fprintf(l.Out, "wrote %s\n", LaunchdPlistPath)
	} else {
		fmt.Fprintf(l.Out, "kept %s (unchanged)\n", LaunchdPlistPath)
	}
	loaded := l.loaded(ctx)
	if loaded && !wrote && !wroteCfg {
		fmt.Fprintf(l.Out, "%s is loaded: nothing changed\n", launchdTarget)
		return nil
	}
	if loaded {
		if err := l.bootout(ctx); err != nil {
			return err
		}
	}
	// A daemon disabled earlier (launchctl disable) would not bootstrap.
	if _, err := run(ctx, l.Run, "launchctl", "enable", launchdTarget); err != nil {
		return err
	}
	if _, err := run(ctx, l.Run, "launchctl", "bootstrap", "system", LaunchdPlistPath); err != nil {
		return err
	}
	fmt.Fprintf(l.Out, "ran launchctl bootstrap system %s\n", LaunchdPlistPath)
	fmt.Fprintf(l.Out, "%s is loaded; its data dir is %s (redleader run with sudo finds its API token there), its log %s\n",
		launchdTarget, LaunchdDataDir, LaunchdLogPath)
	return nil
}

// bootout stops the daemon (SIGTERM, then ExitTimeOut) and waits until
// launchd has forgotten it, so that a bootstrap right after succeeds.
func (l *Launchd) bootout(ctx context.Context) error {
	if _, err := run(ctx, l.Run, "launchctl", "bootout", launchdTarget); err != nil {
		return err
	}
	fmt.Fprintf(l.Out, "ran launchctl bootout %s\n", launchdTarget)
	timeout, poll := l.Timeout, l.Poll
	if timeout == 0 {
		timeout = LaunchdExitTimeout + 5*time.Second
	}
	if poll == 0 {
		poll = 200 * time.Millisecond
	}
	deadline := time.Now().Add(timeout)
	for l.loaded(ctx) {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still loaded %v after launchctl bootout", launchdTarget, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
	return nil
}

// Uninstall boots the daemon out and removes its plist. The data dir, the
// config and the log stay unless o.Purge.
func (l *Launchd) Uninstall(ctx context.Context, o UninstallOptions) error {
	if l.Admin != nil {
		if err := l.Admin(); err != nil {
			return err
		}
	}
	if l.loaded(ctx) {
		if err := l.bootout(ctx); err != nil {
			return err
		}
	}
	if exists(l.path(LaunchdPlistPath)) {
		if err := removeFile(l.Out, l.path(LaunchdPlistPath)); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(l.Out, "%s is not installed\n", LaunchdPlistPath)
	}
	if !o.Purge {
		for _, p := range []string{LaunchdDataDir, LaunchdConfigPath} {
			if exists(l.path(p)) {
				fmt.Fprintf(l.Out, "kept %s (--purge removes it)\n", p)
			}
		}
		return nil
	}
	if err := removeAll(l.Out, l.path(LaunchdDataDir)); err != nil {
		return err
	}
	for _, p := range []string{LaunchdConfigPath, LaunchdLogPath} {
		if err := removeFile(l.Out, l.path(p)); err != nil {
			return err
		}
	}
	removeEmptyDir(l.Out, l.path(filepath.Dir(LaunchdConfigPath)))
	return nil
}

// Status prints what launchd says of the daemon. It returns
// ErrNotInstalled or ErrNotRunning when the daemon is not running.
func (l *Launchd) Status(ctx context.Context) error {
	if !exists(l.path(LaunchdPlistPath)) {
		fmt.Fprintf(l.Out, "%s: not installed (redleader service install)\n", LaunchdLabel)
		return ErrNotInstalled
	}
	out, err := l.Run(ctx, "launchctl", "print", launchdTarget)
	if err != nil {
		fmt.Fprintf(l.Out, "daemon:    %s (not loaded: sudo launchctl bootstrap system %s)\n", LaunchdPlistPath, LaunchdPlistPath)
		return ErrNotRunning
	}
	p := launchctlFields(out)
	state := p["state"]
	if pid := p["pid"]; pid != "" {
		state += ", pid " + pid
	}
	if code := p["last exit code"]; code != "" {
		state += ", last exit code " + code
	}
	fmt.Fprintf(l.Out, "daemon:    %s\n", LaunchdPlistPath)
	fmt.Fprintf(l.Out, "state:     %s\n", state)
	fmt.Fprintf(l.Out, "data dir:  %s\n", LaunchdDataDir)
	fmt.Fprintf(l.Out, "logs:      %s\n", LaunchdLogPath)
	if p["state"] != "running" {
		return ErrNotRunning
	}
	return nil
}

// launchctlFields reads the top-level "key = value" lines of launchctl
// print (one tab deep; nested blocks are skipped).
func launchctlFields(out string) map[string]string {
	p := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "\t") || strings.HasPrefix(line, "\t\t") {
			continue
		}
		if k, v, ok := strings.Cut(strings.TrimSpace(line), " = "); ok && !strings.HasSuffix(v, "{") {
			p[k] = v
		}
	}
	return p
}
