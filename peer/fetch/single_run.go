package fetch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redleader-p2p/redleader/election"
	"github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/jobs"
)

// The per-job side of single flight: the hooks the pipeline's run calls
// (beginFlight, flightSegment, flightBlocks, flightPublished, endFlight)
// when its Catalog is a *SingleFlight. A run is in one of three modes:
//
//   - owner: this agent acts as Red Leader and no other run of it fetches
//     the content: it takes it from the origin (the pipeline's usual path)
//     and publishes each segment's description as soon as its blocks are
//     stored, for the demands of the other agents;
//   - local: this agent acts as Red Leader and another of its runs (a job
//     or a demand) owns the content: it waits for that run's segments and
//     reads their blocks from the cache (one WAN copy, even on the Red
//     Leader);
//   - remote: another agent is Red Leader: the run demands the content
//     from it, learns the segment descriptions from its replies (or the
//     catalog, or the origin's content information) and fetches the blocks
//     from the Red Leader and the other LAN holders. It uses the origin
//     only when the subnet has had no confirmed Red Leader for
//     AppointWait (no_red_leader), when no progress (a new description,
//     more bytes held by the Red Leader, a verified block) came for
//     FallbackDelay (fallback_after_delay), or when the Red Leader served a
//     bad block and no other holder is known (bad_block_from_peer). A slow
//     Red Leader that makes progress is waited for. The fallback is kept
//     for the rest of the run.

type flightMode int

const (
	modeOwner flightMode = iota
	modeLocal
	modeRemote
)

func (m flightMode) String() string {
	return [...]string{"owner", "local", "remote"}[m]
}

// flightRun is a run's single-flight state. It is used by the run's
// goroutine only.
type flightRun struct {
	s    *SingleFlight
	f    *flight // owner and local modes
	mode flightMode
	key  string

	reason jobs.Reason       // the fallback, once decided
	segs   []content.Segment // remote: descriptions from demand replies, from the first
	peer   string            // remote: the Red Leader's MS-PCCRR address
	rlHeld int64             // remote: bytes the Red Leader said it holds
	last   time.Time         // remote: the last progress
	noRL   time.Time         // remote: since when no confirmed Red Leader (zero: there is one)
	failed string            // remote: the Red Leader's last failure, logged once
}

// demandKeyCtx carries, in a demand run's context, the content key the
// demand named.
type demandKeyCtx struct{}

// runFor runs w for a demand of content key: the run fails if the origin
// names another content now.
func (p *Pipeline) runFor(ctx context.Context, w *jobs.Work, prog jobs.Progress, key string) (jobs.Result, error) {
	return p.Run(context.WithValue(ctx, demandKeyCtx{}, key), w, prog)
}

// beginFlight sets the run's single-flight mode, after plan. A run takes
// part when the Catalog is a SingleFlight and the content may be shared
// (not private; a valid key; no user info in the URL); a job with
// --sha256 may also find its content in the catalog by digest.
func (r *run) beginFlight(ctx context.Context) error {
	s, ok := r.p.cfg.Catalog.(*SingleFlight)
	if !ok || s == nil || r.private || !r.useCatalog {
		return nil
	}
	if sha := r.w.Request.SHA256; sha != "" && r.id.Info == nil && !r.usedCatalog {
		if segs := s.lookupDigest(ctx, sha, r.id.Length); len(segs) == len(r.segs) && r.fits(segs) {
			for i := range segs {
				r.segs[i].desc, r.segs[i].src = &segs[i], srcCatalog
			}
			r.usedCatalog = true
			r.log.Info("content found in the catalog by its SHA-256", "url", r.id.Redacted())
		}
	}
	if !r.id.Key.Valid() || r.id.url.User != nil {
		return nil
	}
	key := r.id.Key.ID()
	if want, _ := ctx.Value(demandKeyCtx{}).(string); want != "" && want != key {
		return fmt.Errorf("%s: demanded content %.16s, the origin now names %.16s: %w", r.id.Redacted(), want, key, ErrChanged)
	}
	fr := &flightRun{s: s, key: key, last: time.Now(), mode: modeRemote}
	r.fl = fr
	if r.leader() {
		fr.attach(r)
	} else {
		fr.kick(ctx, r)
	}
	r.log.Debug("single flight", "mode", fr.mode, "key", key[:16])
	return nil
}

// fits reports whether segs are the plan's segments.
func (r *run) fits(segs []content.Segment) bool {
	for i := range segs {
		s := &segs[i]
		if i >= len(r.segs) || int64(s.Offset) != r.segs[i].off || int64(s.Length) != r.segs[i].n ||
			len(s.BlockHashes) != s.BlockCount() {
			return false
		}
	}
	return true
}

// attach registers the run with its content's flight on this agent (the
// Red Leader): owner if no other run owns it and it is not complete, else
// local.
func (fr *flightRun) attach(r *run) {
	fr.attachLocked(r)
	fr.s.publishServed() // the flight's length is known now
}

func (fr *flightRun) attachLocked(r *run) {
	f := fr.s.flightOf(fr.key)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.runs++
	f.length = r.id.Length
	fr.f = f
	if f.owner == nil && !f.done {
		f.owner, f.err = r, ""
		fr.mode = modeOwner
		r.prog = flightProgress{Progress: r.prog, f: f}
		f.notifyLocked()
		return
	}
	fr.mode = modeLocal
}

// detach ends the run's part in its flight.
func (fr *flightRun) detach(r *run) {
	f := fr.f
	if f == nil {
		return
	}
	fr.f = nil
	f.mu.Lock()
	defer f.mu.Unlock()
	f.runs--
	if f.owner == r {
		f.owner = nil
		if !f.done && f.err == "" {
			f.err = "the Red Leader's download stopped"
		}
	}
	f.notifyLocked()
}

// endFlight ends the run's single flight (deferred by run).
func (r *run) endFlight() {
	if r.fl != nil {
		r.fl.detach(r)
	}
}

// kick sends the first demand at once (no wait), so that the Red Leader
// starts while this run looks at its cache and the LAN.
func (fr *flightRun) kick(ctx context.Context, r *run) {
	sub := fr.s.subnet()
	if sub == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if rep, err := sub.SendDemand(ctx, fr.demand(r, 0)); err == nil {
		fr.take(r, rep)
	}
}

// demand is the run's demand, holding the reply up to wait.
func (fr *flightRun) demand(r *run, wait time.Duration) election.Demand {
	have := len(fr.segs)
	if r.id.Info != nil {
		have = len(r.segs) // the content information gave every description
	}
	d := election.Demand{URL: r.w.Request.URL, Priority: r.w.Request.Priority, Key: fr.key, Have: have, Wait: wait, Held: fr.rlHeld,
		Length: r.id.Length}
	if sha := r.w.Request.SHA256; len(sha) == 64 {
		d.SHA256 = sha
	}
	return d
}

// take applies a demand reply and reports whether it brought progress.
func (fr *flightRun) take(r *run, rep election.DemandReply) bool {
	progress := false
	if rep.Key != "" && rep.Key != fr.key {
		return false
	}
	if rep.Peer != "" {
		fr.peer = rep.Peer
	}
	if rep.Held > fr.rlHeld {
		fr.rlHeld, progress = rep.Held, true
	}
	if len(rep.Segments) > 0 && rep.Length == r.id.Length {
		segs := segmentsOf(rep.Segments, fr.s.secret())
		next := len(fr.segs)
		for j := range segs {
			i := next + j
			if i >= len(r.segs) || int64(segs[j].Offset) != r.segs[i].off || int64(segs[j].Length) != r.segs[i].n ||
				len(segs[j].BlockHashes) != segs[j].BlockCount() {
				r.log.Warn("single flight: the Red Leader's description does not fit the content: ignored", "segment", i)
				return progress
			}
		}
		fr.segs = append(fr.segs, segs...)
		progress = true
	}
	if rep.Failed && rep.Error != fr.failed {
		fr.failed = rep.Error
		r.log.Info("single flight: the Red Leader could not fetch the content (waiting for it, then the origin)",
			"url", r.id.Redacted(), "err", rep.Error)
	}
	if progress {
		fr.last = time.Now()
	}
	return progress
}

// poll sends one demand round to the Red Leader (holding up to demandPoll
// for news) and decides the fallback: it returns true once the run is to
// use the origin (fr.reason set).
func (fr *flightRun) poll(ctx context.Context, r *run) bool {
	if fr.reason != "" {
		return true
	}
	sub := fr.s.subnet()
	now := time.Now()
	seatOK := false
	if sub != nil {
		_, seatOK = sub.RedLeaderSeat()
	}
	if !seatOK {
		if fr.noRL.IsZero() {
			fr.noRL = now
		}
		if now.Sub(fr.noRL) >= fr.s.cfg.AppointWait {
			return fr.fallBack(r, jobs.ReasonNoRedLeader, "no confirmed Red Leader for "+now.Sub(fr.noRL).Round(time.Second).String())
		}
		sleep(ctx, 250*time.Millisecond)
		return false
	}
	fr.noRL = time.Time{}
	cctx, cancel := context.WithTimeout(ctx, demandPoll+2*time.Second)
	rep, err := sub.SendDemand(cctx, fr.demand(r, demandPoll))
	cancel()
	if err == nil {
		fr.take(r, rep)
	} else if ctx.Err() == nil {
		r.log.Debug("single flight: demand", "err", err)
		pause := 500 * time.Millisecond
		if errors.Is(err, election.ErrNotRedLeader) || errors.Is(err, election.ErrNoRedLeader) {
			pause = 200 * time.Millisecond
		}
		sleep(ctx, pause)
	}
	if d := time.Since(fr.last); d >= fr.s.cfg.FallbackDelay {
		return fr.fallBack(r, jobs.ReasonFallbackAfterDelay, "nothing of the content from the Red Leader for "+d.Round(time.Second).String())
	}
	return false
}

func (fr *flightRun) fallBack(r *run, why jobs.Reason, detail string) bool {
	fr.reason = why
	r.log.Warn("single flight: fetching from the origin", "url", r.id.Redacted(), "reason", why, "why", detail)
	return true
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// flightSegment runs before segment i: a run that does not own the
// content learns its description (from the flight, or the Red Leader's
// demand replies) unless it is known or the run falls back.
func (r *run) flightSegment(ctx context.Context, i int) error {
	fr := r.fl
	if fr == nil {
		return nil
	}
	r.followRole()
	s := &r.segs[i]
	switch fr.mode {
	case modeLocal:
		if s.desc == nil {
			return r.awaitLocal(ctx, i)
		}
	case modeRemote:
		for s.desc == nil && fr.reason == "" {
			if i < len(fr.segs) {
				d := fr.segs[i]
				s.desc, s.src, r.usedCatalog = &d, srcCatalog, true
				return nil
			}
			if r.leader() {
				return r.flightSegment(ctx, i) // this agent is the Red Leader now
			}
			fr.poll(ctx, r)
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
	return nil
}

// followRole switches the run's single-flight mode when the role moved: a
// run whose agent lost the role follows the new Red Leader (remote); a
// remote run whose agent became Red Leader owns the content now (or
// follows its own run that does).
func (r *run) followRole() {
	fr := r.fl
	if fr == nil {
		return
	}
	switch leader := r.leader(); {
	case fr.mode != modeRemote && !leader:
		fr.detach(r)
		fr.mode, fr.last = modeRemote, time.Now()
	case fr.mode == modeRemote && leader && fr.reason == "":
		fr.attach(r)
	}
}

// followsRedLeader reports whether the run gets its content through
// another agent, the Red Leader, whose MS-PCCRR address it knows.
func (r *run) followsRedLeader() bool {
	return r.fl != nil && r.fl.mode == modeRemote && r.fl.reason == "" && r.fl.peer != "" && !r.leader()
}

// roleLost reports whether the run takes part in single flight, no
// fallback sent it to the origin, and its agent does not act as Red
// Leader (any more): it has no business reading the origin, and an origin
// read it runs should stop — an owner that lost the role, or a run that
// saw the role for an instant (with an origin that ignores Range, the
// stream starts over if the role comes back: still less than reading on
// at the peer rate).
func (r *run) roleLost() bool {
	return r.fl != nil && r.fl.reason == "" && !r.leader()
}

// awaitLocal waits for the owner run of this agent to publish segment i;
// if the owner ends without it, this run owns the content from now on.
func (r *run) awaitLocal(ctx context.Context, i int) error {
	fr, f := r.fl, r.fl.f
	for {
		f.mu.Lock()
		if i < len(f.segs) {
			d := f.segs[i]
			f.mu.Unlock()
			r.segs[i].desc, r.segs[i].src, r.usedCatalog = &d, srcCatalog, true
			return nil
		}
		if f.owner == nil && !f.done {
			f.owner, fr.mode = r, modeOwner
			r.prog = flightProgress{Progress: r.prog, f: f}
			f.notifyLocked()
			f.mu.Unlock()
			return nil
		}
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// flightBlocks runs in known() when blocks of segment i are still needed
// after the cache and the LAN probe: a local run waits for its owner to
// store them, a remote one for the Red Leader and the LAN, each until it
// falls back. It returns the blocks still needed: the origin's.
func (r *run) flightBlocks(ctx context.Context, i int, need []int, a *segAudit) ([]int, error) {
	fr := r.fl
	if fr == nil || len(need) == 0 {
		return need, nil
	}
	d := r.segs[i].desc
	switch fr.mode {
	case modeLocal:
		if err := r.awaitLocal(ctx, i); err != nil || fr.mode == modeOwner {
			return need, err
		}
		return r.fromCacheOnly(d, need, a)
	case modeRemote:
	default:
		return need, nil
	}
	var probed []Holder
	lastProbe := time.Now()
	for len(need) > 0 && fr.reason == "" && !r.leader() {
		if ch := r.probes[i]; ch != nil { // a probe known() started, not waited for
			select {
			case probed = <-ch:
				delete(r.probes, i)
				lastProbe = time.Now()
			default:
			}
		}
		if i < len(fr.segs) && fr.segs[i].ID != d.ID && r.segs[i].src == srcCatalog {
			return nil, fmt.Errorf("%w: the Red Leader describes segment %d otherwise", errCatalogWrong, i)
		}
		var peers []Holder
		if fr.peer != "" && !r.badPeers[fr.peer] {
			peers = append(peers, Holder{Peer: fr.peer})
		}
		for _, h := range probed {
			if h.Peer != fr.peer && !r.badPeers[h.Peer] {
				peers = append(peers, h)
			}
		}
		if len(peers) == 0 && fr.peer != "" && r.badPeers[fr.peer] {
			fr.fallBack(r, jobs.ReasonBadBlockFromPeer, "the Red Leader served a bad block and no other holder is known")
			break
		}
		if len(peers) > 0 && r.lan() {
			before := len(need)
			var err error
			if need, err = r.fromPeers(ctx, d, need, peers, a); err != nil {
				return need, err
			}
			if len(need) < before {
				fr.last = time.Now()
			}
			if len(need) == 0 {
				break
			}
		}
		if r.lan() && time.Since(lastProbe) >= reprobeEvery {
			probed, lastProbe = r.probe(ctx, d.ID), time.Now()
		}
		fr.poll(ctx, r)
		if err := ctx.Err(); err != nil {
			return need, err
		}
	}
	if len(need) > 0 && fr.reason == "" && r.leader() && r.lan() {
		// This agent became the Red Leader while it waited: a new Red
		// Leader resumes from what the LAN holds (the members fetched from
		// the old one), and takes only the rest from the origin.
		return r.fromPeers(ctx, d, need, r.probe(ctx, d.ID), a)
	}
	return need, nil
}

// fromCacheOnly copies the needed blocks of d the cache holds into the
// data file, verified, and returns the blocks still needed.
func (r *run) fromCacheOnly(d *content.Segment, need []int, a *segAudit) ([]int, error) {
	held := map[int]bool{}
	for _, b := range r.c.Held(d.ID) {
		held[b] = true
	}
	var still []int
	for _, b := range need {
		if held[b] {
			data, err := r.c.ReadBlock(d.ID, uint32(b), r.buf[:0])
			if err == nil {
				err = content.VerifyBlock(d, b, data)
			}
			if err == nil {
				if err := r.write(data, d.BlockOffset(b)); err != nil {
					return nil, err
				}
				a.cache += int64(len(data))
				r.addHeld(len(data))
				continue
			}
		}
		still = append(still, b)
	}
	return still, nil
}

// flightPublished runs once segment i is stored: the owner publishes its
// description for the demands of the other agents.
func (r *run) flightPublished(i int) {
	fr := r.fl
	if fr == nil || fr.mode != modeOwner || fr.f == nil {
		return
	}
	f := fr.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.owner != r {
		return
	}
	// A run that became the owner midway publishes the segments it got
	// before (stored, in order) first.
	for j := len(f.segs); j < i; j++ {
		f.segs = append(f.segs, *r.segs[j].desc)
	}
	d := *r.segs[i].desc
	if i == len(f.segs) {
		f.segs = append(f.segs, d)
	} else {
		f.segs[i] = d
	}
	if len(f.segs) == len(r.segs) {
		f.done, f.err = true, "" // an earlier run's failure no longer matters
	}
	f.notifyLocked()
}

// flightReason is the reason of origin bytes the single flight decided, ""
// when it decided none.
func (r *run) flightReason() jobs.Reason {
	if r.fl == nil {
		return ""
	}
	return r.fl.reason
}

// flightProgress passes an owner run's progress on and keeps the flight's
// held bytes (the Red Leader's progress its demand replies carry).
type flightProgress struct {
	jobs.Progress
	f *flight
}

func (p flightProgress) SetHeld(n int64) {
	p.Progress.SetHeld(n)
	p.f.mu.Lock()
	if n > p.f.held {
		p.f.held = n
		p.f.notifyLocked()
	}
	p.f.mu.Unlock()
}
