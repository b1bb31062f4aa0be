package peer_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metrics "github.com/hashicorp/go-metrics/compat"

	"github.com/redleader-p2p/redleader/config"
	"github.com/redleader-p2p/redleader/peer"
	"github.com/redleader-p2p/redleader/peer/peertest"
)

// gossipCounter is a go-metrics sink that adds up what memberlist reports
// it sent: "memberlist.udp.sent" (every gossip, probe and ack datagram,
// after compression, CRC and encryption: the UDP payload) and
// "memberlist.tcp.sent" (push/pull state exchanges and stream fallbacks).
// memberlist reports to the process-wide go-metrics registry without a
// per-node label (the agent sets no MetricLabels), so the figure is the
// total of all agents in the process; divided by the agent count it is
// the mean per agent. In a closed cluster bytes sent equal bytes received.
type gossipCounter struct {
	metrics.BlackholeSink
	udpBytes, udpPackets, tcpBytes atomic.Int64
}

func (c *gossipCounter) IncrCounterWithLabels(key []string, val float32, _ []metrics.Label) {
	c.IncrCounter(key, val)
}

func (c *gossipCounter) IncrCounter(key []string, val float32) {
	n := len(key)
	if n < 3 || key[n-3] != "memberlist" || key[n-1] != "sent" {
		return
	}
	switch key[n-2] {
	case "udp":
		c.udpBytes.Add(int64(val))
		c.udpPackets.Add(1)
	case "tcp":
		c.tcpBytes.Add(int64(val))
	}
}

type gossipTotals struct {
	at                             time.Time
	udpBytes, udpPackets, tcpBytes int64
}

func (c *gossipCounter) snapshot() gossipTotals {
	return gossipTotals{at: time.Now(), udpBytes: c.udpBytes.Load(), udpPackets: c.udpPackets.Load(), tcpBytes: c.tcpBytes.Load()}
}

// perAgent returns the bytes (UDP payload + TCP) and datagrams per second
// per agent between two snapshots.
func perAgent(from, to gossipTotals, agents int) (bytesPerSec, packetsPerSec float64) {
	secs := to.at.Sub(from.at).Seconds() * float64(agents)
	return float64(to.udpBytes-from.udpBytes+to.tcpBytes-from.tcpBytes) / secs,
		float64(to.udpPackets-from.udpPackets) / secs
}

// installGossipCounter makes c the process-wide go-metrics sink for the
// benchmark and puts the default (a black hole) back afterwards.
func installGossipCounter(b *testing.B, c *gossipCounter) {
	b.Helper()
	conf := metrics.DefaultConfig("bench")
	conf.EnableHostname = false
	conf.EnableRuntimeMetrics = false // no background goroutine (goleak)
	if _, err := metrics.NewGlobal(conf, c); err != nil {
		b.Fatalf("metrics sink: %v", err)
	}
	b.Cleanup(func() {
		conf := metrics.DefaultConfig("")
		conf.EnableRuntimeMetrics = false
		_, _ = metrics.NewGlobal(conf, &metrics.BlackholeSink{})
	})
}

// BenchmarkElection50Agents starts 50 real agents in this process on one
// subnet (agent 0 first, then the other 49 at once, all joining agent 0
// through their join list), with the product's default election timings
// and rejoin interval, and reports:
//
//   - s_to_leader: seconds from the last agent's start until every agent
//     reports the same confirmed Red Leader and epoch and exactly one acts
//     as Red Leader (goal: ≤ 10 s); s_to_leader_from_first: the same from
//     the first agent's start;
//   - s_to_voters: from the last start until the Raft group has its final
//     5 voters and 2 standbys (voter_stabilization delays it on purpose);
//   - startup_gossip_B/s/agent: mean gossip bytes sent per agent per
//     second from the first start until the voter set is complete;
//   - gossip_B/s/agent (UDP + TCP), gossip_udp_B/s/agent,
//     gossip_tcp_B/s/agent and gossip_pkts/s/agent (datagrams): the same
//     in steady state, over 30 s (one rejoin interval) starting 5 s after
//     the voter set is complete.
func BenchmarkElection50Agents(b *testing.B) {
	if testing.Short() {
		b.Skip("starts 50 agents; skipped with -short")
	}
	const agents, steady = 50, 30 * time.Second
	counter := &gossipCounter{}
	installGossipCounter(b, counter)
	var sum electionRun
	for range b.N {
		r := runElection(b, agents, steady, counter)
		sum.toLeader += r.toLeader
		sum.fromFirst += r.fromFirst
		sum.toVoters += r.toVoters
		sum.startupBps += r.startupBps
		sum.steadyBps += r.steadyBps
		sum.steadyUDP += r.steadyUDP
		sum.steadyTCP += r.steadyTCP
		sum.steadyPps += r.steadyPps
	}
	n := float64(b.N)
	b.ReportMetric(sum.toLeader.Seconds()/n, "s_to_leader")
	b.ReportMetric(sum.fromFirst.Seconds()/n, "s_to_leader_from_first")
	b.ReportMetric(sum.toVoters.Seconds()/n, "s_to_voters")
	b.ReportMetric(sum.startupBps/n, "startup_gossip_B/s/agent")
	b.ReportMetric(sum.steadyBps/n, "gossip_B/s/agent")
	b.ReportMetric(sum.steadyUDP/n, "gossip_udp_B/s/agent")
	b.ReportMetric(sum.steadyTCP/n, "gossip_tcp_B/s/agent")
	b.ReportMetric(sum.steadyPps/n, "gossip_pkts/s/agent")
	b.ReportMetric(0, "ns/op") // one op is a whole cluster's life: the figures above say more
}

type electionRun struct {
	toLeader, fromFirst, toVoters                          time.Duration
	startupBps, steadyBps, steadyUDP, steadyTCP, steadyPps float64
}

// fullVoterSet reports whether the Raft leader among agents has the given
// numbers of voters and standbys.
func fullVoterSet(agents []*peer.Agent, voters, standbys int) bool {
	for _, a := range agents {
		if n := a.Election(); n != nil {
			if st := n.Status(); st.Raft.State == "leader" {
				return st.Raft.Voters == voters && st.Raft.Standbys == standbys
			}
		}
	}
	return false
}

func runElection(b *testing.B, n int, steady time.Duration, counter *gossipCounter) electionRun {
	b.Helper()
	defaults := config.Default()
	configure := func(_ int, c *config.Config) {
		// The product's timings, not peertest's short ones.
		c.Election = defaults.Election
		c.RejoinInterval = defaults.RejoinInterval
	}
	var (
		mu  sync.Mutex
		all []*peer.Agent
	)
	closeAll := func() {
		mu.Lock()
		as := slices.Clone(all)
		all = nil
		mu.Unlock()
		var wg sync.WaitGroup
		for _, a := range as {
			wg.Go(func() { _ = a.Close() })
		}
		wg.Wait()
	}
	b.Cleanup(closeAll)
	start := func(i int, join []string) (*peer.Agent, error) {
		cfg := peertest.Config(b, i, peertest.Options{Join: join, Configure: configure})
		a, err := peer.New(cfg, peer.Options{Version: "bench", Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return nil, err
		}
		if err := a.Start(context.Background()); err != nil {
			_ = a.Close()
			return nil, err
		}
		mu.Lock()
		all = append(all, a)
		mu.Unlock()
		return a, nil
	}

	before := counter.snapshot()
	first, err := start(0, nil)
	if err != nil {
		b.Fatalf("start agent 0: %v", err)
	}
	join := []string{first.GossipAddr().String()}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 1; i < n; i++ {
		wg.Go(func() { _, errs[i] = start(i, join) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		b.Fatalf("start agents: %v", err)
	}
	lastStart := time.Now()
	mu.Lock()
	agentsNow := slices.Clone(all)
	mu.Unlock()

	deadline := lastStart.Add(60 * time.Second)
	for {
		if leader, _ := agreedRedLeader(agentsNow); leader != "" {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d agents: no agreed Red Leader within 60 s of the last start", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	agreed := counter.snapshot()
	// The voter set grows after agreement (voter_stabilization): wait for
	// its final size, then for the heads and pulls it caused to settle.
	for !fullVoterSet(agentsNow, 5, 2) {
		if time.Now().After(deadline) {
			b.Fatalf("%d agents: the voter set did not reach 5 voters and 2 standbys within 60 s", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	formed := counter.snapshot()
	time.Sleep(5 * time.Second)
	quiet := counter.snapshot()
	time.Sleep(steady)
	end := counter.snapshot()
	if leader, _ := agreedRedLeader(agentsNow); leader == "" {
		b.Errorf("%d agents: agreement lost during the steady-state window", n)
	}
	closeAll()

	var r electionRun
	r.toLeader = agreed.at.Sub(lastStart)
	r.fromFirst = agreed.at.Sub(before.at)
	r.toVoters = formed.at.Sub(lastStart)
	r.startupBps, _ = perAgent(before, formed, n)
	r.steadyBps, r.steadyPps = perAgent(quiet, end, n)
	r.steadyUDP, _ = perAgent(quiet, gossipTotals{at: end.at, udpBytes: end.udpBytes, tcpBytes: quiet.tcpBytes}, n)
	r.steadyTCP = r.steadyBps - r.steadyUDP
	b.Logf("%d agents: started in %v; agreed Red Leader %.2fs after the last start (%.2fs after the first); full voter set after %.2fs",
		n, lastStart.Sub(before.at).Round(time.Millisecond), r.toLeader.Seconds(), r.fromFirst.Seconds(), r.toVoters.Seconds())
	b.Logf("gossip per agent: %.0f B/s from start to full voter set; steady %.0f B/s (UDP %.0f, TCP %.0f), %.1f datagrams/s",
		r.startupBps, r.steadyBps, r.steadyUDP, r.steadyTCP, r.steadyPps)
	return r
}
