//go:build !unix

package peer

// fdLimit is not known here: the peer port uses defaultTotalConns.
func fdLimit() (uint64, bool) { return 0, false }
