package peer_test

import (
	"context"
	"errors"
	"io/fs"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/redleader-p2p/redleader/internal/wait"
	"github.com/redleader-p2p/redleader/peer"
	"github.com/redleader-p2p/redleader/peer/peertest"
)

// Close must stop everything Start or a re-home started, whenever it comes:
// no goroutine left behind, no Raft store left open.

// ignoreProbe: memberlist's Shutdown does not wait for a probe in flight.
var ignoreProbe = goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode")

// assertStopped fails the test if the agent still has an election node or
// a Raft store under dataDir is still open.
func assertStopped(t *testing.T, a *peer.Agent, dataDir string) {
	t.Helper()
	if a.Election() != nil {
		t.Error("an election node is still running after Close")
	}
	var dbs []string
	_ = filepath.WalkDir(dataDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "raft.db" {
			dbs = append(dbs, p)
		}
		return nil
	})
	for _, p := range dbs {
		// bolt locks its file while open; a second open times out then.
		db, err := bbolt.Open(p, 0o600, &bbolt.Options{Timeout: 200 * time.Millisecond})
		if err != nil {
			t.Errorf("%s still open after Close: %v", p, err)
			continue
		}
		db.Close()
	}
}

// TestCloseDuringStart closes an agent at several points of its start-up,
// on a data dir whose Raft state Start reopens.
func TestCloseDuringStart(t *testing.T) {
	cfg := peertest.Config(t, 0, peertest.Options{})
	first := peertest.NewAgent(t, cfg, false)
	if err := first.Start(context.Background()); err != nil {
		t.Fatalf("start: %v", err)
	}
	wait.For(t, 20*time.Second, "the lone agent is Red Leader", func() bool {
		n := first.Election()
		return n != nil && n.IsRedLeader()
	})
	first.Close()
	for _, delay := range []time.Duration{0, time.Millisecond, 3 * time.Millisecond, 10 * time.Millisecond,
		30 * time.Millisecond, 100 * time.Millisecond} {
		t.Run(delay.String(), func(t *testing.T) {
			before := goleak.IgnoreCurrent()
			a := peertest.NewAgent(t, cfg, false)
			started := make(chan error, 1)
			go func() { started <- a.Start(context.Background()) }()
			time.Sleep(delay)
			if err := a.Close(); err != nil {
				t.Logf("close: %v", err)
			}
			if err := <-started; err != nil && !errors.Is(err, peer.ErrClosed) {
				t.Errorf("Start = %v, want nil or ErrClosed", err)
			}
			if err := a.Start(context.Background()); !errors.Is(err, peer.ErrClosed) {
				t.Errorf("Start after Close = %v, want ErrClosed", err)
			}
			assertStopped(t, a, cfg.DataDir)
			goleak.VerifyNone(t, ignoreProbe, before)
		})
	}
}

// TestCloseDuringRehome closes the agent while its re-home loop has read a
// new primary address (the read is held until Close is under way), and
// while a re-home is running.
func TestCloseDuringRehome(t *testing.T) {
	home := netip.MustParsePrefix("127.0.0.0/8")
	for _, tc := range []struct {
		name string
		// closeFirst: Close starts before the re-home may go on.
		closeFirst bool
		delay      time.Duration
	}{
		{"close then move", true, 300 * time.Millisecond},
		{"move then close at once", false, 0},
		{"move then close mid-way", false, 20 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := goleak.IgnoreCurrent()
			cfg := peertest.Config(t, 0, peertest.Options{})
			cfg.Subnet, cfg.AdvertiseAddr = "", "" // roaming on: the re-home loop runs
			cfg.RehomeInterval = 50 * time.Millisecond
			var (
				mu      sync.Mutex
				moved   bool
				entered = make(chan struct{})
				release = make(chan struct{})
				once    sync.Once
			)
			a := peertest.NewAgent(t, cfg, false)
			peer.SetHomeFinder(a, func() (string, netip.Addr, netip.Prefix, error) {
				mu.Lock()
				m := moved
				mu.Unlock()
				if !m {
					return "lo", netip.MustParseAddr("127.0.0.1"), home, nil
				}
				once.Do(func() { close(entered) })
				<-release
				return "lo", netip.MustParseAddr("127.0.0.2"), home, nil
			})
			if err := a.Start(context.Background()); err != nil {
				t.Fatalf("start: %v", err)
			}
			// A Raft store exists once the lone agent leads itself.
			wait.For(t, 20*time.Second, "the lone agent is Red Leader", func() bool {
				n := a.Election()
				return n != nil && n.IsRedLeader()
			})
			mu.Lock()
			moved = true
			mu.Unlock()
			<-entered
			closed := make(chan error, 1)
			if tc.closeFirst {
				go func() { closed <- a.Close() }()
				time.Sleep(tc.delay) // Close runs; the re-home holds the new address
				close(release)
			} else {
				close(release)
				time.Sleep(tc.delay)
				go func() { closed <- a.Close() }()
			}
			select {
			case <-closed:
			case <-time.After(30 * time.Second):
				t.Fatal("Close did not return")
			}
			assertStopped(t, a, cfg.DataDir)
			goleak.VerifyNone(t, ignoreProbe, before)
		})
	}
}
