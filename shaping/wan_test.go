package shaping

import "testing"

func TestWANRateFollowsRoleAndPolicy(t *testing.T) {
	type step struct {
		name       string
		do         func(w *WAN)
		wantLimit  Rate
		wantLeader bool
	}
	role := func(leader bool) func(*WAN) { return func(w *WAN) { w.SetRole(leader) } }
	policy := func(leaderRate, peerRate Rate) func(*WAN) {
		return func(w *WAN) { w.SetPolicy(leaderRate, peerRate) }
	}
	steps := []step{
		{"starts as a peer", func(*WAN) {}, 256e3, false},
		{"becomes the Red Leader", role(true), 50e6, true},
		{"role event repeated", role(true), 50e6, true},
		{"policy while leader", policy(20e6, 128e3), 20e6, true},
		{"loses the role", role(false), 128e3, false},
		{"policy while peer: leader rate unlimited", policy(Unlimited, 128e3), 128e3, false},
		{"leader at unlimited", role(true), Unlimited, true},
		{"policy: peer unlimited too", policy(Unlimited, Unlimited), Unlimited, true},
		{"peer at unlimited", role(false), Unlimited, false},
		{"policy: peer limited again", policy(1e9, 64e3), 64e3, false},
	}
	w := NewWAN(50e6, 256e3, 0)
	for _, s := range steps {
		s.do(w)
		if got := w.Limit(); got != s.wantLimit {
			t.Errorf("%s: limit %v, want %v", s.name, got, s.wantLimit)
		}
		if got := w.Limiter().Rate(); got != s.wantLimit {
			t.Errorf("%s: limiter rate %v, want %v", s.name, got, s.wantLimit)
		}
		if got := w.Leader(); got != s.wantLeader {
			t.Errorf("%s: leader %v, want %v", s.name, got, s.wantLeader)
		}
	}
	if b := w.Limiter().Burst(); b != DefaultMinBurst {
		t.Errorf("burst at 64kbit %d, want the minimum %d", b, DefaultMinBurst)
	}
}
