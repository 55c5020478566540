// Package protocol owns the bytes of Warrant's published v1 objects: the
// signed run contract (warrant.contract.v1), the hash-chained event log
// (warrant.event.v1), the signed and countersigned receipt
// (warrant.receipt.v1), the workspace manifest (warrant.manifest.v1), the
// policy (warrant.policy.v1) and the offline bundle (warrant.bundle.v1).
//
// It provides RFC 8785 canonical JSON with a strict (I-JSON) parser,
// SHA-256 content hashes, Ed25519 keys in PEM with protocol key ids,
// signing and verification of contracts and receipts, event-chain append
// and verification, and offline bundle verification against pinned keys.
//
// The package imports only the standard library, performs no I/O and does
// no logging. Decoded objects are read-only views: their hashes are computed
// over the bytes as received (unknown members included), so a caller that
// wants a different object builds a new one rather than editing a decoded
// one.
package protocol
