package testutil

import (
	"context"
	"testing"
	"time"

	"warrant.dev/warrant/internal/runner"
)

// RunRunner runs a real runner in the background until the test ends,
// then stops it as SIGTERM would (no new claims; claimed runs finish),
// cancelling it if it has not stopped within stopWait.
func RunRunner(t testing.TB, r *runner.Runner, stopWait time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		r.Stop()
		select {
		case <-done:
		case <-time.After(stopWait):
			cancel()
			<-done
		}
		cancel()
	})
}
