package protocol

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The vectors were produced by the original TypeScript implementation and
// copied verbatim from ../shared/vectors into testdata/vectors. A missing
// file fails the test.
const vectorDir = "testdata/vectors"

func readVector(t *testing.T, name string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(vectorDir, name))
	if err != nil {
		t.Fatalf("vector %s is missing: %v", name, err)
	}
	var v map[string]any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("vector %s: %v", name, err)
	}
	return v
}

// rawMember re-encodes one member of a vector file for our strict decoders.
func rawMember(t *testing.T, v map[string]any, key string) []byte {
	t.Helper()
	m, ok := v[key]
	if !ok {
		t.Fatalf("vector has no %q", key)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func str(t *testing.T, v map[string]any, key string) string {
	t.Helper()
	s, ok := v[key].(string)
	if !ok {
		t.Fatalf("vector member %q is not a string", key)
	}
	return s
}

// TestVectorsMatchShared guards against drift between the copy kept here and
// the shared originals, when the shared directory is present.
func TestVectorsMatchShared(t *testing.T) {
	shared := filepath.Join("..", "..", "shared", "vectors")
	entries, err := os.ReadDir(shared)
	if err != nil {
		t.Skipf("shared vectors not present at %s (the copy in %s is authoritative for CI)", shared, vectorDir)
	}
	for _, e := range entries {
		want, err := os.ReadFile(filepath.Join(shared, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(vectorDir, e.Name()))
		if err != nil {
			t.Errorf("%s: missing from %s", e.Name(), vectorDir)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the shared original", e.Name())
		}
	}
}

func TestCanonicalizationVectors(t *testing.T) {
	v := readVector(t, "canonicalization.json")
	cases, _ := v["cases"].([]any)
	if len(cases) < 15 {
		t.Fatalf("expected at least 15 canonicalization cases, found %d", len(cases))
	}
	// Where we are deliberately stricter than the original (PROTOCOL.md):
	// these inputs are errors here, although the original's lenient parser
	// accepted them.
	stricter := map[string]error{
		"duplicate-key-last-wins": ErrDuplicateKey,
		"edge-lone-surrogate":     ErrLoneSurrogate,
	}
	for _, c := range cases {
		c := c.(map[string]any)
		name := str(t, c, "name")
		t.Run(name, func(t *testing.T) {
			input := str(t, c, "input")
			got, err := Canonicalize([]byte(input))
			if want, ok := stricter[name]; ok {
				if !errors.Is(err, want) {
					t.Fatalf("want %v (stricter than the original, which printed %q), got %v, %q", want, c["canonical"], err, got)
				}
				return
			}
			if _, isErr := c["error"]; isErr {
				if !errors.Is(err, ErrNonFinite) {
					t.Fatalf("want a non-finite error, got %v, %q", err, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("canonicalize: %v", err)
			}
			if want := str(t, c, "canonical"); string(got) != want {
				t.Fatalf("canonical mismatch\n got %s\nwant %s", got, want)
			}
			if want := str(t, c, "canonicalUtf8Hex"); hex.EncodeToString(got) != want {
				t.Fatalf("canonical bytes mismatch")
			}
			if want := str(t, c, "sha256"); HashBytes(got) != want {
				t.Fatalf("hash %s, want %s", HashBytes(got), want)
			}
		})
	}
}

func vectorKeys(t *testing.T) (plane, runner, unrelated *PrivateKey) {
	t.Helper()
	v := readVector(t, "keys.json")
	load := func(name string) *PrivateKey {
		k := v[name].(map[string]any)
		priv, err := ParsePrivateKeyPEM(str(t, k, "privateKeyPem"))
		if err != nil {
			t.Fatalf("%s private key: %v", name, err)
		}
		return priv
	}
	return load("plane"), load("runner"), load("unrelated")
}

func TestKeyVectors(t *testing.T) {
	v := readVector(t, "keys.json")
	for _, name := range []string{"plane", "runner", "unrelated"} {
		t.Run(name, func(t *testing.T) {
			k := v[name].(map[string]any)
			pub, err := ParsePublicKeyPEM(str(t, k, "publicKeyPem"))
			if err != nil {
				t.Fatal(err)
			}
			if pub.ID() != str(t, k, "keyId") {
				t.Errorf("key id %s, want %s", pub.ID(), k["keyId"])
			}
			if KeyIDFromPEM(str(t, k, "keyIdInput")) != str(t, k, "keyId") {
				t.Errorf("key id of the trimmed input differs")
			}
			if hex.EncodeToString(pub.Raw()) != str(t, k, "rawPublicKeyHex") {
				t.Errorf("raw public key mismatch")
			}
			if pub.PEM() != str(t, k, "publicKeyPem") {
				t.Errorf("PEM re-encoding differs:\n%s\nwant\n%s", pub.PEM(), k["publicKeyPem"])
			}
			priv, err := ParsePrivateKeyPEM(str(t, k, "privateKeyPem"))
			if err != nil {
				t.Fatal(err)
			}
			if !priv.Public().Equal(pub) {
				t.Errorf("private key's public half differs from the public key")
			}
			if hex.EncodeToString(priv.Seed()) != str(t, k, "seedHex") {
				t.Errorf("seed mismatch")
			}
			out, err := priv.PEM()
			if err != nil || out != str(t, k, "privateKeyPem") {
				t.Errorf("private PEM re-encoding differs: %v\n%s", err, out)
			}
			seed, _ := hex.DecodeString(str(t, k, "seedHex"))
			fromSeed, err := NewPrivateKeyFromSeed(seed)
			if err != nil || !fromSeed.Public().Equal(pub) {
				t.Errorf("key from seed differs: %v", err)
			}
			// A CRLF rendering of the same key has the same id: ids are
			// computed over the canonical encoding.
			crlf := strings.ReplaceAll(str(t, k, "publicKeyPem"), "\n", "\r\n")
			if again, err := ParsePublicKeyPEM(crlf); err != nil || again.ID() != pub.ID() {
				t.Errorf("CRLF PEM: %v, id %v", err, again)
			}
		})
	}
	for i, ex := range v["signatureExamples"].([]any) {
		ex := ex.(map[string]any)
		k := v[str(t, ex, "key")].(map[string]any)
		priv, err := ParsePrivateKeyPEM(str(t, k, "privateKeyPem"))
		if err != nil {
			t.Fatal(err)
		}
		if got := priv.SignMessage([]byte(str(t, ex, "message"))); got != str(t, ex, "signatureB64") {
			t.Errorf("example %d: signature %s, want %s", i, got, ex["signatureB64"])
		}
		if !priv.Public().VerifyMessage([]byte(str(t, ex, "message")), str(t, ex, "signatureB64")) {
			t.Errorf("example %d: signature does not verify", i)
		}
	}
}

func TestContractVector(t *testing.T) {
	v := readVector(t, "contract.json")
	c, err := ParseContract(rawMember(t, v, "contract"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := c.Hash()
	if err != nil {
		t.Fatal(err)
	}
	if h != str(t, v, "contractHash") {
		t.Fatalf("contract hash %s, want %s", h, v["contractHash"])
	}
	tree, _ := c.encodeTree()
	unsigned, _ := appendObject(nil, tree.(Object), "signatures")
	if string(unsigned) != str(t, v, "unsignedCanonical") {
		t.Fatalf("unsigned canonical differs:\n%s", unsigned)
	}
	planeKey, err := ParsePublicKeyPEM(str(t, v, "planePublicKeyPem"))
	if err != nil {
		t.Fatal(err)
	}
	if planeKey.ID() != str(t, v, "planeKeyId") || c.Issuer.KeyID != planeKey.ID() {
		t.Fatalf("plane key id mismatch")
	}
	if err := c.VerifySignature(SignerPlane, planeKey); err != nil {
		t.Fatalf("plane signature: %v", err)
	}
	// Ed25519 is deterministic: re-signing the struct form with the plane's
	// private key reproduces the original signature byte for byte.
	plane, _, _ := vectorKeys(t)
	fresh := *c
	fresh.received = nil
	fresh.Signatures = nil
	if err := fresh.Sign(plane, SignerPlane); err != nil {
		t.Fatal(err)
	}
	if fresh.Signatures[0] != c.Signatures[0] {
		t.Fatalf("re-signed contract differs:\n%+v\n%+v", fresh.Signatures[0], c.Signatures[0])
	}
	mh, err := c.ManifestHash()
	if err != nil || mh != str(t, v, "manifestHash") {
		t.Fatalf("manifest hash %s (%v), want %s", mh, err, v["manifestHash"])
	}
	if wh, _ := c.Workspace.Hash(); wh != mh {
		t.Fatalf("workspace hash %s differs from manifest hash %s", wh, mh)
	}
	policy, err := ParsePolicy(rawMember(t, v, "policy"))
	if err != nil {
		t.Fatal(err)
	}
	if ph, _ := policy.Hash(); ph != str(t, v, "policyHash") || ph != c.PolicyHash {
		t.Fatalf("policy hash %s, want %s", ph, v["policyHash"])
	}
	exec := DefaultExecution(c.Agent, c.Task.Prompt)
	got, _ := Canonical(exec)
	want, _ := Canonicalize(rawMember(t, v, "executionSpec"))
	if !bytes.Equal(got, want) {
		t.Fatalf("default execution %s, want %s", got, want)
	}
	// Struct round trip: encoding the decoded struct without its received
	// tree gives the same hash, so our types cover every member.
	if fh, _ := fresh.Hash(); fh != h {
		t.Fatalf("struct-encoded contract hashes to %s, want %s", fh, h)
	}
}

func TestEventVectors(t *testing.T) {
	v := readVector(t, "events.json")
	var events []ChainedEvent
	if err := json.Unmarshal(rawMember(t, v, "events"), &events); err != nil {
		t.Fatal(err)
	}
	genesis := str(t, v, "genesisPrev")
	per := v["perEvent"].([]any)
	if len(per) != len(events) || len(events) != 13 {
		t.Fatalf("want 13 events with per-event data, got %d and %d", len(events), len(per))
	}
	for i, pe := range per {
		pe := pe.(map[string]any)
		e := events[i]
		h, err := EventHash(e.Seq, e.TS, e.Prev, e.Event)
		if err != nil {
			t.Fatal(err)
		}
		if h != str(t, pe, "hash") || h != e.Hash {
			t.Errorf("event %d: hash %s, want %s", i, h, pe["hash"])
		}
		input, _ := Canonical(map[string]any{"seq": float64(e.Seq), "ts": e.TS, "prev": e.Prev, "event": e.Event.tree})
		if string(input) != str(t, pe, "hashInputCanonical") {
			t.Errorf("event %d: hash input %s", i, input)
		}
		if _, err := e.Event.Payload(); err != nil {
			t.Errorf("event %d: payload: %v", i, err)
		}
	}
	if err := VerifyChain(events, genesis); err != nil {
		t.Fatalf("chain: %v", err)
	}
	// Rebuilding the chain from typed payloads reproduces every hash.
	var rebuilt []ChainedEvent
	for _, e := range events {
		p, _ := e.Event.Payload()
		at, err := ParseTime(e.TS)
		if err != nil {
			t.Fatal(err)
		}
		if rebuilt, err = AppendEvent(rebuilt, genesis, NewEvent(p), at); err != nil {
			t.Fatal(err)
		}
	}
	for i := range events {
		if rebuilt[i].Hash != events[i].Hash {
			t.Fatalf("rebuilt event %d hash differs", i)
		}
	}
	ce := v["commandExecuted"].(map[string]any)
	p, _ := events[6].Event.Payload()
	if p.(CommandExecuted).ArgvHash != str(t, ce, "argvHash") {
		t.Fatalf("command.executed argvHash differs")
	}
}

func TestReceiptVector(t *testing.T) {
	v := readVector(t, "receipt.json")
	r, err := ParseReceipt(rawMember(t, v, "receipt"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := r.Hash()
	if err != nil {
		t.Fatal(err)
	}
	if h != str(t, v, "signedPayloadHex") {
		t.Fatalf("receipt hash %s, want %s", h, v["signedPayloadHex"])
	}
	tree, _ := r.encodeTree()
	unsigned, _ := appendObject(nil, tree.(Object), "signatures")
	if string(unsigned) != str(t, v, "unsignedCanonical") {
		t.Fatalf("unsigned canonical differs")
	}
	runnerKey, _ := ParsePublicKeyPEM(str(t, v, "runnerPublicKeyPem"))
	planeKey, _ := ParsePublicKeyPEM(str(t, v, "planePublicKeyPem"))
	if err := r.VerifySignature(SignerRunner, runnerKey); err != nil {
		t.Fatalf("runner signature: %v", err)
	}
	if err := r.VerifySignature(SignerPlane, planeKey); err != nil {
		t.Fatalf("plane countersignature: %v", err)
	}

	// Derive the receipt from the contract and the events the way our
	// runner does, sign it with the runner key, countersign it with the
	// plane key: the result is byte-identical to the original's.
	contract, err := ParseContract(rawMember(t, readVector(t, "contract.json"), "contract"))
	if err != nil {
		t.Fatal(err)
	}
	var events []ChainedEvent
	if err := json.Unmarshal(rawMember(t, readVector(t, "events.json"), "events"), &events); err != nil {
		t.Fatal(err)
	}
	if err := VerifyCompletion(contract, events, r, runnerKey); err != nil {
		t.Fatalf("completion checks: %v", err)
	}
	plane, runner, _ := vectorKeys(t)
	built, err := BuildReceipt(ReceiptInput{
		Contract:       contract,
		Events:         events,
		Runner:         r.Runner,
		DiffHash:       r.WorkspaceOut.DiffHash,
		ArtifactHashes: r.WorkspaceOut.ArtifactHashes,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := built.Sign(runner, SignerRunner); err != nil {
		t.Fatal(err)
	}
	posted, _ := Canonical(built)
	wantPosted, _ := Canonicalize(rawMember(t, v, "receiptAsPostedByRunner"))
	if !bytes.Equal(posted, wantPosted) {
		t.Fatalf("built receipt differs from the original's\n got %s\nwant %s", posted, wantPosted)
	}
	if err := built.Sign(plane, SignerPlane); err != nil {
		t.Fatal(err)
	}
	final, _ := Canonical(built)
	wantFinal, _ := Canonicalize(rawMember(t, v, "receipt"))
	if !bytes.Equal(final, wantFinal) {
		t.Fatalf("countersigned receipt differs from the original's")
	}
}

func trustFor(t *testing.T, plane *PrivateKey) *TrustStore {
	t.Helper()
	ts := NewTrustStore()
	ts.Add(SignerPlane, plane.Public())
	return ts
}

func TestBundleVectors(t *testing.T) {
	plane, runner, unrelated := vectorKeys(t)
	for _, name := range []string{"bundle.json", "bundle-failed.json"} {
		t.Run(name, func(t *testing.T) {
			v := readVector(t, name)
			b, err := ParseBundle(rawMember(t, v, "bundle"))
			if err != nil {
				t.Fatal(err)
			}
			rep := VerifyBundle(b, trustFor(t, plane))
			if !rep.Trusted() {
				t.Fatalf("want trusted, got %v", rep.Err())
			}
			if len(rep.Checks) != 13 {
				t.Fatalf("want 13 checks, got %d", len(rep.Checks))
			}
			// Without a trust file the bundle is consistent but not trusted.
			untrusted := VerifyBundle(b, nil)
			if !untrusted.Valid() || untrusted.Trusted() || !errors.Is(untrusted.Err(), ErrNoTrust) {
				t.Fatalf("without trust: valid=%v trusted=%v err=%v", untrusted.Valid(), untrusted.Trusted(), untrusted.Err())
			}
			// Trusting some other plane key: not trusted.
			other := VerifyBundle(b, trustFor(t, unrelated))
			if other.Trusted() || !errors.Is(other.Err(), ErrNotPinned) {
				t.Fatalf("with another plane key pinned: %v", other.Err())
			}
			// Pinning runner keys: the right one passes, a wrong one fails.
			withRunner := trustFor(t, plane)
			withRunner.Add(SignerRunner, runner.Public())
			if rep := VerifyBundle(b, withRunner); !rep.Trusted() {
				t.Fatalf("runner pinned: %v", rep.Err())
			}
			wrongRunner := trustFor(t, plane)
			wrongRunner.Add(SignerRunner, unrelated.Public())
			if rep := VerifyBundle(b, wrongRunner); rep.Trusted() || !errors.Is(rep.Err(), ErrNotPinned) {
				t.Fatalf("wrong runner pinned: %v", rep.Err())
			}
			// Round trip: re-encoding keeps every byte that is hashed.
			again, err := json.Marshal(b)
			if err != nil {
				t.Fatal(err)
			}
			b2, err := ParseBundle(again)
			if err != nil {
				t.Fatal(err)
			}
			if rep := VerifyBundle(b2, trustFor(t, plane)); !rep.Trusted() {
				t.Fatalf("re-encoded bundle: %v", rep.Err())
			}
		})
	}
	failed, err := ParseBundle(rawMember(t, readVector(t, "bundle-failed.json"), "bundle"))
	if err != nil {
		t.Fatal(err)
	}
	if failed.Receipt.Status != StateFailed {
		t.Fatalf("bundle-failed status %q", failed.Receipt.Status)
	}
}

func TestTamperedVectors(t *testing.T) {
	plane, _, _ := vectorKeys(t)
	v := readVector(t, "tampered.json")
	variants := v["variants"].([]any)
	if len(variants) < 4 {
		t.Fatalf("want at least 4 tampered variants, got %d", len(variants))
	}
	// Which of our checks must fail for each category of the original.
	wantFailing := map[string][]string{
		// The mutated event is the network.connected decision, so our check
		// 11 (networkAccessed equals the events) fails as well.
		"event_hash_mismatch":            {CheckEventChain, CheckNetworkAccessed},
		"receipt_signatures_invalid":     {CheckRunnerSignature, CheckPlaneCountersign, CheckNetworkAccessed},
		"plane_countersignature_invalid": {CheckPlaneCountersign},
		"runner_signature_invalid":       {CheckRunnerSignature},
		"contract_signature_invalid":     {CheckContractSignature},
		"sequence_gap":                   {CheckEventChain, CheckSecretsReleased},
		"events_head_mismatch":           {CheckEventChain},
		"runner_key_mismatch":            {CheckRunnerKey, CheckRunnerSignature},
		"terminal_status_mismatch":       {CheckTerminalStatus, CheckRunnerSignature, CheckPlaneCountersign},
	}
	for _, raw := range variants {
		vr := raw.(map[string]any)
		name := str(t, vr, "name")
		t.Run(name, func(t *testing.T) {
			category := str(t, vr, "expectedFailure")
			want, ok := wantFailing[category]
			if !ok {
				t.Fatalf("unknown expected failure %q", category)
			}
			b, err := ParseBundle(rawMember(t, vr, "bundle"))
			if err != nil {
				t.Fatal(err)
			}
			rep := VerifyBundle(b, trustFor(t, plane))
			if rep.Valid() || rep.Trusted() {
				t.Fatalf("tampered bundle verified")
			}
			var failing []string
			for _, c := range rep.Checks {
				if c.Err != nil {
					failing = append(failing, c.Name)
					var ve *VerifyError
					if !errors.As(c.Err, &ve) || ve.Check != c.Name {
						t.Errorf("check %s: error %v is not a *VerifyError naming the check", c.Name, c.Err)
					}
				}
			}
			if strings.Join(failing, ",") != strings.Join(want, ",") {
				t.Fatalf("failing checks %v, want %v (original: %v)", failing, want, vr["expected"])
			}
			// The chain result agrees with the original's verifyChain.
			chain := vr["chain"].(map[string]any)
			h, _ := b.Contract.Hash()
			err = VerifyChain(b.Events, h)
			if chain["ok"] == true && err != nil {
				t.Fatalf("chain: original ok, ours %v", err)
			}
			if chain["ok"] == false {
				var ce *ChainError
				if !errors.As(err, &ce) || float64(ce.Seq) != chain["brokenAtSeq"].(float64) {
					t.Fatalf("chain: original broke at %v, ours %v", chain["brokenAtSeq"], err)
				}
			}
		})
	}
}
