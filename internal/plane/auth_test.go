package plane_test

import (
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

// TestAuthFailures: every kind of authentication and authorization
// failure answers with its code, and the request has no effect.
func TestAuthFailures(t *testing.T) {
	tp := testutil.StartPlane(t)
	req, _ := tp.NewPrincipal(client.RoleRequester)
	other, _ := tp.NewPrincipal(client.RoleRequester)
	auditor, _ := tp.NewPrincipal(client.RoleAuditor)
	approver, _ := tp.NewPrincipal(client.RoleApprover)
	rn := tp.EnrollRunner("default")
	run := submit(t, req, basicRequest(t, req))

	t.Run("no token", func(t *testing.T) {
		anon := tp.Client("")
		_, err := anon.WhoAmI(bg)
		mustCode(t, err, client.CodeUnauthenticated)
		_, err = anon.ListRuns(bg, client.ListRunsOptions{})
		mustCode(t, err, client.CodeUnauthenticated)
		_, err = anon.SubmitRun(bg, basicRequestNoUpload(run))
		mustCode(t, err, client.CodeUnauthenticated)
		_, err = anon.Claim(bg, client.ClaimRequest{Pool: "default", WaitSeconds: 0})
		mustCode(t, err, client.CodeUnauthenticated)
		_, err = anon.GetBlob(bg, run.Contract.Workspace.BundleHash)
		mustCode(t, err, client.CodeUnauthenticated)
	})
	t.Run("unknown token", func(t *testing.T) {
		for _, tok := range []string{"wpt_nonsense", "wrt_nonsense", "wct_nonsense", "wet_nonsense", "plain"} {
			_, err := tp.Client(tok).WhoAmI(bg)
			mustCode(t, err, client.CodeUnauthenticated)
		}
	})
	t.Run("wrong role", func(t *testing.T) {
		_, err := auditor.SubmitRun(bg, basicRequestNoUpload(run))
		mustCode(t, err, client.CodeForbidden)
		_, err = approver.SubmitRun(bg, basicRequestNoUpload(run))
		mustCode(t, err, client.CodeForbidden)
		_, err = req.CreatePrincipal(bg, client.CreatePrincipalRequest{Name: "x", Role: client.RoleAdmin})
		mustCode(t, err, client.CodeForbidden)
		_, err = req.ListPrincipals(bg)
		mustCode(t, err, client.CodeForbidden)
		_, err = req.PutPolicy(bg, planeDefaultPolicy())
		mustCode(t, err, client.CodeForbidden)
		_, err = auditor.PutSecret(bg, "X", "v")
		mustCode(t, err, client.CodeForbidden)
		_, err = req.ListSecrets(bg)
		mustCode(t, err, client.CodeForbidden)
		_, err = req.ListRunners(bg)
		mustCode(t, err, client.CodeForbidden)
		_, err = approver.CreateEnrollToken(bg, client.EnrollTokenRequest{Pool: "default"})
		mustCode(t, err, client.CodeForbidden)
		_, err = req.Export(bg, time.Time{})
		mustCode(t, err, client.CodeForbidden)
		_, err = req.RetentionLog(bg)
		mustCode(t, err, client.CodeForbidden)
		_, err = auditor.Cancel(bg, run.ID, "")
		mustCode(t, err, client.CodeForbidden)
		_, err = req.Approve(bg, run.ID, "")
		mustCode(t, err, client.CodeForbidden)
		// Tokens of the wrong kind.
		_, err = rn.Client.ListRuns(bg, client.ListRunsOptions{})
		mustCode(t, err, client.CodeForbidden)
		_, err = req.Claim(bg, client.ClaimRequest{Pool: "default"})
		mustCode(t, err, client.CodeForbidden)
		// Auditors and approvers may read.
		if _, err := auditor.ListPrincipals(bg); err != nil {
			t.Fatalf("auditor lists principals: %v", err)
		}
		if _, err := approver.GetRun(bg, run.ID); err != nil {
			t.Fatalf("approver reads a run: %v", err)
		}
	})
	t.Run("another requester's run", func(t *testing.T) {
		_, err := other.GetRun(bg, run.ID)
		mustCode(t, err, client.CodeForbidden)
		_, err = other.Events(bg, run.ID, -1)
		mustCode(t, err, client.CodeForbidden)
		_, err = other.Cancel(bg, run.ID, "")
		mustCode(t, err, client.CodeForbidden)
		list, err := other.ListRuns(bg, client.ListRunsOptions{})
		if err != nil || len(list.Runs) != 0 {
			t.Fatalf("other requester lists %d runs (%v), want none", len(list.Runs), err)
		}
		_, err = other.GetBlob(bg, run.Contract.Workspace.BundleHash)
		mustCode(t, err, client.CodeForbidden)
		if got, _ := tp.Admin.GetRun(bg, run.ID); got.State != protocol.StateCreated {
			t.Fatalf("run changed: %s", got.State)
		}
	})
	t.Run("revoked token and disabled principal", func(t *testing.T) {
		c, pr := tp.NewPrincipal(client.RoleRequester)
		if _, err := c.WhoAmI(bg); err != nil {
			t.Fatal(err)
		}
		tok, err := tp.Admin.CreateToken(bg, pr.ID)
		if err != nil {
			t.Fatal(err)
		}
		second := tp.Client(tok.Secret)
		if _, err := second.WhoAmI(bg); err != nil {
			t.Fatal(err)
		}
		if err := tp.Admin.RevokeToken(bg, tok.ID); err != nil {
			t.Fatal(err)
		}
		_, err = second.WhoAmI(bg)
		mustCode(t, err, client.CodeUnauthenticated)
		if _, err := c.WhoAmI(bg); err != nil {
			t.Fatalf("the first token died with the second: %v", err)
		}
		if err := tp.Admin.DisablePrincipal(bg, pr.ID); err != nil {
			t.Fatal(err)
		}
		_, err = c.WhoAmI(bg)
		mustCode(t, err, client.CodeUnauthenticated)
		_, err = tp.Admin.CreateToken(bg, pr.ID)
		mustCode(t, err, client.CodeInvalidState)
	})
	t.Run("revoked runner", func(t *testing.T) {
		r2 := tp.EnrollRunner("default")
		if err := tp.Admin.RevokeRunner(bg, r2.ID); err != nil {
			t.Fatal(err)
		}
		_, err := r2.Client.Claim(bg, client.ClaimRequest{Pool: "default"})
		mustCode(t, err, client.CodeUnauthenticated)
	})
	t.Run("runner of another pool", func(t *testing.T) {
		r3 := tp.EnrollRunner("local")
		_, err := r3.Client.Claim(bg, client.ClaimRequest{Pool: "default"})
		mustCode(t, err, client.CodeForbidden)
	})
	t.Run("enroll token reuse and forgery", func(t *testing.T) {
		key, _ := protocol.GenerateKey(nil)
		et := tp.EnrollToken("default")
		enroll := func(tok, proof string) error {
			_, err := tp.Client("").Enroll(bg, client.EnrollRequest{EnrollToken: tok, PublicKeyPEM: key.Public().PEM(), Pool: "default", Proof: proof})
			return err
		}
		other, _ := protocol.GenerateKey(nil)
		mustCode(t, enroll(et, other.SignMessage(client.EnrollProofMessage(et))), client.CodeBadRequest)
		if err := enroll(et, key.SignMessage(client.EnrollProofMessage(et))); err != nil {
			t.Fatalf("a forged proof used up the enroll token: %v", err)
		}
		mustCode(t, enroll(et, key.SignMessage(client.EnrollProofMessage(et))), client.CodeUnauthenticated)
		mustCode(t, enroll("wet_unknown", key.SignMessage(client.EnrollProofMessage("wet_unknown"))), client.CodeUnauthenticated)
		_, err := tp.Client("").Enroll(bg, client.EnrollRequest{EnrollToken: tp.EnrollToken("local"), PublicKeyPEM: key.Public().PEM(), Pool: "default", Proof: "x"})
		mustCode(t, err, client.CodeBadRequest)
	})
}

// TestClaimTokenRules: a claim token works only for its run, only while
// its lease lasts, and dies with the run; a runner reads only its own
// run's blobs.
func TestClaimTokenRules(t *testing.T) {
	clock := testutil.NewFakeClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	tp := testutil.StartPlane(t, testutil.WithClock(clock))
	req, _ := tp.NewPrincipal(client.RoleRequester)
	runA := submit(t, req, basicRequest(t, req))
	reqB := basicRequest(t, req)
	reqB.Workspace = testutil.UploadWorkspace(t, req, map[string]string{"other.txt": "another workspace\n"})
	clock.Advance(time.Millisecond) // B is younger than A
	runB := submit(t, req, reqB)
	rn := tp.EnrollRunner("default")
	clA := rn.MustClaim(t)
	clB := rn.MustClaim(t)
	if clA.RunID != runA.ID || clB.RunID != runB.ID {
		t.Fatalf("claimed %s then %s, want oldest first", clA.RunID, clB.RunID)
	}
	t.Run("blobs of another run", func(t *testing.T) {
		if rc, err := clA.Client.GetBlob(bg, runA.Contract.Workspace.BundleHash); err != nil {
			t.Fatalf("own snapshot: %v", err)
		} else {
			rc.Close()
		}
		_, err := clA.Client.GetBlob(bg, runB.Contract.Workspace.BundleHash)
		mustCode(t, err, client.CodeForbidden)
		out, err := clB.Client.PutBlob(bg, []byte("output of B"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = clA.Client.GetBlob(bg, out)
		mustCode(t, err, client.CodeForbidden)
		if rc, err := clB.Client.GetBlob(bg, out); err != nil {
			t.Fatalf("own output: %v", err)
		} else {
			rc.Close()
		}
	})
	t.Run("another run's routes", func(t *testing.T) {
		_, err := clA.Client.Heartbeat(bg, runB.ID, client.HeartbeatRequest{})
		mustCode(t, err, client.CodeForbidden)
		_, err = clA.Client.Complete(bg, runB.ID, dummyReceipt())
		mustCode(t, err, client.CodeForbidden)
		_, err = clA.Client.ListRuns(bg, client.ListRunsOptions{})
		mustCode(t, err, client.CodeForbidden)
	})
	t.Run("used after completion", func(t *testing.T) {
		clA.Finish(t, protocol.RunCompleted{})
		_, err := clA.Client.Heartbeat(bg, runA.ID, client.HeartbeatRequest{})
		mustCode(t, err, client.CodeClaimUsed)
		_, err = clA.Client.AppendEvents(bg, runA.ID, clA.Events[len(clA.Events)-1:])
		mustCode(t, err, client.CodeClaimUsed)
		_, err = clA.Client.PutBlob(bg, []byte("late output"))
		mustCode(t, err, client.CodeClaimUsed)
		_, err = clA.Client.GetBlob(bg, runA.Contract.Workspace.BundleHash)
		mustCode(t, err, client.CodeClaimUsed)
	})
	t.Run("used after the lease expired", func(t *testing.T) {
		clock.Advance(11 * time.Second) // TTL is 10 s
		_, err := clB.Client.Heartbeat(bg, runB.ID, client.HeartbeatRequest{})
		mustCode(t, err, client.CodeClaimExpired)
		tp.Reap()
		_, err = clB.Client.Heartbeat(bg, runB.ID, client.HeartbeatRequest{})
		mustCode(t, err, client.CodeClaimExpired)
		_, err = clB.Client.Complete(bg, runB.ID, dummyReceipt())
		mustCode(t, err, client.CodeClaimExpired)
	})
}

// basicRequestNoUpload reuses a run's workspace for requests that never
// reach the blob check.
func basicRequestNoUpload(run *client.Run) client.RunRequest {
	return client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentMock}, Prompt: "x", Pool: "default", Workspace: run.Contract.Workspace}
}

// dummyReceipt is a well-formed receipt for requests refused before the
// receipt is looked at.
func dummyReceipt() *protocol.Receipt {
	return &protocol.Receipt{Version: protocol.VersionReceipt, Status: protocol.StateCompleted, Signatures: []protocol.Signature{},
		SecretsReleased: []protocol.SecretRelease{}, NetworkAccessed: []protocol.NetworkAccess{}, ModelsUsed: []protocol.ModelUsage{},
		BoundaryDisclosures: []protocol.Disclosure{}, WorkspaceOut: protocol.WorkspaceOut{ArtifactHashes: []string{}}}
}
