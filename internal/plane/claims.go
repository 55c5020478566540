package plane

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/store"
	"warrant.dev/warrant/protocol"
)

// Failure messages the plane writes.
const (
	msgLeaseExpired = "runner lost: lease expired"
)

func msgContractExpired(pool string) string {
	return fmt.Sprintf("no runner in pool %s claimed this run before its contract expired", pool)
}

func (p *Plane) lease(until time.Time) client.Lease {
	return client.Lease{
		ExpiresAt:        protocol.FormatTime(until),
		TTLSeconds:       int(math.Ceil(p.cfg.LeaseTTL.Seconds())),
		HeartbeatSeconds: int(math.Ceil(p.cfg.HeartbeatInterval.Seconds())),
	}
}

// failEvent is the plane's run.failed after head.
func failEvent(run store.Run, head *store.Event, class, msg string, now time.Time) ([]store.Event, error) {
	if head != nil && store.IsTerminalEvent(head.Type) {
		return nil, nil // the runner already ended the chain
	}
	return chainEvents(run.ID, run.ContractHash, head, []protocol.EventBody{protocol.NewEvent(protocol.RunFailed{Failure: class, Message: msg})}, now)
}

// planeFeatures are the additions to v1 this plane offers its runners.
var planeFeatures = []string{client.FeatureFetchBlobs}

// handleClaim is POST /v1/claims: a long poll for work.
func (p *Plane) handleClaim(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	rn := info(r).who.runner
	var req client.ClaimRequest
	if err := p.decode(w, r, &req, true); err != nil {
		return err
	}
	if req.Pool != "" && req.Pool != rn.Pool {
		return errf(client.CodeForbidden, "this runner is enrolled in pool %q, not %q", rn.Pool, req.Pool)
	}
	enrolled := rn.Tiers
	if len(enrolled) == 0 {
		enrolled = []string{protocol.IsolationProcess}
	}
	tiers := enrolled
	if len(req.Tiers) > 0 {
		tiers = nil
		for _, t := range req.Tiers {
			if slices.Contains(enrolled, t) && !slices.Contains(tiers, t) {
				tiers = append(tiers, t)
			}
		}
		if len(tiers) == 0 {
			return errf(client.CodeBadRequest, "none of the tiers %v were enrolled for this runner (%v)", req.Tiers, enrolled)
		}
	}
	if req.WaitSeconds < 0 {
		return errf(client.CodeBadRequest, "waitSeconds must not be negative")
	}
	wait := min(time.Duration(req.WaitSeconds)*time.Second, p.cfg.MaxClaimWait)
	now := p.now()
	if now.Sub(rn.LastSeenAt) > 5*time.Second {
		if err := p.store.TouchRunner(ctx, rn.ID, now); err != nil {
			p.log.Warn("record runner contact", "runner", rn.ID, "err", err)
		}
	}
	wake, unsubscribe := p.notify.Subscribe(poolTopic(rn.Pool))
	defer unsubscribe()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		c, err := p.tryClaim(ctx, rn, tiers)
		if err != nil {
			return err
		}
		if c != nil {
			p.log.Info("run claimed", "runId", c.RunID, "runner", rn.ID, "requestId", info(r).id, "secretsReleased", len(c.Secrets))
			writeJSON(w, http.StatusOK, c)
			return nil
		}
		if wait <= 0 {
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
		select {
		case <-wake:
		case <-timer.C:
			w.WriteHeader(http.StatusNoContent)
			return nil
		case <-p.drainCh:
			w.WriteHeader(http.StatusNoContent)
			return nil
		case <-ctx.Done():
			return nil // the runner went away
		}
	}
}

// tryClaim claims the oldest matching run, or returns nil.
func (p *Plane) tryClaim(ctx context.Context, rn *store.Runner, tiers []string) (*client.Claim, error) {
	token, hash := newToken(prefixClaim)
	now := p.now()
	leaseUntil := now.Add(p.cfg.LeaseTTL)
	var released []client.ReleasedSecret
	var contract *protocol.Contract
	var failed []store.Run
	decide := func(run store.Run, head store.Event, secrets []store.Secret) (store.ClaimDecision, error) {
		released, contract = nil, nil
		fail := func(class, msg string) (store.ClaimDecision, error) {
			ev, err := failEvent(run, &head, class, msg, now)
			if err != nil {
				return store.ClaimDecision{}, err
			}
			failed = append(failed, run)
			return store.ClaimDecision{Events: ev, Fail: &store.Failure{Class: class, Message: msg}}, nil
		}
		c, err := protocol.ParseContract(run.Contract)
		if err != nil {
			p.log.Error("stored contract unreadable", "runId", run.ID, "err", err)
			return fail(protocol.FailureSessionFailed, "the plane could not read this run's contract")
		}
		if !run.ExpiresAt.IsZero() && !now.Before(run.ExpiresAt) {
			return fail(protocol.FailureCapabilityMismatch, msgContractExpired(run.Pool))
		}
		byName := make(map[string]store.Secret, len(secrets))
		for _, s := range secrets {
			byName[s.Name] = s
		}
		bodies := []protocol.EventBody{protocol.NewEvent(protocol.RunClaimed{RunnerID: rn.ID, RunnerKeyID: rn.KeyID})}
		var out []client.ReleasedSecret
		for _, sc := range c.Secrets {
			sec, ok := byName[sc.Name]
			if !ok {
				return fail(protocol.FailureSecretReleaseDenied, fmt.Sprintf("secret %q named by the contract is no longer stored on the plane", sc.Name))
			}
			value, err := p.sealer.open(sc.Name, sec.Ciphertext)
			if err != nil {
				p.log.Error("secret cannot be opened", "secret", sc.Name, "runId", run.ID, "err", err)
				return fail(protocol.FailureSecretReleaseDenied, fmt.Sprintf("secret %q could not be decrypted by the plane", sc.Name))
			}
			out = append(out, client.ReleasedSecret{Name: sc.Name, Scope: sc.Scope, Value: string(value)})
			bodies = append(bodies, protocol.NewEvent(protocol.SecretReleased{Name: sc.Name, Scope: sc.Scope}))
		}
		ev, err := chainEvents(run.ID, run.ContractHash, &head, bodies, now)
		if err != nil {
			return store.ClaimDecision{}, err
		}
		released, contract = out, c
		return store.ClaimDecision{Events: ev}, nil
	}
	run, chain, err := p.store.ClaimNext(ctx, store.ClaimRequest{Pool: rn.Pool, Tiers: tiers, RunnerID: rn.ID, TokenHash: hash, Now: now, LeaseUntil: leaseUntil}, decide)
	for _, f := range failed {
		if err == nil || errors.Is(err, store.ErrNotFound) {
			p.log.Info("queued run failed at claim", "runId", f.ID)
			p.metrics.ended(store.StateFailed, "claim")
			p.notify.Publish(runTopic(f.ID))
		}
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	events, err := fromStoreEvents(chain)
	if err != nil {
		return nil, err
	}
	if issuedAt, err := protocol.ParseTime(contract.IssuedAt); err == nil {
		p.metrics.claimLatency.Observe(p.clock.Now().Sub(issuedAt).Seconds())
	}
	for _, s := range released {
		p.log.Info("secret released", "runId", run.ID, "runner", rn.ID, "secret", s.Name, "scope", s.Scope)
	}
	if released == nil {
		released = []client.ReleasedSecret{}
	}
	p.notify.Publish(runTopic(run.ID))
	return &client.Claim{RunID: run.ID, Contract: contract, ClaimToken: token, Lease: p.lease(run.LeaseUntil), Events: events, Secrets: released,
		Features: planeFeatures}, nil
}

// handleHeartbeat is POST /v1/runs/{id}/heartbeat.
func (p *Plane) handleHeartbeat(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	id := info(r).who
	var req client.HeartbeatRequest
	if err := p.decode(w, r, &req, true); err != nil {
		return err
	}
	switch req.Phase {
	case "", client.PhaseProvisioning, client.PhaseRunning:
	default:
		return errf(client.CodeBadRequest, "phase %q is not provisioning or running", req.Phase)
	}
	if req.WaitSeconds < 0 {
		return errf(client.CodeBadRequest, "waitSeconds must not be negative")
	}
	wake, unsubscribe := p.notify.Subscribe(runTopic(id.claim.ID))
	defer unsubscribe()
	now := p.now()
	run, err := p.store.Heartbeat(ctx, id.claim.ID, id.claimHash, req.Phase, now, now.Add(p.cfg.LeaseTTL))
	if err != nil {
		return err
	}
	if run.State != id.claim.State {
		p.notify.Publish(runTopic(run.ID))
	}
	wait := min(time.Duration(req.WaitSeconds)*time.Second, p.cfg.HeartbeatInterval)
	if run.Cancel == nil && wait > 0 {
		timer := time.NewTimer(wait)
		defer timer.Stop()
	waiting:
		for {
			select {
			case <-wake:
				cur, err := p.store.GetRun(ctx, run.ID)
				if err != nil {
					return err
				}
				if cur.Cancel != nil {
					run.Cancel = cur.Cancel
					break waiting
				}
			case <-timer.C:
				break waiting
			case <-p.drainCh:
				break waiting
			case <-ctx.Done():
				return nil
			}
		}
	}
	resp := client.HeartbeatResponse{Lease: p.lease(run.LeaseUntil)}
	if c := run.Cancel; c != nil {
		resp.Cancel = &client.Cancellation{Actor: protocol.ActorRef{Kind: c.ActorKind, ID: c.ActorID}, Reason: c.Reason, At: protocol.FormatTime(c.At)}
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// Event types only the plane writes.
var planeEventTypes = []string{protocol.EventRunCreated, protocol.EventRunClaimed, protocol.EventSecretReleased, protocol.EventPolicyEvaluated, protocol.EventConsentRequested, protocol.EventConsentGranted}

// isSessionEvent reports whether events of type typ come from a session
// that has started (not from provisioning, not terminal).
func isSessionEvent(typ string) bool {
	switch typ {
	case protocol.EventCommandExecuted, protocol.EventFileChanged, protocol.EventNetworkConnected, protocol.EventModelCalled,
		protocol.EventBoundaryCrossed, protocol.EventArtifactCreated, protocol.EventCheckpointCreated:
		return true
	}
	return false
}

// handleAppendEvents is POST /v1/runs/{id}/events.
func (p *Plane) handleAppendEvents(w http.ResponseWriter, r *http.Request) error {
	id := info(r).who
	var req client.AppendEventsRequest
	if err := p.decode(w, r, &req, false); err != nil {
		return err
	}
	if len(req.Events) == 0 {
		return errf(client.CodeBadRequest, "no events")
	}
	rejected := func(seq int64, format string, args ...any) error {
		return &apiError{code: client.CodeChainRejected, msg: fmt.Sprintf(format, args...), seq: &seq}
	}
	events := make([]store.Event, 0, len(req.Events))
	for i := range req.Events {
		e := &req.Events[i]
		if e.Event.IsZero() {
			return errf(client.CodeBadRequest, "events[%d]: no event body", i)
		}
		typ := e.Event.Type()
		if slices.Contains(planeEventTypes, typ) {
			return rejected(e.Seq, "event type %s is written by the plane, not the runner", typ)
		}
		if _, err := e.Event.Payload(); err != nil {
			return errf(client.CodeBadRequest, "events[%d] (seq %d): %v", i, e.Seq, err)
		}
		if _, err := protocol.ParseTime(e.TS); err != nil {
			return errf(client.CodeBadRequest, "events[%d] (seq %d): %v", i, e.Seq, err)
		}
		h, err := protocol.EventHash(e.Seq, e.TS, e.Prev, e.Event)
		if err != nil {
			return errf(client.CodeBadRequest, "events[%d]: %v", i, err)
		}
		if h != e.Hash {
			return rejected(e.Seq, "event hash does not match its content")
		}
		if i > 0 {
			prev := &req.Events[i-1]
			if e.Seq != prev.Seq+1 || e.Prev != prev.Hash {
				return rejected(e.Seq, "event does not follow the one before it in the request")
			}
		}
		se, err := toStoreEvent(id.claim.ID, *e)
		if err != nil {
			return err
		}
		events = append(events, se)
	}
	now := p.now()
	if id.claim.State != store.StateRunning && slices.ContainsFunc(req.Events, func(e protocol.ChainedEvent) bool { return isSessionEvent(e.Event.Type()) }) {
		// The session's own events can overtake the heartbeat that
		// reports it running; a watcher must not see them under a run
		// still provisioning.
		if _, err := p.store.Heartbeat(r.Context(), id.claim.ID, id.claimHash, store.StateRunning, now, now.Add(p.cfg.LeaseTTL)); err != nil {
			return err
		}
	}
	run, err := p.store.AppendEvents(r.Context(), id.claim.ID, id.claimHash, events, now)
	if err != nil {
		return err
	}
	p.notify.Publish(runTopic(run.ID))
	writeJSON(w, http.StatusOK, client.ChainHead{Seq: run.EventCount - 1, Hash: run.HeadHash})
	return nil
}

// handleComplete is POST /v1/runs/{id}/complete.
func (p *Plane) handleComplete(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	id := info(r).who
	var req client.CompleteRequest
	if err := p.decode(w, r, &req, false); err != nil {
		return err
	}
	if req.Receipt == nil {
		return errf(client.CodeBadRequest, "no receipt")
	}
	rc := req.Receipt
	if id.claimErr != nil {
		// The claim was used up. If it was used by this very receipt (a
		// retried completion whose reply was lost), answer as before.
		return p.replayCompletion(w, id, rc)
	}
	run := *id.claim
	rejected := func(check, format string, args ...any) error {
		return &apiError{code: client.CodeReceiptRejected, msg: fmt.Sprintf(format, args...), check: check}
	}
	if len(rc.Signatures) != 1 || rc.Signatures[0].Signer != protocol.SignerRunner {
		return rejected(protocol.CheckRunnerSignature, "the receipt must carry exactly one signature, the runner's")
	}
	rn, err := p.store.GetRunner(ctx, run.RunnerID)
	if err != nil {
		return err
	}
	runnerKey, err := protocol.ParsePublicKeyPEM(rn.PublicKeyPEM)
	if err != nil {
		return fmt.Errorf("enrolled key of runner %s: %w", rn.ID, err)
	}
	if rc.Runner.RunnerID != rn.ID {
		return rejected(protocol.CheckRunnerKey, "receipt names runner %q, the claim belongs to %q", rc.Runner.RunnerID, rn.ID)
	}
	contract, err := protocol.ParseContract(run.Contract)
	if err != nil {
		return fmt.Errorf("stored contract of %s: %w", run.ID, err)
	}
	stored, err := p.store.ListEvents(ctx, run.ID, -1, 0)
	if err != nil {
		return err
	}
	events, err := fromStoreEvents(stored)
	if err != nil {
		return err
	}
	if err := protocol.VerifyCompletion(contract, events, rc, runnerKey); err != nil {
		check := "receipt"
		var ve *protocol.VerifyError
		if errors.As(err, &ve) {
			check = ve.Check
		}
		return rejected(check, "%v", err)
	}
	if err := rc.Sign(p.key, protocol.SignerPlane); err != nil {
		return fmt.Errorf("countersign: %w", err)
	}
	data, err := rc.MarshalJSON()
	if err != nil {
		return fmt.Errorf("encode receipt: %w", err)
	}
	var failure *store.Failure
	if rc.Status == protocol.StateFailed {
		if pl, err := events[len(events)-1].Event.Payload(); err == nil {
			if f, ok := pl.(protocol.RunFailed); ok {
				failure = &store.Failure{Class: f.Failure, Message: f.Message}
			}
		}
	}
	done, err := p.store.CompleteRun(ctx, run.ID, id.claimHash, store.Completion{Receipt: data, State: rc.Status, Failure: failure, EventsHead: rc.EventsHead, EventCount: rc.EventCount}, p.now())
	if err != nil {
		var ce *store.ChainError
		if errors.As(err, &ce) {
			return rejected(protocol.CheckEventChain, "%s", ce.Reason)
		}
		return err
	}
	class := ""
	if failure != nil {
		class = failure.Class
	}
	p.metrics.ended(done.State, class)
	p.contracts.forget(run.ID)
	p.log.Info("run completed", "runId", run.ID, "status", rc.Status, "events", rc.EventCount, "requestId", info(r).id)
	p.notify.Publish(runTopic(run.ID))
	writeJSON(w, http.StatusOK, client.CompleteResponse{Receipt: rc})
	return nil
}

// replayCompletion answers a completion retried after it succeeded.
func (p *Plane) replayCompletion(w http.ResponseWriter, id *identity, rc *protocol.Receipt) error {
	used := toAPIError(id.claimErr)
	if !id.claim.HasReceipt {
		return used
	}
	stored, err := protocol.ParseReceipt(id.claim.Receipt)
	if err != nil {
		return used
	}
	h1, err1 := stored.Hash()
	h2, err2 := rc.Hash()
	if err1 != nil || err2 != nil || h1 != h2 {
		return used
	}
	writeJSON(w, http.StatusOK, client.CompleteResponse{Receipt: stored})
	return nil
}
