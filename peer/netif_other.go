//go:build !linux

package peer

// defaultRouteIface is not known on this platform; findHome falls back to
// the first usable interface.
func defaultRouteIface() string { return "" }
