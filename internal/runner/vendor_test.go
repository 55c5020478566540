package runner_test

import (
	"context"
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

// claudeCode installs Claude Code from the npm registry into a cache
// directory reused across test runs and returns the directory holding the
// claude executable. Without the registry the test is skipped, loudly,
// except in CI, where it fails.
func claudeCode(t *testing.T) string {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf(format, args...)
		}
		t.Skipf("SKIPPING THE REAL VENDOR CLI TEST: "+format, args...)
	}
	home, err := os.UserHomeDir()
	if err != nil {
		unavailable("no home directory for the npm cache: %v", err)
	}
	dir := filepath.Join(home, ".cache", "warrant-test", "npm")
	bin := filepath.Join(dir, "node_modules", ".bin")
	if _, err := os.Stat(filepath.Join(bin, "claude")); err == nil {
		return bin
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		unavailable("npm is not installed: %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, npm, "install", "--prefix", dir, "--no-audit", "--no-fund", "--loglevel=error", "@anthropic-ai/claude-code").CombinedOutput()
	if err != nil {
		unavailable("npm install @anthropic-ai/claude-code failed (is the npm registry reachable?): %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(bin, "claude")); err != nil {
		t.Fatalf("npm installed Claude Code but there is no claude executable: %v\n%s", err, out)
	}
	return bin
}

// TestRealClaudeCodeIsGoverned runs the real Claude Code CLI as the
// claude-code agent with a dummy API key and no allowed hosts: its attempt
// to reach its API is blocked and recorded, and the key's value appears in
// no artifact, event or receipt.
func TestRealClaudeCodeIsGoverned(t *testing.T) {
	t.Parallel()
	bin := claudeCode(t)
	const key = "sk-ant-api03-warrantDummyKey0123456789abcdef"
	tp := testutil.StartPlane(t)
	allowSecret(t, tp, "ANTHROPIC_API_KEY", key)
	tr := startRunner(t, tp, withOptions(func(o *runner.Options) {
		o.Backends = []session.Backend{process.New(process.Options{Path: bin + string(os.PathListSeparator) + os.Getenv("PATH")})}
	}))
	id := submit(t, tp.Admin, client.RunRequest{
		Agent:   protocol.AgentSpec{Kind: protocol.AgentClaudeCode},
		Prompt:  "Create a file named HELLO.md that says hello.",
		Secrets: []string{"ANTHROPIC_API_KEY"},
	})
	run := waitState(t, tp.Admin, id, 90*time.Second, protocol.StateCompleted, protocol.StateFailed, protocol.StateCancelled)
	b, raw := verifiedBundle(t, tp, id)
	t.Logf("run %s %s %+v; network %+v", id, run.State, run.Failure, b.Receipt.NetworkAccessed)

	exec := payloads[protocol.CommandExecuted](t, b.Events)
	if len(exec) != 1 || exec[0].ExitCode == 127 {
		t.Fatalf("claude did not run: %+v", exec)
	}
	blocked := false
	for _, n := range b.Receipt.NetworkAccessed {
		if n.Decision == protocol.DecisionAllowed {
			t.Errorf("%s was allowed with an empty allowlist", n.Host)
		}
		blocked = blocked || (n.Host == "api.anthropic.com" && n.Decision == protocol.DecisionBlocked)
	}
	if !blocked {
		t.Fatalf("no blocked attempt to reach api.anthropic.com in %+v", b.Receipt.NetworkAccessed)
	}
	scan := [][]byte{raw, []byte(tr.Log.String())}
	for _, h := range b.Receipt.WorkspaceOut.ArtifactHashes {
		scan = append(scan, blob(t, tp, h))
	}
	for i, data := range scan {
		if strings.Contains(string(data), key) || strings.Contains(string(data), "warrantDummyKey") {
			t.Fatalf("the API key appears in scanned item %d", i)
		}
	}
}
