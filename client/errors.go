package client

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
)

// Error codes: the closed set the plane returns in {"error": {"code": …}}.
// Callers branch on codes (errors.Is with the Err* values), never on
// messages.
const (
	CodeBadRequest      = "bad_request"      // malformed or invalid request
	CodeUnauthenticated = "unauthenticated"  // no, unknown, revoked or expired token
	CodeForbidden       = "forbidden"        // the token's role may not do this
	CodeNotFound        = "not_found"        // no such run, blob, principal, …
	CodeConflict        = "conflict"         // already exists
	CodeTooLarge        = "too_large"        // body or blob over the limit
	CodeRateLimited     = "rate_limited"     // too many requests; retry after Retry-After
	CodePolicyDenied    = "policy_denied"    // policy refuses the run; see Reasons
	CodeInvalidState    = "invalid_state"    // the run is not in a state that allows this
	CodeClaimExpired    = "claim_expired"    // the claim's lease expired
	CodeClaimUsed       = "claim_used"       // the claim token was already used up (run ended)
	CodeChainRejected   = "chain_rejected"   // appended events do not extend the chain
	CodeReceiptRejected = "receipt_rejected" // the receipt does not match the contract/events
	CodeBlobMissing     = "blob_missing"     // a referenced blob was never uploaded
	CodeHashMismatch    = "hash_mismatch"    // uploaded bytes do not match their hash
	CodeUnavailable     = "unavailable"      // the plane is shutting down, not ready, or its storage is full; retry later
	CodeInternal        = "internal"         // a bug or an outage; see the plane's log by request id
)

// APIError is an error reply from the plane.
type APIError struct {
	Status    int      `json:"-"`
	Code      string   `json:"code"`
	Message   string   `json:"message"`
	Reasons   []string `json:"reasons,omitempty"`   // policy_denied: every reason
	Check     string   `json:"check,omitempty"`     // receipt_rejected: the failed check
	Seq       *int64   `json:"seq,omitempty"`       // chain_rejected: where
	RequestID string   `json:"requestId,omitempty"` // for the plane's logs
}

func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	if len(e.Reasons) > 0 {
		msg += ": " + strings.Join(e.Reasons, "; ")
	}
	return fmt.Sprintf("%s (%s)", msg, e.Code)
}

// Is matches another *APIError by code, so errors.Is(err, ErrNotFound)
// works.
func (e *APIError) Is(target error) bool {
	t, ok := target.(*APIError)
	return ok && t.Code == e.Code && t.Message == "" && t.Status == 0
}

// Sentinels for errors.Is.
var (
	ErrBadRequest      = &APIError{Code: CodeBadRequest}
	ErrUnauthenticated = &APIError{Code: CodeUnauthenticated}
	ErrForbidden       = &APIError{Code: CodeForbidden}
	ErrNotFound        = &APIError{Code: CodeNotFound}
	ErrConflict        = &APIError{Code: CodeConflict}
	ErrTooLarge        = &APIError{Code: CodeTooLarge}
	ErrRateLimited     = &APIError{Code: CodeRateLimited}
	ErrPolicyDenied    = &APIError{Code: CodePolicyDenied}
	ErrInvalidState    = &APIError{Code: CodeInvalidState}
	ErrClaimExpired    = &APIError{Code: CodeClaimExpired}
	ErrClaimUsed       = &APIError{Code: CodeClaimUsed}
	ErrChainRejected   = &APIError{Code: CodeChainRejected}
	ErrReceiptRejected = &APIError{Code: CodeReceiptRejected}
	ErrBlobMissing     = &APIError{Code: CodeBlobMissing}
	ErrHashMismatch    = &APIError{Code: CodeHashMismatch}
	ErrUnavailable     = &APIError{Code: CodeUnavailable}
	ErrInternal        = &APIError{Code: CodeInternal}
)

// StatusForCode is the HTTP status the plane uses for each code.
var StatusForCode = map[string]int{
	CodeBadRequest:      http.StatusBadRequest,
	CodeUnauthenticated: http.StatusUnauthorized,
	CodeForbidden:       http.StatusForbidden,
	CodeNotFound:        http.StatusNotFound,
	CodeConflict:        http.StatusConflict,
	CodeTooLarge:        http.StatusRequestEntityTooLarge,
	CodeRateLimited:     http.StatusTooManyRequests,
	CodePolicyDenied:    http.StatusForbidden,
	CodeInvalidState:    http.StatusConflict,
	CodeClaimExpired:    http.StatusGone,
	CodeClaimUsed:       http.StatusGone,
	CodeChainRejected:   http.StatusConflict,
	CodeReceiptRejected: http.StatusUnprocessableEntity,
	CodeBlobMissing:     http.StatusUnprocessableEntity,
	CodeHashMismatch:    http.StatusUnprocessableEntity,
	CodeUnavailable:     http.StatusServiceUnavailable,
	CodeInternal:        http.StatusInternalServerError,
}

// IsTransient reports whether err is worth retrying: the plane could not be
// reached, was unavailable or overloaded, or failed internally. A reply that
// refuses the request (bad token, policy, state) is not transient.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var api *APIError
	if errors.As(err, &api) {
		return api.Code == CodeUnavailable || api.Code == CodeRateLimited || api.Code == CodeInternal || api.Status == http.StatusBadGateway || api.Status == http.StatusGatewayTimeout
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var te *TransportError
	return errors.As(err, &te)
}

// TransportError wraps a failure to reach the plane or read its reply.
type TransportError struct {
	Op  string
	Err error
}

func (e *TransportError) Error() string { return e.Op + ": " + e.Err.Error() }
func (e *TransportError) Unwrap() error { return e.Err }
