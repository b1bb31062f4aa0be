package service

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/redleader-p2p/redleader/config"
)

func TestFirewallRules(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*config.Config)
		want   []FirewallRule
	}{
		{"defaults", func(*config.Config) {}, []FirewallRule{
			{Name: "redleader TCP 7381,7946", Protocol: "TCP", Ports: []int{7381, 7946}},
			{Name: "redleader UDP 3702,7382,7946", Protocol: "UDP", Ports: []int{3702, 7382, 7946}},
		}},
		{"no multicast discovery", func(c *config.Config) { c.LANDiscovery.Enabled, c.Discovery.Enabled = false, false }, []FirewallRule{
			{Name: "redleader TCP 7381,7946", Protocol: "TCP", Ports: []int{7381, 7946}},
			{Name: "redleader UDP 7946", Protocol: "UDP", Ports: []int{7946}},
		}},
		{"remote API and other ports", func(c *config.Config) {
			c.APIAllowRemote, c.APIAddr, c.GossipPort, c.PeerPort = true, "[fd00::1]:9000", 8000, 8001
		}, []FirewallRule{
			{Name: "redleader TCP 8000,8001,9000", Protocol: "TCP", Ports: []int{8000, 8001, 9000}},
			{Name: "redleader UDP 3702,7382,8000", Protocol: "UDP", Ports: []int{3702, 7382, 8000}},
		}},
		{"loopback API gets no rule", func(c *config.Config) { c.APIAddr = "127.0.0.1:9000" }, []FirewallRule{
			{Name: "redleader TCP 7381,7946", Protocol: "TCP", Ports: []int{7381, 7946}},
			{Name: "redleader UDP 3702,7382,7946", Protocol: "UDP", Ports: []int{3702, 7382, 7946}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			tc.change(&cfg)
			if got := FirewallRules(cfg); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("FirewallRules = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestNetshCommandLine(t *testing.T) {
	r := FirewallRule{Name: "redleader TCP 7381,7946", Protocol: "TCP", Ports: []int{7381, 7946}}
	got := NetshCommandLine(r.netshAddArgs(`C:\Program Files\redleader\redleader.exe`))
	want := `netsh advfirewall firewall add rule name="redleader TCP 7381,7946" dir=in action=allow protocol=TCP ` +
		`localport=7381,7946 program="C:\Program Files\redleader\redleader.exe" profile=domain,private enable=yes ` +
		`description="redleader agent, added by redleader service install"`
	if got != want {
		t.Errorf("command line\n%s\nwant\n%s", got, want)
	}
}

// fakeNetsh is netsh advfirewall with its rules: name → program.
type fakeNetsh struct {
	rules map[string][]string // a name may hold several rules
	calls []string
}

func (f *fakeNetsh) run(_ context.Context, name string, args ...string) (string, error) {
	f.calls = append(f.calls, strings.Join(args, " "))
	if name != "netsh" || len(args) < 5 || args[0] != "advfirewall" || args[1] != "firewall" {
		return "", fmt.Errorf("unexpected %s %q", name, args)
	}
	kv := map[string]string{}
	for _, a := range args[4:] {
		if k, v, ok := strings.Cut(a, "="); ok {
			kv[k] = v
		}
	}
	rule := kv["name"]
	switch args[2] {
	case "show":
		if len(f.rules[rule]) == 0 {
			return "No rules match the specified criteria.\n", errExit
		}
		var b strings.Builder
		for _, p := range f.rules[rule] {
			fmt.Fprintf(&b, "Rule Name: %s\nProgram: %s\n", rule, p)
		}
		return b.String(), nil
	case "delete":
		if len(f.rules[rule]) == 0 {
			return "No rules match the specified criteria.\n", errExit
		}
		delete(f.rules, rule)
		return "Deleted 1 rule(s).\nOk.\n", nil
	case "add":
		f.rules[rule] = append(f.rules[rule], kv["program"])
		return "Ok.\n", nil
	}
	return "", fmt.Errorf("unexpected netsh %q", args)
}

func (f *fakeNetsh) verbs() []string {
	var out []string
	for _, c := range f.calls {
		if v := strings.Fields(c)[2]; v != "show" {
			out = append(out, v+" "+c[strings.Index(c, "name=")+5:strings.Index(c+" dir=", " dir=")])
		}
	}
	f.calls = nil
	return out
}

func TestFirewallApplyRemove(t *testing.T) {
	ctx := context.Background()
	exe := `C:\Program Files\redleader\redleader.exe`
	f := &fakeNetsh{rules: map[string][]string{
		"redleader UDP 3702,7382,7946": {`C:\old\redleader.exe`}, // an older install elsewhere
		"Other app":                    {`C:\other.exe`},
	}}
	var out bytes.Buffer
	fw := &Firewall{Run: f.run, Out: &out, Program: exe, State: filepath.Join(t.TempDir(), "service-firewall-rules")}
	rules := FirewallRules(config.Default())

	changed, err := fw.Apply(ctx, rules)
	if err != nil || !changed {
		t.Fatalf("first Apply: changed %v, %v", changed, err)
	}
	if got, want := f.verbs(), []string{"add redleader TCP 7381,7946", "delete redleader UDP 3702,7382,7946", "add redleader UDP 3702,7382,7946"}; !slices.Equal(got, want) {
		t.Errorf("first Apply: %q, want %q", got, want)
	}
	if !slices.Equal(f.rules["redleader UDP 3702,7382,7946"], []string{exe}) {
		t.Errorf("the old program's rule was not replaced: %q", f.rules)
	}

	// Again: nothing to do.
	if changed, err := fw.Apply(ctx, rules); err != nil || changed {
		t.Fatalf("second Apply: changed %v, %v", changed, err)
	}
	if got := f.verbs(); len(got) != 0 {
		t.Errorf("second Apply changed %q", got)
	}
	if !strings.Contains(out.String(), `kept firewall rule "redleader TCP 7381,7946"`) {
		t.Errorf("output:\n%s", out.String())
	}

	// New ports: the new rule added, the recorded old one deleted.
	cfg := config.Default()
	cfg.PeerPort = 8381
	if _, err := fw.Apply(ctx, FirewallRules(cfg)); err != nil {
		t.Fatal(err)
	}
	if got, want := f.verbs(), []string{"add redleader TCP 7946,8381", "delete redleader TCP 7381,7946"}; !slices.Equal(got, want) {
		t.Errorf("Apply with new ports: %q, want %q", got, want)
	}

	// Uninstall with the config back at its defaults still removes what
	// was recorded, and nothing else.
	if err := fw.Remove(ctx, FirewallRules(config.Default())); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.rules, map[string][]string{"Other app": {`C:\other.exe`}}) {
		t.Errorf("rules left after Remove: %q", f.rules)
	}
	if _, err := os.Stat(fw.State); !os.IsNotExist(err) {
		t.Errorf("Remove left its record: %v", err)
	}
}
