package peer_test

import (
	"bytes"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/config"
	"github.com/redleader-p2p/redleader/internal/logtest"
	"github.com/redleader-p2p/redleader/internal/wait"
	"github.com/redleader-p2p/redleader/peer"
	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/peertest"
)

// reloadAgent is a started agent whose logger writes text to log at the
// level the agent may change, and whose config source (LoadConfig) returns
// what the test puts in src.
type reloadAgent struct {
	*peer.Agent
	start config.Config
	level *slog.LevelVar // nil: the agent was given none
	log   *logtest.Buffer

	mu     sync.Mutex
	src    config.Config
	srcErr error
}

const (
	reloadTestFile = "/etc/redleader/test.yaml"
	reloadSubnet   = "10.98.0.0/24"
)

func startReloadAgent(t *testing.T, cfg config.Config, withLevel bool) *reloadAgent {
	t.Helper()
	r := &reloadAgent{start: cfg, log: &logtest.Buffer{}, src: cfg}
	var leveler slog.Leveler = slog.LevelInfo
	opts := peer.Options{Version: "test", ConfigFile: reloadTestFile, LoadConfig: func() (config.Config, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.src, r.srcErr
	}}
	if withLevel {
		r.level = new(slog.LevelVar)
		opts.Level, leveler = r.level, r.level
	}
	opts.Logger = slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: leveler}))
	a, err := peer.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(t.Context()); err != nil {
		a.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	r.Agent = a
	return r
}

// setSource makes the next LoadConfig return cfg, or err.
func (r *reloadAgent) setSource(cfg config.Config, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.src, r.srcErr = cfg, err
}

// logLine returns the first log line holding msg ("" if none).
func (r *reloadAgent) logLine(msg string) string {
	for line := range strings.Lines(r.log.String()) {
		if strings.Contains(line, msg) {
			return line
		}
	}
	return ""
}

func changedKeys(chs []api.ReloadChange) []string {
	out := []string{}
	for _, c := range chs {
		out = append(out, c.Key)
	}
	return out
}

func configKeys(chs []config.Change) []string {
	out := []string{}
	for _, c := range chs {
		out = append(out, c.Key)
	}
	return out
}

// selfMeta is a's own member's gossip metadata.
func selfMeta(a *peer.Agent) (peer.Meta, bool) {
	for _, m := range a.Members() {
		if m.Node == a.ID() {
			return m.Meta, true
		}
	}
	return peer.Meta{}, false
}

// TestReloadKeys plays the reload table: each live key is applied at once
// (and its effect seen), each other key is named as needing a restart and
// keeps its value, and the shaping rates the committed policy sets are
// flagged as overridden. After every reload, the config in force differs
// from the reloaded one by exactly the restart keys, and from the started
// one by exactly the applied keys.
func TestReloadKeys(t *testing.T) {
	multicast := func(t *testing.T) {
		t.Helper()
		peertest.MulticastOnLo(t)
	}
	var joinPeer *peer.Agent // started by the join case's edit, seen by its check
	tests := []struct {
		name      string
		noLevel   bool                   // the agent has no LevelVar
		needs     func(t *testing.T)     // skip unless the environment allows
		configure func(c *config.Config) // before start
		policy    bool                   // wait for the committed policy before the reload
		edit      func(t *testing.T, r *reloadAgent, c *config.Config)
		applied   []string
		restart   []string
		overrides map[string]string // applied key -> the policy's rate flagged
		check     func(t *testing.T, r *reloadAgent, res api.ReloadResponse)
	}{
		{
			name:    "log_level more verbose",
			edit:    func(_ *testing.T, _ *reloadAgent, c *config.Config) { c.LogLevel = "debug" },
			applied: []string{"log_level"},
			check: func(t *testing.T, r *reloadAgent, _ api.ReloadResponse) {
				if got := r.level.Level(); got != slog.LevelDebug {
					t.Errorf("level = %v, want DEBUG", got)
				}
			},
		},
		{
			name:    "log_level less verbose: the reload line still shows",
			edit:    func(_ *testing.T, _ *reloadAgent, c *config.Config) { c.LogLevel = "error" },
			applied: []string{"log_level"},
			check: func(t *testing.T, r *reloadAgent, _ api.ReloadResponse) {
				if got := r.level.Level(); got != slog.LevelError {
					t.Errorf("level = %v, want ERROR", got)
				}
				if !strings.Contains(r.logLine("config reloaded"), "log_level: info → error") {
					t.Errorf("no reload line at the old level:\n%s", r.log)
				}
			},
		},
		{
			name:    "log_level without a LevelVar needs a restart",
			noLevel: true,
			edit:    func(_ *testing.T, _ *reloadAgent, c *config.Config) { c.LogLevel = "debug" },
			restart: []string{"log_level"},
			check: func(t *testing.T, _ *reloadAgent, res api.ReloadResponse) {
				if res.Restart[0].Note == "" {
					t.Error("no note says why log_level needs a restart")
				}
			},
		},
		{
			name:      "not_leader_material is published",
			configure: func(c *config.Config) { c.Election.Voter = "never" }, // no cluster: nothing else publishes
			edit:      func(_ *testing.T, _ *reloadAgent, c *config.Config) { c.NotLeaderMaterial = true },
			applied:   []string{"not_leader_material"},
			check: func(t *testing.T, r *reloadAgent, _ api.ReloadResponse) {
				wait.For(t, 3*time.Second, "the flag in the agent's own gossip metadata", func() bool {
					m, ok := selfMeta(r.Agent)
					return ok && m.NotLeaderMaterial
				})
			},
		},
		{
			name:    "not_leader_material: the Red Leader gives up its seat",
			policy:  true, // a cluster whose Red Leader is this agent
			edit:    func(_ *testing.T, _ *reloadAgent, c *config.Config) { c.NotLeaderMaterial = true },
			applied: []string{"not_leader_material"},
			check: func(t *testing.T, r *reloadAgent, _ api.ReloadResponse) {
				wait.For(t, 10*time.Second, "no Red Leader any more", func() bool {
					st := r.Status()
					return st.Role != "leader" && st.RedLeader == nil
				})
			},
		},
		{
			name:      "shaping without a policy: the new defaults are in force",
			configure: func(c *config.Config) { c.Election.Voter = "never" }, // alone: no cluster, no policy
			edit: func(_ *testing.T, _ *reloadAgent, c *config.Config) {
				c.Shaping.LANRate, c.Shaping.PeerRate = 2e6, 1e6
			},
			applied: []string{"shaping.lan_rate", "shaping.peer_rate"},
			check: func(t *testing.T, r *reloadAgent, _ api.ReloadResponse) {
				if got := lanMetric(t, r.Agent); got != "2e+06" {
					t.Errorf("LAN limit = %s, want 2e+06 at once", got)
				}
				if got := wanMetric(t, r.Agent); got != "1e+06" {
					t.Errorf("WAN limit = %s, want the new peer rate 1e+06 at once", got)
				}
			},
		},
		{
			name:   "shaping under a committed policy: flagged, the policy's rates stay",
			policy: true,
			edit: func(_ *testing.T, _ *reloadAgent, c *config.Config) {
				c.Shaping.LeaderRate, c.Shaping.LANRate = 50e6, 2e6
			},
			applied:   []string{"shaping.lan_rate", "shaping.leader_rate"},
			overrides: map[string]string{"shaping.leader_rate": "0", "shaping.lan_rate": "0"},
			check: func(t *testing.T, r *reloadAgent, _ api.ReloadResponse) {
				line := r.logLine("config reloaded")
				for _, want := range []string{"policy_overrides=", "shaping.lan_rate: the committed policy's 0 stays in force",
					"shaping.leader_rate: the committed policy's 0 stays in force"} {
					if !strings.Contains(line, want) {
						t.Errorf("reload line lacks %q: %s", want, line)
					}
				}
				time.Sleep(1500 * time.Millisecond) // the policy is re-applied each second
				if got := lanMetric(t, r.Agent); got != "0" {
					t.Errorf("LAN limit = %s, want the policy's 0", got)
				}
			},
		},
		{
			name: "join: a new address is joined at once",
			edit: func(t *testing.T, _ *reloadAgent, c *config.Config) {
				joinPeer = peertest.StartAgent(t, peertest.Config(t, 1, peertest.Options{Subnet: reloadSubnet}), false)
				c.Join = []string{joinPeer.GossipAddr().String()}
				c.RejoinInterval = time.Hour // the join must not wait for a rejoin round
			},
			applied: []string{"join", "rejoin_interval"},
			check: func(t *testing.T, r *reloadAgent, _ api.ReloadResponse) {
				wait.For(t, 10*time.Second, "the agent joined the new join address", func() bool {
					return peertest.AliveSet(r.Agent)[joinPeer.ID()]
				})
			},
		},
		{
			name:    "rehome_interval",
			edit:    func(_ *testing.T, _ *reloadAgent, c *config.Config) { c.RehomeInterval = 7 * time.Second },
			applied: []string{"rehome_interval"},
		},
		{
			name:  "lan_discovery.interval: the beacon restarts",
			needs: multicast,
			configure: func(c *config.Config) {
				c.LANDiscovery.Enabled, c.LANDiscovery.Group = true, "239.255.82.111"
				c.LANDiscovery.Port = peertest.FreeUDPPort(t)
			},
			edit:    func(_ *testing.T, _ *reloadAgent, c *config.Config) { c.LANDiscovery.Interval = 10 * time.Second },
			applied: []string{"lan_discovery.interval"},
		},
		{
			name:  "MS-PCCRD timings: responder and prober restart",
			needs: multicast,
			configure: func(c *config.Config) {
				c.Discovery.Enabled, c.Discovery.Group = true, "239.255.82.112"
				c.Discovery.Port = peertest.FreeUDPPort(t)
			},
			edit: func(_ *testing.T, _ *reloadAgent, c *config.Config) {
				c.Discovery.RequestTimer, c.Discovery.MaxBackoff = 400*time.Millisecond, 100*time.Millisecond
				c.Discovery.ReplyThreshold, c.Discovery.ReplyProbability = 5, 0.5
			},
			applied: []string{"discovery.max_backoff", "discovery.reply_probability", "discovery.reply_threshold",
				"discovery.request_timer"},
			check: func(t *testing.T, r *reloadAgent, _ api.ReloadResponse) {
				var id content.SegmentID
				if _, err := r.Probe(ctxFor(t, 5*time.Second), id, 0); err != nil {
					t.Errorf("probe after the reload: %v", err)
				}
			},
		},
		{
			name: "cache.max_size: evicts at once",
			edit: func(t *testing.T, r *reloadAgent, c *config.Config) {
				f := newTestContent(t, 9, 4*content.BlockSize)
				if _, err := client(t, r.Agent, true).CacheAdd(ctxFor(t, 10*time.Second), f.ci, bytes.NewReader(f.data)); err != nil {
					t.Fatal(err)
				}
				c.Cache.MaxSize = "100KB"
			},
			applied: []string{"cache.max_size"},
			check: func(t *testing.T, r *reloadAgent, _ api.ReloadResponse) {
				list, err := client(t, r.Agent, false).Cache(ctxFor(t, 5*time.Second))
				if err != nil {
					t.Fatal(err)
				}
				if list.MaxBytes != 100e3 || list.Bytes > 100e3 || len(list.Segments) != 0 {
					t.Errorf("cache after the reload: %d of %d bytes, %d segments; want the 256 KiB segment evicted under 100 kB",
						list.Bytes, list.MaxBytes, len(list.Segments))
				}
			},
		},
		{
			name: "keys that need a restart",
			edit: func(_ *testing.T, _ *reloadAgent, c *config.Config) {
				c.NodeName = "renamed"
				c.GossipPort = 17946
				c.LogFormat = "json"
				c.Election.Voter = "never"
				c.ClusterKey = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
				c.Jobs.MaxRunning = 2
				c.MemberRetention = time.Minute
				c.Shaping.WANFallbackDelay = 10 * time.Second
				c.OriginProxy = "direct"
				c.Discovery.Enabled = true
			},
			restart: []string{"cluster_key", "discovery.enabled", "election.voter", "gossip_port", "jobs.max_running",
				"log_format", "member_retention", "node_name", "origin_proxy", "shaping.wan_fallback_delay"},
			check: func(t *testing.T, r *reloadAgent, _ api.ReloadResponse) {
				line := r.logLine("need a restart")
				if strings.Contains(line, "AAECAwQF") || !strings.Contains(line, "cluster_key ( → (set))") {
					t.Errorf("the cluster key is not hidden in: %s", line)
				}
				if st := r.Status(); st.Name != r.start.NodeName {
					t.Errorf("status name %q, want %q until a restart", st.Name, r.start.NodeName)
				}
			},
		},
		{
			name: "live and restart keys at once",
			edit: func(_ *testing.T, _ *reloadAgent, c *config.Config) {
				c.LogLevel, c.PeerPort = "warn", 17381
			},
			applied: []string{"log_level"},
			restart: []string{"peer_port"},
		},
		{
			name: "nothing changed",
			edit: func(*testing.T, *reloadAgent, *config.Config) {},
			check: func(t *testing.T, r *reloadAgent, _ api.ReloadResponse) {
				if r.logLine("config reloaded: no key changed") == "" {
					t.Errorf("no line says nothing changed:\n%s", r.log)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.needs != nil {
				tt.needs(t)
			}
			cfg := peertest.Config(t, 0, peertest.Options{Subnet: reloadSubnet, Configure: func(_ int, c *config.Config) {
				if tt.configure != nil {
					tt.configure(c)
				}
			}})
			r := startReloadAgent(t, cfg, !tt.noLevel)
			if tt.policy {
				wait.For(t, 30*time.Second, "a committed policy and this agent as the Red Leader", func() bool {
					p, err := client(t, r.Agent, false).Policy(ctxFor(t, 2*time.Second))
					return err == nil && p.LANRate != "" && r.Status().Role == "leader"
				})
			}
			beacon, responder, prober := peer.DiscoveryParts(r.Agent)
			next := cfg
			next.Join = slices.Clone(cfg.Join)
			tt.edit(t, r, &next)

			res, err := r.Reload(next)
			if err != nil {
				t.Fatalf("Reload: %v", err)
			}
			if got := changedKeys(res.Applied); !slices.Equal(got, append([]string{}, tt.applied...)) {
				t.Errorf("applied %v, want %v", got, tt.applied)
			}
			if got := changedKeys(res.Restart); !slices.Equal(got, append([]string{}, tt.restart...)) {
				t.Errorf("restart %v, want %v", got, tt.restart)
			}
			for _, ch := range res.Applied {
				if want := tt.overrides[ch.Key]; ch.Policy != want {
					t.Errorf("%s: policy override %q, want %q", ch.Key, ch.Policy, want)
				}
			}
			if res.File != reloadTestFile {
				t.Errorf("file %q, want %q", res.File, reloadTestFile)
			}
			live := peer.LiveConfig(r.Agent)
			if got := configKeys(config.Changes(live, next)); !slices.Equal(got, append([]string{}, tt.restart...)) {
				t.Errorf("in force vs reloaded: %v differ, want exactly the restart keys %v", got, tt.restart)
			}
			if got := configKeys(config.Changes(cfg, live)); !slices.Equal(got, append([]string{}, tt.applied...)) {
				t.Errorf("in force vs started: %v differ, want exactly the applied keys %v", got, tt.applied)
			}
			if len(tt.applied) > 0 {
				line := r.logLine("config reloaded")
				for _, k := range tt.applied {
					if !strings.Contains(line, k+": ") {
						t.Errorf("the reload line does not name %s: %s", k, line)
					}
				}
			}
			if len(tt.restart) > 0 {
				line := r.logLine("these keys need a restart and were left as they were")
				for _, k := range tt.restart {
					if !strings.Contains(line, k+" (") {
						t.Errorf("the restart line does not name %s: %q", k, line)
					}
				}
			} else if r.logLine("need a restart") != "" {
				t.Errorf("a restart line with no restart key:\n%s", r.log)
			}
			// The beacon and MS-PCCRD restart only when their keys change.
			b2, resp2, pr2 := peer.DiscoveryParts(r.Agent)
			restarted := slices.ContainsFunc(tt.applied, func(k string) bool { return strings.HasPrefix(k, "discovery.") })
			if (resp2 != responder || pr2 != prober) != restarted || (restarted && (resp2 == nil || pr2 == nil)) {
				t.Errorf("MS-PCCRD restarted: %v, want %v (running after: %v)", resp2 != responder, restarted, resp2 != nil)
			}
			beaconRestart := slices.Contains(tt.applied, "lan_discovery.interval")
			if (b2 != beacon) != beaconRestart || (beaconRestart && b2 == nil) {
				t.Errorf("beacon restarted: %v, want %v", b2 != beacon, beaconRestart)
			}
			if tt.check != nil {
				tt.check(t, r, res)
			}
		})
	}
}

// TestReloadRefusesBadConfig: a config that does not validate is refused
// whole, whether handed to Reload or re-read by ReloadConfig: nothing
// changes, not even its valid keys, and the log line gives the messages of
// a start-up.
func TestReloadRefusesBadConfig(t *testing.T) {
	cfg := peertest.Config(t, 0, peertest.Options{Subnet: "10.98.1.0/24"})
	r := startReloadAgent(t, cfg, true)
	bad := cfg
	bad.LogLevel = "debug"           // valid, and still not applied
	bad.Discovery.ReplyThreshold = 0 // invalid
	bad.LogFormat = "xml"            // invalid
	wantErr := bad.Validate()
	if wantErr == nil {
		t.Fatal("the bad config validates")
	}
	_, err := r.Reload(bad)
	if !errors.Is(err, config.ErrInvalid) || err.Error() != wantErr.Error() {
		t.Fatalf("Reload = %v, want the validation error %v", err, wantErr)
	}
	r.setSource(config.Config{}, wantErr)
	if _, err := r.ReloadConfig(); !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("ReloadConfig = %v, want ErrInvalid", err)
	}
	if got := config.Changes(cfg, peer.LiveConfig(r.Agent)); len(got) != 0 {
		t.Errorf("a refused reload changed %v", got)
	}
	if got := r.level.Level(); got != slog.LevelInfo {
		t.Errorf("level %v after a refused reload, want INFO", got)
	}
	refused := strings.Count(r.log.String(), "config reload refused: the running config stays")
	line := r.logLine("config reload refused")
	for _, want := range []string{"level=ERROR", "discovery.reply_threshold: 0: must be at least 1",
		`log_format: \"xml\": want text or json`, "file=" + reloadTestFile} {
		if !strings.Contains(line, want) {
			t.Errorf("refusal line lacks %q: %s", want, line)
		}
	}
	if refused != 2 {
		t.Errorf("%d refusal lines, want 2 (one per reload):\n%s", refused, r.log)
	}
}

// TestReloadAPI: POST /v1/reload needs the token, takes no body, re-reads
// the agent's own config source and answers what it did; a bad source is
// 422 with the validation messages; an agent without a source answers 409.
func TestReloadAPI(t *testing.T) {
	cfg := peertest.Config(t, 0, peertest.Options{Subnet: "10.98.2.0/24"})
	r := startReloadAgent(t, cfg, true)
	ctx := ctxFor(t, 30*time.Second)

	var apiErr *api.Error
	if _, err := client(t, r.Agent, false).Reload(ctx); !errors.As(err, &apiErr) || apiErr.Status != http.StatusUnauthorized {
		t.Fatalf("reload without the token: %v, want 401", err)
	}
	c := client(t, r.Agent, true)
	if err := c.Do(ctx, http.MethodPost, api.PathReload, map[string]string{"file": "/tmp/evil.yaml"}, nil); !errors.As(err, &apiErr) ||
		apiErr.Status != http.StatusBadRequest {
		t.Fatalf("reload naming a file: %v, want 400", err)
	}

	next := cfg
	next.LogLevel, next.GossipPort = "debug", 17946
	r.setSource(next, nil)
	res, err := c.Reload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.File != reloadTestFile || !slices.Equal(changedKeys(res.Applied), []string{"log_level"}) ||
		!slices.Equal(changedKeys(res.Restart), []string{"gossip_port"}) || res.Applied[0].New != "debug" {
		t.Fatalf("reload answer %+v", res)
	}
	if r.level.Level() != slog.LevelDebug {
		t.Fatalf("level %v, want DEBUG", r.level.Level())
	}

	bad := next
	bad.LogLevel = "loud"
	r.setSource(config.Config{}, bad.Validate())
	_, err = c.Reload(ctx)
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusUnprocessableEntity ||
		!strings.Contains(apiErr.Message, `log_level: "loud": want debug, info, warn or error`) ||
		!strings.Contains(apiErr.Message, "the running config stays") {
		t.Fatalf("bad source: %v, want 422 naming log_level", err)
	}
	if r.level.Level() != slog.LevelDebug {
		t.Fatalf("level %v after a refused reload, want DEBUG still", r.level.Level())
	}

	plain := peertest.StartAgent(t, peertest.Config(t, 1, peertest.Options{Subnet: "10.98.3.0/24"}), false)
	if _, err := client(t, plain, true).Reload(ctx); !errors.As(err, &apiErr) || apiErr.Status != http.StatusConflict {
		t.Fatalf("agent without a config source: %v, want 409", err)
	}
}
