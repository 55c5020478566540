package plane_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

func ptr[T any](v T) *T { return &v }

// TestPolicyDeny: a denied run lists every reason and stores nothing; its
// dry run reports the same decision.
func TestPolicyDeny(t *testing.T) {
	tp := testutil.StartPlane(t)
	pol := secretPolicy()
	pol.Agents.Allow = []string{protocol.AgentMock}
	pol.Network.AllowHosts = []string{"*.example.com", "pypi.org"}
	if _, err := tp.Admin.PutPolicy(bg, pol); err != nil {
		t.Fatal(err)
	}
	req, _ := tp.NewPrincipal(client.RoleRequester)
	r := basicRequest(t, req)
	r.Agent.Kind = protocol.AgentCodex
	r.Pool = "gpu"
	r.AllowHosts = []string{"api.example.com", "evil.test", "pypi.org", "example.com"}
	r.Secrets = []string{"API_KEY", "NOT_RELEASABLE"}
	r.Budget = protocol.Budget{MaxSpendUSD: ptr(100.0), MaxDurationMin: ptr(120.0)}
	_, err := req.SubmitRun(bg, r)
	ae := mustCode(t, err, client.CodePolicyDenied)
	want := []string{`agent "codex"`, `pool "gpu"`, `host "evil.test"`, `host "example.com"`, `secret "API_KEY" is not releasable to pool "gpu"`, `secret "NOT_RELEASABLE"`, "maxSpendUsd 100", "maxDurationMin 120"}
	if len(ae.Reasons) != len(want) {
		t.Fatalf("reasons = %q, want %d", ae.Reasons, len(want))
	}
	for i, w := range want {
		if !strings.Contains(ae.Reasons[i], w) {
			t.Errorf("reason %d = %q, want it to mention %q", i, ae.Reasons[i], w)
		}
	}
	list, _ := tp.Admin.ListRuns(bg, client.ListRunsOptions{})
	if len(list.Runs) != 0 {
		t.Fatalf("a denied run was stored: %+v", list.Runs)
	}
	// A secret that is releasable but not stored is a reason too.
	r2 := basicRequest(t, req)
	r2.Secrets = []string{"API_KEY"}
	_, err = req.SubmitRun(bg, r2)
	ae = mustCode(t, err, client.CodePolicyDenied)
	if len(ae.Reasons) != 1 || !strings.Contains(ae.Reasons[0], "not stored") {
		t.Fatalf("reasons = %q", ae.Reasons)
	}
	// The dry run of the denied request reports the decision and stores nothing.
	r.DryRun = true
	resp, err := req.SubmitRun(bg, r)
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	d := resp.DryRun
	if resp.Run != nil || d == nil || !d.DryRun || d.PolicyDecision.Decision != "deny" || len(d.PolicyDecision.Reasons) != len(want) || d.Files != 2 || d.TotalBytes != int64(len("# hello\n")+len("package app\n")) {
		t.Fatalf("dry run = %+v", resp)
	}
	if list, _ := tp.Admin.ListRuns(bg, client.ListRunsOptions{}); len(list.Runs) != 0 {
		t.Fatal("a dry run stored a run")
	}
}

// TestPolicyAllowAndDryRun: an allowed dry run discloses what the run
// would get; wildcard hosts and scopes apply.
func TestPolicyAllowAndDryRun(t *testing.T) {
	tp := testutil.StartPlane(t)
	pol := secretPolicy()
	pol.Network.AllowHosts = []string{"*.example.com"}
	if _, err := tp.Admin.PutPolicy(bg, pol); err != nil {
		t.Fatal(err)
	}
	if _, err := tp.Admin.PutSecret(bg, "API_KEY", "v"); err != nil {
		t.Fatal(err)
	}
	req, _ := tp.NewPrincipal(client.RoleRequester)
	r := basicRequest(t, req)
	r.Secrets = []string{"API_KEY"}
	r.AllowHosts = []string{"api.example.com", "*.cdn.example.com"}
	r.Budget = protocol.Budget{MaxSpendUSD: ptr(5.0)}
	r.Workspace.DeniedPaths = []string{".env"}
	r.DryRun = true
	resp, err := req.SubmitRun(bg, r)
	if err != nil {
		t.Fatal(err)
	}
	d := resp.DryRun
	if d.PolicyDecision.Decision != "allow" || d.Pool != "default" || d.Agent.Kind != protocol.AgentMock || d.Files != 2 ||
		!slices.Equal(d.DeniedPaths, []string{".env"}) || len(d.Secrets) != 1 || d.Secrets[0].Scope != "pool:default" ||
		!slices.Equal(d.Network.AllowHosts, []string{"api.example.com", "*.cdn.example.com"}) || !d.Network.DefaultDeny ||
		*d.Budget.MaxSpendUSD != 5 || *d.Budget.MaxDurationMin != 60 || d.Isolation != "process" || d.Execution.Kind != protocol.ExecAgent {
		t.Fatalf("disclosure = %+v", d)
	}
	r.DryRun = false
	run := submit(t, req, r)
	if run.State != protocol.StateCreated || *run.Contract.Budget.MaxSpendUSD != 5 {
		t.Fatalf("run = %+v", run)
	}
	// A dry run needs nothing uploaded: without the snapshot it says so.
	fresh := r
	fresh.AllowHosts = nil
	fresh.DryRun = true
	fresh.Workspace.BundleHash = protocol.HashBytes([]byte("a snapshot the plane never saw"))
	resp, err = req.SubmitRun(bg, fresh)
	if err != nil {
		t.Fatalf("dry run without uploads: %v", err)
	}
	if d := resp.DryRun; !d.SnapshotMissing || d.Files != 0 || d.PolicyDecision.Decision != "allow" {
		t.Fatalf("dry run without uploads = %+v", d)
	}
	if d := resp.DryRun; d == nil {
		t.Fatal("no report")
	}
	// "*" may not be requested.
	r.AllowHosts = []string{"*"}
	_, err = req.SubmitRun(bg, r)
	mustCode(t, err, client.CodeBadRequest)
}

// TestApproval: ask → awaiting_approval with no contract; an approver
// approves (not the requester); the contract and chain are issued as the
// original does.
func TestApproval(t *testing.T) {
	tp := testutil.StartPlane(t)
	if _, err := tp.Admin.PutPolicy(bg, secretPolicy(protocol.ConsentRule{When: "any-run"}, protocol.ConsentRule{When: "agent-kind", Match: "mock", Approvers: []string{"role:approver"}})); err != nil {
		t.Fatal(err)
	}
	req, reqP := tp.NewPrincipal(client.RoleRequester)
	approver, approverP := tp.NewPrincipal(client.RoleApprover)
	run := submit(t, req, basicRequest(t, req))
	if run.State != protocol.StateAwaitingApproval || run.Contract != nil || run.ContractHash != "" || run.EventCount != 0 ||
		!slices.Equal(run.ConsentRequirements, []string{"any-run", "agent-kind:mock"}) || run.Workspace == nil {
		t.Fatalf("awaiting run = %+v", run)
	}
	rn := tp.EnrollRunner("default")
	if c := rn.Claim(t, 0); c != nil {
		t.Fatal("a run awaiting approval was claimed")
	}
	// The requester may not approve (even as admin); wrong roles may not.
	_, err := req.Approve(bg, run.ID, "")
	mustCode(t, err, client.CodeForbidden)
	got, err := approver.Approve(bg, run.ID, "looks fine")
	if err != nil {
		t.Fatalf("approve: %v", err)
	}
	if got.State != protocol.StateCreated || got.Contract == nil || len(got.Contract.ApprovedBy) != 1 || got.Contract.ApprovedBy[0].ID != approverP.Name ||
		got.Contract.RequestedBy.ID != reqP.Name || len(got.Approvals) != 1 || got.Approvals[0].Reason != "looks fine" {
		t.Fatalf("approved run = %+v", got)
	}
	el, err := req.Events(bg, run.ID, -1)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"run.created", "policy.evaluated", "consent.requested", "consent.requested", "consent.granted"}; !slices.Equal(eventTypes(el.Events), want) {
		t.Fatalf("chain = %v, want %v", eventTypes(el.Events), want)
	}
	pe, _ := el.Events[1].Event.Payload()
	if pe.(protocol.PolicyEvaluated).Decision != "ask" {
		t.Fatalf("policy.evaluated = %+v", pe)
	}
	h, _ := got.Contract.Hash()
	if err := protocol.VerifyChain(el.Events, h); err != nil {
		t.Fatal(err)
	}
	_, err = approver.Approve(bg, run.ID, "")
	mustCode(t, err, client.CodeInvalidState)
	cl := rn.MustClaim(t)
	if cl.RunID != run.ID {
		t.Fatalf("claimed %s", cl.RunID)
	}
	cl.Finish(t, protocol.RunCompleted{})
	b, _, err := req.Bundle(bg, run.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rep := protocol.VerifyBundle(b, tp.Trust()); !rep.Trusted() {
		t.Fatalf("approved run's bundle: %v", rep.Err())
	}

	// An admin requester may not approve their own run either; an admin
	// approves another's.
	run2 := submit(t, tp.Admin, basicRequest(t, tp.Admin))
	_, err = tp.Admin.Approve(bg, run2.ID, "")
	mustCode(t, err, client.CodeForbidden)
	if _, err := approver.Approve(bg, run2.ID, ""); err != nil {
		t.Fatalf("approver approves the admin's run: %v", err)
	}
}

// TestApproversList: a consent rule naming approvers restricts who may
// approve.
func TestApproversList(t *testing.T) {
	tp := testutil.StartPlane(t)
	if _, err := tp.Admin.PutPolicy(bg, secretPolicy(protocol.ConsentRule{When: "any-run", Approvers: []string{"role:admin"}})); err != nil {
		t.Fatal(err)
	}
	req, _ := tp.NewPrincipal(client.RoleRequester)
	approver, _ := tp.NewPrincipal(client.RoleApprover)
	run := submit(t, req, basicRequest(t, req))
	_, err := approver.Approve(bg, run.ID, "")
	mustCode(t, err, client.CodeForbidden)
	if _, err := tp.Admin.Approve(bg, run.ID, ""); err != nil {
		t.Fatalf("admin approves: %v", err)
	}
}

// TestDenialAndConsentTimeout: a denied run fails policy_denied without a
// contract; an unanswered one fails consent_timeout.
func TestDenialAndConsentTimeout(t *testing.T) {
	clock := testutil.NewFakeClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	tp := testutil.StartPlane(t, testutil.WithClock(clock), testutil.WithConfig(func(c *plane.Config) { c.ConsentTimeout = time.Hour }))
	if _, err := tp.Admin.PutPolicy(bg, secretPolicy(protocol.ConsentRule{When: "any-run"})); err != nil {
		t.Fatal(err)
	}
	req, _ := tp.NewPrincipal(client.RoleRequester)
	approver, approverP := tp.NewPrincipal(client.RoleApprover)
	denied := submit(t, req, basicRequest(t, req))
	got, err := approver.Deny(bg, denied.ID, "not today")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != protocol.StateFailed || got.Failure == nil || got.Failure.Class != protocol.FailurePolicyDenied ||
		!strings.Contains(got.Failure.Message, approverP.Name) || !strings.Contains(got.Failure.Message, "not today") || got.Contract != nil {
		t.Fatalf("denied run = %+v", got)
	}
	_, err = approver.Approve(bg, denied.ID, "")
	mustCode(t, err, client.CodeInvalidState)

	waiting := submit(t, req, basicRequest(t, req))
	tp.Advance(59 * time.Minute)
	if r, _ := req.GetRun(bg, waiting.ID); r.State != protocol.StateAwaitingApproval {
		t.Fatalf("timed out early: %s", r.State)
	}
	tp.Advance(2 * time.Minute)
	r, _ := req.GetRun(bg, waiting.ID)
	if r.State != protocol.StateFailed || r.Failure == nil || r.Failure.Class != protocol.FailureConsentTimeout || r.Contract != nil {
		t.Fatalf("timed-out run = %+v", r)
	}
}

// TestDataClasses: a dataClasses rule limits which pools may see a class,
// for the built-in classes every run carries and for those a request
// declares; the dry run lists the classes; the signed policy.evaluated
// event records the declared ones; malformed rules and names are refused.
func TestDataClasses(t *testing.T) {
	tp := testutil.StartPlane(t)
	pol := plane.DefaultPolicy()
	pol.Runners.AllowPools = []string{"default", "secure", "vendor"}
	pol.DataClasses = []protocol.DataClassRule{
		{DataClass: "pii", AllowPools: []string{"secure"}},
		{DataClass: "session-log", AllowPools: []string{"default", "secure"}},
	}
	if _, err := tp.Admin.PutPolicy(bg, pol); err != nil {
		t.Fatal(err)
	}
	req, _ := tp.NewPrincipal(client.RoleRequester)

	// Built-in: every run's session log crosses back, so pool "vendor" is
	// out whatever the request says.
	r := basicRequest(t, req)
	r.Pool = "vendor"
	_, err := req.SubmitRun(bg, r)
	ae := mustCode(t, err, client.CodePolicyDenied)
	if len(ae.Reasons) != 1 || !strings.Contains(ae.Reasons[0], `data class "session-log" may not be seen by pool "vendor"`) {
		t.Fatalf("reasons = %q", ae.Reasons)
	}

	// Declared: pii only in "secure".
	r = basicRequest(t, req)
	r.DataClasses = []string{"pii", "pii"}
	_, err = req.SubmitRun(bg, r)
	ae = mustCode(t, err, client.CodePolicyDenied)
	if len(ae.Reasons) != 1 || !strings.Contains(ae.Reasons[0], `data class "pii" may not be seen by pool "default" (dataClasses: only secure)`) {
		t.Fatalf("reasons = %q", ae.Reasons)
	}
	r.Pool = "secure"
	r.DryRun = true
	resp, err := req.SubmitRun(bg, r)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(resp.DryRun.DataClasses, ","); got != "workspace,code-diff,session-log,pii" || resp.DryRun.PolicyDecision.Decision != "allow" {
		t.Fatalf("dry run: classes %s, decision %+v", got, resp.DryRun.PolicyDecision)
	}
	r.DryRun = false
	resp, err = req.SubmitRun(bg, r)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := req.Events(bg, resp.Run.ID, -1)
	if err != nil {
		t.Fatal(err)
	}
	recorded := false
	for _, e := range evs.Events {
		if p, _ := e.Event.Payload(); p != nil {
			if pe, ok := p.(protocol.PolicyEvaluated); ok && strings.HasSuffix(pe.Reason, "data classes declared: pii") {
				recorded = true
			}
		}
	}
	if !recorded {
		t.Errorf("no policy.evaluated event records the declared class: %v", evs.Events)
	}

	// Bad names and rules.
	r = basicRequest(t, req)
	r.DataClasses = []string{"PII data"}
	_, err = req.SubmitRun(bg, r)
	mustCode(t, err, client.CodeBadRequest)
	bad := plane.DefaultPolicy()
	bad.DataClasses = []protocol.DataClassRule{{DataClass: "pii"}}
	_, err = tp.Admin.PutPolicy(bg, bad)
	if err == nil || !strings.Contains(err.Error(), "dataClasses[0]") {
		t.Fatalf("a rule with no pool: %v", err)
	}
}
