package client

import (
	"slices"

	"warrant.dev/warrant/protocol"
)

// Roles of principals.
const (
	RoleAdmin     = "admin"     // everything
	RoleRequester = "requester" // submit runs, read and cancel their own runs, upload blobs
	RoleApprover  = "approver"  // read all runs, approve or deny runs they did not request
	RoleAuditor   = "auditor"   // read everything (never secret values)
	RoleRunner    = "runner"    // runners: claim work for their pool
)

// Roles lists the principal roles a token can carry.
var Roles = []string{RoleAdmin, RoleRequester, RoleApprover, RoleAuditor}

// Info is GET /v1/info (no authentication): who the plane is.
type Info struct {
	Version           string `json:"version"`
	PlaneKeyID        string `json:"planeKeyId"`
	PlanePublicKeyPEM string `json:"planePublicKeyPem"`
	ServerTime        string `json:"serverTime"`
}

// Principal is a human or service identity with one role.
type Principal struct {
	ID        string      `json:"id"`
	Name      string      `json:"name"`
	Kind      string      `json:"kind"` // "human" | "service"
	Role      string      `json:"role"`
	CreatedAt string      `json:"createdAt"`
	Disabled  bool        `json:"disabled,omitempty"`
	Tokens    []TokenInfo `json:"tokens,omitempty"`
}

// TokenInfo describes a token without its secret.
type TokenInfo struct {
	ID         string `json:"id"`
	CreatedAt  string `json:"createdAt"`
	LastUsedAt string `json:"lastUsedAt,omitempty"`
	RevokedAt  string `json:"revokedAt,omitempty"`
}

// NewToken is a freshly minted token: its secret is shown once.
type NewToken struct {
	ID     string `json:"id"`
	Secret string `json:"secret"`
}

// WhoAmI is GET /v1/whoami.
type WhoAmI struct {
	Principal Principal `json:"principal"`
	TokenID   string    `json:"tokenId"`
}

// CreatePrincipalRequest is POST /v1/principals.
type CreatePrincipalRequest struct {
	Name string `json:"name"`
	Kind string `json:"kind,omitempty"` // default "human"
	Role string `json:"role"`
}

// CreatePrincipalResponse returns the principal and its first token.
type CreatePrincipalResponse struct {
	Principal Principal `json:"principal"`
	Token     NewToken  `json:"token"`
}

// EnrollTokenRequest is POST /v1/enroll-tokens.
type EnrollTokenRequest struct {
	Pool       string `json:"pool"`
	TTLSeconds int    `json:"ttlSeconds,omitempty"` // default 3600
}

// EnrollToken is a one-time token that enrolls one runner into one pool.
type EnrollToken struct {
	Token     string `json:"token"`
	Pool      string `json:"pool"`
	ExpiresAt string `json:"expiresAt"`
}

// EnrollRequest is POST /v1/runners/enroll (authenticated by the enroll
// token in the body). Proof is the runner key's signature (standard
// base64) over "warrant-enroll-v1:" + EnrollToken, so the plane knows the
// runner holds the private key it registers.
type EnrollRequest struct {
	EnrollToken  string   `json:"enrollToken"`
	PublicKeyPEM string   `json:"publicKeyPem"`
	Pool         string   `json:"pool"`
	Name         string   `json:"name,omitempty"`
	Tiers        []string `json:"tiers,omitempty"`
	Proof        string   `json:"proof"`
}

// EnrollProofMessage is what a runner signs to prove it holds its key.
func EnrollProofMessage(enrollToken string) []byte {
	return []byte("warrant-enroll-v1:" + enrollToken)
}

// EnrollResponse carries the runner's identity and bearer token.
type EnrollResponse struct {
	RunnerID          string `json:"runnerId"`
	RunnerToken       string `json:"runnerToken"`
	Pool              string `json:"pool"`
	PlaneKeyID        string `json:"planeKeyId"`
	PlanePublicKeyPEM string `json:"planePublicKeyPem"`
}

// Runner is a row of GET /v1/runners.
type Runner struct {
	ID         string   `json:"id"`
	Name       string   `json:"name,omitempty"`
	Pool       string   `json:"pool"`
	KeyID      string   `json:"keyId"`
	Tiers      []string `json:"tiers"`
	EnrolledAt string   `json:"enrolledAt"`
	LastSeenAt string   `json:"lastSeenAt,omitempty"`
	InFlight   int      `json:"inFlight"`
	RevokedAt  string   `json:"revokedAt,omitempty"`
}

// PolicyView is GET /v1/policy.
type PolicyView struct {
	Policy     protocol.Policy `json:"policy"`
	PolicyHash string          `json:"policyHash"`
}

// SecretInfo describes a stored secret. Values never leave the plane
// except to the runner holding a claim on a run that names the secret.
type SecretInfo struct {
	Name      string `json:"name"`
	CreatedAt string `json:"createdAt"`
	UpdatedAt string `json:"updatedAt"`
}

// PutSecretRequest is PUT /v1/secrets/{name}.
type PutSecretRequest struct {
	Value string `json:"value"`
}

// RunRequest is POST /v1/runs.
type RunRequest struct {
	Agent      protocol.AgentSpec      `json:"agent"`
	Prompt     string                  `json:"prompt"`
	Pool       string                  `json:"pool"`
	Workspace  protocol.Manifest       `json:"workspace"`
	Secrets    []string                `json:"secrets,omitempty"` // secret names
	AllowHosts []string                `json:"allowHosts,omitempty"`
	Budget     protocol.Budget         `json:"budget"`
	Disclosure string                  `json:"disclosure,omitempty"` // default "minimal-context"
	Execution  *protocol.ExecutionSpec `json:"execution,omitempty"`
	Isolation  string                  `json:"isolation,omitempty"` // default "process"
	// DataClasses labels the workspace's data (e.g. "pii"), for the
	// policy's dataClasses rules; every run also carries the built-in
	// classes (see BuiltinDataClasses).
	DataClasses []string `json:"dataClasses,omitempty"`
	DryRun      bool     `json:"dryRun,omitempty"`
}

// BuiltinDataClasses are the data classes every run carries: its
// workspace goes to the pool's runner, and its diff and session log come
// back across the boundary (the classes of its boundary.crossed events).
var BuiltinDataClasses = []string{"workspace", "code-diff", "session-log"}

// PolicyDecision is the outcome of policy evaluation.
type PolicyDecision struct {
	Decision            string   `json:"decision"` // "allow" | "ask" | "deny"
	Reason              string   `json:"reason"`
	Reasons             []string `json:"reasons,omitempty"` // every reason for a deny
	ConsentRequirements []string `json:"consentRequirements,omitempty"`
}

// DisclosureReport is what a dry run returns: everything the run would
// disclose, with nothing stored.
type DisclosureReport struct {
	DryRun     bool               `json:"dryRun"`
	Agent      protocol.AgentSpec `json:"agent"`
	Pool       string             `json:"pool"`
	BaseRef    string             `json:"baseRef"`
	Files      int                `json:"files"`      // files in the snapshot
	TotalBytes int64              `json:"totalBytes"` // their total size
	// SnapshotMissing is set when the plane does not hold the workspace
	// snapshot (a dry run needs no upload): Files and TotalBytes are then 0
	// and the caller, who has the capture, counts them itself.
	SnapshotMissing bool                    `json:"snapshotMissing,omitempty"`
	UntrackedPaths  []string                `json:"untrackedPaths"`
	DeniedPaths     []string                `json:"deniedPaths"`
	Secrets         []protocol.SecretClaim  `json:"secrets"`
	Network         protocol.NetworkPolicy  `json:"network"`
	Budget          protocol.Budget         `json:"budget"`
	Disclosure      string                  `json:"disclosure"`
	Execution       *protocol.ExecutionSpec `json:"execution,omitempty"`
	Isolation       string                  `json:"isolation"`
	DataClasses     []string                `json:"dataClasses"` // the built-in ones, then the request's
	PolicyDecision  PolicyDecision          `json:"policyDecision"`
}

// SubmitResponse is the reply to POST /v1/runs: the run, or for a dry run
// the disclosure report.
type SubmitResponse struct {
	Run    *Run              `json:"run,omitempty"`
	DryRun *DisclosureReport `json:"dryRun,omitempty"`
}

// Failure says why a run failed.
type Failure struct {
	Class   string `json:"class"` // one of protocol.FailureClasses
	Message string `json:"message"`
}

// Approval is one approver's decision on a run awaiting approval.
type Approval struct {
	Actor    protocol.ActorRef `json:"actor"`
	Decision string            `json:"decision"` // "approved" | "denied"
	Reason   string            `json:"reason,omitempty"`
	At       string            `json:"at"`
}

// Cancellation records who cancelled a run and why.
type Cancellation struct {
	Actor  protocol.ActorRef `json:"actor"`
	Reason string            `json:"reason,omitempty"`
	At     string            `json:"at"`
}

// Run is the plane's view of one run (GET /v1/runs/{id}; rows of
// GET /v1/runs carry the same fields without Contract and Receipt).
type Run struct {
	ID                  string             `json:"id"`
	State               string             `json:"state"` // one of protocol.RunStates
	Agent               protocol.AgentSpec `json:"agent"`
	Pool                string             `json:"pool"`
	Prompt              string             `json:"prompt"`
	Isolation           string             `json:"isolation"`
	RequestedBy         protocol.ActorRef  `json:"requestedBy"`
	CreatedAt           string             `json:"createdAt"`
	UpdatedAt           string             `json:"updatedAt"`
	PolicyDecision      PolicyDecision     `json:"policyDecision"`
	ConsentRequirements []string           `json:"consentRequirements,omitempty"`
	Approvals           []Approval         `json:"approvals,omitempty"`
	Cancellation        *Cancellation      `json:"cancellation,omitempty"`
	RunnerID            string             `json:"runnerId,omitempty"`
	RunnerKeyID         string             `json:"runnerKeyId,omitempty"`
	ContractHash        string             `json:"contractHash,omitempty"`
	EventCount          int64              `json:"eventCount"`
	Failure             *Failure           `json:"failure,omitempty"`
	HasReceipt          bool               `json:"hasReceipt"`
	Contract            *protocol.Contract `json:"contract,omitempty"`
	Receipt             *protocol.Receipt  `json:"receipt,omitempty"`
	Workspace           *protocol.Manifest `json:"workspace,omitempty"` // awaiting approval: what the run would get
	Secrets             []string           `json:"secrets,omitempty"`   // names requested
	AllowHosts          []string           `json:"allowHosts,omitempty"`
	Budget              *protocol.Budget   `json:"budget,omitempty"`
}

// RunList is GET /v1/runs.
type RunList struct {
	Runs []Run  `json:"runs"`
	Next string `json:"next,omitempty"` // cursor for the next page
}

// ListRunsOptions filter GET /v1/runs.
type ListRunsOptions struct {
	State       string // one of protocol.RunStates
	Pool        string
	Agent       string
	RequestedBy string // principal name
	Limit       int    // default 50, max 500
	Cursor      string // from RunList.Next
}

// DecisionRequest is the body of approve, deny and cancel.
type DecisionRequest struct {
	Reason string `json:"reason,omitempty"`
}

// EventList is GET /v1/runs/{id}/events.
type EventList struct {
	Events []protocol.ChainedEvent `json:"events"`
	State  string                  `json:"state"`
}

// ClaimRequest is POST /v1/claims (runner token).
type ClaimRequest struct {
	Pool        string   `json:"pool"`
	Tiers       []string `json:"tiers"`       // isolation tiers this runner can run
	WaitSeconds int      `json:"waitSeconds"` // long-poll: wait up to this long for work
}

// Lease is how long a claim stays valid without a heartbeat.
type Lease struct {
	ExpiresAt        string `json:"expiresAt"`
	TTLSeconds       int    `json:"ttlSeconds"`
	HeartbeatSeconds int    `json:"heartbeatSeconds"` // plane-set interval; runners add jitter
}

// ReleasedSecret is a secret value released to the runner holding a claim.
type ReleasedSecret struct {
	Name  string `json:"name"`
	Scope string `json:"scope"`
	Value string `json:"value"`
}

// Claim is what a runner receives for a claimed run. ClaimToken
// authenticates every later call for this run (heartbeats, events, blobs,
// completion); it is bound to this run and this runner, expires with the
// lease and dies when the run ends.
type Claim struct {
	RunID      string                  `json:"runId"`
	Contract   *protocol.Contract      `json:"contract"`
	ClaimToken string                  `json:"claimToken"`
	Lease      Lease                   `json:"lease"`
	Events     []protocol.ChainedEvent `json:"events"`
	Secrets    []ReleasedSecret        `json:"secrets"`
	// Features lists what this plane offers beyond the first v1 routes
	// (Feature*). A runner uses an addition only when its plane lists it,
	// so a newer runner keeps working with an older plane.
	Features []string `json:"features,omitempty"`
}

// Features of a plane, listed in Claim.Features.
const (
	FeatureFetchBlobs = "blobs.fetch" // POST /v1/blobs/fetch (Client.FetchBlobs)
)

// Offers reports whether the claim's plane offers feature.
func (c *Claim) Offers(feature string) bool { return slices.Contains(c.Features, feature) }

// Phases a runner reports in heartbeats.
const (
	PhaseProvisioning = "provisioning"
	PhaseRunning      = "running"
)

// HeartbeatRequest is POST /v1/runs/{id}/heartbeat (claim token). With
// WaitSeconds > 0 the plane holds the request until the run is cancelled
// or the wait ends, so cancellation reaches the runner at once.
type HeartbeatRequest struct {
	Phase       string `json:"phase"`
	WaitSeconds int    `json:"waitSeconds,omitempty"`
}

// HeartbeatResponse renews the lease and carries a cancellation.
type HeartbeatResponse struct {
	Lease  Lease         `json:"lease"`
	Cancel *Cancellation `json:"cancel,omitempty"`
}

// AppendEventsRequest is POST /v1/runs/{id}/events (claim token).
type AppendEventsRequest struct {
	Events []protocol.ChainedEvent `json:"events"`
}

// ChainHead is the last event of a run's chain.
type ChainHead struct {
	Seq  int64  `json:"seq"`
	Hash string `json:"hash"`
}

// CompleteRequest is POST /v1/runs/{id}/complete (claim token).
type CompleteRequest struct {
	Receipt *protocol.Receipt `json:"receipt"`
}

// CompleteResponse returns the countersigned receipt.
type CompleteResponse struct {
	Receipt *protocol.Receipt `json:"receipt"`
}

// MissingBlobsRequest is POST /v1/blobs/missing.
type MissingBlobsRequest struct {
	Hashes []string `json:"hashes"`
}

// FetchBlobsRequest is POST /v1/blobs/fetch: the blobs to download in one
// reply (see Client.FetchBlobs).
type FetchBlobsRequest struct {
	Hashes []string `json:"hashes"`
}

// MissingBlobsResponse lists the hashes the plane does not have.
type MissingBlobsResponse struct {
	Missing []string `json:"missing"`
}

// PutBlobsResponse is the reply to a blob upload.
type PutBlobsResponse struct {
	Stored  int   `json:"stored"`  // blobs newly stored
	Present int   `json:"present"` // blobs the plane already had
	Bytes   int64 `json:"bytes"`   // bytes received
}

// RetentionRecord is one deletion made by the retention policy.
type RetentionRecord struct {
	At     string `json:"at"`
	Kind   string `json:"kind"` // "blob" | "run"
	ID     string `json:"id"`   // blob hash or run id
	Reason string `json:"reason"`
	Bytes  int64  `json:"bytes,omitempty"`
}

// Kinds of export lines.
const (
	ExportRun     = "run"
	ExportEvent   = "event"
	ExportReceipt = "receipt"
)

// ExportLine is one line of GET /v1/export (application/x-ndjson): a run
// (with its contract, without its receipt), then its events in order, then
// its receipt when it has one.
type ExportLine struct {
	Type    string                 `json:"type"` // ExportRun | ExportEvent | ExportReceipt
	RunID   string                 `json:"runId"`
	Run     *Run                   `json:"run,omitempty"`
	Event   *protocol.ChainedEvent `json:"event,omitempty"`
	Receipt *protocol.Receipt      `json:"receipt,omitempty"`
}
