package protocol

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// vectorMember returns member name of the JSON object in
// testdata/vectors/file, for seeding the fuzzers with real objects.
func vectorMember(f *testing.F, file, name string) []byte {
	f.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "vectors", file))
	if err != nil {
		f.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		f.Fatal(err)
	}
	return m[name]
}

// reencodes checks that a parsed object re-encodes canonically to bytes
// that parse again to the same canonical bytes.
func reencodes[T any](t *testing.T, v T, parse func([]byte) (T, error)) []byte {
	t.Helper()
	out, err := Canonical(v)
	if err != nil {
		return nil // e.g. a number the canonical form cannot hold
	}
	v2, err := parse(out)
	if err != nil {
		t.Fatalf("canonical output does not parse: %v\n%s", err, out)
	}
	out2, err := Canonical(v2)
	if err != nil || !bytes.Equal(out, out2) {
		t.Fatalf("re-encoding is not stable: %v\n1: %s\n2: %s", err, out, out2)
	}
	return out
}

// FuzzParseManifest: a workspace manifest (part of every run request)
// parses strictly or not at all, never panics, re-encodes stably and
// hashes the same after a round trip.
func FuzzParseManifest(f *testing.F) {
	f.Add(vectorMember(f, "contract.json", "contract"))
	var c map[string]json.RawMessage
	_ = json.Unmarshal(vectorMember(f, "contract.json", "contract"), &c)
	f.Add([]byte(c["workspace"]))
	f.Add([]byte(`{"version":"warrant.manifest.v1","baseRef":"","bundleHash":"","untrackedFiles":[{"path":"../x","hash":"","bytes":1e400}],"deniedPatterns":[],"deniedPaths":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			return
		}
		h1, err := m.Hash()
		if err != nil {
			return
		}
		if out := reencodes(t, m, ParseManifest); out != nil {
			m2, _ := ParseManifest(out)
			if h2, err := m2.Hash(); err != nil || h1 != h2 {
				t.Fatalf("hash changed across a round trip: %s → %s (%v)", h1, h2, err)
			}
		}
	})
}

// FuzzParseContract: contracts reach runners in claims. Parsing never
// panics; hashing, the manifest hash and signature checks on whatever
// parses never panic; re-encoding is stable.
func FuzzParseContract(f *testing.F) {
	f.Add(vectorMember(f, "contract.json", "contract"))
	f.Add([]byte(`{"version":"warrant.contract.v2"}`))
	key, _ := GenerateKey(bytes.NewReader(make([]byte, 64)))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseContract(data)
		if err != nil {
			return
		}
		_, _ = c.Hash()
		_, _ = c.ManifestHash()
		_ = c.VerifySignature(SignerPlane, key.Public())
		_ = c.EffectiveExecution()
		reencodes(t, c, ParseContract)
	})
}

// FuzzParseReceipt: receipts reach the plane from runners. Parsing never
// panics, re-encoding is stable, and checking an arbitrary receipt
// against the vector contract and chain never panics and never passes
// unless it is signed by the key it is checked with.
func FuzzParseReceipt(f *testing.F) {
	f.Add(vectorMember(f, "receipt.json", "receipt"))
	var b struct {
		Contract json.RawMessage   `json:"contract"`
		Events   []json.RawMessage `json:"events"`
	}
	_ = json.Unmarshal(vectorMember(f, "bundle.json", "bundle"), &b)
	contract, err := ParseContract(b.Contract)
	if err != nil {
		f.Fatal(err)
	}
	var events []ChainedEvent
	for _, e := range b.Events {
		var ce ChainedEvent
		if err := ce.UnmarshalJSON(e); err != nil {
			f.Fatal(err)
		}
		events = append(events, ce)
	}
	stranger, _ := GenerateKey(bytes.NewReader(make([]byte, 64)))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseReceipt(data)
		if err != nil {
			return
		}
		_, _ = r.Hash()
		if err := VerifyCompletion(contract, events, r, stranger.Public()); err == nil {
			t.Fatalf("a receipt not signed by the stranger key verified under it")
		}
		reencodes(t, r, ParseReceipt)
	})
}

// FuzzParsePolicy: policies come from admins. Parsing never panics and
// re-encodes stably.
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(`{"version":"warrant.policy.v1","agents":{"allow":["*"]},"runners":{"allowPools":["default"]},"network":{"defaultDeny":true,"allowHosts":["*.example.com"]},"secrets":{"releasable":[{"name":"K","scope":"pool:default","pools":["*"]}]},"budget":{"maxSpendUsd":25,"maxDurationMin":60},"consent":[],"dataClasses":[],"retention":{"receiptsDays":365,"artifactsDays":90}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePolicy(data)
		if err != nil {
			return
		}
		_, _ = p.Hash()
		reencodes(t, p, ParsePolicy)
	})
}

// FuzzParseTrustFile: a verifier's trust file. Parsing never panics; what
// parses holds exactly valid keys, and writing it back gives a file that
// parses to the same keys.
func FuzzParseTrustFile(f *testing.F) {
	var keys map[string]json.RawMessage
	_ = json.Unmarshal(vectorMember(f, "keys.json", "plane"), &keys)
	var pemText string
	_ = json.Unmarshal(keys["publicKeyPem"], &pemText)
	seed, _ := json.Marshal(TrustFile{Version: VersionTrust, Keys: []TrustedKey{{Role: SignerPlane, Name: "prod", PublicKeyPEM: pemText}}})
	f.Add(seed)
	f.Add([]byte(`{"version":"warrant.trust.v1","keys":[{"role":"runner","keyId":"ed25519:0000000000000000","publicKeyPem":"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ts, err := ParseTrustFile(data)
		if err != nil {
			return
		}
		out, err := json.Marshal(ts.File())
		if err != nil {
			t.Fatal(err)
		}
		ts2, err := ParseTrustFile(out)
		if err != nil {
			t.Fatalf("a trust file written back does not parse: %v\n%s", err, out)
		}
		if ts.Len() != ts2.Len() {
			t.Fatalf("%d keys became %d", ts.Len(), ts2.Len())
		}
	})
}

// FuzzChainedEvent: events reach the plane from runners one by one.
// Parsing never panics; a parsed event's payload, hash and link checks
// never panic; an event verifies as the successor of its own prev only
// when its hash is right.
func FuzzChainedEvent(f *testing.F) {
	var evs []json.RawMessage
	_ = json.Unmarshal(vectorMember(f, "events.json", "events"), &evs)
	for _, e := range evs {
		f.Add([]byte(e))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var e ChainedEvent
		if err := e.UnmarshalJSON(data); err != nil {
			return
		}
		_, _ = e.Event.Payload()
		_ = e.Event.String()
		h, err := EventHash(e.Seq, e.TS, e.Prev, e.Event)
		if e.Seq == 0 {
			if verr := VerifyLink(nil, e.Prev, &e); verr == nil && (err != nil || h != e.Hash) {
				t.Fatalf("an event with a wrong hash verified as the genesis successor")
			}
		}
		if _, err := ParseTime(e.TS); err == nil {
			if next, err := NextEvent(&e, "", NewEvent(RunCompleted{}), time.Unix(0, 0)); err == nil && next.Prev != e.Hash {
				t.Fatalf("NextEvent does not link to its predecessor")
			}
		}
		reencodes(t, e, func(b []byte) (ChainedEvent, error) {
			var x ChainedEvent
			return x, x.UnmarshalJSON(b)
		})
	})
}
