package peer

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
)

// ErrNoInterface means no usable primary interface was found.
var ErrNoInterface = errors.New("no usable network interface (set subnet and advertise_addr)")

// skippedPrefixes are interface name prefixes of VPNs, tunnels and
// container or VM bridges: never the machine's LAN.
var skippedPrefixes = []string{
	"docker", "br-", "virbr", "veth", "cni", "flannel", "cali", "vxlan", "tun", "tap",
	"wg", "tailscale", "utun", "zt", "vmnet", "vboxnet", "lxc", "lxd", "podman", "kube",
	"ppp", "ipsec", "gif", "stf", "awdl", "llw",
}

// homeAddr is where the agent lives on the LAN: its address and subnet.
type homeAddr struct {
	Iface  string
	Addr   netip.Addr
	Subnet netip.Prefix
}

// usableIface reports whether an interface can be the primary one.
func usableIface(ifc net.Interface) bool {
	if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 || ifc.Flags&net.FlagPointToPoint != 0 {
		return false
	}
	name := strings.ToLower(ifc.Name)
	for _, p := range skippedPrefixes {
		if strings.HasPrefix(name, p) {
			return false
		}
	}
	return true
}

// ifaceIPv4 returns the first global-unicast IPv4 address of ifc and its prefix.
func ifaceIPv4(ifc net.Interface) (netip.Addr, netip.Prefix, bool) {
	addrs, err := ifc.Addrs()
	if err != nil {
		return netip.Addr{}, netip.Prefix{}, false
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if !ip.Is4() || !ip.IsGlobalUnicast() {
			continue
		}
		ones, _ := ipn.Mask.Size()
		return ip, netip.PrefixFrom(ip, ones).Masked(), true
	}
	return netip.Addr{}, netip.Prefix{}, false
}

// findHome picks the primary interface: the one named (if any), else the
// one carrying the IPv4 default route, else the first usable interface
// with an IPv4 address (lowest index).
func findHome(named string) (homeAddr, error) {
	ifcs, err := net.Interfaces()
	if err != nil {
		return homeAddr{}, fmt.Errorf("list interfaces: %w", err)
	}
	if named != "" {
		for _, ifc := range ifcs {
			if ifc.Name == named {
				if ip, pfx, ok := ifaceIPv4(ifc); ok {
					return homeAddr{Iface: ifc.Name, Addr: ip, Subnet: pfx}, nil
				}
				return homeAddr{}, fmt.Errorf("interface %s has no IPv4 address: %w", named, ErrNoInterface)
			}
		}
		return homeAddr{}, fmt.Errorf("interface %s not found: %w", named, ErrNoInterface)
	}
	def := defaultRouteIface()
	sort.Slice(ifcs, func(i, j int) bool {
		if (ifcs[i].Name == def) != (ifcs[j].Name == def) {
			return ifcs[i].Name == def
		}
		return ifcs[i].Index < ifcs[j].Index
	})
	for _, ifc := range ifcs {
		if !usableIface(ifc) {
			continue
		}
		if ip, pfx, ok := ifaceIPv4(ifc); ok {
			return homeAddr{Iface: ifc.Name, Addr: ip, Subnet: pfx}, nil
		}
	}
	return homeAddr{}, ErrNoInterface
}
