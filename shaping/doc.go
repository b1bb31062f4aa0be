// Package shaping parses the bandwidth rates of the config and of the
// committed policy (strings such as "50Mbit", "256kbit", "1.5MB" and "0",
// unlimited) and paces byte streams at them.
//
// A Limiter is a token bucket in bytes on golang.org/x/time/rate whose
// rate can change at any moment, for the goroutines already waiting too;
// its burst is at least one MS-PCCRR block (DefaultMinBurst, 64 KiB).
// Reader and Writer pace an io.Reader (an origin response body on the
// WAN) or an io.Writer (blocks served to LAN peers at lan_rate) through a
// Limiter, a piece at a time, and stop when their context ends. WAN holds
// an agent's one WAN Limiter, shared by all its jobs: its rate is the
// policy's leader rate while the agent holds the Red Leader role and the
// peer rate otherwise.
//
// The agent (peer) builds one WAN, whose Limiter paces its origin
// downloads, and one LAN Limiter, through which its MS-PCCRR server writes
// every block it serves; both follow the committed policy.
package shaping
