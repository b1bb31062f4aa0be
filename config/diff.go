package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
)

// Change is one key whose value differs between two configs, with both
// values as `redleader config` shows them (cluster keys and the proxy's
// password hidden).
type Change struct {
	Key string // dotted, as in Keys: "shaping.leader_rate"
	Old string
	New string
}

// Changes lists the keys whose values differ from old to new, sorted by
// key. Every key of Keys is compared, so a key added to Config later is
// never missed. An empty and a nil list are the same value. A change of a
// hidden value (a cluster key) is listed even though both sides show
// "(set)".
func Changes(old, new Config) []Change {
	a, b := flatten(old), flatten(new)
	var out []Change
	for k, va := range a {
		if sameValue(va, b[k]) {
			continue
		}
		out = append(out, Change{Key: k, Old: shownValue(old, k), New: shownValue(new, k)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

func sameValue(a, b any) bool {
	if sa, ok := a.([]string); ok {
		sb, _ := b.([]string)
		if len(sa) == 0 && len(sb) == 0 {
			return true
		}
	}
	return reflect.DeepEqual(a, b)
}

// shownValue is key's value in c as Map renders it: durations and rates
// in their human forms, secrets hidden, a list joined with commas.
func shownValue(c Config, key string) string {
	var v any = c.Map()
	for _, p := range strings.Split(key, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = m[p]
	}
	if l, ok := v.([]string); ok {
		return "[" + strings.Join(l, ", ") + "]"
	}
	return fmt.Sprint(v)
}
