package peer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/redleader-p2p/redleader/config"
	"github.com/redleader-p2p/redleader/election"
	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/shaping"
)

// Config reload (issue #11): SIGHUP, the Windows service's
// parameter-change control and POST /v1/reload re-read the config the
// agent was started with (Options.LoadConfig) and hand it to Reload, which
// compares it key by key with the config in force. The keys of reloadKeys
// are applied at once; every other changed key needs a restart, is named
// in one log line and keeps its value. A config that does not validate is
// refused whole: nothing changes.

// ErrNoConfigSource: the agent was made without Options.LoadConfig, so
// there is nothing to re-read.
var ErrNoConfigSource = errors.New("this agent has no config source to re-read")

// reloadEffect is what applying a group of live keys takes, done once per
// reload however many keys of the group changed.
type reloadEffect uint8

const (
	// effectRead: the key is read where it is used (the rejoin and
	// re-home loops wake up on a reload and re-arm their timers).
	effectRead reloadEffect = iota
	effectLogLevel
	effectMeta      // gossip metadata: published, the election re-ranks
	effectShaping   // the limiters' local defaults
	effectJoin      // new join addresses joined at once
	effectBeacon    // the agent beacon restarted
	effectDiscovery // the MS-PCCRD responder and prober restarted
	effectCache     // the cache's cap, evicting at once
)

// reloadKey is how one key that can change live is applied.
type reloadKey struct {
	// set copies the key's value from src into dst.
	set    func(dst *config.Config, src config.Config)
	effect reloadEffect
	// note says how the key is applied, for the answer and the log.
	note string
	// restartIf, if set, returns why this agent cannot apply the key live
	// after all ("" when it can).
	restartIf func(a *Agent) string
	// policy, for a shaping rate, is the committed policy's rate for the
	// key, which stays in force over the configured one ("" = none set).
	policy func(p election.Policy) string
}

// reloadKeys is the table of the keys a reload applies live, by dotted
// key. Every key not listed needs a restart.
func reloadKeys() map[string]reloadKey {
	rate := func(get func(election.Policy) string) func(election.Policy) string {
		return func(p election.Policy) string {
			s := get(p)
			if _, err := shaping.ParseRate(s); err != nil {
				return "" // the policy leaves it empty: the configured rate is in force
			}
			return s
		}
	}
	const shapingNote = "this agent's default; the subnet's rates change with `redleader policy set`"
	const discoveryNote = "MS-PCCRD responder and prober restarted, as on a re-home"
	return map[string]reloadKey{
		"log_level": {set: func(d *config.Config, s config.Config) { d.LogLevel = s.LogLevel }, effect: effectLogLevel,
			restartIf: func(a *Agent) string {
				if a.opts.Level == nil {
					return "this agent's logger has no level to change"
				}
				return ""
			}},
		"not_leader_material": {set: func(d *config.Config, s config.Config) { d.NotLeaderMaterial = s.NotLeaderMaterial },
			effect: effectMeta, note: "published in gossip: the election ranks this agent again"},
		"shaping.leader_rate": {set: func(d *config.Config, s config.Config) { d.Shaping.LeaderRate = s.Shaping.LeaderRate },
			effect: effectShaping, note: shapingNote, policy: rate(func(p election.Policy) string { return p.LeaderRate })},
		"shaping.peer_rate": {set: func(d *config.Config, s config.Config) { d.Shaping.PeerRate = s.Shaping.PeerRate },
			effect: effectShaping, note: shapingNote, policy: rate(func(p election.Policy) string { return p.PeerRate })},
		"shaping.lan_rate": {set: func(d *config.Config, s config.Config) { d.Shaping.LANRate = s.Shaping.LANRate },
			effect: effectShaping, note: shapingNote, policy: rate(func(p election.Policy) string { return p.LANRate })},
		"join": {set: func(d *config.Config, s config.Config) { d.Join = slices.Clone(s.Join) },
			effect: effectJoin, note: "new addresses joined now; all retried every rejoin_interval"},
		"rejoin_interval": {set: func(d *config.Config, s config.Config) { d.RejoinInterval = s.RejoinInterval }},
		"rehome_interval": {set: func(d *config.Config, s config.Config) { d.RehomeInterval = s.RehomeInterval }},
		"lan_discovery.interval": {set: func(d *config.Config, s config.Config) { d.LANDiscovery.Interval = s.LANDiscovery.Interval },
			effect: effectBeacon, note: "agent beacon restarted"},
		"discovery.request_timer": {set: func(d *config.Config, s config.Config) { d.Discovery.RequestTimer = s.Discovery.RequestTimer },
			effect: effectDiscovery, note: discoveryNote},
		"discovery.max_backoff": {set: func(d *config.Config, s config.Config) { d.Discovery.MaxBackoff = s.Discovery.MaxBackoff },
			effect: effectDiscovery, note: discoveryNote},
		"discovery.reply_threshold": {set: func(d *config.Config, s config.Config) { d.Discovery.ReplyThreshold = s.Discovery.ReplyThreshold },
			effect: effectDiscovery, note: discoveryNote},
		"discovery.reply_probability": {set: func(d *config.Config, s config.Config) {
			d.Discovery.ReplyProbability = s.Discovery.ReplyProbability
		}, effect: effectDiscovery, note: discoveryNote},
		"cache.max_size": {set: func(d *config.Config, s config.Config) { d.Cache.MaxSize = s.Cache.MaxSize },
			effect: effectCache, note: "least recently used segments evicted at once if over the cap"},
	}
}

// liveConfig is the config in force (see Agent.live).
func (a *Agent) liveConfig() config.Config {
	c, _ := a.liveState()
	return c
}

// liveState is the config in force and a channel the next reload that
// applies a key closes.
func (a *Agent) liveState() (config.Config, <-chan struct{}) {
	a.liveMu.Lock()
	defer a.liveMu.Unlock()
	return a.live, a.liveGen
}

// ReloadConfig re-reads the config from where it was read at start
// (Options.LoadConfig: the same file, environment and flags) and applies
// it with Reload. SIGHUP, POST /v1/reload and the Windows service's
// parameter-change control call it. A config that does not load or
// validate is refused whole, logged with the messages of a start-up:
// the running config stays. The error wraps config.ErrInvalid then;
// ErrNoConfigSource without Options.LoadConfig; ErrClosed once closing.
func (a *Agent) ReloadConfig() (api.ReloadResponse, error) {
	if a.opts.LoadConfig == nil {
		return api.ReloadResponse{}, ErrNoConfigSource
	}
	cfg, err := a.opts.LoadConfig()
	if err != nil {
		a.logRefused(err)
		return api.ReloadResponse{File: a.opts.ConfigFile, Applied: []api.ReloadChange{}, Restart: []api.ReloadChange{}}, err
	}
	return a.Reload(cfg)
}

// Reload applies cfg, a full config (as config.Load returns it), to the
// running agent: the keys of reloadKeys that changed take effect at once;
// the other changed keys need a restart and keep their values. One log
// line says what was applied (and which applied rates the committed
// policy overrides), one names the keys that need a restart. A cfg that
// does not validate is refused whole (the error wraps config.ErrInvalid)
// and nothing changes. Reloads run one at a time; safe to call before
// Start (the values are then used by Start).
func (a *Agent) Reload(cfg config.Config) (api.ReloadResponse, error) {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	res := api.ReloadResponse{File: a.opts.ConfigFile, Applied: []api.ReloadChange{}, Restart: []api.ReloadChange{}}
	if err := cfg.Validate(); err != nil {
		a.logRefused(err)
		return res, err
	}
	old := a.liveConfig()
	next := old
	table := reloadKeys()
	effects := map[reloadEffect]bool{}
	for _, ch := range config.Changes(old, cfg) {
		rc := api.ReloadChange{Key: ch.Key, Old: ch.Old, New: ch.New}
		k, live := table[ch.Key]
		if live && k.restartIf != nil {
			if why := k.restartIf(a); why != "" {
				live, rc.Note = false, why
			}
		}
		if !live {
			res.Restart = append(res.Restart, rc)
			continue
		}
		k.set(&next, cfg)
		rc.Note = k.note
		effects[k.effect] = true
		res.Applied = append(res.Applied, rc)
	}
	// The live keys are checked against each other by cfg's validation;
	// this guards a rule that would tie one to a key kept until restart.
	if err := next.Validate(); err != nil {
		err = fmt.Errorf("%w (with the keys that need a restart kept as they are)", err)
		a.logRefused(err)
		return res, err
	}

	a.life.Lock()
	defer a.life.Unlock()
	if a.closing.Load() {
		return res, ErrClosed
	}
	a.liveMu.Lock()
	a.live = next
	if len(res.Applied) > 0 {
		close(a.liveGen) // wake the loops that read their timings from live
		a.liveGen = make(chan struct{})
	}
	a.liveMu.Unlock()

	var newLevel slog.Level
	if effects[effectLogLevel] {
		_ = newLevel.UnmarshalText([]byte(next.LogLevel)) // validated
		if newLevel < a.opts.Level.Level() {
			a.opts.Level.Set(newLevel) // more verbose: before the log line, which then shows
		}
	}
	a.applyReload(effects, old, next, &res)
	a.logReload(res)
	if effects[effectLogLevel] {
		a.opts.Level.Set(newLevel) // less verbose: after the log line, which still shows
	}
	return res, nil
}

// applyReload carries out the effects of the applied keys (a.life held)
// and fills in what the committed policy overrides.
func (a *Agent) applyReload(effects map[reloadEffect]bool, old, next config.Config, res *api.ReloadResponse) {
	if effects[effectMeta] {
		a.updateMeta(func(m *Meta) { m.NotLeaderMaterial = next.NotLeaderMaterial })
		a.publishMeta()
	}
	if effects[effectShaping] {
		var p election.Policy // none yet: the configured rates are in force
		if n := a.Election(); n != nil {
			p = n.State().Policy
		}
		a.followPolicy(p)
		table := reloadKeys()
		for i, ch := range res.Applied {
			if k := table[ch.Key]; k.policy != nil {
				res.Applied[i].Policy = k.policy(p)
			}
		}
	}
	if effects[effectJoin] {
		var added []string
		for _, j := range next.Join {
			if !slices.Contains(old.Join, j) {
				added = append(added, j)
			}
		}
		a.requestJoin(added...)
	}
	if effects[effectBeacon] {
		// The beacon is closed without a.mu: its send loop reads the
		// agent's announce under a.mu, so Close (which waits for the
		// loop) under the lock deadlocks.
		a.mu.Lock()
		old := a.beacon
		a.beacon = nil
		a.mu.Unlock()
		if old != nil {
			a.stats.addBeacon(old.Stats())
			if err := old.Close(); err != nil {
				a.log.Debug("closing the beacon for a reload", "err", err)
			}
			a.mu.Lock()
			if a.beacon == nil && !a.closing.Load() {
				if err := a.startBeaconLocked(); err != nil {
					a.log.Warn("LAN discovery of agents is off after the reload", "err", err)
				}
			}
			a.mu.Unlock()
		}
	}
	if effects[effectDiscovery] && a.content != nil {
		a.mu.Lock()
		a.content.mu.Lock()
		running := a.content.responder != nil
		a.content.mu.Unlock()
		if running {
			if err := a.stopDiscoveryLocked(); err != nil {
				a.log.Debug("stopping MS-PCCRD for a reload", "err", err)
			}
			if err := a.startDiscoveryLocked(); err != nil {
				a.log.Warn("MS-PCCRD discovery is off after the reload", "err", err)
			}
		}
		a.mu.Unlock()
	}
	if effects[effectCache] && a.content != nil {
		if !a.content.cache.SetMaxBytes(next.Cache.MaxBytes()) {
			for i, ch := range res.Applied {
				if ch.Key == "cache.max_size" {
					res.Applied[i].Note = "segments in use keep the cache over the new cap until they are released"
				}
			}
		}
	}
}

// logReload logs what a reload did: one line for the applied keys (with
// the rates the committed policy overrides), one naming the keys that
// need a restart.
func (a *Agent) logReload(res api.ReloadResponse) {
	if len(res.Applied) == 0 && len(res.Restart) == 0 {
		a.log.Info("config reloaded: no key changed", "file", res.File)
		return
	}
	if len(res.Applied) > 0 {
		var applied, overridden []string
		for _, ch := range res.Applied {
			applied = append(applied, fmt.Sprintf("%s: %s → %s", ch.Key, ch.Old, ch.New))
			if ch.Policy != "" {
				overridden = append(overridden, fmt.Sprintf("%s: the committed policy's %s stays in force (redleader policy set changes it)",
					ch.Key, ch.Policy))
			}
		}
		args := []any{"file", res.File, "applied", strings.Join(applied, "; ")}
		if len(overridden) > 0 {
			args = append(args, "policy_overrides", strings.Join(overridden, "; "))
		}
		a.log.Info("config reloaded", args...)
	}
	if len(res.Restart) > 0 {
		var keys []string
		for _, ch := range res.Restart {
			s := fmt.Sprintf("%s (%s → %s)", ch.Key, ch.Old, ch.New)
			if ch.Note != "" {
				s += ": " + ch.Note
			}
			keys = append(keys, s)
		}
		a.log.Warn("config reload: these keys need a restart and were left as they were", "file", res.File,
			"keys", strings.Join(keys, "; "))
	}
}

// logRefused logs a config refused by a reload, with the messages a bad
// config gives at start-up (several bad keys joined with "; ").
func (a *Agent) logRefused(err error) {
	a.log.Error("config reload refused: the running config stays", "file", a.opts.ConfigFile, "err", oneLine(err))
}

// oneLine joins the lines of an error (errors.Join of several bad keys).
func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}

// addReloadRoutes registers POST /v1/reload (token): the agent re-reads
// its own config file; the request names nothing.
func (a *Agent) addReloadRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+api.PathReload, func(w http.ResponseWriter, r *http.Request) {
		a.mutating(w, r, func(_ context.Context, body []byte) (any, int, error) {
			if len(bytes.TrimSpace(body)) > 0 {
				return nil, http.StatusBadRequest,
					errors.New("a reload takes no body: the agent re-reads the config it was started with")
			}
			res, err := a.ReloadConfig()
			switch {
			case err == nil:
				return res, http.StatusOK, nil
			case errors.Is(err, ErrNoConfigSource):
				return nil, http.StatusConflict, err
			case errors.Is(err, config.ErrInvalid):
				return nil, http.StatusUnprocessableEntity, errors.New(oneLine(err) + " (the running config stays)")
			case errors.Is(err, ErrClosed):
				return nil, http.StatusServiceUnavailable, err
			}
			return nil, http.StatusInternalServerError, err
		})
	})
}
