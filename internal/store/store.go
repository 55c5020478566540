// Package store owns the plane's persistent state model: the Store
// interface the plane consumes, its record types, its sentinel errors, and
// the BlobStore seam for content-addressed bytes.
//
// Implementations (internal/store/sqlite now, PostgreSQL later) must pass
// the conformance suite in internal/store/storetest. Store code never reads
// the clock and never makes ids or tokens: every time, id and token hash is
// passed in by the plane, so behaviour is deterministic under a fake clock.
// Times are kept with millisecond precision (the protocol's). Every method
// that changes more than one row runs in one transaction: it either
// happens completely or writes nothing.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Sentinel errors. Callers branch on them with errors.Is.
var (
	ErrNotFound      = errors.New("not found")
	ErrConflict      = errors.New("already exists")
	ErrInvalidState  = errors.New("invalid state for this operation")
	ErrLeaseExpired  = errors.New("claim lease expired")
	ErrClaimUsed     = errors.New("claim already used")
	ErrTokenUsed     = errors.New("token already used")
	ErrTokenExpired  = errors.New("token expired")
	ErrRevoked       = errors.New("revoked")
	ErrChainConflict = errors.New("events do not extend the chain")
	ErrHashMismatch  = errors.New("content does not match its hash")
	ErrTooLarge      = errors.New("content exceeds the size limit")
	ErrSchemaTooNew  = errors.New("database schema is newer than this binary understands")
	// ErrStorageFull means a write failed because the disk (or the
	// database's size limit) is full: nothing was written, and the same
	// write may succeed once space is freed.
	ErrStorageFull = errors.New("storage full")
)

// IsStorageFull reports whether err is a write refused because storage is
// full: ErrStorageFull (the SQLite and file stores mark theirs), or a
// database error whose SQLSTATE is 53100, disk_full (PostgreSQL's, raised
// by any statement, so the PostgreSQL store leaves it unmarked).
func IsStorageFull(err error) bool {
	if errors.Is(err, ErrStorageFull) {
		return true
	}
	var sqlErr interface{ SQLState() string }
	return errors.As(err, &sqlErr) && sqlErr.SQLState() == sqlStateDiskFull
}

// sqlStateDiskFull is the SQLSTATE of PostgreSQL's disk_full condition.
const sqlStateDiskFull = "53100"

// ChainError says where appended events failed to extend a run's chain.
// It wraps ErrChainConflict.
type ChainError struct {
	Seq    int64
	Reason string
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("chain conflict at seq %d: %s", e.Seq, e.Reason)
}

func (e *ChainError) Unwrap() error { return ErrChainConflict }

// Run states (the protocol's vocabulary).
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

// IsTerminal reports whether a run in state s can change no more.
func IsTerminal(s string) bool {
	return s == StateCompleted || s == StateFailed || s == StateCancelled
}

// stateRank orders the live states of a claimed run; heartbeats only move
// a run forward.
var stateRank = map[string]int{StateClaimed: 1, StateProvisioning: 2, StateRunning: 3}

// Advances reports whether moving a claimed run from state from to state to
// goes forward (claimed → provisioning → running).
func Advances(from, to string) bool {
	return stateRank[to] > stateRank[from] && stateRank[from] > 0
}

// IsTerminalEvent reports whether an event type ends a chain.
func IsTerminalEvent(eventType string) bool {
	return eventType == "run.completed" || eventType == "run.failed" || eventType == "run.cancelled"
}

// Claim states of a run.
const (
	ClaimNone    = ""        // never claimed
	ClaimActive  = "active"  // a runner holds the claim; its token works while the lease lasts
	ClaimEnded   = "ended"   // the run ended; the token is used up
	ClaimExpired = "expired" // the lease lapsed; the token is dead
)

// Principal is a human or service identity with one role.
type Principal struct {
	ID         string
	Name       string // unique
	Kind       string // "human" | "service"
	Role       string
	CreatedAt  time.Time
	DisabledAt time.Time // zero while enabled
}

// Token is a principal's bearer token, known by the SHA-256 of its secret.
type Token struct {
	ID          string
	PrincipalID string
	Hash        string // unique
	CreatedAt   time.Time
	LastUsedAt  time.Time
	RevokedAt   time.Time // zero while valid
}

// EnrollToken is a one-time token that enrolls one runner into one pool.
type EnrollToken struct {
	Hash      string
	Pool      string
	CreatedBy string // principal id
	CreatedAt time.Time
	ExpiresAt time.Time
	UsedAt    time.Time // zero until used
	RunnerID  string    // the runner it enrolled
}

// Runner is an enrolled runner.
type Runner struct {
	ID           string
	Name         string
	Pool         string
	KeyID        string
	PublicKeyPEM string
	Tiers        []string
	TokenHash    string // unique; the runner's bearer token
	EnrolledAt   time.Time
	LastSeenAt   time.Time
	RevokedAt    time.Time
	InFlight     int // runs it holds an active claim on (computed on read)
}

// Secret is a stored secret: the plane encrypts the value before it gets
// here, so Ciphertext is opaque to the store.
type Secret struct {
	Name       string
	Ciphertext []byte // nil in ListSecrets
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// PolicyRecord is one version of the plane's policy document.
type PolicyRecord struct {
	Hash      string
	Document  []byte // canonical warrant.policy.v1
	CreatedAt time.Time
}

// PlaneKey is a public key the plane has signed with, so bundles of runs
// issued under an earlier key still name the right key.
type PlaneKey struct {
	KeyID        string
	PublicKeyPEM string
	AddedAt      time.Time
}

// Cancellation records who asked to cancel a run.
type Cancellation struct {
	ActorKind string
	ActorID   string
	Reason    string
	At        time.Time
}

// Failure is why a run failed.
type Failure struct {
	Class   string
	Message string
}

// Run is the plane's record of one run. Details is plane-owned JSON (the
// request, the policy decision, approvals) that the store keeps verbatim.
type Run struct {
	ID            string
	State         string
	Pool          string
	AgentKind     string
	Isolation     string
	Prompt        string
	RequesterID   string // principal id
	RequesterName string // principal name (the contract's requestedBy.id)
	CreatedAt     time.Time
	UpdatedAt     time.Time
	Details       []byte

	Contract     []byte // signed contract; nil while awaiting approval
	ContractHash string
	ExpiresAt    time.Time // the contract's expiresAt
	SecretNames  []string  // the contract's secrets, released at claim

	RunnerID       string
	ClaimTokenHash string
	ClaimState     string // Claim*
	ClaimedAt      time.Time
	LeaseUntil     time.Time

	Cancel     *Cancellation // a requested cancellation
	Failure    *Failure      // set when the run failed
	Receipt    []byte        // the countersigned receipt (nil in ListRuns rows)
	HasReceipt bool          // a receipt is stored (set in every read)

	EventCount int64
	HeadHash   string // hash of the last event ("" when none)
	HeadType   string // type of the last event
}

// Event is one stored link of a run's chain. Data is the chained event's
// canonical JSON.
type Event struct {
	RunID string
	Seq   int64
	Hash  string
	Prev  string
	Type  string
	Data  []byte
}

// RunCursor is a position in a run listing.
type RunCursor struct {
	At time.Time
	ID string
}

// RunFilter selects runs for ListRuns (newest first by CreatedAt, then ID).
type RunFilter struct {
	State         string
	Pool          string
	AgentKind     string
	RequesterID   string
	RequesterName string
	Before        *RunCursor // only runs strictly before this position
	Limit         int        // 0 means 50
}

// Issue is what approval adds to a run awaiting approval: its contract and
// the start of its chain.
type Issue struct {
	Details      []byte
	Contract     []byte
	ContractHash string
	ExpiresAt    time.Time
	SecretNames  []string
	Events       []Event
}

// PendingEnd ends a run awaiting approval (denied, cancelled).
type PendingEnd struct {
	State   string // StateFailed or StateCancelled
	Details []byte // nil keeps the stored details
	Failure *Failure
	Cancel  *Cancellation
}

// End is how a plane-side transition ends a run: the events the plane
// appends (possibly none) and, for a failure, why.
type End struct {
	Events  []Event
	Failure *Failure
}

// EndFunc builds the end of a run inside the store's transaction, given the
// run and its chain head (nil when the run has no chain). It must not call
// the store.
type EndFunc func(run Run, head *Event) (End, error)

// ClaimRequest asks for the oldest queued run a runner may take.
type ClaimRequest struct {
	Pool       string
	Tiers      []string // isolation tiers the runner can run
	RunnerID   string
	TokenHash  string // hash of the new claim token
	Now        time.Time
	LeaseUntil time.Time
}

// ClaimDecision is the plane's answer for a candidate run: the events that
// record the claim, or (Fail set) the events that end the run instead, in
// which case the store fails it and looks for the next candidate.
type ClaimDecision struct {
	Events []Event
	Fail   *Failure
}

// ClaimFunc decides on a candidate inside the claim transaction, given the
// run, its chain head and the stored secrets its contract names (a missing
// one is absent). It must not call the store.
type ClaimFunc func(run Run, head Event, secrets []Secret) (ClaimDecision, error)

// Completion is what CompleteRun stores: the countersigned receipt and the
// run's end. EventsHead and EventCount must equal the stored chain.
type Completion struct {
	Receipt    []byte
	State      string // completed | failed | cancelled
	Failure    *Failure
	EventsHead string
	EventCount int64
}

// BlobMeta is the index entry of a stored blob.
type BlobMeta struct {
	Hash      string
	Size      int64
	CreatedAt time.Time
	LastRefAt time.Time // last time a run or upload referenced it
}

// RetentionRecord is one deletion made by the retention policy.
type RetentionRecord struct {
	At     time.Time
	Kind   string // "run" | "blob"
	ID     string
	Reason string
	Bytes  int64
}

// Store is the plane's persistent state. See the package doc for the rules
// every implementation follows; storetest.Run pins the behaviour.
type Store interface {
	// Ping reports whether the store answers.
	Ping(ctx context.Context) error
	// Close releases the store.
	Close() error

	// CreatePrincipal creates a principal with its first token
	// (ErrConflict when the name or token hash exists).
	CreatePrincipal(ctx context.Context, p Principal, first Token) error
	GetPrincipal(ctx context.Context, id string) (Principal, error)
	ListPrincipals(ctx context.Context) ([]Principal, error)
	// DisablePrincipal disables a principal and revokes its tokens.
	DisablePrincipal(ctx context.Context, id string, at time.Time) error
	// CreateToken adds a token to an enabled principal (ErrNotFound otherwise).
	CreateToken(ctx context.Context, t Token) error
	// ListTokens lists a principal's tokens ("" lists every token).
	ListTokens(ctx context.Context, principalID string) ([]Token, error)
	RevokeToken(ctx context.Context, id string, at time.Time) error
	// LookupToken finds a token by hash with its principal. Revoked tokens
	// and disabled principals are returned as they are: the caller decides.
	LookupToken(ctx context.Context, hash string) (Token, Principal, error)
	TouchToken(ctx context.Context, id string, at time.Time) error

	CreateEnrollToken(ctx context.Context, t EnrollToken) error
	// EnrollRunner uses an enroll token once and registers the runner
	// (ErrNotFound unknown, ErrTokenUsed, ErrTokenExpired, ErrInvalidState
	// when r.Pool differs from the token's pool, ErrConflict duplicate).
	EnrollRunner(ctx context.Context, enrollTokenHash string, r Runner, now time.Time) error
	GetRunner(ctx context.Context, id string) (Runner, error)
	// LookupRunner finds a runner by token hash (revoked ones included).
	LookupRunner(ctx context.Context, tokenHash string) (Runner, error)
	ListRunners(ctx context.Context) ([]Runner, error)
	// RevokeRunner revokes a runner and ends the leases of its claims now.
	RevokeRunner(ctx context.Context, id string, at time.Time) error
	TouchRunner(ctx context.Context, id string, at time.Time) error

	// PutPolicy makes p the current policy (keeping earlier versions).
	PutPolicy(ctx context.Context, p PolicyRecord) error
	CurrentPolicy(ctx context.Context) (PolicyRecord, error)
	PutPlaneKey(ctx context.Context, k PlaneKey) error
	GetPlaneKey(ctx context.Context, keyID string) (PlaneKey, error)

	// PutSecret creates or replaces a secret, keeping its CreatedAt.
	PutSecret(ctx context.Context, s Secret) (Secret, error)
	GetSecret(ctx context.Context, name string) (Secret, error)
	ListSecrets(ctx context.Context) ([]Secret, error)
	DeleteSecret(ctx context.Context, name string) error

	// CreateRun stores a new run and the start of its chain.
	CreateRun(ctx context.Context, r Run, events []Event) error
	GetRun(ctx context.Context, id string) (Run, error)
	// ListRuns lists runs newest first, without Contract and Receipt.
	ListRuns(ctx context.Context, f RunFilter) ([]Run, error)
	// RunsUpdatedSince lists runs (with contract and receipt) whose
	// UpdatedAt is at or after since, oldest first, after the cursor.
	RunsUpdatedSince(ctx context.Context, since time.Time, after *RunCursor, limit int) ([]Run, error)
	CountRunsByState(ctx context.Context) (map[string]int, error)

	// ApproveRun issues the contract of a run awaiting approval and queues
	// it (ErrInvalidState when it is not awaiting approval).
	ApproveRun(ctx context.Context, id string, is Issue, now time.Time) (Run, error)
	// EndPending ends a run awaiting approval (ErrInvalidState otherwise).
	EndPending(ctx context.Context, id string, e PendingEnd, now time.Time) (Run, error)
	// CancelRun cancels a run: awaiting approval → cancelled; queued →
	// cancelled with the events end builds; claimed or running → the
	// cancellation is recorded for the runner (the first one is kept); an
	// ended run is returned unchanged.
	CancelRun(ctx context.Context, id string, c Cancellation, now time.Time, end EndFunc) (Run, error)

	// ClaimNext atomically claims the oldest queued run of the pool whose
	// isolation is in the tiers, appending decide's events, and returns the
	// run and its whole chain (ErrNotFound when there is none).
	ClaimNext(ctx context.Context, req ClaimRequest, decide ClaimFunc) (Run, []Event, error)
	// GetClaim finds the run whose active claim token has this hash
	// (ErrNotFound unknown, ErrClaimUsed after the run ended, ErrLeaseExpired
	// once the lease lapsed; with those two the run is returned as well).
	GetClaim(ctx context.Context, tokenHash string, now time.Time) (Run, error)
	// Heartbeat renews a claim's lease and moves the run forward to state
	// (ignored unless it advances; "" keeps the state).
	Heartbeat(ctx context.Context, runID, tokenHash, state string, now, leaseUntil time.Time) (Run, error)
	// AppendEvents appends events under an active claim. Events already
	// stored with the same hash are accepted again; anything else that does
	// not extend the head, or follows a terminal event, is a *ChainError.
	AppendEvents(ctx context.Context, runID, tokenHash string, events []Event, now time.Time) (Run, error)
	// CompleteRun stores the receipt, ends the run and uses up the claim.
	CompleteRun(ctx context.Context, runID, tokenHash string, c Completion, now time.Time) (Run, error)
	ListEvents(ctx context.Context, runID string, afterSeq int64, limit int) ([]Event, error)

	// ExpireLeases fails every claimed run whose lease ended before now.
	ExpireLeases(ctx context.Context, now time.Time, end EndFunc) ([]Run, error)
	// ExpireContracts fails every queued run whose contract expired.
	ExpireContracts(ctx context.Context, now time.Time, end EndFunc) ([]Run, error)
	// ExpireApprovals fails every run awaiting approval created before
	// createdBefore.
	ExpireApprovals(ctx context.Context, createdBefore, now time.Time, end EndFunc) ([]Run, error)

	// PutBlobMeta indexes a stored blob (created=false when it was
	// indexed already; its LastRefAt is bumped).
	PutBlobMeta(ctx context.Context, m BlobMeta) (created bool, err error)
	GetBlobMeta(ctx context.Context, hash string) (BlobMeta, error)
	// MissingBlobs returns the hashes that are not indexed, in input order.
	MissingBlobs(ctx context.Context, hashes []string) ([]string, error)
	// RefBlobs records that principal referenced these blobs (uploaded or
	// submitted them) and bumps their LastRefAt.
	RefBlobs(ctx context.Context, principalID string, hashes []string, at time.Time) error
	// AddRunOutput records a blob uploaded under a run's claim.
	AddRunOutput(ctx context.Context, runID, hash string, at time.Time) error
	// RunHasOutput reports whether a blob is an output of the run.
	RunHasOutput(ctx context.Context, runID, hash string) (bool, error)
	// BlobReadableBy reports whether principal referenced the blob or it is
	// an output of a run the principal requested.
	BlobReadableBy(ctx context.Context, hash, principalID string) (bool, error)

	// DeleteRunsEndedBefore deletes ended runs (with events and receipts)
	// last updated before cutoff, recording each deletion.
	DeleteRunsEndedBefore(ctx context.Context, cutoff, now time.Time, reason string, limit int) ([]RetentionRecord, error)
	// DeleteBlobsBefore removes from the index blobs last referenced before
	// cutoff, recording each; the caller then deletes their bytes.
	DeleteBlobsBefore(ctx context.Context, cutoff, now time.Time, reason string, limit int) ([]RetentionRecord, error)
	ListRetention(ctx context.Context, limit int) ([]RetentionRecord, error)
}

// BlobStore holds content-addressed bytes. The file store keeps them on
// disk; a PostgreSQL or object store can replace it.
type BlobStore interface {
	// Put stores the bytes read from r under hash, verifying the hash
	// while streaming (ErrHashMismatch) and reading at most maxBytes
	// (ErrTooLarge). Storing a blob that exists reads and verifies r and
	// reports created=false.
	Put(ctx context.Context, hash string, r io.Reader, maxBytes int64) (size int64, created bool, err error)
	// Open returns the blob's bytes and size (ErrNotFound).
	Open(ctx context.Context, hash string) (io.ReadCloser, int64, error)
	Has(ctx context.Context, hash string) (bool, error)
	Size(ctx context.Context, hash string) (int64, error)
	// Delete removes a blob; deleting a missing blob is not an error.
	Delete(ctx context.Context, hash string) error
}
