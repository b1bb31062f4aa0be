package peer

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/redleader-p2p/redleader/discovery"
	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/peer/cache"
	pccrc "github.com/redleader-p2p/redleader/peer/content"
	"github.com/redleader-p2p/redleader/peer/retrieval"
	"github.com/redleader-p2p/redleader/shaping"
)

// content is the agent's bytes side: the segment cache, the MS-PCCRR
// server on the peer port with the agent's one LAN limiter, and MS-PCCRD
// discovery (per home).
type content struct {
	cache   *cache.Cache
	pccrr   *retrieval.Server
	httpSrv *http.Server
	metrics *discovery.Metrics
	// lan paces every block the server sends (lan_rate): the configured
	// rate until the committed policy sets one (followPolicy).
	lan *shaping.Limiter

	mu        sync.Mutex
	responder *discovery.Responder
	prober    *discovery.Prober
}

// startContent opens the cache and serves PCCRR on the peer port.
func (a *Agent) startContent() error {
	c, err := cache.Open(filepath.Join(a.cfg.DataDir, "cache"), cache.Options{
		MaxBytes: a.cfg.Cache.MaxBytes(), Logger: a.log.With("component", "cache"),
	})
	if err != nil {
		return fmt.Errorf("open segment cache: %w", err)
	}
	// One LAN limiter for all the uploads, bursts of at least one block.
	lan := shaping.NewLimiter(a.cfg.Shaping.LANRate, pccrc.BlockSize)
	srv, err := retrieval.NewServer(retrieval.ServerConfig{Store: c, Logger: a.log.With("component", "pccrr"),
		Metrics: retrieval.NewMetrics(a.reg),
		Pace:    func(ctx context.Context, w io.Writer) io.Writer { return shaping.NewWriter(ctx, w, lan) }})
	if err != nil {
		c.Close()
		return err
	}
	limit := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "redleader_lan_limit_bits_per_second",
		Help: "The LAN rate in force for the blocks this agent serves to LAN peers (0: unlimited): the policy's lan_rate, else shaping.lan_rate."},
		func() float64 { return float64(lan.Rate()) })
	if err := a.reg.Register(limit); err != nil {
		c.Close()
		return fmt.Errorf("content metrics: %w", err)
	}
	a.content = &content{cache: c, pccrr: srv, metrics: discovery.NewMetrics(a.reg), lan: lan}
	mux := http.NewServeMux()
	mux.Handle(retrieval.Path, srv)
	// Bounded like every peer-port connection (issue #9): requests are a
	// few hundred bytes; a response is one block (64 KB), which a LAN peer
	// as slow as 20 kbit/s still pulls within WriteTimeout; an idle
	// keep-alive connection holds its place under the port's caps for
	// IdleTimeout only.
	a.content.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 15 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 10 * time.Second,
		// net/http's own lines through slog (log_format); caused by LAN peers: debug.
		ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelDebug)}
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
	d := a.liveConfig().Discovery // its timings may change on reload (reload.go)
	home := a.home
	rc := discovery.DefaultResponderConfig()
	rc.Port = d.Port
	rc.Interfaces = []string{home.Iface}
	rc.Groups = []netip.Addr{netip.MustParseAddr(d.Group), netip.MustParseAddr(discovery.MulticastIPv6)}
	rc.MaxBackoff, rc.ReplyThreshold, rc.ReplyProbability = d.MaxBackoff, d.ReplyThreshold, d.ReplyProbability
	peerAddr := netip.AddrPortFrom(home.Addr, uint16(a.port.Port()))
	rc.XAddrs = func() []netip.AddrPort { return []netip.AddrPort{peerAddr} }
	resp, err := discovery.NewResponder(rc, c.cache, c.metrics, a.log.With("component", "pccrd"))
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
// "any reply is full". The result is recorded with the responder: it is
// the input of reply suppression once the agent holds the segment.
func (a *Agent) Probe(ctx context.Context, id pccrc.SegmentID, blocks uint32) (api.ProbeResponse, error) {
	c := a.content
	if c == nil {
		return api.ProbeResponse{}, errors.New("content not started")
	}
	c.mu.Lock()
	pr, resp, self := c.prober, c.responder, ""
	if resp != nil {
		self = resp.Endpoint()
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
	replies, fullReplies := 0, 0
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
			replies++
			if full {
				fullReplies++
			}
		}
	}
	if resp != nil {
		resp.RecordFetch(id, replies, fullReplies)
	}
	return out, nil
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

// addContentRoutes registers /v1/probe and the cache routes.
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
	a.addCacheRoutes(mux)
}
