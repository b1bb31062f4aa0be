package peer

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/redleader-p2p/redleader/discovery"
	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/peer/cache"
	pccrc "github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/retrieval"
)

// TestHooksEnv enables the test-only API endpoints (/v1/debug/...) when set
// to 1 in the agent's environment. Never set it in production.
const TestHooksEnv = "REDLEADER_TEST_HOOKS"

// maxProbeMemory bounds the per-segment memory of probe results.
const maxProbeMemory = 4096

// content is the agent's bytes side: the segment cache, the MS-PCCRR
// server on the peer port, and MS-PCCRD discovery (per home).
type content struct {
	cache   *cache.Cache
	overlay *discovery.MemoryHolder // segments marked held by the test hook
	pccrr   *retrieval.Server
	httpSrv *http.Server
	metrics *discovery.Metrics

	mu        sync.Mutex
	responder *discovery.Responder
	prober    *discovery.Prober
	probes    map[pccrc.SegmentID]probeResult // last probe per segment
}

// probeResult is what one probe saw: the input of reply suppression once
// the segment is held.
type probeResult struct{ replies, full int }

// holder answers the responder from the cache and the test overlay.
type holder struct{ c *content }

// BlockCount implements discovery.Holder.
func (h holder) BlockCount(id pccrc.SegmentID) (uint32, bool) {
	if n, ok := h.c.overlay.BlockCount(id); ok {
		return n, true
	}
	return h.c.cache.BlockCount(id)
}

// startContent opens the cache and serves PCCRR on the peer port.
func (a *Agent) startContent() error {
	c, err := cache.Open(filepath.Join(a.cfg.DataDir, "cache"), cache.Options{
		MaxBytes: a.cfg.Cache.MaxBytes(), Logger: a.log.With("component", "cache"),
	})
	if err != nil {
		return fmt.Errorf("open segment cache: %w", err)
	}
	srv, err := retrieval.NewServer(retrieval.ServerConfig{Store: c, Logger: a.log.With("component", "pccrr")})
	if err != nil {
		c.Close()
		return err
	}
	a.content = &content{cache: c, overlay: discovery.NewMemoryHolder(), pccrr: srv,
		metrics: discovery.NewMetrics(a.reg), probes: map[pccrc.SegmentID]probeResult{}}
	mux := http.NewServeMux()
	mux.Handle(retrieval.Path, srv)
	a.content.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 90 * time.Second}
	a.goLoop(func() {
		if err := a.content.httpSrv.Serve(a.port.HTTP); err != nil && !errors.Is(err, http.ErrServerClosed) && a.ctx.Err() == nil {
			a.log.Error("PCCRR server stopped", "err", err)
		}
	})
	return nil
}

// stopContent stops the PCCRR server and closes the cache.
func (a *Agent) stopContent() error {
	if a.content == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return errors.Join(a.content.httpSrv.Shutdown(ctx), a.content.cache.Close())
}

// startDiscoveryLocked starts the PCCRD responder and prober on the home
// interface (a.mu held).
func (a *Agent) startDiscoveryLocked() error {
	c := a.content
	if c == nil || !a.cfg.Discovery.Enabled {
		return nil
	}
	d := a.cfg.Discovery
	home := a.home
	rc := discovery.DefaultResponderConfig()
	rc.Port = d.Port
	rc.Interfaces = []string{home.Iface}
	rc.Groups = []netip.Addr{netip.MustParseAddr(d.Group), netip.MustParseAddr(discovery.MulticastIPv6)}
	rc.MaxBackoff, rc.ReplyThreshold, rc.ReplyProbability = d.MaxBackoff, d.ReplyThreshold, d.ReplyProbability
	peerAddr := netip.AddrPortFrom(home.Addr, uint16(a.port.Port()))
	rc.XAddrs = func() []netip.AddrPort { return []netip.AddrPort{peerAddr} }
	resp, err := discovery.NewResponder(rc, holder{c}, c.metrics, a.log.With("component", "pccrd"))
	if err != nil {
		return err
	}
	if err := resp.Start(a.ctx); err != nil {
		return err
	}
	pc := discovery.DefaultProberConfig()
	pc.Targets = []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr(d.Group), uint16(d.Port))}
	pc.Interface = home.Iface
	pc.RequestTimer, pc.MaxBackoff = d.RequestTimer, d.MaxBackoff
	subnet := home.Subnet
	pc.LocalNets = func() []netip.Prefix { return []netip.Prefix{subnet} }
	pr, err := discovery.NewProber(pc, c.metrics, a.log.With("component", "pccrd"))
	if err == nil {
		err = pr.Start(a.ctx)
	}
	if err != nil {
		resp.Close()
		return err
	}
	c.mu.Lock()
	c.responder, c.prober = resp, pr
	c.mu.Unlock()
	return nil
}

// stopDiscoveryLocked stops the responder and prober (a.mu held).
func (a *Agent) stopDiscoveryLocked() error {
	c := a.content
	if c == nil {
		return nil
	}
	c.mu.Lock()
	resp, pr := c.responder, c.prober
	c.responder, c.prober = nil, nil
	c.mu.Unlock()
	var errs []error
	if resp != nil {
		errs = append(errs, resp.Close())
	}
	if pr != nil {
		errs = append(errs, pr.Close())
	}
	return errors.Join(errs...)
}

// Probe asks the LAN which peers hold segment id (MS-PCCRD). A reply
// counts as full when it reports blocks (or more) blocks; blocks 0 means
// "any reply is full". The result is remembered for reply suppression.
func (a *Agent) Probe(ctx context.Context, id pccrc.SegmentID, blocks uint32) (api.ProbeResponse, error) {
	c := a.content
	if c == nil {
		return api.ProbeResponse{}, errors.New("content not started")
	}
	c.mu.Lock()
	pr, self := c.prober, ""
	if c.responder != nil {
		self = c.responder.Endpoint()
	}
	c.mu.Unlock()
	if pr == nil {
		return api.ProbeResponse{}, errors.New("discovery is off or not running")
	}
	matches, err := pr.Probe(ctx, id)
	if err != nil {
		return api.ProbeResponse{}, err
	}
	out := api.ProbeResponse{Segment: strings.ToUpper(hex.EncodeToString(id[:])), Matches: []api.ProbeMatch{}}
	res := probeResult{}
	for _, m := range matches {
		if m.Endpoint == self {
			continue // our own responder, heard through multicast loopback
		}
		for _, s := range m.Segments {
			if s.ID != id {
				continue
			}
			full := s.Full || (blocks == 0 || s.Blocks >= blocks)
			out.Matches = append(out.Matches, api.ProbeMatch{Peer: m.Peer.String(), Blocks: s.Blocks, Full: full,
				LatencyMS: float64(m.Latency.Microseconds()) / 1000})
			res.replies++
			if full {
				res.full++
			}
		}
	}
	c.mu.Lock()
	if len(c.probes) >= maxProbeMemory {
		clear(c.probes)
	}
	c.probes[id] = res
	c.mu.Unlock()
	return out, nil
}

// HoldForTest marks id held with blocks blocks (test hook) and records the
// last probe's replies for suppression, as a real fetch would.
func (a *Agent) HoldForTest(id pccrc.SegmentID, blocks uint32) {
	c := a.content
	c.mu.Lock()
	res := c.probes[id]
	resp := c.responder
	c.mu.Unlock()
	c.overlay.Add(id, blocks)
	if resp != nil {
		resp.RecordFetch(id, res.replies, res.full)
	}
}

func parseSegmentID(s string) (pccrc.SegmentID, error) {
	var id pccrc.SegmentID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("segment must be %d hex digits", 2*len(id))
	}
	copy(id[:], b)
	return id, nil
}

// addContentRoutes registers /v1/probe and, with TestHooksEnv=1, the
// debug hooks.
func (a *Agent) addContentRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+api.PathProbe, func(w http.ResponseWriter, r *http.Request) {
		id, err := parseSegmentID(r.URL.Query().Get("segment"))
		if err != nil {
			writeError(w, r, http.StatusBadRequest, err)
			return
		}
		var blocks uint32
		if b := r.URL.Query().Get("blocks"); b != "" {
			if _, err := fmt.Sscan(b, &blocks); err != nil {
				writeError(w, r, http.StatusBadRequest, errors.New("blocks must be a number"))
				return
			}
		}
		out, err := a.Probe(r.Context(), id, blocks)
		if err != nil {
			writeError(w, r, http.StatusServiceUnavailable, err)
			return
		}
		writeJSON(w, r, http.StatusOK, out)
	})
	if os.Getenv(TestHooksEnv) != "1" {
		return
	}
	mux.HandleFunc("/v1/debug/hold", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Segment string `json:"segment"`
			Blocks  uint32 `json:"blocks"`
		}
		if r.Method != http.MethodPost || json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&in) != nil {
			writeError(w, r, http.StatusBadRequest, errors.New(`POST {"segment": HEX, "blocks": N}`))
			return
		}
		id, err := parseSegmentID(in.Segment)
		if err != nil {
			writeError(w, r, http.StatusBadRequest, err)
			return
		}
		a.HoldForTest(id, in.Blocks)
		writeJSON(w, r, http.StatusOK, map[string]any{"held": in.Segment})
	})
}
