// Package shaping holds the WAN and LAN rate limiters and parses rate
// strings such as "50Mbit", "256kbit" and "0" (unlimited).
package shaping
