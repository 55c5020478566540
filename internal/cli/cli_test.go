package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/runner"
	"warrant.dev/warrant/internal/runner/sandbox/process"
	"warrant.dev/warrant/internal/runner/session"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

// warrantBin is the real warrant binary, built once for these tests.
var warrantBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "warrant-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	warrantBin = filepath.Join(dir, "warrant")
	build := exec.Command("go", "build", "-o", warrantBin, "warrant.dev/warrant/cmd/warrant")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build warrant:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// stack is a real plane on loopback with a real runner in pool "local",
// and a clean HOME whose CLI config points at the plane.
type stack struct {
	t     *testing.T
	plane *testutil.TestPlane
	home  string
	trust string
}

func startStack(t *testing.T, opts ...testutil.Option) *stack {
	t.Helper()
	tp := testutil.StartPlane(t, opts...)
	s := &stack{t: t, plane: tp, home: t.TempDir()}
	s.trust = filepath.Join(s.home, "trust.json")
	data, err := json.Marshal(tp.Trust().File())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.trust, data, 0o644); err != nil {
		t.Fatal(err)
	}
	s.startRunner("local")
	return s
}

func (s *stack) startRunner(pool string) {
	t := s.t
	r, err := runner.New(runner.Options{
		PlaneURL: s.plane.URL, Pool: pool, DataDir: t.TempDir(), EnrollToken: s.plane.EnrollToken(pool),
		Backends:    []session.Backend{process.New(process.Options{})},
		WarrantPath: warrantBin, Logger: testutil.NewLogger(t), ClaimWait: 2 * time.Second, KillGrace: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	testutil.RunRunner(t, r, 10*time.Second)
}

type result struct {
	code           int
	stdout, stderr string
}

// warrant runs the real binary with the stack's environment and token.
func (s *stack) warrant(dir, token string, args ...string) result {
	s.t.Helper()
	return s.warrantIn(context.Background(), dir, token, nil, args...)
}

func (s *stack) warrantIn(ctx context.Context, dir, token string, stdin []byte, args ...string) result {
	s.t.Helper()
	cmd := exec.CommandContext(ctx, warrantBin, args...)
	cmd.Dir = dir
	cmd.Env = s.env(token)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatalf("run warrant %v: %v", args, err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

func (s *stack) env(token string) []string {
	return []string{
		"HOME=" + s.home,
		"XDG_CONFIG_HOME=" + filepath.Join(s.home, ".config"),
		"PATH=" + os.Getenv("PATH"),
		"WARRANT_PLANE=" + s.plane.URL,
		"WARRANT_TOKEN=" + token,
		"WARRANT_TRUST=" + s.trust,
		"NO_COLOR=",
	}
}

// gitRepo makes a committed git repository with one file.
func gitRepo(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "-A"}, {"commit", "-q", "-m", "init"}} {
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"}, args...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v: %s", args, err, out)
		}
	}
	return dir
}

func decodeJSON[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("output is not the JSON we document: %v\n%s", err, s)
	}
	return v
}

func expectCode(t *testing.T, r result, want int, what string) {
	t.Helper()
	if r.code != want {
		t.Fatalf("%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", what, r.code, want, r.stdout, r.stderr)
	}
}

func TestRunWatchReceiptVerifyPull(t *testing.T) {
	s := startStack(t)
	repo := gitRepo(t, map[string]string{"a.txt": "one\n", ".env": "SECRET=1\n"})
	tok := s.plane.AdminToken

	r := s.warrant(repo, tok, "run", "--agent", "command", "echo two >> a.txt && echo new > b.txt")
	expectCode(t, r, 0, "run")
	for _, want := range []string{"run.created", "workspace.materialized", "command.executed", "file.changed", "run.completed"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("run output lacks %s:\n%s", want, r.stdout)
		}
	}
	if !strings.Contains(r.stderr, "withheld 1 paths matching deny patterns: .env") {
		t.Errorf("run did not report the withheld .env:\n%s", r.stderr)
	}
	if strings.Contains(r.stdout+r.stderr, "\x1b[") {
		t.Errorf("escape codes in piped output")
	}

	list := decodeJSON[client.RunList](t, s.warrant(repo, tok, "runs", "--json").stdout)
	if len(list.Runs) != 1 || list.Runs[0].State != protocol.StateCompleted || list.Runs[0].Agent.Kind != "command" {
		t.Fatalf("runs --json: %+v", list.Runs)
	}
	id := list.Runs[0].ID
	table := s.warrant(repo, tok, "runs")
	expectCode(t, table, 0, "runs")
	if !strings.Contains(table.stdout, "ID") || !strings.Contains(table.stdout, id) || !strings.Contains(table.stdout, "completed") {
		t.Fatalf("runs table:\n%s", table.stdout)
	}

	w := s.warrant(repo, tok, "watch", id)
	expectCode(t, w, 0, "watch")
	if !strings.Contains(w.stdout, "run.completed") {
		t.Fatalf("watch:\n%s", w.stdout)
	}
	wj := s.warrant(repo, tok, "watch", id, "--json")
	lines := strings.Split(strings.TrimSpace(wj.stdout), "\n")
	for i, l := range lines {
		e := decodeJSON[protocol.ChainedEvent](t, l)
		if e.Seq != int64(i) {
			t.Fatalf("watch --json line %d has seq %d", i, e.Seq)
		}
	}

	rec := s.warrant(repo, tok, "receipt", id)
	expectCode(t, rec, 0, "receipt")
	for _, want := range []string{"WHAT MOVED", "WHY", "WHO APPROVED", "WHAT SAW IT", "HOW TO REPRODUCE", "verified ✓", "a.txt", "b.txt", ".env", "isolation process"} {
		if !strings.Contains(rec.stdout, want) {
			t.Errorf("receipt lacks %q:\n%s", want, rec.stdout)
		}
	}
	view := decodeJSON[struct {
		RunID        string
		State        string
		Verification struct{ Trusted, Valid bool }
		WhatMoved    struct {
			FilesIn     int
			DeniedPaths []string
			FilesOut    []struct {
				Path           string
				Added, Removed int
			}
		}
		WhatSawIt struct{ Isolation, AttestationTier, RunnerKeyID string }
		Reproduce struct{ ContractHash, BaseRef string }
	}](t, s.warrant(repo, tok, "receipt", id, "--json").stdout)
	if view.RunID != id || !view.Verification.Trusted || view.WhatMoved.FilesIn != 1 || len(view.WhatMoved.FilesOut) != 2 ||
		view.WhatSawIt.Isolation != "process" || view.WhatSawIt.AttestationTier != "mock" || !protocol.IsHash(view.Reproduce.ContractHash) ||
		len(view.WhatMoved.DeniedPaths) != 1 {
		t.Fatalf("receipt --json: %+v", view)
	}

	bundle := filepath.Join(s.home, "run.bundle.json")
	expectCode(t, s.warrant(repo, tok, "receipt", id, "--bundle", bundle), 0, "receipt --bundle")
	v := s.warrant(repo, tok, "verify", bundle)
	expectCode(t, v, 0, "verify")
	if !strings.Contains(v.stdout, "VERIFIED") || strings.Count(v.stdout, "✓") != 13 {
		t.Fatalf("verify:\n%s", v.stdout)
	}
	vj := decodeJSON[struct {
		OK, Valid, Trusted bool
		Checks             []struct {
			Name string
			OK   bool
		}
	}](t, s.warrant(repo, tok, "verify", "--json", bundle).stdout)
	if !vj.OK || !vj.Trusted || len(vj.Checks) != 13 {
		t.Fatalf("verify --json: %+v", vj)
	}
	// Without the trust file the bundle is consistent but not trusted.
	untrusted := s.warrantWithout(repo, tok, "WARRANT_TRUST", "verify", bundle)
	expectCode(t, untrusted, 3, "verify without trust")
	// A tampered bundle fails.
	data, _ := os.ReadFile(bundle)
	tampered := filepath.Join(s.home, "tampered.json")
	os.WriteFile(tampered, bytes.Replace(data, []byte(`"exitCode":0`), []byte(`"exitCode":1`), 1), 0o644)
	bad := s.warrant(repo, tok, "verify", tampered)
	expectCode(t, bad, 1, "verify tampered")
	if !strings.Contains(bad.stdout, "✗ event-chain") {
		t.Fatalf("tampered verify:\n%s", bad.stdout)
	}

	dry := s.warrant(repo, tok, "pull", id, "--dry-run")
	expectCode(t, dry, 0, "pull --dry-run")
	if b, _ := os.ReadFile(filepath.Join(repo, "a.txt")); string(b) != "one\n" {
		t.Fatal("dry-run pull changed the work tree")
	}
	expectCode(t, s.warrant(repo, tok, "pull", id), 0, "pull")
	if b, _ := os.ReadFile(filepath.Join(repo, "a.txt")); string(b) != "one\ntwo\n" {
		t.Fatalf("pull: a.txt = %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(repo, "b.txt")); string(b) != "new\n" {
		t.Fatalf("pull: b.txt = %q", b)
	}
}

func (s *stack) warrantWithout(dir, token, drop string, args ...string) result {
	s.t.Helper()
	cmd := exec.Command(warrantBin, args...)
	cmd.Dir = dir
	for _, kv := range s.env(token) {
		if !strings.HasPrefix(kv, drop+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

func TestDryRunStoresNothing(t *testing.T) {
	s := startStack(t)
	repo := gitRepo(t, map[string]string{"main.go": "package main\n", "id_rsa": "KEY\n"})
	r := s.warrant(repo, s.plane.AdminToken, "run", "--dry-run", "--json", "--agent", "codex", "--allow-host", "api.openai.com", "refactor")
	expectCode(t, r, 0, "dry run")
	rep := decodeJSON[client.DisclosureReport](t, r.stdout)
	if !rep.DryRun || rep.Agent.Kind != "codex" || rep.Files != 1 || len(rep.DeniedPaths) != 1 || rep.DeniedPaths[0] != "id_rsa" ||
		len(rep.Network.AllowHosts) != 1 || rep.PolicyDecision.Decision != "allow" {
		t.Fatalf("dry run report: %+v", rep)
	}
	if strings.Join(rep.DataClasses, ",") != "workspace,code-diff,session-log" {
		t.Fatalf("dry run data classes: %q", rep.DataClasses)
	}
	human := s.warrant(repo, s.plane.AdminToken, "run", "--dry-run", "--agent", "codex", "--data-class", "pii", "refactor")
	expectCode(t, human, 0, "dry run (human)")
	if !strings.Contains(human.stdout, "DRY RUN") || !strings.Contains(human.stdout, "id_rsa") || !strings.Contains(human.stdout, "workspace, code-diff, session-log, pii") {
		t.Fatalf("dry run output:\n%s", human.stdout)
	}
	list, err := s.plane.Admin.ListRuns(context.Background(), client.ListRunsOptions{})
	if err != nil || len(list.Runs) != 0 {
		t.Fatalf("a dry run stored a run: %v %+v", err, list)
	}
}

func TestPolicyDenialShowsReasons(t *testing.T) {
	s := startStack(t)
	repo := gitRepo(t, map[string]string{"a": "a\n"})
	r := s.warrant(repo, s.plane.AdminToken, "run", "--agent", "mock", "--pool", "forbidden-pool", "--secret", "NOT_RELEASABLE", "task")
	expectCode(t, r, 6, "denied run")
	if !strings.Contains(r.stderr, "denied") || !strings.Contains(r.stderr, "forbidden-pool") || !strings.Contains(r.stderr, "NOT_RELEASABLE") {
		t.Fatalf("denial should list every reason:\n%s", r.stderr)
	}
	j := s.warrant(repo, s.plane.AdminToken, "run", "--json", "--agent", "mock", "--pool", "forbidden-pool", "task")
	expectCode(t, j, 6, "denied run --json")
	d := decodeJSON[struct {
		Denied  bool
		Code    string
		Reasons []string
	}](t, j.stdout)
	if !d.Denied || d.Code != "policy_denied" || len(d.Reasons) == 0 {
		t.Fatalf("denied --json: %+v", d)
	}
}

func TestApprovalFromASecondToken(t *testing.T) {
	s := startStack(t)
	ctx := context.Background()
	pv, err := s.plane.Admin.GetPolicy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pol := pv.Policy
	pol = protocol.Policy{Version: pol.Version, Runners: pol.Runners, Agents: pol.Agents, DataClasses: pol.DataClasses, Network: pol.Network,
		Secrets: pol.Secrets, Budget: pol.Budget, Retention: pol.Retention,
		Consent: []protocol.ConsentRule{{When: "any-run", Approvers: []string{"role:approver"}}}}
	if _, err := s.plane.Admin.PutPolicy(ctx, pol); err != nil {
		t.Fatal(err)
	}
	reqTok, apTok := newToken(t, s, "rita", client.RoleRequester), newToken(t, s, "abe", client.RoleApprover)
	repo := gitRepo(t, map[string]string{"a": "a\n"})

	sub := s.warrant(repo, reqTok, "run", "--detach", "--agent", "command", "echo approved > ok.txt")
	expectCode(t, sub, 0, "submit")
	id := strings.TrimSpace(sub.stdout)
	run, err := s.plane.Admin.GetRun(ctx, id)
	if err != nil || run.State != protocol.StateAwaitingApproval {
		t.Fatalf("run %q: %v %+v", id, err, run)
	}
	pending := decodeJSON[client.RunList](t, s.warrant(repo, apTok, "runs", "--state", "awaiting_approval", "--json").stdout)
	if len(pending.Runs) != 1 || pending.Runs[0].ID != id {
		t.Fatalf("pending runs: %+v", pending)
	}
	// The requester may not approve their own run.
	self := s.warrant(repo, reqTok, "approve", id)
	if self.code == 0 || !strings.Contains(self.stderr, "forbidden") {
		t.Fatalf("requester approved: %+v", self)
	}
	ap := s.warrant(repo, apTok, "approve", id, "--reason", "looks fine")
	expectCode(t, ap, 0, "approve")
	w := s.warrant(repo, reqTok, "watch", id)
	expectCode(t, w, 0, "watch approved run")
	if !strings.Contains(w.stdout, "consent.granted") {
		t.Fatalf("watch lacks consent.granted:\n%s", w.stdout)
	}
	rec := s.warrant(repo, reqTok, "receipt", id)
	if !strings.Contains(rec.stdout, "approved by") || !strings.Contains(rec.stdout, "looks fine") {
		t.Fatalf("receipt does not show the approval:\n%s", rec.stdout)
	}

	// A denial from the approver ends the run policy_denied (exit 6 from watch).
	sub2 := s.warrant(repo, reqTok, "run", "--detach", "--agent", "command", "echo no")
	id2 := strings.TrimSpace(sub2.stdout)
	expectCode(t, s.warrant(repo, apTok, "deny", id2, "--reason", "not today"), 0, "deny")
	expectCode(t, s.warrant(repo, reqTok, "watch", id2), 6, "watch denied run")
}

func newToken(t *testing.T, s *stack, name, role string) string {
	t.Helper()
	out, err := s.plane.Admin.CreatePrincipal(context.Background(), client.CreatePrincipalRequest{Name: name, Role: role})
	if err != nil {
		t.Fatal(err)
	}
	return out.Token.Secret
}

func TestFailedAndCancelledRunsExitCodes(t *testing.T) {
	s := startStack(t)
	repo := gitRepo(t, map[string]string{"a": "a\n"})
	r := s.warrant(repo, s.plane.AdminToken, "run", "--agent", "command", "echo bye; exit 3")
	expectCode(t, r, 4, "failed run")
	if !strings.Contains(r.stderr, "session_failed") {
		t.Fatalf("failed run output:\n%s", r.stderr)
	}
	failed := decodeJSON[client.RunList](t, s.warrant(repo, s.plane.AdminToken, "runs", "--json", "--state", "failed").stdout)
	if len(failed.Runs) != 1 {
		t.Fatalf("failed runs: %+v", failed)
	}
	logs := s.warrant(repo, s.plane.AdminToken, "logs", failed.Runs[0].ID)
	expectCode(t, logs, 0, "logs")
	if logs.stdout != "bye\n" {
		t.Fatalf("logs of the failed run: %q", logs.stdout)
	}
	// A run no runner can take (its pool has none) is cancelled while we
	// watch it: watch exits 5.
	sub := s.warrant(repo, s.plane.AdminToken, "run", "--detach", "--pool", "default", "--agent", "command", "true")
	expectCode(t, sub, 0, "submit to an empty pool")
	id := strings.TrimSpace(sub.stdout)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan result, 1)
	go func() { done <- s.warrantIn(ctx, repo, s.plane.AdminToken, nil, "watch", id) }()
	time.Sleep(500 * time.Millisecond)
	expectCode(t, s.warrant(repo, s.plane.AdminToken, "cancel", id, "--reason", "no runner"), 0, "cancel")
	w := <-done
	expectCode(t, w, 5, "watch cancelled run")
	if !strings.Contains(w.stdout, "run.cancelled") {
		t.Fatalf("watch of a cancelled run:\n%s", w.stdout)
	}
}

func TestUsageErrorsSayWhatToDo(t *testing.T) {
	s := startStack(t)
	repo := gitRepo(t, map[string]string{"a": "a\n"})
	cases := []struct {
		args []string
		code int
		hint string
	}{
		{[]string{"run"}, 2, "give the task"},
		{[]string{"run", "--agent", "nope", "x"}, 2, "want one of"},
		{[]string{"verify"}, 2, "takes 1 argument"},
		{[]string{"verify", "/nonexistent"}, 2, "open /nonexistent"},
		{[]string{"runs", "--state", "weird"}, 2, "not a run state"},
		{[]string{"receipt", "run_missing"}, 1, "no run"},
		{[]string{"bogus"}, 2, "unknown command"},
		{[]string{"run", "--bogus", "x"}, 2, "unknown flag"},
	}
	for _, c := range cases {
		r := s.warrant(repo, s.plane.AdminToken, c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.hint) {
			t.Errorf("warrant %v: exit %d stderr %q; want exit %d mentioning %q", c.args, r.code, r.stderr, c.code, c.hint)
		}
	}
	// No plane reachable: the error says how to start one.
	r := s.warrantWithout(repo, s.plane.AdminToken, "WARRANT_PLANE", "--plane", "http://127.0.0.1:1", "runs")
	if r.code != 1 || !strings.Contains(r.stderr, "warrant dev") {
		t.Errorf("unreachable plane: %+v", r)
	}
}
