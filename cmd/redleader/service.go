package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/redleader-p2p/redleader/config"
	"github.com/redleader-p2p/redleader/internal/service"
	"github.com/redleader-p2p/redleader/peer"
)

func serviceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "service",
		Short: "Run the agent as an OS service: systemd (Linux), launchd (macOS), Windows service",
		Args:  cobra.NoArgs,
	}
	install := &cobra.Command{
		Use:   "install [--config FILE]",
		Short: "Install and start the service (again: changes nothing, says so); prints what it wrote",
		Long: "install writes the service (a systemd unit, a launchd plist or a Windows service) running this binary\n" +
			"with --config FILE, or with the platform's config file, written with data_dir if missing, and starts it.\n" +
			"Its data dir is the one `redleader` run as root (an elevated prompt on Windows) uses by default.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("data-dir") {
				return fmt.Errorf("%w: service install takes no --data-dir: the service keeps its data in the platform's data dir (see redleader service status)", errUsage)
			}
			m, err := g.serviceManager()
			if err != nil {
				return err
			}
			return m.Install(cmd.Context(), service.InstallOptions{ConfigFile: g.configFile})
		},
	}
	var purge bool
	uninstall := &cobra.Command{
		Use:   "uninstall [--purge]",
		Short: "Stop and remove the service; the data dir stays unless --purge",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := g.serviceManager()
			if err != nil {
				return err
			}
			return m.Uninstall(cmd.Context(), service.UninstallOptions{Purge: purge})
		},
	}
	uninstall.Flags().BoolVar(&purge, "purge", false, "also remove the data dir (node ID, API token, cache, jobs) and the generated config")
	status := &cobra.Command{
		Use:   "status",
		Short: "Show whether the service is installed and running (exit 1 if not)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := g.serviceManager()
			if err != nil {
				return err
			}
			return m.Status(cmd.Context())
		},
	}
	run := &cobra.Command{
		Use:    "run",
		Short:  "Run the agent under the Windows service manager (what the installed service starts)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.serviceRun(cmd)
		},
	}
	cmd.AddCommand(install, uninstall, status, run)
	return cmd
}

// serviceManager is the OS's service manager for this binary.
func (g *globals) serviceManager() (service.Manager, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("locate this binary: %w", err)
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		return nil, fmt.Errorf("locate this binary: %w", err)
	}
	return service.New(exe, version, g.stdout)
}

// serviceRun is the Windows service's process: the agent, logging to the
// Event Log, driven by the service manager's controls (stop and shutdown
// like SIGTERM, parameter change like SIGHUP).
func (g *globals) serviceRun(cmd *cobra.Command) error {
	if ok, err := service.IsWindowsService(); err != nil || !ok {
		return fmt.Errorf("%w: `redleader service run` is started by the Windows service manager; run `redleader agent` instead", errUsage)
	}
	// A bad config is reported as a failed start (below), logged as text.
	cfg, cfgErr := g.loadConfig(cmd.Flags())
	level := new(slog.LevelVar) // log_level once peer.New has the config; a reload moves it
	log, closeLog, err := service.OpenEventLog(level, cfgErr == nil && cfg.LogFormat == "json")
	if err != nil {
		return err
	}
	defer closeLog()
	// The agent is made in Start, so that a bad config or a locked data
	// dir is a failed start the service manager records, not a process
	// that never answered it.
	a := &serviceAgent{newAgent: func() (*peer.Agent, error) {
		if cfgErr != nil {
			return nil, cfgErr
		}
		return peer.New(cfg, peer.Options{Version: version, Logger: log, Level: level,
			// A parameter change re-reads the same file, environment and flags.
			LoadConfig: func() (config.Config, error) { return g.loadConfig(cmd.Flags()) },
			ConfigFile: g.configFile})
	}}
	return service.RunWindowsService(a, log)
}

// serviceAgent is the agent as the service control loop drives it.
type serviceAgent struct {
	newAgent func() (*peer.Agent, error)
	a        *peer.Agent // made by Start
}

func (s *serviceAgent) Start(ctx context.Context) error {
	a, err := s.newAgent()
	if err != nil {
		return err
	}
	s.a = a
	return a.Start(ctx)
}

func (s *serviceAgent) Close() error {
	if s.a == nil {
		return nil
	}
	return s.a.Close()
}

// Reload is the parameter-change control's hook: the config re-read as on
// SIGHUP (the agent logs what it applied, or why it refused the file).
func (s *serviceAgent) Reload() error {
	if s.a == nil {
		return errors.New("the agent is not running")
	}
	_, err := s.a.ReloadConfig()
	return err
}
