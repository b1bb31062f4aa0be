package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	c.DataDir = t.TempDir()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
}

func TestValidateNamesTheKey(t *testing.T) {
	tests := []struct {
		key  string
		edit func(*Config)
	}{
		{"data_dir", func(c *Config) { c.DataDir = "" }},
		{"subnet", func(c *Config) { c.Subnet = "10.0.0.0" }},
		{"advertise_addr", func(c *Config) { c.AdvertiseAddr = "host.example" }},
		{"bind_addr", func(c *Config) { c.BindAddr = "" }},
		{"gossip_port", func(c *Config) { c.GossipPort = -1 }},
		{"peer_port", func(c *Config) { c.PeerPort = 65536 }},
		{"api_addr", func(c *Config) { c.APIAddr = "127.0.0.1:99999" }},
		{"join[1]", func(c *Config) { c.Join = []string{"10.0.0.1:7946", "nohost"} }},
		{"rejoin_interval", func(c *Config) { c.RejoinInterval = 0 }},
		{"cluster_key", func(c *Config) { c.ClusterKey = "!!!" }},
		{"log_level", func(c *Config) { c.LogLevel = "trace" }},
		{"lan_discovery.group", func(c *Config) { c.LANDiscovery.Group = "ff02::1" }},
		{"lan_discovery.port", func(c *Config) { c.LANDiscovery.Port = 0 }},
		{"election.voter", func(c *Config) { c.Election.Voter = "sometimes" }},
		{"election.machine_class", func(c *Config) { c.Election.MachineClass = "mainframe" }},
		{"election.raft_multiplier", func(c *Config) { c.Election.RaftMultiplier = 11 }},
		{"election.checkin_timeout", func(c *Config) { c.Election.CheckinTimeout = c.Election.CheckinInterval }},
		{"election.voter_stabilization", func(c *Config) { c.Election.VoterStabilization = -time.Second }},
		{"discovery.request_timer", func(c *Config) { c.Discovery.RequestTimer = time.Second }},
		{"discovery.max_backoff", func(c *Config) { c.Discovery.MaxBackoff = 0 }},
		{"discovery.reply_probability", func(c *Config) { c.Discovery.ReplyProbability = 1.5 }},
		{"discovery.reply_threshold", func(c *Config) { c.Discovery.ReplyThreshold = 0 }},
		{"cache.max_size", func(c *Config) { c.Cache.MaxSize = "lots" }},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			c := Default()
			c.DataDir = t.TempDir()
			tt.edit(&c)
			err := c.Validate()
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.key+":") {
				t.Fatalf("err = %v, want ErrInvalid naming %s", err, tt.key)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  bool
	}{
		{"0", 0, false}, {"", 0, false}, {"20GB", 20e9, false}, {"512MiB", 512 << 20, false},
		{"1.5TB", 1.5e12, false}, {"100B", 100, false}, {"10", 0, true}, {"-1GB", 0, true}, {"huge", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v", tt.in, got, err)
		}
	}
}

func TestKeysCoverEveryField(t *testing.T) {
	keys := Keys()
	for _, want := range []string{"data_dir", "lan_discovery.port", "shaping.peer_rate", "election.nlm_ttl", "discovery.max_backoff", "cache.max_size"} {
		found := false
		for _, k := range keys {
			found = found || k == want
		}
		if !found {
			t.Errorf("Keys() lacks %s", want)
		}
	}
}
