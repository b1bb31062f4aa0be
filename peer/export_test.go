package peer

import (
	"net/netip"
	"time"
)

// Test-only access to the agent's internals, for the peer_test package.

// RankInputs are ranking inputs a test publishes directly (jobs publish
// them in the product).
type RankInputs struct {
	Priority Priority
	Version  uint8
	Progress uint64
	Uptime   time.Duration // published as a boot time
}

// SetRankInputs publishes in as this agent's ranking inputs.
func (a *Agent) SetRankInputs(in RankInputs) {
	a.updateMeta(func(m *Meta) {
		m.ProtoVersion = in.Version
		m.Boot = time.Now().Add(-in.Uptime)
	})
	// Priority and progress as the jobs publish them: the data path keeps
	// them, so its later publications (a role change) do not undo them.
	a.publishRankInputs(in.Priority, in.Progress)
}

// SetHomeFinder replaces how the agent reads its primary interface (call
// it between New and Start): find returns the address the agent should
// live at now.
func SetHomeFinder(a *Agent, find func() (iface string, addr netip.Addr, subnet netip.Prefix, err error)) {
	a.findHome = func(string) (homeAddr, error) {
		iface, addr, subnet, err := find()
		return homeAddr{Iface: iface, Addr: addr, Subnet: subnet}, err
	}
}
