package protocol

import (
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strconv"
	"sync"
	"time"
)

// Event types of the warrant.event.v1 union.
const (
	EventRunCreated            = "run.created"
	EventRunClaimed            = "run.claimed"
	EventWorkspaceMaterialized = "workspace.materialized"
	EventPolicyEvaluated       = "policy.evaluated"
	EventConsentRequested      = "consent.requested"
	EventConsentGranted        = "consent.granted"
	EventSecretReleased        = "secret.released"
	EventCommandExecuted       = "command.executed"
	EventFileChanged           = "file.changed"
	EventNetworkConnected      = "network.connected"
	EventModelCalled           = "model.called"
	EventBoundaryCrossed       = "boundary.crossed"
	EventArtifactCreated       = "artifact.created"
	EventCheckpointCreated     = "checkpoint.created"
	EventRunCompleted          = "run.completed"
	EventRunFailed             = "run.failed"
	EventRunCancelled          = "run.cancelled"
)

// Network decisions as the protocol spells them.
const (
	DecisionAllowed = "allowed"
	DecisionBlocked = "blocked"
)

// EventPayload is one member of the event union. Each payload type names
// its event type.
type EventPayload interface{ EventType() string }

// RunCreated: the plane accepted the run request.
type RunCreated struct{}

// RunClaimed: a runner claimed the run.
type RunClaimed struct {
	RunnerID    string `json:"runnerId"`
	RunnerKeyID string `json:"runnerKeyId"`
}

// WorkspaceMaterialized: the runner wrote the workspace for the session.
type WorkspaceMaterialized struct {
	ManifestHash string `json:"manifestHash"`
}

// PolicyEvaluated: the plane's policy decision.
type PolicyEvaluated struct {
	Decision string `json:"decision"` // "allow" | "ask"
	Reason   string `json:"reason"`
}

// ConsentRequested: the run needs an approval.
type ConsentRequested struct {
	Requirement string `json:"requirement"`
}

// ConsentGranted: an approver approved the run.
type ConsentGranted struct {
	Actor ActorRef `json:"actor"`
}

// SecretReleased: the plane released a secret (by name) to the runner.
type SecretReleased struct {
	Name  string `json:"name"`
	Scope string `json:"scope"`
}

// CommandExecuted: the harness ran and exited.
type CommandExecuted struct {
	ArgvHash string `json:"argvHash"`
	ExitCode int    `json:"exitCode"`
}

// FileChanged: the session changed a workspace file.
type FileChanged struct {
	Path        string `json:"path"`
	ContentHash string `json:"contentHash"`
}

// NetworkConnected: one egress decision.
type NetworkConnected struct {
	Host     string `json:"host"`
	Decision string `json:"decision"` // "allowed" | "blocked"
}

// ModelCalled: the session called a model.
type ModelCalled struct {
	Provider string `json:"provider"`
	Model    string `json:"model"`
}

// BoundaryCrossed: content left (or entered) the governed boundary.
type BoundaryCrossed struct {
	Direction   string `json:"direction"` // "out" | "in"
	ContentHash string `json:"contentHash"`
	DataClass   string `json:"dataClass"`
}

// ArtifactCreated: the runner uploaded an artifact.
type ArtifactCreated struct {
	Kind string `json:"kind"` // diff | log | file | bundle | trace
	Hash string `json:"hash"`
}

// CheckpointCreated: a continuation checkpoint.
type CheckpointCreated struct {
	CheckpointID string `json:"checkpointId"`
	Tier         string `json:"tier"`
}

// RunCompleted: terminal success.
type RunCompleted struct{}

// RunFailed: terminal failure with its class.
type RunFailed struct {
	Failure string `json:"failure"`
	Message string `json:"message"`
}

// RunCancelled: terminal cancellation, with who cancelled.
type RunCancelled struct {
	Actor ActorRef `json:"actor"`
}

func (RunCreated) EventType() string            { return EventRunCreated }
func (RunClaimed) EventType() string            { return EventRunClaimed }
func (WorkspaceMaterialized) EventType() string { return EventWorkspaceMaterialized }
func (PolicyEvaluated) EventType() string       { return EventPolicyEvaluated }
func (ConsentRequested) EventType() string      { return EventConsentRequested }
func (ConsentGranted) EventType() string        { return EventConsentGranted }
func (SecretReleased) EventType() string        { return EventSecretReleased }
func (CommandExecuted) EventType() string       { return EventCommandExecuted }
func (FileChanged) EventType() string           { return EventFileChanged }
func (NetworkConnected) EventType() string      { return EventNetworkConnected }
func (ModelCalled) EventType() string           { return EventModelCalled }
func (BoundaryCrossed) EventType() string       { return EventBoundaryCrossed }
func (ArtifactCreated) EventType() string       { return EventArtifactCreated }
func (CheckpointCreated) EventType() string     { return EventCheckpointCreated }
func (RunCompleted) EventType() string          { return EventRunCompleted }
func (RunFailed) EventType() string             { return EventRunFailed }
func (RunCancelled) EventType() string          { return EventRunCancelled }

var payloadTypes = map[string]reflect.Type{}

func init() {
	for _, p := range []EventPayload{RunCreated{}, RunClaimed{}, WorkspaceMaterialized{}, PolicyEvaluated{}, ConsentRequested{}, ConsentGranted{}, SecretReleased{}, CommandExecuted{}, FileChanged{}, NetworkConnected{}, ModelCalled{}, BoundaryCrossed{}, ArtifactCreated{}, CheckpointCreated{}, RunCompleted{}, RunFailed{}, RunCancelled{}} {
		payloadTypes[p.EventType()] = reflect.TypeOf(p)
	}
}

// ErrUnknownEventType is returned by EventBody.Payload for an event type
// outside the v1 union. Such events still hash and chain.
var ErrUnknownEventType = errors.New("unknown event type")

// EventBody is the `event` member of a chained event: the union member as
// a JSON object with its "type". It keeps the object as received, so its
// hash covers exactly those bytes.
type EventBody struct {
	typ  string
	tree Object
}

// NewEvent builds an event body from a typed payload.
func NewEvent(p EventPayload) EventBody {
	t, err := encodeValue(reflect.ValueOf(p))
	if err != nil {
		// Payload types hold only strings, ints and nested structs of those.
		panic(fmt.Sprintf("protocol: encoding %T: %v", p, err))
	}
	obj := t.(Object).With("type", p.EventType())
	return EventBody{typ: p.EventType(), tree: obj}
}

// Type returns the event type, e.g. "run.completed".
func (b EventBody) Type() string { return b.typ }

// IsZero reports whether the body is empty (never set).
func (b EventBody) IsZero() bool { return b.tree == nil }

// Payload decodes the body into its typed payload.
func (b EventBody) Payload() (EventPayload, error) {
	t, ok := payloadTypes[b.typ]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownEventType, b.typ)
	}
	pv := reflect.New(t)
	if err := fromTree("event", b.tree, pv.Elem()); err != nil {
		return nil, err
	}
	return pv.Elem().Interface().(EventPayload), nil
}

// String renders the body as canonical JSON.
func (b EventBody) String() string {
	out, err := AppendCanonical(nil, b.tree)
	if err != nil {
		return "<invalid event>"
	}
	return string(out)
}

func (b EventBody) encodeTree() (any, error) {
	if b.tree == nil {
		return nil, fmt.Errorf("empty event body")
	}
	return b.tree, nil
}

func (b *EventBody) decodeTree(path string, v any) error {
	obj, ok := v.(Object)
	if !ok {
		return typeError(path, "an object", v)
	}
	t, _ := obj.Get("type")
	typ, ok := t.(string)
	if !ok || typ == "" {
		return &FieldError{Path: path + ".type", Reason: "an event needs a non-empty string type"}
	}
	b.typ, b.tree = typ, obj
	return nil
}

// MarshalJSON renders the canonical JSON of the event body.
func (b EventBody) MarshalJSON() ([]byte, error) { return Canonical(b) }

// UnmarshalJSON strictly decodes an event body.
func (b *EventBody) UnmarshalJSON(data []byte) error { return decodeJSON(data, "event", b) }

// ChainedEvent is a warrant.event.v1: one link of a run's event chain.
type ChainedEvent struct {
	Version string    `json:"version"`
	Seq     int64     `json:"seq"`
	TS      string    `json:"ts"`
	Prev    string    `json:"prev"`
	Event   EventBody `json:"event"`
	Hash    string    `json:"hash"`
}

func (e *ChainedEvent) decodeTree(path string, v any) error {
	type plain ChainedEvent
	if err := fromTree(path, v, reflect.ValueOf((*plain)(e)).Elem()); err != nil {
		return err
	}
	return checkVersion(path, "event", e.Version)
}

// MarshalJSON renders the canonical JSON of the chained event.
func (e ChainedEvent) MarshalJSON() ([]byte, error) {
	type plain ChainedEvent
	return Canonical(plain(e))
}

// UnmarshalJSON strictly decodes a chained event.
func (e *ChainedEvent) UnmarshalJSON(b []byte) error { return decodeJSON(b, "event", e) }

// EventHash computes the hash of a chain link: the hash of the canonical
// JSON of exactly {seq, ts, prev, event}.
func EventHash(seq int64, ts, prev string, body EventBody) (string, error) {
	if body.tree == nil {
		return "", fmt.Errorf("event %d: empty event body", seq)
	}
	buf := make([]byte, 0, 512)
	buf = append(buf, `{"event":`...)
	buf, err := appendObject(buf, body.tree, "")
	if err != nil {
		return "", fmt.Errorf("event %d: %w", seq, err)
	}
	buf = append(buf, `,"prev":`...)
	if buf, err = appendString(buf, prev); err != nil {
		return "", err
	}
	buf = append(buf, `,"seq":`...)
	if buf, err = appendNumber(buf, float64(seq)); err != nil {
		return "", err
	}
	buf = append(buf, `,"ts":`...)
	if buf, err = appendString(buf, ts); err != nil {
		return "", err
	}
	buf = append(buf, '}')
	return HashBytes(buf), nil
}

// NextEvent builds the chain link that follows last (nil for the first
// event, whose prev is the genesis contract hash).
func NextEvent(last *ChainedEvent, genesis string, body EventBody, at time.Time) (ChainedEvent, error) {
	seq, prev := int64(0), genesis
	if last != nil {
		seq, prev = last.Seq+1, last.Hash
	}
	ts := FormatTime(at)
	h, err := EventHash(seq, ts, prev, body)
	if err != nil {
		return ChainedEvent{}, err
	}
	return ChainedEvent{Version: VersionEvent, Seq: seq, TS: ts, Prev: prev, Event: body, Hash: h}, nil
}

// AppendEvent appends a new link for body to chain and returns the chain.
func AppendEvent(chain []ChainedEvent, genesis string, body EventBody, at time.Time) ([]ChainedEvent, error) {
	var last *ChainedEvent
	if len(chain) > 0 {
		last = &chain[len(chain)-1]
	}
	e, err := NextEvent(last, genesis, body, at)
	if err != nil {
		return chain, err
	}
	return append(chain, e), nil
}

// Chain verification failures, wrapped by *ChainError.
var (
	ErrChainEmpty     = errors.New("event chain is empty")
	ErrSeqGap         = errors.New("sequence gap")
	ErrPrevMismatch   = errors.New("prev does not link to the previous event")
	ErrHashMismatch   = errors.New("event hash mismatch")
	ErrEventVersion   = errors.New("unsupported event version")
	ErrMalformedEvent = errors.New("malformed event")
)

// ChainError says where an event chain breaks.
type ChainError struct {
	Seq int64 // the seq position (index) where the chain breaks
	Err error
}

func (e *ChainError) Error() string {
	return "event chain broken at seq " + strconv.FormatInt(e.Seq, 10) + ": " + e.Err.Error()
}

func (e *ChainError) Unwrap() error { return e.Err }

// VerifyLink checks that e is the correct successor of last (nil when e
// should be the first event, linked to genesis): seq, prev and hash.
func VerifyLink(last *ChainedEvent, genesis string, e *ChainedEvent) error {
	h, _ := EventHash(e.Seq, e.TS, e.Prev, e.Event)
	return verifyLinkWithHash(last, genesis, e, h)
}

// verifyLinkWithHash is VerifyLink with e's hash already recomputed ("" when
// it could not be).
func verifyLinkWithHash(last *ChainedEvent, genesis string, e *ChainedEvent, h string) error {
	wantSeq, wantPrev := int64(0), genesis
	if last != nil {
		wantSeq, wantPrev = last.Seq+1, last.Hash
	}
	if err := checkVersion("event", "event", e.Version); err != nil {
		return &ChainError{Seq: wantSeq, Err: fmt.Errorf("%w: %q", ErrEventVersion, e.Version)}
	}
	if e.Seq != wantSeq {
		return &ChainError{Seq: wantSeq, Err: fmt.Errorf("%w: expected seq %d, found %d", ErrSeqGap, wantSeq, e.Seq)}
	}
	if e.Prev != wantPrev {
		return &ChainError{Seq: wantSeq, Err: ErrPrevMismatch}
	}
	if h == "" {
		_, err := EventHash(e.Seq, e.TS, e.Prev, e.Event)
		return &ChainError{Seq: wantSeq, Err: fmt.Errorf("%w: %v", ErrMalformedEvent, err)}
	}
	if h != e.Hash {
		return &ChainError{Seq: wantSeq, Err: ErrHashMismatch}
	}
	return nil
}

// VerifyChain checks a whole chain from the genesis contract hash. An empty
// chain is an error. Long chains are hashed on every CPU; the links are
// then checked in order, so the error names the first break.
func VerifyChain(events []ChainedEvent, genesis string) error {
	if len(events) == 0 {
		return &ChainError{Seq: 0, Err: ErrChainEmpty}
	}
	hashes := computeEventHashes(events)
	var last *ChainedEvent
	for i := range events {
		if err := verifyLinkWithHash(last, genesis, &events[i], hashes[i]); err != nil {
			return err
		}
		last = &events[i]
	}
	return nil
}

// parallelChainMin is the chain length from which hashing is spread over
// goroutines.
const parallelChainMin = 128

// computeEventHashes returns each event's recomputed hash ("" when it
// cannot be computed).
func computeEventHashes(events []ChainedEvent) []string {
	hashes := make([]string, len(events))
	hashRange := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			e := &events[i]
			if h, err := EventHash(e.Seq, e.TS, e.Prev, e.Event); err == nil {
				hashes[i] = h
			}
		}
	}
	workers := runtime.GOMAXPROCS(0)
	if len(events) < parallelChainMin || workers < 2 {
		hashRange(0, len(events))
		return hashes
	}
	var wg sync.WaitGroup
	chunk := (len(events) + workers - 1) / workers
	for lo := 0; lo < len(events); lo += chunk {
		hi := min(lo+chunk, len(events))
		wg.Add(1)
		go func() {
			defer wg.Done()
			hashRange(lo, hi)
		}()
	}
	wg.Wait()
	return hashes
}
