package retrieval

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redleader-p2p/redleader/internal/ratelog"
	"github.com/redleader-p2p/redleader/peer/content"
)

// Client defaults.
const (
	// DefaultRequestTimeout bounds one request to a peer.
	DefaultRequestTimeout = 5 * time.Second
	// DefaultPerPeer is the default number of concurrent requests to one peer in FetchSegment.
	DefaultPerPeer = 4
	// DefaultMaxParallel is the default number of concurrent requests in FetchSegment.
	DefaultMaxParallel = 16
	// DefaultMaxPeerErrors is the default number of consecutive transport
	// failures after which FetchSegment stops asking a peer.
	DefaultMaxPeerErrors = 2
)

// A peer that keeps failing is logged at most peerLogBurst times per
// peerLogEvery (per kind of failure); later lines carry suppressed=N.
const (
	peerLogEvery = time.Minute
	peerLogBurst = 1
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// HTTPClient sends the requests; nil means a client of the Client's own
	// (no proxy, keep-alive), closed by Close.
	HTTPClient *http.Client
	// RequestTimeout bounds one request; 0 means DefaultRequestTimeout.
	RequestTimeout time.Duration
	// PerPeer caps concurrent requests to one peer; 0 means DefaultPerPeer.
	PerPeer int
	// MaxParallel caps concurrent requests of one FetchSegment; 0 means DefaultMaxParallel.
	MaxParallel int
	// MaxPeerErrors is how many consecutive transport failures drop a peer
	// for the rest of a FetchSegment; 0 means DefaultMaxPeerErrors.
	MaxPeerErrors int
	// Logger receives debug logs; nil means slog.Default().
	Logger *slog.Logger
}

// Client fetches blocks from peers. It is safe for concurrent use.
type Client struct {
	http      *http.Client
	own       *http.Transport // nil when HTTPClient was given
	timeout   time.Duration
	perPeer   int
	parallel  int
	maxErrors int
	log       *ratelog.Logger // lines about failing peers, keyed by peer
	received  atomic.Int64    // verified block bytes fetched, all peers
}

// BytesReceived returns the verified block bytes the Client fetched from
// peers since it was made (a live count: jobs count theirs per segment).
func (c *Client) BytesReceived() int64 { return c.received.Load() }

// NewClient returns a Client for cfg.
func NewClient(cfg ClientConfig) *Client {
	c := &Client{
		http:      cfg.HTTPClient,
		timeout:   cmpOr(cfg.RequestTimeout, DefaultRequestTimeout),
		perPeer:   cmpOr(cfg.PerPeer, DefaultPerPeer),
		parallel:  cmpOr(cfg.MaxParallel, DefaultMaxParallel),
		maxErrors: cmpOr(cfg.MaxPeerErrors, DefaultMaxPeerErrors),
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	c.log = ratelog.New(log, peerLogEvery, peerLogBurst)
	if c.http == nil {
		c.own = &http.Transport{
			Proxy:       nil, // peers are on the LAN
			DialContext: (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			// Two fetches of one peer at once (a job's and a demand's, or
			// a segment and the next) keep their connections.
			MaxIdleConnsPerHost: 2 * c.perPeer,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
		}
		c.http = &http.Client{Transport: c.own}
	}
	return c
}

func cmpOr[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Close closes the idle connections of the Client's own transport.
func (c *Client) Close() {
	if c.own != nil {
		c.own.CloseIdleConnections()
	}
}

// peerURL returns the retrieval URL of peer, given as "host:port" (as in
// PCCRD XAddrs) or as a base URL "http://host:port".
func peerURL(peer string) string {
	if strings.Contains(peer, "://") {
		return strings.TrimSuffix(peer, "/") + Path
	}
	return "http://" + peer + Path
}

// roundTrip POSTs req to peer and returns the parsed response; byte
// fields of the response alias its body.
func (c *Client) roundTrip(ctx context.Context, peer string, req Message) (Message, error) {
	body, err := req.AppendBinary(nil)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, peerURL(peer), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPeer, err)
	}
	hreq.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.http.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPeer, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("%w: HTTP status %s", ErrPeer, resp.Status)
	}
	const limit = TransportHeaderSize + MaxResponseSize
	var buf bytes.Buffer
	if resp.ContentLength > 0 && resp.ContentLength <= limit {
		buf.Grow(int(resp.ContentLength))
	}
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, limit+1)); err != nil {
		return nil, fmt.Errorf("%w: read response: %w", ErrPeer, err)
	}
	if buf.Len() > limit {
		return nil, fmt.Errorf("%w: %w", ErrBadBlock, ErrTooLarge)
	}
	m, err := ParseResponse(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadBlock, err)
	}
	return m, nil
}

// Negotiate sends MSG_NEGO_REQ for version 1.0 to peer and returns its answer.
func (c *Client) Negotiate(ctx context.Context, peer string) (*NegoResp, error) {
	m, err := c.roundTrip(ctx, peer, &NegoReq{Min: Version1, Max: Version1})
	if err != nil {
		return nil, fmt.Errorf("negotiate with %s: %w", peer, err)
	}
	resp, ok := m.(*NegoResp)
	if !ok {
		return nil, fmt.Errorf("negotiate with %s: got %v: %w", peer, m.MsgType(), ErrMsgType)
	}
	return resp, nil
}

// BlockList asks peer which of the blocks in ranges of segment id it holds.
func (c *Client) BlockList(ctx context.Context, peer string, id content.SegmentID, ranges []BlockRange) (*BlkList, error) {
	m, err := c.roundTrip(ctx, peer, &GetBlkList{SegmentID: id, Ranges: NormalizeRanges(ranges)})
	if err != nil {
		return nil, fmt.Errorf("block list from %s: %w", peer, err)
	}
	resp, ok := m.(*BlkList)
	if !ok {
		return nil, fmt.Errorf("block list from %s: got %v: %w", peer, m.MsgType(), ErrPeer)
	}
	return resp, nil
}

// FetchBlock fetches block index of seg from peer, decrypts it and checks
// it against the block hash. It returns ErrNotHeld when the peer has not
// got the block (or is busy), ErrBadBlock when the peer's reply is wrong,
// and ErrPeer for transport and HTTP failures.
func (c *Client) FetchBlock(ctx context.Context, peer string, seg *content.Segment, index int) ([]byte, error) {
	if index < 0 || index >= len(seg.BlockHashes) || index >= seg.BlockCount() {
		return nil, fmt.Errorf("fetch block %d of %v: %w", index, seg.ID, content.ErrBlockIndex)
	}
	req := &GetBlks{Crypto: CryptoAES128, SegmentID: seg.ID, Ranges: []BlockRange{{Index: uint32(index), Count: 1}}}
	m, err := c.roundTrip(ctx, peer, req)
	if err != nil {
		return nil, fmt.Errorf("fetch block %d of %v from %s: %w", index, seg.ID, peer, err)
	}
	blk, ok := m.(*Blk)
	switch {
	case !ok:
		err = fmt.Errorf("got %v: %w", m.MsgType(), ErrPeer)
	case blk.SegmentID != seg.ID || blk.BlockIndex != uint32(index):
		err = fmt.Errorf("reply for block %d of %v: %w", blk.BlockIndex, blk.SegmentID, ErrBadBlock)
	case len(blk.Block) == 0:
		err = ErrNotHeld
	}
	if err != nil {
		return nil, fmt.Errorf("fetch block %d of %v from %s: %w", index, seg.ID, peer, err)
	}
	data, err := decryptBlock(seg, index, blk)
	if err != nil {
		return nil, fmt.Errorf("fetch block %d of %v from %s: %w", index, seg.ID, peer, err)
	}
	c.received.Add(int64(len(data)))
	return data, nil
}

// Sink receives verified blocks from FetchSegment. It is called from
// several goroutines at once; data is the caller's to keep. An error
// stops the fetch.
type Sink func(index int, data []byte) error

// FetchResult tells how a FetchSegment went.
type FetchResult struct {
	// Blocks maps each peer to the number of blocks fetched from it.
	Blocks map[string]int
	// Missing are the blocks no peer delivered, ascending.
	Missing []int
	// BadPeers served a bad block and were not asked again.
	BadPeers []string
	// Rejected counts, per peer, the blocks it served that failed
	// verification (a bad peer's requests already in flight when it was
	// dropped included); every one was discarded.
	Rejected map[string]int
	// FailedPeers were dropped after repeated transport failures.
	FailedPeers []string
}

// FetchSegment fetches blocks of seg (nil: every block with a listed hash)
// from peers in parallel, verifies each and hands it to sink. Every block
// is asked of one peer at a time; a peer without it is not asked for it
// again; a peer that serves a bad block is not asked again for this
// segment. When blocks remain that no peer delivered, it returns the result
// (with Missing) and ErrIncomplete, so the caller can fall back to the
// origin.
func (c *Client) FetchSegment(ctx context.Context, seg *content.Segment, blocks []int, peers []string, sink Sink) (*FetchResult, error) {
	if blocks == nil {
		blocks = make([]int, min(len(seg.BlockHashes), seg.BlockCount()))
		for i := range blocks {
			blocks[i] = i
		}
	}
	for _, b := range blocks {
		if b < 0 || b >= len(seg.BlockHashes) || b >= seg.BlockCount() {
			return nil, fmt.Errorf("fetch segment %v: block %d: %w", seg.ID, b, content.ErrBlockIndex)
		}
	}
	peers = slices.Compact(slices.Sorted(slices.Values(peers)))
	st := &fetchState{
		pending:  slices.Clone(blocks),
		peers:    peers,
		tried:    make([]map[int]bool, len(peers)),
		inflight: make([]int, len(peers)),
		errs:     make([]int, len(peers)),
		dropped:  make([]bool, len(peers)),
		perPeer:  c.perPeer,
		result:   &FetchResult{Blocks: make(map[string]int), Rejected: make(map[string]int)},
	}
	st.cond = sync.NewCond(&st.mu)
	ctx, st.cancel = context.WithCancel(ctx)
	defer st.cancel()
	for i := range st.tried {
		st.tried[i] = make(map[int]bool)
	}
	stop := context.AfterFunc(ctx, func() {
		st.mu.Lock()
		st.cond.Broadcast()
		st.mu.Unlock()
	})
	defer stop()

	workers := min(c.parallel, len(peers)*c.perPeer, len(blocks))
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				b, p, ok := st.next(ctx)
				if !ok {
					return
				}
				data, err := c.FetchBlock(ctx, peers[p], seg, b)
				if err == nil {
					if serr := sink(b, data); serr != nil {
						st.abort(fmt.Errorf("fetch segment %v: store block %d: %w", seg.ID, b, serr))
					}
				}
				st.complete(b, p, err, c)
			}
		})
	}
	wg.Wait()

	res := st.result
	res.Missing = slices.Sorted(slices.Values(st.pending))
	switch {
	case st.err != nil:
		return res, st.err
	case ctx.Err() != nil:
		return res, fmt.Errorf("fetch segment %v: %w", seg.ID, ctx.Err())
	case len(res.Missing) > 0:
		return res, fmt.Errorf("fetch segment %v: %d blocks: %w", seg.ID, len(res.Missing), ErrIncomplete)
	}
	return res, nil
}

// fetchState schedules the blocks of one FetchSegment over its peers.
type fetchState struct {
	mu       sync.Mutex
	cond     *sync.Cond
	pending  []int          // blocks not fetched and not in flight
	peers    []string       // peer addresses
	tried    []map[int]bool // per peer: blocks already asked of it
	inflight []int          // per peer: requests in flight
	errs     []int          // per peer: consecutive transport failures
	dropped  []bool         // per peer: bad or failing, not asked again
	active   int            // requests in flight
	perPeer  int
	cancel   context.CancelFunc // stops requests in flight on abort
	err      error
	result   *FetchResult
}

// next waits for a (block, peer) pair to fetch; ok is false when there is
// nothing left that any usable peer could deliver, or the fetch stopped.
func (st *fetchState) next(ctx context.Context) (block, peer int, ok bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for {
		if st.err != nil || ctx.Err() != nil {
			return 0, 0, false
		}
		for i, b := range st.pending {
			best := -1
			for p := range st.peers {
				if st.dropped[p] || st.tried[p][b] || st.inflight[p] >= st.perPeer {
					continue
				}
				if best < 0 || st.inflight[p] < st.inflight[best] {
					best = p
				}
			}
			if best >= 0 {
				st.pending = slices.Delete(st.pending, i, i+1)
				st.tried[best][b] = true
				st.inflight[best]++
				st.active++
				return b, best, true
			}
		}
		if st.active == 0 {
			return 0, 0, false
		}
		st.cond.Wait()
	}
}

// complete records the outcome of fetching block b from peer p.
func (st *fetchState) complete(b, p int, err error, c *Client) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.active--
	st.inflight[p]--
	defer st.cond.Broadcast()
	peer := st.peers[p]
	switch {
	case err == nil:
		st.errs[p] = 0
		st.result.Blocks[peer]++
		return
	case errors.Is(err, ErrNotHeld):
		st.errs[p] = 0
	case errors.Is(err, ErrBadBlock):
		st.result.Rejected[peer]++
		if !st.dropped[p] {
			st.dropped[p] = true
			st.result.BadPeers = append(st.result.BadPeers, peer)
			c.log.Warn("bad "+peer, "peer served a bad block; not asking it again for this segment", "peer", peer, "block", b, "err", err)
		}
	default:
		st.errs[p]++
		if st.errs[p] >= c.maxErrors && !st.dropped[p] {
			st.dropped[p] = true
			st.result.FailedPeers = append(st.result.FailedPeers, peer)
			c.log.Debug("failing "+peer, "dropping failing peer for this segment", "peer", peer, "err", err)
		}
	}
	st.pending = append(st.pending, b)
}

// abort stops the fetch with err.
func (st *fetchState) abort(err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.err == nil {
		st.err = err
	}
	st.cancel()
	st.cond.Broadcast()
}
