//go:build linux

package lab

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
)

// WANCounters are the byte counters of the origin's end of the WAN link
// (its eth0): everything the link carried, headers included (Ethernet,
// IP, TCP), since the lab was built.
type WANCounters struct {
	// Down is what the origin sent towards the subnets (eth0 tx).
	Down int64
	// Up is what the origin received from them (eth0 rx).
	Up int64
}

// Sub returns c − before, counter by counter.
func (c WANCounters) Sub(before WANCounters) WANCounters {
	return WANCounters{Down: c.Down - before.Down, Up: c.Up - before.Up}
}

// WAN reads the WAN link's counters at the origin. The origin's namespace
// holds nothing but the origin's end of the link and loopback, so these
// count exactly the bytes that crossed the WAN: traffic between processes
// of the origin namespace (a relay in front of a server) stays on lo.
func (l *Lab) WAN() (WANCounters, error) {
	out, err := exec.Command("ip", "-n", l.origin.NS, "-j", "-s", "link", "show", "dev", "eth0").Output()
	if err != nil {
		return WANCounters{}, fmt.Errorf("lab: read WAN counters: %w", err)
	}
	var links []struct {
		Stats struct {
			RX struct {
				Bytes int64 `json:"bytes"`
			} `json:"rx"`
			TX struct {
				Bytes int64 `json:"bytes"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		return WANCounters{}, fmt.Errorf("lab: read WAN counters: unexpected ip output %q: %v", strings.TrimSpace(string(out)), err)
	}
	return WANCounters{Down: links[0].Stats.TX.Bytes, Up: links[0].Stats.RX.Bytes}, nil
}

// SetWANRate reshapes the WAN link in both directions (tc syntax, as
// Options.WANRate; "off" removes the shaping), keeping Options' burst and
// latency. Tests that share one lab between cases use it between them.
func (l *Lab) SetWANRate(rate string) error {
	if strings.ContainsAny(rate, " \t\n") || rate == "" {
		return fmt.Errorf("%w: wan rate %q", ErrOptions, rate)
	}
	for _, end := range []struct{ ns, dev string }{{l.router.NS, "wan0"}, {l.origin.NS, "eth0"}} {
		if rate == "off" {
			// No qdisc to delete is not an error.
			_ = run("tc", "-n", end.ns, "qdisc", "del", "dev", end.dev, "root")
			continue
		}
		if err := run("tc", "-n", end.ns, "qdisc", "replace", "dev", end.dev, "root", "tbf",
			"rate", rate, "burst", l.opts.WANBurst, "latency", l.opts.WANLatency); err != nil {
			return fmt.Errorf("lab: set WAN rate: %w", err)
		}
	}
	return nil
}
