package peer

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/redleader-p2p/redleader/election"
)

// StatusResponse is the body of GET /v1/status.
type StatusResponse struct {
	Node            string       `json:"node"`
	Name            string       `json:"name"`
	Subnet          string       `json:"subnet"`
	Location        string       `json:"location"`
	Addr            string       `json:"addr"`
	GossipPort      int          `json:"gossip_port"`
	Version         string       `json:"version"`
	ProtocolVersion int          `json:"protocol_version"`
	UptimeS         int64        `json:"uptime_s"`
	Members         MemberCounts `json:"members"`
	// Role is "leader" while this agent may act as Red Leader (it holds
	// the newest seat and a fresh check-in), else "peer".
	Role      string         `json:"role"`
	RedLeader *RedLeaderInfo `json:"red_leader"`
	Raft      RaftInfo       `json:"raft"`
}

// MemberCounts counts the members of the agent's pool by status.
type MemberCounts struct {
	Total   int `json:"total"`
	Alive   int `json:"alive"`
	Suspect int `json:"suspect"`
	Left    int `json:"left"`
	Dead    int `json:"dead"`
}

// MemberInfo is one element of GET /v1/members.
type MemberInfo struct {
	Node              string `json:"node"`
	Name              string `json:"name"`
	Addr              string `json:"addr"`
	GossipPort        int    `json:"gossip_port"`
	PeerPort          int    `json:"peer_port"`
	Status            string `json:"status"`
	Subnet            string `json:"subnet"`
	Location          string `json:"location"`
	Self              bool   `json:"self"`
	NotLeaderMaterial bool   `json:"not_leader_material"`
	Priority          string `json:"priority"`
	Version           int    `json:"version"`
	Progress          uint64 `json:"progress"`
	UptimeS           int64  `json:"uptime_s"`
	// Eligible: may be Red Leader now. Rank: 1 = the (would-be) Red
	// Leader, 2 = next nominee…; 0 when not eligible, with the reason.
	Eligible   bool   `json:"eligible"`
	Rank       int    `json:"rank"`
	Ineligible string `json:"ineligible,omitempty"`
}

// ErrorResponse is the body of every API error.
type ErrorResponse struct {
	Error string `json:"error"`
}

func (a *Agent) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v1/status", readOnly(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, r, http.StatusOK, a.Status())
	}))
	mux.Handle("/v1/members", readOnly(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, r, http.StatusOK, a.MemberInfos())
	}))
	// Profiling, on loopback like the rest of the API.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	a.addElectionRoutes(mux)
	a.addContentRoutes(mux)
	mux.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, r, http.StatusNotFound, ErrorResponse{Error: "no such endpoint: " + r.URL.Path})
	})
	return mux
}

// Status is what GET /v1/status returns.
func (a *Agent) Status() StatusResponse {
	members := a.Members()
	c := countStatuses(members)
	meta := a.metaSnapshot()
	addr := a.GossipAddr()
	out := StatusResponse{
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
		Members: MemberCounts{Total: len(members), Alive: c[StatusAlive], Suspect: c[StatusSuspect],
			Left: c[StatusLeft], Dead: c[StatusDead]},
	}
	if n := a.Election(); n != nil {
		es := n.Status()
		if es.RedLeader {
			out.Role = "leader"
		}
		if es.Seat.Node != "" {
			out.RedLeader = &RedLeaderInfo{Node: es.Seat.Node, Epoch: es.Seat.Epoch, Since: es.Seat.AppointedAt,
				Confirmed: es.Seat.Confirmed()}
			for _, m := range members {
				if m.Node == es.Seat.Node {
					out.RedLeader.Name = m.Meta.Name
				}
			}
		}
		out.Raft = RaftInfo{State: es.Raft.State, Leader: es.Raft.Leader, ClusterID: es.Raft.ClusterID,
			Voters: es.Raft.Voters, Standbys: es.Raft.Standbys, Term: es.Raft.Term, CommitIndex: es.Raft.CommitIndex}
	}
	return out
}

// MemberInfos is what GET /v1/members returns.
func (a *Agent) MemberInfos() []MemberInfo {
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
	out := make([]MemberInfo, 0, len(members))
	for _, m := range members {
		r := order[m.Node]
		out = append(out, MemberInfo{
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

// readOnly allows GET and HEAD only.
func readOnly(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeJSON(w, r, http.StatusMethodNotAllowed, ErrorResponse{Error: "method " + r.Method + " not allowed"})
			return
		}
		h(w, r)
	})
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
