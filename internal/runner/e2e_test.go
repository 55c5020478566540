package runner_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/runner"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

func TestMockRunCompletesWithTrustedBundle(t *testing.T) {
	tp := testutil.StartPlane(t)
	tr := startRunner(t, tp)
	id := submit(t, tp.Admin, mockRun("write a note"))
	run := waitEnded(t, tp.Admin, id)
	if run.State != protocol.StateCompleted {
		t.Fatalf("run %s: %+v", run.State, run.Failure)
	}
	b, _ := verifiedBundle(t, tp, id)

	want := []string{"run.created", "policy.evaluated", "run.claimed", "workspace.materialized", "command.executed",
		"file.changed", "artifact.created", "boundary.crossed", "artifact.created", "boundary.crossed", "run.completed"}
	if got := eventTypes(b.Events); !slices.Equal(got, want) {
		t.Fatalf("events\n got %v\nwant %v", got, want)
	}
	r := b.Receipt
	ident, err := tr.Enroll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != "completed" || r.Runner.RunnerID != ident.RunnerID || r.Runner.AttestationTier != "mock" || r.Runner.Isolation != "process" || r.Runner.Pool != "default" {
		t.Fatalf("receipt runner %+v status %s", r.Runner, r.Status)
	}
	if len(r.Signatures) != 2 || r.Signatures[0].Signer != "runner" || r.Signatures[1].Signer != "plane" {
		t.Fatalf("signatures %+v", r.Signatures)
	}
	disclosures := []string{r.BoundaryDisclosures[0].DataClass, r.BoundaryDisclosures[1].DataClass}
	if !slices.Equal(disclosures, []string{"code-diff", "session-log"}) || r.WorkspaceOut.DiffHash == "" || len(r.WorkspaceOut.ArtifactHashes) != 2 {
		t.Fatalf("outputs %+v disclosures %+v", r.WorkspaceOut, r.BoundaryDisclosures)
	}
	changed := payloads[protocol.FileChanged](t, b.Events)
	if len(changed) != 1 || changed[0].Path != "MOCK_AGENT.md" {
		t.Fatalf("file.changed %+v", changed)
	}
	content := "## task\nwrite a note\n\nsecret:absent\n"
	if changed[0].ContentHash != protocol.HashBytes([]byte(content)) {
		t.Fatalf("file.changed hash %s is not the hash of the mock agent's note", changed[0].ContentHash)
	}
	diff := string(artifact(t, tp, b.Events, "diff"))
	if !strings.Contains(diff, "+++ b/MOCK_AGENT.md") || !strings.Contains(diff, "+write a note") {
		t.Fatalf("diff %q", diff)
	}
	if log := string(artifact(t, tp, b.Events, "log")); !strings.Contains(log, "mock agent received task: write a note") || !strings.Contains(log, "mock agent done") {
		t.Fatalf("log %q", log)
	}
	exec := payloads[protocol.CommandExecuted](t, b.Events)
	if len(exec) != 1 || exec[0].ExitCode != 0 || !protocol.IsHash(exec[0].ArgvHash) {
		t.Fatalf("command.executed %+v", exec)
	}
	// The runner's files: the key never leaves them, all 0600.
	for _, f := range []string{"runner.key.pem", "runner.pub.pem", "identity.json"} {
		fi, err := os.Stat(filepath.Join(tr.DataDir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v mode %v", f, err, fi.Mode())
		}
	}
	if b.Keys.RunnerPublicKeyPEM == "" || strings.Contains(b.Keys.RunnerPublicKeyPEM, "PRIVATE") {
		t.Fatal("bundle runner key")
	}
	// The session directory is gone.
	if entries, _ := os.ReadDir(filepath.Join(tr.DataDir, "sessions")); len(entries) != 0 {
		t.Fatalf("session directories left behind: %v", entries)
	}
}

func TestFailingAgentYieldsFailedReceiptThatVerifies(t *testing.T) {
	tp := testutil.StartPlane(t)
	startRunner(t, tp)
	id := submit(t, tp.Admin, mockRun("please fail"))
	run := waitEnded(t, tp.Admin, id)
	if run.State != protocol.StateFailed || run.Failure == nil || run.Failure.Class != protocol.FailureSessionFailed || run.Failure.Message != "agent exited with code 1" {
		t.Fatalf("run %s %+v", run.State, run.Failure)
	}
	b, _ := verifiedBundle(t, tp, id)
	if b.Receipt.Status != "failed" {
		t.Fatalf("receipt status %s", b.Receipt.Status)
	}
	if log := string(artifact(t, tp, b.Events, "log")); !strings.Contains(log, "mock agent failing as instructed") {
		t.Fatalf("log %q", log)
	}
}

func TestNetworkProbeIsBlockedAndRecorded(t *testing.T) {
	tp := testutil.StartPlane(t)
	startRunner(t, tp)
	id := submit(t, tp.Admin, mockRun("check the network"))
	if run := waitEnded(t, tp.Admin, id); run.State != protocol.StateCompleted {
		t.Fatalf("run %s %+v", run.State, run.Failure)
	}
	b, _ := verifiedBundle(t, tp, id)
	want := []protocol.NetworkAccess{{Host: "denied.example.com", Decision: "blocked"}}
	if !slices.Equal(b.Receipt.NetworkAccessed, want) {
		t.Fatalf("networkAccessed %+v", b.Receipt.NetworkAccessed)
	}
	if log := string(artifact(t, tp, b.Events, "log")); !strings.Contains(log, "network probe status: 403") {
		t.Fatalf("log %q", log)
	}
}

func TestAllowlistedIPIsReachedAndLoopbackNameRefused(t *testing.T) {
	var hits atomic.Int32
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte("upstream says hi"))
	}))
	defer upstream.Close()
	u, _ := url.Parse(upstream.URL)
	tp := testutil.StartPlane(t)
	startRunner(t, tp)

	probe := func(host, allow string) *protocol.Bundle {
		req := mockRun("network probe")
		req.AllowHosts = []string{allow}
		req.Execution = &protocol.ExecutionSpec{Kind: protocol.ExecAgent, Agent: &protocol.AgentSpec{Kind: protocol.AgentMock}, Prompt: "network probe",
			Env: &protocol.ExecutionEnv{Vars: map[string]string{"MOCK_PROBE_HOST": host + ":" + u.Port()}}}
		id := submit(t, tp.Admin, req)
		if run := waitEnded(t, tp.Admin, id); run.State != protocol.StateCompleted {
			t.Fatalf("run %s %+v", run.State, run.Failure)
		}
		b, _ := verifiedBundle(t, tp, id)
		return b
	}

	b := probe("127.0.0.1", "127.0.0.1")
	if want := []protocol.NetworkAccess{{Host: "127.0.0.1", Decision: "allowed"}}; !slices.Equal(b.Receipt.NetworkAccessed, want) {
		t.Fatalf("networkAccessed %+v", b.Receipt.NetworkAccessed)
	}
	if hits.Load() != 1 || !strings.Contains(string(artifact(t, tp, b.Events, "log")), "network probe status: 200") {
		t.Fatalf("upstream hits %d", hits.Load())
	}

	b = probe("localhost", "localhost")
	if want := []protocol.NetworkAccess{{Host: "localhost", Decision: "blocked"}}; !slices.Equal(b.Receipt.NetworkAccessed, want) {
		t.Fatalf("networkAccessed %+v", b.Receipt.NetworkAccessed)
	}
	if hits.Load() != 1 {
		t.Fatal("a name resolving to loopback reached the upstream")
	}
}

func TestPiIsACapabilityMismatch(t *testing.T) {
	tp := testutil.StartPlane(t)
	startRunner(t, tp)
	id := submit(t, tp.Admin, client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentPi}, Prompt: "fix it"})
	run := waitEnded(t, tp.Admin, id)
	if run.State != protocol.StateFailed || run.Failure.Class != protocol.FailureCapabilityMismatch {
		t.Fatalf("run %s %+v", run.State, run.Failure)
	}
	b, _ := verifiedBundle(t, tp, id)
	if got := eventTypes(b.Events); got[len(got)-1] != "run.failed" || slices.Contains(got, "command.executed") || slices.Contains(got, "workspace.materialized") {
		t.Fatalf("events %v", got)
	}
}

func TestMissingWorkspaceBlobIsATransferFailure(t *testing.T) {
	tp := testutil.StartPlane(t)
	ws := testutil.UploadWorkspace(t, tp.Admin, map[string]string{"only.txt": "gone soon\n"})
	id := submit(t, tp.Admin, client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentCommand}, Prompt: "true", Workspace: ws})
	if err := tp.Blobs.Delete(context.Background(), protocol.HashBytes([]byte("gone soon\n"))); err != nil {
		t.Fatal(err)
	}
	startRunner(t, tp)
	run := waitEnded(t, tp.Admin, id)
	if run.State != protocol.StateFailed || run.Failure.Class != protocol.FailureTransferFailed {
		t.Fatalf("run %s %+v", run.State, run.Failure)
	}
	verifiedBundle(t, tp, id)
}

func TestInvalidEnrollTokenIsRefusedAtOnce(t *testing.T) {
	tp := testutil.StartPlane(t)
	tr := newRunner(t, tp, withOptions(func(o *runner.Options) { o.EnrollToken = "wet_not-a-real-token" }))
	_, err := tr.Enroll(context.Background())
	if !errors.Is(err, runner.ErrEnrollRefused) {
		t.Fatalf("Enroll = %v, want ErrEnrollRefused", err)
	}
	if strings.Contains(tr.Log.String(), "retrying") {
		t.Fatal("an invalid token was retried")
	}
	if _, err := os.Stat(filepath.Join(tr.DataDir, "identity.json")); err == nil {
		t.Fatal("an identity was written")
	}
}

func TestRunnerIdentitySurvivesRestart(t *testing.T) {
	tp := testutil.StartPlane(t)
	first := newRunner(t, tp)
	id1, err := first.Enroll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// A new runner on the same data directory reuses the identity and does
	// not spend a token.
	second := newRunner(t, tp, withOptions(func(o *runner.Options) { o.DataDir = first.DataDir; o.EnrollToken = "" }))
	id2, err := second.Enroll(context.Background())
	if err != nil || id2.RunnerID != id1.RunnerID || id2.KeyID != id1.KeyID {
		t.Fatalf("second enroll %+v %v, want %+v", id2, err, id1)
	}
	runners, err := tp.Admin.ListRunners(context.Background())
	if err != nil || len(runners) != 1 || runners[0].KeyID != id1.KeyID || !slices.Equal(runners[0].Tiers, []string{"process"}) {
		t.Fatalf("runners %+v %v", runners, err)
	}
}
