package runner

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/protocol"
)

// Lease defaults when the plane leaves them out.
const (
	defaultHeartbeat = 10 * time.Second
	defaultLeaseTTL  = 30 * time.Second
)

// ErrLeaseLost means the runner could not renew a run's lease before it
// ran out (cut off from the plane), or the plane declared the claim
// expired or used. The plane fails such a run itself; the runner stops it.
var ErrLeaseLost = errors.New("lease lost")

// leaseKeeper renews a run's lease with heartbeats. Heartbeats long-poll:
// the plane holds each one until the run is cancelled or the wait ends, so
// a cancellation reaches the runner at once.
type leaseKeeper struct {
	api   *client.Client
	runID string

	onCancel func(protocol.ActorRef) // called once, when the plane cancels the run
	onLost   func(error)             // called once, when the lease is lost

	mu        sync.Mutex
	phase     string
	phaseCh   chan struct{} // signalled when phase changes
	interval  time.Duration
	ttl       time.Duration
	deadline  time.Time // when the lease runs out, by our clock
	cancelled bool
}

func newLeaseKeeper(api *client.Client, runID string, lease client.Lease, start time.Time) *leaseKeeper {
	k := &leaseKeeper{
		api:     api,
		runID:   runID,
		phase:   client.PhaseProvisioning,
		phaseCh: make(chan struct{}, 1),
	}
	k.applyLease(lease, start)
	return k
}

// applyLease takes the plane's interval and TTL; the deadline counts from
// when the renewing request was sent, which errs on the safe side.
func (k *leaseKeeper) applyLease(l client.Lease, sent time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ttl = time.Duration(l.TTLSeconds) * time.Second
	if k.ttl <= 0 {
		k.ttl = defaultLeaseTTL
	}
	k.interval = time.Duration(l.HeartbeatSeconds) * time.Second
	if k.interval <= 0 || k.interval >= k.ttl {
		// A sub-second interval rounds to 0 on the wire.
		k.interval = min(defaultHeartbeat, k.ttl/3)
	}
	k.deadline = sent.Add(k.ttl)
}

// setPhase reports a new phase with the next heartbeat, sent at once.
func (k *leaseKeeper) setPhase(phase string) {
	k.mu.Lock()
	changed := k.phase != phase
	k.phase = phase
	k.mu.Unlock()
	if changed {
		select {
		case k.phaseCh <- struct{}{}:
		default:
		}
	}
}

// run heartbeats until ctx ends or the lease is lost.
func (k *leaseKeeper) run(ctx context.Context) {
	failures := 0
	for {
		k.mu.Lock()
		phase, interval, deadline, cancelled := k.phase, k.interval, k.deadline, k.cancelled
		k.mu.Unlock()
		if time.Now().After(deadline) {
			k.onLost(fmt.Errorf("%w: no heartbeat reached the plane before the lease ran out at %s", ErrLeaseLost, deadline.Format(time.RFC3339)))
			return
		}
		// Hold the heartbeat open for about one interval, but never past
		// the point where the lease would need renewing anyway. After a
		// cancel the plane answers at once, so wait between beats instead.
		wait := min(client.Jitter(interval), time.Until(deadline)/2)
		req := client.HeartbeatRequest{Phase: phase}
		if !cancelled {
			req.WaitSeconds = max(int(wait/time.Second), 1)
		}
		hbCtx, stop := context.WithCancel(ctx)
		go func() {
			select {
			case <-k.phaseCh:
				stop() // report the new phase now
			case <-hbCtx.Done():
			}
		}()
		sent := time.Now()
		// Bound the request by the lease deadline: if the plane has not
		// answered when the lease runs out, it is gone. (The wait is
		// shorter than the TTL, so a held heartbeat returns before.)
		reqCtx, cancelReq := context.WithDeadline(hbCtx, deadline)
		resp, err := k.api.Heartbeat(reqCtx, k.runID, req)
		cancelReq()
		phaseChanged := hbCtx.Err() != nil && ctx.Err() == nil
		stop()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil:
			failures = 0
			k.applyLease(resp.Lease, sent)
			if resp.Cancel != nil && !cancelled {
				k.mu.Lock()
				k.cancelled = true
				k.mu.Unlock()
				k.onCancel(resp.Cancel.Actor)
			}
			if cancelled || req.WaitSeconds == 0 {
				if !sleepCtx(ctx, wait) {
					return
				}
			}
		case phaseChanged:
			// Interrupted to send the new phase.
		case errors.Is(err, client.ErrClaimExpired), errors.Is(err, client.ErrClaimUsed), errors.Is(err, client.ErrUnauthenticated):
			k.onLost(fmt.Errorf("%w: %v", ErrLeaseLost, err))
			return
		default:
			// Transient or unexpected: keep trying until the lease is
			// gone; the deadline check above decides.
			backoff := client.DefaultBackoff.Wait(failures)
			failures++
			if !sleepCtx(ctx, backoff) {
				return
			}
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
