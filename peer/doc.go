// Package peer is the redleader agent: it wires the subnet's gossip pool
// (memberlist), the LAN beacon, the election, the peer port (Raft, the
// election's cluster RPC and MS-PCCRR on one TCP port), the segment cache,
// MS-PCCRD discovery and the local HTTP API together and owns their
// lifecycles (New → Start → Close). See DESIGN.md.
package peer
