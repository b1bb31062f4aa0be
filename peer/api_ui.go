package peer

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/redleader-p2p/redleader/peer/api"
	"github.com/redleader-p2p/redleader/peer/ui"
)

// addUIRoutes mounts the dashboard (peer/ui) at /ui/ (and / sends a browser
// there) and serves GET /v1/throughput from a recorder of the agent's byte
// counters. The recorder's loop is one of the agent's: it starts here when
// the agent runs (a.ctx is set) and stops with it.
//
// Read-only, like the other GET endpoints: open on loopback, the API token
// with api_allow_remote (apiAuth); the page never sends the token.
func (a *Agent) addUIRoutes(mux *http.ServeMux) {
	mux.Handle("GET "+ui.Path, ui.Handler())
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, ui.Path, http.StatusFound)
	})
	rec := ui.NewRecorder(a.throughputTotals, ui.DefaultInterval, ui.DefaultKeep)
	if a.ctx != nil {
		a.goLoop(func() { rec.Run(a.ctx) })
	}
	mux.HandleFunc("GET "+api.PathThroughput, func(w http.ResponseWriter, r *http.Request) {
		var since uint64
		if s := r.URL.Query().Get("since"); s != "" {
			n, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				writeError(w, r, http.StatusBadRequest, errBadSince)
				return
			}
			since = n
		}
		writeJSON(w, r, http.StatusOK, rec.Snapshot(since))
	})
}

// errBadSince answers a ?since that is not a sample number.
var errBadSince = errors.New("since: want a sample number (the seq of an earlier answer)")

// throughputTotals reads the byte counters the dashboard charts: what
// this agent's jobs received, plus what it fetched as Red Leader for
// members' demands (no job of its own: redleader_demand_bytes_total), by
// source — WAN: from origins; LAN in: from peers (MS-PCCRR); cache: found
// in its own cache; and LAN out: the block bytes its MS-PCCRR server sent
// to peers.
func (a *Agent) throughputTotals() api.ThroughputTotals {
	var out api.ThroughputTotals
	if a.jobs != nil {
		// Jobs count their bytes per segment; the WAN limiter and the
		// MS-PCCRR client count as the bytes come (jobs and demands).
		out.Cache = a.jobs.m.Totals().Cache
		if d := a.jobs.data; d != nil {
			out.WAN, out.LANIn = d.wanBytes.n.Load(), d.peers.BytesReceived()
			out.Cache += d.single.DemandBytes().Cache
		}
	}
	if a.content != nil && a.content.pccrr != nil {
		out.LANOut = int64(a.content.pccrr.Stats().BytesServed)
	}
	return out
}
