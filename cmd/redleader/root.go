package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/redleader-p2p/redleader/config"
)

// Exit codes.
const (
	exitOK     = 0
	exitFail   = 1 // runtime failure, e.g. no agent running
	exitConfig = 2 // bad configuration or usage
)

// errUsage marks command-line usage errors (exit code 2).
var errUsage = errors.New("usage")

// globals are the flags every command shares.
type globals struct {
	configFile string
	dataDir    string
	api        string
	json       bool
	stdout     io.Writer
	stderr     io.Writer
}

// flagKeys maps agent flags to config keys; flags win over file and env.
var flagKeys = map[string]string{
	"data-dir":        "data_dir",
	"node-name":       "node_name",
	"subnet":          "subnet",
	"location":        "location",
	"advertise-addr":  "advertise_addr",
	"bind-addr":       "bind_addr",
	"gossip-port":     "gossip_port",
	"peer-port":       "peer_port",
	"api-addr":        "api_addr",
	"join":            "join",
	"log-level":       "log_level",
	"not-leader":      "not_leader_material",
	"lan-iface":       "lan_discovery.interface",
	"lan-group":       "lan_discovery.group",
	"lan-port":        "lan_discovery.port",
	"no-lan-discover": "", // handled below: inverted boolean
}

func run(args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "redleader",
		Short:         "Peer-to-peer content distribution for branch offices",
		Long:          "redleader elects one Red Leader per subnet to download over the WAN; every other machine gets the content from LAN peers.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return fmt.Errorf("%w: %w", errUsage, err) })
	pf := root.PersistentFlags()
	pf.StringVarP(&g.configFile, "config", "c", "", "config file (YAML); see redleader.example.yaml")
	pf.StringVar(&g.dataDir, "data-dir", "", "data directory (default: platform-specific; redleader config shows it)")
	pf.StringVar(&g.api, "api", "", "local API address of the agent to talk to (default: api_addr from config)")
	pf.BoolVar(&g.json, "json", false, "print machine-readable JSON")

	root.AddCommand(agentCmd(g), statusCmd(g), membersCmd(g), configCmd(g), versionCmd(g), eventsCmd(g), nlmCmd(g), policyCmd(g), probeCmd(g), originCmd(g), hashCmd(g), cacheCmd(g))
	root.AddCommand(keygenCmd(g))
	root.AddCommand(fetchCmd(g))
	root.AddCommand(jobsCmd(g))
	root.AddCommand(serviceCmd(g))
	root.AddCommand(reloadCmd(g))
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "redleader:", oneLine(err))
	switch {
	case errors.Is(err, config.ErrInvalid), errors.Is(err, errUsage), strings.HasPrefix(err.Error(), "unknown command"):
		return exitConfig
	}
	return exitFail
}

// loadConfig builds the effective config from file, env and fs's flags.
func (g *globals) loadConfig(fs *pflag.FlagSet) (config.Config, error) {
	keys := map[string]string{}
	for name, key := range flagKeys {
		if key != "" {
			keys[name] = key
		}
	}
	cfg, err := config.Load(g.configFile, fs, keys)
	if err != nil {
		return cfg, err
	}
	if f := fs.Lookup("no-lan-discover"); f != nil && f.Changed {
		cfg.LANDiscovery.Enabled = false
	}
	return cfg, nil
}

// newLogger is the logger of cfg's log_format (text or json) writing to
// w, at the level the returned LevelVar holds (log_level; a reload moves
// it).
func newLogger(w io.Writer, cfg config.Config) (*slog.Logger, *slog.LevelVar) {
	var l slog.Level
	_ = l.UnmarshalText([]byte(cfg.LogLevel)) // validated by config
	lv := new(slog.LevelVar)
	lv.Set(l)
	opts := &slog.HandlerOptions{Level: lv}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), lv
	}
	return slog.New(slog.NewTextHandler(w, opts)), lv
}

// oneLine joins a multi-line error (several bad keys) with "; ".
func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}
