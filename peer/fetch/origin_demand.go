package fetch

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
)

// Resolver resolves host names; *net.Resolver is one. Tests pass a map.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// CheckDemandURL reports whether the Red Leader may fetch u for a peer's
// demand: an absolute http or https URL without user info (a demand
// carries no credentials) whose host is, and resolves (with r, bound to
// ctx) only to, addresses CheckDemandAddr allows. A host that does not
// resolve is refused too. It returns nil, or an error wrapping
// ErrDemandURL or ErrDemandAddr (or the resolver's error).
//
// The check is made before the fetch; the Origin that fetches demanded
// content should also have Options.CheckAddr set, so that a redirect or a
// DNS answer that changed meanwhile cannot reach a forbidden address.
func CheckDemandURL(ctx context.Context, r Resolver, u *url.URL, self []netip.Addr) error {
	if u == nil {
		return fmt.Errorf("%w: no URL", ErrDemandURL)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%w: scheme %.20q is not http or https", ErrDemandURL, u.Scheme)
	case u.User != nil:
		return fmt.Errorf("%w: %s carries user info", ErrDemandURL, redact(u))
	case u.Opaque != "" || u.Hostname() == "":
		return fmt.Errorf("%w: %s has no host", ErrDemandURL, redact(u))
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return fmt.Errorf("%w: %s has a bad port", ErrDemandURL, redact(u))
		}
	}
	host := u.Hostname()
	addrs := make([]netip.Addr, 0, 1)
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = append(addrs, a)
	} else {
		if r == nil {
			return fmt.Errorf("%w: no resolver for %.100q", ErrDemandAddr, host)
		}
		if addrs, err = r.LookupNetIP(ctx, "ip", host); err != nil {
			return fmt.Errorf("resolve demanded host %.100q: %w", host, err)
		}
		if len(addrs) == 0 {
			return fmt.Errorf("%w: %.100q resolves to no address", ErrDemandAddr, host)
		}
	}
	for _, a := range addrs {
		if err := CheckDemandAddr(a, self); err != nil {
			return fmt.Errorf("host %.100q: %w", host, err)
		}
	}
	return nil
}

// CheckDemandAddr reports whether the Red Leader may connect to a for a
// demand: never an unspecified, loopback, link-local, multicast,
// broadcast or 0.0.0.0/8 address, nor one of self (the agent's own
// addresses). IPv4-mapped IPv6 addresses are checked as IPv4, zones are
// ignored. It returns nil or an error wrapping ErrDemandAddr.
func CheckDemandAddr(a netip.Addr, self []netip.Addr) error {
	a = a.Unmap().WithZone("")
	var why string
	switch {
	case !a.IsValid():
		return fmt.Errorf("%w: no address", ErrDemandAddr)
	case a.IsUnspecified():
		why = "unspecified"
	case a.IsLoopback():
		why = "a loopback address"
	case a.IsLinkLocalUnicast():
		why = "a link-local address"
	case a.IsMulticast():
		why = "a multicast address"
	case a.Is4() && a.As4()[0] == 0:
		why = "in 0.0.0.0/8 (this host)"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		why = "the broadcast address"
	default:
		for _, s := range self {
			if s.Unmap().WithZone("") == a {
				why = "this agent's own address"
				break
			}
		}
	}
	if why != "" {
		return fmt.Errorf("%w: %s is %s", ErrDemandAddr, a, why)
	}
	return nil
}
