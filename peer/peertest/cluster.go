// Package peertest starts in-process clusters of real agents for tests
// (memberlist, Raft, peer port and local API on 127.0.0.1 with port 0,
// data dirs in t.TempDir()).
package peertest

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/config"
	"github.com/redleader-p2p/redleader/peer"
)

// Options shape the agents Start makes.
type Options struct {
	// Subnet is the subnet label (CIDR) of every agent. Default 10.99.0.0/24.
	Subnet string
	// ClusterKey is the base64 cluster key (empty: none).
	ClusterKey string
	// Join makes every agent after the first join the first one through
	// the join list. Without it, agents must find each other by multicast
	// beacons (which needs MulticastGroup and multicast on lo).
	Join []string
	// MulticastGroup and MulticastPort enable LAN discovery on lo; pick a
	// group and port per test so parallel tests do not hear each other.
	MulticastGroup string
	MulticastPort  int
	// Configure, if set, edits each agent's config before it starts.
	Configure func(i int, c *config.Config)
	// Verbose sends agent logs to the test log.
	Verbose bool
}

// Config returns the config for agent i under opts.
func Config(t testing.TB, i int, opts Options) config.Config {
	t.Helper()
	c := config.Default()
	c.DataDir = t.TempDir()
	c.NodeName = "agent-" + strconv.Itoa(i)
	c.Subnet = opts.Subnet
	if c.Subnet == "" {
		c.Subnet = "10.99.0.0/24"
	}
	c.AdvertiseAddr = "127.0.0.1"
	c.BindAddr = "127.0.0.1"
	c.GossipPort = 0
	c.PeerPort = 0
	c.APIAddr = "127.0.0.1:0"
	c.ClusterKey = opts.ClusterKey
	c.Join = opts.Join
	c.RejoinInterval = 2 * time.Second
	c.Discovery.Enabled = false // tests that probe turn it on with their own port
	c.Election.BootstrapSettle = 500 * time.Millisecond
	c.Election.VoterStabilization = time.Second
	c.LANDiscovery.Interface = "lo"
	c.LANDiscovery.Enabled = opts.MulticastGroup != ""
	if opts.MulticastGroup != "" {
		c.LANDiscovery.Group = opts.MulticastGroup
		c.LANDiscovery.Port = opts.MulticastPort
	}
	if opts.Configure != nil {
		opts.Configure(i, &c)
	}
	return c
}

// StartAgent starts one agent with cfg and closes it when the test ends.
func StartAgent(t testing.TB, cfg config.Config, verbose bool) *peer.Agent {
	t.Helper()
	a := NewAgent(t, cfg, verbose)
	if err := a.Start(context.Background()); err != nil {
		a.Close()
		t.Fatalf("start agent %s: %v", cfg.NodeName, err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// NewAgent makes (but does not start) one agent with cfg, logging to the
// test log when verbose.
func NewAgent(t testing.TB, cfg config.Config, verbose bool) *peer.Agent {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	if verbose {
		log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})).With("agent", cfg.NodeName)
	}
	a, err := peer.New(cfg, peer.Options{Version: "test", Logger: log})
	if err != nil {
		t.Fatalf("new agent %s: %v", cfg.NodeName, err)
	}
	return a
}

// Start starts n agents. Unless opts.Join or multicast is set, agents 1..n-1
// join agent 0.
func Start(t testing.TB, n int, opts Options) []*peer.Agent {
	t.Helper()
	agents := make([]*peer.Agent, 0, n)
	for i := range n {
		o := opts
		if len(o.Join) == 0 && o.MulticastGroup == "" && i > 0 {
			o.Join = []string{agents[0].GossipAddr().String()}
		}
		agents = append(agents, StartAgent(t, Config(t, i, o), opts.Verbose))
	}
	return agents
}

// AliveSet returns the node IDs a sees as alive.
func AliveSet(a *peer.Agent) map[string]bool {
	out := map[string]bool{}
	for _, m := range a.Members() {
		if m.Status == peer.StatusAlive {
			out[m.Node] = true
		}
	}
	return out
}

// SameMembers reports whether every agent sees exactly the agents in want
// as alive.
func SameMembers(agents, want []*peer.Agent) bool {
	for _, a := range agents {
		set := AliveSet(a)
		if len(set) != len(want) {
			return false
		}
		for _, w := range want {
			if !set[w.ID()] {
				return false
			}
		}
	}
	return true
}

// MulticastOnLo skips the test unless lo can carry multicast, which is
// the case inside `make test`'s private network namespace.
func MulticastOnLo(t testing.TB) {
	t.Helper()
	ifc, err := net.InterfaceByName("lo")
	if err != nil || ifc.Flags&net.FlagMulticast == 0 {
		t.Skip("lo has no MULTICAST flag: run via `make test` (private netns with multicast on lo)")
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b[:len(b)-1]))
	return len(b), nil
}

// FreeUDPPort returns a UDP port that was free a moment ago (for
// multicast beacon ports in tests).
func FreeUDPPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
