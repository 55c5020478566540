package egress

import (
	"errors"
	"strings"
	"testing"
)

func TestParseAuthority(t *testing.T) {
	tests := []struct {
		in       string
		def      uint16
		wantHost string
		wantPort uint16
	}{
		{"example.com:443", 443, "example.com", 443},
		{"example.com", 443, "example.com", 443},
		{"example.com", 80, "example.com", 80},
		{"example.com", 0, "example.com", 0},
		{"Example.COM.:8443", 443, "example.com", 8443},
		{"a-b_c.example:1", 443, "a-b_c.example", 1},
		{"x:65535", 443, "x", 65535},
		{"127.0.0.1:8080", 443, "127.0.0.1", 8080},
		{"127.0.0.1", 80, "127.0.0.1", 80},
		{"[2001:db8::1]", 443, "2001:db8::1", 443},
		{"[2001:DB8:0::1]:8443", 443, "2001:db8::1", 8443},
		{"[::1]:8443", 443, "::1", 8443},
		{"[::ffff:127.0.0.1]:1", 443, "::ffff:127.0.0.1", 1},
		{"localhost:22", 443, "localhost", 22},
	}
	for _, tt := range tests {
		host, port, err := ParseAuthority(tt.in, tt.def)
		if err != nil || host != tt.wantHost || port != tt.wantPort {
			t.Errorf("ParseAuthority(%q, %d) = %q, %d, %v; want %q, %d", tt.in, tt.def, host, port, err, tt.wantHost, tt.wantPort)
		}
	}
}

func TestParseAuthorityRejects(t *testing.T) {
	tests := []struct{ in, reason string }{
		{"", "empty"},
		{":443", "empty host"},
		{"[]:443", "empty IPv6"},
		{"example.com:", "empty port"},
		{"example.com:0", "1 to 65535"},
		{"example.com:65536", "1 to 65535"},
		{"example.com:99999", "1 to 65535"},
		{"example.com:123456", "1 to 65535"},
		{"example.com:+80", "1 to 65535"},
		{"example.com:-1", "1 to 65535"},
		{"example.com:080", "1 to 65535"},
		{"example.com:http", "1 to 65535"},
		{"exa mple.com:443", "not allowed in a host name"},
		{" example.com:443", "not allowed in a host name"},
		{"example.com\t", "not allowed in a host name"},
		{"user@example.com:443", "userinfo"},
		{"user:pw@example.com", "userinfo"},
		{"::1", "brackets"},
		{"2001:db8::1:443", "brackets"},
		{"[::1", "missing ]"},
		{"[::1]x", "unexpected text"},
		{"[::1]:", "empty port"},
		{"[127.0.0.1]:443", "not an IPv6"},
		{"[example.com]:443", "not an IPv6"},
		{"[fe80::1%25eth0]:443", "zones"},
		{"[fe80::1%eth0]:443", "zones"},
		{"a..b", "empty label"},
		{".example.com", "empty label"},
		{"example.com..", "empty label"},
		{".", "empty host"},
		{"-a.example", "'-'"},
		{"a-.example", "'-'"},
		{"127.1", "numeric last label"},
		{"0x7f000001", "numeric last label"},
		{"2130706433:80", "numeric last label"},
		{"010.0.0.1", "numeric last label"},
		{"1.2.3.4.", "numeric last label"},
		{"host/path", "not allowed in a host name"},
		{"ex\u00e4mple.com", "not allowed in a host name"},
		{"*.example.com", "not allowed in a host name"},
		{strings.Repeat("a", 64) + ".com", "longer than 63"},
		{strings.Repeat("abcdefg.", 32) + "com", "longer than 253"},
		{strings.Repeat("a", 301), "too long"},
	}
	for _, tt := range tests {
		host, port, err := ParseAuthority(tt.in, 443)
		if err == nil {
			t.Errorf("ParseAuthority(%q) = %q, %d; want error containing %q", tt.in, host, port, tt.reason)
			continue
		}
		if !errors.Is(err, ErrBadAuthority) {
			t.Errorf("ParseAuthority(%q) error %v does not wrap ErrBadAuthority", tt.in, err)
		}
		if !strings.Contains(err.Error(), tt.reason) {
			t.Errorf("ParseAuthority(%q) error %q; want it to contain %q", tt.in, err, tt.reason)
		}
	}
}
