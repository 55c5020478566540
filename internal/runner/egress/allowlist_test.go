package egress

import (
	"strings"
	"testing"
)

func TestAllowlistMatch(t *testing.T) {
	a, err := ParseAllowlist([]string{
		"Api.Example.com.",
		"*.cdn.example.net",
		"registry.example.org:8443",
		"*.svc.example:443",
		"127.0.0.1",
		"[::1]:8443",
		"192.0.2.10:22",
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host       string
		port       uint16
		wantEntry  string
		explicitIP bool
	}{
		{"api.example.com", 443, "Api.Example.com.", false},
		{"api.example.com", 1, "Api.Example.com.", false},
		{"example.com", 443, "", false},
		{"xapi.example.com", 443, "", false},
		{"sub.api.example.com", 443, "", false}, // exact entries don't cover subdomains
		{"a.cdn.example.net", 443, "*.cdn.example.net", false},
		{"a.b.cdn.example.net", 80, "*.cdn.example.net", false},
		{"cdn.example.net", 443, "", false}, // wildcard excludes the apex
		{"xcdn.example.net", 443, "", false},
		{"registry.example.org", 8443, "registry.example.org:8443", false},
		{"registry.example.org", 443, "", false},
		{"a.svc.example", 443, "*.svc.example:443", false},
		{"a.svc.example", 80, "", false},
		{"127.0.0.1", 9999, "127.0.0.1", true},
		{"127.0.0.2", 9999, "", false},
		{"::ffff:127.0.0.1", 9999, "", false}, // literal entries match exactly
		{"::1", 8443, "[::1]:8443", true},
		{"::1", 443, "", false},
		{"192.0.2.10", 22, "192.0.2.10:22", true},
		{"localhost", 443, "", false},
	}
	for _, tt := range tests {
		entry, explicitIP, ok := a.Match(tt.host, tt.port)
		if entry != tt.wantEntry || ok != (tt.wantEntry != "") || explicitIP != tt.explicitIP {
			t.Errorf("Match(%q, %d) = %q, %v, %v; want %q, %v", tt.host, tt.port, entry, explicitIP, ok, tt.wantEntry, tt.explicitIP)
		}
	}
	var nilList *Allowlist
	if _, _, ok := nilList.Match("example.com", 443); ok {
		t.Error("nil allowlist matched")
	}
}

func TestParseAllowlistRejects(t *testing.T) {
	tests := []struct{ entry, reason string }{
		{"", "empty entry"},
		{"   ", "empty entry"},
		{"*", "defaultDeny"},
		{"*:443", "defaultDeny"},
		{"https://example.com", "not a URL"},
		{"example.com/path", "not a path"},
		{"10.0.0.0/8", "not a path or prefix"},
		{"api.*.example.com", "leading"},
		{"*example.com", "leading"},
		{"*.*.example.com", "leading"},
		{"*.", "empty"},
		{"*.127.0.0.1", "IP address"},
		{"::1", "brackets"},
		{"2001:db8::1", "brackets"},
		{"0.0.0.0", "not a destination"},
		{"[::]", "not a destination"},
		{"224.0.0.1", "not a destination"},
		{"[ff02::1]", "not a destination"},
		{"255.255.255.255", "not a destination"},
		{"example.com:0", "1 to 65535"},
		{"example.com:70000", "1 to 65535"},
		{"user@example.com", "userinfo"},
		{"exa mple.com", "not allowed"},
	}
	for _, tt := range tests {
		_, err := ParseAllowlist([]string{"ok.example", tt.entry})
		if err == nil || !strings.Contains(err.Error(), tt.reason) {
			t.Errorf("ParseAllowlist(%q) error = %v; want one containing %q", tt.entry, err, tt.reason)
		}
	}
	// Every bad entry is reported, not only the first.
	_, err := ParseAllowlist([]string{"*", "ok.example", "::1"})
	if err == nil || !strings.Contains(err.Error(), `"*"`) || !strings.Contains(err.Error(), `"::1"`) {
		t.Errorf("joined error = %v; want both bad entries named", err)
	}
}
