package plane_test

import (
	"context"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

// runFeed follows GET /v1/runs/stream for a test.
type runFeed struct {
	t    *testing.T
	runs chan client.Run
	errc chan error
}

func followRuns(t *testing.T, c *client.Client, o client.ListRunsOptions, since time.Time) *runFeed {
	t.Helper()
	ctx, cancel := context.WithCancel(bg)
	f := &runFeed{t: t, runs: make(chan client.Run, 100), errc: make(chan error, 1)}
	go func() { f.errc <- c.StreamRuns(ctx, o, since, func(r client.Run) error { f.runs <- r; return nil }) }()
	t.Cleanup(func() {
		cancel()
		<-f.errc
	})
	return f
}

// next returns the next run sent, failing the test after a while.
func (f *runFeed) next() client.Run {
	f.t.Helper()
	select {
	case r := <-f.runs:
		return r
	case err := <-f.errc:
		f.t.Fatalf("run stream ended: %v", err)
	case <-time.After(10 * time.Second):
		f.t.Fatal("run stream stalled")
	}
	return client.Run{}
}

// expect reads runs until one has id and state (runs re-sent in a state
// already seen are allowed: delivery is at least once).
func (f *runFeed) expect(id, state string) client.Run {
	f.t.Helper()
	for {
		r := f.next()
		if r.ID == id && r.State == state {
			return r
		}
		if r.ID != id {
			f.t.Fatalf("run stream sent %s (%s) while waiting for %s to be %s", r.ID, r.State, id, state)
		}
	}
}

// TestRunsStream: the run-list stream sends each change of each run a
// principal may read, live, with filters, a state filter that reports a
// run leaving it, since, and role scoping.
func TestRunsStream(t *testing.T) {
	testutil.CheckGoroutines(t)
	tp := testutil.StartPlane(t)
	alice, aliceP := tp.NewPrincipal(client.RoleRequester)
	bob, _ := tp.NewPrincipal(client.RoleRequester)
	auditor, _ := tp.NewPrincipal(client.RoleAuditor)

	before := submit(t, alice, basicRequest(t, alice))
	time.Sleep(5 * time.Millisecond) // a later millisecond than before's change
	start := time.Now()

	// Streams connect in the background: since=start makes them see every
	// change from here on however late they connect.
	all := followRuns(t, auditor, client.ListRunsOptions{}, start)
	mine := followRuns(t, alice, client.ListRunsOptions{}, start)
	created := followRuns(t, auditor, client.ListRunsOptions{State: protocol.StateCreated}, start)
	replay := followRuns(t, auditor, client.ListRunsOptions{RequestedBy: aliceP.Name}, start.Add(-time.Hour))

	// since in the past replays what changed since then.
	if r := replay.next(); r.ID != before.ID || r.State != protocol.StateCreated || r.Contract != nil {
		t.Fatalf("replayed %+v, want %s created (a list row)", r, before.ID)
	}

	// Bob's run reaches the auditor but not Alice.
	bobs := submit(t, bob, basicRequest(t, bob))
	all.expect(bobs.ID, protocol.StateCreated)
	created.expect(bobs.ID, protocol.StateCreated)
	run := submit(t, alice, basicRequest(t, alice))
	if r := mine.next(); r.ID != run.ID || r.State != protocol.StateCreated {
		t.Fatalf("alice's stream sent %s (%s) first, want her run %s", r.ID, r.State, run.ID)
	}
	all.expect(run.ID, protocol.StateCreated)
	created.expect(run.ID, protocol.StateCreated)
	replay.expect(run.ID, protocol.StateCreated)

	rn := tp.EnrollRunner("default")
	cl := rn.MustClaim(t) // the oldest queued run: before
	if cl.RunID != before.ID {
		t.Fatalf("claimed %s, want %s", cl.RunID, before.ID)
	}
	// The state filter sends a run leaving "created" once, in its new state.
	created.expect(before.ID, protocol.StateClaimed)
	all.expect(before.ID, protocol.StateClaimed)
	mine.expect(before.ID, protocol.StateClaimed)
	cl.Append(t, protocol.FileChanged{Path: "a.txt", ContentHash: protocol.HashBytes([]byte("a"))})
	if r := all.next(); r.ID != before.ID || r.EventCount != 4 {
		t.Fatalf("after an event: %+v", r)
	}
	cl.Finish(t, protocol.RunCompleted{})
	if r := all.expect(before.ID, protocol.StateCompleted); !r.HasReceipt {
		t.Fatalf("completed row without receipt: %+v", r)
	}
	mine.expect(before.ID, protocol.StateCompleted)

	// Nothing more about before on the state-filtered stream: the next
	// thing it sends is a new queued run.
	third := submit(t, alice, basicRequest(t, alice))
	if r := created.next(); r.ID != third.ID || r.State != protocol.StateCreated {
		t.Fatalf("state-filtered stream sent %s (%s), want %s created", r.ID, r.State, third.ID)
	}

	// A run awaiting approval wakes the stream too.
	if _, err := tp.Admin.PutPolicy(bg, secretPolicy(protocol.ConsentRule{When: "any-run"})); err != nil {
		t.Fatal(err)
	}
	asked := submit(t, bob, basicRequest(t, bob))
	all.expect(third.ID, protocol.StateCreated)
	all.expect(asked.ID, protocol.StateAwaitingApproval)

	// Bad filters are refused before the stream starts.
	err := auditor.StreamRuns(bg, client.ListRunsOptions{State: "sleeping"}, time.Time{}, func(client.Run) error { return nil })
	mustCode(t, err, client.CodeBadRequest)
	err = tp.Client("").StreamRuns(bg, client.ListRunsOptions{}, time.Time{}, func(client.Run) error { return nil })
	mustCode(t, err, client.CodeUnauthenticated)
}

// TestRunsStreamEndsOnShutdown: a plane that drains ends its run-list
// streams.
func TestRunsStreamEndsOnShutdown(t *testing.T) {
	tp := testutil.StartPlane(t)
	errc := make(chan error, 1)
	go func() {
		errc <- tp.Admin.StreamRuns(bg, client.ListRunsOptions{}, time.Time{}, func(client.Run) error { return nil })
	}()
	time.Sleep(100 * time.Millisecond)
	tp.Plane.Drain()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("stream ended without an error; want a dropped connection")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the run stream outlived the drain")
	}
}
