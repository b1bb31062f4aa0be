package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/redleader-p2p/redleader/config"
	"github.com/redleader-p2p/redleader/internal/memtrim"
	"github.com/redleader-p2p/redleader/internal/procs"
	"github.com/redleader-p2p/redleader/peer"
)

func agentCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the agent (embedded defaults; no config needed on a LAN)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig(cmd.Flags())
			if err != nil {
				return err
			}
			log, level := newLogger(g.stderr, cfg)
			a, err := peer.New(cfg, peer.Options{Version: version, Logger: log, Level: level,
				// A reload re-reads the same file, environment and flags.
				LoadConfig: func() (config.Config, error) { return g.loadConfig(cmd.Flags()) },
				ConfigFile: g.configFile})
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// SIGHUP re-reads the config (reload.go); on Windows, where no
			// SIGHUP comes, the service's parameter-change control does.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			if err := a.Start(ctx); err != nil {
				a.Close()
				return fmt.Errorf("start agent: %w", err)
			}
			trim := time.AfterFunc(startupTrimDelay, func() { trimStartup(log) })
			defer trim.Stop()
			// One P and GOGC 50 while idle, every P and the default GOGC
			// when busy (internal/procs).
			govCtx, govStop := context.WithCancel(ctx)
			govDone := make(chan struct{})
			go func() { defer close(govDone); procs.New(procs.Config{Log: log}).Run(govCtx) }()
			defer func() { govStop(); <-govDone }()
			for ctx.Err() == nil {
				select {
				case <-hup:
					log.Info("SIGHUP received: re-reading the config")
					_, _ = a.ReloadConfig() // logs what it did, or why the file was refused
				case <-ctx.Done():
				}
			}
			log.Info("signal received: leaving the cluster")
			return a.Close()
		},
	}
	f := cmd.Flags()
	f.String("node-name", "", "display name (default: hostname)")
	f.String("subnet", "", "subnet CIDR override (default: from the primary interface)")
	f.String("location", "", "location name (subnets sharing one WAN link)")
	f.String("advertise-addr", "", "IP other agents reach this one at (default: primary interface)")
	f.String("bind-addr", "", "IP to bind gossip and peer ports to (default 0.0.0.0)")
	f.Int("gossip-port", 0, "gossip port (default 7946)")
	f.Int("peer-port", 0, "peer retrieval/RPC port (default 7381)")
	f.String("api-addr", "", "local API address (default 127.0.0.1:7380)")
	f.StringSlice("join", nil, "gossip addresses (host:port) to join")
	f.String("log-level", "", "debug, info, warn or error (default info)")
	f.Bool("not-leader", false, "never become Red Leader on this machine")
	f.String("lan-iface", "", "interface for LAN discovery (default: primary)")
	f.String("lan-group", "", "LAN discovery multicast group (default 239.255.82.76)")
	f.Int("lan-port", 0, "LAN discovery UDP port (default 7382)")
	f.Bool("no-lan-discover", false, "do not use multicast to find other agents")
	return cmd
}

// startupTrimDelay is when the agent, settled by then, releases the memory
// only its start-up used.
const startupTrimDelay = 30 * time.Second

// trimStartup releases the executable's pages that start-up mapped in
// (internal/memtrim) and the heap that start-up used and freed.
func trimStartup(log *slog.Logger) {
	released, err := memtrim.Executable()
	if err != nil {
		log.Debug("start-up pages of the executable not released", "err", err)
	}
	debug.FreeOSMemory()
	log.Debug("start-up memory released", "executable_pages_mib", fmt.Sprintf("%.1f", float64(released)/(1<<20)))
}
