// Package election runs the per-subnet Raft group that appoints the Red
// Leader by the ranking rules of DESIGN.md. The ranking rules are a pure
// function with no I/O.
package election
