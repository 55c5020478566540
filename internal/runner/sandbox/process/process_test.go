package process

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"warrant.dev/warrant/internal/runner/mockagent"
	"warrant.dev/warrant/internal/runner/session"
	"warrant.dev/warrant/protocol"
)

// The test binary doubles as the mock agent: run with this first
// argument, it is the agent and nothing else.
const agentArg = "process-test-mock-agent"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == agentArg {
		os.Exit(mockagent.Main(context.Background(), os.Args[2:], mockagent.Env{Getenv: os.Getenv, Stdout: os.Stdout, Stderr: os.Stderr}))
	}
	os.Exit(m.Run())
}

func contract(agent, prompt string, allow ...string) *protocol.Contract {
	return &protocol.Contract{
		Version: protocol.VersionContract,
		RunID:   "run_proc",
		Agent:   protocol.AgentSpec{Kind: agent},
		Task:    protocol.TaskSpec{Prompt: prompt},
		Network: protocol.NetworkPolicy{DefaultDeny: true, AllowHosts: allow},
	}
}

type recorder struct {
	mu     sync.Mutex
	events []protocol.EventPayload
	fail   atomic.Bool
}

func (r *recorder) record(p protocol.EventPayload) error {
	if r.fail.Load() {
		return errors.New("chain closed")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, p)
	return nil
}

func (r *recorder) network() []protocol.NetworkConnected {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []protocol.NetworkConnected
	for _, e := range r.events {
		if n, ok := e.(protocol.NetworkConnected); ok {
			out = append(out, n)
		}
	}
	return out
}

type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type ran struct {
	res    session.Result
	log    string
	rec    *recorder
	ws     string
	runErr error
}

func run(t *testing.T, b *Backend, c *protocol.Contract, secrets []session.Secret, rec *recorder) ran {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	e, err := session.Prepare(c, session.PrepareOptions{MockAgent: []string{self, agentArg}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Check(c, e); err != nil {
		t.Fatal(err)
	}
	if rec == nil {
		rec = &recorder{}
	}
	dir := t.TempDir()
	ws := filepath.Join(dir, "ws")
	if err := os.Mkdir(ws, 0o755); err != nil {
		t.Fatal(err)
	}
	var log logBuf
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := b.Run(ctx, &session.Session{
		RunID: c.RunID, Contract: c, Execution: e, Workspace: ws,
		ScratchDir: filepath.Join(dir, "scratch"), Secrets: secrets,
		Log: &log, Record: rec.record, KillGrace: time.Second,
	})
	return ran{res: res, log: log.String(), rec: rec, ws: ws, runErr: err}
}

func TestScrubbedEnvironment(t *testing.T) {
	t.Setenv("RUNNER_ONLY_SECRET", "must-not-reach-the-session")
	c := contract(protocol.AgentCommand, "env")
	c.Execution = &protocol.ExecutionSpec{Kind: protocol.ExecShell, Script: "env", Env: &protocol.ExecutionEnv{
		Vars:    map[string]string{"MODE": "test", "HTTP_PROXY": "http://bypass.example:1"},
		Secrets: []protocol.EnvSecret{{Env: "API_KEY", SecretName: "vendor"}, {Env: "MISSING", SecretName: "not_released"}},
	}}
	r := run(t, New(Options{Path: "/usr/bin:/bin"}), c, []session.Secret{{Name: "vendor", Value: "sk-123"}}, nil)
	if r.runErr != nil || r.res.ExitCode != 0 {
		t.Fatalf("run: %+v %v\n%s", r.res, r.runErr, r.log)
	}
	env := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(r.log), "\n") {
		k, v, _ := strings.Cut(line, "=")
		env[k] = v
	}
	want := []string{"PATH", "HOME", "TMPDIR", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "MODE", "API_KEY", "vendor", session.MarkerEnv}
	for _, k := range want {
		if _, ok := env[k]; !ok {
			t.Errorf("%s missing from the session environment", k)
		}
	}
	for k := range env {
		switch k {
		case "PWD", "SHLVL", "_", "OLDPWD": // set by the shell itself
			continue
		}
		found := false
		for _, w := range want {
			found = found || w == k
		}
		if !found {
			t.Errorf("unexpected variable %s=%q in the session environment", k, env[k])
		}
	}
	if env["PATH"] != "/usr/bin:/bin" || env["API_KEY"] != "sk-123" || env["MODE"] != "test" {
		t.Errorf("env %v", env)
	}
	if !strings.HasPrefix(env["HTTP_PROXY"], "http://127.0.0.1:") {
		t.Errorf("HTTP_PROXY = %q: the contract's variable must not bypass the session proxy", env["HTTP_PROXY"])
	}
	if !strings.HasPrefix(env["HOME"], filepath.Dir(r.ws)) || strings.HasPrefix(env["HOME"], r.ws) {
		t.Errorf("HOME %q is not the session's private home outside the workspace %q", env["HOME"], r.ws)
	}
}

func TestEgressDecisionsAreRecorded(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprint(w, "hello from upstream")
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	port := u.Port()

	probe := func(t *testing.T, host string, allow []string) ran {
		c := contract(protocol.AgentMock, "network please", allow...)
		c.Execution = &protocol.ExecutionSpec{Kind: protocol.ExecAgent, Agent: &protocol.AgentSpec{Kind: protocol.AgentMock}, Prompt: "network please",
			Env: &protocol.ExecutionEnv{Vars: map[string]string{"MOCK_PROBE_HOST": host}}}
		r := run(t, New(Options{}), c, nil, nil)
		if r.runErr != nil || r.res.ExitCode != 0 {
			t.Fatalf("run: %+v %v\n%s", r.res, r.runErr, r.log)
		}
		return r
	}
	t.Run("denied by default", func(t *testing.T) {
		r := probe(t, "denied.example.com", nil)
		if got := r.rec.network(); len(got) != 1 || got[0] != (protocol.NetworkConnected{Host: "denied.example.com", Decision: "blocked"}) {
			t.Fatalf("events %+v", got)
		}
		if !strings.Contains(r.log, "network probe status: 403") {
			t.Fatalf("log %q", r.log)
		}
	})
	t.Run("allowlisted IP literal", func(t *testing.T) {
		before := hits.Load()
		r := probe(t, "127.0.0.1:"+port, []string{"127.0.0.1"})
		if got := r.rec.network(); len(got) != 1 || got[0] != (protocol.NetworkConnected{Host: "127.0.0.1", Decision: "allowed"}) {
			t.Fatalf("events %+v", got)
		}
		if !strings.Contains(r.log, "network probe status: 200") || hits.Load() != before+1 {
			t.Fatalf("upstream not reached: log %q", r.log)
		}
	})
	t.Run("a name resolving to loopback is refused", func(t *testing.T) {
		before := hits.Load()
		r := probe(t, "localhost:"+port, []string{"localhost"})
		if got := r.rec.network(); len(got) != 1 || got[0] != (protocol.NetworkConnected{Host: "localhost", Decision: "blocked"}) {
			t.Fatalf("events %+v", got)
		}
		if hits.Load() != before {
			t.Fatal("upstream reached through a name that resolves to loopback")
		}
	})
	t.Run("fail closed when the decision cannot be recorded", func(t *testing.T) {
		before := hits.Load()
		c := contract(protocol.AgentMock, "network", "127.0.0.1")
		c.Execution = &protocol.ExecutionSpec{Kind: protocol.ExecAgent, Agent: &protocol.AgentSpec{Kind: protocol.AgentMock}, Prompt: "network",
			Env: &protocol.ExecutionEnv{Vars: map[string]string{"MOCK_PROBE_HOST": "127.0.0.1:" + port}}}
		rec := &recorder{}
		rec.fail.Store(true)
		r := run(t, New(Options{}), c, nil, rec)
		if hits.Load() != before {
			t.Fatalf("upstream reached although the decision was not recorded; log %q", r.log)
		}
		if strings.Contains(r.log, "network probe status: 200") {
			t.Fatalf("log %q", r.log)
		}
	})
}

func TestMockAgentReportsSecretWithoutValue(t *testing.T) {
	c := contract(protocol.AgentMock, "say hi")
	r := run(t, New(Options{}), c, []session.Secret{{Name: "MOCK_SECRET", Value: "hunter2-value"}}, nil)
	if r.runErr != nil || r.res.ExitCode != 0 {
		t.Fatalf("%+v %v %s", r.res, r.runErr, r.log)
	}
	data, err := os.ReadFile(filepath.Join(r.ws, "MOCK_AGENT.md"))
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != "## task\nsay hi\n\nsecret:present\n" {
		t.Fatalf("MOCK_AGENT.md = %q", data)
	}
	if strings.Contains(r.log, "hunter2") {
		t.Fatal("the mock agent printed the secret")
	}
	r = run(t, New(Options{}), contract(protocol.AgentMock, "please fail"), nil, nil)
	if r.res.ExitCode != 1 || !strings.Contains(r.log, "mock agent failing as instructed") {
		t.Fatalf("fail task: %+v %q", r.res, r.log)
	}
	data, _ = os.ReadFile(filepath.Join(r.ws, "MOCK_AGENT.md"))
	if !strings.Contains(string(data), "secret:absent") {
		t.Fatalf("MOCK_AGENT.md = %q", data)
	}
}

func TestSpawnFailureAndSessionPath(t *testing.T) {
	c := contract(protocol.AgentCodex, "x") // no codex on the session PATH
	r := run(t, New(Options{Path: t.TempDir()}), c, nil, nil)
	if r.runErr != nil || r.res.ExitCode != session.SpawnFailedExitCode || !strings.Contains(r.log, "spawn error") {
		t.Fatalf("%+v %v %q", r.res, r.runErr, r.log)
	}
}

func TestPiIsRefused(t *testing.T) {
	c := contract(protocol.AgentPi, "x")
	e, err := session.Prepare(c, session.PrepareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := New(Options{}).Check(c, e); !errors.Is(err, session.ErrCapabilityMismatch) {
		t.Fatalf("Check(pi) = %v, want a capability mismatch", err)
	}
	if err := New(Options{}).Check(contract(protocol.AgentCommand, "true"), e); err == nil {
		// e is still pi's placeholder argv
		t.Fatal("a pi execution under a command contract was accepted")
	}
}

func TestCwdEscapeIsRefused(t *testing.T) {
	c := contract(protocol.AgentCommand, "pwd")
	c.Execution = &protocol.ExecutionSpec{Kind: protocol.ExecShell, Script: "pwd", Cwd: "../.."}
	r := run(t, New(Options{}), c, nil, nil)
	if !errors.Is(r.runErr, session.ErrCwdEscape) {
		t.Fatalf("err = %v, want ErrCwdEscape", r.runErr)
	}
}
