package plane_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

// TestLeaseExpiry: a runner that stops heartbeating loses its run, which
// ends failed (session_failed, runner lost) with the plane's run.failed
// event, and is never handed to another runner.
func TestLeaseExpiry(t *testing.T) {
	clock := testutil.NewFakeClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	tp := testutil.StartPlane(t, testutil.WithClock(clock))
	req, _ := tp.NewPrincipal(client.RoleRequester)
	run := submit(t, req, basicRequest(t, req))
	lost := tp.EnrollRunner("default")
	cl := lost.MustClaim(t)
	// Heartbeats keep the claim alive past the first TTL.
	for range 3 {
		tp.Advance(8 * time.Second)
		if _, err := cl.Client.Heartbeat(bg, run.ID, client.HeartbeatRequest{Phase: client.PhaseRunning}); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
	}
	cl.Append(t, protocol.WorkspaceMaterialized{ManifestHash: "x"})
	tp.Advance(9 * time.Second)
	if r, _ := req.GetRun(bg, run.ID); r.State != protocol.StateRunning {
		t.Fatalf("state before expiry = %s", r.State)
	}
	tp.Advance(2 * time.Second)
	r, err := req.GetRun(bg, run.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != protocol.StateFailed || r.Failure == nil || r.Failure.Class != protocol.FailureSessionFailed || r.Failure.Message != "runner lost: lease expired" || r.HasReceipt {
		t.Fatalf("after expiry: %+v", r)
	}
	el, _ := req.Events(bg, run.ID, -1)
	last := el.Events[len(el.Events)-1]
	p, _ := last.Event.Payload()
	if f, ok := p.(protocol.RunFailed); !ok || f.Failure != protocol.FailureSessionFailed {
		t.Fatalf("last event = %s", last.Event)
	}
	h, _ := r.Contract.Hash()
	if err := protocol.VerifyChain(el.Events, h); err != nil {
		t.Fatalf("chain after expiry: %v", err)
	}
	other := tp.EnrollRunner("default")
	if c := other.Claim(t, 0); c != nil {
		t.Fatalf("the lost run was handed out again: %s", c.RunID)
	}
	_, err = cl.Client.AppendEvents(bg, run.ID, []protocol.ChainedEvent{cl.Events[len(cl.Events)-1]})
	mustCode(t, err, client.CodeClaimExpired)
}

// TestContractExpiry: a queued run nobody claims fails when its contract
// expires, saying so.
func TestContractExpiry(t *testing.T) {
	clock := testutil.NewFakeClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	tp := testutil.StartPlane(t, testutil.WithClock(clock))
	req, _ := tp.NewPrincipal(client.RoleRequester)
	r := basicRequest(t, req)
	r.Isolation = protocol.IsolationNamespace // no runner offers it
	run := submit(t, req, r)
	rn := tp.EnrollRunner("default")
	if c := rn.Claim(t, 0); c != nil {
		t.Fatal("a process runner claimed a namespace run")
	}
	tp.Advance(time.Hour)
	got, _ := req.GetRun(bg, run.ID)
	if got.State != protocol.StateFailed || got.Failure == nil || !strings.Contains(got.Failure.Message, "no runner in pool default claimed this run before its contract expired") {
		t.Fatalf("expired run = %+v", got.Failure)
	}
}

// TestCancelQueuedAndAwaiting: cancellation of runs nobody claimed is
// immediate.
func TestCancelQueuedAndAwaiting(t *testing.T) {
	tp := testutil.StartPlane(t)
	req, reqP := tp.NewPrincipal(client.RoleRequester)
	queued := submit(t, req, basicRequest(t, req))
	got, err := req.Cancel(bg, queued.ID, "changed my mind")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != protocol.StateCancelled || got.Cancellation == nil || got.Cancellation.Actor.ID != reqP.Name || got.Cancellation.Reason != "changed my mind" {
		t.Fatalf("cancelled run = %+v", got)
	}
	el, _ := req.Events(bg, queued.ID, -1)
	last, _ := el.Events[len(el.Events)-1].Event.Payload()
	if c, ok := last.(protocol.RunCancelled); !ok || c.Actor.ID != reqP.Name {
		t.Fatalf("last event = %+v", last)
	}
	again, err := req.Cancel(bg, queued.ID, "")
	if err != nil || again.EventCount != got.EventCount {
		t.Fatalf("cancel is not idempotent: %v %+v", err, again)
	}
	rn := tp.EnrollRunner("default")
	if c := rn.Claim(t, 0); c != nil {
		t.Fatal("a cancelled run was claimed")
	}
	if _, err := tp.Admin.PutPolicy(bg, secretPolicy(protocol.ConsentRule{When: "any-run"})); err != nil {
		t.Fatal(err)
	}
	awaiting := submit(t, req, basicRequest(t, req))
	got, err = tp.Admin.Cancel(bg, awaiting.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != protocol.StateCancelled || got.EventCount != 0 || got.Cancellation.Actor.ID != "admin@test" {
		t.Fatalf("cancelled awaiting run = %+v", got)
	}
}

// TestCancelRunning: cancelling a running run reaches the runner's held
// heartbeat at once; the runner ends the chain with run.cancelled and a
// cancelled receipt.
func TestCancelRunning(t *testing.T) {
	tp := testutil.StartPlane(t, testutil.WithLeases(90*time.Second, 30*time.Second))
	req, reqP := tp.NewPrincipal(client.RoleRequester)
	run := submit(t, req, basicRequest(t, req))
	rn := tp.EnrollRunner("default")
	cl := rn.MustClaim(t)
	if _, err := cl.Client.Heartbeat(bg, run.ID, client.HeartbeatRequest{Phase: client.PhaseRunning}); err != nil {
		t.Fatal(err)
	}
	type result struct {
		resp    *client.HeartbeatResponse
		err     error
		elapsed time.Duration
	}
	done := make(chan result, 1)
	go func() {
		start := time.Now()
		resp, err := cl.Client.Heartbeat(bg, run.ID, client.HeartbeatRequest{Phase: client.PhaseRunning, WaitSeconds: 30})
		done <- result{resp, err, time.Since(start)}
	}()
	time.Sleep(100 * time.Millisecond) // let the heartbeat start waiting
	got, err := req.Cancel(bg, run.ID, "stop it")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != protocol.StateRunning || got.Cancellation == nil {
		t.Fatalf("after cancel: %+v", got)
	}
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.resp.Cancel == nil || res.resp.Cancel.Actor.ID != reqP.Name || res.resp.Cancel.Reason != "stop it" {
		t.Fatalf("heartbeat returned %+v after %v, want the cancellation", res.resp, res.elapsed)
	}
	if res.elapsed >= 30*time.Second {
		t.Fatalf("the cancellation waited for the heartbeat's whole wait (%v)", res.elapsed)
	}
	// Later heartbeats keep reporting it.
	hb, err := cl.Client.Heartbeat(bg, run.ID, client.HeartbeatRequest{})
	if err != nil || hb.Cancel == nil {
		t.Fatalf("second heartbeat: %+v %v", hb, err)
	}
	rc := cl.Finish(t, protocol.RunCancelled{Actor: res.resp.Cancel.Actor})
	if rc.Status != protocol.StateCancelled {
		t.Fatalf("receipt status %s", rc.Status)
	}
	final, _ := req.GetRun(bg, run.ID)
	if final.State != protocol.StateCancelled || !final.HasReceipt || final.Cancellation.Actor.ID != reqP.Name {
		t.Fatalf("final run = %+v", final)
	}
}

// TestConcurrentClaims: 8 runners long-poll for 200 runs at once; each run
// is claimed exactly once.
func TestConcurrentClaims(t *testing.T) {
	// Leases outlast the test, even under the race detector.
	tp := testutil.StartPlane(t, testutil.WithLeases(10*time.Minute, time.Minute))
	req, _ := tp.NewPrincipal(client.RoleRequester)
	base := basicRequest(t, req)
	const runs, runners = 200, 8
	var mu sync.Mutex
	claims := map[string]string{}
	var wg sync.WaitGroup
	errs := make(chan error, runners)
	stop := make(chan struct{})
	for i := range runners {
		rn := tp.EnrollRunner("default")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := rn.Client.Claim(bg, client.ClaimRequest{Pool: "default", Tiers: []string{"process"}, WaitSeconds: 1})
				if err != nil {
					errs <- fmt.Errorf("runner %d: %w", i, err)
					return
				}
				if c == nil {
					continue
				}
				mu.Lock()
				if prev, dup := claims[c.RunID]; dup {
					errs <- fmt.Errorf("run %s claimed by %s and %s", c.RunID, prev, rn.ID)
				}
				claims[c.RunID] = rn.ID
				n := len(claims)
				mu.Unlock()
				if n == runs {
					close(stop)
				}
			}
		}()
	}
	for range runs {
		submit(t, req, base)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(claims) != runs {
		t.Fatalf("%d runs claimed, want %d", len(claims), runs)
	}
	byRunner := map[string]int{}
	for _, r := range claims {
		byRunner[r]++
	}
	t.Logf("claims per runner: %v", byRunner)
	list, _ := tp.Admin.ListRuns(bg, client.ListRunsOptions{State: protocol.StateClaimed, Limit: 500})
	if len(list.Runs) != runs {
		t.Fatalf("%d runs in state claimed, want %d", len(list.Runs), runs)
	}
	for _, r := range list.Runs {
		if r.RunnerID != claims[r.ID] || r.EventCount != 3 {
			t.Fatalf("run %s: runner %s (claimed by %s), %d events", r.ID, r.RunnerID, claims[r.ID], r.EventCount)
		}
	}
}

// TestSecretGoneBeforeClaim: a run whose secret was deleted after its
// contract was issued fails at claim (secret_release_denied); the next run
// is claimed instead.
func TestSecretGoneBeforeClaim(t *testing.T) {
	tp := testutil.StartPlane(t)
	if _, err := tp.Admin.PutPolicy(bg, secretPolicy()); err != nil {
		t.Fatal(err)
	}
	if _, err := tp.Admin.PutSecret(bg, "API_KEY", "v"); err != nil {
		t.Fatal(err)
	}
	req, _ := tp.NewPrincipal(client.RoleRequester)
	r := basicRequest(t, req)
	r.Secrets = []string{"API_KEY"}
	withSecret := submit(t, req, r)
	plain := submit(t, req, basicRequest(t, req))
	if err := tp.Admin.DeleteSecret(bg, "API_KEY"); err != nil {
		t.Fatal(err)
	}
	cl := tp.EnrollRunner("default").MustClaim(t)
	if cl.RunID != plain.ID {
		t.Fatalf("claimed %s, want %s", cl.RunID, plain.ID)
	}
	got, _ := req.GetRun(bg, withSecret.ID)
	if got.State != protocol.StateFailed || got.Failure.Class != protocol.FailureSecretReleaseDenied {
		t.Fatalf("run with a deleted secret = %+v", got.Failure)
	}
}

// TestPlaneSideTypes: the plane never accepts plane-only events from a
// runner, nor anything after a terminal event.
func TestRunnerEventRules(t *testing.T) {
	tp := testutil.StartPlane(t, testutil.WithConfig(func(c *plane.Config) {}))
	req, _ := tp.NewPrincipal(client.RoleRequester)
	run := submit(t, req, basicRequest(t, req))
	cl := tp.EnrollRunner("default").MustClaim(t)
	for _, body := range []protocol.EventPayload{protocol.SecretReleased{Name: "X", Scope: "s"}, protocol.RunClaimed{RunnerID: "r", RunnerKeyID: "k"}, protocol.ConsentGranted{Actor: protocol.ActorRef{Kind: "human", ID: "me"}}, protocol.RunCreated{}} {
		e, _ := protocol.NextEvent(&cl.Events[len(cl.Events)-1], "", protocol.NewEvent(body), time.Now())
		_, err := cl.Client.AppendEvents(bg, run.ID, []protocol.ChainedEvent{e})
		ae := mustCode(t, err, client.CodeChainRejected)
		if ae.Seq == nil || *ae.Seq != e.Seq {
			t.Fatalf("seq = %v", ae.Seq)
		}
	}
	cl.Append(t, protocol.RunFailed{Failure: protocol.FailureSessionFailed, Message: "exit 1"})
	e, _ := protocol.NextEvent(&cl.Events[len(cl.Events)-1], "", protocol.NewEvent(protocol.FileChanged{Path: "a", ContentHash: "b"}), time.Now())
	_, err := cl.Client.AppendEvents(bg, run.ID, []protocol.ChainedEvent{e})
	mustCode(t, err, client.CodeChainRejected)
	// Replaying what is stored is fine (a retried append).
	if _, err := cl.Client.AppendEvents(bg, run.ID, cl.Events[3:]); err != nil {
		t.Fatalf("replay: %v", err)
	}
	rc := cl.Receipt(t, "")
	out, err := cl.Client.Complete(bg, run.ID, rc)
	if err != nil {
		t.Fatal(err)
	}
	if out.Status != protocol.StateFailed {
		t.Fatalf("status %s", out.Status)
	}
	got, _ := req.GetRun(bg, run.ID)
	if got.State != protocol.StateFailed || got.Failure == nil || got.Failure.Message != "exit 1" {
		t.Fatalf("failed run = %+v", got.Failure)
	}
}

// TestSessionEventsMarkTheRunRunning: the session's own events can reach
// the plane before the heartbeat that reports the session started; the
// run is running once they are stored, never provisioning with them.
func TestSessionEventsMarkTheRunRunning(t *testing.T) {
	tp := testutil.StartPlane(t)
	req, _ := tp.NewPrincipal(client.RoleRequester)
	run := submit(t, req, basicRequest(t, req))
	cl := tp.EnrollRunner("default").MustClaim(t)
	if _, err := cl.Client.Heartbeat(bg, run.ID, client.HeartbeatRequest{Phase: client.PhaseProvisioning}); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	cl.Append(t, protocol.WorkspaceMaterialized{ManifestHash: "x"})
	if r, _ := req.GetRun(bg, run.ID); r.State != protocol.StateProvisioning {
		t.Fatalf("after workspace.materialized: state %s, want provisioning", r.State)
	}
	cl.Append(t, protocol.NetworkConnected{Host: "example.com", Decision: "blocked"})
	if r, _ := req.GetRun(bg, run.ID); r.State != protocol.StateRunning {
		t.Fatalf("after network.connected: state %s, want running", r.State)
	}
	// A late heartbeat that still says provisioning does not move it back.
	if _, err := cl.Client.Heartbeat(bg, run.ID, client.HeartbeatRequest{Phase: client.PhaseProvisioning}); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	if r, _ := req.GetRun(bg, run.ID); r.State != protocol.StateRunning {
		t.Fatalf("after a late provisioning heartbeat: state %s, want running", r.State)
	}
}
