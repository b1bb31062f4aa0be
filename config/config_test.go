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
		{"jobs.max_running", func(c *Config) { c.Jobs.MaxRunning = 0 }},
		{"jobs.max_running", func(c *Config) { c.Jobs.MaxRunning = 65 }},
		{"jobs.retention", func(c *Config) { c.Jobs.Retention = 0 }},
		{"api_addr", func(c *Config) { c.APIAddr = "0.0.0.0:7380" }},
		{"api_token_file", func(c *Config) { c.APITokenFile = "relative/token" }},
		{"api_metrics_token_file", func(c *Config) { c.APIMetricsTokenFile = "token" }},
		{"api_metrics_token_file", func(c *Config) { c.APITokenFile, c.APIMetricsTokenFile = "/etc/t", "/etc/t" }},
		{"node_name", func(c *Config) { c.NodeName = strings.Repeat("n", MaxNameLen+1) }},
		{"node_name", func(c *Config) { c.NodeName = "pc\x1b[31m" }},
		{"location", func(c *Config) { c.Location = strings.Repeat("l", MaxNameLen+1) }},
		{"lan_discovery.interface", func(c *Config) { c.LANDiscovery.Interface = strings.Repeat("e", MaxIfaceLen+1) }},
		{"data_dir", func(c *Config) { c.DataDir = "/" + strings.Repeat("d", MaxPathLen) }},
		{"join", func(c *Config) { c.Join = make([]string, MaxJoin+1) }},
		{"join[0]", func(c *Config) { c.Join = []string{strings.Repeat("h", MaxJoinAddrLen) + ":1"} }},
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
	for _, want := range []string{"data_dir", "lan_discovery.port", "shaping.peer_rate", "election.nlm_ttl", "discovery.max_backoff", "cache.max_size", "jobs.max_running", "jobs.retention",
		"api_allow_remote", "api_token_file", "api_metrics_token_file", "allow_open_admin", "origin_proxy"} {
		found := false
		for _, k := range keys {
			found = found || k == want
		}
		if !found {
			t.Errorf("Keys() lacks %s", want)
		}
	}
}

// TestAPIAddrNeedsOptIn: a non-loopback api_addr is refused unless
// api_allow_remote is set.
func TestAPIAddrNeedsOptIn(t *testing.T) {
	tests := []struct {
		addr   string
		remote bool
		ok     bool
	}{
		{"127.0.0.1:7380", false, true},
		{"127.0.0.2:0", false, true},
		{"[::1]:7380", false, true},
		{"localhost:7380", false, true},
		{"[::ffff:127.0.0.1]:7380", false, true},
		{"0.0.0.0:7380", false, false},
		{"[::]:7380", false, false},
		{"10.1.2.3:7380", false, false},
		{"0.0.0.0:7380", true, true},
		{"10.1.2.3:7380", true, true},
		{"127.0.0.1:7380", true, true},
	}
	for _, tt := range tests {
		c := Default()
		c.DataDir = t.TempDir()
		c.APIAddr, c.APIAllowRemote = tt.addr, tt.remote
		err := c.Validate()
		if tt.ok != (err == nil) {
			t.Errorf("api_addr %s, api_allow_remote %v: err = %v, want ok %v", tt.addr, tt.remote, err, tt.ok)
		}
		if err != nil && (!strings.Contains(err.Error(), "api_addr:") || !strings.Contains(err.Error(), "api_allow_remote")) {
			t.Errorf("api_addr %s: error %q does not name api_addr and the opt-in key", tt.addr, err)
		}
	}
}

// TestLengthLimits: the limits are inclusive, and a huge value makes a
// short error message.
func TestLengthLimits(t *testing.T) {
	tests := []struct {
		key  string
		edit func(*Config, string)
		max  int
	}{
		{"node_name", func(c *Config, s string) { c.NodeName = s }, MaxNameLen},
		{"location", func(c *Config, s string) { c.Location = s }, MaxNameLen},
		{"lan_discovery.interface", func(c *Config, s string) { c.LANDiscovery.Interface = s }, MaxIfaceLen},
		{"api_token_file", func(c *Config, s string) { c.APITokenFile = "/" + s[1:] }, MaxPathLen},
	}
	for _, tt := range tests {
		for _, n := range []int{tt.max, tt.max + 1, 10 << 20} {
			c := Default()
			c.DataDir = t.TempDir()
			tt.edit(&c, strings.Repeat("x", n))
			err := c.Validate()
			if (err == nil) != (n <= tt.max) {
				t.Errorf("%s of %d bytes: err = %v", tt.key, n, err)
				continue
			}
			if err != nil && (!strings.Contains(err.Error(), tt.key+":") || len(err.Error()) > 300) {
				t.Errorf("%s of %d bytes: error of %d bytes, want a short one naming the key: %.300s", tt.key, n, len(err.Error()), err)
			}
		}
	}
	// A multi-byte name counts bytes, like the gossip metadata.
	c := Default()
	c.DataDir = t.TempDir()
	c.NodeName = strings.Repeat("é", MaxNameLen/2+1) // 66 bytes
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "node_name:") {
		t.Errorf("66-byte UTF-8 node_name: err = %v", err)
	}
}

func TestJoinBound(t *testing.T) {
	for _, n := range []int{0, 1, MaxJoin, MaxJoin + 1, 500_000} {
		c := Default()
		c.DataDir = t.TempDir()
		c.Join = make([]string, n)
		for i := range c.Join {
			c.Join[i] = "10.0.0.1:7946"
		}
		err := c.Validate()
		if (err == nil) != (n <= MaxJoin) {
			t.Errorf("%d join entries: err = %v", n, err)
		}
		if err != nil && (!strings.Contains(err.Error(), "join:") || strings.Count(err.Error(), "\n") != 0) {
			t.Errorf("%d join entries: want one line naming join, got %.200q", n, err)
		}
	}
}

func TestDefaultNodeNameFits(t *testing.T) {
	if n := defaultNodeName(); len(n) > MaxNameLen || !printable(n) {
		t.Errorf("default node name %q does not fit node_name's limits", n)
	}
}

func TestCheckEnv(t *testing.T) {
	tests := []struct {
		name    string
		environ []string
		bad     []string // variables the error must name
	}{
		{"none", []string{"PATH=/bin", "HOME=/root"}, nil},
		{"config keys", []string{"REDLEADER_GOSSIP_PORT=1", "REDLEADER_LAN_DISCOVERY_PORT=2", "REDLEADER_API_TOKEN_FILE=/t",
			"REDLEADER_ALLOW_OPEN_ADMIN=true", "REDLEADER_ELECTION_NLM_TTL=1m", "REDLEADER_JOIN=a:1"}, nil},
		{"project tooling", []string{"REDLEADER_BIN=/x", "REDLEADER_LAB_BUILD_DIR=/y", "REDLEADER_CACHE_CRASH_DIR=/z",
			"REDLEADER_CACHE_CRASH_SEED=1"}, nil},
		{"typo", []string{"REDLEADER_GOSSIP_PROT=1"}, []string{"REDLEADER_GOSSIP_PROT"}},
		{"a section, not a key", []string{"REDLEADER_LAN_DISCOVERY=1"}, []string{"REDLEADER_LAN_DISCOVERY"}},
		{"empty value", []string{"REDLEADER_NODENAME="}, []string{"REDLEADER_NODENAME"}},
		{"two", []string{"REDLEADER_A=1", "PATH=/bin", "REDLEADER_CLUSTERKEY=x"}, []string{"REDLEADER_A", "REDLEADER_CLUSTERKEY"}},
		{"other prefix", []string{"REDLEADERX=1", "MY_REDLEADER_PORT=1"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkEnv(tt.environ)
			if (err != nil) != (len(tt.bad) > 0) || (err != nil && !errors.Is(err, ErrInvalid)) {
				t.Fatalf("err = %v, want errors naming %v", err, tt.bad)
			}
			for _, v := range tt.bad {
				if !strings.Contains(err.Error(), "environment variable "+v+":") {
					t.Errorf("err = %v, does not name %s", err, v)
				}
			}
		})
	}
	// Every key has its variable.
	for _, k := range Keys() {
		if err := checkEnv([]string{EnvName(k) + "=x"}); err != nil {
			t.Errorf("key %s: %v", k, err)
		}
	}
}

// TestOriginProxy: origin_proxy takes what peer/fetch's NewOrigin takes
// (the environment, direct, an http, https or socks5 URL with a host);
// an error names the key and never shows the proxy's password.
func TestOriginProxy(t *testing.T) {
	tests := []struct {
		name, proxy string
		why         string // "" = valid; else a word of the reason
	}{
		{name: "environment", proxy: ""},
		{name: "direct", proxy: "direct"},
		{name: "http", proxy: "http://proxy.example:3128"},
		{name: "https with credentials", proxy: "https://u:hunter2@proxy.example"},
		{name: "socks5", proxy: "socks5://10.0.0.1:1080"},
		{name: "socks5h", proxy: "socks5h://proxy.example:1080"},
		{name: "ipv6", proxy: "http://[2001:db8::1]:3128"},
		{name: "bad scheme", proxy: "ftp://proxy.example", why: `scheme "ftp"`},
		{name: "bad scheme with password", proxy: "ftp://u:hunter2@proxy.example", why: `scheme "ftp"`},
		{name: "no scheme", proxy: "proxy.example:3128", why: "want"},
		{name: "no scheme with password", proxy: "u:hunter2@proxy.example:3128", why: "want"},
		{name: "no host", proxy: "http://", why: "want"},
		{name: "garbage", proxy: "not a url", why: "want"},
		{name: "unparsable with password", proxy: "http://u:hunter2@[::1", why: "want"},
		{name: "Direct is not direct", proxy: "Direct", why: "want"},
		{name: "too long", proxy: "http://proxy.example/" + strings.Repeat("p", MaxProxyLen), why: "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.DataDir = t.TempDir()
			c.OriginProxy = tt.proxy
			err := c.Validate()
			if tt.why == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want valid", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "origin_proxy: ") || !strings.Contains(err.Error(), tt.why) {
				t.Fatalf("err = %v, want ErrInvalid naming origin_proxy (%s)", err, tt.why)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error shows the proxy password: %v", err)
			}
		})
	}
}

// TestOriginProxyShownWithoutPassword: `redleader config` prints the
// proxy without its password.
func TestOriginProxyShownWithoutPassword(t *testing.T) {
	c := Default()
	c.OriginProxy = "http://u:hunter2@proxy.example:3128"
	out, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "hunter2") {
		t.Fatalf("config output shows the proxy password:\n%s", out)
	}
	if got := c.Map()["origin_proxy"]; got != "http://u:xxxxx@proxy.example:3128" {
		t.Fatalf("origin_proxy printed as %v", got)
	}
}
