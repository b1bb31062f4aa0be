package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/jobs"
	"github.com/redleader-p2p/redleader/peer/retrieval"
)

// The interfaces the pipeline consumes. The agent passes its parts (the
// segment cache, its MS-PCCRD Probe, the MS-PCCRR client, the WAN limiter,
// the election's role and content secret); tests pass fakes or the same
// parts on loopback.

// Cache is the segment cache the pipeline reads and fills
// (*cache.Cache). PutBlock verifies a block against the segment's
// description before it stores it.
type Cache interface {
	AddSegment(seg *content.Segment) error
	PutBlock(id content.SegmentID, index int, data []byte) error
	ReadBlock(id content.SegmentID, index uint32, dst []byte) ([]byte, error)
	Held(id content.SegmentID) []int
	Describe(id content.SegmentID) (content.Segment, bool)
	Pin(id content.SegmentID) (unpin func(), err error)
}

// Holder is a LAN peer that reported blocks of a segment.
type Holder struct {
	// Peer is its MS-PCCRR address, host:port.
	Peer string
	// Blocks is how many blocks of the segment it holds (0 when its reply
	// did not say: a v2 reply).
	Blocks uint32
}

// Prober finds the LAN holders of a segment (MS-PCCRD: the agent's Probe,
// which leaves the agent itself out). An error counts as no holder.
type Prober interface {
	Probe(ctx context.Context, id content.SegmentID) ([]Holder, error)
}

// BlockFetcher fetches and verifies blocks of a segment from several LAN
// peers in parallel (*retrieval.Client). It returns retrieval.ErrIncomplete
// with FetchResult.Missing when blocks remain that no peer delivered.
type BlockFetcher interface {
	FetchSegment(ctx context.Context, seg *content.Segment, blocks []int, peers []string, sink retrieval.Sink) (*retrieval.FetchResult, error)
}

// BlockLister is a BlockFetcher that can also ask a peer which blocks of a
// segment it holds (MSG_GETBLKLIST; *retrieval.Client): the pipeline then
// asks partial holders only for the blocks they have.
type BlockLister interface {
	BlockList(ctx context.Context, peer string, id content.SegmentID, ranges []retrieval.BlockRange) (*retrieval.BlkList, error)
}

// Limiter paces the bytes that cross the WAN: the agent's one WAN limiter
// (*shaping.Limiter of its shaping.WAN), shared by all jobs.
type Limiter interface {
	WaitN(ctx context.Context, n int) error
}

// Role tells whether this agent holds the subnet's Red Leader role
// (*shaping.WAN follows it).
type Role interface {
	Leader() bool
}

// Catalog is the subnet catalog of plain-origin content: the segment
// descriptions the Red Leader computed with the subnet content secret,
// keyed by the content Key (the election implements it; nil: no catalog).
type Catalog interface {
	// Lookup returns the committed descriptions of key's content, in
	// order from its first segment: all of them, or the ones committed so
	// far. It returns nil when there is no entry, and an error wrapping
	// ErrCatalogConflict when the entry is conflicted.
	Lookup(ctx context.Context, key Key) ([]content.Segment, error)
	// Commit proposes the descriptions of segments first, first+1, … of
	// key's content, computed with the subnet content secret. The Red
	// Leader calls it as each segment is stored (only the Red Leader of the
	// current epoch is accepted; a part that does not continue the entry
	// is refused).
	Commit(ctx context.Context, key Key, first int, segs []content.Segment) error
}

// ErrCatalogConflict is what a Catalog's Lookup wraps when two different
// entries were committed for a key: everyone then uses the origin.
var ErrCatalogConflict = errors.New("catalog entry is conflicted")

// OriginAccess is the origin side of the pipeline: OriginOf(*Origin).
type OriginAccess interface {
	// Identify learns what rawURL names (see Origin.Identify).
	Identify(ctx context.Context, rawURL string, header http.Header) (*Identity, error)
	// Open returns a reader of id's content by ranges whose requests end
	// with ctx (see Origin.NewReader).
	Open(ctx context.Context, id *Identity) RangeReader
}

// RangeReader reads one content from its origin, a large range at a time
// (*Reader). It is used by one goroutine.
type RangeReader interface {
	// Range returns a reader of the n bytes at off, valid until the next
	// Range or Close.
	Range(off, n int64) (io.Reader, error)
	// Received is the number of content bytes read from the origin so
	// far, skipped bytes included: what crossed the WAN.
	Received() int64
	Close() error
}

// OriginOf returns o as the pipeline's OriginAccess. The pipeline paces
// what it reads through its own Limiter: o must not pace too
// (Options.Pace nil).
func OriginOf(o *Origin) OriginAccess { return originAccess{o} }

type originAccess struct{ o *Origin }

func (a originAccess) Identify(ctx context.Context, rawURL string, header http.Header) (*Identity, error) {
	return a.o.Identify(ctx, rawURL, header)
}

func (a originAccess) Open(ctx context.Context, id *Identity) RangeReader {
	return a.o.NewReader(ctx, id)
}

// Errors of the pipeline, each wrapped into one line with its detail.
var (
	// ErrNoLength means the origin did not say how long the content is
	// (a chunked answer with no Content-Length): the pipeline cannot lay
	// out its segments.
	ErrNoLength = errors.New("origin did not send the content's length")
	// ErrNoOrigin means the pipeline was built without an origin or cache.
	ErrNoOrigin = errors.New("pipeline needs an origin and a cache")
)

// PipelineConfig configures a Pipeline. Origin and Cache are required;
// the rest may be nil.
type PipelineConfig struct {
	// Origin identifies and reads the content (OriginOf).
	Origin OriginAccess
	// Cache is the segment cache: first source, and where every verified
	// block is stored (so MS-PCCRR serves it to the LAN at once).
	Cache Cache
	// Prober and Peers find and fetch blocks on the LAN; nil: no LAN.
	Prober Prober
	Peers  BlockFetcher
	// WAN paces the origin's bytes; nil: unlimited.
	WAN Limiter
	// Role says whether the agent is the Red Leader (the reason its origin
	// bytes are recorded with, and whether it commits to the catalog);
	// nil: never.
	Role Role
	// Secret returns the subnet content secret (the election's): the key
	// of the segment secrets of content from a plain origin, so that
	// every agent of the subnet derives the same segment IDs. nil, or
	// empty while the election has none, means the empty key.
	Secret func() []byte
	// Catalog is the subnet catalog of plain-origin content; nil: none.
	Catalog Catalog
	// Logger receives the pipeline's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Pipeline is the data path's jobs.Runner: per segment of a job's content,
// local cache → LAN holders → origin; see DESIGN.md. It is safe for
// concurrent use: the Manager runs several jobs on it at once.
type Pipeline struct {
	cfg PipelineConfig
	log *slog.Logger

	badBlocks  atomic.Uint64
	originReqs atomic.Uint64
}

var _ jobs.Runner = (*Pipeline)(nil)

// NewPipeline returns a Pipeline for cfg.
func NewPipeline(cfg PipelineConfig) (*Pipeline, error) {
	if cfg.Origin == nil || cfg.Cache == nil {
		return nil, ErrNoOrigin
	}
	p := &Pipeline{cfg: cfg, log: cfg.Logger}
	if p.log == nil {
		p.log = slog.Default()
	}
	return p, nil
}

// PipelineStats are counters of a Pipeline since it was made.
type PipelineStats struct {
	// BadBlocks counts blocks LAN peers served that failed verification
	// (each was rejected; the peer was not asked again for the job).
	BadBlocks uint64
	// OriginRanges counts the ranges asked of origins (one request each,
	// unless the origin ignores Range and streams).
	OriginRanges uint64
}

// Stats returns the pipeline's counters.
func (p *Pipeline) Stats() PipelineStats {
	return PipelineStats{BadBlocks: p.badBlocks.Load(), OriginRanges: p.originReqs.Load()}
}

// Run downloads w's content into w.DataPath (see jobs.Runner): it returns
// nil only when every byte is there, verified, in order, and the content
// matches its anchors (the expected SHA-256, the origin's digest). On an
// error the data file is removed.
func (p *Pipeline) Run(ctx context.Context, w *jobs.Work, prog jobs.Progress) (res jobs.Result, err error) {
	defer func() {
		if err != nil {
			if rerr := removeData(w.DataPath); rerr != nil {
				p.log.Warn("job data not removed", "job", w.ID, "err", rerr)
			}
		}
	}()
	header, err := parseHeaders(w.Request.Headers)
	if err != nil {
		return jobs.Result{}, err
	}
	id, err := p.cfg.Origin.Identify(ctx, w.Request.URL, header)
	if err != nil {
		return jobs.Result{}, err
	}
	if id.Length < 0 {
		return jobs.Result{}, fmt.Errorf("%s: %w (chunked answer)", id.Redacted(), ErrNoLength)
	}
	prog.SetTotal(id.Length)
	useCatalog := true
	for {
		r := p.newRun(w, prog, id, useCatalog)
		res, err = r.run(ctx)
		if err == nil || !useCatalog || !r.usedCatalog || !errors.Is(err, errCatalogWrong) && !isAnchorMismatch(err) {
			return res, err
		}
		// A catalog entry that does not match the origin's bytes (or
		// whose bytes do not match the content's anchor) is not trusted
		// again: the job starts over from what the origin vouches for.
		p.log.Warn("catalog entry does not match the content: fetching without it", "job", w.ID,
			"url", id.Redacted(), "err", err)
		useCatalog = false
	}
}

// errCatalogWrong: the origin's bytes do not match a catalog description.
var errCatalogWrong = errors.New("origin's bytes do not match the catalog entry")

// errRoleLost: a plain segment's origin read stopped because the agent does
// not act as Red Leader (any more); the segment starts over through the
// new Red Leader.
var errRoleLost = errors.New("the Red Leader role went during an origin read")

func isAnchorMismatch(err error) bool {
	return errors.Is(err, jobs.ErrSHA256Mismatch) || errors.Is(err, ErrDigestMismatch)
}

// parseHeaders turns a job's "Name: value" headers into a header.
func parseHeaders(lines []string) (http.Header, error) {
	h := http.Header{}
	for i, line := range lines {
		name, value, ok := strings.Cut(line, ":")
		if name = strings.TrimSpace(name); !ok || name == "" {
			return nil, fmt.Errorf("%w: header %d is not \"Name: value\"", jobs.ErrBadRequest, i+1)
		}
		h.Add(name, strings.TrimSpace(value))
	}
	return h, nil
}
