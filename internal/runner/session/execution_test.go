package session

import (
	"errors"
	"regexp"
	"slices"
	"testing"
	"time"

	"warrant.dev/warrant/protocol"
)

func contractFixture() *protocol.Contract {
	return &protocol.Contract{
		Version:     protocol.VersionContract,
		RunID:       "run_test",
		IssuedAt:    "2026-06-11T00:00:00.000Z",
		Issuer:      protocol.KeyRef{KeyID: "ed25519:0000000000000000", Role: "plane"},
		RequestedBy: protocol.ActorRef{Kind: "human", ID: "alice"},
		Agent:       protocol.AgentSpec{Kind: protocol.AgentCommand},
		Task:        protocol.TaskSpec{Prompt: "echo hi"},
		Runner:      protocol.RunnerSelector{Pool: "default"},
		Workspace: protocol.Manifest{
			Version: protocol.VersionManifest, BaseRef: "abc", BundleHash: "1111111111111111111111111111111111111111111111111111111111111111",
			UntrackedFiles: []protocol.ManifestFile{}, DeniedPatterns: []string{}, DeniedPaths: []string{},
		},
		PolicyHash: "2222222222222222222222222222222222222222222222222222222222222222",
		Secrets:    []protocol.SecretClaim{},
		Network:    protocol.NetworkPolicy{DefaultDeny: true, AllowHosts: []string{}},
		Disclosure: "minimal-context",
		ExpiresAt:  "2026-06-11T01:00:00.000Z",
		Signatures: []protocol.Signature{},
	}
}

var mockAgent = []string{"/usr/local/bin/warrant", "agent", "mock"}

func mustPrepare(t *testing.T, c *protocol.Contract) *Execution {
	t.Helper()
	e, err := Prepare(c, PrepareOptions{MockAgent: mockAgent, LookupEnv: func(string) (string, bool) { return "", false }})
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	return e
}

func mustHash(t *testing.T, e *Execution) string {
	t.Helper()
	h, err := e.Hash()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestCommandContractsDefaultToShellExecution(t *testing.T) {
	c := contractFixture()
	spec := c.EffectiveExecution()
	if spec.Kind != protocol.ExecShell || spec.Script != "echo hi" {
		t.Fatalf("default spec = %+v, want shell script %q", spec, "echo hi")
	}
	e := mustPrepare(t, c)
	if e.Kind != protocol.ExecShell || e.Script != "echo hi" || e.Shell != "sh" {
		t.Fatalf("prepared %+v, want shell sh script echo hi", e)
	}
	if e.Timeout != 10*time.Minute {
		t.Fatalf("timeout = %v, want the 10 minute default", e.Timeout)
	}
	if got := e.Argv(); !slices.Equal(got, []string{"sh", "-c", "echo hi"}) {
		t.Fatalf("argv = %q", got)
	}
}

func TestAgentExecutionsPrepareVendorArgvWithoutShell(t *testing.T) {
	cases := []struct {
		kind string
		argv []string
	}{
		{protocol.AgentMock, []string{"/usr/local/bin/warrant", "agent", "mock", "do work"}},
		{protocol.AgentClaudeCode, []string{"claude", "-p", "do work", "--permission-mode", "acceptEdits"}},
		{protocol.AgentCodex, []string{"codex", "exec", "--skip-git-repo-check", "do work"}},
	}
	for _, tc := range cases {
		c := contractFixture()
		c.Agent = protocol.AgentSpec{Kind: tc.kind}
		c.Task.Prompt = "do work"
		c.Execution = &protocol.ExecutionSpec{Kind: protocol.ExecAgent, Agent: &protocol.AgentSpec{Kind: tc.kind}, Prompt: "do work"}
		e := mustPrepare(t, c)
		if e.Kind != protocol.ExecArgv {
			t.Fatalf("%s: kind %q, want argv", tc.kind, e.Kind)
		}
		if got := e.Argv(); !slices.Equal(got, tc.argv) {
			t.Fatalf("%s: argv %q, want %q", tc.kind, got, tc.argv)
		}
	}
	// Without an execution spec, an agent contract runs the agent itself.
	c := contractFixture()
	c.Agent = protocol.AgentSpec{Kind: protocol.AgentMock}
	c.Task.Prompt = "default"
	if got := mustPrepare(t, c).Argv(); !slices.Equal(got, []string{"/usr/local/bin/warrant", "agent", "mock", "default"}) {
		t.Fatalf("default mock argv %q", got)
	}
}

func TestMockAgentNeedsItsCommand(t *testing.T) {
	c := contractFixture()
	c.Agent = protocol.AgentSpec{Kind: protocol.AgentMock}
	if _, err := Prepare(c, PrepareOptions{}); !errors.Is(err, ErrNoMockAgent) {
		t.Fatalf("err = %v, want ErrNoMockAgent", err)
	}
}

func TestPiPreparesAPlaceholderArgv(t *testing.T) {
	c := contractFixture()
	c.Agent = protocol.AgentSpec{Kind: protocol.AgentPi}
	c.Execution = &protocol.ExecutionSpec{Kind: protocol.ExecAgent, Agent: &protocol.AgentSpec{Kind: protocol.AgentPi}, Prompt: "fix the bug"}
	e := mustPrepare(t, c)
	if e.Kind != protocol.ExecArgv {
		t.Fatalf("kind %q", e.Kind)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(mustHash(t, e)) {
		t.Fatalf("hash %q", mustHash(t, e))
	}
}

func TestExecutionHashRecordsTheShape(t *testing.T) {
	shellC := contractFixture()
	shellC.Execution = &protocol.ExecutionSpec{Kind: protocol.ExecShell, Script: "echo hi"}
	argvC := contractFixture()
	argvC.Execution = &protocol.ExecutionSpec{Kind: protocol.ExecArgv, Command: "echo", Args: []string{"hi"}}
	shell, argv := mustPrepare(t, shellC), mustPrepare(t, argvC)
	// The hashes of the canonical JSON the original runner hashes:
	//   {"args":["hi"],"cmd":"echo","cwd":".","kind":"argv"}
	//   {"cwd":".","kind":"shell","script":"echo hi","shell":"sh"}
	if got, want := mustHash(t, argv), "df47fc9dd9fe1615c5b3584ff39ff42bf7123ba14b3702610ddd79a392c9ac3d"; got != want {
		t.Fatalf("argv hash %s, want %s", got, want)
	}
	if got, want := mustHash(t, shell), "eb440e2fd75e092f28505ef6f9d13da1fb3d913170b60cc5955ac50e7ba713b8"; got != want {
		t.Fatalf("shell hash %s, want %s", got, want)
	}
	cwdC := contractFixture()
	cwdC.Execution = &protocol.ExecutionSpec{Kind: protocol.ExecArgv, Command: "echo", Args: []string{"hi"}, Cwd: "sub"}
	if mustHash(t, mustPrepare(t, cwdC)) == mustHash(t, argv) {
		t.Fatal("cwd does not change the hash")
	}
}

func TestTimeoutFromSpecThenBudgetThenDefault(t *testing.T) {
	ms := int64(1500)
	mins := 2.5
	c := contractFixture()
	c.Budget.MaxDurationMin = &mins
	if got := mustPrepare(t, c).Timeout; got != 150*time.Second {
		t.Fatalf("budget timeout %v, want 2m30s", got)
	}
	c.Execution = &protocol.ExecutionSpec{Kind: protocol.ExecShell, Script: "true", TimeoutMs: &ms}
	if got := mustPrepare(t, c).Timeout; got != 1500*time.Millisecond {
		t.Fatalf("spec timeout %v, want 1.5s", got)
	}
}

func TestLogCapAndCwdAndEgressFromSpec(t *testing.T) {
	max := int64(4096)
	off := false
	c := contractFixture()
	c.Execution = &protocol.ExecutionSpec{
		Kind: protocol.ExecArgv, Command: "ls", Cwd: "src",
		Log: &protocol.ExecutionLog{Stdout: "capture", Stderr: "merge", MaxBytes: &max},
		Env: &protocol.ExecutionEnv{EgressProxy: &off},
	}
	e := mustPrepare(t, c)
	if e.LogMaxBytes != 4096 || e.Cwd != "src" || e.EgressProxy {
		t.Fatalf("prepared %+v", e)
	}
	// An agent execution always runs at the workspace root.
	c.Execution = &protocol.ExecutionSpec{Kind: protocol.ExecAgent, Agent: &protocol.AgentSpec{Kind: protocol.AgentCodex}, Prompt: "x"}
	if e := mustPrepare(t, c); e.Cwd != "." || !e.EgressProxy {
		t.Fatalf("agent execution cwd %q proxy %v", e.Cwd, e.EgressProxy)
	}
}

func TestEnvResolution(t *testing.T) {
	host := map[string]string{"LANG": "C.UTF-8", "SECRET_ON_HOST": "host-value"}
	c := contractFixture()
	c.Execution = &protocol.ExecutionSpec{Kind: protocol.ExecShell, Script: "env", Env: &protocol.ExecutionEnv{
		Inherit: []string{"LANG", "NOT_SET"},
		Vars:    map[string]string{"MODE": "ci", "API_KEY": "literal-loses"},
		Secrets: []protocol.EnvSecret{
			{Env: "API_KEY", SecretName: "vendor_key"},
			{Env: "DB_PASSWORD", SecretName: "db"}, // not released
			{Env: "MODE", SecretName: "unreleased"},
		},
	}}
	e, err := Prepare(c, PrepareOptions{LookupEnv: func(k string) (string, bool) { v, ok := host[k]; return v, ok }})
	if err != nil {
		t.Fatal(err)
	}
	got := ResolveEnv(e, []Secret{{Name: "vendor_key", Value: "sk-live-123"}, {Name: "MOCK_SECRET", Value: "s3cr3t"}})
	want := map[string]string{
		"LANG":        "C.UTF-8",
		"API_KEY":     "sk-live-123",
		"vendor_key":  "sk-live-123", // released secrets are injected by name too
		"MOCK_SECRET": "s3cr3t",
	}
	if len(got) != len(want) {
		t.Fatalf("resolved %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	for k, v := range got {
		if regexp.MustCompile(`(?i)warrant|secret:|placeholder`).MatchString(v) {
			t.Fatalf("%s carries a marker %q", k, v)
		}
	}
	if _, ok := got["DB_PASSWORD"]; ok {
		t.Fatal("a mapping to an unreleased secret is present")
	}
	if _, ok := got["MODE"]; ok {
		t.Fatal("a literal shadowed by an unreleased secret mapping leaked through")
	}
	if _, ok := got["SECRET_ON_HOST"]; ok {
		t.Fatal("a host variable not inherited leaked")
	}
	env := Environ(got)
	if !slices.IsSorted(env) || len(env) != len(got) {
		t.Fatalf("Environ %q", env)
	}
}

func TestInvalidEnvNamesAreRefused(t *testing.T) {
	c := contractFixture()
	c.Execution = &protocol.ExecutionSpec{Kind: protocol.ExecShell, Script: "env", Env: &protocol.ExecutionEnv{Vars: map[string]string{"A=B": "x"}}}
	if _, err := Prepare(c, PrepareOptions{}); err == nil {
		t.Fatal("a variable name with '=' was accepted")
	}
}
