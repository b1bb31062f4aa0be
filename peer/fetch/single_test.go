package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redleader-p2p/redleader/election"
	"github.com/redleader-p2p/redleader/internal/sublisten"
	"github.com/redleader-p2p/redleader/peer/cache"
	"github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/jobs"
	"github.com/redleader-p2p/redleader/peer/retrieval"
)

// The single-flight tests run a subnet in this process: real election
// Nodes (Raft, the cluster RPC with its caller checks) on 127.0.0.x peer
// ports, each agent with its own segment cache served over MS-PCCRR, a
// Pipeline and a SingleFlight, and a plain origin that counts what it
// sends. MS-PCCRD is stood in for by a prober that asks the other agents'
// caches (the pipeline tests use a fake prober too).

// subnetTable is the gossip pool of the test subnet: every agent alive.
type subnetTable struct {
	mu      sync.Mutex
	members map[string]election.Member
}

func (t *subnetTable) view(node string) election.Membership { return tableView{t, node} }

type tableView struct {
	t    *subnetTable
	node string
}

func (v tableView) Members() []election.Member {
	v.t.mu.Lock()
	defer v.t.mu.Unlock()
	out := make([]election.Member, 0, len(v.t.members))
	for _, m := range v.t.members {
		out = append(out, m)
	}
	return out
}

func (v tableView) SelfInputs() (election.Priority, uint64) {
	v.t.mu.Lock()
	defer v.t.mu.Unlock()
	m := v.t.members[v.node]
	return m.Priority, m.Progress
}

func (v tableView) SetHead(h election.Head) {
	v.t.mu.Lock()
	defer v.t.mu.Unlock()
	m := v.t.members[v.node]
	m.Head = h
	v.t.members[v.node] = m
}

// peerPort is an agent's peer port on its own loopback address: one TCP
// listener whose connections start with a byte naming their channel (R:
// Raft, C: cluster RPC), as the agent's port multiplexes them.
type peerPort struct {
	ip   net.IP
	ln   net.Listener
	raft *sublisten.Listener
	rpc  *sublisten.Listener
	wg   sync.WaitGroup
}

func newPeerPort(t *testing.T, ip net.IP) *peerPort {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		t.Skipf("cannot listen on %s (loopback range): %v", ip, err)
	}
	p := &peerPort{ip: ip, ln: ln, raft: sublisten.New(ln.Addr(), 64, nil), rpc: sublisten.New(ln.Addr(), 64, nil)}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() {
				var b [1]byte
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadFull(c, b[:]); err != nil {
					c.Close()
					return
				}
				_ = c.SetReadDeadline(time.Time{})
				to := p.raft
				if b[0] == 'C' {
					to = p.rpc
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if to.Deliver(ctx, c) != nil {
					c.Close()
				}
			})
		}
	})
	return p
}

func (p *peerPort) close() {
	p.ln.Close()
	p.raft.Close()
	p.rpc.Close()
	p.wg.Wait()
}

func (p *peerPort) RaftListener() net.Listener { return p.raft.Sub() }
func (p *peerPort) RPCListener() net.Listener  { return p.rpc }
func (p *peerPort) Advertise() net.Addr        { return p.ln.Addr() }

func (p *peerPort) Dial(ctx context.Context, addr string, rpc bool) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: p.ip}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	ch := byte('R')
	if rpc {
		ch = 'C'
	}
	if _, err := c.Write([]byte{ch}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// agent is one agent of the test subnet.
type agent struct {
	i      int
	node   *election.Node
	port   *peerPort
	cache  *cache.Cache
	pccrr  string // its MS-PCCRR address
	pipe   *Pipeline
	flight *SingleFlight
	served []Served
	mu     sync.Mutex
}

func (a *agent) Leader() bool { return a.node.IsRedLeader() }

// lanProber answers probes from the other agents' caches.
type lanProber struct {
	self   *agent
	agents *[]*agent
}

func (p lanProber) Probe(_ context.Context, id content.SegmentID) ([]Holder, error) {
	var out []Holder
	for _, a := range *p.agents {
		if a == p.self {
			continue
		}
		if held := a.cache.Held(id); len(held) > 0 {
			out = append(out, Holder{Peer: a.pccrr, Blocks: uint32(len(held))})
		}
	}
	return out, nil
}

type subnetOpts struct {
	n             int
	fallbackDelay time.Duration
	appointWait   time.Duration
	checkURL      func(ctx context.Context, u *url.URL) error
}

// startSubnet starts n agents and waits for a confirmed Red Leader.
func startSubnet(t *testing.T, o subnetOpts) []*agent {
	t.Helper()
	table := &subnetTable{members: map[string]election.Member{}}
	agents := make([]*agent, 0, o.n)
	for i := range o.n {
		ip := net.IPv4(127, 0, 0, byte(11+i))
		a := &agent{i: i, port: newPeerPort(t, ip)}
		t.Cleanup(a.port.close)
		table.members[fmt.Sprint("agent-", i)] = election.Member{Node: fmt.Sprint("agent-", i), RaftAddr: a.port.Advertise().String(),
			Status: election.StatusAlive, Since: time.Now().Add(-time.Hour), Version: 2, Uptime: time.Hour + time.Duration(i)*time.Second}
		agents = append(agents, a)
	}
	log := slog.New(slog.DiscardHandler)
	for _, a := range agents {
		id := fmt.Sprint("agent-", a.i)
		n, err := election.New(election.Config{
			Node: id, DataDir: t.TempDir(), Voter: true, Class: election.ClassDesktop, RaftMultiplier: 1,
			CheckinInterval: 200 * time.Millisecond, CheckinTimeout: 1500 * time.Millisecond, ConfirmTimeout: 1500 * time.Millisecond,
			NLMTTL: time.Minute, DeadVoterGrace: 30 * time.Second, QuorumLossTimeout: time.Minute, Settle: 200 * time.Millisecond,
			InitialPolicy: election.Policy{LeaderRate: "0", PeerRate: "0", LANRate: "0"}, Keyed: true,
			Demand: demandOf{a}, Logger: log,
		}, table.view(id), a.port)
		if err != nil {
			t.Fatal(err)
		}
		a.node = n
		a.cache = openCache(t, 0)
		a.pccrr, _ = holderOf(t, a.cache)
		peers := retrieval.NewClient(retrieval.ClientConfig{Logger: log})
		t.Cleanup(peers.Close)
		check := o.checkURL
		a.flight = NewSingleFlight(SingleFlightConfig{
			Subnet: func() Subnet { return a.node }, Secret: func() []byte { return a.node.State().Secret }, Role: a,
			CheckURL: check, PeerAddr: func() string { return a.pccrr }, FallbackDelay: o.fallbackDelay, AppointWait: o.appointWait,
			DemandDir: t.TempDir(), Logger: log,
			PublishServed: func(sv Served) {
				a.mu.Lock()
				a.served = append(a.served, sv)
				a.mu.Unlock()
			},
			Node: id,
		})
		a.pipe = pipe(t, PipelineConfig{Cache: a.cache, Prober: lanProber{a, &agents}, Peers: peers, Role: a,
			Secret: func() []byte { return a.node.State().Secret }, Catalog: a.flight, Logger: log})
		a.flight.Attach(a.pipe)
	}
	for _, a := range agents {
		if err := a.node.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, a := range agents {
			a.flight.Close()
		}
		var wg sync.WaitGroup
		for _, a := range agents {
			wg.Go(func() { _ = a.node.Close() })
		}
		wg.Wait()
	})
	deadline := time.Now().Add(30 * time.Second)
	for redOf(agents) == nil {
		if time.Now().After(deadline) {
			t.Fatal("no confirmed Red Leader within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return agents
}

// demandOf hands the election's demands to the agent's SingleFlight (made
// after the Node).
type demandOf struct{ a *agent }

func (d demandOf) Demand(ctx context.Context, dm election.Demand) (election.DemandReply, error) {
	return d.a.flight.Demand(ctx, dm)
}

// redOf returns the agent acting as Red Leader with a confirmed seat that
// every agent knows, or nil.
func redOf(agents []*agent) *agent {
	var red *agent
	for _, a := range agents {
		seat, ok := a.node.RedLeaderSeat()
		if !ok {
			return nil
		}
		if a.node.IsRedLeader() {
			red = a
		}
		if red != nil && seat.Node != fmt.Sprint("agent-", red.i) {
			return nil
		}
	}
	return red
}

// allowOrigin is a CheckURL that lets the test origin (on loopback)
// through and applies CheckDemandURL to everything else.
func allowOrigin(origin string) func(ctx context.Context, u *url.URL) error {
	return func(ctx context.Context, u *url.URL) error {
		if strings.HasPrefix(u.String(), origin) {
			return nil
		}
		return CheckDemandURL(ctx, nil, u, nil)
	}
}

type jobOutcome struct {
	a    *agent
	w    *jobs.Work
	prog *testProgress
	res  jobs.Result
	err  error
}

// runJobs runs one job of url on each agent at once.
func runJobs(t *testing.T, agents []*agent, url string) []jobOutcome {
	t.Helper()
	out := make([]jobOutcome, len(agents))
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	for i, a := range agents {
		w := &jobs.Work{ID: fmt.Sprint("job-", i), Request: jobs.Request{URL: url, Priority: election.PriorityNormal},
			DataPath: filepath.Join(t.TempDir(), "data")}
		out[i] = jobOutcome{a: a, w: w, prog: newProgress()}
		wg.Go(func() { out[i].res, out[i].err = a.pipe.Run(ctx, w, out[i].prog) })
	}
	wg.Wait()
	return out
}

// TestSingleFlightSubnet: three agents fetch the same content from a plain
// origin at once; the Red Leader takes it from the origin, the others from
// it over the LAN: the origin serves one copy, and every audit says why.
func TestSingleFlightSubnet(t *testing.T) {
	data := testContent(twoSegments, 41)
	f := &plainFile{modified: time.Now().Add(-time.Hour).Truncate(time.Second)} // python3 -m http.server: no ETag, no Range
	f.set(data, "", f.modified)
	url, bc, _ := plainOrigin(t, f)
	agents := startSubnet(t, subnetOpts{n: 3, fallbackDelay: time.Minute, appointWait: time.Minute,
		checkURL: allowOrigin(strings.TrimSuffix(url, "/f"))})
	red := redOf(agents)
	outs := runJobs(t, agents, url)
	for _, o := range outs {
		checkDone(t, o.res, o.err, o.w, o.prog, data)
		src := o.prog.bySource()
		reasons := o.prog.reasons()
		if o.a == red {
			// The Red Leader's own job takes the content from the origin,
			// or, when a member's demand got there first and started the
			// demand run, from its cache as that run fills it.
			if src[jobs.SourceOrigin]+src[jobs.SourceCache] < int64(len(data)) || src[jobs.SourcePeer] != 0 ||
				reasons[jobs.ReasonRedLeaderFetch] != src[jobs.SourceOrigin] {
				t.Errorf("Red Leader: bytes by source %v, origin reasons %v", src, reasons)
			}
			// What its job did not take from the origin, the demand run did,
			// and counted.
			if d := red.flight.DemandBytes(); d.Origin+src[jobs.SourceOrigin] < int64(len(data)) {
				t.Errorf("Red Leader: job bytes by source %v, demand downloads %+v: the origin copy is not accounted for", src, d)
			}
			continue
		}
		if src[jobs.SourceOrigin] != 0 || src[jobs.SourcePeer] < int64(len(data))*9/10 {
			t.Errorf("agent %d: bytes by source %v, origin reasons %v", o.a.i, src, reasons)
		}
	}
	for _, o := range outs {
		t.Logf("agent %d (Red Leader %v): bytes by source %v, origin reasons %v", o.a.i, o.a == red, o.prog.bySource(), o.prog.reasons())
	}
	t.Logf("origin served %d bytes for %d of content", bc.n.Load(), len(data))
	if n := bc.n.Load(); n > int64(len(data))*11/10 {
		t.Errorf("origin served %d bytes for %d of content (%.2f copies)", n, len(data), float64(n)/float64(len(data)))
	}
	// The Red Leader committed the content to the catalog, with its digest.
	e, ok, err := agents[(red.i+1)%3].node.LookupCatalog(t.Context(), "", outs[0].res.SHA256)
	if err != nil || !ok || !e.Complete() || e.Node != fmt.Sprint("agent-", red.i) {
		t.Errorf("catalog by digest: ok=%v err=%v complete=%v node=%s", ok, err, e.Complete(), e.Node)
	}
	// A later job on a non-leader with an empty cache finds the
	// descriptions in the catalog and the blocks on the LAN: no origin
	// byte.
	before := bc.n.Load()
	other := agents[(red.i+2)%3]
	peers := retrieval.NewClient(retrieval.ClientConfig{Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(peers.Close)
	p2 := pipe(t, PipelineConfig{Cache: openCache(t, 0), Prober: lanProber{other, &agents}, Peers: peers, Role: other,
		Secret: func() []byte { return other.node.State().Secret }, Catalog: other.flight})
	w := &jobs.Work{ID: "again", Request: jobs.Request{URL: url}, DataPath: filepath.Join(t.TempDir(), "data")}
	prog := newProgress()
	res, err := p2.Run(t.Context(), w, prog)
	checkDone(t, res, err, w, prog, data)
	if bc.n.Load() != before || prog.bySource()[jobs.SourcePeer] != int64(len(data)) {
		t.Errorf("catalogued content: origin +%d bytes, by source %v", bc.n.Load()-before, prog.bySource())
	}
	// The Red Leader published the priority it served while it did, with
	// the content's length as its progress (no member can be ahead of it).
	red.mu.Lock()
	served := append([]Served(nil), red.served...)
	red.mu.Unlock()
	if !slices.ContainsFunc(served, func(sv Served) bool {
		return sv.Priority == election.PriorityNormal && sv.Length[election.PriorityNormal] == uint64(len(data))
	}) {
		t.Errorf("ranking inputs published by the Red Leader: %v, want normal with %d among them", served, len(data))
	}
}

// TestSingleFlightFallbacks: with no Red Leader the non-leader waits
// AppointWait, then fetches itself (no_red_leader); a Red Leader that
// cannot fetch (its URL check refuses the origin) gives no progress, and
// after wan_fallback_delay the non-leader fetches itself
// (fallback_after_delay). The demand's refusal of a loopback URL goes
// through the real demand RPC.
func TestSingleFlightFallbacks(t *testing.T) {
	data := testContent(3*content.BlockSize+5, 42)
	f := &plainFile{etag: `"v1"`, ranges: true}
	f.set(data, `"v1"`, time.Time{})
	url, bc, _ := plainOrigin(t, f)
	agents := startSubnet(t, subnetOpts{n: 3, fallbackDelay: 1500 * time.Millisecond, appointWait: time.Second})
	red := redOf(agents)
	var other *agent
	for _, a := range agents {
		if a != red {
			other = a
		}
	}
	// The default CheckURL (CheckDemandURL) refuses the loopback origin:
	// the demand RPC answers 403 and no download starts on the Red Leader.
	key := func() string {
		o, err := NewOrigin(Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		defer o.Close()
		id, err := o.Identify(t.Context(), url, nil)
		if err != nil {
			t.Fatal(err)
		}
		return id.Key.ID()
	}()
	_, err := other.node.SendDemand(t.Context(), election.Demand{URL: url, Key: key, Priority: election.PriorityNormal})
	if !errors.Is(err, election.ErrRefused) || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("demand of a loopback URL: %v", err)
	}
	for _, u := range []string{"http://[fe80::1]:8080/f", "http://169.254.169.254/latest", "http://0.0.0.0/f", "ftp://example.org/f"} {
		if _, err := other.node.SendDemand(t.Context(), election.Demand{URL: u, Key: key}); !errors.Is(err, election.ErrRefused) {
			t.Errorf("demand of %s: %v", u, err)
		}
	}
	if n := bc.n.Load(); n != 0 {
		t.Fatalf("the origin served %d bytes for refused demands", n)
	}
	// The job on the non-leader: the Red Leader refuses its demand (no
	// progress), so after the fallback delay it fetches itself.
	w := &jobs.Work{ID: "fb", Request: jobs.Request{URL: url}, DataPath: filepath.Join(t.TempDir(), "data")}
	prog := newProgress()
	start := time.Now()
	res, err := other.pipe.Run(t.Context(), w, prog)
	checkDone(t, res, err, w, prog, data)
	if r := prog.reasons(); r[jobs.ReasonFallbackAfterDelay] != int64(len(data)) {
		t.Errorf("origin bytes by reason %v", r)
	}
	if d := time.Since(start); d < 1500*time.Millisecond {
		t.Errorf("fell back after %v, before the delay", d)
	}

	// No Red Leader: a lone agent whose election has no seat.
	lone := &agent{i: 9}
	lone.cache = openCache(t, 0)
	noSeat := noSeatSubnet{}
	lone.flight = NewSingleFlight(SingleFlightConfig{Subnet: func() Subnet { return noSeat }, AppointWait: 300 * time.Millisecond,
		FallbackDelay: time.Minute, DemandDir: t.TempDir()})
	t.Cleanup(lone.flight.Close)
	p := pipe(t, PipelineConfig{Cache: lone.cache, Role: role(false), Catalog: lone.flight})
	w = &jobs.Work{ID: "lone", Request: jobs.Request{URL: url}, DataPath: filepath.Join(t.TempDir(), "data")}
	prog = newProgress()
	res, err = p.Run(t.Context(), w, prog)
	checkDone(t, res, err, w, prog, data)
	if r := prog.reasons(); r[jobs.ReasonNoRedLeader] != int64(len(data)) {
		t.Errorf("no Red Leader: origin bytes by reason %v", r)
	}
}

// noSeatSubnet is an election with no Red Leader and no catalog.
type noSeatSubnet struct{}

func (noSeatSubnet) LookupCatalog(context.Context, string, string) (election.CatalogEntry, bool, error) {
	return election.CatalogEntry{}, false, election.ErrNoCatalog
}
func (noSeatSubnet) CommitCatalogPart(context.Context, election.CatalogPart) error {
	return election.ErrNotRedLeader
}
func (noSeatSubnet) SendDemand(context.Context, election.Demand) (election.DemandReply, error) {
	return election.DemandReply{}, election.ErrNoRedLeader
}
func (noSeatSubnet) RedLeaderSeat() (election.RedLeader, bool) { return election.RedLeader{}, false }

// TestCatalogSegmentsRoundTrip: descriptions survive the catalog form, IDs
// derived again from the hashes and the subnet secret.
func TestCatalogSegmentsRoundTrip(t *testing.T) {
	data := testContent(twoSegments, 7)
	info, err := content.Generate(t.Context(), bytes.NewReader(data), content.NewServerSecret(subnetSecret))
	if err != nil {
		t.Fatal(err)
	}
	var cs []election.CatalogSegment
	for _, s := range info.Segments {
		cs = append(cs, catalogSegmentOf(s))
	}
	back := segmentsOf(cs, subnetSecret)
	for i := range back {
		a, b := back[i], info.Segments[i]
		if a.ID != b.ID || a.HoD != b.HoD || a.Kp != b.Kp || a.Offset != b.Offset || a.Length != b.Length || len(a.BlockHashes) != len(b.BlockHashes) {
			t.Errorf("segment %d differs after the round trip", i)
		}
	}
	if other := segmentsOf(cs, []byte("another subnet")); other[0].ID == info.Segments[0].ID {
		t.Error("the segment ID does not depend on the subnet secret")
	}
	p := election.CatalogPart{Key: strings.Repeat("ab", 32), Length: int64(len(data)), Segments: cs[:1]}
	c := election.Command{Type: election.CmdCatalog, RequestID: "r", Time: time.Now(), Node: "a", Epoch: 1, Catalog: &p}
	if err := c.Validate(); err != nil {
		t.Errorf("a generated segment does not pass the catalog's shape check: %v", err)
	}
}

// TestServedRank: the Red Leader's ranking inputs from the demands it
// serves — the second-highest member priority (so one member with a more
// urgent job can take the seat, two with equal jobs cannot), per priority
// the largest content demanded at it or above as progress, nothing from
// idle or failed demands, and nothing once the seat is another node's
// (but kept through a lapsed lease while the seat is still this node's).
func TestServedRank(t *testing.T) {
	now := time.Now()
	old := now.Add(-election.DemandIdle)
	type dm struct {
		key, node string
		prio      election.Priority
		at        time.Time
	}
	const (
		none, normal, high = election.PriorityNone, election.PriorityNormal, election.PriorityHigh
	)
	// lengths of the contents: a 100, b 200.
	lengths := map[string]int64{"a": 100, "b": 200}
	cases := []struct {
		name    string
		demands []dm
		failed  string // this flight's download failed (not done)
		prio    election.Priority
		length  map[election.Priority]uint64 // Length at these priorities (others 0 above the top)
	}{
		{"no demand", nil, "", none, map[election.Priority]uint64{none: 0, normal: 0}},
		{"one member: its length, not its priority", []dm{{"a", "m1", high, now}}, "", none,
			map[election.Priority]uint64{none: 100, normal: 100, high: 100, election.PriorityForeground: 0}},
		{"two members, equal", []dm{{"a", "m1", normal, now}, {"a", "m2", normal, now}}, "", normal,
			map[election.Priority]uint64{normal: 100, high: 0}},
		{"one high, one normal", []dm{{"a", "m1", high, now}, {"b", "m2", normal, now}}, "", normal,
			map[election.Priority]uint64{normal: 200, high: 100}},
		{"two high on the larger content", []dm{{"a", "m1", normal, now}, {"b", "m2", high, now}, {"b", "m3", high, now}}, "", high,
			map[election.Priority]uint64{normal: 200, high: 200}},
		{"a member's highest counts once", []dm{{"a", "m1", high, now}, {"b", "m1", high, now}}, "", none,
			map[election.Priority]uint64{high: 200}},
		{"idle demand", []dm{{"a", "m1", normal, now}, {"a", "m2", normal, old}}, "", none,
			map[election.Priority]uint64{normal: 100}},
		{"failed download", []dm{{"a", "m1", normal, now}, {"a", "m2", normal, now}}, "a", none,
			map[election.Priority]uint64{none: 0, normal: 0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []Served
			role := &switchRole{}
			role.Store(true)
			seat := &seatSubnet{node: "me"}
			s := NewSingleFlight(SingleFlightConfig{Role: role, Node: "me", Subnet: func() Subnet { return seat },
				PublishServed: func(sv Served) { got = append(got, sv) }})
			defer s.Close()
			for _, d := range tc.demands {
				f := s.flightOf(d.key)
				f.length = lengths[d.key]
				f.members[d.node] = demander{prio: d.prio, polled: d.at}
				if d.key == tc.failed {
					f.err = "origin refused"
				}
			}
			s.publishServed()
			sv := s.Served()
			if sv.Priority != tc.prio {
				t.Errorf("served priority %v, want %v", sv.Priority, tc.prio)
			}
			for p, n := range tc.length {
				if sv.Length[p] != n {
					t.Errorf("length at %v: %d, want %d (%v)", p, sv.Length[p], n, sv.Length)
				}
			}
			if sv != (Served{}) && (len(got) != 1 || got[0] != sv) {
				t.Errorf("published %v, want [%v]", got, sv)
			}
			// A lease that lapses while the seat is still this node's
			// keeps the inputs; a seat that moved clears them.
			role.Store(false)
			s.RoleChanged()
			if s.Served() != sv {
				t.Errorf("lease lapsed, seat still mine: served %v, want %v", s.Served(), sv)
			}
			seat.set("another")
			s.RoleChanged()
			if s.Served() != (Served{}) {
				t.Errorf("seat moved: served %v, want none", s.Served())
			}
		})
	}
}

// seatSubnet is an election whose confirmed seat a test sets.
type seatSubnet struct {
	noSeatSubnet
	mu   sync.Mutex
	node string
}

func (s *seatSubnet) set(node string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.node = node
}

func (s *seatSubnet) RedLeaderSeat() (election.RedLeader, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return election.RedLeader{Node: s.node, Epoch: 1, ConfirmedAt: time.Unix(1, 0)}, true
}

// TestSingleFlightDemandOnly: the Red Leader has no job of its own; the two
// other agents' demands make it fetch the content into its cache, and
// what it fetched is counted (DemandBytes, the agent's
// redleader_demand_bytes_total), since no job's audit holds it.
func TestSingleFlightDemandOnly(t *testing.T) {
	data := testContent(twoSegments, 43)
	f := &plainFile{etag: `"d1"`, ranges: true}
	f.set(data, `"d1"`, time.Time{})
	url, bc, _ := plainOrigin(t, f)
	agents := startSubnet(t, subnetOpts{n: 3, fallbackDelay: time.Minute, appointWait: time.Minute,
		checkURL: allowOrigin(strings.TrimSuffix(url, "/f"))})
	red := redOf(agents)
	var others []*agent
	for _, a := range agents {
		if a != red {
			others = append(others, a)
		}
	}
	for _, o := range runJobs(t, others, url) {
		checkDone(t, o.res, o.err, o.w, o.prog, data)
		if src := o.prog.bySource(); src[jobs.SourceOrigin] != 0 {
			t.Errorf("agent %d: bytes by source %v, want none from the origin", o.a.i, src)
		}
	}
	got := red.flight.DemandBytes()
	if got.Origin != int64(len(data)) || got.OriginByReason[jobs.ReasonRedLeaderFetch] != got.Origin {
		t.Errorf("Red Leader's demand downloads: %+v, want %d origin bytes (red_leader_fetch)", got, len(data))
	}
	if n := bc.n.Load(); n > int64(len(data))*11/10 {
		t.Errorf("origin served %d bytes for %d of content", n, len(data))
	}
}

// switchRole is a Role a test switches.
type switchRole struct{ atomic.Bool }

func (r *switchRole) Leader() bool { return r.Load() }
