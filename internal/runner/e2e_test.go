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
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/internal/runner"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

func TestMockRunCompletesWithTrustedBundle(t *testing.T) {
	t.Parallel()
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
	if r.Status != "completed" || r.Runner.RunnerID != ident.RunnerID || r.Runner.AttestationTier != "mock" || r.Runner.Isolation != isolationFor(t) || r.Runner.Pool != "default" {
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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

// allowSecret stores a secret and makes it releasable to pool default.
func allowSecret(t *testing.T, tp *testutil.TestPlane, name, value string) {
	t.Helper()
	ctx := context.Background()
	// A fresh value: a decoded policy re-encodes as received, edits lost.
	pol := plane.DefaultPolicy()
	pol.Secrets.Releasable = append(pol.Secrets.Releasable, protocol.SecretScopeRule{Name: name, Pools: []string{"default"}})
	if _, err := tp.Admin.PutPolicy(ctx, pol); err != nil {
		t.Fatal(err)
	}
	if _, err := tp.Admin.PutSecret(ctx, name, value); err != nil {
		t.Fatal(err)
	}
}

// secretLeakScript prints the secret, base64-encodes it, splits it across
// two writes, and writes it into a file and into a file name.
const secretLeakScript = `echo "token is $MOCK_SECRET"
printf '%s' "$MOCK_SECRET" | base64
printf 'split:%s' "$(printf '%s' "$MOCK_SECRET" | cut -c1-6)"; sleep 0.1; printf '%s\n' "$(printf '%s' "$MOCK_SECRET" | cut -c7-)"
echo "key=$MOCK_SECRET" > leaked.txt
echo hi > "name-$MOCK_SECRET.txt"`

func TestSecretIsInjectedAndNeverLeaks(t *testing.T) {
	t.Parallel()
	const secret = "wsec7f3a9c1d2e5b"
	tp := testutil.StartPlane(t)
	allowSecret(t, tp, "MOCK_SECRET", secret)
	tr := startRunner(t, tp)

	// 1. The mock agent sees it (and says only "present").
	mock := mockRun("note the secret")
	mock.Secrets = []string{"MOCK_SECRET"}
	mockID := submit(t, tp.Admin, mock)
	// 2. A command that tries every way to leak it through the outputs.
	leak := commandRun(secretLeakScript)
	leak.Secrets = []string{"MOCK_SECRET"}
	leakID := submit(t, tp.Admin, leak)
	// 3. An agent that puts it into the host name it asks the proxy for.
	probe := client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentMock}, Prompt: "network", Secrets: []string{"MOCK_SECRET"},
		Execution: &protocol.ExecutionSpec{Kind: protocol.ExecArgv, Command: warrantBin, Args: []string{"agent", "mock", "network"},
			Env: &protocol.ExecutionEnv{Secrets: []protocol.EnvSecret{{Env: "MOCK_PROBE_HOST", SecretName: "MOCK_SECRET"}}}}}
	probeID := submit(t, tp.Admin, probe)

	var scanned [][]byte
	for _, id := range []string{mockID, leakID, probeID} {
		run := waitEnded(t, tp.Admin, id)
		if run.State != protocol.StateCompleted {
			t.Fatalf("run %s: %s %+v", id, run.State, run.Failure)
		}
		b, raw := verifiedBundle(t, tp, id)
		if want := []protocol.SecretRelease{{Name: "MOCK_SECRET", Scope: "pool:default", TS: b.Receipt.SecretsReleased[0].TS}}; !slices.Equal(b.Receipt.SecretsReleased, want) {
			t.Fatalf("secretsReleased %+v", b.Receipt.SecretsReleased)
		}
		scanned = append(scanned, raw)
		for _, h := range b.Receipt.WorkspaceOut.ArtifactHashes {
			scanned = append(scanned, blob(t, tp, h))
		}
		evs, err := tp.Admin.Events(context.Background(), id, -1)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Events {
			data, _ := e.MarshalJSON()
			scanned = append(scanned, data)
		}
	}

	mb, _ := verifiedBundle(t, tp, mockID)
	if diff := string(artifact(t, tp, mb.Events, "diff")); !strings.Contains(diff, "+secret:present") {
		t.Fatalf("the mock agent did not see the secret: %q", diff)
	}
	lb, _ := verifiedBundle(t, tp, leakID)
	log := string(artifact(t, tp, lb.Events, "log"))
	if strings.Count(log, "[REDACTED:MOCK_SECRET]") < 3 {
		t.Fatalf("log not redacted as expected: %q", log)
	}
	diff := string(artifact(t, tp, lb.Events, "diff"))
	if !strings.Contains(diff, "key=[REDACTED:MOCK_SECRET]") || !strings.Contains(diff, "name-[REDACTED:MOCK_SECRET].txt") {
		t.Fatalf("diff not redacted: %q", diff)
	}
	paths := payloads[protocol.FileChanged](t, lb.Events)
	if len(paths) != 2 || paths[1].Path != "name-[REDACTED:MOCK_SECRET].txt" {
		t.Fatalf("file.changed %+v", paths)
	}
	pb, _ := verifiedBundle(t, tp, probeID)
	if want := []protocol.NetworkAccess{{Host: "[REDACTED:MOCK_SECRET]", Decision: "blocked"}}; !slices.Equal(pb.Receipt.NetworkAccessed, want) {
		t.Fatalf("networkAccessed %+v", pb.Receipt.NetworkAccessed)
	}

	// Everything the plane stores (database and blob files), everything
	// fetched above and the runner's own log: no trace of the value, raw
	// or base64.
	forms := []string{secret, "d3NlYzdmM2E5YzFkMmU1Yg"}
	_ = filepath.Walk(tp.DataDir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			data, _ := os.ReadFile(p)
			scanned = append(scanned, data)
		}
		return nil
	})
	scanned = append(scanned, []byte(tr.Log.String()))
	for i, data := range scanned {
		for _, f := range forms {
			if strings.Contains(string(data), f) {
				t.Fatalf("the secret (%q) appears in scanned item %d: %.300q", f, i, data)
			}
		}
	}
}

// treeRun is a shell run whose process tree has two grandchildren that
// ignore SIGTERM; every pid goes to the file $PIDS, then body runs.
func treeRun(pids, body string, edit func(*protocol.ExecutionSpec)) client.RunRequest {
	script := `sh -c 'trap "" TERM; echo $$ >> "$PIDS"; while :; do sleep 1; done' &
sh -c 'trap "" TERM; echo $$ >> "$PIDS"; exec sleep 1000' &
echo $$ >> "$PIDS"
while [ "$(wc -l < "$PIDS")" -lt 3 ]; do sleep 0.01; done
` + body
	spec := &protocol.ExecutionSpec{Kind: protocol.ExecShell, Script: script, Env: &protocol.ExecutionEnv{Vars: map[string]string{"PIDS": pids}}}
	if edit != nil {
		edit(spec)
	}
	return client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentCommand}, Prompt: script, Execution: spec}
}

func TestTimeoutLogCapAndCancelKillTheProcessTree(t *testing.T) {
	t.Parallel()
	tp := testutil.StartPlane(t)
	startRunner(t, tp, withOptions(func(o *runner.Options) { o.Concurrency = 3 }))
	dir := t.TempDir()

	timeoutPids := filepath.Join(dir, "timeout")
	timeoutID := submit(t, tp.Admin, treeRun(timeoutPids, "trap '' TERM; wait", func(s *protocol.ExecutionSpec) {
		ms := int64(1500)
		s.TimeoutMs = &ms
	}))
	capPids := filepath.Join(dir, "cap")
	capID := submit(t, tp.Admin, treeRun(capPids, "while :; do echo 0123456789; done", func(s *protocol.ExecutionSpec) {
		max := int64(2000)
		s.Log = &protocol.ExecutionLog{Stdout: "capture", Stderr: "merge", MaxBytes: &max}
	}))
	cancelPids := filepath.Join(dir, "cancel")
	cancelID := submit(t, tp.Admin, treeRun(cancelPids, "wait", nil))

	pidsOf := map[string][]int{}
	for id, file := range map[string]string{timeoutID: timeoutPids, capID: capPids, cancelID: cancelPids} {
		pidsOf[id] = readPids(t, file, 3, 30*time.Second)
	}
	if _, err := tp.Admin.Cancel(context.Background(), cancelID, "changed my mind"); err != nil {
		t.Fatal(err)
	}

	run := waitEnded(t, tp.Admin, timeoutID)
	if run.State != protocol.StateFailed || run.Failure.Class != protocol.FailureBudgetExceeded || !strings.Contains(run.Failure.Message, "time limit of 1.5s") {
		t.Fatalf("timeout run %s %+v", run.State, run.Failure)
	}
	run = waitEnded(t, tp.Admin, capID)
	if run.State != protocol.StateFailed || run.Failure.Class != protocol.FailureBudgetExceeded || !strings.Contains(run.Failure.Message, "limit of 2000 bytes") {
		t.Fatalf("log cap run %s %+v", run.State, run.Failure)
	}
	run = waitEnded(t, tp.Admin, cancelID)
	if run.State != protocol.StateCancelled {
		t.Fatalf("cancelled run %s %+v", run.State, run.Failure)
	}
	for id, pids := range pidsOf {
		assertDead(t, pids)
		b, _ := verifiedBundle(t, tp, id)
		exec := payloads[protocol.CommandExecuted](t, b.Events)
		if len(exec) != 1 || exec[0].ExitCode < 128 {
			t.Errorf("run %s command.executed %+v, want death by signal", id, exec)
		}
	}
	b, _ := verifiedBundle(t, tp, cancelID)
	who, err := tp.Admin.WhoAmI(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c := payloads[protocol.RunCancelled](t, b.Events); len(c) != 1 || c[0].Actor.ID != who.Principal.Name || b.Receipt.Status != "cancelled" {
		t.Fatalf("run.cancelled %+v receipt %s", c, b.Receipt.Status)
	}
	cb, _ := verifiedBundle(t, tp, capID)
	log := string(artifact(t, tp, cb.Events, "log"))
	head, _, ok := strings.Cut(log, "\n[warrant: session log exceeded its limit of 2000 bytes")
	if !ok || len(head) != 2000 {
		t.Fatalf("capped log: %d bytes before the marker (found %v)", len(head), ok)
	}
}

func TestEventsAreVisibleWhileTheSessionRuns(t *testing.T) {
	t.Parallel()
	tp := testutil.StartPlane(t)
	startRunner(t, tp)
	release := filepath.Join(t.TempDir(), "release")
	script := `"$WARRANT" agent mock "network check"; while [ ! -f "$RELEASE" ]; do sleep 0.02; done`
	id := submit(t, tp.Admin, client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentCommand}, Prompt: script,
		Execution: &protocol.ExecutionSpec{Kind: protocol.ExecShell, Script: script,
			Env: &protocol.ExecutionEnv{Vars: map[string]string{"WARRANT": warrantBin, "RELEASE": release}}}})
	deadline := time.Now().Add(30 * time.Second)
	for {
		evs, err := tp.Admin.Events(context.Background(), id, -1)
		if err != nil {
			t.Fatal(err)
		}
		if n := payloads[protocol.NetworkConnected](t, evs.Events); len(n) == 1 {
			if evs.State != protocol.StateRunning {
				t.Fatalf("state %s while the session waits", evs.State)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no network.connected event on the plane while the session runs: %v", eventTypes(evs.Events))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if run := waitEnded(t, tp.Admin, id); run.State != protocol.StateCompleted {
		t.Fatalf("run %s %+v", run.State, run.Failure)
	}
	verifiedBundle(t, tp, id)
}
