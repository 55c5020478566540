package runner_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/runner"
	"warrant.dev/warrant/internal/runner/sandbox/process"
	"warrant.dev/warrant/internal/runner/session"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

// isolationFor is the tier a test's runs ask for, and its in-process
// runners offer besides process: "process", except under
// TestEndToEndSuiteOnNamespace (namespace_e2e_test.go), which runs the
// tier-agnostic tests again with "namespace".
func isolationFor(t testing.TB) string {
	if strings.HasPrefix(t.Name(), namespaceSuite+"/") {
		return protocol.IsolationNamespace
	}
	return protocol.IsolationProcess
}

// warrantBin is the warrant executable built once for the package's
// tests: runners started as child processes, and the mock agent
// (`warrant agent mock`) of in-process runners.
var warrantBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "warrant-runner-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	warrantBin = filepath.Join(dir, "warrant")
	build := exec.Command("go", "build", "-o", warrantBin, "warrant.dev/warrant/cmd/warrant")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build warrant:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// logBuffer captures a runner's log lines, and copies them to t.Log.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	t   testing.TB
	end bool
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if !l.end {
		l.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// testRunner is an in-process runner running in the background.
type testRunner struct {
	*runner.Runner
	DataDir string
	Log     *logBuffer

	mu       sync.Mutex
	claimed  []string
	finished map[string]string
}

type runnerOption func(*runner.Options)

func withOptions(f func(*runner.Options)) runnerOption { return f }

// startRunner enrolls an in-process runner into pool "default" and runs it
// until the test ends.
func startRunner(t *testing.T, tp *testutil.TestPlane, opts ...runnerOption) *testRunner {
	t.Helper()
	tr := newRunner(t, tp, opts...)
	tr.start(t)
	return tr
}

func newRunner(t *testing.T, tp *testutil.TestPlane, opts ...runnerOption) *testRunner {
	t.Helper()
	lb := &logBuffer{t: t}
	t.Cleanup(func() { lb.mu.Lock(); lb.end = true; lb.mu.Unlock() })
	tr := &testRunner{DataDir: t.TempDir(), Log: lb, finished: map[string]string{}}
	o := runner.Options{
		PlaneURL:    tp.URL,
		Pool:        "default",
		DataDir:     tr.DataDir,
		EnrollToken: tp.EnrollToken("default"),
		Name:        "test-runner",
		Backends:    []session.Backend{process.New(process.Options{})},
		WarrantPath: warrantBin,
		Logger:      slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})),
		ClaimWait:   time.Second,
		KillGrace:   500 * time.Millisecond,
		Hooks: runner.Hooks{
			Claimed: func(id string) {
				tr.mu.Lock()
				tr.claimed = append(tr.claimed, id)
				tr.mu.Unlock()
			},
			Finished: func(id, status string) {
				tr.mu.Lock()
				tr.finished[id] = status
				tr.mu.Unlock()
			},
		},
	}
	if isolationFor(t) == protocol.IsolationNamespace {
		o.Backends = append(o.Backends, namespaceBackend(t))
	}
	for _, f := range opts {
		f(&o)
	}
	r, err := runner.New(o)
	if err != nil {
		t.Fatal(err)
	}
	tr.Runner = r
	return tr
}

func (tr *testRunner) start(t *testing.T) {
	testutil.RunRunner(t, tr.Runner, 30*time.Second)
}

func (tr *testRunner) claimedRuns() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]string(nil), tr.claimed...)
}

// workspace uploads a small workspace.
func workspace(t testing.TB, c *client.Client) protocol.Manifest {
	return testutil.UploadWorkspace(t, c, map[string]string{"README.md": "hello\n", "src/main.go": "package main\n"})
}

// submit submits a run and returns its id.
func submit(t *testing.T, c *client.Client, req client.RunRequest) string {
	t.Helper()
	if req.Pool == "" {
		req.Pool = "default"
	}
	if req.Isolation == "" {
		req.Isolation = isolationFor(t)
	}
	if req.Workspace.Version == "" {
		req.Workspace = workspace(t, c)
	}
	resp, err := c.SubmitRun(context.Background(), req)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	if resp.Run == nil {
		t.Fatalf("submit returned no run: %+v", resp)
	}
	return resp.Run.ID
}

func mockRun(prompt string) client.RunRequest {
	return client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentMock}, Prompt: prompt}
}

func commandRun(script string) client.RunRequest {
	return client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentCommand}, Prompt: script}
}

// waitState polls until the run is in one of states.
func waitState(t *testing.T, c *client.Client, id string, timeout time.Duration, states ...string) *client.Run {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		run, err := c.GetRun(context.Background(), id)
		if err != nil {
			t.Fatalf("get run %s: %v", id, err)
		}
		for _, s := range states {
			if run.State == s {
				return run
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s is %s after %s, want one of %v", id, run.State, timeout, states)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitEnded waits for the run to end and returns it with its receipt.
func waitEnded(t *testing.T, c *client.Client, id string) *client.Run {
	t.Helper()
	return waitState(t, c, id, 60*time.Second, protocol.StateCompleted, protocol.StateFailed, protocol.StateCancelled)
}

// verifiedBundle fetches the run's bundle and verifies it with only the
// plane key pinned.
func verifiedBundle(t *testing.T, tp *testutil.TestPlane, id string) (*protocol.Bundle, []byte) {
	t.Helper()
	b, raw, err := tp.Admin.Bundle(context.Background(), id)
	if err != nil {
		t.Fatalf("bundle: %v", err)
	}
	rep := protocol.VerifyBundle(b, tp.Trust())
	if !rep.Trusted() {
		t.Fatalf("bundle of %s not trusted: %v", id, rep.Err())
	}
	return b, raw
}

// eventTypes lists the event types of a chain.
func eventTypes(events []protocol.ChainedEvent) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.Event.Type()
	}
	return out
}

// payloads returns the decoded payloads of the events of type typ.
func payloads[T protocol.EventPayload](t *testing.T, events []protocol.ChainedEvent) []T {
	t.Helper()
	var out []T
	for _, e := range events {
		p, err := e.Event.Payload()
		if err != nil {
			continue
		}
		if v, ok := p.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// blob downloads a blob as admin.
func blob(t *testing.T, tp *testutil.TestPlane, hash string) []byte {
	t.Helper()
	rc, err := tp.Admin.GetBlob(context.Background(), hash)
	if err != nil {
		t.Fatalf("get blob %s: %v", hash, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// artifact returns the content of the run's artifact of kind.
func artifact(t *testing.T, tp *testutil.TestPlane, events []protocol.ChainedEvent, kind string) []byte {
	t.Helper()
	for _, a := range payloads[protocol.ArtifactCreated](t, events) {
		if a.Kind == kind {
			return blob(t, tp, a.Hash)
		}
	}
	t.Fatalf("no %s artifact in %v", kind, eventTypes(events))
	return nil
}

// processAlive reports whether pid is a live (non-zombie) process.
func processAlive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

// readPids waits until file lists n pids.
func readPids(t *testing.T, file string, n int, timeout time.Duration) []int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		data, _ := os.ReadFile(file)
		fields := strings.Fields(string(data))
		if len(fields) >= n {
			var pids []int
			for _, f := range fields {
				p, err := strconv.Atoi(f)
				if err != nil {
					t.Fatalf("pid file %q", data)
				}
				pids = append(pids, p)
			}
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid file has %d of %d pids: %q", len(fields), n, data)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func assertDead(t *testing.T, pids []int) {
	t.Helper()
	for _, p := range pids {
		if processAlive(p) {
			t.Errorf("pid %d survived the session", p)
			_ = exec.Command("kill", "-9", strconv.Itoa(p)).Run()
		}
	}
}
