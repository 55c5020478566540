package egress

import (
	"net/netip"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		addr, want string
	}{
		{"8.8.8.8", ""},
		{"93.184.216.34", ""},
		{"2606:4700::1111", ""},
		{"::ffff:8.8.8.8", ""},
		{"64:ff9b::808:808", ""}, // NAT64 of 8.8.8.8
		{"2002:808:808::1", ""},  // 6to4 of 8.8.8.8
		{"127.0.0.1", "loopback"},
		{"127.255.255.254", "loopback"},
		{"::1", "loopback"},
		{"10.0.0.1", "private"},
		{"172.16.0.1", "private"},
		{"172.31.255.255", "private"},
		{"172.32.0.1", ""},
		{"192.168.1.1", "private"},
		{"fc00::1", "private (unique local)"},
		{"fd12:3456::1", "private (unique local)"},
		{"169.254.1.1", "link-local"},
		{"fe80::1", "link-local"},
		{"169.254.169.254", "cloud metadata"},
		{"fd00:ec2::254", "cloud metadata"},
		{"100.64.0.1", "carrier-grade NAT"},
		{"100.127.255.255", "carrier-grade NAT"},
		{"100.128.0.1", ""},
		{"0.0.0.0", "unspecified (this-network)"},
		{"::", "unspecified"},
		{"224.0.0.1", "multicast"},
		{"ff02::1", "multicast"},
		{"255.255.255.255", "broadcast"},
		{"240.0.0.1", "reserved"},
		{"192.0.2.1", "documentation"},
		{"2001:db8::1", "documentation"},
		{"::ffff:127.0.0.1", "loopback (IPv4-mapped)"},
		{"::ffff:10.1.2.3", "private (IPv4-mapped)"},
		{"::ffff:169.254.169.254", "cloud metadata (IPv4-mapped)"},
		{"::127.0.0.1", "IPv4-compatible (deprecated)"},
		{"::8.8.8.8", "IPv4-compatible (deprecated)"},
		{"64:ff9b::7f00:1", "loopback (embedded in 64:ff9b::7f00:1)"},
		{"2002:a00:1::", "private (embedded in 2002:a00:1::)"},
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", "IETF protocol assignment (Teredo and others)"},
		{"fe80::1%eth0", "zoned (link-scoped)"},
	}
	for _, tt := range tests {
		if got := classify(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("classify(%s) = %q, want %q", tt.addr, got, tt.want)
		}
	}
	if got := classify(netip.Addr{}); got != "invalid" {
		t.Errorf("classify(zero) = %q, want invalid", got)
	}
}

func TestVetAddrs(t *testing.T) {
	addrs := func(ss ...string) []netip.Addr {
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out
	}
	corp := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
	tests := []struct {
		name     string
		addrs    []netip.Addr
		prefixes []netip.Prefix
		viaName  bool
		want     string
	}{
		{"public", addrs("8.8.8.8", "2606:4700::1111"), nil, true, ""},
		{"mixed refused", addrs("8.8.8.8", "10.0.0.1"), nil, true, "resolves to private address 10.0.0.1"},
		{"literal wording", addrs("127.0.0.1"), nil, false, "loopback address 127.0.0.1"},
		{"prefix allows", addrs("10.1.2.3"), corp, true, ""},
		{"prefix allows mapped", addrs("::ffff:10.1.2.3"), corp, true, ""},
		{"prefix is narrow", addrs("10.1.2.3", "10.2.0.1"), corp, true, "resolves to private address 10.2.0.1"},
	}
	for _, tt := range tests {
		if got := vetAddrs(tt.addrs, tt.prefixes, tt.viaName); got != tt.want {
			t.Errorf("%s: vetAddrs = %q, want %q", tt.name, got, tt.want)
		}
	}
}
