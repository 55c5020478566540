package egress

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseAuthority checks that ParseAuthority never panics and that what
// it accepts is normal: a host with no port, brackets, spaces, userinfo or
// upper case; an IP host in canonical form; a non-zero port unless
// defaulted to 0; and re-formatting the result parses back to itself.
func FuzzParseAuthority(f *testing.F) {
	for _, s := range []string{
		"example.com:443", "Example.COM.", "[2001:db8::1]:8443", "[::1]", "127.0.0.1:80",
		"host:0", "host:65536", "::1", "[::1", "user@host", "127.1", "0x7f000001",
		"[::ffff:127.0.0.1]:1", "a..b", "[fe80::1%eth0]:1", "é.example", " host",
	} {
		f.Add(s, uint16(443))
	}
	f.Add("example.com", uint16(0))
	f.Fuzz(func(t *testing.T, s string, def uint16) {
		host, port, err := ParseAuthority(s, def)
		if err != nil {
			if host != "" || port != 0 {
				t.Fatalf("error %v with results %q, %d", err, host, port)
			}
			return
		}
		if host == "" || strings.ContainsAny(host, " []@/%\t\r\n") || host != strings.ToLower(host) || strings.HasSuffix(host, ".") {
			t.Fatalf("ParseAuthority(%q) host %q is not normal", s, host)
		}
		if port == 0 && def != 0 {
			t.Fatalf("ParseAuthority(%q, %d) port 0", s, def)
		}
		if addr, err := netip.ParseAddr(host); err == nil {
			if addr.String() != host || addr.Zone() != "" {
				t.Fatalf("ParseAuthority(%q) IP host %q not canonical", s, host)
			}
		} else if len(host) > 253 {
			t.Fatalf("ParseAuthority(%q) name longer than 253 bytes", s)
		}
		again := host
		if port != 0 {
			again = net.JoinHostPort(host, strconv.Itoa(int(port)))
		} else if strings.Contains(host, ":") {
			again = "[" + host + "]"
		}
		h2, p2, err := ParseAuthority(again, def)
		if err != nil || h2 != host || p2 != port {
			t.Fatalf("round trip of %q via %q = %q, %d, %v", s, again, h2, p2, err)
		}
	})
}

// FuzzAllowlist checks the allowlist against properties any correct
// matcher has, for an arbitrary entry and requested authority:
//   - a name entry matches its own host (and wildcard entries never
//     match their apex), on its port or any port if it has none;
//   - matching is insensitive to case and a trailing dot in the request;
//   - only IP-literal entries report explicitIP, and only for that IP;
//   - a name entry never matches an IP literal request;
//   - a wildcard match is always a strict subdomain of the suffix.
func FuzzAllowlist(f *testing.F) {
	for _, s := range [][2]string{
		{"example.com", "example.com:443"},
		{"*.example.com", "a.example.com:443"},
		{"*.example.com", "example.com:443"},
		{"*.example.com:8443", "A.B.Example.Com.:8443"},
		{"api.example.com:443", "api.example.com:80"},
		{"127.0.0.1", "127.0.0.1:8080"},
		{"[::1]:8443", "[::1]:8443"},
		{"[::1]", "[0::1]"},
		{"*", "x:1"},
		{"localhost", "localhost"},
		{"*.com", "com:1"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, entryText, authority string) {
		a, err := ParseAllowlist([]string{entryText})
		if err != nil {
			return
		}
		if a.Len() != 1 {
			t.Fatalf("one entry parsed into %d", a.Len())
		}
		e := a.entries[0]
		// The entry matches what it names.
		if e.addr.IsValid() {
			if _, explicit, ok := a.Match(e.addr.String(), portOr(e.port, 443)); !ok || !explicit {
				t.Fatalf("IP entry %q does not match its own address", entryText)
			}
		} else if !e.wildcard {
			if _, explicit, ok := a.Match(e.name, portOr(e.port, 443)); !ok || explicit {
				t.Fatalf("name entry %q does not match its own name", entryText)
			}
		} else {
			if _, _, ok := a.Match(e.name, portOr(e.port, 443)); ok {
				t.Fatalf("wildcard entry %q matches its apex", entryText)
			}
			if _, _, ok := a.Match("x."+e.name, portOr(e.port, 443)); !ok && len(e.name) < 250 {
				t.Fatalf("wildcard entry %q does not match a subdomain", entryText)
			}
		}

		host, port, err := ParseAuthority(authority, 443)
		if err != nil {
			return
		}
		entry, explicit, ok := a.Match(host, port)
		if ok && entry != e.text {
			t.Fatalf("matched by %q, not the only entry %q", entry, e.text)
		}
		if ok && e.port != 0 && port != e.port {
			t.Fatalf("entry %q matched port %d", entryText, port)
		}
		addr, isAddr := netip.ParseAddr(host)
		if explicit && (!e.addr.IsValid() || !ok || isAddr != nil || addr != e.addr) {
			t.Fatalf("explicitIP for %q against entry %q", authority, entryText)
		}
		if ok && !e.addr.IsValid() && isAddr == nil {
			t.Fatalf("name entry %q matched IP literal %q", entryText, host)
		}
		if ok && e.wildcard && !strings.HasSuffix(host, "."+e.name) {
			t.Fatalf("wildcard %q matched %q", entryText, host)
		}
		// Case and a trailing dot do not change the outcome.
		if isAddr != nil && !strings.HasPrefix(authority, "[") {
			variant := strings.ToUpper(host) + "."
			if port != 443 || strings.Contains(authority, ":") {
				variant += ":" + strconv.Itoa(int(port))
			}
			h2, p2, err := ParseAuthority(variant, 443)
			if err != nil {
				t.Fatalf("variant %q of %q does not parse: %v", variant, authority, err)
			}
			if _, _, ok2 := a.Match(h2, p2); ok2 != ok {
				t.Fatalf("variant %q matched %v, original %q matched %v", variant, ok2, authority, ok)
			}
		}
	})
}

func portOr(p, def uint16) uint16 {
	if p == 0 {
		return def
	}
	return p
}
