package election

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
)

// The catalog and demand RPCs (issue #10, Builds 3 and 6), behind the
// same caller checks as the rest of the cluster RPC (rpc.go):
//
//   - GET /rpc/catalog?key=<id>|sha256=<hex>[&first=N] answers alive
//     members, from their advertised address, with a page of an entry of
//     this Raft member's catalog (members outside Raft have none: 503);
//   - POST /rpc/demand answers alive members, for their own node only, on
//     the node that acts as Red Leader now (409 elsewhere): the demand goes
//     to Config.Demand (peer/fetch implements it with the pipeline), which
//     checks the URL (never loopback, link-local or the agent's own
//     addresses) and replies with the segment descriptions that exist so
//     far. The election bounds demands per member (MaxDemandsPerMember
//     open demands, MaxDemandURL bytes of URL, http(s) only, no user info)
//     before the handler sees them.

// Demand bounds.
const (
	// MaxDemandsPerMember is how many open demands (distinct contents
	// polled within DemandIdle) one member may have with the Red Leader.
	MaxDemandsPerMember = 8
	// MaxOpenDemands bounds the open demands of the whole subnet.
	MaxOpenDemands = 1024
	// MaxDemandURL bounds a demanded URL, in bytes.
	MaxDemandURL = 2 << 10
	// DemandIdle: an open demand its member has not polled for this long
	// is closed.
	DemandIdle = time.Minute
	// MaxDemandWait bounds how long the Red Leader holds a demand poll for
	// news (the cluster RPC client gives up after 3 s).
	MaxDemandWait = 2 * time.Second
	// catalogPageSegments is how many segments one catalog RPC answer
	// carries (about 700 KiB of JSON).
	catalogPageSegments = 32
	maxDemandBody       = 8 << 10
)

// Errors of the catalog and demand RPCs.
var (
	// ErrNotRedLeader: the node asked for a demand does not act as Red
	// Leader (any more): re-read the seat.
	ErrNotRedLeader = errors.New("not the Red Leader")
	// ErrNoRedLeader: the subnet has no confirmed Red Leader to demand from.
	ErrNoRedLeader = errors.New("no confirmed Red Leader")
	// ErrDemandLimit: the member has MaxDemandsPerMember open demands (or
	// the subnet MaxOpenDemands).
	ErrDemandLimit = errors.New("too many open demands")
	// ErrNoCatalog: no Raft member answered a catalog lookup.
	ErrNoCatalog = errors.New("no catalog reachable")
)

// Demand is what a member tells the Red Leader it needs. It carries no
// credentials: no headers at all, and a URL without user info.
type Demand struct {
	// From is the demanding node (it must be the caller's own).
	From string `json:"from"`
	// URL is the content's http or https URL (at most MaxDemandURL bytes).
	URL string `json:"url"`
	// Priority is the demanding job's priority; the Red Leader publishes
	// the highest it serves as its ranking input.
	Priority Priority `json:"priority"`
	// Key is the content key ID when the member knows it (64 hex), SHA256
	// the content's digest when its job names one.
	Key    string `json:"key,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	// Have is how many segment descriptions (from the first) the member
	// already has: the reply's Segments start there.
	Have int `json:"have,omitempty"`
	// Wait asks the Red Leader to hold the reply until it has news (a
	// segment past Have, more bytes, the end) for at most this long
	// (bounded by MaxDemandWait).
	Wait time.Duration `json:"wait_ns,omitempty"`
	// Held is the Red Leader's held bytes as the member last heard them:
	// "more bytes" then means enough more to be worth a round of block
	// fetches (the handler decides how many), not every block.
	Held int64 `json:"held,omitempty"`
	// Length is the content's length as the member's origin gave it: the
	// Red Leader's progress while it serves the content, before a run of
	// its own learns the length.
	Length int64 `json:"length,omitempty"`
}

// DemandReply is the Red Leader's answer to a demand.
type DemandReply struct {
	// Key and Length name the content once the Red Leader knows them.
	Key    string `json:"key,omitempty"`
	Length int64  `json:"length"`
	// Segments are the descriptions from Demand.Have on that exist so far,
	// in order (at most a page: ask again with a higher Have).
	Segments []CatalogSegment `json:"-"`
	// Total is the content's segment count (0 until the length is known).
	Total int `json:"total,omitempty"`
	// Held is how many of the content's bytes the Red Leader holds,
	// verified (its progress, also within a segment not yet described).
	Held int64 `json:"held"`
	// Done: the Red Leader holds all of it. Failed: it could not fetch it
	// (Error says why); the demand is closed either way.
	Done   bool   `json:"done,omitempty"`
	Failed bool   `json:"failed,omitempty"`
	Error  string `json:"error,omitempty"`
	// Peer is the Red Leader's MS-PCCRR address (host:port): a holder the
	// member may ask for blocks without probing.
	Peer string `json:"peer,omitempty"`
}

// DemandHandler serves demands on the Red Leader: the agent implements it
// with its data path (peer/fetch), so that the election never imports the
// peer packages. Demand is called only while the node acts as Red Leader,
// for a member's own demand that passed the bounds; it may hold the call
// for news up to d.Wait (bounded by ctx).
type DemandHandler interface {
	Demand(ctx context.Context, d Demand) (DemandReply, error)
}

// wireDemandReply carries the segments of a DemandReply.
type wireDemandReply struct {
	DemandReply
	Segs []wireSegment `json:"segs,omitempty"`
}

// catalogReply is the answer of GET /rpc/catalog.
type catalogReply struct {
	Found bool `json:"found"`
	// Entry is the entry with the page's segments only.
	Entry wireCatalog `json:"entry"`
	// Have is how many segments the entry has in all.
	Have int `json:"have"`
}

// demandGate keeps the open demands of each member.
type demandGate struct {
	mu   sync.Mutex
	open map[string]map[string]time.Time // node → demand identity → last poll
	n    int
}

// admit records a poll of demand id by node and reports whether it may be
// served (an open demand always is; a new one within the bounds).
func (g *demandGate) admit(node, id string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open == nil {
		g.open = map[string]map[string]time.Time{}
	}
	// Close the idle demands first.
	for nd, ds := range g.open {
		for d, at := range ds {
			if now.Sub(at) >= DemandIdle {
				delete(ds, d)
				g.n--
			}
		}
		if len(ds) == 0 {
			delete(g.open, nd)
		}
	}
	ds := g.open[node]
	if _, ok := ds[id]; ok {
		ds[id] = now
		return true
	}
	if len(ds) >= MaxDemandsPerMember || g.n >= MaxOpenDemands {
		return false
	}
	if ds == nil {
		ds = map[string]time.Time{}
		g.open[node] = ds
	}
	ds[id] = now
	g.n++
	return true
}

// done closes node's demand id.
func (g *demandGate) done(node, id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if ds := g.open[node]; ds != nil {
		if _, ok := ds[id]; ok {
			delete(ds, id)
			g.n--
		}
		if len(ds) == 0 {
			delete(g.open, node)
		}
	}
}

// checkDemand checks what the election bounds of a demand: the handler
// checks the URL's addresses.
func checkDemand(d Demand) error {
	switch {
	case d.URL == "":
		return errors.New("no URL")
	case len(d.URL) > MaxDemandURL:
		return fmt.Errorf("URL of %d bytes, at most %d", len(d.URL), MaxDemandURL)
	case d.Key != "" && !validKeyHex(d.Key):
		return errors.New("content key is not 64 lower-case hex digits")
	case d.SHA256 != "" && !validKeyHex(d.SHA256):
		return errors.New("sha256 is not 64 lower-case hex digits")
	case d.Priority > PriorityForeground:
		return fmt.Errorf("priority %d", d.Priority)
	case d.Have < 0:
		return fmt.Errorf("have %d", d.Have)
	}
	u, err := url.Parse(d.URL)
	switch {
	case err != nil:
		return errors.New("URL does not parse")
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("scheme %.20q is not http or https", u.Scheme)
	case u.User != nil:
		return errors.New("URL carries user info (a demand carries no credentials)")
	case u.Hostname() == "":
		return errors.New("URL has no host")
	}
	return nil
}

// handleDemand serves a member's demand on the Red Leader.
func (n *Node) handleDemand(w http.ResponseWriter, req *http.Request) {
	at := membersAt(n.mem.Members(), callerIP(req))
	if len(at) == 0 {
		n.refuse(w, req, "not a member")
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, maxDemandBody+1))
	var d Demand
	if err != nil || len(body) > maxDemandBody || json.Unmarshal(body, &d) != nil {
		http.Error(w, "bad demand", http.StatusBadRequest)
		return
	}
	if !isNode(at, d.From) {
		n.refuse(w, req, "a demand only for the caller's own node")
		return
	}
	if err := checkDemand(d); err != nil {
		n.refuse(w, req, "demand: "+err.Error())
		return
	}
	if !n.IsRedLeader() {
		http.Error(w, ErrNotRedLeader.Error(), http.StatusConflict)
		return
	}
	h := n.cfg.Demand
	if h == nil {
		http.Error(w, "this agent serves no demand", http.StatusServiceUnavailable)
		return
	}
	id := d.Key
	if id == "" {
		id = d.URL
	}
	if !n.demands.admit(d.From, id, time.Now()) {
		http.Error(w, fmt.Sprintf("%v: at most %d per member", ErrDemandLimit, MaxDemandsPerMember), http.StatusTooManyRequests)
		return
	}
	d.Wait = min(max(d.Wait, 0), MaxDemandWait)
	ctx, cancel := context.WithTimeout(req.Context(), MaxDemandWait+time.Second)
	defer cancel()
	rep, err := h.Demand(ctx, d)
	if err != nil {
		n.demands.done(d.From, id)
		n.refuse(w, req, "demand: "+err.Error())
		return
	}
	if rep.Done || rep.Failed {
		n.demands.done(d.From, id)
	}
	if len(rep.Segments) > catalogPageSegments {
		rep.Segments = rep.Segments[:catalogPageSegments]
	}
	writeRPC(w, wireDemandReply{DemandReply: rep, Segs: toWireSegments(rep.Segments)})
}

// handleCatalog answers a catalog lookup from this Raft member's FSM.
func (n *Node) handleCatalog(w http.ResponseWriter, req *http.Request) {
	if len(membersAt(n.mem.Members(), callerIP(req))) == 0 {
		n.refuse(w, req, "not a member")
		return
	}
	q := req.URL.Query()
	key, sha := q.Get("key"), q.Get("sha256")
	first, err := strconv.Atoi(q.Get("first"))
	if q.Get("first") == "" {
		first, err = 0, nil
	}
	if err != nil || first < 0 || (key == "") == (sha == "") || (key != "" && !validKeyHex(key)) || (sha != "" && !validKeyHex(sha)) {
		http.Error(w, "bad catalog lookup: want key=<64 hex> or sha256=<64 hex>, and first=<n>", http.StatusBadRequest)
		return
	}
	r := n.raftNode()
	if r == nil {
		http.Error(w, "not a raft member", http.StatusServiceUnavailable)
		return
	}
	e, ok := r.fsm.catalogPage(key, sha, first, catalogPageSegments)
	out := catalogReply{Found: ok}
	if ok {
		all, _ := r.fsm.catalogCount(e.Key)
		out.Have = all
		out.Entry = wireCatalog{Key: e.Key, Length: e.Length, SHA256: e.SHA256, First: first, Segments: toWireSegments(e.Segments),
			Conflicted: e.Conflicted, Node: e.Node, Epoch: e.Epoch, T: toNanos(e.Time)}
	}
	writeRPC(w, out)
}

// catalogCount returns how many segments key's entry has.
func (f *FSM) catalogCount(key string) (int, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	e := f.cat.entries[key]
	if e == nil {
		return 0, false
	}
	return len(e.Segments), true
}

// LookupCatalog returns the catalog entry of a content key ID (or, with
// key "", of the complete entry whose content has SHA-256 sha): from this
// node's FSM when it is a Raft member, else from a Raft member of the
// subnet's cluster by GET /rpc/catalog. ok is false when there is no such
// entry; an error means no Raft member answered.
func (n *Node) LookupCatalog(ctx context.Context, key, sha string) (e CatalogEntry, ok bool, err error) {
	if r := n.raftNode(); r != nil && r.fsm.index() > 0 {
		e, ok = r.fsm.catalogPage(key, sha, 0, 0)
		return e, ok, nil
	}
	cs := clusters(n.mem.Members())
	if len(cs) == 0 {
		return CatalogEntry{}, false, ErrNoCatalog
	}
	var errs []error
	for _, addr := range cs[0].pullOrder() {
		e, ok, err := n.lookupAt(ctx, addr, key, sha)
		if err == nil {
			return e, ok, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return CatalogEntry{}, false, fmt.Errorf("%w: %w", ErrNoCatalog, errors.Join(errs...))
}

// lookupAt reads key's (or sha's) entry, page by page, from the Raft
// member at addr.
func (n *Node) lookupAt(ctx context.Context, addr, key, sha string) (CatalogEntry, bool, error) {
	var e CatalogEntry
	for first := 0; ; {
		q := url.Values{}
		if key != "" {
			q.Set("key", key)
		} else {
			q.Set("sha256", sha)
		}
		q.Set("first", strconv.Itoa(first))
		var out catalogReply
		if err := n.call(ctx, http.MethodGet, addr, "/rpc/catalog?"+q.Encode(), nil, &out); err != nil {
			return CatalogEntry{}, false, err
		}
		if !out.Found {
			return CatalogEntry{}, false, nil
		}
		w := out.Entry
		if first == 0 {
			e = CatalogEntry{Key: w.Key, Length: w.Length, SHA256: w.SHA256, Conflicted: w.Conflicted, Node: w.Node,
				Epoch: w.Epoch, Time: fromNanos(w.T)}
			key = w.Key // later pages by key: the digest may move
		} else if w.Key != e.Key || w.Length != e.Length || w.Conflicted {
			return CatalogEntry{}, false, fmt.Errorf("%s: catalog entry %s changed between pages", addr, keyPrefix(e.Key))
		}
		e.Segments = append(e.Segments, fromWireSegments(w.Segments)...)
		first = len(e.Segments)
		if len(w.Segments) == 0 || first >= out.Have {
			return e, true, nil
		}
	}
}

// CommitCatalog commits e's segment descriptions (all of them, in order)
// to the catalog as this node, the Red Leader of the current epoch (see
// CommitCatalogPart).
func (n *Node) CommitCatalog(ctx context.Context, e CatalogEntry) error {
	return n.CommitCatalogPart(ctx, CatalogPart{Key: e.Key, Length: e.Length, SHA256: e.SHA256, Segments: e.Segments})
}

// CommitCatalogPart commits segments p.First, p.First+1, … of a content's
// descriptions as this node, the Red Leader of the current epoch: the
// Red Leader commits each segment as it is stored. It fails with
// ErrNotRedLeader unless this node acts as Red Leader now; the FSM checks
// the seat again, the shape, and that the part continues the entry.
func (n *Node) CommitCatalogPart(ctx context.Context, p CatalogPart) error {
	n.mu.Lock()
	now := time.Now()
	n.updateRedLocked(now)
	held, epoch := n.red.held, n.red.epoch
	n.mu.Unlock()
	if !held {
		return ErrNotRedLeader
	}
	for _, c := range NewCatalogPartCommands(uuid.NewString(), now, n.cfg.Node, epoch, p) {
		res, err := n.Apply(ctx, c)
		if err == nil {
			err = res.Err
		}
		if err != nil {
			return fmt.Errorf("catalog commit: %w", err)
		}
	}
	return nil
}

// RedLeaderSeat returns the confirmed Red Leader seat as this node knows
// it and whether there is one.
func (n *Node) RedLeaderSeat() (RedLeader, bool) {
	s := n.Status().Seat
	return s, s.Confirmed()
}

// SendDemand sends d (From set to this node) to the Red Leader of the
// committed seat and returns its reply. ErrNoRedLeader: no confirmed seat,
// or its holder is not alive in gossip; ErrNotRedLeader: the seat's node
// does not act as Red Leader (yet, or any more); ErrDemandLimit and
// ErrRefused: the Red Leader refused the demand.
func (n *Node) SendDemand(ctx context.Context, d Demand) (DemandReply, error) {
	seat, ok := n.RedLeaderSeat()
	if !ok {
		return DemandReply{}, ErrNoRedLeader
	}
	addr := ""
	for _, m := range n.mem.Members() {
		if m.Node == seat.Node && m.Status == StatusAlive {
			addr = m.RaftAddr
		}
	}
	if addr == "" {
		return DemandReply{}, fmt.Errorf("%w: %s is not alive in gossip", ErrNoRedLeader, seat.Node)
	}
	d.From = n.cfg.Node
	var out wireDemandReply
	if err := n.call(ctx, http.MethodPost, addr, "/rpc/demand", d, &out); err != nil {
		return DemandReply{}, err
	}
	rep := out.DemandReply
	rep.Segments = fromWireSegments(out.Segs)
	return rep, nil
}

// call sends one cluster RPC and decodes its JSON answer into out; 403 is
// ErrRefused, 409 ErrNotRedLeader, 429 ErrDemandLimit.
func (n *Node) call(ctx context.Context, method, addr, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, body)
	if err != nil {
		return err
	}
	resp, err := n.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 2*maxRPCBody))
	if err != nil {
		return err
	}
	msg := bytes.TrimSpace(b)
	switch resp.StatusCode {
	case http.StatusOK:
		return json.Unmarshal(b, out)
	case http.StatusForbidden:
		return fmt.Errorf("%w: %s %s: %s", ErrRefused, addr, req.URL.Path, msg)
	case http.StatusConflict:
		return fmt.Errorf("%w: %s", ErrNotRedLeader, addr)
	case http.StatusTooManyRequests:
		return fmt.Errorf("%w: %s: %s", ErrDemandLimit, addr, msg)
	}
	return fmt.Errorf("%s %s: HTTP %d: %s", addr, req.URL.Path, resp.StatusCode, msg)
}
