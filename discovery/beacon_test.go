package discovery

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func testAnnounce() Announce {
	return Announce{
		Node:   [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		Subnet: "10.1.2.0/24",
		Addr:   netip.MustParseAddrPort("10.1.2.3:7946"),
	}
}

func TestBeaconRoundTrip(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	other := bytes.Repeat([]byte{8}, 32)
	v6 := testAnnounce()
	v6.Addr = netip.MustParseAddrPort("[fe80::1]:7946")
	tests := []struct {
		name    string
		a       Announce
		signKey []byte
		readKey []byte
		wantErr error
	}{
		{"open", testAnnounce(), nil, nil, nil},
		{"signed", testAnnounce(), key, key, nil},
		{"ipv6", v6, key, key, nil},
		{"wrong key", testAnnounce(), key, other, ErrBeaconAuth},
		{"signed, reader has no key", testAnnounce(), key, nil, ErrBeaconAuth},
		{"unsigned, reader has key", testAnnounce(), nil, key, ErrBeaconAuth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := MarshalBeacon(tt.a, tt.signKey)
			if err != nil {
				t.Fatal(err)
			}
			got, err := UnmarshalBeacon(b, tt.readKey)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err == nil && got != tt.a {
				t.Fatalf("got %+v, want %+v", got, tt.a)
			}
		})
	}
}

// TestBeaconKeyRotation: a beacon is accepted when it is signed with any
// of the reader's keys, in any position; a reader with only unrelated keys,
// or none, refuses it.
func TestBeaconKeyRotation(t *testing.T) {
	oldKey, newKey, other := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), bytes.Repeat([]byte{3}, 32)
	tests := []struct {
		name     string
		signKey  []byte
		readKeys [][]byte
		wantErr  error
	}{
		{"old to [old new]", oldKey, [][]byte{oldKey, newKey}, nil},
		{"new to [old new]", newKey, [][]byte{oldKey, newKey}, nil},
		{"old to [new old]", oldKey, [][]byte{newKey, oldKey}, nil},
		{"new to [new]", newKey, [][]byte{newKey}, nil},
		{"old to [new]", oldKey, [][]byte{newKey}, ErrBeaconAuth},
		{"other to [new old]", other, [][]byte{newKey, oldKey}, ErrBeaconAuth},
		{"empty keys are no keys", oldKey, [][]byte{nil, {}}, ErrBeaconAuth},
		{"empty key skipped", oldKey, [][]byte{nil, oldKey}, nil},
		{"unsigned to [new old]", nil, [][]byte{newKey, oldKey}, ErrBeaconAuth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := MarshalBeacon(testAnnounce(), tt.signKey)
			if err != nil {
				t.Fatal(err)
			}
			got, err := UnmarshalBeacon(b, tt.readKeys...)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err == nil && got != testAnnounce() {
				t.Fatalf("got %+v", got)
			}
		})
	}
}

func TestBeaconRejectsJunk(t *testing.T) {
	good, _ := MarshalBeacon(testAnnounce(), nil)
	signed, _ := MarshalBeacon(testAnnounce(), bytes.Repeat([]byte{7}, 32))
	flipped := bytes.Clone(signed)
	flipped[10] ^= 1
	tests := map[string][]byte{
		"empty":       nil,
		"wsd":         []byte(`<?xml version="1.0"?><soap:Envelope>`),
		"truncated":   good[:len(good)-3],
		"trailing":    append(bytes.Clone(good), 0),
		"oversized":   append(bytes.Clone(good), make([]byte, 300)...),
		"bad version": append([]byte("RLDB\x09"), good[5:]...),
		"tampered":    flipped,
	}
	for name, b := range tests {
		key := []byte(nil)
		if name == "tampered" {
			key = bytes.Repeat([]byte{7}, 32)
		}
		if _, err := UnmarshalBeacon(b, key); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzUnmarshalBeacon(f *testing.F) {
	good, _ := MarshalBeacon(testAnnounce(), nil)
	f.Add(good)
	f.Add([]byte("RLDB"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := UnmarshalBeacon(b, nil)
		if err != nil {
			return
		}
		again, err := MarshalBeacon(a, nil)
		if err != nil {
			t.Fatalf("re-marshal: %v", err)
		}
		if back, err := UnmarshalBeacon(again, nil); err != nil || back != a {
			t.Fatalf("unstable: %+v %v", back, err)
		}
	})
}

// multicastLoopback returns lo when it can carry multicast (make test runs
// the tests in a private network namespace where it can); otherwise the
// test is skipped, so no datagram ever leaves the machine.
func multicastLoopback(t *testing.T) *net.Interface {
	t.Helper()
	ifc, err := net.InterfaceByName("lo")
	if err != nil || ifc.Flags&net.FlagMulticast == 0 {
		t.Skip("lo has no MULTICAST flag: run via `make test` (private netns with multicast on lo)")
	}
	return ifc
}

func TestBeaconOnLoopback(t *testing.T) {
	defer goleak.VerifyNone(t)
	lo := multicastLoopback(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := BeaconConfig{Group: netip.MustParseAddr("239.255.82.91"), Port: 47391, Interface: lo, Interval: time.Second}

	a1, a2 := testAnnounce(), testAnnounce()
	a2.Node[0] = 99
	heard := make(chan Announce, 16)
	b1, err := NewBeacon(cfg, func() Announce { return a1 }, func(a Announce) {
		select {
		case heard <- a:
		default:
		}
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer b1.Close()
	keyed := cfg
	keyed.Keys = [][]byte{bytes.Repeat([]byte{1}, 32)}
	b3, err := NewBeacon(keyed, func() Announce { a := a2; a.Node[0] = 77; return a }, func(Announce) {}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer b3.Close()
	b2, err := NewBeacon(cfg, func() Announce { return a2 }, func(Announce) {}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, b := range []*Beacon{b1, b2, b3} {
		if err := b.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}

	select {
	case got := <-heard:
		if got != a2 {
			t.Fatalf("heard %+v, want %+v", got, a2)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no beacon heard")
	}
	// b3's keyed beacons must only ever be dropped by b1, never delivered.
	deadline := time.Now().Add(10 * time.Second)
	for b1.Stats().Dropped == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if b1.Stats().Dropped == 0 {
		t.Error("keyed beacon was not counted as dropped")
	}
	for len(heard) > 0 {
		if a := <-heard; a.Node[0] == 77 {
			t.Error("beacon of another cluster delivered")
		}
	}
}

// TestBeaconKeyringOnLoopback: real beacons with key lists. S has
// [k2 k1] and T has [k1]: a listener holding both keys hears both, one
// holding only k2 hears S (S signs with its first key) and never T, one
// holding only k1 hears T and never S.
func TestBeaconKeyringOnLoopback(t *testing.T) {
	defer goleak.VerifyNone(t)
	lo := multicastLoopback(t)
	log := slog.New(slog.DiscardHandler)
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	cfg := BeaconConfig{Group: netip.MustParseAddr("239.255.82.93"), Port: 47393, Interface: lo, Interval: time.Second}
	node := func(b byte) Announce { a := testAnnounce(); a.Node[0] = b; return a }
	const nodeS, nodeT = 'S', 'T'

	var mu sync.Mutex
	heard := map[string]map[byte]bool{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var all []*Beacon
	defer func() { // before goleak's check
		for _, b := range all {
			b.Close()
		}
	}()
	start := func(name string, self byte, keys ...[]byte) *Beacon {
		t.Helper()
		c := cfg
		c.Keys = keys
		mu.Lock()
		heard[name] = map[byte]bool{}
		mu.Unlock()
		b, err := NewBeacon(c, func() Announce { return node(self) }, func(a Announce) {
			mu.Lock()
			heard[name][a.Node[0]] = true
			mu.Unlock()
		}, log)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b)
		if err := b.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return b
	}
	both := start("both", 'B', k1, k2)
	only2 := start("only k2", '2', k2)
	only1 := start("only k1", '1', k1)
	start("S", nodeS, k2, k1)
	start("T", nodeT, k1)

	has := func(name string, n byte) bool {
		mu.Lock()
		defer mu.Unlock()
		return heard[name][n]
	}
	deadline := time.Now().Add(10 * time.Second)
	for !(has("both", nodeS) && has("both", nodeT) && has("only k2", nodeS) && has("only k1", nodeT)) {
		if time.Now().After(deadline) {
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("not all expected beacons heard: %v", heard)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// S's and T's first beacons went to every listener at once: a wrong
	// acceptance would be in by now. Wait one more round to be sure.
	time.Sleep(1500 * time.Millisecond)
	if has("only k2", nodeT) {
		t.Error("a listener with only k2 accepted T's k1 beacon")
	}
	if has("only k1", nodeS) {
		t.Error("a listener with only k1 accepted S's beacon: S did not sign with its first key")
	}
	if only1.Stats().Dropped == 0 || only2.Stats().Dropped == 0 {
		t.Errorf("listeners with one key dropped nothing: %+v %+v", only1.Stats(), only2.Stats())
	}
	if both.Stats().Dropped != 0 {
		t.Errorf("the listener with both keys dropped %d beacons", both.Stats().Dropped)
	}
}

// TestBeaconLifecycle: Start after Close is refused and starts nothing, a
// second Start is refused, Close is idempotent, and Close racing with
// Start never leaves a goroutine behind.
func TestBeaconLifecycle(t *testing.T) {
	lo := multicastLoopback(t)
	defer goleak.VerifyNone(t)
	cfg := BeaconConfig{Group: netip.MustParseAddr("239.255.82.92"), Port: 47392, Interface: lo, Interval: time.Second}
	newBeacon := func() *Beacon {
		t.Helper()
		b, err := NewBeacon(cfg, testAnnounce, func(Announce) {}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ctx := context.Background() // never cancelled: only Close may stop the loops

	b := newBeacon()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("start after close: %v, want ErrClosed", err)
	}

	b = newBeacon()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err == nil {
		t.Error("second start accepted")
	}
	if err := b.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	b.Kick() // after Close: must neither block nor panic

	for i := range 20 {
		b := newBeacon()
		started := make(chan error, 1)
		go func() { started <- b.Start(ctx) }()
		if i%2 == 0 {
			runtime.Gosched()
		}
		if err := b.Close(); err != nil {
			t.Errorf("round %d: close: %v", i, err)
		}
		if err := <-started; err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("round %d: start: %v", i, err)
		}
	}
}
