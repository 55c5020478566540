package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/redact"
	"warrant.dev/warrant/internal/runner/session"
	"warrant.dev/warrant/internal/workspace"
	"warrant.dev/warrant/protocol"
)

// Status reported to Hooks.Finished for a run this runner gave up on
// without posting a receipt (lease lost, runner aborted).
const statusAbandoned = "abandoned"

// Causes of a cancelled session context.
var (
	errCancelled = errors.New("run cancelled by the plane")
	errAborted   = errors.New("runner aborted")
)

// runExec is the state of one claimed run.
type runExec struct {
	r        *Runner
	claim    *client.Claim
	runID    string
	contract *protocol.Contract
	api      *client.Client // claim token
	log      *slog.Logger
	secrets  []session.Secret
	redactor *redact.Redactor
	events   *eventLog
	lease    *leaseKeeper

	phases phaseClock // where the run's time went, for the log

	mu          sync.Mutex
	started     time.Time // when the harness started
	cancelActor *protocol.ActorRef
	lostErr     error
}

// outcome is what a run produced, for its terminal event and receipt.
type outcome struct {
	terminal  protocol.EventPayload
	isolation string
	diffHash  string
	artifacts []string
}

// execute runs one claim to its receipt. It never returns an error: every
// failure becomes a run.failed event and a failed receipt, or, when the
// plane cannot be told any more, a log line.
func (r *Runner) execute(ctx context.Context, claim *client.Claim) {
	claimedAt := time.Now()
	if h := r.opts.Hooks.Claimed; h != nil {
		h(claim.RunID)
	}
	secrets := make([]session.Secret, len(claim.Secrets))
	rsecrets := make([]redact.Secret, len(claim.Secrets))
	for i, s := range claim.Secrets {
		secrets[i] = session.Secret{Name: s.Name, Value: s.Value}
		rsecrets[i] = redact.Secret{Name: s.Name, Value: s.Value}
	}
	x := &runExec{
		r:        r,
		claim:    claim,
		runID:    claim.RunID,
		contract: claim.Contract,
		api:      r.plane.WithToken(claim.ClaimToken),
		log:      r.log.With("run", claim.RunID),
		secrets:  secrets,
		redactor: redact.New(rsecrets),
	}
	x.phases.last = claimedAt
	status := x.run(ctx, claimedAt)
	attrs := append([]any{"status", status, "took", time.Since(claimedAt).Round(time.Millisecond)}, x.phases.attrs...)
	x.mu.Lock()
	if !x.started.IsZero() {
		attrs = append(attrs, "claim_to_start", x.started.Sub(claimedAt).Round(time.Microsecond))
	}
	x.mu.Unlock()
	x.log.Info("run finished", attrs...)
	if h := r.opts.Hooks.Finished; h != nil {
		h(claim.RunID, status)
	}
}

func (x *runExec) run(parent context.Context, claimedAt time.Time) string {
	if x.contract == nil {
		x.log.Error("claim carries no contract; leaving the run to its lease")
		return statusAbandoned
	}
	genesis, err := x.contract.Hash()
	if err != nil {
		x.log.Error("hash contract; leaving the run to its lease", "err", err)
		return statusAbandoned
	}
	if err := protocol.VerifyChain(x.claim.Events, genesis); err != nil {
		x.log.Error("the claimed event chain does not verify; leaving the run to its lease", "err", err)
		return statusAbandoned
	}
	runCtx, cancelRun := context.WithCancelCause(parent)
	defer cancelRun(nil)
	sessCtx, cancelSess := context.WithCancelCause(runCtx)
	defer cancelSess(nil)

	x.events = newEventLog(genesis, x.claim.Events, x.sanitize)
	x.lease = newLeaseKeeper(x.api, x.runID, x.claim.Lease, claimedAt)
	x.lease.onCancel = func(actor protocol.ActorRef) {
		x.mu.Lock()
		x.cancelActor = &actor
		x.mu.Unlock()
		x.log.Info("run cancelled by the plane; stopping the session", "actor", actor.ID)
		cancelSess(errCancelled)
	}
	lost := func(err error) {
		x.mu.Lock()
		if x.lostErr == nil {
			x.lostErr = err
		}
		x.mu.Unlock()
		cancelRun(err)
	}
	x.lease.onLost = lost
	bgCtx, stopBG := context.WithCancel(runCtx)
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { defer bg.Done(); x.lease.run(bgCtx) }()
	go func() { defer bg.Done(); x.events.flush(bgCtx, x.api, x.runID, lost) }()
	defer func() {
		stopBG()
		bg.Wait()
	}()

	out := x.perform(runCtx, sessCtx)
	if status, done := x.abandoned(parent); done {
		return status
	}
	if err := x.events.emit(out.terminal); err != nil {
		x.log.Error("record the terminal event", "err", err)
		return statusAbandoned
	}
	if err := x.events.sync(runCtx); err != nil {
		if status, done := x.abandoned(parent); done {
			return status
		}
		x.log.Error("post events", "err", err)
		return statusAbandoned
	}
	receipt, err := x.receipt(out)
	if err != nil {
		x.log.Error("build receipt", "err", err)
		return statusAbandoned
	}
	x.phases.lap("post_events")
	err = client.Retry(runCtx, client.Backoff{Initial: 250 * time.Millisecond, Max: 15 * time.Second}, x.r.opts.ReceiptRetry, func(ctx context.Context) error {
		_, err := x.api.Complete(ctx, x.runID, receipt)
		return err
	})
	x.phases.lap("post_receipt")
	if err != nil {
		if status, done := x.abandoned(parent); done {
			return status
		}
		x.log.Error("post receipt", "err", err)
		return statusAbandoned
	}
	return receipt.Status
}

// abandoned reports whether the run can no longer be reported: the lease
// was lost (the plane fails the run itself) or the runner was aborted.
func (x *runExec) abandoned(parent context.Context) (string, bool) {
	x.mu.Lock()
	lostErr := x.lostErr
	x.mu.Unlock()
	if lostErr != nil {
		x.log.Error("run abandoned: the plane fails it when its lease lapses", "err", lostErr)
		return statusAbandoned, true
	}
	if parent.Err() != nil {
		x.log.Warn("run abandoned: the runner was aborted")
		return statusAbandoned, true
	}
	return "", false
}

func (x *runExec) cancelled() *protocol.ActorRef {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.cancelActor
}

func failed(class, format string, args ...any) protocol.RunFailed {
	return protocol.RunFailed{Failure: class, Message: fmt.Sprintf(format, args...)}
}

// perform runs the session and uploads its output. It returns the terminal
// event to record; the caller checks for a lost lease first.
func (x *runExec) perform(runCtx, sessCtx context.Context) outcome {
	r, c := x.r, x.contract
	if r.planeKey != nil {
		if err := c.VerifySignature(protocol.SignerPlane, r.planeKey); err != nil {
			return outcome{terminal: failed(protocol.FailureAttestationFailed, "the contract is not signed by the plane key this runner enrolled with: %v", err)}
		}
	}
	if c.RunID != x.runID {
		return outcome{terminal: failed(protocol.FailureAttestationFailed, "the contract names run %s, the claim %s", c.RunID, x.runID)}
	}
	tier := c.EffectiveIsolation()
	backend, ok := r.backends[tier]
	if !ok {
		return outcome{terminal: failed(protocol.FailureCapabilityMismatch, "this runner has no %q isolation backend (it offers %v)", tier, r.tiers)}
	}
	var mockAgent []string
	if r.opts.WarrantPath != "" {
		mockAgent = []string{r.opts.WarrantPath, "agent", "mock"}
	}
	exec, err := session.Prepare(c, session.PrepareOptions{MockAgent: mockAgent})
	if err != nil {
		if errors.Is(err, session.ErrCapabilityMismatch) || errors.Is(err, session.ErrNoMockAgent) {
			return outcome{terminal: failed(protocol.FailureCapabilityMismatch, "%v", err)}
		}
		return outcome{terminal: failed(protocol.FailureSessionFailed, "%v", err)}
	}
	if err := backend.Check(c, exec); err != nil {
		return outcome{terminal: failed(protocol.FailureCapabilityMismatch, "%v", err)}
	}
	argvHash, err := exec.Hash()
	if err != nil {
		return outcome{terminal: failed(protocol.FailureSessionFailed, "%v", err)}
	}
	out := outcome{isolation: backend.Isolation()}
	x.phases.lap("prepare")

	dir, err := x.sessionDir()
	if err != nil {
		out.terminal = failed(protocol.FailureSessionFailed, "%v", err)
		return out
	}
	defer removeAll(dir, x.log)
	var source workspace.BlobSource = claimBlobs{api: x.api, budget: r.opts.UploadRetry}
	if x.claim.Offers(client.FeatureFetchBlobs) {
		source = claimBatchBlobs{claimBlobs{api: x.api, budget: r.opts.UploadRetry}}
	}
	mat, err := workspace.Materialize(sessCtx, workspace.MaterializeOptions{
		Dir:      filepath.Join(dir, "workspace"),
		StateDir: filepath.Join(dir, "state"),
		Manifest: &c.Workspace,
		Source:   source,
		Logger:   x.log,
	})
	if err != nil {
		switch {
		case x.cancelled() != nil:
			out.terminal = protocol.RunCancelled{Actor: *x.cancelled()}
		case errors.Is(err, workspace.ErrUnsupportedFormat):
			out.terminal = failed(protocol.FailureCapabilityMismatch, "%v", err)
		default:
			out.terminal = failed(protocol.FailureTransferFailed, "%v", err)
		}
		return out
	}
	x.phases.lap("materialize")
	manifestHash, err := c.ManifestHash()
	if err != nil {
		out.terminal = failed(protocol.FailureSessionFailed, "%v", err)
		return out
	}
	if err := x.events.emit(protocol.WorkspaceMaterialized{ManifestHash: manifestHash}); err != nil {
		out.terminal = failed(protocol.FailureSessionFailed, "%v", err)
		return out
	}

	sink, err := newLogSink(filepath.Join(dir, "session.log"), x.redactor)
	if err != nil {
		out.terminal = failed(protocol.FailureSessionFailed, "%v", err)
		return out
	}
	if exec.LogMaxBytes == 0 || exec.LogMaxBytes > r.opts.MaxLogBytes {
		exec.LogMaxBytes = r.opts.MaxLogBytes
	}
	res, runErr := backend.Run(sessCtx, &session.Session{
		RunID:      x.runID,
		Contract:   c,
		Execution:  exec,
		Workspace:  mat.Dir,
		ScratchDir: filepath.Join(dir, "scratch"),
		Secrets:    x.secrets,
		Log:        sink,
		Record:     x.events.emit,
		Started: func(int) {
			x.mu.Lock()
			x.started = time.Now()
			x.mu.Unlock()
			x.lease.setPhase(client.PhaseRunning)
			if h := r.opts.Hooks.HarnessStarted; h != nil {
				h(x.runID)
			}
		},
		KillGrace: r.opts.KillGrace,
		Logger:    x.log,
	})
	x.phases.lap("session")
	var failure protocol.EventPayload
	switch {
	case runErr != nil:
		msg := x.redactString(runErr.Error())
		x.log.Warn("session could not run", "err", msg)
		failure = failed(protocol.FailureSessionFailed, "the session could not run: %s", msg)
	default:
		if err := x.events.emit(protocol.CommandExecuted{ArgvHash: argvHash, ExitCode: res.ExitCode}); err != nil {
			failure = failed(protocol.FailureSessionFailed, "%v", err)
		}
		switch {
		case res.End == session.TimedOut:
			failure = failed(protocol.FailureBudgetExceeded, "the session ran past its time limit of %s and was stopped", exec.Timeout)
		case res.End == session.LogLimit:
			failure = failed(protocol.FailureBudgetExceeded, "the session log passed its limit of %d bytes and the session was stopped", exec.LogMaxBytes)
		case res.End == session.MemoryLimit:
			failure = failed(protocol.FailureBudgetExceeded, "the session went over its memory limit (%s) and was killed", res.Detail)
		case res.ExitCode != 0 && failure == nil:
			failure = failed(protocol.FailureSessionFailed, "agent exited with code %d", res.ExitCode)
		}
	}

	// The output, whatever the outcome: a failed or cancelled session's
	// changes and log are evidence too.
	logHash, logSize, logErr := sink.finish()
	var diff []byte
	if runErr == nil {
		collected, err := workspace.Collect(runCtx, mat)
		if err != nil {
			if failure == nil {
				failure = failed(protocol.FailureCaptureFailed, "collect the workspace output: %v", err)
			}
		} else {
			for _, f := range collected.Changed {
				if err := x.events.emit(protocol.FileChanged{Path: f.Path, ContentHash: f.ContentHash}); err != nil && failure == nil {
					failure = failed(protocol.FailureSessionFailed, "%v", err)
				}
			}
			diff = x.redactor.Bytes(collected.Diff)
		}
	}
	x.phases.lap("collect")
	// Diff and log go up in one request, then are recorded in the
	// original's order: diff, then log.
	var uploads []client.BlobUpload
	diffHash := ""
	if len(diff) > 0 {
		diffHash = protocol.HashBytes(diff)
		uploads = append(uploads, client.BlobUpload{Hash: diffHash, Size: int64(len(diff)),
			Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(diff)), nil }})
	}
	if logErr != nil {
		x.log.Error("session log lost", "err", logErr)
		if failure == nil {
			failure = failed(protocol.FailureCaptureFailed, "%v", logErr)
		}
	} else if logSize > 0 {
		logPath := filepath.Join(dir, "session.log")
		uploads = append(uploads, client.BlobUpload{Hash: logHash, Size: logSize,
			Open: func() (io.ReadCloser, error) { return os.Open(logPath) }})
	}
	if len(uploads) > 0 {
		if err := uploadBlobs(runCtx, x.api, uploads, r.opts.UploadRetry); err != nil {
			if failure == nil {
				failure = failed(protocol.FailureTransferFailed, "upload the session output: %v", err)
			}
		} else {
			if diffHash != "" {
				out.diffHash = diffHash
				out.artifacts = append(out.artifacts, diffHash)
				x.emitArtifact("diff", "code-diff", diffHash, &failure)
			}
			if logErr == nil && logSize > 0 {
				out.artifacts = append(out.artifacts, logHash)
				x.emitArtifact("log", "session-log", logHash, &failure)
			}
		}
	}

	x.phases.lap("upload")
	switch {
	case x.cancelled() != nil:
		out.terminal = protocol.RunCancelled{Actor: *x.cancelled()}
	case failure != nil:
		out.terminal = failure
	default:
		out.terminal = protocol.RunCompleted{}
	}
	return out
}

// emitArtifact records an uploaded artifact and its boundary crossing, in
// the original's order.
func (x *runExec) emitArtifact(kind, dataClass, hash string, failure *protocol.EventPayload) {
	for _, p := range []protocol.EventPayload{
		protocol.ArtifactCreated{Kind: kind, Hash: hash},
		protocol.BoundaryCrossed{Direction: "out", ContentHash: hash, DataClass: dataClass},
	} {
		if err := x.events.emit(p); err != nil && *failure == nil {
			*failure = failed(protocol.FailureSessionFailed, "%v", err)
		}
	}
}

// sanitize keeps secret values out of the free-text fields of the events
// this runner writes (an agent can put a secret in a host name it asks for
// or a file name it writes; an error can quote anything).
func (x *runExec) sanitize(p protocol.EventPayload) protocol.EventPayload {
	switch e := p.(type) {
	case protocol.NetworkConnected:
		e.Host = x.redactString(e.Host)
		return e
	case protocol.FileChanged:
		e.Path = x.redactString(e.Path)
		return e
	case protocol.RunFailed:
		e.Message = x.redactString(e.Message)
		return e
	}
	return p
}

func (x *runExec) redactString(s string) string { return string(x.redactor.Bytes([]byte(s))) }

// receipt builds and signs the receipt from the chain.
func (x *runExec) receipt(out outcome) (*protocol.Receipt, error) {
	id := x.r.id
	rc, err := protocol.BuildReceipt(protocol.ReceiptInput{
		Contract: x.contract,
		Events:   x.events.snapshot(),
		Runner: protocol.RunnerIdentity{
			RunnerID:        id.RunnerID,
			KeyID:           x.r.key.Public().ID(),
			Pool:            x.contract.Runner.Pool,
			AttestationTier: protocol.AttestationMock,
			Isolation:       out.isolation,
		},
		DiffHash:       out.diffHash,
		ArtifactHashes: out.artifacts,
	})
	if err != nil {
		return nil, err
	}
	if err := rc.Sign(x.r.key, protocol.SignerRunner); err != nil {
		return nil, fmt.Errorf("sign receipt: %w", err)
	}
	return rc, nil
}

// sessionDir makes the run's private directory under the data directory.
func (x *runExec) sessionDir() (string, error) {
	base := x.r.sessionsRoot()
	if err := os.MkdirAll(base, 0o700); err != nil {
		return "", fmt.Errorf("session directory: %w", err)
	}
	dir, err := os.MkdirTemp(base, x.runID+"-")
	if err != nil {
		return "", fmt.Errorf("session directory: %w", err)
	}
	return dir, nil
}

// removeAll removes a session directory, making read-only directories the
// session left behind writable first if it has to.
func removeAll(dir string, log *slog.Logger) {
	if err := os.RemoveAll(dir); err == nil {
		return
	}
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	if err := os.RemoveAll(dir); err != nil {
		log.Warn("remove session directory", "dir", dir, "err", err)
	}
}

// phaseClock records how long each phase of a run took.
type phaseClock struct {
	last  time.Time
	attrs []any
}

func (p *phaseClock) lap(name string) {
	now := time.Now()
	p.attrs = append(p.attrs, name, now.Sub(p.last).Round(time.Microsecond))
	p.last = now
}
