package plane

import (
	"context"
	"errors"
	"fmt"
	"time"

	"warrant.dev/warrant/internal/store"
	"warrant.dev/warrant/protocol"
)

// Reap runs one pass of the plane's clock-driven transitions: runs whose
// lease lapsed fail (session_failed, "runner lost: lease expired"), queued
// runs whose contract expired fail, and runs awaiting approval past the
// consent timeout fail (consent_timeout). Start runs it every
// ReapInterval; tests call it after moving a fake clock.
func (p *Plane) Reap(ctx context.Context) error {
	now := p.now()
	var errs []error
	leases, err := p.store.ExpireLeases(ctx, now, func(run store.Run, head *store.Event) (store.End, error) {
		ev, err := failEvent(run, head, protocol.FailureSessionFailed, msgLeaseExpired, now)
		return store.End{Events: ev, Failure: &store.Failure{Class: protocol.FailureSessionFailed, Message: msgLeaseExpired}}, err
	})
	errs = append(errs, err)
	for _, r := range leases {
		p.log.Warn("runner lost: lease expired, run failed", "runId", r.ID, "runner", r.RunnerID)
		p.ended(r)
	}
	contracts, err := p.store.ExpireContracts(ctx, now, func(run store.Run, head *store.Event) (store.End, error) {
		msg := msgContractExpired(run.Pool)
		ev, err := failEvent(run, head, protocol.FailureCapabilityMismatch, msg, now)
		return store.End{Events: ev, Failure: &store.Failure{Class: protocol.FailureCapabilityMismatch, Message: msg}}, err
	})
	errs = append(errs, err)
	for _, r := range contracts {
		p.log.Warn("contract expired before any claim, run failed", "runId", r.ID, "pool", r.Pool)
		p.ended(r)
	}
	msg := fmt.Sprintf("no approver decided within %s", p.cfg.ConsentTimeout)
	approvals, err := p.store.ExpireApprovals(ctx, now.Add(-p.cfg.ConsentTimeout), now, func(run store.Run, head *store.Event) (store.End, error) {
		return store.End{Failure: &store.Failure{Class: protocol.FailureConsentTimeout, Message: msg}}, nil
	})
	errs = append(errs, err)
	for _, r := range approvals {
		p.log.Info("consent timed out, run failed", "runId", r.ID)
		p.ended(r)
	}
	p.limiter.sweep(time.Now())
	return errors.Join(errs...)
}

func (p *Plane) ended(r store.Run) {
	class := ""
	if r.Failure != nil {
		class = r.Failure.Class
	}
	p.metrics.ended(r.State, class)
	p.notify.Publish(runTopic(r.ID))
}

// RunRetention applies the policy's retention once: ended runs (with
// their events and receipts) older than retention.receiptsDays and blobs
// not referenced for retention.artifactsDays are deleted, and each
// deletion is recorded (GET /v1/retention).
func (p *Plane) RunRetention(ctx context.Context) ([]store.RetentionRecord, error) {
	pol, _, err := p.currentPolicy(ctx)
	if err != nil {
		return nil, err
	}
	now := p.now()
	day := 24 * time.Hour
	var out []store.RetentionRecord
	if d := pol.Retention.ReceiptsDays; d > 0 {
		cutoff := now.Add(-time.Duration(d * float64(day)))
		reason := fmt.Sprintf("ended more than %v days ago (retention.receiptsDays)", d)
		for {
			recs, err := p.store.DeleteRunsEndedBefore(ctx, cutoff, now, reason, 500)
			if err != nil {
				return out, err
			}
			out = append(out, recs...)
			if len(recs) < 500 {
				break
			}
		}
	}
	if d := pol.Retention.ArtifactsDays; d > 0 {
		cutoff := now.Add(-time.Duration(d * float64(day)))
		reason := fmt.Sprintf("not referenced for %v days (retention.artifactsDays)", d)
		for {
			recs, err := p.store.DeleteBlobsBefore(ctx, cutoff, now, reason, 500)
			if err != nil {
				return out, err
			}
			for _, rec := range recs {
				if err := p.blobs.Delete(ctx, rec.ID); err != nil {
					p.log.Error("retention: delete blob bytes", "blob", rec.ID, "err", err)
				}
			}
			out = append(out, recs...)
			if len(recs) < 500 {
				break
			}
		}
	}
	if len(out) > 0 {
		p.log.Info("retention deleted old data", "records", len(out))
	}
	return out, nil
}
