//go:build !linux

package namespace

import (
	"context"
	"errors"
	"fmt"
	"runtime"

	"warrant.dev/warrant/internal/runner/session"
	"warrant.dev/warrant/protocol"
)

// ErrUnavailable is wrapped by New when this host cannot run the tier.
var ErrUnavailable = errors.New("namespace isolation unavailable")

var errNotLinux = fmt.Errorf("%w: the namespace tier needs Linux (this is %s)", ErrUnavailable, runtime.GOOS)

// Backend is the namespace tier; on this system New always fails.
type Backend struct{}

// New fails: the namespace tier needs Linux.
func New(Options) (*Backend, error) { return nil, errNotLinux }

// Isolation implements session.Backend.
func (*Backend) Isolation() string { return protocol.IsolationNamespace }

// Limits returns the limits every session gets.
func (*Backend) Limits() Limits { return Limits{} }

// Check implements session.Backend.
func (*Backend) Check(*protocol.Contract, *session.Execution) error { return errNotLinux }

// Run implements session.Backend.
func (*Backend) Run(context.Context, *session.Session) (session.Result, error) {
	return session.Result{}, errNotLinux
}

// Probe reports the tier unavailable: it needs Linux.
func Probe(context.Context, Options) *Report {
	r := &Report{}
	r.add("linux", errNotLinux, "")
	return r
}

// Init fails: there is no sandbox to set up on this system.
func Init() int { return 1 }
