package protocol

import (
	"errors"
	"fmt"
	"sync"
)

// Names of the verification checks, in the order they are reported. They
// are stable: tools match on them.
const (
	CheckContractSignature    = "contract-signature"     // 1. the plane signed the contract
	CheckReceiptBinding       = "receipt-binding"        // 2. receipt runId and contractHash match the contract
	CheckRunnerKey            = "runner-key"             // 3. runner key id and pool match
	CheckRunnerSignature      = "runner-signature"       // 4. the runner signed the receipt
	CheckEventChain           = "event-chain"            // 5. chain from the contract hash, head and count
	CheckTerminalStatus       = "terminal-status"        // 6. the terminal event matches the status
	CheckWorkspaceIn          = "workspace-in"           // 7. workspaceIn matches the contract
	CheckSecretsReleased      = "secrets-released"       // 8. secretsReleased equals the secret.released events
	CheckDiffArtifact         = "diff-artifact"          // 9. a diff hash has its artifact.created event
	CheckPlaneCountersign     = "plane-countersignature" // 10. the plane countersigned the receipt
	CheckNetworkAccessed      = "network-accessed"       // 11. networkAccessed equals the network.connected pairs
	CheckBoundaryDisclosures  = "boundary-disclosures"   // 11. boundaryDisclosures equals the boundary.crossed events
	CheckPinnedKeys           = "pinned-keys"            // 12. the keys come from the verifier's trust file
	CheckOrgSignature         = "org-signature"          // optional: an org signature on the contract
	checkNameForDecodeFailure = "decode"
)

// Sentinels for linkage failures, wrapped by *VerifyError.
var (
	ErrMismatch  = errors.New("does not match")
	ErrNotPinned = errors.New("key is not pinned by the trust file")
	ErrNoTrust   = errors.New("no trust file: the keys come only from the bundle, which proves nothing on its own")
)

// VerifyError is a failed verification check: which check, and where.
type VerifyError struct {
	Check  string // one of the Check* names
	Seq    int64  // the event seq involved, or -1
	Field  string // the object field involved, e.g. "receipt.eventsHead"
	Signer string // the signer involved, for signature checks
	Err    error
}

func (e *VerifyError) Error() string {
	msg := e.Check + ": "
	if e.Field != "" {
		msg += e.Field + ": "
	}
	return msg + e.Err.Error()
}

func (e *VerifyError) Unwrap() error { return e.Err }

// CheckResult is the outcome of one named check.
type CheckResult struct {
	Name string
	Err  error // nil when the check passed; a *VerifyError otherwise
}

// Report is the outcome of verifying a bundle.
type Report struct {
	Checks []CheckResult
	// Note explains how keys were trusted (pinned, or vouched for by the
	// plane countersignature).
	Note string
}

// Valid reports whether every integrity check passed (every check but
// pinned-keys).
func (r *Report) Valid() bool {
	for _, c := range r.Checks {
		if c.Err != nil && c.Name != CheckPinnedKeys {
			return false
		}
	}
	return len(r.Checks) > 0
}

// Trusted reports whether the bundle is valid and its keys are pinned by
// the verifier's trust file. Only a trusted bundle is verified.
func (r *Report) Trusted() bool {
	if !r.Valid() {
		return false
	}
	for _, c := range r.Checks {
		if c.Name == CheckPinnedKeys {
			return c.Err == nil
		}
	}
	return false
}

// Err returns the first failed check, or nil when the bundle is trusted.
func (r *Report) Err() error {
	for _, c := range r.Checks {
		if c.Err != nil {
			return c.Err
		}
	}
	if len(r.Checks) == 0 {
		return errors.New("nothing was verified")
	}
	return nil
}

func failure(check, field string, err error) error {
	return &VerifyError{Check: check, Seq: -1, Field: field, Err: err}
}

func mismatch(check, field, format string, args ...any) error {
	return failure(check, field, fmt.Errorf("%w: "+format, append([]any{ErrMismatch}, args...)...))
}

// VerifyCompletion runs the checks the plane runs when a runner completes a
// run, before it countersigns: everything that does not need the plane's
// own signatures (checks 2–9 and 11). It returns the first failure.
func VerifyCompletion(c *Contract, events []ChainedEvent, r *Receipt, runnerKey *PublicKey) error {
	contractHash, hashErr := c.Hash()
	var runnerSigErr error
	if runnerKey != nil {
		runnerSigErr = r.VerifySignature(SignerRunner, runnerKey)
	}
	for _, res := range linkageChecks(c, contractHash, hashErr, events, r, runnerKey, runnerSigErr) {
		if res.Err != nil {
			return res.Err
		}
	}
	return nil
}

// linkageChecks verifies the receipt against the contract, the events and
// the runner key. The caller hashes the contract and verifies the runner
// signature (runnerSigErr), so that costly work can run in parallel.
func linkageChecks(c *Contract, contractHash string, hashErr error, events []ChainedEvent, r *Receipt, runnerKey *PublicKey, runnerSigErr error) []CheckResult {
	out := make([]CheckResult, 0, 12)
	add := func(name string, err error) { out = append(out, CheckResult{Name: name, Err: err}) }

	// 2. binding
	switch {
	case hashErr != nil:
		add(CheckReceiptBinding, failure(CheckReceiptBinding, "contract", hashErr))
	case r.RunID != c.RunID:
		add(CheckReceiptBinding, mismatch(CheckReceiptBinding, "receipt.runId", "receipt names run %q, contract %q", r.RunID, c.RunID))
	case r.ContractHash != contractHash:
		add(CheckReceiptBinding, mismatch(CheckReceiptBinding, "receipt.contractHash", "receipt names contract %s, contract hashes to %s", r.ContractHash, contractHash))
	default:
		add(CheckReceiptBinding, nil)
	}

	// 3. runner key and pool
	switch {
	case runnerKey == nil:
		add(CheckRunnerKey, failure(CheckRunnerKey, "keys.runnerPublicKeyPem", errors.New("no runner public key")))
	case r.Runner.KeyID != runnerKey.ID():
		add(CheckRunnerKey, mismatch(CheckRunnerKey, "receipt.runner.keyId", "receipt names %s, runner key is %s", r.Runner.KeyID, runnerKey.ID()))
	case r.Runner.Pool != c.Runner.Pool:
		add(CheckRunnerKey, mismatch(CheckRunnerKey, "receipt.runner.pool", "receipt names pool %q, contract %q", r.Runner.Pool, c.Runner.Pool))
	default:
		add(CheckRunnerKey, nil)
	}

	// 4. runner signature
	if runnerKey == nil {
		add(CheckRunnerSignature, failure(CheckRunnerSignature, "receipt.signatures", errors.New("no runner public key")))
	} else if runnerSigErr != nil {
		add(CheckRunnerSignature, &VerifyError{Check: CheckRunnerSignature, Seq: -1, Field: "receipt.signatures", Signer: SignerRunner, Err: runnerSigErr})
	} else {
		add(CheckRunnerSignature, nil)
	}

	// 5. chain, head, count
	var chainErr error
	if hashErr != nil {
		chainErr = failure(CheckEventChain, "contract", hashErr)
	} else if err := VerifyChain(events, contractHash); err != nil {
		var ce *ChainError
		seq := int64(-1)
		if errors.As(err, &ce) {
			seq = ce.Seq
		}
		chainErr = &VerifyError{Check: CheckEventChain, Seq: seq, Field: fmt.Sprintf("events[%d]", max(seq, 0)), Err: err}
	} else if head := events[len(events)-1]; head.Hash != r.EventsHead {
		chainErr = mismatch(CheckEventChain, "receipt.eventsHead", "last event hash is %s, receipt says %s", head.Hash, r.EventsHead)
	} else if int64(len(events)) != r.EventCount {
		chainErr = mismatch(CheckEventChain, "receipt.eventCount", "chain has %d events, receipt says %d", len(events), r.EventCount)
	}
	add(CheckEventChain, chainErr)

	// 6. terminal status
	if len(events) == 0 {
		add(CheckTerminalStatus, failure(CheckTerminalStatus, "events", ErrChainEmpty))
	} else {
		last := events[len(events)-1]
		status, ok := statusOfTerminal(last.Event.Type())
		switch {
		case !ok:
			add(CheckTerminalStatus, &VerifyError{Check: CheckTerminalStatus, Seq: last.Seq, Field: "receipt.status", Err: fmt.Errorf("last event is %q, not a terminal event", last.Event.Type())})
		case status != r.Status:
			add(CheckTerminalStatus, &VerifyError{Check: CheckTerminalStatus, Seq: last.Seq, Field: "receipt.status", Err: fmt.Errorf("%w: receipt says %q, last event is %q", ErrMismatch, r.Status, last.Event.Type())})
		default:
			add(CheckTerminalStatus, nil)
		}
	}

	// 7. workspace in
	manifestHash, mErr := c.ManifestHash()
	switch {
	case mErr != nil:
		add(CheckWorkspaceIn, failure(CheckWorkspaceIn, "contract.workspace", mErr))
	case r.WorkspaceIn.BaseRef != c.Workspace.BaseRef:
		add(CheckWorkspaceIn, mismatch(CheckWorkspaceIn, "receipt.workspaceIn.baseRef", "receipt says %q, contract %q", r.WorkspaceIn.BaseRef, c.Workspace.BaseRef))
	case r.WorkspaceIn.ManifestHash != manifestHash:
		add(CheckWorkspaceIn, mismatch(CheckWorkspaceIn, "receipt.workspaceIn.manifestHash", "receipt says %s, contract workspace hashes to %s", r.WorkspaceIn.ManifestHash, manifestHash))
	default:
		add(CheckWorkspaceIn, nil)
	}

	// 8, 9, 11: lists derived from the events
	d, dErr := deriveFromEvents(events)
	if dErr != nil {
		for _, name := range []string{CheckSecretsReleased, CheckDiffArtifact, CheckNetworkAccessed, CheckBoundaryDisclosures} {
			add(name, failure(name, "events", dErr))
		}
		return out
	}
	add(CheckSecretsReleased, sameMultiset(CheckSecretsReleased, "receipt.secretsReleased", r.SecretsReleased, d.secrets))
	if r.WorkspaceOut.DiffHash != "" && !d.artifacts[r.WorkspaceOut.DiffHash] {
		add(CheckDiffArtifact, mismatch(CheckDiffArtifact, "receipt.workspaceOut.diffHash", "no artifact.created event names diff %s", r.WorkspaceOut.DiffHash))
	} else {
		add(CheckDiffArtifact, nil)
	}
	add(CheckNetworkAccessed, sameSet(CheckNetworkAccessed, "receipt.networkAccessed", r.NetworkAccessed, d.network))
	add(CheckBoundaryDisclosures, sameList(CheckBoundaryDisclosures, "receipt.boundaryDisclosures", r.BoundaryDisclosures, d.disclosures))
	return out
}

// sameMultiset compares two lists ignoring order, counting duplicates.
func sameMultiset[T comparable](check, field string, got, want []T) error {
	if len(got) != len(want) {
		return mismatch(check, field, "receipt lists %d, events have %d", len(got), len(want))
	}
	count := make(map[T]int, len(want))
	for _, w := range want {
		count[w]++
	}
	for _, g := range got {
		if count[g] == 0 {
			return mismatch(check, field, "receipt lists %+v, which no event records", g)
		}
		count[g]--
	}
	return nil
}

// sameSet compares two lists of distinct entries ignoring order.
func sameSet[T comparable](check, field string, got, want []T) error {
	seen := make(map[T]bool, len(got))
	for _, g := range got {
		if seen[g] {
			return mismatch(check, field, "receipt lists %+v twice", g)
		}
		seen[g] = true
	}
	return sameMultiset(check, field, got, want)
}

// sameList compares two lists in order.
func sameList[T comparable](check, field string, got, want []T) error {
	if len(got) != len(want) {
		return mismatch(check, field, "receipt lists %d, events have %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			return mismatch(check, fmt.Sprintf("%s[%d]", field, i), "receipt lists %+v, event records %+v", got[i], want[i])
		}
	}
	return nil
}

// VerifyBundle verifies a bundle offline. Keys are read from the bundle,
// but a bundle is only trusted when its plane key (and, where the trust
// file lists such keys, its runner and org keys) is pinned by trust; with
// a nil trust store the pinned-keys check fails and the report is at best
// Valid, never Trusted.
func VerifyBundle(b *Bundle, trust *TrustStore) *Report {
	rep := &Report{}
	add := func(name string, err error) { rep.Checks = append(rep.Checks, CheckResult{Name: name, Err: err}) }
	if b == nil || b.Contract == nil || b.Receipt == nil {
		add(checkNameForDecodeFailure, failure(checkNameForDecodeFailure, "bundle", errors.New("bundle has no contract or receipt")))
		return rep
	}
	planeKey, planeErr := ParsePublicKeyPEM(b.Keys.PlanePublicKeyPEM)
	if planeErr != nil {
		planeErr = failure(CheckContractSignature, "keys.planePublicKeyPem", planeErr)
	}
	runnerKey, runnerErr := ParsePublicKeyPEM(b.Keys.RunnerPublicKeyPEM)
	if runnerErr != nil {
		runnerKey = nil
	}
	var orgKey *PublicKey
	var orgErr error
	if b.Keys.OrgPublicKeyPEM != "" {
		orgKey, orgErr = ParsePublicKeyPEM(b.Keys.OrgPublicKeyPEM)
	}

	// The three signature verifications dominate the cost: hash each signed
	// object once, verify the signatures in parallel beside the linkage
	// checks.
	contractHash, contractHashErr := b.Contract.Hash()
	receiptHash, receiptHashErr := b.Receipt.Hash()
	verify := func(object string, sigs []Signature, signer string, key *PublicKey, hash string, hashErr error) error {
		if hashErr != nil {
			return hashErr
		}
		return verifySignature(object, sigs, signer, key, hash)
	}
	var wg sync.WaitGroup
	var contractSigErr, counterSigErr, runnerSigErr error
	if planeErr == nil {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := verify("contract", b.Contract.Signatures, SignerPlane, planeKey, contractHash, contractHashErr); err != nil {
				contractSigErr = &VerifyError{Check: CheckContractSignature, Seq: -1, Field: "contract.signatures", Signer: SignerPlane, Err: err}
			}
		}()
		go func() {
			defer wg.Done()
			if err := verify("receipt", b.Receipt.Signatures, SignerPlane, planeKey, receiptHash, receiptHashErr); err != nil {
				counterSigErr = &VerifyError{Check: CheckPlaneCountersign, Seq: -1, Field: "receipt.signatures", Signer: SignerPlane, Err: err}
			}
		}()
	} else {
		contractSigErr, counterSigErr = planeErr, failure(CheckPlaneCountersign, "keys.planePublicKeyPem", planeErr)
	}
	if runnerKey != nil {
		runnerSigErr = verify("receipt", b.Receipt.Signatures, SignerRunner, runnerKey, receiptHash, receiptHashErr)
	}
	linkage := linkageChecks(b.Contract, contractHash, contractHashErr, b.Events, b.Receipt, runnerKey, runnerSigErr)
	if runnerErr != nil {
		for i := range linkage {
			if linkage[i].Name == CheckRunnerKey {
				linkage[i].Err = failure(CheckRunnerKey, "keys.runnerPublicKeyPem", runnerErr)
			}
		}
	}
	wg.Wait()

	add(CheckContractSignature, contractSigErr)
	rep.Checks = append(rep.Checks, linkage[:8]...) // checks 2–9
	add(CheckPlaneCountersign, counterSigErr)
	rep.Checks = append(rep.Checks, linkage[8:]...) // check 11
	if orgKey != nil || orgErr != nil {
		switch {
		case orgErr != nil:
			add(CheckOrgSignature, failure(CheckOrgSignature, "keys.orgPublicKeyPem", orgErr))
		default:
			if err := b.Contract.VerifySignature(SignerOrg, orgKey); err != nil {
				add(CheckOrgSignature, &VerifyError{Check: CheckOrgSignature, Seq: -1, Field: "contract.signatures", Signer: SignerOrg, Err: err})
			} else {
				add(CheckOrgSignature, nil)
			}
		}
	}
	pinErr, note := checkPinned(trust, planeKey, runnerKey, orgKey)
	add(CheckPinnedKeys, pinErr)
	rep.Note = note
	return rep
}

func checkPinned(trust *TrustStore, planeKey, runnerKey, orgKey *PublicKey) (error, string) {
	if trust == nil || trust.Len() == 0 {
		return failure(CheckPinnedKeys, "", ErrNoTrust), "keys taken from the bundle only"
	}
	if planeKey == nil {
		return failure(CheckPinnedKeys, "keys.planePublicKeyPem", errors.New("no usable plane key")), ""
	}
	if !trust.Has(SignerPlane, planeKey) {
		return &VerifyError{Check: CheckPinnedKeys, Seq: -1, Field: "keys.planePublicKeyPem", Signer: SignerPlane, Err: fmt.Errorf("%w: plane key %s", ErrNotPinned, planeKey.ID())}, ""
	}
	note := "plane key " + planeKey.ID() + " pinned"
	switch {
	case trust.HasRole(SignerRunner) && runnerKey != nil && !trust.Has(SignerRunner, runnerKey):
		return &VerifyError{Check: CheckPinnedKeys, Seq: -1, Field: "keys.runnerPublicKeyPem", Signer: SignerRunner, Err: fmt.Errorf("%w: runner key %s", ErrNotPinned, runnerKey.ID())}, note
	case trust.HasRole(SignerRunner) && runnerKey != nil:
		note += "; runner key " + runnerKey.ID() + " pinned"
	case runnerKey != nil:
		note += "; runner key " + runnerKey.ID() + " vouched for by the pinned plane's countersignature"
	}
	if orgKey != nil {
		if trust.HasRole(SignerOrg) && !trust.Has(SignerOrg, orgKey) {
			return &VerifyError{Check: CheckPinnedKeys, Seq: -1, Field: "keys.orgPublicKeyPem", Signer: SignerOrg, Err: fmt.Errorf("%w: org key %s", ErrNotPinned, orgKey.ID())}, note
		}
		if trust.HasRole(SignerOrg) {
			note += "; org key " + orgKey.ID() + " pinned"
		}
	}
	return nil, note
}
