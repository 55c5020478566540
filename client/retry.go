package client

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is an exponential backoff with full jitter: the n-th wait is a
// random duration up to min(Max, Initial·2ⁿ). Retry rules live here, in one
// place, for every caller.
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
}

// DefaultBackoff suits calls to the plane: 100 ms doubling to 5 s.
var DefaultBackoff = Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second}

// Wait returns the jittered wait before retry attempt n (0-based).
func (b Backoff) Wait(n int) time.Duration {
	d := b.Initial
	for i := 0; i < n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(d))) + d/10
}

// Retry calls fn until it succeeds, fails with an error that is not
// transient (see IsTransient), the budget is spent, or ctx ends. It returns
// fn's last error.
func Retry(ctx context.Context, b Backoff, budget time.Duration, fn func(context.Context) error) error {
	deadline := time.Now().Add(budget)
	for attempt := 0; ; attempt++ {
		err := fn(ctx)
		if err == nil || !IsTransient(err) {
			return err
		}
		wait := b.Wait(attempt)
		if time.Now().Add(wait).After(deadline) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// Jitter returns d plus or minus up to a fifth of d, so many runners do not
// poll or heartbeat in lockstep.
func Jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	spread := int64(d) / 5
	return d - time.Duration(spread) + time.Duration(rand.Int64N(2*spread+1))
}
