// Package config defines the agent's configuration: one typed Config with a
// documented default for every key, loaded from a YAML file, REDLEADER_*
// environment variables and command-line flags (flags win), and checked by
// Validate, whose errors name the offending key.
package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/redleader-p2p/redleader/shaping"
)

// ErrInvalid wraps every validation and load error, so callers can tell a
// bad configuration (exit code 2) from a runtime failure.
var ErrInvalid = errors.New("invalid config")

// Config is the whole agent configuration. The yaml/mapstructure key of each
// field is what users write in the config file; nested keys are joined with
// "_" in environment variables (REDLEADER_DISCOVERY_PORT). Some keys also
// have an agent flag (cmd/redleader lists them).
type Config struct {
	// DataDir holds the node ID, the lock file, the API token, the
	// election's Raft state (election/), the segment cache (cache/) and
	// `redleader origin`'s server secret. Default: /var/lib/redleader for
	// root on Linux, $XDG_STATE_HOME/redleader or ~/.local/state/redleader
	// for other users; %ProgramData%\redleader on Windows; on macOS
	// /Library/Application Support/redleader for root, else the user's
	// config directory.
	DataDir string `mapstructure:"data_dir" yaml:"data_dir"`

	// NodeName is the display name. Default: the hostname. The node's
	// identity is its UUID in the data dir, never the name or the address.
	NodeName string `mapstructure:"node_name" yaml:"node_name"`

	// Subnet overrides the subnet (CIDR) taken from the primary interface.
	// All agents with the same subnet form one gossip pool. Setting it
	// disables roaming detection.
	Subnet string `mapstructure:"subnet" yaml:"subnet"`

	// Location names the group of subnets that share one WAN link.
	Location string `mapstructure:"location" yaml:"location"`

	// AdvertiseAddr is the IP other agents use to reach this one. Default:
	// the primary interface's address. Setting it disables roaming detection.
	AdvertiseAddr string `mapstructure:"advertise_addr" yaml:"advertise_addr"`

	// BindAddr is the IP the gossip and peer listeners bind to. Default
	// 0.0.0.0 (all), which lets the agent re-home when its address changes.
	BindAddr string `mapstructure:"bind_addr" yaml:"bind_addr"`

	// GossipPort is the memberlist TCP+UDP port. 0 picks a free port (tests).
	GossipPort int `mapstructure:"gossip_port" yaml:"gossip_port"`

	// PeerPort is the TCP port shared, by first byte, by MS-PCCRR block
	// retrieval, Raft and the cluster RPC.
	PeerPort int `mapstructure:"peer_port" yaml:"peer_port"`

	// APIAddr is the local HTTP API address. It must be a loopback address
	// unless APIAllowRemote is set: on loopback, read endpoints and
	// /metrics are open to every local user.
	APIAddr string `mapstructure:"api_addr" yaml:"api_addr"`

	// APIAllowRemote allows a non-loopback APIAddr and puts every endpoint
	// behind the token, reads and /metrics included (/metrics also takes
	// the APIMetricsTokenFile token). The API is plain HTTP: the token
	// crosses the network in the clear.
	APIAllowRemote bool `mapstructure:"api_allow_remote" yaml:"api_allow_remote"`

	// APITokenFile is a file holding the API token, deployed by the admin
	// (at least 32 characters; mode 0600 or stricter: a file group or
	// others may read is refused). Empty: the agent generates
	// <data_dir>/api-token. The CLI reads the same file.
	APITokenFile string `mapstructure:"api_token_file" yaml:"api_token_file"`

	// APIMetricsTokenFile is a file holding a second, read-only token that
	// is accepted for GET /metrics and nothing else (a central Prometheus).
	// Same rules as APITokenFile. Empty: none.
	APIMetricsTokenFile string `mapstructure:"api_metrics_token_file" yaml:"api_metrics_token_file"`

	// Join lists host:port gossip addresses to join at start and to retry
	// periodically. Not needed on a LAN where multicast works.
	Join []string `mapstructure:"join" yaml:"join"`

	// RejoinInterval is how often Join addresses that are not alive
	// members, and members that died, are retried (plus up to 20% jitter).
	// Shorter heals partitions sooner at the cost of a TCP exchange per
	// absent address per interval.
	RejoinInterval time.Duration `mapstructure:"rejoin_interval" yaml:"rejoin_interval"`

	// RehomeInterval is how often the primary interface is re-read to
	// notice a roaming laptop. Shorter notices moves sooner; each check is
	// a cheap interface listing.
	RehomeInterval time.Duration `mapstructure:"rehome_interval" yaml:"rehome_interval"`

	// MemberRetention is how long a member that left or died stays listed
	// (as left/dead) in /v1/members before it is forgotten.
	MemberRetention time.Duration `mapstructure:"member_retention" yaml:"member_retention"`

	// OriginProxy is the outbound proxy of origin downloads: this agent's
	// jobs and, on the Red Leader, the members' demands. "" (default)
	// follows HTTP_PROXY, HTTPS_PROXY and NO_PROXY of the agent's
	// environment, read at start (loopback origins are never proxied);
	// "direct" ignores them and connects to origins directly; a URL
	// (http://, https:// or socks5://, [user:password@]host[:port]) sends
	// every origin request through that proxy, NO_PROXY ignored. The proxy
	// sees every origin URL (and, for plain-HTTP origins, the bytes; they
	// are verified against the content's hashes all the same). With a URL,
	// the Red Leader's connect-time address check of demanded content
	// applies to the proxy's address, which the admin chose, so it is
	// skipped: the URL check before the fetch stays, and where demanded
	// URLs lead is up to the proxy. A password in the URL is hidden in
	// `redleader config` and in errors.
	OriginProxy string `mapstructure:"origin_proxy" yaml:"origin_proxy"`

	// ClusterKey (base64 of 32 bytes) encrypts gossip, authenticates LAN
	// discovery beacons (HMAC), and puts Raft and the cluster RPC inside
	// mutual TLS 1.3 with a certificate derived from the key. MS-PCCRD and
	// MS-PCCRR stay open to any BranchCache peer. Empty (and no
	// ClusterKeys): the cluster is open to the LAN. Generate one with
	// `redleader keygen`. It is the one-key shorthand of ClusterKeys:
	// setting both is an error.
	ClusterKey string `mapstructure:"cluster_key" yaml:"cluster_key"`

	// ClusterKeys lists cluster keys (each base64 of 32 bytes, at most
	// MaxClusterKeys) for a rotation without a flag day: the first one
	// encrypts gossip, signs beacons and gives the TLS certificate this
	// agent presents; every one of them decrypts gossip, authenticates
	// beacons and is accepted in a peer's certificate. In the environment:
	// REDLEADER_CLUSTER_KEYS="new,old".
	ClusterKeys []string `mapstructure:"cluster_keys" yaml:"cluster_keys"`

	// AllowOpenAdmin, without a cluster key, lets admin commands (policy,
	// admin not-leader-material marks) be committed in the open cluster:
	// every LAN host is then an admin. Off (default), an open cluster
	// refuses them. Ignored with a cluster key.
	AllowOpenAdmin bool `mapstructure:"allow_open_admin" yaml:"allow_open_admin"`

	// NotLeaderMaterial keeps this machine from ever being the Red Leader
	// (it may still vote).
	NotLeaderMaterial bool `mapstructure:"not_leader_material" yaml:"not_leader_material"`

	// LogLevel is one of debug, info, warn, error. A reload (SIGHUP,
	// `redleader reload`) applies a new one at once.
	LogLevel string `mapstructure:"log_level" yaml:"log_level"`

	// LogFormat is text (key=value lines, for people and journald) or
	// json (one JSON object per line, for log shippers: typed fields,
	// nothing to parse, longer lines). Raft and memberlist lines go
	// through the same handler at their real level. Needs a restart.
	LogFormat string `mapstructure:"log_format" yaml:"log_format"`

	// LANDiscovery finds the other agents of the subnet with no config.
	LANDiscovery LANDiscovery `mapstructure:"lan_discovery" yaml:"lan_discovery"`

	// Shaping holds the rates of the subnet's first policy.
	Shaping Shaping `mapstructure:"shaping" yaml:"shaping"`

	// Election tunes the per-subnet Raft group and the Red Leader rules.
	Election Election `mapstructure:"election" yaml:"election"`

	// Discovery configures MS-PCCRD: finding LAN peers that hold a segment.
	Discovery Discovery `mapstructure:"discovery" yaml:"discovery"`

	// Cache configures the segment cache under the data dir.
	Cache Cache `mapstructure:"cache" yaml:"cache"`

	// Jobs configures the download jobs (data_dir/jobs).
	Jobs Jobs `mapstructure:"jobs" yaml:"jobs"`
}

// Jobs configures the queue of download jobs.
type Jobs struct {
	// MaxRunning jobs download at once (1-64); the others wait, highest
	// priority first.
	MaxRunning int `mapstructure:"max_running" yaml:"max_running"`
	// Retention: a finished job (its record, audit and content) is kept
	// this long for `redleader jobs get` and `jobs show`, then removed.
	Retention time.Duration `mapstructure:"retention" yaml:"retention"`
}

// Discovery configures the MS-PCCRD (WS-Discovery) prober and responder,
// wire-compatible with Windows BranchCache and iPXE.
type Discovery struct {
	// Enabled runs the responder (answers probes for held segments) and
	// the prober.
	Enabled bool `mapstructure:"enabled" yaml:"enabled"`
	// Port is the WS-Discovery UDP port (3702 for BranchCache peers).
	Port int `mapstructure:"port" yaml:"port"`
	// Group is the IPv4 multicast group (239.255.255.250); ff02::c is
	// joined too where the interface has IPv6.
	Group string `mapstructure:"group" yaml:"group"`
	// RequestTimer is how long a probe collects replies: 200ms-500ms, and
	// never below max_backoff. Longer finds more holders, later.
	RequestTimer time.Duration `mapstructure:"request_timer" yaml:"request_timer"`
	// MaxBackoff is the responder's maximum random delay before a reply
	// (1ms-1s). Longer spreads reply bursts; shorter answers sooner.
	MaxBackoff time.Duration `mapstructure:"max_backoff" yaml:"max_backoff"`
	// ReplyThreshold is n of the reply-suppression rule: when this agent's
	// last probe for a segment saw n or more replies, it answers less often.
	ReplyThreshold int `mapstructure:"reply_threshold" yaml:"reply_threshold"`
	// ReplyProbability is the chance of answering when n replies but fewer
	// than n full-segment replies were seen.
	ReplyProbability float64 `mapstructure:"reply_probability" yaml:"reply_probability"`
}

// Cache configures the segment cache.
type Cache struct {
	// MaxSize caps the cache on disk, e.g. 20GB, 512MB; least recently
	// used segments are evicted. 0 = no cap.
	MaxSize string `mapstructure:"max_size" yaml:"max_size"`
}

// MaxBytes parses MaxSize (validated by Validate).
func (c Cache) MaxBytes() int64 {
	n, _ := ParseSize(c.MaxSize)
	return n
}

// Election configures the Red Leader election. Every timing but NLMTTL is
// multiplied by RaftMultiplier.
type Election struct {
	// Voter is "auto" (this machine may vote, chosen for stability) or
	// "never" (it never joins the Raft group; it may still be Red Leader).
	Voter string `mapstructure:"voter" yaml:"voter"`
	// MachineClass is server, desktop or laptop: servers are preferred as
	// voters; a 5-voter group needs 5 members that are not laptops.
	// "auto" = desktop.
	MachineClass string `mapstructure:"machine_class" yaml:"machine_class"`
	// RaftMultiplier (1–10) scales Raft's own timings and every election
	// timing below but NLMTTL, for slow or lossy networks. Higher: fewer
	// false failovers, slower real ones.
	RaftMultiplier int `mapstructure:"raft_multiplier" yaml:"raft_multiplier"`
	// CheckinInterval is how often the Red Leader checks in with the Raft
	// leader. Shorter: a late check-in is noticed sooner, but every agent
	// pays for it while idle (each check-in is an RPC; its reply waits
	// for the Raft leader's next heartbeat round, at most 500 ms). A Red
	// Leader whose process dies is noticed at once anyway: its check-in
	// connection closes and its port refuses the Raft leader's probe.
	CheckinInterval time.Duration `mapstructure:"checkin_interval" yaml:"checkin_interval"`
	// CheckinTimeout: no check-in for this long and the Red Leader is
	// replaced; it is also the Red Leader's lease. It bounds the failover
	// of a Red Leader that is cut off or hung (not of one that died).
	// Keep it longer than the Raft failover after a leader's process dies
	// (1–2 s at raft_multiplier 1) so that losing the Raft leader does not
	// pause the Red Leader; a Raft leader that vanishes silently (power
	// cut) takes 3–9 s to replace and may pause it for a few seconds.
	CheckinTimeout time.Duration `mapstructure:"checkin_timeout" yaml:"checkin_timeout"`
	// SeparateRoles: a Raft leader that is also the Red Leader hands Raft
	// leadership to another caught-up voter, so that losing one machine
	// costs one failover, not a Raft election followed by a Red Leader
	// failover. Off: the roles may share a machine (one Raft leadership
	// change fewer when they meet). A subnet with one voter has no choice.
	SeparateRoles bool `mapstructure:"separate_roles" yaml:"separate_roles"`
	// ConfirmTimeout: an appointee that does not confirm within this is
	// marked not-leader-material and the next one is appointed.
	ConfirmTimeout time.Duration `mapstructure:"confirm_timeout" yaml:"confirm_timeout"`
	// NLMTTL is the life of automatic NotLeaderMaterial marks.
	NLMTTL time.Duration `mapstructure:"nlm_ttl" yaml:"nlm_ttl"`
	// DeadVoterGrace: a voter dead or gone this long is replaced. Long
	// enough that a reboot does not churn the Raft configuration.
	DeadVoterGrace time.Duration `mapstructure:"dead_voter_grace" yaml:"dead_voter_grace"`
	// QuorumLossTimeout: with no Raft leader this long and most voters
	// gone, the survivors re-bootstrap under a new cluster ID (keeping
	// policy and admin marks). Shorter heals sooner but risks splitting a
	// cluster that was only partitioned.
	QuorumLossTimeout time.Duration `mapstructure:"quorum_loss_timeout" yaml:"quorum_loss_timeout"`
	// BootstrapSettle is the wait after start before the best-ranked
	// member bootstraps a new cluster when none is seen.
	BootstrapSettle time.Duration `mapstructure:"bootstrap_settle" yaml:"bootstrap_settle"`
	// VoterStabilization: a member must be alive this long before it may
	// become a standby or voter.
	VoterStabilization time.Duration `mapstructure:"voter_stabilization" yaml:"voter_stabilization"`
}

// LANDiscovery configures the agent beacon: a small multicast datagram
// (TTL 1, never routed) that lets agents of one subnet find each other.
type LANDiscovery struct {
	// Enabled turns the beacon on. Off: only Join addresses are used.
	Enabled bool `mapstructure:"enabled" yaml:"enabled"`
	// Group is the IPv4 multicast group. Default 239.255.82.76 (site-local
	// scope). Tests use distinct groups so that they do not hear each other.
	Group string `mapstructure:"group" yaml:"group"`
	// Port is the beacon UDP port.
	Port int `mapstructure:"port" yaml:"port"`
	// Interval between beacons once settled. Right after start (and after
	// a re-home) beacons go out faster (0.5 s, 1 s, 2 s, 4 s…) so that
	// agents booting together converge in seconds.
	Interval time.Duration `mapstructure:"interval" yaml:"interval"`
	// Interface names the home interface: the subnet and address come
	// from it (unless set) and the beacon and MS-PCCRD use it. Default: the
	// primary one.
	Interface string `mapstructure:"interface" yaml:"interface"`
}

// Shaping holds bandwidth settings. "0" means unlimited. An agent that
// bootstraps a new election cluster commits them as the subnet's first
// policy; afterwards the committed policy wins and changes only through
// `redleader policy set` (a rate the policy leaves empty, or that does not
// parse, keeps the configured one). Each agent enforces the rates with one
// WAN limiter shared by its origin downloads and one LAN limiter shared by
// the blocks it serves; a policy change reaches them within 2 s, transfers
// in progress included.
type Shaping struct {
	// LeaderRate is the WAN rate of the Red Leader.
	LeaderRate shaping.Rate `mapstructure:"leader_rate" yaml:"leader_rate"`
	// PeerRate is the WAN rate of every other agent: low, so that they wait
	// for the Red Leader's copy instead of competing for the WAN.
	PeerRate shaping.Rate `mapstructure:"peer_rate" yaml:"peer_rate"`
	// LANRate caps what this agent serves to LAN peers: the MS-PCCRR
	// block replies of all its uploads together go through one limiter
	// whose burst is one block (64 KiB). Lower leaves the LAN to other
	// traffic but makes peers wait for blocks: a block reply that waits
	// too long (the peer gives up, or the 15 s upload timeout passes) is
	// cut short, and the peer asks another holder or the origin.
	LANRate shaping.Rate `mapstructure:"lan_rate" yaml:"lan_rate"`
	// WANFallbackDelay: a non-leader whose job got nothing of its content
	// from the Red Leader (no verified block, no progress) for this long
	// fetches it from the origin itself, at peer_rate. A slow Red Leader
	// that makes progress is waited for.
	WANFallbackDelay time.Duration `mapstructure:"wan_fallback_delay" yaml:"wan_fallback_delay"`
}

// Limits of the string and list keys.
const (
	// MaxNameLen bounds node_name and location, in bytes: what the gossip
	// metadata carries (peer's maxMetaString), so nothing is cut.
	MaxNameLen = 64
	// MaxIfaceLen bounds lan_discovery.interface (Linux allows 15 bytes,
	// Windows friendly names are longer).
	MaxIfaceLen = 256
	// MaxPathLen bounds data_dir, api_token_file and api_metrics_token_file.
	MaxPathLen = 4096
	// MaxJoin bounds the join list: a LAN needs a handful of seeds.
	MaxJoin = 256
	// MaxJoinAddrLen bounds one join entry: a 253-byte DNS name and a port.
	MaxJoinAddrLen = 253 + 6
)

// Validate checks every key. The error names the key and the bad value
// (a long value is shortened).
func (c *Config) Validate() error {
	var errs []error
	bad := func(key string, val any, why string) {
		errs = append(errs, fmt.Errorf("%w: %s: %s: %s", ErrInvalid, key, shorten(fmt.Sprint(val)), why))
	}
	text := func(key, s string, max int) bool {
		switch {
		case len(s) > max:
			bad(key, strconv.Quote(s), fmt.Sprintf("%d bytes, at most %d", len(s), max))
		case !printable(s):
			bad(key, strconv.Quote(s), "must be printable UTF-8 (no control characters)")
		default:
			return true
		}
		return false
	}
	port := func(key string, p int, zeroOK bool) {
		if p < 0 || p > 65535 || (p == 0 && !zeroOK) {
			bad(key, p, "port out of range (1-65535)")
		}
	}
	if c.DataDir == "" {
		bad("data_dir", `""`, "must not be empty")
	} else {
		text("data_dir", c.DataDir, MaxPathLen)
	}
	text("node_name", c.NodeName, MaxNameLen)
	text("location", c.Location, MaxNameLen)
	if c.Subnet != "" {
		if _, err := netip.ParsePrefix(c.Subnet); err != nil {
			bad("subnet", strconv.Quote(c.Subnet), "not a CIDR like 10.1.2.0/24")
		}
	}
	if c.AdvertiseAddr != "" {
		if _, err := netip.ParseAddr(c.AdvertiseAddr); err != nil {
			bad("advertise_addr", strconv.Quote(c.AdvertiseAddr), "not an IP address")
		}
	}
	if _, err := netip.ParseAddr(c.BindAddr); err != nil {
		bad("bind_addr", strconv.Quote(c.BindAddr), "not an IP address")
	}
	port("gossip_port", c.GossipPort, true)
	port("peer_port", c.PeerPort, true)
	if err := checkHostPort(c.APIAddr); err != nil {
		bad("api_addr", strconv.Quote(c.APIAddr), err.Error())
	} else if !c.APIAllowRemote && !isLoopback(c.APIAddr) {
		bad("api_addr", strconv.Quote(c.APIAddr), "not a loopback address: set api_allow_remote: true to serve the API "+
			"on the network (every endpoint then needs the token)")
	}
	tokenFile := func(key, path string) {
		if path != "" && text(key, path, MaxPathLen) && !filepath.IsAbs(path) {
			bad(key, strconv.Quote(path), "want an absolute path")
		}
	}
	tokenFile("api_token_file", c.APITokenFile)
	tokenFile("api_metrics_token_file", c.APIMetricsTokenFile)
	if c.APIMetricsTokenFile != "" && c.APIMetricsTokenFile == c.APITokenFile {
		bad("api_metrics_token_file", strconv.Quote(c.APIMetricsTokenFile), "must not be api_token_file (a metrics token reads /metrics only)")
	}
	if len(c.Join) > MaxJoin {
		bad("join", fmt.Sprintf("%d entries", len(c.Join)), fmt.Sprintf("at most %d (a few seeds are enough: gossip finds the rest)", MaxJoin))
	} else {
		for i, j := range c.Join {
			key := fmt.Sprintf("join[%d]", i)
			if !text(key, j, MaxJoinAddrLen) {
				continue
			}
			if _, p, err := net.SplitHostPort(j); err != nil || p == "" {
				bad(key, strconv.Quote(j), "want host:port")
			}
		}
	}
	positive := func(key string, d time.Duration) {
		if d <= 0 {
			bad(key, d, "must be a positive duration like 30s")
		}
	}
	positive("rejoin_interval", c.RejoinInterval)
	positive("rehome_interval", c.RehomeInterval)
	positive("member_retention", c.MemberRetention)
	if shown, err := CheckOriginProxy(c.OriginProxy); err != nil {
		bad("origin_proxy", shown, err.Error())
	}
	c.validateKeys(bad)
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", strconv.Quote(c.LogLevel), "want debug, info, warn or error")
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("log_format", strconv.Quote(c.LogFormat), "want text or json")
	}
	if g, err := netip.ParseAddr(c.LANDiscovery.Group); err != nil || !g.Is4() || !g.IsMulticast() {
		bad("lan_discovery.group", strconv.Quote(c.LANDiscovery.Group), "not an IPv4 multicast address")
	}
	port("lan_discovery.port", c.LANDiscovery.Port, false)
	text("lan_discovery.interface", c.LANDiscovery.Interface, MaxIfaceLen)
	positive("lan_discovery.interval", c.LANDiscovery.Interval)
	d := c.Discovery
	port("discovery.port", d.Port, true)
	if g, err := netip.ParseAddr(d.Group); err != nil || !g.Is4() || !g.IsMulticast() {
		bad("discovery.group", strconv.Quote(d.Group), "not an IPv4 multicast address")
	}
	if d.RequestTimer < 200*time.Millisecond || d.RequestTimer > 500*time.Millisecond {
		bad("discovery.request_timer", d.RequestTimer, "want 200ms to 500ms")
	}
	if d.MaxBackoff < time.Millisecond || d.MaxBackoff > time.Second {
		bad("discovery.max_backoff", d.MaxBackoff, "want 1ms to 1s")
	} else if d.RequestTimer < d.MaxBackoff {
		bad("discovery.request_timer", d.RequestTimer, "must not be below discovery.max_backoff")
	}
	if d.ReplyThreshold < 1 {
		bad("discovery.reply_threshold", d.ReplyThreshold, "must be at least 1")
	}
	if d.ReplyProbability < 0 || d.ReplyProbability > 1 {
		bad("discovery.reply_probability", d.ReplyProbability, "want 0 to 1")
	}
	if _, err := ParseSize(c.Cache.MaxSize); err != nil {
		bad("cache.max_size", strconv.Quote(c.Cache.MaxSize), err.Error())
	}
	if c.Jobs.MaxRunning < 1 || c.Jobs.MaxRunning > 64 {
		bad("jobs.max_running", c.Jobs.MaxRunning, "want 1 to 64")
	}
	positive("jobs.retention", c.Jobs.Retention)
	positive("shaping.wan_fallback_delay", c.Shaping.WANFallbackDelay)
	e := c.Election
	if e.Voter != "auto" && e.Voter != "never" {
		bad("election.voter", strconv.Quote(e.Voter), "want auto or never")
	}
	switch e.MachineClass {
	case "auto", "server", "desktop", "laptop":
	default:
		bad("election.machine_class", strconv.Quote(e.MachineClass), "want auto, server, desktop or laptop")
	}
	if e.RaftMultiplier < 1 || e.RaftMultiplier > 10 {
		bad("election.raft_multiplier", e.RaftMultiplier, "want 1 to 10")
	}
	positive("election.checkin_interval", e.CheckinInterval)
	positive("election.checkin_timeout", e.CheckinTimeout)
	positive("election.confirm_timeout", e.ConfirmTimeout)
	positive("election.nlm_ttl", e.NLMTTL)
	positive("election.dead_voter_grace", e.DeadVoterGrace)
	positive("election.quorum_loss_timeout", e.QuorumLossTimeout)
	positive("election.bootstrap_settle", e.BootstrapSettle)
	if e.VoterStabilization < 0 {
		bad("election.voter_stabilization", e.VoterStabilization, "must not be negative")
	}
	if e.CheckinTimeout > 0 && e.CheckinTimeout <= e.CheckinInterval {
		bad("election.checkin_timeout", e.CheckinTimeout, "must be longer than election.checkin_interval")
	}
	return errors.Join(errs...)
}

// ProxyDirect is the origin_proxy value that uses no proxy, whatever the
// environment says (peer/fetch.ProxyDirect).
const ProxyDirect = "direct"

// MaxProxyLen bounds origin_proxy, in bytes.
const MaxProxyLen = 2048

// CheckOriginProxy checks an origin_proxy value as peer/fetch's NewOrigin
// reads it: "", ProxyDirect, or a URL whose scheme is http, https, socks5
// or socks5h, with a host. It also returns the value as it may be shown
// in an error: quoted, its password hidden, or nothing of it when it may
// hold a password that cannot be told apart.
func CheckOriginProxy(s string) (shown string, err error) {
	if s == "" || s == ProxyDirect {
		return strconv.Quote(s), nil
	}
	if len(s) > MaxProxyLen {
		return fmt.Sprintf("(%d bytes)", len(s)), fmt.Errorf("at most %d bytes", MaxProxyLen)
	}
	shown = strconv.Quote(redactProxy(s))
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return shown, errors.New(`want "direct", "" (the environment's proxies) or a URL like http://proxy.example:3128`)
	}
	switch u.Scheme {
	case "http", "https", "socks5", "socks5h":
	default:
		return shown, fmt.Errorf("scheme %q: want http, https or socks5", u.Scheme)
	}
	return shown, nil
}

// redactProxy is an origin_proxy value with its password hidden; a value
// that does not parse as a URL but may hold one is hidden whole.
func redactProxy(s string) string {
	if u, err := url.Parse(s); err == nil && u.Opaque == "" {
		return u.Redacted()
	}
	if strings.Contains(s, "@") {
		return "(hidden: it may hold a password)"
	}
	return s
}

// MaxClusterKeys bounds cluster_keys: a rotation needs two; every extra
// key is one more trial decryption per gossip packet.
const MaxClusterKeys = 8

// ClusterKeySize is the length of a decoded cluster key.
const ClusterKeySize = 32

// Key returns the primary cluster key: the one that encrypts gossip, signs
// beacons and gives this agent's TLS certificate (cluster_key, or the first
// of cluster_keys). It returns nil, nil when no key is set (open mode).
func (c *Config) Key() ([]byte, error) {
	keys, err := c.Keyring()
	if err != nil || len(keys) == 0 {
		return nil, err
	}
	return keys[0], nil
}

// Keyring decodes the cluster keys, primary first: cluster_key alone, or
// cluster_keys. It returns nil, nil when no key is set (open mode).
func (c *Config) Keyring() ([][]byte, error) {
	var errs []error
	c.validateKeys(func(key string, _ any, why string) {
		errs = append(errs, fmt.Errorf("%s: %s", key, why))
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if c.ClusterKey != "" {
		k, _ := DecodeKey(c.ClusterKey)
		return [][]byte{k}, nil
	}
	var keys [][]byte
	for _, s := range c.ClusterKeys {
		k, _ := DecodeKey(s)
		keys = append(keys, k)
	}
	return keys, nil
}

// DecodeKey decodes one cluster key: standard base64 of 32 bytes, spaces
// around it ignored.
func DecodeKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("empty")
	}
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("not base64")
	}
	if len(k) != ClusterKeySize {
		return nil, fmt.Errorf("decodes to %d bytes, want %d", len(k), ClusterKeySize)
	}
	return k, nil
}

// validateKeys checks cluster_key and cluster_keys; key values are never
// echoed.
func (c *Config) validateKeys(bad func(key string, val any, why string)) {
	const hidden = "(hidden)"
	if c.ClusterKey != "" {
		if len(c.ClusterKeys) > 0 {
			bad("cluster_keys", hidden, "cluster_key is set too: set one of them (cluster_key is the one-key shorthand of cluster_keys)")
		}
		if _, err := DecodeKey(c.ClusterKey); err != nil {
			bad("cluster_key", hidden, err.Error())
		}
		return
	}
	if len(c.ClusterKeys) > MaxClusterKeys {
		bad("cluster_keys", fmt.Sprintf("%d keys", len(c.ClusterKeys)), fmt.Sprintf("at most %d", MaxClusterKeys))
		return
	}
	seen := map[string]int{}
	for i, s := range c.ClusterKeys {
		key := fmt.Sprintf("cluster_keys[%d]", i)
		k, err := DecodeKey(s)
		if err != nil {
			bad(key, hidden, err.Error())
			continue
		}
		if j, dup := seen[string(k)]; dup {
			bad(key, hidden, fmt.Sprintf("same key as cluster_keys[%d]", j))
			continue
		}
		seen[string(k)] = i
	}
}

// ParseSize parses a byte size: 0, 512MB, 20GB, 1.5TB (powers of 1000) or
// 512MiB, 20GiB (powers of 1024).
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return 0, nil
	}
	units := []struct {
		suffix string
		mult   float64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
		{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"kB", 1e3}, {"B", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
			if err != nil || v < 0 || v*u.mult > 1<<62 {
				break
			}
			return int64(v * u.mult), nil
		}
	}
	return 0, errors.New("not a size like 20GB, 512MiB or 0")
}

// shorten cuts a value quoted in an error message to a readable length.
func shorten(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", s[:cut], len(s))
}

// printable reports whether s is valid UTF-8 without control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// isLoopback reports whether the host of a valid host:port is localhost
// or a loopback IP.
func isLoopback(hostport string) bool {
	host, _, _ := net.SplitHostPort(hostport)
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

func checkHostPort(s string) error {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want host:port")
	}
	if _, err := netip.ParseAddr(host); err != nil && host != "localhost" {
		return errors.New("host must be an IP address or localhost")
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return errors.New("port out of range (0-65535)")
	}
	return nil
}
