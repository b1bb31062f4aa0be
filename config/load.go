package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/redleader-p2p/redleader/shaping"
)

// EnvPrefix is the prefix of environment variables that set config keys:
// REDLEADER_GOSSIP_PORT, REDLEADER_LAN_DISCOVERY_PORT, ... Any other
// REDLEADER_* variable is an error (but those of NonConfigEnv).
const EnvPrefix = "REDLEADER"

// EnvName is the environment variable that sets key ("lan_discovery.port"
// -> REDLEADER_LAN_DISCOVERY_PORT).
func EnvName(key string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// NonConfigEnv reports whether name is one of the REDLEADER_* variables
// of the project's own tooling, which set no config key and are allowed
// in an agent's environment (the lab starts agents with the environment of
// its test process).
func NonConfigEnv(name string) bool {
	switch name {
	case "REDLEADER_BIN", "REDLEADER_LAB_BUILD_DIR", // lab/binary.go
		"REDLEADER_CACHE_CRASH_DIR", "REDLEADER_CACHE_CRASH_SEED": // peer/cache/crash_test.go
		return true
	}
	return false
}

// checkEnv refuses REDLEADER_* variables of environ (os.Environ's form)
// that set no config key: a typo would otherwise be ignored silently.
func checkEnv(environ []string) error {
	known := map[string]bool{}
	for _, k := range Keys() {
		known[EnvName(k)] = true
	}
	var errs []error
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if runtime.GOOS == "windows" {
			name = strings.ToUpper(name) // Windows variable names ignore case
		}
		if !strings.HasPrefix(name, EnvPrefix+"_") || known[name] || NonConfigEnv(name) {
			continue
		}
		errs = append(errs, fmt.Errorf("%w: environment variable %s: unknown (not a config key; see redleader.example.yaml for the keys)", ErrInvalid, name))
	}
	return errors.Join(errs...)
}

// Default returns the configuration used when nothing else is set. Every
// default is chosen for a real machine on a branch-office LAN.
func Default() Config {
	return Config{
		DataDir:         DefaultDataDir(),
		NodeName:        defaultNodeName(),
		BindAddr:        "0.0.0.0",
		GossipPort:      7946,
		PeerPort:        7381,
		APIAddr:         "127.0.0.1:7380",
		Join:            []string{},
		ClusterKeys:     []string{},
		RejoinInterval:  30 * time.Second,
		RehomeInterval:  5 * time.Second,
		MemberRetention: 10 * time.Minute,
		LogLevel:        "info",
		LogFormat:       "text",
		LANDiscovery: LANDiscovery{
			Enabled:  true,
			Group:    "239.255.82.76",
			Port:     7382,
			Interval: 30 * time.Second,
		},
		Shaping: Shaping{
			LeaderRate:       0,
			PeerRate:         256e3,
			LANRate:          0,
			WANFallbackDelay: 30 * time.Second,
		},
		Discovery: Discovery{
			Enabled:          true,
			Port:             3702,
			Group:            "239.255.255.250",
			RequestTimer:     300 * time.Millisecond,
			MaxBackoff:       65 * time.Millisecond,
			ReplyThreshold:   10,
			ReplyProbability: 0.33,
		},
		Cache: Cache{MaxSize: "20GB"},
		Jobs:  Jobs{MaxRunning: 4, Retention: 24 * time.Hour},
		Election: Election{
			Voter:              "auto",
			MachineClass:       "auto",
			RaftMultiplier:     1,
			CheckinInterval:    time.Second,
			CheckinTimeout:     3 * time.Second,
			SeparateRoles:      true,
			ConfirmTimeout:     2 * time.Second,
			NLMTTL:             10 * time.Minute,
			DeadVoterGrace:     60 * time.Second,
			QuorumLossTimeout:  30 * time.Second,
			BootstrapSettle:    1500 * time.Millisecond,
			VoterStabilization: 5 * time.Second,
		},
	}
}

// defaultNodeName is the hostname, cut to MaxNameLen bytes (at a rune
// boundary) so that the defaults are valid on any machine.
func defaultNodeName() string {
	host, _ := os.Hostname()
	if len(host) <= MaxNameLen {
		return host
	}
	cut := MaxNameLen
	for cut > 0 && !utf8.RuneStart(host[cut]) {
		cut--
	}
	return host[:cut]
}

// DefaultDataDir is a platform-appropriate directory writable by the user
// running the agent.
func DefaultDataDir() string {
	root := os.Geteuid() == 0
	switch runtime.GOOS {
	case "windows":
		if pd := os.Getenv("ProgramData"); pd != "" {
			return filepath.Join(pd, "redleader")
		}
	case "darwin":
		if root {
			return "/Library/Application Support/redleader"
		}
	default:
		if root {
			return "/var/lib/redleader"
		}
		if s := os.Getenv("XDG_STATE_HOME"); s != "" {
			return filepath.Join(s, "redleader")
		}
		if h, err := os.UserHomeDir(); err == nil {
			return filepath.Join(h, ".local", "state", "redleader")
		}
	}
	if d, err := os.UserConfigDir(); err == nil {
		return filepath.Join(d, "redleader")
	}
	return filepath.Join(os.TempDir(), "redleader")
}

// Keys lists every config key in dotted form ("lan_discovery.port").
func Keys() []string {
	m := flatten(Default())
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Load builds the effective config: defaults, then the YAML file at path
// (if path is not empty), then REDLEADER_* environment variables, then the
// flags in fs that the user set. flagKeys maps a flag name to its config
// key. Every error wraps ErrInvalid and names the key at fault.
func Load(path string, fs *pflag.FlagSet, flagKeys map[string]string) (Config, error) {
	v := viper.New()
	for k, val := range flatten(Default()) {
		v.SetDefault(k, val)
	}
	if path != "" {
		v.SetConfigFile(path)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return Config{}, fmt.Errorf("%w: config file %s: %w", ErrInvalid, path, unwrapViper(err))
		}
	}
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	for name, key := range flagKeys {
		if f := fs.Lookup(name); f != nil {
			if err := v.BindPFlag(key, f); err != nil {
				return Config{}, fmt.Errorf("bind flag %s: %w", name, err)
			}
		}
	}

	known := Keys()
	for _, k := range v.AllKeys() {
		if !slices.Contains(known, k) {
			return Config{}, fmt.Errorf("%w: %s: unknown key (see redleader.example.yaml for the keys)", ErrInvalid, k)
		}
	}
	if err := checkEnv(os.Environ()); err != nil {
		return Config{}, err
	}

	var cfg Config
	for _, k := range known {
		if err := decodeKey(v, k, &cfg); err != nil {
			return Config{}, err
		}
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// decodeKey decodes one key into cfg so that a type error names that key.
func decodeKey(v *viper.Viper, key string, cfg *Config) error {
	path := strings.Split(key, ".")
	nested := map[string]any{}
	m := nested
	for _, p := range path[:len(path)-1] {
		next := map[string]any{}
		m[p] = next
		m = next
	}
	m[path[len(path)-1]] = v.Get(key)
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result:           cfg,
		WeaklyTypedInput: true,
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			rateHook,
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.StringToSliceHookFunc(","),
			mapstructure.TextUnmarshallerHookFunc(),
		),
	})
	if err != nil {
		return fmt.Errorf("config decoder: %w", err)
	}
	if err := dec.Decode(nested); err != nil {
		return fmt.Errorf("%w: %s: %v: %s", ErrInvalid, key, v.Get(key), decodeReason(err))
	}
	return nil
}

// rateHook makes a bare number in a rate field go through ParseRate, so
// "leader_rate: 50" is an error (50 what?) rather than 50 bit/s.
func rateHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeFor[shaping.Rate]() || from == reflect.TypeFor[shaping.Rate]() {
		return data, nil
	}
	r, err := shaping.ParseRate(fmt.Sprint(data))
	if err != nil {
		return nil, err
	}
	return r, nil
}

// decodeReason trims mapstructure's wrapping to the part a user can act on.
func decodeReason(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	msg = strings.TrimSpace(msg)
	switch {
	case strings.Contains(msg, "time: "), strings.Contains(msg, "duration"):
		return "not a duration like 5s or 1m30s"
	case errors.Is(err, shaping.ErrBadRate):
		return "not a rate like 50Mbit, 256kbit or 0"
	}
	return msg
}

func unwrapViper(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe
	}
	return err
}

// flatten turns a Config into dotted keys and values, following the
// mapstructure tags, so defaults and the key list come from one place.
func flatten(c Config) map[string]any {
	out := map[string]any{}
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			key := f.Tag.Get("mapstructure")
			if prefix != "" {
				key = prefix + "." + key
			}
			fv := v.Field(i)
			if fv.Kind() == reflect.Struct && f.Type.PkgPath() != "time" {
				walk(key, fv)
				continue
			}
			out[key] = fv.Interface()
		}
	}
	walk("", reflect.ValueOf(c))
	return out
}
