package peer

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/redleader-p2p/redleader/election"
	"github.com/redleader-p2p/redleader/peer/api"
)

// apiHandler routes the local API with method patterns (a GET pattern also
// serves HEAD); every error answer is an ErrorResponse.
func (a *Agent) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathStatus, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, r, http.StatusOK, a.Status())
	})
	mux.HandleFunc("GET "+api.PathMembers, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, r, http.StatusOK, a.MemberInfos())
	})
	// Profiling: the token is needed (apiAuth).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	a.addElectionRoutes(mux)
	a.addContentRoutes(mux)
	a.addJobRoutes(mux)
	a.addReloadRoutes(mux)
	a.addUIRoutes(mux) // the dashboard, /ui/ (api_ui.go)
	mux.Handle(api.PathMetrics, promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	return a.apiAuth(jsonMuxErrors(mux))
}

// jsonMuxErrors answers the mux's own errors (no pattern matched the path,
// 404, or the method, 405 with its Allow header) with an ErrorResponse
// body instead of Go's plain text.
func jsonMuxErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern == "" {
			w = &muxErrorWriter{ResponseWriter: w, r: r}
		}
		mux.ServeHTTP(w, r)
	})
}

// muxErrorWriter turns a 404 or 405 into JSON and drops the text body
// that follows; anything else (a redirect to the clean path) passes.
type muxErrorWriter struct {
	http.ResponseWriter
	r    *http.Request
	done bool // the JSON error is written
}

func (w *muxErrorWriter) WriteHeader(status int) {
	var msg string
	switch status {
	case http.StatusNotFound:
		msg = "no such endpoint: " + w.r.URL.Path
	case http.StatusMethodNotAllowed:
		msg = "method " + w.r.Method + " not allowed"
	default:
		w.ResponseWriter.WriteHeader(status)
		return
	}
	w.done = true
	writeJSON(w.ResponseWriter, w.r, status, api.ErrorResponse{Error: msg})
}

func (w *muxErrorWriter) Write(b []byte) (int, error) {
	if w.done {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Status is what GET /v1/status returns.
func (a *Agent) Status() api.StatusResponse {
	members := a.Members()
	c := countStatuses(members)
	meta := a.metaSnapshot()
	addr := a.GossipAddr()
	out := api.StatusResponse{
		Role:            "peer",
		Node:            a.id,
		Name:            meta.Name,
		Subnet:          meta.Subnet,
		Location:        meta.Location,
		Addr:            addr.Addr().String(),
		GossipPort:      int(addr.Port()),
		Version:         a.opts.Version,
		ProtocolVersion: int(meta.ProtoVersion),
		UptimeS:         int64(time.Since(a.boot).Seconds()),
		Members: api.MemberCounts{Total: len(members), Alive: c[StatusAlive], Suspect: c[StatusSuspect],
			Left: c[StatusLeft], Dead: c[StatusDead]},
	}
	if n := a.Election(); n != nil {
		es := n.Status()
		if es.RedLeader {
			out.Role = "leader"
		}
		if es.Seat.Node != "" {
			out.RedLeader = &api.RedLeaderInfo{Node: es.Seat.Node, Epoch: es.Seat.Epoch, Since: es.Seat.AppointedAt,
				Confirmed: es.Seat.Confirmed()}
			for _, m := range members {
				if m.Node == es.Seat.Node {
					out.RedLeader.Name = m.Meta.Name
				}
			}
		}
		out.Raft = api.RaftInfo{State: es.Raft.State, Leader: es.Raft.Leader, ClusterID: es.Raft.ClusterID,
			Voters: es.Raft.Voters, Standbys: es.Raft.Standbys, Term: es.Raft.Term, CommitIndex: es.Raft.CommitIndex}
	}
	return out
}

// MemberInfos is what GET /v1/members returns.
func (a *Agent) MemberInfos() []api.MemberInfo {
	now := time.Now()
	members := a.Members()
	var rank election.Decision
	if n := a.Election(); n != nil {
		rank = n.Ranking()
	}
	order := map[string]election.Ranked{}
	for _, r := range rank.Order {
		order[r.Node] = r
	}
	out := make([]api.MemberInfo, 0, len(members))
	for _, m := range members {
		r := order[m.Node]
		out = append(out, api.MemberInfo{
			Eligible:          r.Rank > 0,
			Rank:              r.Rank,
			Ineligible:        r.Ineligible,
			Node:              m.Node,
			Name:              m.Meta.Name,
			Addr:              m.Addr.Addr().String(),
			GossipPort:        int(m.Addr.Port()),
			PeerPort:          int(m.Meta.PeerPort),
			Status:            m.Status,
			Subnet:            m.Meta.Subnet,
			Location:          m.Meta.Location,
			Self:              m.Node == a.id,
			NotLeaderMaterial: m.Meta.NotLeaderMaterial,
			Priority:          m.Meta.Priority.String(),
			Version:           int(m.Meta.ProtoVersion),
			Progress:          m.Meta.Progress,
			UptimeS:           int64(m.Meta.Uptime(now).Seconds()),
		})
	}
	return out
}

// writeJSON writes v with status; ?pretty indents it.
func writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	if _, ok := r.URL.Query()["pretty"]; ok {
		enc.SetIndent("", "  ")
	}
	_ = enc.Encode(v) // the client went away: nothing to do
}
