package peer

import "github.com/redleader-p2p/redleader/config"

// Test-only access for reload_test.go (package peer_test).

// LiveConfig is the config in force: as started, with what reloads applied.
func LiveConfig(a *Agent) config.Config { return a.liveConfig() }

// DiscoveryParts returns the running agent beacon, MS-PCCRD responder and
// prober (nil when not running), to tell a restarted part from the old.
func DiscoveryParts(a *Agent) (beacon, responder, prober any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.beacon != nil {
		beacon = a.beacon
	}
	if c := a.content; c != nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.responder != nil {
			responder = c.responder
		}
		if c.prober != nil {
			prober = c.prober
		}
	}
	return beacon, responder, prober
}
