package api

import "time"

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
	Status            string `json:"status"` // alive, suspect, left or dead
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

// RedLeaderInfo is the committed Red Leader as /v1/status shows it.
type RedLeaderInfo struct {
	Node      string    `json:"node"`
	Name      string    `json:"name"`
	Epoch     uint64    `json:"epoch"`
	Since     time.Time `json:"since"`
	Confirmed bool      `json:"confirmed"`
}

// RaftInfo is the Raft group as /v1/status shows it.
type RaftInfo struct {
	State       string `json:"state"`
	Leader      string `json:"leader"`
	ClusterID   string `json:"cluster_id"`
	Voters      int    `json:"voters"`
	Standbys    int    `json:"standbys"`
	Term        uint64 `json:"term"`
	CommitIndex uint64 `json:"commit_index"`
}

// EventInfo is one element of GET /v1/events.
type EventInfo struct {
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Kind     string    `json:"kind"`
	Node     string    `json:"node,omitempty"`
	Epoch    uint64    `json:"epoch,omitempty"`
	Severity string    `json:"severity"`
	Reason   string    `json:"reason"`
}

// PolicyInfo is the body of GET /v1/policy (and of PUT, where every field
// is optional and "version", if set, must be the current version).
type PolicyInfo struct {
	Version    uint64 `json:"version,omitempty"`
	LeaderRate string `json:"leader_rate,omitempty"`
	PeerRate   string `json:"peer_rate,omitempty"`
	LANRate    string `json:"lan_rate,omitempty"`
}

// NLMRequest is the body of POST /v1/nlm.
type NLMRequest struct {
	Node   string `json:"node"` // node ID, unique ID prefix, or name
	On     bool   `json:"on"`
	Reason string `json:"reason,omitempty"`
}

// NLMResponse is the answer to POST /v1/nlm: the resolved node ID and the
// mark as committed.
type NLMResponse struct {
	Node              string `json:"node"`
	NotLeaderMaterial bool   `json:"not_leader_material"`
}

// ProbeMatch is one holder in GET /v1/probe.
type ProbeMatch struct {
	Peer      string  `json:"peer"`
	Blocks    uint32  `json:"blocks"`
	Full      bool    `json:"full"`
	LatencyMS float64 `json:"latency_ms"`
}

// ProbeResponse is the body of GET /v1/probe?segment=HEX[&blocks=N].
type ProbeResponse struct {
	Segment string       `json:"segment"`
	Matches []ProbeMatch `json:"matches"`
}

// ErrorResponse is the body of every API error.
type ErrorResponse struct {
	Error string `json:"error"`
}
