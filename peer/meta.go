package peer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/redleader-p2p/redleader/election"
)

// metaVersion is the layout version of the gossip node metadata. Newer
// versions only append fields, so an older agent decodes the prefix it
// knows and ignores the rest.
const metaVersion = 1

// maxMetaString bounds each string field so that the whole metadata stays
// well under memberlist's 512-byte limit.
const maxMetaString = 64

// ErrBadMeta is returned for node metadata that cannot be decoded.
var ErrBadMeta = errors.New("bad node metadata")

// Meta flags.
const (
	flagNotLeaderMaterial = 1 << iota
	flagLeaving           // the node is shutting down gracefully
	flagRoaming           // the node is leaving this subnet for another one
	flagVoterOptOut       // election.voter: never
)

// Priority is the priority of a node's highest active job (the election's
// ranking input).
type Priority = election.Priority

// Job priorities, lowest first.
const (
	PriorityNone       = election.PriorityNone
	PriorityLow        = election.PriorityLow
	PriorityNormal     = election.PriorityNormal
	PriorityHigh       = election.PriorityHigh
	PriorityForeground = election.PriorityForeground
)

// Meta is what an agent publishes about itself in gossip: the ranking
// inputs of DESIGN.md and what others need to reach it. It changes rarely
// (uptime is derived from Boot, not republished).
type Meta struct {
	NotLeaderMaterial bool
	// Leaving and Roaming are set just before a graceful Leave, so that
	// peers can tell "left" (or "moved away") from "died": memberlist
	// itself does not tell its event delegate which one happened.
	Leaving      bool
	Roaming      bool
	Priority     Priority
	ProtoVersion uint8  // 1 = PCCRC v1, 2 = v1+v2
	Progress     uint64 // bytes held of the highest-priority job's content
	Boot         time.Time
	PeerPort     uint16
	Name         string
	Location     string
	Subnet       string

	// The election head and voter inputs.
	VoterOptOut bool
	Class       uint8  // election.MachineClass
	Role        uint8  // election.Role
	StateIndex  uint64 // election state index this node holds
	ClusterID   string // its election cluster
}

// Uptime is how long the node has been running, as of now.
func (m Meta) Uptime(now time.Time) time.Duration {
	if m.Boot.IsZero() || now.Before(m.Boot) {
		return 0
	}
	return now.Sub(m.Boot)
}

// encode serializes m: version, flags, priority, protocol version,
// progress (8), boot unix ms (8), peer port (2), then three
// length-prefixed strings (name, location, subnet).
func (m Meta) encode() []byte {
	b := make([]byte, 0, 24+3*(1+maxMetaString))
	var flags byte
	if m.NotLeaderMaterial {
		flags |= flagNotLeaderMaterial
	}
	if m.Leaving {
		flags |= flagLeaving
	}
	if m.Roaming {
		flags |= flagRoaming
	}
	if m.VoterOptOut {
		flags |= flagVoterOptOut
	}
	b = append(b, metaVersion, flags, byte(m.Priority), m.ProtoVersion)
	b = binary.BigEndian.AppendUint64(b, m.Progress)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Boot.UnixMilli()))
	b = binary.BigEndian.AppendUint16(b, m.PeerPort)
	b = appendString(b, m.Name)
	b = appendString(b, m.Location)
	b = appendString(b, m.Subnet)
	b = append(b, m.Class, m.Role)
	b = binary.BigEndian.AppendUint64(b, m.StateIndex)
	return appendString(b, m.ClusterID)
}

func appendString(b []byte, s string) []byte {
	if len(s) > maxMetaString {
		s = s[:maxMetaString]
	}
	b = append(b, byte(len(s)))
	return append(b, s...)
}

// readString reads one length-prefixed string.
func readString(b []byte) (string, []byte, error) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return "", nil, fmt.Errorf("%w: truncated string", ErrBadMeta)
	}
	return string(b[1 : 1+b[0]]), b[1+b[0]:], nil
}

// decodeMeta parses metadata from another agent. Unknown trailing bytes
// (fields added by newer versions) are ignored.
func decodeMeta(b []byte) (Meta, error) {
	const fixed = 4 + 8 + 8 + 2
	if len(b) < fixed {
		return Meta{}, fmt.Errorf("%w: %d bytes", ErrBadMeta, len(b))
	}
	if b[0] == 0 {
		return Meta{}, fmt.Errorf("%w: version 0", ErrBadMeta)
	}
	m := Meta{
		NotLeaderMaterial: b[1]&flagNotLeaderMaterial != 0,
		Leaving:           b[1]&flagLeaving != 0,
		Roaming:           b[1]&flagRoaming != 0,
		VoterOptOut:       b[1]&flagVoterOptOut != 0,
		Priority:          Priority(b[2]),
		ProtoVersion:      b[3],
		Progress:          binary.BigEndian.Uint64(b[4:]),
		Boot:              time.UnixMilli(int64(binary.BigEndian.Uint64(b[12:]))),
		PeerPort:          binary.BigEndian.Uint16(b[20:]),
	}
	rest := b[fixed:]
	var err error
	for _, dst := range []*string{&m.Name, &m.Location, &m.Subnet} {
		if *dst, rest, err = readString(rest); err != nil {
			return Meta{}, err
		}
	}
	if len(rest) < 10 {
		return Meta{}, fmt.Errorf("%w: truncated election head", ErrBadMeta)
	}
	m.Class, m.Role = rest[0], rest[1]
	m.StateIndex = binary.BigEndian.Uint64(rest[2:])
	if m.ClusterID, _, err = readString(rest[10:]); err != nil {
		return Meta{}, err
	}
	return m, nil
}
