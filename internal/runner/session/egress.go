package session

import (
	"warrant.dev/warrant/internal/runner/egress"
	"warrant.dev/warrant/protocol"
)

// RecordEgress returns the egress proxy's Record function for a session:
// every decision becomes one network.connected event on the run's chain,
// and a decision that cannot be recorded refuses the connection (the proxy
// fails closed on the error). Every backend records egress this way, so
// receipts read the same whatever the isolation tier.
func RecordEgress(s *Session) func(egress.Decision) error {
	return func(d egress.Decision) error {
		return s.Record(protocol.NetworkConnected{Host: eventHost(d), Decision: d.Protocol()})
	}
}

// eventHost is the host a network.connected event records: the normalised
// host, or, for an authority that did not parse, the authority as received.
func eventHost(d egress.Decision) string {
	if d.Host != "" {
		return d.Host
	}
	if d.Authority != "" {
		return d.Authority
	}
	return "(empty)"
}
