package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Allowlist is a parsed network.allowHosts list. The zero value allows
// nothing.
type Allowlist struct {
	entries []allowEntry
}

// allowEntry is one parsed allowlist entry.
type allowEntry struct {
	text     string     // the entry as configured, for decision reasons
	name     string     // normalised DNS name (or suffix, for wildcards)
	wildcard bool       // "*.name": strict subdomains of name only
	addr     netip.Addr // valid for IP-literal entries
	port     uint16     // 0: any port
}

// ParseAllowlist parses allowlist entries. Each entry is one of
//
//	example.com          the exact name, any port
//	example.com:8443     the exact name, that port only
//	*.example.com        any strict subdomain (not example.com itself)
//	*.example.com:443    likewise, one port
//	192.0.2.7, [2001:db8::1], [::1]:8443   an IP literal (and port)
//
// Names match case-insensitively and without a trailing dot. An IP literal
// entry is the only way to reach a loopback, private or otherwise special
// address named by that literal (see Config). Entries that are malformed,
// bare "*", wildcards elsewhere than the first label, URLs, unbracketed
// IPv6 and unspecified, multicast or broadcast addresses are rejected, each
// with its own error; all errors are joined.
func ParseAllowlist(entries []string) (*Allowlist, error) {
	a := &Allowlist{}
	var errs []error
	for _, text := range entries {
		e, err := parseAllowEntry(text)
		if err != nil {
			errs = append(errs, fmt.Errorf("allowlist entry %q: %w", truncate(text, 64), err))
			continue
		}
		a.entries = append(a.entries, e)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return a, nil
}

func parseAllowEntry(text string) (allowEntry, error) {
	s := strings.TrimSpace(text)
	switch {
	case s == "":
		return allowEntry{}, errors.New("empty entry")
	case s == "*" || strings.HasPrefix(s, "*:"):
		return allowEntry{}, errors.New(`"*" is not an entry; set defaultDeny to false to allow every host`)
	case strings.Contains(s, "://"):
		return allowEntry{}, errors.New("give a host or host:port, not a URL")
	case strings.Contains(s, "/"):
		return allowEntry{}, errors.New("give a host or host:port, not a path or prefix")
	}
	e := allowEntry{text: s}
	if rest, ok := strings.CutPrefix(s, "*."); ok {
		e.wildcard = true
		s = rest
	}
	if strings.ContainsRune(s, '*') {
		return allowEntry{}, errors.New(`a wildcard may only be a leading "*." label`)
	}
	host, port, err := ParseAuthority(s, 0)
	if err != nil {
		var ae *AuthorityError
		if errors.As(err, &ae) {
			return allowEntry{}, errors.New(ae.Reason)
		}
		return allowEntry{}, err
	}
	e.port = port
	if addr, err := netip.ParseAddr(host); err == nil {
		if e.wildcard {
			return allowEntry{}, errors.New("a wildcard cannot apply to an IP address")
		}
		if addr.IsUnspecified() || addr.IsMulticast() || addr == broadcastV4 {
			return allowEntry{}, fmt.Errorf("%s is not a destination address", addr)
		}
		e.addr = addr
		return e, nil
	}
	e.name = host
	return e, nil
}

// Match reports whether the normalised host (as returned by ParseAuthority)
// and port are allowed, and by which entry. explicitIP is true when the
// matching entry is an IP literal equal to host: only then may the proxy
// connect to a special (loopback, private, …) address.
func (a *Allowlist) Match(host string, port uint16) (entry string, explicitIP, ok bool) {
	return a.match(host, port, false)
}

func (a *Allowlist) match(host string, port uint16, anyPort bool) (entry string, explicitIP, ok bool) {
	if a == nil {
		return "", false, false
	}
	addr, err := netip.ParseAddr(host)
	isAddr := err == nil
	for _, e := range a.entries {
		if !anyPort && e.port != 0 && e.port != port {
			continue
		}
		switch {
		case e.addr.IsValid():
			if isAddr && addr == e.addr {
				return e.text, true, true
			}
		case isAddr:
			// Names never match IP literals.
		case e.wildcard:
			if len(host) > len(e.name)+1 && strings.HasSuffix(host, e.name) && host[len(host)-len(e.name)-1] == '.' {
				return e.text, false, true
			}
		default:
			if host == e.name {
				return e.text, false, true
			}
		}
	}
	return "", false, false
}

// Len reports the number of entries.
func (a *Allowlist) Len() int {
	if a == nil {
		return 0
	}
	return len(a.entries)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// matchIgnoringPort reports whether some entry would match host on some
// port; it explains refusals that are only about the port.
func (a *Allowlist) matchIgnoringPort(host string) (entry string, explicitIP, ok bool) {
	return a.match(host, 0, true)
}
