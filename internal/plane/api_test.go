package plane_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

var bg = context.Background()

// secretPolicy is the default policy plus releasable secrets for pool
// "default", and optional consent rules.
func secretPolicy(consent ...protocol.ConsentRule) protocol.Policy {
	p := planeDefaultPolicy()
	p.Secrets.Releasable = []protocol.SecretScopeRule{{Name: "API_KEY", Scope: "pool:default", Pools: []string{"default"}}}
	if consent == nil {
		consent = []protocol.ConsentRule{}
	}
	p.Consent = consent
	return p
}

func mustCode(t *testing.T, err error, code string) *client.APIError {
	t.Helper()
	var ae *client.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("got %v, want an API error %s", err, code)
	}
	if ae.Code != code {
		t.Fatalf("got %s (%s), want %s", ae.Code, ae.Message, code)
	}
	if ae.Status != client.StatusForCode[code] {
		t.Fatalf("status %d for %s, want %d", ae.Status, code, client.StatusForCode[code])
	}
	if ae.Message == "" || ae.RequestID == "" {
		t.Fatalf("error %s without message or request id: %+v", code, ae)
	}
	return ae
}

func submit(t *testing.T, c *client.Client, req client.RunRequest) *client.Run {
	t.Helper()
	resp, err := c.SubmitRun(bg, req)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	if resp.Run == nil {
		t.Fatalf("submit returned no run: %+v", resp)
	}
	return resp.Run
}

func basicRequest(t *testing.T, c *client.Client) client.RunRequest {
	ws := testutil.UploadWorkspace(t, c, map[string]string{"README.md": "# hello\n", "src/app.go": "package app\n"})
	return client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentMock}, Prompt: "update notes", Pool: "default", Workspace: ws}
}

// TestRunLifecycle takes one run through every step of the happy path:
// secret and policy set-up, submission, claim with a released secret,
// heartbeats, an output blob, events, completion and countersignature,
// the bundle (verified offline against the pinned plane key), the event
// list and the live stream.
func TestRunLifecycle(t *testing.T) {
	testutil.CheckGoroutines(t)
	tp := testutil.StartPlane(t)
	if _, err := tp.Admin.PutSecret(bg, "API_KEY", "value-of-the-api-key"); err != nil {
		t.Fatal(err)
	}
	pv, err := tp.Admin.PutPolicy(bg, secretPolicy())
	if err != nil {
		t.Fatal(err)
	}
	req, reqP := tp.NewPrincipal(client.RoleRequester)
	runReq := basicRequest(t, req)
	runReq.Secrets = []string{"API_KEY"}
	runReq.AllowHosts = []string{"API.example.com"}
	run := submit(t, req, runReq)
	if run.State != protocol.StateCreated || run.Contract == nil || run.PolicyDecision.Decision != "allow" {
		t.Fatalf("submitted run = %+v", run)
	}
	c := run.Contract
	if err := c.VerifySignature(protocol.SignerPlane, tp.PlaneKey()); err != nil {
		t.Fatalf("contract signature: %v", err)
	}
	if c.PolicyHash != pv.PolicyHash || c.RequestedBy.ID != reqP.Name || c.Runner.Pool != "default" ||
		!slices.Equal(c.Network.AllowHosts, []string{"api.example.com"}) || len(c.Secrets) != 1 || c.Secrets[0] != (protocol.SecretClaim{Name: "API_KEY", Scope: "pool:default"}) ||
		c.Budget.MaxDurationMin == nil || *c.Budget.MaxDurationMin != 60 || c.Execution == nil || c.Execution.Kind != protocol.ExecAgent {
		t.Fatalf("contract = %+v", c)
	}
	issued, _ := protocol.ParseTime(c.IssuedAt)
	expires, _ := protocol.ParseTime(c.ExpiresAt)
	if expires.Sub(issued) != time.Hour {
		t.Fatalf("contract lives %v, want 1h", expires.Sub(issued))
	}

	rn := tp.EnrollRunner("default")
	cl := rn.MustClaim(t)
	if cl.RunID != run.ID || len(cl.Secrets) != 1 || cl.Secrets[0].Value != "value-of-the-api-key" || cl.Secrets[0].Scope != "pool:default" {
		t.Fatalf("claim = %+v", cl.Claim)
	}
	types := eventTypes(cl.Events)
	if want := []string{"run.created", "policy.evaluated", "run.claimed", "secret.released"}; !slices.Equal(types, want) {
		t.Fatalf("chain at claim = %v, want %v", types, want)
	}
	h, _ := c.Hash()
	if err := protocol.VerifyChain(cl.Events, h); err != nil {
		t.Fatalf("claim chain: %v", err)
	}
	if cl.Lease.TTLSeconds != 10 || cl.Lease.HeartbeatSeconds != 2 {
		t.Fatalf("lease = %+v", cl.Lease)
	}
	for _, phase := range []string{client.PhaseProvisioning, client.PhaseRunning} {
		hb, err := cl.Client.Heartbeat(bg, run.ID, client.HeartbeatRequest{Phase: phase})
		if err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
		if hb.Cancel != nil {
			t.Fatalf("unexpected cancel %+v", hb.Cancel)
		}
		got, _ := tp.Admin.GetRun(bg, run.ID)
		if got.State != phase {
			t.Fatalf("state after %s heartbeat = %s", phase, got.State)
		}
	}
	// The runner reads its workspace and uploads an output.
	rc, err := cl.Client.GetBlob(bg, c.Workspace.BundleHash)
	if err != nil {
		t.Fatalf("runner reads its snapshot: %v", err)
	}
	rc.Close()
	diff := []byte("--- a/README.md\n+++ b/README.md\n")
	diffHash, err := cl.Client.PutBlob(bg, diff)
	if err != nil {
		t.Fatalf("upload diff: %v", err)
	}
	mh, _ := c.ManifestHash()
	cl.Append(t, protocol.WorkspaceMaterialized{ManifestHash: mh}, protocol.NetworkConnected{Host: "api.example.com", Decision: protocol.DecisionAllowed})
	cl.Append(t, protocol.ArtifactCreated{Kind: "diff", Hash: diffHash}, protocol.RunCompleted{})
	receipt := cl.Receipt(t, diffHash, diffHash)
	signed, err := cl.Client.Complete(bg, run.ID, receipt)
	if err != nil {
		t.Fatalf("complete: %v", err)
	}
	if err := signed.VerifySignature(protocol.SignerPlane, tp.PlaneKey()); err != nil {
		t.Fatalf("countersignature: %v", err)
	}
	// Retrying the completion (a lost reply) returns the same receipt.
	again, err := cl.Client.Complete(bg, run.ID, receipt)
	if err != nil {
		t.Fatalf("completion retry: %v", err)
	}
	if a, _ := again.Hash(); a != mustHash(t, signed) {
		t.Fatal("retried completion returned another receipt")
	}

	done, err := req.GetRun(bg, run.ID)
	if err != nil {
		t.Fatal(err)
	}
	if done.State != protocol.StateCompleted || !done.HasReceipt || done.Receipt == nil || done.RunnerID != rn.ID || done.RunnerKeyID != rn.Key.Public().ID() || done.EventCount != 8 {
		t.Fatalf("completed run = %+v", done)
	}
	b, raw, err := req.Bundle(bg, run.ID)
	if err != nil {
		t.Fatalf("bundle: %v", err)
	}
	if rep := protocol.VerifyBundle(b, tp.Trust()); !rep.Trusted() {
		t.Fatalf("bundle does not verify: %v", rep.Err())
	}
	if strings.Contains(string(raw), "value-of-the-api-key") {
		t.Fatal("the bundle carries the secret value")
	}
	// The requester reads the output blob of their run.
	out, err := req.GetBlob(bg, diffHash)
	if err != nil {
		t.Fatalf("requester reads the run's diff: %v", err)
	}
	got, _ := io.ReadAll(out)
	out.Close()
	if string(got) != string(diff) {
		t.Fatalf("diff = %q", got)
	}
	el, err := req.Events(bg, run.ID, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(el.Events) != 4 || el.Events[0].Seq != 4 || el.State != protocol.StateCompleted {
		t.Fatalf("events after 3 = %d events from %d, state %s", len(el.Events), el.Events[0].Seq, el.State)
	}
	// The stream of an ended run replays everything, then ends.
	var msgs []client.StreamMessage
	if err := req.StreamEvents(bg, run.ID, -1, func(m client.StreamMessage) error { msgs = append(msgs, m); return nil }); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if len(msgs) != 10 || msgs[8].Kind != client.StreamState || msgs[9].Kind != client.StreamEnd || msgs[9].State != protocol.StateCompleted {
		t.Fatalf("stream = %d messages, last %+v", len(msgs), msgs[len(msgs)-1])
	}
	list, err := req.ListRuns(bg, client.ListRunsOptions{})
	if err != nil || len(list.Runs) != 1 || list.Runs[0].ID != run.ID || !list.Runs[0].HasReceipt {
		t.Fatalf("list = %+v, %v", list, err)
	}
}

func eventTypes(events []protocol.ChainedEvent) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.Event.Type())
	}
	return out
}

func mustHash(t *testing.T, r *protocol.Receipt) string {
	h, err := r.Hash()
	if err != nil {
		t.Fatal(err)
	}
	return h
}
