package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// maxAuthorityLen caps the authority the parser looks at: a 253-byte DNS
// name, or a bracketed IPv6 literal, plus a port fits well within it.
const maxAuthorityLen = 300

// ErrBadAuthority is wrapped by every error ParseAuthority returns.
var ErrBadAuthority = errors.New("bad authority")

// AuthorityError says why an authority (or allowlist entry) was rejected.
type AuthorityError struct {
	Authority string // the input, truncated for display
	Reason    string
}

func (e *AuthorityError) Error() string {
	return fmt.Sprintf("bad authority %q: %s", e.Authority, e.Reason)
}

func (e *AuthorityError) Unwrap() error { return ErrBadAuthority }

func authorityError(s, reason string) error {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return &AuthorityError{Authority: s, Reason: reason}
}

// ParseAuthority parses "host", "host:port", "[ipv6]" or "[ipv6]:port"
// strictly. The host comes back normalised: a DNS name in lower case with
// any trailing dot removed, an IPv4 literal in dotted-decimal form, an
// IPv6 literal in its canonical form without brackets. When the authority
// has no port, port is defaultPort (which may be 0, meaning "none given").
//
// It rejects an empty host, userinfo ("user@host"), unbracketed IPv6,
// IPv6 zones, spaces and other bytes that cannot appear in a host name,
// ports that are empty, not canonical decimal, 0 or above 65535, and names
// whose last label is numeric ("127.1", "0x7f000001"), which some
// resolvers would read as IPv4 addresses.
func ParseAuthority(authority string, defaultPort uint16) (host string, port uint16, err error) {
	s := authority
	if s == "" {
		return "", 0, authorityError(authority, "empty")
	}
	if len(s) > maxAuthorityLen {
		return "", 0, authorityError(authority, "too long")
	}
	if strings.ContainsRune(s, '@') {
		return "", 0, authorityError(authority, "userinfo is not allowed")
	}
	hostPart, portPart, hasPort := "", "", false
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", 0, authorityError(authority, "missing ] after IPv6 literal")
		}
		hostPart = s[1:end]
		switch rest := s[end+1:]; {
		case rest == "":
		case rest[0] == ':':
			portPart, hasPort = rest[1:], true
		default:
			return "", 0, authorityError(authority, "unexpected text after ]")
		}
		host, err = parseBracketedIPv6(hostPart)
		if err != nil {
			return "", 0, authorityError(authority, err.Error())
		}
	} else {
		switch strings.Count(s, ":") {
		case 0:
			hostPart = s
		case 1:
			i := strings.IndexByte(s, ':')
			hostPart, portPart, hasPort = s[:i], s[i+1:], true
		default:
			return "", 0, authorityError(authority, "IPv6 literals must be in brackets, as in [2001:db8::1]:443")
		}
		host, err = normaliseHost(hostPart)
		if err != nil {
			return "", 0, authorityError(authority, err.Error())
		}
	}
	port = defaultPort
	if hasPort {
		port, err = parsePort(portPart)
		if err != nil {
			return "", 0, authorityError(authority, err.Error())
		}
	}
	return host, port, nil
}

func parseBracketedIPv6(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty IPv6 literal")
	}
	if strings.ContainsRune(s, '%') {
		return "", errors.New("IPv6 zones are not allowed")
	}
	addr, err := netip.ParseAddr(s)
	if err != nil || !addr.Is6() {
		return "", errors.New("not an IPv6 address inside brackets")
	}
	return addr.String(), nil
}

func parsePort(s string) (uint16, error) {
	if s == "" {
		return 0, errors.New("empty port")
	}
	if len(s) > 5 || (len(s) > 1 && s[0] == '0') {
		return 0, errors.New("port must be a decimal number from 1 to 65535")
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, errors.New("port must be a decimal number from 1 to 65535")
		}
		n = n*10 + int(c-'0')
	}
	if n == 0 || n > 65535 {
		return 0, errors.New("port must be a decimal number from 1 to 65535")
	}
	return uint16(n), nil
}

// normaliseHost validates an unbracketed host (a DNS name or an IPv4
// literal) and returns its normal form.
func normaliseHost(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty host")
	}
	if addr, err := netip.ParseAddr(s); err == nil {
		if !addr.Is4() {
			return "", errors.New("IPv6 literals must be in brackets")
		}
		return addr.String(), nil
	}
	name := strings.ToLower(strings.TrimSuffix(s, "."))
	if name == "" {
		return "", errors.New("empty host")
	}
	if len(name) > 253 {
		return "", errors.New("host name longer than 253 bytes")
	}
	var last string
	for label := range strings.SplitSeq(name, ".") {
		if err := checkLabel(label); err != nil {
			return "", err
		}
		last = label
	}
	if isNumericLabel(last) {
		return "", errors.New("numeric last label: not a host name, and not a canonical IPv4 address")
	}
	return name, nil
}

// checkLabel accepts the letters-digits-hyphen labels of RFC 1123, plus
// '_' (found in real service names). Hyphens may not begin or end a label.
func checkLabel(label string) error {
	if label == "" {
		return errors.New("empty label in host name")
	}
	if len(label) > 63 {
		return errors.New("host name label longer than 63 bytes")
	}
	for i := 0; i < len(label); i++ {
		c := label[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("byte %q is not allowed in a host name", c)
		}
	}
	if label[0] == '-' || label[len(label)-1] == '-' {
		return errors.New("host name label begins or ends with '-'")
	}
	return nil
}

// isNumericLabel reports labels that resolvers may parse as part of an
// IPv4 address: all decimal digits, or 0x followed by hex digits.
func isNumericLabel(label string) bool {
	digits := label
	hex := false
	if strings.HasPrefix(label, "0x") {
		digits, hex = label[2:], true
	}
	for i := 0; i < len(digits); i++ {
		c := digits[i]
		if !('0' <= c && c <= '9' || hex && 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
