// Package shaping parses the bandwidth rates of the config and of the
// committed policy: strings such as "50Mbit", "256kbit", "1.5MB" and "0"
// (unlimited). No rate is enforced yet: the WAN and LAN limiters are not
// built, so today a rate is only validated, stored and shown.
package shaping
