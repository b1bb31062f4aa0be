package peer

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"time"

	"github.com/redleader-p2p/redleader/config"
	"github.com/redleader-p2p/redleader/election"
	"github.com/redleader-p2p/redleader/internal/tick"
)

// electionConfig turns the config file's election section into the
// election's runtime config, with every timing scaled by raft_multiplier.
func (a *Agent) electionConfig() election.Config {
	e := a.cfg.Election
	m := time.Duration(e.RaftMultiplier)
	class := map[string]election.MachineClass{"auto": election.ClassUnknown, "server": election.ClassServer,
		"desktop": election.ClassDesktop, "laptop": election.ClassLaptop}[e.MachineClass]
	return election.Config{
		Node:              a.id,
		DataDir:           filepath.Join(a.cfg.DataDir, "election"),
		Voter:             e.Voter != "never",
		Class:             class,
		RaftMultiplier:    e.RaftMultiplier,
		CheckinInterval:   e.CheckinInterval * m,
		CheckinTimeout:    e.CheckinTimeout * m,
		ConfirmTimeout:    e.ConfirmTimeout * m,
		SeparateRoles:     e.SeparateRoles,
		NLMTTL:            e.NLMTTL,
		DeadVoterGrace:    e.DeadVoterGrace * m,
		QuorumLossTimeout: e.QuorumLossTimeout * m,
		Settle:            e.BootstrapSettle * m,
		Stabilization:     e.VoterStabilization * m,
		InitialPolicy:     policyFromConfig(a.cfg.Shaping),
		Demand:            demandHandler{a},
		Keyed:             len(a.keys) > 0,
		AllowOpenAdmin:    a.cfg.AllowOpenAdmin,
		Logger:            a.log.With("component", "election"),
	}
}

func policyFromConfig(s config.Shaping) election.Policy {
	return election.Policy{LeaderRate: s.LeaderRate.String(), PeerRate: s.PeerRate.String(), LANRate: s.LANRate.String()}
}

// startElection starts the election for the current home.
func (a *Agent) startElection() error {
	n, err := election.New(a.electionConfig(), electionView{a}, electionTransport{a})
	if err != nil {
		return err
	}
	if err := n.Start(a.ctx); err != nil {
		return err
	}
	// The role follows this node until it closes (re-home or Close), which
	// closes the channel after a last false. The WAN limiter follows the
	// role and, polled each second, the committed policy's rates (the LAN
	// limiter its lan_rate).
	role, _ := n.WatchRedLeader()
	a.goLoop(func() {
		t := time.NewTimer(tick.Until(time.Second))
		defer t.Stop()
		for {
			select {
			case held, ok := <-role:
				if !ok {
					return
				}
				a.stats.setRedLeader(held)
				a.followRole(held)
			case <-t.C:
				t.Reset(tick.Until(time.Second))
				a.followPolicy(n.Policy())
			}
		}
	})
	a.mu.Lock()
	a.elect = n
	a.mu.Unlock()
	return nil
}

// stopElection hands over and stops the election (before leaving a pool).
// It first tells the pool that this agent is leaving: the Raft leader then
// neither appoints it again (it is still alive in gossip while it retires
// its seat) nor marks it when it leaves.
func (a *Agent) stopElection() error {
	a.mu.Lock()
	n, p := a.elect, a.pool
	a.elect = nil
	a.mu.Unlock()
	if n == nil {
		return nil
	}
	if p != nil {
		a.updateMeta(func(m *Meta) { m.Leaving = true })
		if err := p.UpdateMeta(time.Second); err != nil {
			a.log.Debug("leaving flag not broadcast before the hand-over", "err", err)
		}
	}
	return n.Close()
}

// Election returns the running election node (nil while re-homing).
func (a *Agent) Election() *election.Node {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.elect
}

// electionView is the agent's gossip pool as the election sees it.
type electionView struct{ a *Agent }

// Members implements election.Membership.
func (v electionView) Members() []election.Member {
	now := time.Now()
	ms := v.a.Members()
	out := make([]election.Member, 0, len(ms))
	for _, m := range ms {
		st := election.StatusAlive
		switch m.Status {
		case StatusLeft:
			st = election.StatusLeft
		case StatusDead:
			st = election.StatusDead
		}
		out = append(out, election.Member{
			Node:              m.Node,
			RaftAddr:          net.JoinHostPort(m.Addr.Addr().String(), strconv.Itoa(int(m.Meta.PeerPort))),
			Status:            st,
			Since:             m.Since,
			Head:              election.Head{ClusterID: m.Meta.ClusterID, Index: m.Meta.StateIndex, Role: election.Role(m.Meta.Role)},
			Leaving:           m.Meta.Leaving,
			NotLeaderMaterial: m.Meta.NotLeaderMaterial,
			Priority:          m.Meta.Priority,
			Version:           int(m.Meta.ProtoVersion),
			Progress:          m.Meta.Progress,
			Uptime:            m.Meta.Uptime(now),
			VoterOptOut:       m.Meta.VoterOptOut,
			Class:             election.MachineClass(m.Meta.Class),
		})
	}
	return out
}

// SelfInputs implements election.Membership: this node's live metadata,
// which its gossip pool's copy follows once memberlist has taken the
// update (metaLoop), up to a second later.
func (v electionView) SelfInputs() (election.Priority, uint64) {
	m := v.a.metaSnapshot()
	return m.Priority, m.Progress
}

// SetHead implements election.Membership.
func (v electionView) SetHead(h election.Head) {
	v.a.updateMeta(func(m *Meta) { m.ClusterID, m.StateIndex, m.Role = h.ClusterID, h.Index, uint8(h.Role) })
	v.a.publishMeta()
}

// electionTransport gives the election the peer port.
type electionTransport struct{ a *Agent }

func (t electionTransport) RaftListener() net.Listener { return t.a.port.Raft.Sub() }
func (t electionTransport) RPCListener() net.Listener  { return t.a.port.RPC }

// Advertise implements election.Transport.
func (t electionTransport) Advertise() net.Addr {
	t.a.mu.Lock()
	ip := t.a.home.Addr
	t.a.mu.Unlock()
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(t.a.port.Port())))
}

// Dial implements election.Transport.
func (t electionTransport) Dial(ctx context.Context, addr string, rpc bool) (net.Conn, error) {
	kind := connRaft
	if rpc {
		kind = connRPC
	}
	return dialPeer(ctx, addr, kind, t.a.clientTLS)
}

// EncodeMeta encodes m as agents publish it in gossip, for programs that
// speak the protocol without running an agent (the lab's hostile tests).
func EncodeMeta(m Meta) []byte { return m.encode() }
