package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/redleader-p2p/redleader/config"
	"github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/origin"
)

// originFlags are the flags of `redleader origin`.
type originFlags struct {
	dir        string
	listen     string
	passphrase string
	hashWait   time.Duration
	workers    int
	rescan     time.Duration
}

func originCmd(g *globals) *cobra.Command {
	var o originFlags
	cmd := &cobra.Command{
		Use:   "origin --dir DIR [--listen ADDR]",
		Short: "Serve a directory over HTTP, with BranchCache (MS-PCCRTP) content information",
		Long: "origin serves the files of a directory (GET/HEAD, Range, ETag, Last-Modified). Clients that send\n" +
			"Accept-Encoding: peerdist get the content information instead of the bytes, as from a BranchCache-enabled\n" +
			"IIS. Without --secret-passphrase a random server secret is generated once and kept in the data directory.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return g.runOrigin(ctx, cmd, o, nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dir, "dir", "", "directory to serve (required)")
	f.StringVar(&o.listen, "listen", ":8080", "address to listen on (host:port)")
	f.StringVar(&o.passphrase, "secret-passphrase", "", "server secret passphrase, as given to netsh branchcache set key (default: a random secret kept in the data dir)")
	f.DurationVar(&o.hashWait, "hash-wait", origin.DefaultHashWait, "how long a peerdist request waits for a file being hashed before the file itself is sent")
	f.IntVar(&o.workers, "hash-workers", origin.DefaultWorkers, "files hashed at once")
	f.DurationVar(&o.rescan, "rescan", time.Minute, "interval between directory scans for changed files (0: only at start)")
	f.String("log-level", "", "debug, info, warn or error (default info)")
	return cmd
}

// runOrigin serves until ctx is cancelled, then shuts down gracefully.
// ready, if not nil, is called with the listening address.
func (g *globals) runOrigin(ctx context.Context, cmd *cobra.Command, o originFlags, ready func(net.Addr)) error {
	if o.dir == "" {
		return fmt.Errorf("%w: --dir is required", errUsage)
	}
	if fi, err := os.Stat(o.dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("%w: --dir %s: not a readable directory", config.ErrInvalid, o.dir)
	}
	if o.workers < 1 || o.hashWait < 0 || o.rescan < 0 {
		return fmt.Errorf("%w: --hash-workers must be at least 1, --hash-wait and --rescan not negative", errUsage)
	}
	cfg, err := g.loadConfig(cmd.Flags())
	if err != nil {
		return err
	}
	log, _ := newLogger(g.stderr, cfg)
	secret, err := originSecret(cfg.DataDir, o.passphrase, log)
	if err != nil {
		return err
	}
	hashWait := o.hashWait
	if hashWait == 0 {
		hashWait = -1 // the flag's 0 means no wait; Options' 0 means the default
	}
	srv, err := origin.New(origin.Options{Dir: o.dir, Secret: secret, HashWait: hashWait,
		Workers: o.workers, Rescan: o.rescan, Logger: log})
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", o.listen, err)
	}
	if err := srv.Start(ctx); err != nil {
		ln.Close()
		return fmt.Errorf("start origin: %w", err)
	}
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	dir, _ := filepath.Abs(o.dir)
	log.Info("origin serving", "dir", dir, "addr", ln.Addr().String())
	if ready != nil {
		ready(ln.Addr())
	}
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("signal received: shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	<-served
	return srv.Close()
}

// originSecret is the passphrase's secret, else the one kept in dataDir
// (generated on first use).
func originSecret(dataDir, passphrase string, log *slog.Logger) (content.ServerSecret, error) {
	if passphrase != "" {
		return content.PassphraseSecret(passphrase), nil
	}
	secret, created, err := origin.LoadOrCreateSecret(dataDir)
	if errors.Is(err, origin.ErrBadSecret) {
		return secret, fmt.Errorf("%w: %w", config.ErrInvalid, err)
	}
	if err != nil {
		return secret, err
	}
	if created {
		log.Info("generated a server secret", "file", filepath.Join(dataDir, origin.SecretFile))
	}
	return secret, nil
}
