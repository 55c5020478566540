package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// buildBundle makes a complete run the way the plane and runner do: a
// signed contract, a chain of n events (n >= 5), a runner-signed and
// plane-countersigned receipt.
func buildBundle(tb testing.TB, n int) (*Bundle, *PrivateKey) {
	tb.Helper()
	plane, err := GenerateKey(nil)
	if err != nil {
		tb.Fatal(err)
	}
	runner, err := GenerateKey(nil)
	if err != nil {
		tb.Fatal(err)
	}
	start := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	maxMin := 30.0
	c := &Contract{
		Version:     VersionContract,
		RunID:       "run_roundtrip",
		IssuedAt:    FormatTime(start),
		Issuer:      KeyRef{KeyID: plane.Public().ID(), Role: SignerPlane},
		RequestedBy: ActorRef{Kind: "human", ID: "dana@example.com"},
		ApprovedBy:  []ActorRef{{Kind: "human", ID: "sam@example.com"}},
		Agent:       AgentSpec{Kind: AgentCommand},
		Task:        TaskSpec{Prompt: "echo hi > out.txt"},
		Runner:      RunnerSelector{Pool: "default"},
		Workspace: Manifest{
			Version: VersionManifest, BaseRef: "0123456789abcdef0123456789abcdef01234567",
			BundleHash: HashBytes([]byte("snapshot")), Format: SnapshotVersion,
			UntrackedFiles: []ManifestFile{{Path: "notes.txt", Hash: HashBytes([]byte("n")), Bytes: 1}},
			DeniedPatterns: []string{".env"}, DeniedPaths: []string{".env"},
		},
		PolicyHash: HashBytes([]byte("policy")),
		Secrets:    []SecretClaim{{Name: "API_TOKEN", Scope: "pool:default"}},
		Network:    NetworkPolicy{DefaultDeny: true, AllowHosts: []string{"api.example.com"}},
		Budget:     Budget{MaxDurationMin: &maxMin},
		Disclosure: "minimal-context",
		Execution:  &ExecutionSpec{Kind: ExecArgv, Command: "sh", Args: []string{"-c", "echo hi"}},
		Isolation:  IsolationProcess,
		ExpiresAt:  FormatTime(start.Add(time.Hour)),
	}
	if err := c.Sign(plane, SignerPlane); err != nil {
		tb.Fatal(err)
	}
	genesis, err := c.Hash()
	if err != nil {
		tb.Fatal(err)
	}
	manifestHash, _ := c.ManifestHash()
	diff := HashBytes([]byte("diff"))
	bodies := []EventBody{
		NewEvent(RunCreated{}),
		NewEvent(PolicyEvaluated{Decision: "allow", Reason: "policy allows this run"}),
		NewEvent(RunClaimed{RunnerID: "rnr_1", RunnerKeyID: runner.Public().ID()}),
		NewEvent(SecretReleased{Name: "API_TOKEN", Scope: "pool:default"}),
		NewEvent(WorkspaceMaterialized{ManifestHash: manifestHash}),
	}
	for i := 0; len(bodies) < n-4; i++ {
		switch i % 4 {
		case 0:
			bodies = append(bodies, NewEvent(NetworkConnected{Host: fmt.Sprintf("h%d.example.com", i%7), Decision: DecisionBlocked}))
		case 1:
			bodies = append(bodies, NewEvent(NetworkConnected{Host: "api.example.com", Decision: DecisionAllowed}))
		case 2:
			bodies = append(bodies, NewEvent(FileChanged{Path: fmt.Sprintf("f%d.txt", i), ContentHash: HashBytes([]byte{byte(i)})}))
		case 3:
			bodies = append(bodies, NewEvent(ModelCalled{Provider: "anthropic", Model: "claude"}))
		}
	}
	bodies = append(bodies,
		NewEvent(CommandExecuted{ArgvHash: HashBytes([]byte("argv")), ExitCode: 0}),
		NewEvent(ArtifactCreated{Kind: "diff", Hash: diff}),
		NewEvent(BoundaryCrossed{Direction: "out", ContentHash: diff, DataClass: "code-diff"}),
		NewEvent(RunCompleted{}),
	)
	var events []ChainedEvent
	for i, b := range bodies {
		if events, err = AppendEvent(events, genesis, b, start.Add(time.Duration(i)*time.Millisecond)); err != nil {
			tb.Fatal(err)
		}
	}
	r, err := BuildReceipt(ReceiptInput{
		Contract: c, Events: events,
		Runner:   RunnerIdentity{RunnerID: "rnr_1", KeyID: runner.Public().ID(), Pool: "default", AttestationTier: AttestationMock, Isolation: IsolationProcess},
		DiffHash: diff, ArtifactHashes: []string{diff},
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := r.Sign(runner, SignerRunner); err != nil {
		tb.Fatal(err)
	}
	if err := VerifyCompletion(c, events, r, runner.Public()); err != nil {
		tb.Fatalf("completion: %v", err)
	}
	if err := r.Sign(plane, SignerPlane); err != nil {
		tb.Fatal(err)
	}
	return &Bundle{
		Version: VersionBundle, Contract: c, Receipt: r, Events: events,
		Keys: BundleKeys{PlanePublicKeyPEM: plane.Public().PEM(), RunnerPublicKeyPEM: runner.Public().PEM()},
	}, plane
}

func TestRoundTripBundle(t *testing.T) {
	b, plane := buildBundle(t, 40)
	data, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseBundle(data)
	if err != nil {
		t.Fatal(err)
	}
	rep := VerifyBundle(parsed, trustFor(t, plane))
	if !rep.Trusted() {
		t.Fatalf("round trip: %v", rep.Err())
	}
	again, _ := json.Marshal(parsed)
	if !bytes.Equal(again, data) {
		t.Fatal("re-encoding a decoded bundle changed its bytes")
	}
	if parsed.Receipt.NetworkAccessed[0].Host != "h0.example.com" || len(parsed.Receipt.ModelsUsed) != 1 {
		t.Fatalf("receipt lists not derived: %+v %+v", parsed.Receipt.NetworkAccessed, parsed.Receipt.ModelsUsed)
	}
}

// Forged and inconsistent bundles built from a valid one: each is refused,
// by the check that names what broke.
func TestForgedBundles(t *testing.T) {
	other, _ := GenerateKey(nil)
	cases := []struct {
		name   string
		mutate func(b *Bundle, plane *PrivateKey)
		check  string
	}{
		{"event for another run spliced in", func(b *Bundle, _ *PrivateKey) {
			o, _ := buildBundle(t, 12)
			b.Events[5] = o.Events[5]
		}, CheckEventChain},
		{"event deleted and chain re-hashed", func(b *Bundle, _ *PrivateKey) {
			h, _ := b.Contract.Hash()
			var evs []ChainedEvent
			for i, e := range b.Events {
				if i == 6 {
					continue
				}
				at, _ := ParseTime(e.TS)
				evs, _ = AppendEvent(evs, h, e.Event, at)
			}
			b.Events = evs
		}, CheckEventChain},
		{"receipt re-signed by an unenrolled runner key", func(b *Bundle, _ *PrivateKey) {
			b.Receipt.Signatures = nil
			b.Receipt.Runner.KeyID = other.Public().ID()
			_ = b.Receipt.Sign(other, SignerRunner)
		}, CheckRunnerKey},
		{"bundle keys swapped", func(b *Bundle, _ *PrivateKey) {
			b.Keys.PlanePublicKeyPEM, b.Keys.RunnerPublicKeyPEM = b.Keys.RunnerPublicKeyPEM, b.Keys.PlanePublicKeyPEM
		}, CheckContractSignature},
		{"whole bundle re-signed by a different plane", func(b *Bundle, _ *PrivateKey) {
			b.Contract.Signatures = nil
			_ = b.Contract.Sign(other, SignerPlane)
			b.Keys.PlanePublicKeyPEM = other.Public().PEM()
			// The receipt's binding to the contract does not depend on the
			// signature, so only pinning can catch this.
			b.Receipt.Signatures = b.Receipt.Signatures[:1]
			_ = b.Receipt.Sign(other, SignerPlane)
		}, CheckPinnedKeys},
		{"secret release hidden from the receipt", func(b *Bundle, plane *PrivateKey) {
			b.Receipt.SecretsReleased = []SecretRelease{}
		}, CheckRunnerSignature},
		{"runner signature missing", func(b *Bundle, _ *PrivateKey) {
			b.Receipt.Signatures = b.Receipt.Signatures[1:]
		}, CheckRunnerSignature},
		{"countersignature missing", func(b *Bundle, _ *PrivateKey) {
			b.Receipt.Signatures = b.Receipt.Signatures[:1]
		}, CheckPlaneCountersign},
		{"event appended after the terminal event", func(b *Bundle, _ *PrivateKey) {
			h, _ := b.Contract.Hash()
			b.Events, _ = AppendEvent(b.Events, h, NewEvent(NetworkConnected{Host: "evil.example", Decision: DecisionAllowed}), time.Now())
		}, CheckEventChain},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, plane := buildBundle(t, 12)
			c.mutate(b, plane)
			data, err := json.Marshal(b)
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := ParseBundle(data)
			if err != nil {
				t.Fatal(err)
			}
			rep := VerifyBundle(parsed, trustFor(t, plane))
			if rep.Trusted() {
				t.Fatal("forged bundle trusted")
			}
			var ve *VerifyError
			if !errors.As(rep.Err(), &ve) || ve.Check != c.check {
				t.Fatalf("first failure %v, want check %s", rep.Err(), c.check)
			}
		})
	}
}

// TestCorruptEveryByte flips every byte of a serialized bundle in turn: no
// corruption may produce a trusted bundle, and none may panic.
func TestCorruptEveryByte(t *testing.T) {
	b, plane := buildBundle(t, 8)
	data, err := Canonical(b)
	if err != nil {
		t.Fatal(err)
	}
	want := semanticForm(t, b)
	trust := trustFor(t, plane)
	step := 1
	if testing.Short() {
		step = 7
	}
	trustedCount := 0
	for i := 0; i < len(data); i += step {
		for _, mask := range []byte{0x01, 0x20} {
			mutated := slices.Clone(data)
			mutated[i] ^= mask
			parsed, err := ParseBundle(mutated)
			if err != nil {
				continue
			}
			if VerifyBundle(parsed, trust).Trusted() {
				if semanticForm(t, parsed) == want {
					// The text changed but not the object: e.g. the unused
					// low bits of the last base64 character of a PEM key.
					continue
				}
				trustedCount++
				t.Errorf("byte %d ^ %#x (%q → %q) still trusted", i, mask, data[i], mutated[i])
			}
		}
	}
	if trustedCount > 0 {
		t.Fatalf("%d corruptions verified", trustedCount)
	}
}

// semanticForm renders a bundle with its keys re-encoded, so two texts of
// the same object compare equal.
func semanticForm(t *testing.T, b *Bundle) string {
	t.Helper()
	c := *b
	for _, pem := range []*string{&c.Keys.PlanePublicKeyPEM, &c.Keys.RunnerPublicKeyPEM} {
		if k, err := ParsePublicKeyPEM(*pem); err == nil {
			*pem = k.PEM()
		}
	}
	out, err := Canonical(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestTrustFile(t *testing.T) {
	_, plane := buildBundle(t, 6)
	ts := trustFor(t, plane)
	f := ts.File()
	data, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseTrustFile(data)
	if err != nil || !back.Has(SignerPlane, plane.Public()) || back.Len() != 1 {
		t.Fatalf("trust file round trip: %v", err)
	}
	bad := bytes.Replace(data, []byte(plane.Public().ID()), []byte("ed25519:0000000000000000"), 1)
	if _, err := ParseTrustFile(bad); err == nil {
		t.Fatal("a trust file whose keyId does not match its key was accepted")
	}
	if _, err := ParseTrustFile([]byte(`{"version":"warrant.trust.v1","keys":[{"role":"admin","publicKeyPem":""}]}`)); err == nil {
		t.Fatal("a bad role was accepted")
	}
}

func TestSnapshotFormat(t *testing.T) {
	s := &Snapshot{Entries: []SnapshotEntry{
		{Path: "a b/c.txt", Mode: ModeFile, Hash: HashBytes([]byte("c")), Size: 1},
		{Path: "bin/run", Mode: ModeExecutable, Hash: HashBytes([]byte("r")), Size: 1},
		{Path: "link", Mode: ModeSymlink, Hash: HashBytes([]byte("bin/run")), Size: 7},
	}}
	data, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseSnapshot(data)
	if err != nil || !slices.Equal(back.Entries, s.Entries) {
		t.Fatalf("round trip: %v %+v", err, back)
	}
	h := HashBytes(nil)
	bad := map[string]string{
		"traversal":        "100644 " + h + " 0\t../etc/passwd\n",
		"absolute":         "100644 " + h + " 0\t/etc/passwd\n",
		"git dir":          "100644 " + h + " 0\t.git/hooks/pre-commit\n",
		"nested git dir":   "100644 " + h + " 0\tsub/.GIT/config\n",
		"dot component":    "100644 " + h + " 0\ta/./b\n",
		"empty component":  "100644 " + h + " 0\ta//b\n",
		"device mode":      "020000 " + h + " 0\tdev\n",
		"unsorted":         "100644 " + h + " 0\tb\n100644 " + h + " 0\ta\n",
		"duplicate":        "100644 " + h + " 0\ta\n100644 " + h + " 0\ta\n",
		"file under file":  "120000 " + h + " 0\tlink\n100644 " + h + " 0\tlink/x\n",
		"bad hash":         "100644 XYZ 0\ta\n",
		"negative size":    "100644 " + h + " -1\ta\n",
		"padded size":      "100644 " + h + " 01\ta\n",
		"no final newline": "100644 " + h + " 0\ta",
		"backslash":        "100644 " + h + " 0\ta\\..\\b\n",
	}
	keys := make([]string, 0, len(bad))
	for k := range bad {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, name := range keys {
		if _, err := ParseSnapshot([]byte(SnapshotVersion + "\n" + bad[name])); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// writeFuzzSeeds keeps the fuzz seed corpora in testdata/fuzz in step with
// the vectors; run with WARRANT_WRITE_FUZZ_SEEDS=1 to refresh them.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("WARRANT_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set WARRANT_WRITE_FUZZ_SEEDS=1 to regenerate the committed seed corpora")
	}
	write := func(target, name string, data []byte) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	v := readVector(t, "canonicalization.json")
	for _, c := range v["cases"].([]any) {
		c := c.(map[string]any)
		write("FuzzCanonicalize", "vector-"+c["name"].(string), []byte(c["input"].(string)))
	}
	for _, name := range []string{"bundle.json", "bundle-failed.json"} {
		write("FuzzParseBundle", "vector-"+name, rawMember(t, readVector(t, name), "bundle"))
	}
	s := &Snapshot{Entries: []SnapshotEntry{{Path: "a/b", Mode: ModeFile, Hash: HashBytes(nil), Size: 0}}}
	data, _ := s.Encode()
	write("FuzzParseSnapshot", "simple", data)
}

// TestEditsOfDecodedObjectsAreKept: a decoded object re-encodes from the
// bytes it was decoded from (unknown members survive), but a field edited
// after decoding is encoded from the struct, never silently lost.
func TestEditsOfDecodedObjectsAreKept(t *testing.T) {
	v := readVector(t, "contract.json")
	raw := strings.Replace(string(rawMember(t, v, "policy")), `"version":`, `"futureRule":{"x":[1]},"version":`, 1)
	p, err := ParsePolicy([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	before, _ := p.Hash()
	p.Runners.AllowPools = append(p.Runners.AllowPools, "gpu")
	p.Consent = nil
	out, err := Canonical(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"allowPools":["default","gpu"]`) || !strings.Contains(string(out), `"futureRule":{"x":[1]}`) {
		t.Fatalf("edited policy re-encoded as %s", out)
	}
	if after, _ := p.Hash(); after == before {
		t.Fatal("editing a decoded policy did not change its hash")
	}
	back, err := ParsePolicy(out)
	if err != nil || len(back.Runners.AllowPools) != 2 {
		t.Fatalf("re-decoded: %v %+v", err, back)
	}

	c, err := ParseContract(rawMember(t, v, "contract"))
	if err != nil {
		t.Fatal(err)
	}
	h1, _ := c.Hash()
	c.Task.Prompt = "something else"
	h2, _ := c.Hash()
	if h1 == h2 {
		t.Fatal("editing a decoded contract's task did not change its hash")
	}
	c.Task.Prompt = "check the network and update notes"
	if h3, _ := c.Hash(); h3 != h1 {
		t.Fatal("undoing the edit did not restore the original hash")
	}
}
