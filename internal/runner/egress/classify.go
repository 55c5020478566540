package egress

import (
	"fmt"
	"net/netip"
)

var broadcastV4 = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// addrClass names a kind of address the proxy refuses to reach unless told
// to explicitly.
type specialRange struct {
	prefix netip.Prefix
	class  string
}

// specialRanges lists refused destinations, most specific first. The
// IPv4-mapped (::ffff:0:0/96) range is handled by unmapping, and the
// ranges that embed an IPv4 address by classifying the embedded address.
var specialRanges = []specialRange{
	// IPv4
	{netip.MustParsePrefix("169.254.169.254/32"), "cloud metadata"},
	{netip.MustParsePrefix("255.255.255.255/32"), "broadcast"},
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified (this-network)"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private"},
	{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignment"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation"},
	{netip.MustParsePrefix("192.88.99.0/24"), "6to4 relay anycast"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	// IPv6
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("::/96"), "IPv4-compatible (deprecated)"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "local-use NAT64"},
	{netip.MustParsePrefix("100::/64"), "discard-only"},
	{netip.MustParsePrefix("2001::/23"), "IETF protocol assignment (Teredo and others)"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation"},
	{netip.MustParsePrefix("3fff::/20"), "documentation"},
	{netip.MustParsePrefix("5f00::/16"), "segment routing SIDs"},
	{netip.MustParsePrefix("fd00:ec2::254/128"), "cloud metadata"},
	{netip.MustParsePrefix("fc00::/7"), "private (unique local)"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("fec0::/10"), "site-local (deprecated)"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

var (
	nat64Prefix = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour   = netip.MustParsePrefix("2002::/16")
)

// classify returns "" for an address the proxy may connect to, or the kind
// of special address it is ("loopback", "private", …). Addresses carrying
// an IPv4 address (IPv4-mapped, NAT64, 6to4) are judged by that address,
// so ::ffff:127.0.0.1 is loopback.
func classify(addr netip.Addr) string {
	if !addr.IsValid() {
		return "invalid"
	}
	if addr.Zone() != "" {
		return "zoned (link-scoped)"
	}
	if addr.Is4In6() {
		if c := classify(addr.Unmap()); c != "" {
			return c + " (IPv4-mapped)"
		}
		return ""
	}
	if embedded, ok := embeddedIPv4(addr); ok {
		if c := classify(embedded); c != "" {
			return c + " (embedded in " + addr.String() + ")"
		}
		return ""
	}
	for _, r := range specialRanges {
		if r.prefix.Contains(addr) {
			return r.class
		}
	}
	return ""
}

// embeddedIPv4 extracts the IPv4 address carried by a NAT64 (64:ff9b::/96)
// or 6to4 (2002::/16) address.
func embeddedIPv4(addr netip.Addr) (netip.Addr, bool) {
	b := addr.As16()
	switch {
	case nat64Prefix.Contains(addr):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixToFour.Contains(addr):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}

// vetAddrs checks every resolved address. It returns the reason for
// refusing the first address that is special and not covered by an
// allowed prefix, or "" when all may be reached. A name is refused as a
// whole if any of its addresses is special: the proxy does not pick the
// harmless one, because the answer itself shows the name is not what it
// seems.
func vetAddrs(addrs []netip.Addr, allowPrefixes []netip.Prefix, viaName bool) string {
	for _, a := range addrs {
		class := classify(a)
		if class == "" || inPrefixes(a, allowPrefixes) {
			continue
		}
		if viaName {
			return fmt.Sprintf("resolves to %s address %s", class, a)
		}
		return fmt.Sprintf("%s address %s", class, a)
	}
	return ""
}

func inPrefixes(a netip.Addr, prefixes []netip.Prefix) bool {
	u := a.Unmap()
	for _, p := range prefixes {
		if p.Contains(a) || p.Contains(u) {
			return true
		}
	}
	return false
}
