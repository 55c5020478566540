package protocol

import (
	"fmt"
	"reflect"
	"time"
)

// Version strings of the v1 objects.
const (
	VersionContract = "warrant.contract.v1"
	VersionReceipt  = "warrant.receipt.v1"
	VersionEvent    = "warrant.event.v1"
	VersionManifest = "warrant.manifest.v1"
	VersionPolicy   = "warrant.policy.v1"
	VersionBundle   = "warrant.bundle.v1"
)

// Agent kinds.
const (
	AgentClaudeCode = "claude-code"
	AgentCodex      = "codex"
	AgentPi         = "pi"
	AgentMock       = "mock"
	AgentCommand    = "command"
)

// AgentKinds lists every agent kind of protocol v1.
var AgentKinds = []string{AgentClaudeCode, AgentCodex, AgentPi, AgentMock, AgentCommand}

// Run states: one vocabulary for the plane, the CLI and the UI.
const (
	StateCreated          = "created"
	StateClaimed          = "claimed"
	StateProvisioning     = "provisioning"
	StateRunning          = "running"
	StateAwaitingApproval = "awaiting_approval"
	StateCompleted        = "completed"
	StateFailed           = "failed"
	StateCancelled        = "cancelled"
)

// RunStates lists every run state.
var RunStates = []string{StateCreated, StateClaimed, StateProvisioning, StateRunning, StateAwaitingApproval, StateCompleted, StateFailed, StateCancelled}

// IsTerminalState reports whether a run in state s can change no more.
func IsTerminalState(s string) bool {
	return s == StateCompleted || s == StateFailed || s == StateCancelled
}

// Failure classes carried by run.failed events and API errors.
const (
	FailurePolicyDenied        = "policy_denied"
	FailureConsentTimeout      = "consent_timeout"
	FailureCapabilityMismatch  = "capability_mismatch"
	FailureAttestationFailed   = "attestation_failed"
	FailureSecretReleaseDenied = "secret_release_denied"
	FailureCaptureFailed       = "capture_failed"
	FailureTransferFailed      = "transfer_failed"
	FailureSessionFailed       = "session_failed"
	FailureSideEffectConflict  = "side_effect_conflict"
	FailureBudgetExceeded      = "budget_exceeded"
)

// FailureClasses lists every failure class.
var FailureClasses = []string{FailurePolicyDenied, FailureConsentTimeout, FailureCapabilityMismatch, FailureAttestationFailed, FailureSecretReleaseDenied, FailureCaptureFailed, FailureTransferFailed, FailureSessionFailed, FailureSideEffectConflict, FailureBudgetExceeded}

// Disclosure modes.
var DisclosureModes = []string{"none", "metadata-only", "redacted", "minimal-context", "full"}

// Session isolation tiers. "process" and "namespace" are built into this
// implementation; the others are recognised from the original.
const (
	IsolationProcess   = "process"
	IsolationNamespace = "namespace"
)

// Attestation tiers.
const AttestationMock = "mock"

// TimeLayout is the protocol's timestamp form: RFC 3339, UTC, milliseconds.
const TimeLayout = "2006-01-02T15:04:05.000Z"

// FormatTime renders t in the protocol's timestamp form.
func FormatTime(t time.Time) string { return t.UTC().Format(TimeLayout) }

// ParseTime reads a protocol timestamp (any RFC 3339 time is accepted).
func ParseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("invalid timestamp %q: want RFC 3339 such as 2026-01-02T15:04:05.000Z", s)
	}
	return t, nil
}

// ActorRef names a human or service principal.
type ActorRef struct {
	Kind string `json:"kind"` // "human" | "service"
	ID   string `json:"id"`
}

// KeyRef names the key that issued an object.
type KeyRef struct {
	KeyID string `json:"keyId"`
	Role  string `json:"role"` // "org" | "plane" | "runner"
}

// Signature is one entry of a signed object's signatures array.
type Signature struct {
	KeyID  string `json:"keyId"`
	Alg    string `json:"alg"`
	Signer string `json:"signer"`
	Sig    string `json:"sig"`
}

// AgentSpec names the agent harness.
type AgentSpec struct {
	Kind    string `json:"kind"`
	Version string `json:"version,omitempty"`
}

// TaskSpec is the human-authored task.
type TaskSpec struct {
	Prompt string `json:"prompt"`
}

// RunnerSelector selects the runner pool.
type RunnerSelector struct {
	Pool string `json:"pool"`
}

// SecretClaim names a secret (never its value) and its scope.
type SecretClaim struct {
	Name  string `json:"name"`
	Scope string `json:"scope"`
}

// NetworkPolicy is the egress policy of a run.
type NetworkPolicy struct {
	DefaultDeny bool     `json:"defaultDeny"`
	AllowHosts  []string `json:"allowHosts"`
}

// Budget bounds a run's spend and duration.
type Budget struct {
	MaxSpendUSD    *float64 `json:"maxSpendUsd,omitempty"`
	MaxDurationMin *float64 `json:"maxDurationMin,omitempty"`
}

// ContinuationRef links a run to the work it continues.
type ContinuationRef struct {
	EnvelopeHash string `json:"envelopeHash"`
	CheckpointID string `json:"checkpointId"`
	Tier         string `json:"tier"`
}

// Contract is a warrant.contract.v1: the plane's signed authorization of
// one run.
type Contract struct {
	Version      string           `json:"version"`
	RunID        string           `json:"runId"`
	IssuedAt     string           `json:"issuedAt"`
	Issuer       KeyRef           `json:"issuer"`
	RequestedBy  ActorRef         `json:"requestedBy"`
	ApprovedBy   []ActorRef       `json:"approvedBy,omitempty"`
	Agent        AgentSpec        `json:"agent"`
	Task         TaskSpec         `json:"task"`
	Runner       RunnerSelector   `json:"runner"`
	Workspace    Manifest         `json:"workspace"`
	PolicyHash   string           `json:"policyHash"`
	Secrets      []SecretClaim    `json:"secrets"`
	Network      NetworkPolicy    `json:"network"`
	Budget       Budget           `json:"budget"`
	Disclosure   string           `json:"disclosure"`
	Execution    *ExecutionSpec   `json:"execution,omitempty"`
	Isolation    string           `json:"isolation,omitempty"`
	Continuation *ContinuationRef `json:"continuation,omitempty"`
	ExpiresAt    string           `json:"expiresAt"`
	Signatures   []Signature      `json:"signatures"`

	received Object // the object as decoded, when it was decoded
}

// ManifestFile is one content-addressed file in a manifest.
type ManifestFile struct {
	Path  string `json:"path"`
	Hash  string `json:"hash"`
	Bytes int64  `json:"bytes"`
}

// Manifest is a warrant.manifest.v1: what was captured from the
// requester's workspace. BundleHash names the blob holding the workspace
// content; in this implementation it is a warrant.snapshot.v1 index (see
// Snapshot) when Format says so.
type Manifest struct {
	Version        string         `json:"version"`
	BaseRef        string         `json:"baseRef"`
	BundleHash     string         `json:"bundleHash"`
	DirtyDiffHash  string         `json:"dirtyDiffHash,omitempty"`
	UntrackedFiles []ManifestFile `json:"untrackedFiles"`
	DeniedPatterns []string       `json:"deniedPatterns"`
	DeniedPaths    []string       `json:"deniedPaths"`
	// Format names the format of the BundleHash blob. Optional; absent means
	// the original's git bundle. This implementation writes SnapshotVersion.
	Format string `json:"format,omitempty"`

	received Object
}

// Policy is a warrant.policy.v1: the plane's rules for issuing contracts.
type Policy struct {
	Version     string          `json:"version"`
	Runners     PolicyRunners   `json:"runners"`
	Agents      PolicyAgents    `json:"agents"`
	DataClasses []DataClassRule `json:"dataClasses"`
	Network     NetworkPolicy   `json:"network"`
	Secrets     PolicySecrets   `json:"secrets"`
	Budget      PolicyBudget    `json:"budget"`
	Consent     []ConsentRule   `json:"consent"`
	Retention   Retention       `json:"retention"`

	received Object
}

// PolicyRunners lists the runner pools contracts may target.
type PolicyRunners struct {
	AllowPools []string `json:"allowPools"`
}

// PolicyAgents lists the agent kinds contracts may name.
type PolicyAgents struct {
	Allow []string `json:"allow"`
}

// DataClassRule limits which pools may see a data class.
type DataClassRule struct {
	DataClass  string   `json:"dataClass"`
	AllowPools []string `json:"allowPools"`
}

// PolicySecrets lists the secrets that may be released, and to which pools.
type PolicySecrets struct {
	Releasable []SecretScopeRule `json:"releasable"`
}

// SecretScopeRule makes one secret releasable to some pools.
type SecretScopeRule struct {
	Name  string   `json:"name"`
	Scope string   `json:"scope"`
	Pools []string `json:"pools"`
}

// PolicyBudget holds the ceilings a run's budget may not exceed.
type PolicyBudget struct {
	MaxSpendUSD    float64 `json:"maxSpendUsd"`
	MaxDurationMin float64 `json:"maxDurationMin"`
}

// ConsentRule asks for approval before a matching run gets its contract.
// When is "any-run", "agent-kind" (Match names the kind) or
// "secret-release" (Match names the secret; empty matches any secret).
type ConsentRule struct {
	When      string   `json:"when"`
	Match     string   `json:"match,omitempty"`
	Approvers []string `json:"approvers"`
}

// Retention says how long receipts and artifacts are kept.
type Retention struct {
	ReceiptsDays  float64 `json:"receiptsDays"`
	ArtifactsDays float64 `json:"artifactsDays"`
}

// RunnerIdentity is the receipt's record of who ran the session and how.
type RunnerIdentity struct {
	RunnerID        string `json:"runnerId"`
	KeyID           string `json:"keyId"`
	Pool            string `json:"pool"`
	AttestationTier string `json:"attestationTier"`
	Isolation       string `json:"isolation,omitempty"`
}

// WorkspaceIn binds a receipt to the captured workspace.
type WorkspaceIn struct {
	BaseRef      string `json:"baseRef"`
	ManifestHash string `json:"manifestHash"`
}

// WorkspaceOut names what the run produced.
type WorkspaceOut struct {
	DiffHash       string   `json:"diffHash"`
	ArtifactHashes []string `json:"artifactHashes"`
}

// SecretRelease records one secret.released event.
type SecretRelease struct {
	Name  string `json:"name"`
	Scope string `json:"scope"`
	TS    string `json:"ts"`
}

// NetworkAccess is one distinct (host, decision) pair.
type NetworkAccess struct {
	Host     string `json:"host"`
	Decision string `json:"decision"`
}

// ModelUsage names a model the run called.
type ModelUsage struct {
	Provider string `json:"provider"`
	Model    string `json:"model"`
}

// Disclosure records one boundary.crossed event.
type Disclosure struct {
	Direction   string `json:"direction"`
	ContentHash string `json:"contentHash"`
	DataClass   string `json:"dataClass"`
}

// Receipt is a warrant.receipt.v1: the runner's signed record of a run,
// countersigned by the plane.
type Receipt struct {
	Version             string          `json:"version"`
	RunID               string          `json:"runId"`
	ContractHash        string          `json:"contractHash"`
	Runner              RunnerIdentity  `json:"runner"`
	StartedAt           string          `json:"startedAt"`
	EndedAt             string          `json:"endedAt"`
	Status              string          `json:"status"`
	EventsHead          string          `json:"eventsHead"`
	EventCount          int64           `json:"eventCount"`
	WorkspaceIn         WorkspaceIn     `json:"workspaceIn"`
	WorkspaceOut        WorkspaceOut    `json:"workspaceOut"`
	SecretsReleased     []SecretRelease `json:"secretsReleased"`
	NetworkAccessed     []NetworkAccess `json:"networkAccessed"`
	ModelsUsed          []ModelUsage    `json:"modelsUsed"`
	BoundaryDisclosures []Disclosure    `json:"boundaryDisclosures"`
	CostUSD             *float64        `json:"costUsd,omitempty"`
	Signatures          []Signature     `json:"signatures"`

	received Object
}

// BundleKeys are the public keys a bundle carries. They are hints: trust
// comes from pinned keys (see TrustStore), never from the bundle alone.
type BundleKeys struct {
	PlanePublicKeyPEM  string `json:"planePublicKeyPem"`
	RunnerPublicKeyPEM string `json:"runnerPublicKeyPem"`
	OrgPublicKeyPEM    string `json:"orgPublicKeyPem,omitempty"`
}

// Bundle is a warrant.bundle.v1: everything needed to verify a run offline.
type Bundle struct {
	Version  string         `json:"version"`
	Contract *Contract      `json:"contract"`
	Receipt  *Receipt       `json:"receipt"`
	Events   []ChainedEvent `json:"events"`
	Keys     BundleKeys     `json:"keys"`
}

// --- decoding and encoding that keep the received bytes ---

func decodeReceived(path string, v any, plain any, received *Object) error {
	obj, ok := v.(Object)
	if !ok {
		return typeError(path, "an object", v)
	}
	if err := fromTree(path, v, reflect.ValueOf(plain).Elem()); err != nil {
		return err
	}
	*received = obj
	return nil
}

// encodeReceived renders an object from its received tree when it has one,
// so members this implementation does not know survive and the hashed
// bytes stay exactly those received. A known member whose struct field was
// edited after decoding is taken from the struct instead, so edits are
// never silently lost. Signatures always come from the struct.
func encodeReceived(received Object, plain any, signatures []Signature, hasSignatures bool) (any, error) {
	fresh, err := encodeValue(reflect.ValueOf(plain))
	if err != nil || received == nil {
		return fresh, err
	}
	freshObj, ok := fresh.(Object)
	if !ok {
		return fresh, nil
	}
	out := received
	copied := false
	set := func(key string, v any, present bool) {
		if !copied {
			out = append(Object(nil), received...)
			copied = true
		}
		if present {
			out = out.With(key, v)
			return
		}
		if i, ok := out.index(key); ok {
			out = append(out[:i:i], out[i+1:]...)
		}
	}
	for _, f := range fieldsOf(reflect.TypeOf(plain)) {
		if f.name == "signatures" && hasSignatures {
			continue
		}
		fv, inFresh := freshObj.Get(f.name)
		rv, inReceived := received.Get(f.name)
		switch {
		case inFresh && inReceived:
			if !treesEqual(fv, rv) {
				set(f.name, fv, true)
			}
		case inFresh:
			set(f.name, fv, true)
		case inReceived && !isEmptyTree(rv):
			// The field was cleared (omitted as zero) after decoding.
			set(f.name, nil, false)
		}
	}
	if hasSignatures {
		sigs, _ := freshObj.Get("signatures")
		if !copied {
			return received.With("signatures", sigs), nil
		}
		out = out.With("signatures", sigs)
	}
	return out, nil
}

// treesEqual reports whether two parsed trees are the same JSON value.
func treesEqual(a, b any) bool {
	switch a := a.(type) {
	case nil:
		return b == nil
	case bool:
		bb, ok := b.(bool)
		return ok && a == bb
	case float64:
		bf, ok := b.(float64)
		return ok && a == bf
	case string:
		bs, ok := b.(string)
		return ok && a == bs
	case []any:
		bl, ok := b.([]any)
		if !ok || len(a) != len(bl) {
			return false
		}
		for i := range a {
			if !treesEqual(a[i], bl[i]) {
				return false
			}
		}
		return true
	case Object:
		bo, ok := b.(Object)
		if !ok || len(a) != len(bo) {
			return false
		}
		for i := range a {
			if a[i].Key != bo[i].Key || !treesEqual(a[i].Value, bo[i].Value) {
				return false
			}
		}
		return true
	}
	return false
}

// isEmptyTree reports whether v is what an omitempty field leaves out:
// an empty array, object or string, false or 0.
func isEmptyTree(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case bool:
		return !v
	case float64:
		return v == 0
	case string:
		return v == ""
	case []any:
		return len(v) == 0
	case Object:
		return len(v) == 0
	}
	return false
}

func (c *Contract) decodeTree(path string, v any) error {
	type plain Contract
	if err := decodeReceived(path, v, (*plain)(c), &c.received); err != nil {
		return err
	}
	return checkVersion(path, "contract", c.Version)
}

func (c Contract) encodeTree() (any, error) {
	type plain Contract
	return encodeReceived(c.received, plain(c), c.Signatures, true)
}

func (m *Manifest) decodeTree(path string, v any) error {
	type plain Manifest
	if err := decodeReceived(path, v, (*plain)(m), &m.received); err != nil {
		return err
	}
	return checkVersion(path, "manifest", m.Version)
}

func (m Manifest) encodeTree() (any, error) {
	type plain Manifest
	return encodeReceived(m.received, plain(m), nil, false)
}

func (p *Policy) decodeTree(path string, v any) error {
	type plain Policy
	if err := decodeReceived(path, v, (*plain)(p), &p.received); err != nil {
		return err
	}
	return checkVersion(path, "policy", p.Version)
}

func (p Policy) encodeTree() (any, error) {
	type plain Policy
	return encodeReceived(p.received, plain(p), nil, false)
}

func (r *Receipt) decodeTree(path string, v any) error {
	type plain Receipt
	if err := decodeReceived(path, v, (*plain)(r), &r.received); err != nil {
		return err
	}
	return checkVersion(path, "receipt", r.Version)
}

func (r Receipt) encodeTree() (any, error) {
	type plain Receipt
	return encodeReceived(r.received, plain(r), r.Signatures, true)
}

func (b *Bundle) decodeTree(path string, v any) error {
	type plain Bundle
	if err := fromTree(path, v, reflect.ValueOf((*plain)(b)).Elem()); err != nil {
		return err
	}
	if err := checkVersion(path, "bundle", b.Version); err != nil {
		return err
	}
	if b.Contract == nil {
		return &FieldError{Path: path + ".contract", Reason: "expected an object, got null"}
	}
	if b.Receipt == nil {
		return &FieldError{Path: path + ".receipt", Reason: "expected an object, got null"}
	}
	return nil
}

// Hash returns the contract hash: the hash of the contract without its
// signatures. It is the genesis prev of the run's event chain.
func (c *Contract) Hash() (string, error) { return unsignedHash(c) }

// Hash returns the manifest hash (what workspace.materialized and
// receipt.workspaceIn.manifestHash carry).
func (m *Manifest) Hash() (string, error) { return Hash(m) }

// Hash returns the policy hash that contracts carry as policyHash.
func (p *Policy) Hash() (string, error) { return Hash(p) }

// Hash returns the receipt hash without signatures: the payload both the
// runner signature and the plane countersignature cover.
func (r *Receipt) Hash() (string, error) { return unsignedHash(r) }

func unsignedHash(v treeEncoder) (string, error) {
	t, err := v.encodeTree()
	if err != nil {
		return "", err
	}
	obj, ok := t.(Object)
	if !ok {
		return "", fmt.Errorf("signed object is not a JSON object")
	}
	b, err := appendObject(make([]byte, 0, 2048), obj, "signatures")
	if err != nil {
		return "", err
	}
	return HashBytes(b), nil
}

// ManifestHash returns the hash of the contract's workspace manifest as
// received (hash(contract.workspace)).
func (c *Contract) ManifestHash() (string, error) {
	if c.received != nil {
		if ws, ok := c.received.Get("workspace"); ok {
			b, err := AppendCanonical(nil, ws)
			if err != nil {
				return "", err
			}
			return HashBytes(b), nil
		}
	}
	return c.Workspace.Hash()
}

// EffectiveExecution returns the contract's execution spec, or the default
// the protocol derives from the agent and task when it has none: the
// command agent runs the prompt as a shell script, every other agent runs
// as itself.
func (c *Contract) EffectiveExecution() ExecutionSpec {
	if c.Execution != nil {
		return *c.Execution
	}
	return DefaultExecution(c.Agent, c.Task.Prompt)
}

// EffectiveIsolation returns the requested isolation tier ("process" when
// absent).
func (c *Contract) EffectiveIsolation() string {
	if c.Isolation == "" {
		return IsolationProcess
	}
	return c.Isolation
}

// DefaultExecution is the execution the protocol derives from an agent and
// prompt when a contract names none.
func DefaultExecution(agent AgentSpec, prompt string) ExecutionSpec {
	if agent.Kind == AgentCommand {
		return ExecutionSpec{Kind: ExecShell, Script: prompt}
	}
	a := agent
	return ExecutionSpec{Kind: ExecAgent, Agent: &a, Prompt: prompt}
}

// MarshalJSON renders the canonical JSON of the contract.
func (c Contract) MarshalJSON() ([]byte, error) { return Canonical(c) }

// UnmarshalJSON strictly decodes a contract, keeping its received members.
func (c *Contract) UnmarshalJSON(b []byte) error { return decodeJSON(b, "contract", c) }

// MarshalJSON renders the canonical JSON of the manifest.
func (m Manifest) MarshalJSON() ([]byte, error) { return Canonical(m) }

// UnmarshalJSON strictly decodes a manifest.
func (m *Manifest) UnmarshalJSON(b []byte) error { return decodeJSON(b, "manifest", m) }

// MarshalJSON renders the canonical JSON of the policy.
func (p Policy) MarshalJSON() ([]byte, error) { return Canonical(p) }

// UnmarshalJSON strictly decodes a policy.
func (p *Policy) UnmarshalJSON(b []byte) error { return decodeJSON(b, "policy", p) }

// MarshalJSON renders the canonical JSON of the receipt.
func (r Receipt) MarshalJSON() ([]byte, error) { return Canonical(r) }

// UnmarshalJSON strictly decodes a receipt.
func (r *Receipt) UnmarshalJSON(b []byte) error { return decodeJSON(b, "receipt", r) }

// MarshalJSON renders the canonical JSON of the bundle.
func (b Bundle) MarshalJSON() ([]byte, error) {
	type plain Bundle
	return Canonical(plain(b))
}

// UnmarshalJSON strictly decodes a bundle.
func (b *Bundle) UnmarshalJSON(data []byte) error { return decodeJSON(data, "bundle", b) }

// ParseBundle strictly decodes a warrant.bundle.v1 JSON text.
func ParseBundle(data []byte) (*Bundle, error) {
	var b Bundle
	if err := decodeJSON(data, "bundle", &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// ParseContract strictly decodes a warrant.contract.v1 JSON text.
func ParseContract(data []byte) (*Contract, error) {
	var c Contract
	if err := decodeJSON(data, "contract", &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// ParseReceipt strictly decodes a warrant.receipt.v1 JSON text.
func ParseReceipt(data []byte) (*Receipt, error) {
	var r Receipt
	if err := decodeJSON(data, "receipt", &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// ParsePolicy strictly decodes a warrant.policy.v1 JSON text.
func ParsePolicy(data []byte) (*Policy, error) {
	var p Policy
	if err := decodeJSON(data, "policy", &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// ParseManifest strictly decodes a warrant.manifest.v1 JSON text.
func ParseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	if err := decodeJSON(data, "manifest", &m); err != nil {
		return nil, err
	}
	return &m, nil
}
