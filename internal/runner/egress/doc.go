// Package egress owns the session egress proxy: the enforcement point that
// decides which hosts an agent session may reach and records every
// decision.
//
// The session's HTTP_PROXY and HTTPS_PROXY point at the proxy. It accepts
// HTTP CONNECT tunnels and absolute-form HTTP requests ("GET http://host/"),
// and for each one it
//
//  1. parses and normalises the requested authority (ParseAuthority),
//  2. checks the host and port against the allowlist (ParseAllowlist),
//     denying by default,
//  3. resolves the name itself and classifies every address, refusing
//     loopback, private, link-local, cloud-metadata, CGNAT, multicast,
//     reserved and embedded-IPv4 forms of those, unless the request names
//     an IP literal the allowlist names explicitly or the address is in a
//     configured prefix,
//  4. hands exactly one Decision to Config.Record, and refuses the
//     connection if that fails (fail-closed),
//  5. only then dials the vetted address (never the name, so a second
//     resolution cannot change the answer), and relays bytes until either
//     side closes or the connection idles out.
//
// This is process-level enforcement: a binary that ignores the proxy
// variables bypasses it unless the sandbox gives it no other route out (the
// namespace backend serves the proxy on a Unix socket bridged into an
// otherwise empty network namespace). The package imports only the
// standard library.
package egress
