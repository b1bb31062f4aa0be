//go:build linux

package lab_test

// End-to-end tests of the agent foundation (issue 2): real redleader
// processes in lab namespaces, found by multicast with no join config.

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/internal/wait"
	"github.com/redleader-p2p/redleader/lab"
	"github.com/redleader-p2p/redleader/peer"
	"github.com/redleader-p2p/redleader/peer/api"
)

func TestLabSubnetsFormWithoutConfig(t *testing.T) {
	t.Parallel()
	l := lab.New(t, lab.Options{Subnets: 2, WANRate: "off"})
	subnets := [][]*agent{{}, {}}
	start := time.Now()
	for s := 1; s <= 2; s++ {
		for range 3 {
			h := l.AddHost(s)
			subnets[s-1] = append(subnets[s-1], startAgent(t, h))
		}
	}
	for _, sub := range subnets {
		for _, a := range sub {
			a.nodeID(t)
		}
	}
	wait.For(t, 10*time.Second-time.Since(start), "each agent lists exactly its subnet's 3 agents, alive", func() bool {
		for _, sub := range subnets {
			for _, a := range sub {
				if !a.seesExactly(t, sub) {
					return false
				}
			}
		}
		return true
	})
	t.Logf("2 subnets x 3 agents converged %v after the first start", time.Since(start))

	// SIGKILL one agent of subnet 1: the others see it dead within 15 s.
	sub := subnets[0]
	killed, termed, rest := sub[0], sub[1], sub[2]
	if err := killed.p.Kill(); err != nil {
		t.Fatal(err)
	}
	took := wait.For(t, 15*time.Second, "SIGKILLed agent shown dead", func() bool {
		for _, a := range sub[1:] {
			if statusOf(a.members(t), killed.node) != peer.StatusDead {
				return false
			}
		}
		return true
	})
	t.Logf("SIGKILL detected as dead in %v", took)

	// SIGTERM another: it exits 0 and the last one sees it left.
	if err := termed.p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := termed.p.Wait(10 * time.Second); err != nil {
		t.Fatalf("SIGTERM: exit %v\n%s", err, termed.p.Log())
	}
	wait.For(t, 5*time.Second, "SIGTERMed agent shown left", func() bool {
		return statusOf(rest.members(t), termed.node) == peer.StatusLeft
	})
	// The other subnet never noticed any of this.
	for _, a := range subnets[1] {
		if !a.seesExactly(t, subnets[1]) {
			t.Errorf("%s: subnet 2 membership disturbed: %+v", a.h.Name, a.members(t))
		}
	}
}

func TestLabRoaming(t *testing.T) {
	t.Parallel()
	l := lab.New(t, lab.Options{Subnets: 2, WANRate: "off"})
	var s1, s2 []*agent
	for range 2 {
		s1 = append(s1, startAgent(t, l.AddHost(1)))
		s2 = append(s2, startAgent(t, l.AddHost(2)))
	}
	roamer := startAgent(t, l.AddHost(1))
	s1 = append(s1, roamer)
	for _, a := range append(s1, s2...) {
		a.nodeID(t)
	}
	wait.For(t, 10*time.Second, "both subnets formed", func() bool {
		for _, a := range s1 {
			if !a.seesExactly(t, s1) {
				return false
			}
		}
		for _, a := range s2 {
			if !a.seesExactly(t, s2) {
				return false
			}
		}
		return true
	})

	if err := roamer.h.MoveTo(2); err != nil {
		t.Fatal(err)
	}
	newS1, newS2 := s1[:2], append(append([]*agent{}, s2...), roamer)
	took := wait.For(t, 15*time.Second, "roamer alive in subnet 2 and gone from subnet 1", func() bool {
		for _, a := range newS2 {
			if !a.seesExactly(t, newS2) {
				return false
			}
		}
		for _, a := range newS1 {
			if statusOf(a.members(t), roamer.node) != "" {
				return false
			}
		}
		return true
	})
	t.Logf("re-homed in %v", took)
	st, err := roamer.client().Status(shortCtx(t, 2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if st.Subnet != lab.SubnetPrefix(2).String() || st.Addr != roamer.h.IP().String() {
		t.Errorf("roamer status after move: %+v", st)
	}
	if log := roamer.p.Log(); strings.Count(log, "agent started") != 1 || !strings.Contains(log, "re-homing") {
		t.Errorf("roamer did not re-home in place:\n%s", log)
	}
}

// TestLabCLI runs `redleader status` and `members` in both forms against a
// running agent, and against none.
func TestLabCLI(t *testing.T) {
	t.Parallel()
	l := lab.New(t, lab.Options{Subnets: 1, WANRate: "off"})
	h1, h2 := l.AddHost(1), l.AddHost(1)
	cli := func(h *lab.Host, args ...string) (string, int) {
		cmd := h.Command(shortCtx(t, 10*time.Second), append([]string{lab.Binary(t)}, args...)...)
		out, err := cmd.CombinedOutput()
		code := 0
		if err != nil {
			code = cmd.ProcessState.ExitCode()
		}
		return string(out), code
	}
	// No agent yet.
	for _, args := range [][]string{{"status"}, {"members"}, {"status", "--json"}, {"members", "--json"}} {
		out, code := cli(h1, args...)
		if code != 1 || !strings.Contains(out, "no redleader agent is running") || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("%v with no agent: exit %d, %q", args, code, out)
		}
	}
	a1, a2 := startAgent(t, h1), startAgent(t, h2)
	a1.nodeID(t)
	a2.nodeID(t)
	wait.For(t, 10*time.Second, "2 agents meet", func() bool { return a1.seesExactly(t, []*agent{a1, a2}) })

	out, code := cli(h1, "status")
	if code != 0 || !strings.Contains(out, a1.node) || !strings.Contains(out, "2 alive") || !strings.Contains(out, h1.IP().String()) {
		t.Errorf("status: exit %d\n%s", code, out)
	}
	out, code = cli(h1, "members")
	if code != 0 || !strings.Contains(out, "NODE") || !strings.Contains(out, a2.node[:8]) || strings.Count(out, "alive") != 2 {
		t.Errorf("members: exit %d\n%s", code, out)
	}
	out, code = cli(h1, "status", "--json")
	var st api.StatusResponse
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Node != a1.node || st.Members.Alive != 2 {
		t.Errorf("status --json: exit %d\n%s", code, out)
	}
	out, code = cli(h1, "members", "--json")
	var ms []api.MemberInfo
	if code != 0 || json.Unmarshal([]byte(out), &ms) != nil || len(ms) != 2 || statusOf(ms, a2.node) != "alive" {
		t.Errorf("members --json: exit %d\n%s", code, out)
	}
	// A second agent on the same data dir fails fast with a clear message.
	out, code = cli(h1, "agent", "--data-dir", a1.dir, "--api-addr", "127.0.0.1:7399", "--gossip-port", "7999")
	if code != 1 || !strings.Contains(out, "already running on this data dir") {
		t.Errorf("second agent on same data dir: exit %d, %q", code, out)
	}
}

// procCPU is utime+stime of pid.
func procCPU(t *testing.T, pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	const clkTck = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / clkTck
}

// procRSS is the resident set size of pid in bytes.
func procRSS(t *testing.T, pid int) int64 {
	t.Helper()
	return procStatusKB(t, pid, "VmRSS:") * 1024
}

// procStatusKB is one "<field> N kB" line of /proc/pid/status, in KiB.
func procStatusKB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
