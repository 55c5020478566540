package plane_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"slices"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

// TestIdentityRoutes: info, whoami, principals and tokens.
func TestIdentityRoutes(t *testing.T) {
	tp := testutil.StartPlane(t)
	info, err := tp.Client("").Info(bg)
	if err != nil {
		t.Fatal(err)
	}
	if info.PlaneKeyID != tp.PlaneKey().ID() || info.PlanePublicKeyPEM != tp.PlaneKey().PEM() || info.Version != "test" || info.ServerTime == "" {
		t.Fatalf("info = %+v", info)
	}
	created, err := tp.Admin.CreatePrincipal(bg, client.CreatePrincipalRequest{Name: "ci-bot", Kind: "service", Role: client.RoleRequester})
	if err != nil {
		t.Fatal(err)
	}
	if created.Principal.Kind != "service" || created.Token.Secret == "" || created.Token.ID == "" {
		t.Fatalf("created = %+v", created)
	}
	_, err = tp.Admin.CreatePrincipal(bg, client.CreatePrincipalRequest{Name: "ci-bot", Role: client.RoleRequester})
	mustCode(t, err, client.CodeConflict)
	_, err = tp.Admin.CreatePrincipal(bg, client.CreatePrincipalRequest{Name: "x", Role: "superuser"})
	mustCode(t, err, client.CodeBadRequest)
	bot := tp.Client(created.Token.Secret)
	who, err := bot.WhoAmI(bg)
	if err != nil || who.Principal.Name != "ci-bot" || who.TokenID != created.Token.ID {
		t.Fatalf("whoami = %+v, %v", who, err)
	}
	second, err := tp.Admin.CreateToken(bg, created.Principal.ID)
	if err != nil {
		t.Fatal(err)
	}
	list, err := tp.Admin.ListPrincipals(bg)
	if err != nil {
		t.Fatal(err)
	}
	var found *client.Principal
	for i := range list {
		if list[i].ID == created.Principal.ID {
			found = &list[i]
		}
	}
	if found == nil || len(found.Tokens) != 2 || found.Tokens[0].LastUsedAt == "" {
		t.Fatalf("listed principal = %+v", found)
	}
	if err := tp.Admin.RevokeToken(bg, second.ID); err != nil {
		t.Fatal(err)
	}
	mustCode(t, tp.Admin.RevokeToken(bg, "tok_missing"), client.CodeNotFound)
	if err := tp.Admin.DisablePrincipal(bg, created.Principal.ID); err != nil {
		t.Fatal(err)
	}
	mustCode(t, tp.Admin.DisablePrincipal(bg, "prn_missing"), client.CodeNotFound)
	list, _ = tp.Admin.ListPrincipals(bg)
	for _, p := range list {
		if p.ID == created.Principal.ID && (!p.Disabled || p.Tokens[0].RevokedAt == "") {
			t.Fatalf("disabled principal = %+v", p)
		}
	}
}

// TestRunnerRoutes: enroll tokens, enrollment, runner listing and
// revocation.
func TestRunnerRoutes(t *testing.T) {
	tp := testutil.StartPlane(t)
	et, err := tp.Admin.CreateEnrollToken(bg, client.EnrollTokenRequest{Pool: "gpu", TTLSeconds: 60})
	if err != nil || et.Pool != "gpu" || et.ExpiresAt == "" {
		t.Fatalf("enroll token = %+v, %v", et, err)
	}
	key, _ := protocol.GenerateKey(nil)
	resp, err := tp.Client("").Enroll(bg, client.EnrollRequest{EnrollToken: et.Token, PublicKeyPEM: key.Public().PEM(), Pool: "gpu", Name: "box-1", Tiers: []string{"process", "namespace"}, Proof: key.SignMessage(client.EnrollProofMessage(et.Token))})
	if err != nil {
		t.Fatal(err)
	}
	if resp.PlaneKeyID != tp.PlaneKey().ID() || resp.Pool != "gpu" || resp.RunnerToken == "" {
		t.Fatalf("enroll = %+v", resp)
	}
	auditor, _ := tp.NewPrincipal(client.RoleAuditor)
	runners, err := auditor.ListRunners(bg)
	if err != nil || len(runners) != 1 {
		t.Fatalf("runners = %+v, %v", runners, err)
	}
	r := runners[0]
	if r.ID != resp.RunnerID || r.Name != "box-1" || r.KeyID != key.Public().ID() || !slices.Equal(r.Tiers, []string{"process", "namespace"}) || r.InFlight != 0 {
		t.Fatalf("runner = %+v", r)
	}
	if err := tp.Admin.RevokeRunner(bg, resp.RunnerID); err != nil {
		t.Fatal(err)
	}
	runners, _ = auditor.ListRunners(bg)
	if runners[0].RevokedAt == "" {
		t.Fatal("revocation not shown")
	}
	mustCode(t, tp.Admin.RevokeRunner(bg, "rnr_missing"), client.CodeNotFound)
	_, err = tp.Admin.CreateEnrollToken(bg, client.EnrollTokenRequest{Pool: "bad pool!"})
	mustCode(t, err, client.CodeBadRequest)
}

// TestPolicyAndSecretRoutes: policy get/put, secrets put/list/delete.
func TestPolicyAndSecretRoutes(t *testing.T) {
	tp := testutil.StartPlane(t)
	req, _ := tp.NewPrincipal(client.RoleRequester)
	pv, err := req.GetPolicy(bg)
	if err != nil {
		t.Fatal(err)
	}
	def := planeDefaultPolicy()
	wantHash, _ := def.Hash()
	if pv.PolicyHash != wantHash || !slices.Equal(pv.Policy.Runners.AllowPools, []string{"local", "default"}) || pv.Policy.Budget.MaxSpendUSD != 25 || pv.Policy.Retention.ReceiptsDays != 365 {
		t.Fatalf("default policy = %+v (hash %s, want %s)", pv.Policy, pv.PolicyHash, wantHash)
	}
	bad := def
	bad.Agents.Allow = []string{"gpt-unknown"}
	bad.Consent = []protocol.ConsentRule{{When: "sometimes"}}
	_, err = tp.Admin.PutPolicy(bg, bad)
	ae := mustCode(t, err, client.CodeBadRequest)
	if len(ae.Reasons) != 2 {
		t.Fatalf("reasons = %q", ae.Reasons)
	}
	info, err := tp.Admin.PutSecret(bg, "DEPLOY_TOKEN", "hunter2")
	if err != nil || info.Name != "DEPLOY_TOKEN" || info.CreatedAt == "" {
		t.Fatalf("put secret = %+v, %v", info, err)
	}
	_, err = tp.Admin.PutSecret(bg, "bad name", "v")
	mustCode(t, err, client.CodeBadRequest)
	_, err = tp.Admin.PutSecret(bg, "EMPTY", "")
	mustCode(t, err, client.CodeBadRequest)
	list, err := tp.Admin.ListSecrets(bg)
	if err != nil || len(list) != 1 || list[0].Name != "DEPLOY_TOKEN" {
		t.Fatalf("secrets = %+v, %v", list, err)
	}
	if err := tp.Admin.DeleteSecret(bg, "DEPLOY_TOKEN"); err != nil {
		t.Fatal(err)
	}
	mustCode(t, tp.Admin.DeleteSecret(bg, "DEPLOY_TOKEN"), client.CodeNotFound)
}

// TestBlobRoutes: missing, single and batch uploads (dedupe), download.
func TestBlobRoutes(t *testing.T) {
	tp := testutil.StartPlane(t)
	req, _ := tp.NewPrincipal(client.RoleRequester)
	blobs := [][]byte{[]byte("one"), []byte("two"), bytes.Repeat([]byte("three"), 100000)}
	var hashes []string
	for _, b := range blobs {
		hashes = append(hashes, protocol.HashBytes(b))
	}
	missing, err := req.MissingBlobs(bg, hashes)
	if err != nil || !slices.Equal(missing, hashes) {
		t.Fatalf("missing = %v, %v", missing, err)
	}
	if _, err := req.PutBlob(bg, blobs[0]); err != nil {
		t.Fatal(err)
	}
	var ups []client.BlobUpload
	for i, b := range blobs {
		b := b
		ups = append(ups, client.BlobUpload{Hash: hashes[i], Size: int64(len(b)), Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }})
	}
	res, err := req.PutBlobs(bg, ups)
	if err != nil {
		t.Fatal(err)
	}
	if res.Stored != 2 || res.Present != 1 || res.Bytes != int64(len(blobs[0])+len(blobs[1])+len(blobs[2])) {
		t.Fatalf("batch = %+v", res)
	}
	missing, _ = req.MissingBlobs(bg, hashes)
	if len(missing) != 0 {
		t.Fatalf("still missing %v", missing)
	}
	rc, err := req.GetBlob(bg, hashes[2])
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, blobs[2]) {
		t.Fatal("downloaded bytes differ")
	}
	_, err = req.GetBlob(bg, protocol.HashBytes([]byte("never uploaded")))
	mustCode(t, err, client.CodeForbidden) // not theirs (and not there)
	_, err = tp.Admin.GetBlob(bg, protocol.HashBytes([]byte("never uploaded")))
	mustCode(t, err, client.CodeNotFound)
	// A submission naming a blob nobody uploaded is refused.
	r := basicRequest(t, req)
	r.Workspace.DirtyDiffHash = protocol.HashBytes([]byte("missing diff"))
	_, err = req.SubmitRun(bg, r)
	mustCode(t, err, client.CodeBlobMissing)
	snapOnly := basicRequest(t, req)
	snapOnly.Workspace.BundleHash = protocol.HashBytes([]byte("missing snapshot"))
	_, err = req.SubmitRun(bg, snapOnly)
	mustCode(t, err, client.CodeBlobMissing)
}

// TestListRunsPaging: filters, newest first, cursor paging.
func TestListRunsPaging(t *testing.T) {
	clock := testutil.NewFakeClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	tp := testutil.StartPlane(t, testutil.WithClock(clock))
	req, reqP := tp.NewPrincipal(client.RoleRequester)
	base := basicRequest(t, req)
	var ids []string
	for i := range 7 {
		r := base
		if i%3 == 0 {
			r.Agent.Kind = protocol.AgentCommand
		}
		ids = append(ids, submit(t, req, r).ID)
		clock.Advance(time.Second)
	}
	slices.Reverse(ids)
	var got []string
	cursor := ""
	for {
		page, err := tp.Admin.ListRuns(bg, client.ListRunsOptions{Limit: 3, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.Runs {
			got = append(got, r.ID)
			if r.Contract != nil || r.Receipt != nil {
				t.Fatal("list rows carry the contract")
			}
		}
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	if !slices.Equal(got, ids) {
		t.Fatalf("paged = %v\nwant   %v", got, ids)
	}
	cmd, _ := tp.Admin.ListRuns(bg, client.ListRunsOptions{Agent: protocol.AgentCommand})
	mine, _ := tp.Admin.ListRuns(bg, client.ListRunsOptions{RequestedBy: reqP.Name, State: protocol.StateCreated, Pool: "default"})
	if len(cmd.Runs) != 3 || len(mine.Runs) != 7 {
		t.Fatalf("filters: %d command runs, %d of the requester", len(cmd.Runs), len(mine.Runs))
	}
	_, err := tp.Admin.ListRuns(bg, client.ListRunsOptions{State: "sleeping"})
	mustCode(t, err, client.CodeBadRequest)
	_, err = tp.Admin.ListRuns(bg, client.ListRunsOptions{Cursor: "!!"})
	mustCode(t, err, client.CodeBadRequest)
}

// TestExportAndRetention: export lists runs, events and receipts; the
// retention policy deletes old runs and blobs and records it.
func TestExportAndRetention(t *testing.T) {
	clock := testutil.NewFakeClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	tp := testutil.StartPlane(t, testutil.WithClock(clock))
	req, _ := tp.NewPrincipal(client.RoleRequester)
	run := submit(t, req, basicRequest(t, req))
	cl := tp.EnrollRunner("default").MustClaim(t)
	out, err := cl.Client.PutBlob(bg, []byte("a log"))
	if err != nil {
		t.Fatal(err)
	}
	cl.Append(t, protocol.ArtifactCreated{Kind: "log", Hash: out})
	cl.Finish(t, protocol.RunCompleted{})
	auditor, _ := tp.NewPrincipal(client.RoleAuditor)
	rc, err := auditor.Export(bg, clock.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	sc := bufio.NewScanner(rc)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var line client.ExportLine
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("export line %q: %v", sc.Text(), err)
		}
		if line.RunID != run.ID {
			t.Fatalf("line of run %q", line.RunID)
		}
		counts[line.Type]++
	}
	rc.Close()
	if counts[client.ExportRun] != 1 || counts[client.ExportEvent] != 5 || counts[client.ExportReceipt] != 1 {
		t.Fatalf("export counts = %v", counts)
	}
	rc, _ = auditor.Export(bg, clock.Now().Add(time.Hour))
	rest, _ := io.ReadAll(rc)
	rc.Close()
	if len(rest) != 0 {
		t.Fatalf("export since the future = %q", rest)
	}

	pol := planeDefaultPolicy()
	pol.Retention = protocol.Retention{ReceiptsDays: 30, ArtifactsDays: 7}
	if _, err := tp.Admin.PutPolicy(bg, pol); err != nil {
		t.Fatal(err)
	}
	clock.Advance(8 * 24 * time.Hour)
	recs, err := tp.Plane.RunRetention(bg)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 4 { // snapshot, two files, the log
		t.Fatalf("after 8 days deleted %+v", recs)
	}
	_, err = tp.Admin.GetBlob(bg, out)
	mustCode(t, err, client.CodeNotFound)
	if r, err := req.GetRun(bg, run.ID); err != nil || !r.HasReceipt {
		t.Fatalf("the run went with its artifacts: %v", err)
	}
	clock.Advance(30 * 24 * time.Hour)
	if _, err := tp.Plane.RunRetention(bg); err != nil {
		t.Fatal(err)
	}
	_, err = req.GetRun(bg, run.ID)
	mustCode(t, err, client.CodeNotFound)
	log, err := auditor.RetentionLog(bg)
	if err != nil {
		t.Fatal(err)
	}
	if len(log) != 5 || log[0].Kind != "run" || log[0].ID != run.ID || log[0].Reason == "" || log[1].Kind != "blob" {
		t.Fatalf("retention log = %+v", log)
	}
}
