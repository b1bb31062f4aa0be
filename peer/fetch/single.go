package fetch

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/redleader-p2p/redleader/election"
	"github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/jobs"
)

// Single flight per subnet (issue #10, Builds 3 and 6): only the Red
// Leader takes content from the origin; the other agents tell it what
// they need (a demand, cluster RPC) and fetch the blocks from the LAN.
// SingleFlight is the pipeline's Catalog (the election's catalog, by
// content key, as the pipeline sees it) and the election's DemandHandler
// (the Red Leader's side of demands); single_run.go is the per-job side.

// Subnet is what single flight needs of the election (*election.Node).
type Subnet interface {
	LookupCatalog(ctx context.Context, key, sha string) (election.CatalogEntry, bool, error)
	CommitCatalogPart(ctx context.Context, p election.CatalogPart) error
	SendDemand(ctx context.Context, d election.Demand) (election.DemandReply, error)
	RedLeaderSeat() (election.RedLeader, bool)
}

// Single-flight defaults.
const (
	// DefaultFallbackDelay is wan_fallback_delay's default: a non-leader
	// that got no verified block (nor other progress) of a content from
	// its Red Leader for this long fetches from the origin itself.
	DefaultFallbackDelay = 30 * time.Second
	// DefaultAppointWait is how long an appointment takes at most, by
	// default (confirm_timeout + checkin_timeout of the default config,
	// rounded up): a subnet with no confirmed Red Leader for longer sends
	// its agents to the origin.
	DefaultAppointWait = 10 * time.Second
	// demandPoll is how long a non-leader's demand poll asks the Red Leader
	// to hold its answer for news.
	demandPoll = 1500 * time.Millisecond
	// demandBatch is how many more bytes than the poll's Held the Red
	// Leader must hold for a held poll to return (16 blocks): members fetch
	// blocks in rounds of a batch, not one round trip per block.
	demandBatch = 16 * content.BlockSize
	// reprobeEvery is how often a waiting non-leader probes the LAN again
	// for other holders of a segment.
	reprobeEvery = 3 * time.Second
)

// SingleFlightConfig configures a SingleFlight.
type SingleFlightConfig struct {
	// Subnet returns the agent's election node, nil while it has none (it
	// changes when the agent re-homes).
	Subnet func() Subnet
	// Secret returns the subnet content secret (the pipeline's Secret).
	Secret func() []byte
	// Role says whether this agent acts as Red Leader now.
	Role Role
	// CheckURL checks a demanded URL before the Red Leader fetches it; nil
	// means CheckDemandURL with net.DefaultResolver and Self.
	CheckURL func(ctx context.Context, u *url.URL) error
	// Self returns the agent's own addresses (CheckDemandURL refuses them).
	Self func() []netip.Addr
	// PeerAddr returns this agent's MS-PCCRR address as LAN peers dial it
	// (host:port): the Red Leader names it in demand replies.
	PeerAddr func() string
	// FallbackDelay is wan_fallback_delay (0: DefaultFallbackDelay).
	FallbackDelay time.Duration
	// AppointWait is how long an appointment takes at most (0:
	// DefaultAppointWait).
	AppointWait time.Duration
	// DemandDir holds the data files of the downloads the Red Leader runs
	// for demands (removed when each ends; the content stays in the cache).
	DemandDir string
	// PublishServed, if set, receives the ranking inputs the demands the
	// Red Leader serves give it (Served) whenever they change, and a zero
	// Served once the seat is another node's. The agent publishes the
	// higher priority of its jobs' and Served.Priority, with the larger of
	// its job's progress and Served.Length at that priority.
	PublishServed func(Served)
	// Node is this agent's node ID: the served inputs stay while the
	// committed seat is this node's, through a lease that lapses for a
	// moment (a loaded Raft leader), so that the seat does not move then.
	Node string
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// SingleFlight is an agent's part in its subnet's single flight. Make it
// with NewSingleFlight, pass it as the pipelines' Catalog and the
// election's Config.Demand, Attach the pipeline that serves demands, and
// Close it when the agent stops.
type SingleFlight struct {
	cfg SingleFlightConfig
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	pipe    *Pipeline
	flights map[string]*flight // by content key ID
	served  Served
	demand  jobs.Bytes // what the downloads for demands fetched, by source
}

// Served is what the demands a Red Leader serves give its ranking inputs
// (the members polled within election.DemandIdle; the content done or not:
// they still fetch its blocks from the Red Leader).
type Served struct {
	// Priority is the highest priority that at least two members demand:
	// a peer with an equal-priority job then does not displace the Red
	// Leader, while a single member that needs something more urgently
	// than anyone else takes the seat (and the leader rate) for itself.
	Priority election.Priority
	// Length[p] is the length of the largest content a member demands at
	// priority p or above: the progress the Red Leader publishes with
	// priority p. Every member fetching that content gets it through the
	// Red Leader, so none can be ahead of it; its held bytes would let
	// gossip lag, or members fetching from the LAN while a new Red Leader
	// starts, displace it ("progress more than 10% ahead").
	Length [election.PriorityForeground + 1]uint64
}

var (
	_ Catalog                = (*SingleFlight)(nil)
	_ election.DemandHandler = (*SingleFlight)(nil)
)

// NewSingleFlight returns a SingleFlight for cfg.
func NewSingleFlight(cfg SingleFlightConfig) *SingleFlight {
	if cfg.FallbackDelay <= 0 {
		cfg.FallbackDelay = DefaultFallbackDelay
	}
	if cfg.AppointWait <= 0 {
		cfg.AppointWait = DefaultAppointWait
	}
	s := &SingleFlight{cfg: cfg, log: cfg.Logger, flights: map[string]*flight{}}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Go(s.tidyLoop)
	return s
}

// Attach sets the pipeline the Red Leader runs demanded downloads with (its
// Origin should check every address it dials: Options.CheckAddr).
func (s *SingleFlight) Attach(p *Pipeline) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pipe = p
}

// Close stops the downloads run for demands and waits for them.
func (s *SingleFlight) Close() {
	s.cancel()
	s.wg.Wait()
}

func (s *SingleFlight) subnet() Subnet {
	if s.cfg.Subnet == nil {
		return nil
	}
	return s.cfg.Subnet()
}

func (s *SingleFlight) leader() bool { return s.cfg.Role != nil && s.cfg.Role.Leader() }

func (s *SingleFlight) secret() []byte {
	if s.cfg.Secret == nil {
		return nil
	}
	return s.cfg.Secret()
}

// Lookup implements Catalog: the committed descriptions of key's content
// (the first ones, or all), nil when the catalog has none.
func (s *SingleFlight) Lookup(ctx context.Context, key Key) ([]content.Segment, error) {
	sub := s.subnet()
	if sub == nil || !key.Valid() {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	e, ok, err := sub.LookupCatalog(ctx, key.ID(), "")
	if err != nil || !ok {
		return nil, err
	}
	if e.Conflicted {
		return nil, fmt.Errorf("%w: %s", ErrCatalogConflict, key.ID()[:16])
	}
	if e.Length != key.Length {
		return nil, nil
	}
	return segmentsOf(e.Segments, s.secret()), nil
}

// lookupDigest returns the descriptions of the complete entry whose
// content has SHA-256 sha (hex), nil when there is none.
func (s *SingleFlight) lookupDigest(ctx context.Context, sha string, length int64) []content.Segment {
	sub := s.subnet()
	if sub == nil || sha == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	e, ok, err := sub.LookupCatalog(ctx, "", sha)
	if err != nil || !ok || !e.Complete() || e.Length != length {
		return nil
	}
	return segmentsOf(e.Segments, s.secret())
}

// Commit implements Catalog: segments first, first+1, … of key's content,
// as this agent, the Red Leader. The last part carries the content's
// SHA-256 when the run that computed it knows it.
func (s *SingleFlight) Commit(ctx context.Context, key Key, first int, segs []content.Segment) error {
	sub := s.subnet()
	if sub == nil {
		return errors.New("no election")
	}
	p := election.CatalogPart{Key: key.ID(), Length: key.Length, First: first}
	if first+len(segs) == election.CatalogSegments(key.Length) {
		p.SHA256 = s.digestOf(p.Key)
	}
	for _, d := range segs {
		p.Segments = append(p.Segments, catalogSegmentOf(d))
	}
	return sub.CommitCatalogPart(ctx, p)
}

// digestOf returns the SHA-256 (hex) of key's content when the owner run
// of this agent knows it: its own sum, once every segment is in.
func (s *SingleFlight) digestOf(key string) string {
	s.mu.Lock()
	f := s.flights[key]
	s.mu.Unlock()
	if f == nil {
		return ""
	}
	return f.digest()
}

// segmentsOf turns catalog segments into the pipeline's descriptions:
// HoD from the block hashes, Kp and the segment ID from the subnet secret.
func segmentsOf(cs []election.CatalogSegment, secret []byte) []content.Segment {
	ss := content.NewServerSecret(secret)
	out := make([]content.Segment, 0, len(cs))
	for _, c := range cs {
		d := content.Segment{Offset: uint64(c.Offset), Length: uint32(c.Length), BlockSize: content.BlockSize,
			HashAlgo: content.SHA256, BlockHashes: make([]content.Digest, len(c.Hashes)/content.DigestSize)}
		for i := range d.BlockHashes {
			copy(d.BlockHashes[i][:], c.Hashes[i*content.DigestSize:])
		}
		d.HoD = content.HoDV1(d.BlockHashes)
		d.Kp = ss.SegmentSecret(content.SHA256, d.HoD)
		d.ID = content.HoHoDk(content.SHA256, d.Kp, d.HoD)
		out = append(out, d)
	}
	return out
}

// catalogSegmentOf is the catalog form of a description.
func catalogSegmentOf(d content.Segment) election.CatalogSegment {
	h := make([]byte, 0, len(d.BlockHashes)*content.DigestSize)
	for _, b := range d.BlockHashes {
		h = append(h, b[:]...)
	}
	return election.CatalogSegment{Offset: int64(d.Offset), Length: int64(d.Length), Hashes: h}
}

// flight is one content the agent fetches as Red Leader (for its own jobs
// or for demands): what the other agents learn of it through demands.
type flight struct {
	key string
	url string // the URL a demand named (to run a download for it)

	mu      sync.Mutex
	owner   *run // the run that takes the content from the origin; nil: none now
	runs    int  // runs attached (owner and local followers)
	length  int64
	segs    []content.Segment // published descriptions, from the first, in order
	held    int64
	sha     string              // the content's SHA-256 when known
	done    bool                // every segment published
	err     string              // the last owner's failure
	prio    election.Priority   // the highest demanded (the download runs at it)
	members map[string]demander // who demands it, by node
	polled  time.Time           // the last demand poll
	demand  bool                // a download for demands runs (or is starting)
	changed chan struct{}       // closed and replaced on every change
}

// demander is one member's demand of a flight.
type demander struct {
	prio   election.Priority
	polled time.Time
}

// notifyLocked wakes the waiters. f.mu must be held.
func (f *flight) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *flight) digest() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sha != "" {
		return f.sha
	}
	if r := f.owner; r != nil && len(f.segs) == len(r.segs) {
		return hex.EncodeToString(r.sum.Sum(nil))
	}
	return ""
}

// flightOf returns key's flight, made if needed.
func (s *SingleFlight) flightOf(key string) *flight {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.flights[key]
	if f == nil {
		f = &flight{key: key, changed: make(chan struct{}), members: map[string]demander{}}
		s.flights[key] = f
	}
	return f
}

// Demand implements election.DemandHandler: the Red Leader's answer to a
// member's demand. It checks the URL, starts a download for the content
// unless one runs, and answers with what exists from d.Have on, holding the
// answer up to d.Wait for news.
func (s *SingleFlight) Demand(ctx context.Context, d election.Demand) (election.DemandReply, error) {
	if !s.leader() {
		return election.DemandReply{}, election.ErrNotRedLeader
	}
	u, err := url.Parse(d.URL)
	if err != nil {
		return election.DemandReply{}, fmt.Errorf("%w: does not parse", ErrDemandURL)
	}
	check := s.cfg.CheckURL
	if check == nil {
		check = func(ctx context.Context, u *url.URL) error {
			var self []netip.Addr
			if s.cfg.Self != nil {
				self = s.cfg.Self()
			}
			return CheckDemandURL(ctx, net.DefaultResolver, u, self)
		}
	}
	if err := check(ctx, u); err != nil {
		return election.DemandReply{}, err
	}
	if d.Key == "" {
		return election.DemandReply{}, errors.New("a demand names the content key (its Identify gave one)")
	}
	f := s.flightOf(d.Key)
	f.mu.Lock()
	f.polled = time.Now()
	f.prio = max(f.prio, d.Priority)
	f.members[d.From] = demander{prio: d.Priority, polled: f.polled}
	if f.length == 0 && f.runs == 0 {
		// The member's Identify gave the length; a run of this agent's,
		// once attached, sets the one the origin tells it.
		f.length = d.Length
	}
	if f.url == "" {
		f.url = d.URL
	}
	start := f.owner == nil && !f.demand && !f.done
	if start {
		f.demand, f.err = true, ""
	}
	f.mu.Unlock()
	s.publishServed()
	if start && !s.startDemand(f, d) {
		f.mu.Lock()
		f.demand = false
		f.mu.Unlock()
	}
	wait := time.NewTimer(d.Wait)
	defer wait.Stop()
	for {
		f.mu.Lock()
		rep := s.replyLocked(f, d.Have)
		news := len(rep.Segments) > 0 || rep.Done || rep.Failed || rep.Held >= max(d.Held, 0)+demandBatch
		ch := f.changed
		f.mu.Unlock()
		if news || d.Wait <= 0 {
			return rep, nil
		}
		select {
		case <-ch:
		case <-wait.C:
			return rep, nil
		case <-ctx.Done():
			return rep, nil
		}
	}
}

// replyLocked is f's demand reply from segment have on. f.mu must be held.
func (s *SingleFlight) replyLocked(f *flight, have int) election.DemandReply {
	rep := election.DemandReply{Key: f.key, Length: f.length, Total: election.CatalogSegments(f.length), Held: f.held,
		Done: f.done, Failed: !f.done && f.err != "" && f.owner == nil && !f.demand, Error: f.err}
	if s.cfg.PeerAddr != nil {
		rep.Peer = s.cfg.PeerAddr()
	}
	for i := have; i < len(f.segs) && len(rep.Segments) < 32; i++ {
		rep.Segments = append(rep.Segments, catalogSegmentOf(f.segs[i]))
	}
	return rep
}

// startDemand runs the download of f's content for demands (the pipeline
// attached by Attach); it reports whether it started.
func (s *SingleFlight) startDemand(f *flight, d election.Demand) bool {
	s.mu.Lock()
	p := s.pipe
	s.mu.Unlock()
	if p == nil || s.cfg.DemandDir == "" {
		s.log.Warn("single flight: no pipeline attached for demands", "key", f.key[:16])
		return false
	}
	if s.ctx.Err() != nil {
		return false
	}
	s.wg.Go(func() {
		if err := os.MkdirAll(s.cfg.DemandDir, 0o700); err != nil {
			s.endDemand(f, err)
			return
		}
		w := &jobs.Work{ID: "demand-" + f.key[:16], Request: jobs.Request{URL: d.URL, Priority: d.Priority},
			DataPath: filepath.Join(s.cfg.DemandDir, f.key[:32]+".data")}
		ctx, cancel := context.WithCancel(s.ctx)
		defer cancel()
		go func() { // a demand run ends when the role does
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if !s.leader() {
						cancel()
						return
					}
				}
			}
		}()
		s.log.Info("single flight: fetching demanded content", "key", f.key[:16], "priority", d.Priority)
		_, err := p.runFor(ctx, w, demandProgress{s}, f.key)
		_ = removeData(w.DataPath)
		s.endDemand(f, err)
	})
	return true
}

// endDemand records the end of a download run for demands.
func (s *SingleFlight) endDemand(f *flight, err error) {
	f.mu.Lock()
	f.demand = false
	if err != nil && !f.done {
		f.err = err.Error()
		s.log.Warn("single flight: demanded content not fetched", "key", f.key[:16], "err", err)
	}
	f.notifyLocked()
	f.mu.Unlock()
	s.publishServed()
}

// publishServed recomputes the ranking inputs of the demands served (see
// SingleFlightConfig.PublishServed) and publishes them on change.
func (s *SingleFlight) publishServed() {
	var top Served
	if s.leader() || s.holdsSeat() {
		top = s.servedNow(time.Now())
	}
	s.mu.Lock()
	changed := top != s.served
	s.served = top
	s.mu.Unlock()
	if changed && s.cfg.PublishServed != nil {
		s.cfg.PublishServed(top)
	}
}

// holdsSeat reports whether the committed, confirmed seat is this node's.
func (s *SingleFlight) holdsSeat() bool {
	sub := s.subnet()
	if sub == nil || s.cfg.Node == "" {
		return false
	}
	seat, ok := sub.RedLeaderSeat()
	return ok && seat.Node == s.cfg.Node
}

// servedNow is what the live demands give: the second-highest of the
// members' priorities (each member's highest over the contents it polled
// within election.DemandIdle that are complete or not failed), and per
// priority the largest such content demanded at it or above.
func (s *SingleFlight) servedNow(now time.Time) Served {
	s.mu.Lock()
	defer s.mu.Unlock()
	best := map[string]election.Priority{}
	var out Served
	for _, f := range s.flights {
		f.mu.Lock()
		if f.done || f.err == "" {
			top, demanded := election.PriorityNone, false
			for node, d := range f.members {
				if now.Sub(d.polled) < election.DemandIdle {
					best[node] = max(best[node], d.prio)
					top, demanded = max(top, d.prio), true
				}
			}
			for p := election.PriorityNone; demanded && p <= top; p++ {
				out.Length[p] = max(out.Length[p], uint64(max(f.length, 0)))
			}
		}
		f.mu.Unlock()
	}
	prios := slices.SortedFunc(maps.Values(best), func(a, b election.Priority) int { return cmp.Compare(b, a) })
	if len(prios) >= 2 {
		out.Priority = prios[1]
	}
	return out
}

// RoleChanged republishes the ranking inputs of the demands served (call
// it on every role change): an agent whose seat went to another node
// serves none.
func (s *SingleFlight) RoleChanged() { s.publishServed() }

// Served returns the ranking inputs the demands served give now.
func (s *SingleFlight) Served() Served {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.served
}

// tidyLoop forgets flights nobody runs or polls any more and keeps the
// served priority current.
func (s *SingleFlight) tidyLoop() {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		s.mu.Lock()
		for k, f := range s.flights {
			f.mu.Lock()
			idle := f.runs == 0 && !f.demand && now.Sub(f.polled) >= election.DemandIdle
			for node, d := range f.members {
				if now.Sub(d.polled) >= election.DemandIdle {
					delete(f.members, node)
				}
			}
			f.mu.Unlock()
			if idle {
				delete(s.flights, k)
			}
		}
		s.mu.Unlock()
		s.publishServed()
	}
}

// DemandBytes returns what the downloads run for demands (no job of this
// agent's) fetched since it started, by source and origin reason.
func (s *SingleFlight) DemandBytes() jobs.Bytes {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.demand.Clone()
}

// demandProgress is the Progress of downloads run for demands: they are no
// job, so only the bytes they fetch are counted (DemandBytes); the flight's
// own progress (held bytes) is taken by the run itself.
type demandProgress struct{ s *SingleFlight }

func (demandProgress) SetTotal(int64)                {}
func (demandProgress) SetHeld(int64)                 {}
func (demandProgress) Audit(jobs.AuditRecord)        {}
func (demandProgress) Checkpoint(state []byte) error { return nil }

func (p demandProgress) Fetched(from jobs.From, n int64) {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	p.s.demand.Add(from, n)
}
