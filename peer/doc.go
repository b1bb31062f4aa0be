// Package peer is the redleader agent: it wires membership, election,
// discovery, shaping and the local HTTP API together and owns their
// lifecycles (New → Start → Close).
package peer
