package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/jobs"
	"github.com/redleader-p2p/redleader/peer/retrieval"
)

// descSource says where a segment's description came from.
type descSource int

const (
	srcNone       descSource = iota // unknown: computed from the origin's bytes
	srcInfo                         // the origin's content information
	srcCatalog                      // the subnet catalog (trusted as far as the cluster key)
	srcCheckpoint                   // computed by an earlier run of the job
	srcComputed                     // computed by this run
)

// segPlan is one segment of the content.
type segPlan struct {
	off, n int64
	desc   *content.Segment // nil while unknown
	src    descSource
}

// checkpoint is a job's resume state: the IDs of the segments it computed
// from a plain origin's bytes (32 bytes each, zero where it did not), for
// the version of the content named by Key. Segments whose IDs are known
// otherwise (content information) need none: the cache is asked.
type checkpoint struct {
	Key string `json:"key"`
	IDs []byte `json:"ids,omitempty"`
}

// maxCheckpointSegments bounds the IDs a checkpoint holds (base64 in
// JSON, under jobs.MaxCheckpoint): about 48 GiB of content; later
// segments are fetched again after a restart.
const maxCheckpointSegments = (jobs.MaxCheckpoint - 1024) * 3 / 4 / len(content.SegmentID{})

// segAudit is where one segment's bytes came from.
type segAudit struct {
	cache  int64
	peers  map[string]int64
	origin int64 // received from the origin for this segment, skipped bytes included
	bad    int   // blocks rejected from LAN peers
	// why is the reason of the origin bytes, decided when the first
	// origin range of the segment starts (the role may change before the
	// segment ends); "" until then.
	why jobs.Reason
}

// originStarts records why the segment's origin bytes cross the WAN, at
// its first origin range.
func (r *run) originStarts(a *segAudit) {
	if a.why == "" {
		a.why = r.reason(a.bad > 0)
	}
}

// run is one Run of a job.
type run struct {
	p    *Pipeline
	c    Cache
	w    *jobs.Work
	prog jobs.Progress
	id   *Identity
	log  *slog.Logger

	useCatalog  bool // the catalog may be asked (the first attempt)
	usedCatalog bool // a catalog description was used
	private     bool // credentials without --share: the subnet is not told
	conflict    bool // the catalog entry is conflicted
	secret      content.ServerSecret
	fl          *flightRun // single flight (single_run.go); nil: none

	segs   []segPlan
	f      *os.File
	sum    hash.Hash // SHA-256 of the content, in order
	anchor hash.Hash // the origin digest's hash when it is not SHA-256

	origin  RangeReader // opened at the first origin range
	charged int64       // origin bytes charged to the WAN limiter

	heldMu sync.Mutex
	held   int64

	badPeers map[string]bool // peers that served a bad block: not asked again
	probes   map[int]chan []Holder
	wg       sync.WaitGroup // lookahead probes
	buf      []byte
}

func (p *Pipeline) newRun(w *jobs.Work, prog jobs.Progress, id *Identity, useCatalog bool) *run {
	r := &run{p: p, c: p.cfg.Cache, w: w, prog: prog, id: id, log: p.log.With("job", w.ID),
		useCatalog: useCatalog, private: id.Credentialed && !w.Request.Share,
		sum: sha256.New(), badPeers: map[string]bool{}, probes: map[int]chan []Holder{},
		buf: make([]byte, content.BlockSize)}
	if a := id.Anchor; a != nil && a.Algo != SHA256 {
		r.anchor = a.NewHash()
	}
	var key []byte
	if p.cfg.Secret != nil {
		key = p.cfg.Secret()
	}
	r.secret = content.NewServerSecret(key)
	return r
}

// run fetches the content into the job's data file, segment by segment in
// order, then checks it against its anchors.
func (r *run) run(ctx context.Context) (jobs.Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		r.wg.Wait()
	}()
	f, err := os.OpenFile(r.w.DataPath, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return jobs.Result{}, fmt.Errorf("open job data: %w", err)
	}
	defer f.Close()
	if err := f.Chmod(0o600); err != nil {
		return jobs.Result{}, fmt.Errorf("open job data: %w", err)
	}
	r.f = f
	defer func() {
		if r.origin != nil {
			r.origin.Close()
		}
	}()
	r.plan(ctx)
	if err := r.beginFlight(ctx); err != nil {
		return jobs.Result{}, err
	}
	defer r.endFlight()
	r.prog.SetHeld(r.held)
	for i := range r.segs {
		if err := r.segment(ctx, i); err != nil {
			return jobs.Result{}, err
		}
	}
	// No fsync of the data file: every reader of a done job's content
	// checks its SHA-256 (the CLI verifies what the agent streams), so a
	// file a power loss tore is caught there; and an fsync would write
	// the whole content synchronously at the end of every job (on a large
	// machine the kernel writes back little before), which the job and
	// its user would wait for.
	if fi, err := f.Stat(); err != nil || fi.Size() != r.id.Length {
		return jobs.Result{}, fmt.Errorf("write job data: %d bytes written, want %d: %v", size(fi), r.id.Length, err)
	}
	sum := r.sum.Sum(nil)
	hexSum := hex.EncodeToString(sum)
	if want := r.w.Request.SHA256; want != "" && hexSum != want {
		return jobs.Result{}, fmt.Errorf("%s: %w: got %s, want %s", r.id.Redacted(), jobs.ErrSHA256Mismatch, hexSum, want)
	}
	if a := r.id.Anchor; a != nil {
		got := sum
		if r.anchor != nil {
			got = r.anchor.Sum(nil)
		}
		if err := a.Check(got); err != nil {
			return jobs.Result{}, fmt.Errorf("%s: %w", r.id.Redacted(), err)
		}
	}
	if err := f.Close(); err != nil {
		return jobs.Result{}, fmt.Errorf("write job data: %w", err)
	}
	return jobs.Result{SHA256: hexSum, Size: r.id.Length}, nil
}

func size(fi os.FileInfo) int64 {
	if fi == nil {
		return -1
	}
	return fi.Size()
}

// plan lays the content out in segments and learns the descriptions it
// can before any byte is fetched: from the origin's content information,
// else from the catalog and the job's checkpoint.
func (r *run) plan(ctx context.Context) {
	length := r.id.Length
	if info := r.id.Info; info != nil {
		if segs, ok := layoutOf(info.Segments, length); ok {
			r.segs = make([]segPlan, len(segs))
			for i := range segs {
				r.segs[i] = segPlan{off: int64(segs[i].Offset), n: int64(segs[i].Length), desc: &segs[i], src: srcInfo}
			}
			r.countHeld()
			return
		}
		r.log.Warn("content information has an unusual layout: treating the origin as plain", "url", r.id.Redacted())
	}
	n := (length + content.SegmentSize - 1) / content.SegmentSize
	r.segs = make([]segPlan, n)
	for i := range r.segs {
		off := int64(i) * content.SegmentSize
		r.segs[i] = segPlan{off: off, n: min(content.SegmentSize, length-off)}
	}
	if r.catalogOK() {
		r.lookup(ctx)
	}
	if r.w.Resume {
		r.resume()
	}
	r.countHeld()
}

// layoutOf checks that segs describe content of length bytes in order,
// v1 blocks with every hash listed, and returns copies.
func layoutOf(segs []content.Segment, length int64) ([]content.Segment, bool) {
	out := make([]content.Segment, len(segs))
	var off int64
	for i, s := range segs {
		if int64(s.Offset) != off || s.Length == 0 || s.BlockSize != content.BlockSize ||
			s.HashAlgo != content.SHA256 || len(s.BlockHashes) != s.BlockCount() {
			return nil, false
		}
		out[i] = s
		out[i].BlockHashes = append([]content.Digest(nil), s.BlockHashes...)
		off += int64(s.Length)
	}
	return out, off == length
}

// catalogOK says whether the job may use the catalog: a plain origin's
// content with a valid key, not private.
func (r *run) catalogOK() bool {
	return r.p.cfg.Catalog != nil && r.useCatalog && r.id.Key.Valid() && !r.private
}

// lookup takes the catalog's descriptions of the content, if any.
func (r *run) lookup(ctx context.Context) {
	segs, err := r.p.cfg.Catalog.Lookup(ctx, r.id.Key)
	switch {
	case errors.Is(err, ErrCatalogConflict):
		r.conflict = true
		r.log.Info("catalog entry is conflicted: fetching from the origin", "url", r.id.Redacted())
		return
	case err != nil:
		r.log.Debug("catalog lookup failed", "url", r.id.Redacted(), "err", err)
		return
	case segs == nil:
		return
	}
	// The entry may hold only the first segments (the Red Leader commits
	// them as it downloads); each must be the plan's segment at its index.
	ok := len(segs) <= len(r.segs)
	for i := 0; ok && i < len(segs); i++ {
		s := &segs[i]
		ok = int64(s.Offset) == r.segs[i].off && int64(s.Length) == r.segs[i].n && s.BlockSize == content.BlockSize &&
			s.HashAlgo == content.SHA256 && len(s.BlockHashes) == s.BlockCount()
	}
	if !ok {
		r.log.Warn("catalog entry does not fit the content: ignored", "url", r.id.Redacted())
		return
	}
	for i := range segs {
		d := segs[i]
		d.BlockHashes = append([]content.Digest(nil), d.BlockHashes...)
		r.segs[i].desc, r.segs[i].src = &d, srcCatalog
	}
	r.usedCatalog = len(segs) > 0
}

// resume takes the segments an earlier run computed, if the content is
// the same version and the cache still describes them.
func (r *run) resume() {
	var ck checkpoint
	if len(r.w.Checkpoint) == 0 || json.Unmarshal(r.w.Checkpoint, &ck) != nil || !r.id.Key.Valid() ||
		ck.Key != r.id.Key.String() || len(ck.IDs)%len(content.SegmentID{}) != 0 {
		return
	}
	for i := range min(len(ck.IDs)/len(content.SegmentID{}), len(r.segs)) {
		var sid content.SegmentID
		copy(sid[:], ck.IDs[i*len(sid):])
		s := &r.segs[i]
		if sid == (content.SegmentID{}) || s.src == srcCatalog {
			continue
		}
		d, ok := r.c.Describe(sid)
		if !ok || int64(d.Length) != s.n || d.BlockSize != content.BlockSize || len(d.BlockHashes) != d.BlockCount() {
			continue
		}
		d.Offset = uint64(s.off) // the cache keeps the offset it first saw
		s.desc, s.src = &d, srcCheckpoint
	}
}

// countHeld sets the held bytes from the cache: blocks of known segments.
func (r *run) countHeld() {
	for _, s := range r.segs {
		if s.desc == nil {
			continue
		}
		for _, b := range r.c.Held(s.desc.ID) {
			r.held += int64(s.desc.BlockLen(b))
		}
	}
}

func (r *run) addHeld(n int) {
	r.heldMu.Lock()
	defer r.heldMu.Unlock()
	r.held += int64(n)
	r.prog.SetHeld(r.held)
}

func (r *run) leader() bool { return r.p.cfg.Role != nil && r.p.cfg.Role.Leader() }

func (r *run) lan() bool { return r.p.cfg.Prober != nil && r.p.cfg.Peers != nil }

// reason says why a segment's bytes came from the origin. A non-leader
// in single flight uses the origin only for the reason it decided
// (single_run.go); without single flight it downloads alone:
// ReasonStandalone.
func (r *run) reason(bad bool) jobs.Reason {
	switch {
	case r.private:
		return jobs.ReasonPrivate
	case r.leader():
		return jobs.ReasonRedLeaderFetch
	case r.flightReason() != "":
		return r.flightReason()
	case r.conflict:
		return jobs.ReasonCatalogConflict
	case bad:
		return jobs.ReasonBadBlockFromPeer
	}
	return jobs.ReasonStandalone
}

// segment fetches segment i into the data file and the cache, hashes it
// into the content's sums and records where its bytes came from.
func (r *run) segment(ctx context.Context, i int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := r.flightSegment(ctx, i); err != nil {
		return err
	}
	s := &r.segs[i]
	a := segAudit{peers: map[string]int64{}}
	put := s.desc == nil
	var err error
	if put {
		err = r.plain(ctx, i, &a)
	} else {
		err = r.known(ctx, i, &a)
	}
	if errors.Is(err, errRoleLost) {
		r.report(i, &a) // the bytes that crossed, then follow the new Red Leader
		return r.segment(ctx, i)
	}
	if err != nil {
		// The bytes that came before the failure or the stop are in the
		// audit too: a resumed job's records then add up to what crossed.
		r.report(i, &a)
		return err
	}
	if err := r.finish(i, put); err != nil {
		return err
	}
	r.flightPublished(i)
	r.report(i, &a)
	if s.src == srcComputed {
		r.saveCheckpoint()
		r.commit(ctx, i)
	}
	return nil
}

// known fetches a segment whose description is known: held blocks from the
// cache, then the LAN's holders, then the origin, every block verified
// against the description and stored in the cache as it arrives.
func (r *run) known(ctx context.Context, i int, a *segAudit) error {
	s := &r.segs[i]
	d := s.desc
	if err := r.c.AddSegment(d); err != nil {
		if s.src == srcCatalog {
			return fmt.Errorf("%w: %w", errCatalogWrong, err)
		}
		return fmt.Errorf("cache: %w", err)
	}
	unpin, err := r.c.Pin(d.ID)
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	defer unpin()
	need, err := r.fromCache(d, a)
	if err != nil {
		return err
	}
	if len(need) > 0 && r.lan() {
		var holders []Holder
		if r.probes[i] != nil || !r.followsRedLeader() {
			holders = r.holders(ctx, i)
		} else {
			// A run that follows its Red Leader knows a holder without a
			// probe (its MS-PCCRR address): flightBlocks asks it at once
			// and takes the other holders when this probe answers,
			// instead of waiting for a probe's request timer (300 ms) at
			// every segment whose description came just now.
			r.lookahead(ctx, i)
		}
		r.lookahead(ctx, i+1)
		if need, err = r.fromPeers(ctx, d, need, holders, a); err != nil {
			return err
		}
	} else {
		r.lookahead(ctx, i+1)
	}
	// Blocks still needed after an origin range: the role went while it
	// ran, and they come through the new Red Leader (followRole).
	for len(need) > 0 {
		r.followRole()
		if need, err = r.flightBlocks(ctx, i, need, a); err != nil || len(need) == 0 {
			return err
		}
		wasLocal := r.fl != nil && r.fl.mode == modeLocal
		r.followRole() // the role may have come or gone while it waited
		if !wasLocal && r.fl != nil && r.fl.mode == modeLocal {
			// The agent became Red Leader and another of its runs (a
			// demand's) owns the content: wait for it, do not fetch too.
			continue
		}
		if need, err = r.fromOrigin(ctx, s, need, a); err != nil {
			return err
		}
	}
	return nil
}

// fromCache copies the held blocks of d into the data file, verified, and
// returns the blocks still needed.
func (r *run) fromCache(d *content.Segment, a *segAudit) ([]int, error) {
	held := r.c.Held(d.ID)
	need := make([]int, 0, d.BlockCount()-len(held))
	for b, h := 0, 0; b < d.BlockCount(); b++ {
		if h < len(held) && held[h] == b {
			h++
			data, err := r.c.ReadBlock(d.ID, uint32(b), r.buf[:0])
			if err == nil {
				err = content.VerifyBlock(d, b, data)
			}
			if err == nil {
				if err := r.write(data, d.BlockOffset(b)); err != nil {
					return nil, err
				}
				a.cache += int64(len(data))
				continue
			}
			r.log.Warn("cached block unusable: fetching it again", "segment", d.ID, "block", b, "err", err)
		}
		need = append(need, b)
	}
	return need, nil
}

// lookahead starts the probe of segment i while the one before it is
// fetched (the probe's request timer then costs nothing).
func (r *run) lookahead(ctx context.Context, i int) {
	if !r.lan() || i >= len(r.segs) || r.segs[i].desc == nil || r.probes[i] != nil {
		return
	}
	d := r.segs[i].desc
	if len(r.c.Held(d.ID)) == d.BlockCount() {
		return
	}
	ch := make(chan []Holder, 1)
	r.probes[i] = ch
	r.wg.Go(func() { ch <- r.probe(ctx, d.ID) })
}

// holders returns the LAN holders of segment i: the lookahead's answer, or
// a probe now.
func (r *run) holders(ctx context.Context, i int) []Holder {
	ch := r.probes[i]
	delete(r.probes, i)
	if ch == nil {
		return r.probe(ctx, r.segs[i].desc.ID)
	}
	select {
	case hs := <-ch:
		return hs
	case <-ctx.Done():
		return nil
	}
}

func (r *run) probe(ctx context.Context, id content.SegmentID) []Holder {
	hs, err := r.p.cfg.Prober.Probe(ctx, id)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Debug("probe failed: no LAN holder", "segment", id, "err", err)
		}
		return nil
	}
	return hs
}

// fromPeers fetches the needed blocks of d from the LAN holders (several
// at once, partial holders included) and returns those none delivered.
func (r *run) fromPeers(ctx context.Context, d *content.Segment, need []int, holders []Holder, a *segAudit) ([]int, error) {
	var peers []string
	for _, h := range holders {
		if h.Peer != "" && !r.badPeers[h.Peer] {
			peers = append(peers, h.Peer)
		}
	}
	if len(peers) == 0 {
		return need, nil
	}
	ask, rest := r.available(ctx, d, need, holders)
	if len(ask) == 0 {
		return need, nil
	}
	var mu sync.Mutex
	var got int64
	res, err := r.p.cfg.Peers.FetchSegment(ctx, d, ask, peers, func(b int, data []byte) error {
		// FetchSegment verified data against d; the cache verifies it again.
		if err := r.c.PutBlock(d.ID, b, data); err != nil {
			return fmt.Errorf("cache: %w", err)
		}
		if err := r.write(data, d.BlockOffset(b)); err != nil {
			return err
		}
		mu.Lock()
		got += int64(len(data))
		mu.Unlock()
		r.addHeld(len(data))
		return nil
	})
	if res != nil {
		r.peerBytes(res, got, a)
		for _, bad := range res.BadPeers {
			r.badPeers[bad] = true
		}
		for peer, n := range res.Rejected {
			a.bad += n
			r.p.badBlocks.Add(uint64(n))
			r.log.Warn("rejected bad blocks from a LAN peer: not asking it again for this job",
				"peer", peer, "blocks", n, "segment", d.ID)
		}
	}
	switch {
	case err == nil:
		return rest, nil
	case errors.Is(err, retrieval.ErrIncomplete) && res != nil:
		return slices.Sorted(slices.Values(append(rest, res.Missing...))), nil
	}
	return nil, err
}

// available splits need into the blocks at least one of the holders has
// (ask) and the rest, asking each partial holder which it has (MSG_GETBLKLIST,
// one round trip): a Red Leader a few blocks ahead of its members, or a
// member that holds a part, is then not asked for hundreds of blocks it
// has not got. A holder that holds the whole segment, whose answer fails,
// or whose empty answer contradicts its probe reply (a busy server answers
// an empty list) counts as holding every block.
func (r *run) available(ctx context.Context, d *content.Segment, need []int, holders []Holder) (ask, rest []int) {
	lister, ok := r.p.cfg.Peers.(BlockLister)
	if !ok {
		return need, nil
	}
	want := make([]retrieval.BlockRange, 0, 4)
	for _, b := range need {
		if n := len(want); n > 0 && want[n-1].End() == uint64(b) {
			want[n-1].Count++
		} else {
			want = append(want, retrieval.BlockRange{Index: uint32(b), Count: 1})
		}
	}
	has := make(map[uint32]bool, len(need))
	for _, h := range holders {
		if h.Peer == "" || r.badPeers[h.Peer] {
			continue
		}
		if int(h.Blocks) >= d.BlockCount() {
			return need, nil
		}
		bl, err := lister.BlockList(ctx, h.Peer, d.ID, want)
		if err != nil || len(bl.Ranges) == 0 && h.Blocks > 0 {
			// No answer, or none from a holder whose probe reply counted
			// blocks (a busy server answers an empty list): ask it for all.
			return need, nil
		}
		for _, rg := range bl.Ranges {
			for b := rg.Index; uint64(b) < rg.End(); b++ {
				has[b] = true
			}
		}
	}
	for _, b := range need {
		if has[uint32(b)] {
			ask = append(ask, b)
		} else {
			rest = append(rest, b)
		}
	}
	return ask, rest
}

// peerBytes shares the got bytes of a FetchSegment among its peers by
// their block counts (exact but for the one short last block).
func (r *run) peerBytes(res *retrieval.FetchResult, got int64, a *segAudit) {
	peers := make([]string, 0, len(res.Blocks))
	for p, n := range res.Blocks {
		if n > 0 {
			peers = append(peers, p)
		}
	}
	if len(peers) == 0 {
		return
	}
	sort.Slice(peers, func(i, j int) bool { return res.Blocks[peers[i]] > res.Blocks[peers[j]] })
	var sum int64
	for _, p := range peers {
		n := int64(res.Blocks[p]) * content.BlockSize
		a.peers[p] += n
		sum += n
	}
	a.peers[peers[0]] += got - sum
}

// fromOrigin reads the needed blocks of segment s from the origin in one
// range (from the first needed block to the last: never a request per
// block), verifies each against the description, stores it.
func (r *run) fromOrigin(ctx context.Context, s *segPlan, need []int, a *segAudit) ([]int, error) {
	d := s.desc
	first, last := need[0], need[len(need)-1]
	off := int64(d.BlockOffset(first))
	end := int64(d.BlockOffset(last)) + int64(d.BlockLen(last))
	wanted := make([]bool, d.BlockCount())
	for _, b := range need {
		wanted[b] = true
	}
	if r.roleLost() {
		return need, nil // no range: the blocks come through the Red Leader
	}
	before := r.received()
	defer func() { a.origin += r.received() - before }()
	r.originStarts(a)
	sec, err := r.rangeOf(ctx, off, end-off)
	if err != nil {
		return nil, err
	}
	for b := first; b <= last; b++ {
		if (b-first)%16 == 15 && r.roleLost() {
			// A run whose agent lost the role stops its range (it would go
			// on at the peer rate): the rest comes through the new Red
			// Leader.
			r.origin.Close()
			var rest []int
			for _, x := range need {
				if x >= b {
					rest = append(rest, x)
				}
			}
			return rest, nil
		}
		data := r.buf[:d.BlockLen(b)]
		if err := r.readFull(ctx, sec, data); err != nil {
			return nil, err
		}
		if !wanted[b] {
			continue
		}
		if err := content.VerifyBlock(d, b, data); err != nil {
			switch s.src {
			case srcCatalog:
				return nil, fmt.Errorf("%w: %w", errCatalogWrong, err)
			case srcInfo:
				return nil, fmt.Errorf("GET %s: %w: the bytes do not match its content information: %w", r.id.Redacted(), ErrChanged, err)
			}
			return nil, fmt.Errorf("GET %s: %w: %w", r.id.Redacted(), ErrChanged, err)
		}
		if err := r.c.PutBlock(d.ID, b, data); err != nil {
			return nil, fmt.Errorf("cache: %w", err)
		}
		if err := r.write(data, d.BlockOffset(b)); err != nil {
			return nil, err
		}
		r.addHeld(len(data))
	}
	return nil, r.rangeEnd(ctx, sec)
}

// plain reads segment i from the origin when its description is unknown
// (a plain origin): its bytes go to the data file as they come and its
// description is computed from them with the subnet content secret, so
// that its ID is the one every agent of the subnet derives. Its blocks are
// stored by finish.
func (r *run) plain(ctx context.Context, i int, a *segAudit) error {
	s := &r.segs[i]
	r.lookahead(ctx, i+1)
	before := r.received()
	defer func() { a.origin += r.received() - before }()
	r.originStarts(a)
	sec, err := r.rangeOf(ctx, s.off, s.n)
	if err != nil {
		return err
	}
	// The origin's bytes are all there is to check a plain segment
	// against (until the content's anchor): they count as held as they
	// come, not a block at a time.
	var got int64
	sec = &countReader{r: sec, add: func(n int) { got += int64(n); r.addHeld(n) }}
	g := content.NewGenerator(r.secret)
	for off := int64(0); off < s.n; off += content.BlockSize {
		if (off/content.BlockSize)%16 == 15 && r.roleLost() {
			// The agent lost the Red Leader role (or saw it for an
			// instant): a plain segment is described only once all of it
			// is read, so its bytes so far are dropped, and the segment
			// comes through the new Red Leader.
			r.origin.Close()
			r.addHeld(-int(got))
			return errRoleLost
		}
		data := r.buf[:min(content.BlockSize, s.n-off)]
		if err := r.readFull(ctx, sec, data); err != nil {
			return err
		}
		_, _ = g.Write(data) // never fails before Info
		if err := r.write(data, uint64(s.off+off)); err != nil {
			return err
		}
	}
	if err := r.rangeEnd(ctx, sec); err != nil {
		return err
	}
	segs := g.Info().Segments
	if len(segs) != 1 || int64(segs[0].Length) != s.n {
		return fmt.Errorf("segment %d: computed %d segments", i, len(segs)) // cannot happen: n ≤ SegmentSize
	}
	d := segs[0]
	d.Offset = uint64(s.off)
	if err := r.c.AddSegment(&d); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	s.desc, s.src = &d, srcComputed
	return nil
}

// finish reads segment i back from the data file in order into the
// content's sums; put also stores its blocks in the cache (a computed
// segment: PutBlock verifies each against the description).
func (r *run) finish(i int, put bool) error {
	s := &r.segs[i]
	d := s.desc
	if put {
		unpin, err := r.c.Pin(d.ID)
		if err != nil {
			return fmt.Errorf("cache: %w", err)
		}
		defer unpin()
	}
	for b := range d.BlockCount() {
		data := r.buf[:d.BlockLen(b)]
		if _, err := r.f.ReadAt(data, int64(d.BlockOffset(b))); err != nil {
			return fmt.Errorf("read job data: %w", err)
		}
		if put {
			if err := r.c.PutBlock(d.ID, b, data); err != nil {
				return fmt.Errorf("cache: %w", err)
			}
		}
		r.sum.Write(data)
		if r.anchor != nil {
			r.anchor.Write(data)
		}
	}
	return nil
}

// report records segment i's bytes by source.
func (r *run) report(i int, a *segAudit) {
	s := &r.segs[i]
	now := time.Now().UTC()
	rec := func(from jobs.From, n int64) {
		if n <= 0 {
			return
		}
		r.prog.Fetched(from, n)
		r.prog.Audit(jobs.AuditRecord{Segment: i, Offset: s.off, Length: s.n, From: from, Bytes: n, Time: now})
	}
	rec(jobs.From{Source: jobs.SourceCache}, a.cache)
	peers := make([]string, 0, len(a.peers))
	for p := range a.peers {
		peers = append(peers, p)
	}
	sort.Strings(peers)
	for _, p := range peers {
		rec(jobs.From{Source: jobs.SourcePeer, Peer: p}, a.peers[p])
	}
	why := a.why
	if why == "" {
		why = r.reason(a.bad > 0)
	}
	rec(jobs.From{Source: jobs.SourceOrigin, Reason: why}, a.origin)
}

// saveCheckpoint stores the IDs of the segments computed so far.
func (r *run) saveCheckpoint() {
	if !r.id.Key.Valid() {
		return // no validator: a restart cannot tell the same version
	}
	last := -1
	for i := range min(len(r.segs), maxCheckpointSegments) {
		if src := r.segs[i].src; src == srcComputed || src == srcCheckpoint {
			last = i
		}
	}
	if last < 0 {
		return
	}
	ids := make([]byte, (last+1)*len(content.SegmentID{}))
	for i := range last + 1 {
		if src := r.segs[i].src; src == srcComputed || src == srcCheckpoint {
			copy(ids[i*len(content.SegmentID{}):], r.segs[i].desc.ID[:])
		}
	}
	b, _ := json.Marshal(checkpoint{Key: r.id.Key.String(), IDs: ids}) // plain fields: never fails
	if err := r.prog.Checkpoint(b); err != nil {
		r.log.Warn("job checkpoint not saved: a restart fetches these segments again", "err", err)
	}
}

// commit proposes computed segment i to the catalog as soon as it is
// stored: the Red Leader's, for content the subnet may learn of, so that
// the other agents learn its ID and block hashes while later segments
// download.
func (r *run) commit(ctx context.Context, i int) {
	if !r.catalogOK() || !r.leader() || r.conflict {
		return
	}
	if err := r.p.cfg.Catalog.Commit(ctx, r.id.Key, i, []content.Segment{*r.segs[i].desc}); err != nil {
		r.log.Warn("catalog commit failed", "url", r.id.Redacted(), "segment", i, "err", err)
	}
}

// write puts verified bytes at off in the data file.
func (r *run) write(data []byte, off uint64) error {
	if _, err := r.f.WriteAt(data, int64(off)); err != nil {
		return fmt.Errorf("write job data: %w", err)
	}
	return nil
}

// rangeOf asks the origin for n bytes at off (opening the job's reader at
// the first call).
func (r *run) rangeOf(ctx context.Context, off, n int64) (io.Reader, error) {
	if r.origin == nil {
		r.origin = r.p.cfg.Origin.Open(ctx, r.id)
	}
	r.p.originReqs.Add(1)
	sec, err := r.origin.Range(off, n)
	if cerr := r.chargeWAN(ctx); err == nil && cerr != nil {
		err = cerr
	}
	return sec, err
}

// readFull reads len(p) bytes of an origin range, paced by the WAN
// limiter.
func (r *run) readFull(ctx context.Context, sec io.Reader, p []byte) error {
	if err := ctx.Err(); err != nil {
		return err // bytes the transport buffered would still be read
	}
	_, err := io.ReadFull(sec, p)
	if cerr := r.chargeWAN(ctx); err == nil && cerr != nil {
		err = cerr
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || err == io.EOF {
		err = fmt.Errorf("GET %s: %w", r.id.Redacted(), ErrTooShort)
	}
	return err
}

// rangeEnd checks that an origin range ends where it should (an answer
// longer than asked is an error).
func (r *run) rangeEnd(ctx context.Context, sec io.Reader) error {
	var b [1]byte
	n, err := sec.Read(b[:])
	if cerr := r.chargeWAN(ctx); err == io.EOF && cerr != nil {
		err = cerr
	}
	switch {
	case n > 0:
		return fmt.Errorf("GET %s: %w", r.id.Redacted(), ErrTooLong)
	case err == io.EOF:
		return nil
	case err == nil:
		return fmt.Errorf("GET %s: %w: no end after the range", r.id.Redacted(), ErrTooLong)
	}
	return err
}

func (r *run) received() int64 {
	if r.origin == nil {
		return 0
	}
	return r.origin.Received()
}

// chargeWAN makes the bytes the origin sent since the last call wait for
// the WAN limiter: what was read and what was skipped.
func (r *run) chargeWAN(ctx context.Context) error {
	d := r.received() - r.charged
	if d <= 0 {
		return nil
	}
	r.charged += d
	if r.p.cfg.WAN == nil {
		return nil
	}
	return r.p.cfg.WAN.WaitN(ctx, int(d))
}

// countReader reports the bytes read through it.
type countReader struct {
	r   io.Reader
	add func(int)
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.add(n)
	}
	return n, err
}

// removeData removes a job's data file after a failure: nothing partial
// stays where a done job's content would be.
func removeData(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
