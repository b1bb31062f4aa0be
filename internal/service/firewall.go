package service

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/redleader-p2p/redleader/config"
)

// FirewallRule is one inbound allow rule of Windows Firewall: the agent's
// program, on its ports of one protocol, on domain and private networks.
type FirewallRule struct {
	Name     string // "redleader TCP 7381,7946": the ports are in the name
	Protocol string // TCP or UDP
	Ports    []int  // ascending
}

// FirewallRules are the inbound rules the agent's listening ports need
// under cfg: gossip (TCP and UDP), the peer port (TCP: MS-PCCRR, Raft,
// cluster RPC), the LAN beacon and MS-PCCRD (UDP) when enabled, and the API
// port only when api_allow_remote opens it beyond loopback.
func FirewallRules(cfg config.Config) []FirewallRule {
	tcp := []int{cfg.GossipPort, cfg.PeerPort}
	udp := []int{cfg.GossipPort}
	if cfg.LANDiscovery.Enabled {
		udp = append(udp, cfg.LANDiscovery.Port)
	}
	if cfg.Discovery.Enabled {
		udp = append(udp, cfg.Discovery.Port)
	}
	if cfg.APIAllowRemote {
		if _, p, err := net.SplitHostPort(cfg.APIAddr); err == nil {
			if n, err := strconv.Atoi(p); err == nil {
				tcp = append(tcp, n)
			}
		}
	}
	var rules []FirewallRule
	for _, r := range []struct {
		proto string
		ports []int
	}{{"TCP", tcp}, {"UDP", udp}} {
		ports := slices.Compact(slices.Sorted(slices.Values(slices.DeleteFunc(r.ports, func(p int) bool { return p <= 0 }))))
		if len(ports) == 0 {
			continue
		}
		rules = append(rules, FirewallRule{Name: Name + " " + r.proto + " " + joinPorts(ports), Protocol: r.proto, Ports: ports})
	}
	return rules
}

func joinPorts(ports []int) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

// netshAddArgs are netsh's arguments adding r for program.
func (r FirewallRule) netshAddArgs(program string) []string {
	return []string{"advfirewall", "firewall", "add", "rule",
		"name=" + r.Name, "dir=in", "action=allow", "protocol=" + r.Protocol, "localport=" + joinPorts(r.Ports),
		"program=" + program, "profile=domain,private", "enable=yes",
		"description=redleader agent, added by redleader service install"}
}

// NetshCommandLine is the Windows command line of netsh with args, each
// key=value argument written key="value" when the value needs quotes (a
// rule name or a program path with spaces), as netsh's documentation
// writes them. (Go's own quoting would quote the whole argument, which
// netsh does not document.)
func NetshCommandLine(args []string) string {
	var b strings.Builder
	b.WriteString("netsh")
	for _, a := range args {
		b.WriteByte(' ')
		k, v, ok := strings.Cut(a, "=")
		if ok && strings.ContainsAny(v, " \t") {
			b.WriteString(k + `="` + v + `"`)
			continue
		}
		b.WriteString(a)
	}
	return b.String()
}

// Firewall adds and removes the agent's Windows Firewall rules with netsh.
// The names of the rules it added are kept in State, so that an uninstall
// removes them even after the ports changed.
type Firewall struct {
	Run     Runner
	Out     io.Writer
	Program string // the agent's executable
	State   string // file listing the rules added, one name a line
}

func (f *Firewall) recorded() []string {
	b, err := os.ReadFile(f.State)
	if err != nil {
		return nil
	}
	var names []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			names = append(names, l)
		}
	}
	return names
}

// Apply makes rules exist for Program: a rule of the same name for
// another program is replaced, a recorded rule no longer wanted (the ports
// changed) is deleted. It reports whether it changed anything.
func (f *Firewall) Apply(ctx context.Context, rules []FirewallRule) (bool, error) {
	changed := false
	var names []string
	for _, r := range rules {
		names = append(names, r.Name)
		out, err := f.Run(ctx, "netsh", "advfirewall", "firewall", "show", "rule", "name="+r.Name, "verbose")
		if err == nil && strings.Contains(strings.ToLower(out), strings.ToLower(f.Program)) {
			fmt.Fprintf(f.Out, "kept firewall rule %q\n", r.Name)
			continue
		}
		if err == nil { // same name, another program: replace it
			if _, err := run(ctx, f.Run, "netsh", "advfirewall", "firewall", "delete", "rule", "name="+r.Name); err != nil {
				return changed, err
			}
		}
		if _, err := run(ctx, f.Run, "netsh", r.netshAddArgs(f.Program)...); err != nil {
			return changed, err
		}
		fmt.Fprintf(f.Out, "added firewall rule %q (inbound %s %s, domain and private networks)\n", r.Name, r.Protocol, joinPorts(r.Ports))
		changed = true
	}
	for _, old := range f.recorded() {
		if !slices.Contains(names, old) {
			if f.delete(ctx, old) {
				changed = true
			}
		}
	}
	if !slices.Equal(f.recorded(), names) {
		if _, err := writeIfChanged(f.State, []byte(strings.Join(names, "\n")+"\n"), 0o644); err != nil {
			return changed, err
		}
	}
	return changed, nil
}

// Remove deletes rules and every recorded rule, then the record.
func (f *Firewall) Remove(ctx context.Context, rules []FirewallRule) error {
	names := f.recorded()
	for _, r := range rules {
		if !slices.Contains(names, r.Name) {
			names = append(names, r.Name)
		}
	}
	for _, n := range names {
		f.delete(ctx, n)
	}
	return removeFile(io.Discard, f.State)
}

// delete deletes the rules named name, if any, and says so.
func (f *Firewall) delete(ctx context.Context, name string) bool {
	if _, err := f.Run(ctx, "netsh", "advfirewall", "firewall", "delete", "rule", "name="+name); err != nil {
		return false // "No rules match the specified criteria."
	}
	fmt.Fprintf(f.Out, "removed firewall rule %q\n", name)
	return true
}
