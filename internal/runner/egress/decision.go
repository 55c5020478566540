package egress

import (
	"log/slog"
	"net/netip"
)

// Decision is the record of one connection attempt. The runner turns it
// into a network.connected event; Host is that event's host.
type Decision struct {
	// Method is "CONNECT" for tunnels, else the HTTP method.
	Method string
	// Authority is the requested host[:port] as received, truncated to 128
	// bytes. It never contains a path or query. It is the only trace of the
	// target when Host is empty because the authority did not parse.
	Authority string
	// Host is the normalised host the agent asked for, without port:
	// lower-case name without trailing dot, or canonical IP (IPv6 without
	// brackets). Empty when the authority was malformed.
	Host string
	// Port is the requested port (443 by default for CONNECT, 80 for
	// http URLs); 0 when the authority was malformed.
	Port uint16
	// Allowed is the policy's verdict.
	Allowed bool
	// Reason explains the verdict for people, e.g. "host not in allowlist"
	// or "resolves to loopback address 127.0.0.1".
	Reason string
	// Addrs are the vetted addresses the proxy will try, in order, when
	// Allowed. Every one of them passed classification.
	Addrs []netip.AddrPort
}

// Protocol returns the decision as the protocol spells it in
// network.connected events: "allowed" or "blocked".
func (d Decision) Protocol() string {
	if d.Allowed {
		return "allowed"
	}
	return "blocked"
}

// LogValue makes a Decision log as a group of its fields.
func (d Decision) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("method", d.Method),
		slog.String("host", d.Host),
		slog.Int("port", int(d.Port)),
		slog.String("decision", d.Protocol()),
		slog.String("reason", d.Reason),
	}
	if d.Host == "" {
		attrs = append(attrs, slog.String("authority", d.Authority))
	}
	if len(d.Addrs) > 0 {
		attrs = append(attrs, slog.Any("addrs", d.Addrs))
	}
	return slog.GroupValue(attrs...)
}
