package protocol

import (
	"fmt"
	"slices"
)

// VersionTrust is the version of the trust file format.
const VersionTrust = "warrant.trust.v1"

// TrustFile is the on-disk form of a verifier's pinned keys:
//
//	{"version": "warrant.trust.v1",
//	 "keys": [{"role": "plane", "name": "prod plane", "keyId": "ed25519:…", "publicKeyPem": "…"}]}
//
// keyId is optional; when present it must match the key.
type TrustFile struct {
	Version string       `json:"version"`
	Keys    []TrustedKey `json:"keys"`
}

// TrustedKey is one pinned key and the role it is trusted for.
type TrustedKey struct {
	Role         string `json:"role"` // "org" | "plane" | "runner"
	Name         string `json:"name,omitempty"`
	KeyID        string `json:"keyId,omitempty"`
	PublicKeyPEM string `json:"publicKeyPem"`
}

// TrustStore holds pinned public keys by role.
type TrustStore struct {
	keys map[string][]*PublicKey
}

// NewTrustStore returns an empty trust store.
func NewTrustStore() *TrustStore { return &TrustStore{keys: map[string][]*PublicKey{}} }

// ParseTrustFile reads a trust file and checks every key in it.
func ParseTrustFile(data []byte) (*TrustStore, error) {
	var f TrustFile
	if err := decodeJSON(data, "trust", &f); err != nil {
		return nil, err
	}
	if f.Version != VersionTrust {
		return nil, &FieldError{Path: "trust.version", Reason: fmt.Sprintf("want %q, got %q", VersionTrust, f.Version), Err: ErrUnsupportedVersion}
	}
	ts := NewTrustStore()
	for i, k := range f.Keys {
		path := fmt.Sprintf("trust.keys[%d]", i)
		if !validRole(k.Role) {
			return nil, &FieldError{Path: path + ".role", Reason: fmt.Sprintf("role must be org, plane or runner, got %q", k.Role)}
		}
		pub, err := ParsePublicKeyPEM(k.PublicKeyPEM)
		if err != nil {
			return nil, &FieldError{Path: path + ".publicKeyPem", Reason: err.Error(), Err: err}
		}
		if k.KeyID != "" && k.KeyID != pub.ID() {
			return nil, &FieldError{Path: path + ".keyId", Reason: fmt.Sprintf("says %s but the key's id is %s", k.KeyID, pub.ID())}
		}
		ts.Add(k.Role, pub)
	}
	return ts, nil
}

func validRole(r string) bool { return r == SignerOrg || r == SignerPlane || r == SignerRunner }

// Add pins key for role.
func (t *TrustStore) Add(role string, key *PublicKey) {
	if t.Has(role, key) {
		return
	}
	t.keys[role] = append(t.keys[role], key)
}

// Has reports whether key is pinned for role.
func (t *TrustStore) Has(role string, key *PublicKey) bool {
	if t == nil || key == nil {
		return false
	}
	return slices.ContainsFunc(t.keys[role], key.Equal)
}

// HasRole reports whether any key is pinned for role.
func (t *TrustStore) HasRole(role string) bool { return t != nil && len(t.keys[role]) > 0 }

// Len returns the number of pinned keys.
func (t *TrustStore) Len() int {
	if t == nil {
		return 0
	}
	n := 0
	for _, ks := range t.keys {
		n += len(ks)
	}
	return n
}

// File renders the store as a trust file, roles in org, plane, runner order.
func (t *TrustStore) File() TrustFile {
	f := TrustFile{Version: VersionTrust, Keys: []TrustedKey{}}
	for _, role := range []string{SignerOrg, SignerPlane, SignerRunner} {
		for _, k := range t.keys[role] {
			f.Keys = append(f.Keys, TrustedKey{Role: role, KeyID: k.ID(), PublicKeyPEM: k.PEM()})
		}
	}
	return f
}
