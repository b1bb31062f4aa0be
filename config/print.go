package config

import (
	"bytes"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/redleader-p2p/redleader/shaping"
)

// YAML renders the config as a YAML document in the file format.
func (c Config) YAML() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c.Map()); err != nil {
		return nil, err
	}
	return buf.Bytes(), enc.Close()
}

// Map returns the config as nested maps keyed like the config file, with
// durations and rates in their human forms, the cluster key and the
// proxy's password hidden.
func (c Config) Map() map[string]any {
	root := map[string]any{}
	for k, v := range flatten(c) {
		switch x := v.(type) {
		case time.Duration:
			v = x.String()
		case shaping.Rate:
			v = x.String()
		}
		if s, _ := v.(string); k == "cluster_key" && s != "" {
			v = "(set)"
		}
		if s, _ := v.(string); k == "origin_proxy" {
			v = redactProxy(s)
		}
		if ks, ok := v.([]string); ok && k == "cluster_keys" {
			hidden := make([]string, len(ks))
			for i := range hidden {
				hidden[i] = "(set)"
			}
			v = hidden
		}
		m := root
		parts := strings.Split(k, ".")
		for _, p := range parts[:len(parts)-1] {
			sub, ok := m[p].(map[string]any)
			if !ok {
				sub = map[string]any{}
				m[p] = sub
			}
			m = sub
		}
		m[parts[len(parts)-1]] = v
	}
	return root
}
