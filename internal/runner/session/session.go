// Package session owns what every session backend shares: the Backend
// seam the runner kernel drives, the prepared execution (a contract's
// execution intent turned into a command line, environment policy, working
// directory, time and log limits), the resolution of that environment
// against the secrets the plane released, the confinement of the working
// directory to the workspace, and the supervision of a process tree
// (timeout, log cap and interruption, each ending in
// SIGTERM → grace → SIGKILL of the whole process group).
//
// A backend owns only the isolation boundary: how the harness is started
// and what it can reach. The kernel owns the workspace, the event chain,
// the outputs and the receipt.
package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"warrant.dev/warrant/protocol"
)

// Backend runs prepared executions inside one isolation tier. The runner
// holds exactly one backend per tier and selects it by the contract's
// isolation (protocol.Contract.EffectiveIsolation); a tier it lacks fails
// the run with capability_mismatch, never a fallback to another tier.
type Backend interface {
	// Isolation names the tier, as receipts record it ("process",
	// "namespace").
	Isolation() string
	// Check reports whether the backend can run this execution for this
	// contract. A non-nil error (a *CapabilityError) fails the run with
	// capability_mismatch before anything is materialized.
	Check(c *protocol.Contract, e *Execution) error
	// Run executes the session and returns when every process it started
	// is gone. Cancelling ctx interrupts the session: the whole process
	// tree gets SIGTERM, then SIGKILL after Session.KillGrace. The agent's
	// exit (any code) is a Result; an error means the session could not be
	// run at all (for example the egress proxy did not start).
	Run(ctx context.Context, s *Session) (Result, error)
}

// MarkerEnv is set in every process-tier session's environment to the
// session's scratch directory, so that a restarted runner can find (and
// kill) processes its dead predecessor's sessions left behind: children
// inherit it (KillStrays).
const MarkerEnv = "WARRANT_SESSION_DIR"

// Secret is a secret value the plane released for the run.
type Secret struct {
	Name  string
	Value string
}

// Session is everything a backend needs to execute one governed session.
type Session struct {
	RunID     string
	Contract  *protocol.Contract
	Execution *Execution
	// Workspace is the materialized workspace (absolute); the harness runs
	// in Execution.Cwd inside it.
	Workspace string
	// ScratchDir is a session-private directory outside the workspace,
	// removed after the run: the session's HOME and TMPDIR live there.
	ScratchDir string
	// Secrets are the released secrets, resolved into the environment by
	// ResolveEnv.
	Secrets []Secret
	// Log receives the harness's stdout and stderr, merged in the order
	// written. The kernel redacts it before anything stores it.
	Log io.Writer
	// Record appends an event to the run's chain (for example one
	// network.connected per egress decision). An error means the event
	// could not be recorded and the action it describes must be refused.
	Record func(protocol.EventPayload) error
	// Started, when set, is called once the harness process has started.
	Started func(pid int)
	// KillGrace is how long the process tree has between SIGTERM and
	// SIGKILL when the session is interrupted or over a limit.
	KillGrace time.Duration
	Logger    *slog.Logger
}

// End says how a session ended.
type End int

// Ways a session ends.
const (
	// Exited: the harness exited on its own (any exit code).
	Exited End = iota
	// TimedOut: the session ran past Execution.Timeout and was killed.
	TimedOut
	// LogLimit: the session wrote more than Execution.LogMaxBytes and was
	// killed.
	LogLimit
	// Interrupted: the session's context ended (cancel, lost lease, runner
	// abort) and it was killed.
	Interrupted
	// MemoryLimit: the session went over the memory limit its backend
	// enforces and was killed (Result.Detail names the limit).
	MemoryLimit
)

func (e End) String() string {
	switch e {
	case Exited:
		return "exited"
	case TimedOut:
		return "timed out"
	case LogLimit:
		return "log limit"
	case Interrupted:
		return "interrupted"
	case MemoryLimit:
		return "memory limit"
	}
	return fmt.Sprintf("End(%d)", int(e))
}

// Result is the outcome of a session.
type Result struct {
	// ExitCode is the harness's exit code; 128+N when it died of signal N;
	// SpawnFailedExitCode when it could not be started.
	ExitCode int
	End      End
	// Detail says more about an End other than Exited when the backend
	// knows more, for example the memory limit that was crossed. It never
	// carries secret values.
	Detail string
}

// SpawnFailedExitCode is the exit code reported when the harness could not
// be started (the shell's "command not found").
const SpawnFailedExitCode = 127

// CapabilityError says a runner cannot run what a contract asks for: a
// missing isolation tier, or an agent or execution kind a backend refuses.
// It fails the run with capability_mismatch.
type CapabilityError struct {
	Reason string
}

func (e *CapabilityError) Error() string { return "capability mismatch: " + e.Reason }

// ErrCapabilityMismatch matches every *CapabilityError with errors.Is.
var ErrCapabilityMismatch = errors.New("capability mismatch")

// Is makes errors.Is(err, ErrCapabilityMismatch) true.
func (e *CapabilityError) Is(target error) bool { return target == ErrCapabilityMismatch }
