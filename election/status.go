package election

import (
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// RaftStatus describes this node's Raft group as the API shows it.
type RaftStatus struct {
	State       string // leader, follower, candidate, standby, member, shutdown
	Leader      string // node ID of the Raft leader, if known
	ClusterID   string
	Voters      int
	Standbys    int
	Term        uint64
	CommitIndex uint64
}

// Status is this node's view of the election.
type Status struct {
	// RedLeader is true while this node may act as Red Leader: it holds
	// the newest seat it knows of and its last check-in is younger than
	// the lease (the fencing rule).
	RedLeader bool
	Seat      RedLeader // the committed seat as this node knows it
	Raft      RaftStatus
}

// Status reports the election as this node sees it.
func (n *Node) Status() Status {
	st := n.summary()
	s := Status{RedLeader: n.IsRedLeader(), Seat: st.RedLeader}
	n.mu.Lock()
	if n.claimActiveLocked(time.Now()) && n.claim.Epoch > s.Seat.Epoch {
		s.Seat = n.claim
	}
	n.mu.Unlock()
	r := n.raftNode()
	if r == nil {
		s.Raft = RaftStatus{State: "member", ClusterID: st.ClusterID, CommitIndex: st.Index}
		for _, m := range n.mem.Members() {
			if m.Status == StatusAlive && m.Head.Role == RoleLeader && m.Head.ClusterID == st.ClusterID {
				s.Raft.Leader = m.Node
			}
		}
		return s
	}
	s.Raft.ClusterID = r.clusterID
	// raft names its states "Leader", "Follower"…: lower-case them, as
	// documented on RaftStatus.State.
	s.Raft.State = strings.ToLower(r.raft.State().String())
	if r.raft.State() == raft.Follower && !r.isVoter(n.cfg.Node) {
		s.Raft.State = "standby"
	}
	_, id := r.raft.LeaderWithID()
	s.Raft.Leader = string(id)
	for _, sv := range r.configuration().Servers {
		if sv.Suffrage == raft.Voter {
			s.Raft.Voters++
		} else {
			s.Raft.Standbys++
		}
	}
	stats := r.raft.Stats()
	s.Raft.Term = parseUint(stats["term"])
	s.Raft.CommitIndex = parseUint(stats["commit_index"])
	return s
}

// Ranking returns the current ranking decision as this node sees it (rank
// and eligibility for every member).
func (n *Node) Ranking() Decision {
	st := n.summary()
	return Rank(st.RedLeader.Node, candidates(n.mem.Members(), st, time.Now(), nil))
}

func parseUint(s string) uint64 {
	var v uint64
	for _, c := range s {
		if c < '0' || c > '9' {
			return v
		}
		v = v*10 + uint64(c-'0')
	}
	return v
}
