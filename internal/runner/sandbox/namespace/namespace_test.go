//go:build linux

package namespace

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"warrant.dev/warrant/internal/runner/sandbox/namespace/nstest"
	"warrant.dev/warrant/internal/runner/session"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

func TestScrubbedEnvironment(t *testing.T) {
	t.Setenv("RUNNER_ONLY_SECRET", "must-not-reach-the-session")
	c := contract(protocol.AgentCommand, "env")
	c.Execution = &protocol.ExecutionSpec{Kind: protocol.ExecShell, Script: "env", Env: &protocol.ExecutionEnv{
		Vars:    map[string]string{"MODE": "test", "HTTP_PROXY": "http://bypass.example:1"},
		Secrets: []protocol.EnvSecret{{Env: "API_KEY", SecretName: "vendor"}, {Env: "MISSING", SecretName: "not_released"}},
	}}
	r := run(t, newBackend(t, Options{Path: "/usr/bin:/bin"}), c, runOpts{secrets: []session.Secret{{Name: "vendor", Value: "sk-123"}}}).ok(t)
	env := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(r.log), "\n") {
		k, v, _ := strings.Cut(line, "=")
		env[k] = v
	}
	want := []string{"PATH", "HOME", "TMPDIR", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "MODE", "API_KEY", "vendor"}
	for _, k := range want {
		if _, ok := env[k]; !ok {
			t.Errorf("%s missing from the session environment", k)
		}
	}
	for k := range env {
		switch k {
		case "PWD", "SHLVL", "_", "OLDPWD":
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
	if env["HOME"] != SandboxHome || env["TMPDIR"] != SandboxTmp || env["PWD"] != SandboxWorkspace {
		t.Errorf("HOME %q TMPDIR %q PWD %q", env["HOME"], env["TMPDIR"], env["PWD"])
	}
	if !strings.HasPrefix(env["HTTP_PROXY"], "http://127.0.0.1:") || env["HTTPS_PROXY"] != env["HTTP_PROXY"] {
		t.Errorf("HTTP_PROXY = %q: the contract's variable must not bypass the session proxy", env["HTTP_PROXY"])
	}
}

func TestIdentityAndNamespaces(t *testing.T) {
	r := run(t, newBackend(t, Options{Hostname: "sess-host"}), shell(`
id -u; id -g; hostname; echo "pid1=$(cat /proc/1/comm)"; echo "self=$$"
grep -c . /proc/net/dev
grep CapEff /proc/self/status; grep NoNewPrivs /proc/self/status; grep Seccomp: /proc/self/status
ls /proc | grep -c '^[0-9]'
`), runOpts{}).ok(t)
	lines := strings.Split(strings.TrimSpace(r.log), "\n")
	if len(lines) < 10 {
		t.Fatalf("log %q", r.log)
	}
	if lines[0] != "1000" || lines[1] != "1000" {
		t.Errorf("uid/gid %s/%s, want 1000/1000", lines[0], lines[1])
	}
	if lines[2] != "sess-host" {
		t.Errorf("hostname %q: the session has no UTS namespace of its own", lines[2])
	}
	if !strings.HasPrefix(lines[3], "pid1=") || lines[3] == "pid1=systemd" || lines[3] == "pid1=init" {
		t.Errorf("%s: PID 1 is not the session's init", lines[3])
	}
	if lines[5] != "3" { // two header lines and lo
		t.Errorf("/proc/net/dev has %s lines: the network namespace must hold only lo", lines[5])
	}
	if !strings.Contains(lines[6], "0000000000000000") {
		t.Errorf("%s: the harness has capabilities", lines[6])
	}
	if !strings.HasSuffix(lines[7], "1") {
		t.Errorf("%s: no_new_privs is not set", lines[7])
	}
	if !strings.HasSuffix(lines[8], "2") {
		t.Errorf("%s: no seccomp filter", lines[8])
	}
	if n := lines[9]; n == "" || len(n) > 2 {
		t.Errorf("/proc shows %s processes: it is not the session's own", n)
	}
}

func TestWritingOutsideTheWorkspaceFails(t *testing.T) {
	r := run(t, newBackend(t, Options{}), shell(`
for p in /usr/x /usr/bin/x /etc/x /etc/passwd /x /run/x /run/warrant/bin/warrant /dev/x /proc/x /proc/sys/kernel/hostname /sys/x /home/x /lib/x; do
  if (echo pwned > "$p") 2>/dev/null; then echo "WROTE $p"; fi
done
mount -o remount,rw /usr 2>/dev/null && echo "REMOUNTED /usr"
unshare -Urm sh -c 'mount -o remount,rw,bind /usr && touch /usr/escaped && echo "ESCAPED through a nested user namespace"' 2>/dev/null
echo ok > /workspace/in-workspace && echo ok > /tmp/in-tmp && echo ok > "$HOME/in-home" && echo writable-ok
`), runOpts{}).ok(t)
	if strings.Contains(r.log, "WROTE") || strings.Contains(r.log, "REMOUNTED") || strings.Contains(r.log, "ESCAPED") {
		t.Fatalf("the session wrote outside its workspace:\n%s", r.log)
	}
	if !strings.Contains(r.log, "writable-ok") {
		t.Fatalf("the workspace, /tmp and HOME must be writable:\n%s", r.log)
	}
	for _, p := range []string{filepath.Join(r.ws, "in-workspace"), filepath.Join(r.scratch, "tmp", "in-tmp"), filepath.Join(r.scratch, "home", "in-home")} {
		if data, err := os.ReadFile(p); err != nil || string(data) != "ok\n" {
			t.Errorf("%s: %q %v (the session's writable paths must be the runner's session directories)", p, data, err)
		}
	}
	if _, err := os.Stat("/usr/escaped"); err == nil {
		t.Fatal("/usr/escaped exists on the host")
	}
}

func TestHostSecretsAreInvisible(t *testing.T) {
	// A runner data directory as the runner lays it out: its key, and the
	// session's workspace inside it.
	data := filepath.Join(t.TempDir(), "runner")
	ws := filepath.Join(data, "sessions", "run_ns", "workspace")
	other := filepath.Join(data, "sessions", "run_other", "workspace")
	for _, d := range []string{ws, other} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	key := filepath.Join(data, "runner.key")
	if err := os.WriteFile(key, []byte("-----BEGIN PRIVATE KEY----- runner-secret-material"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(other, "theirs.txt"), []byte("other-session-data"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := run(t, newBackend(t, Options{}), shell(`
for p in "`+key+`" "/proc/1/root`+key+`" /workspace/../runner.key /workspace/../../runner.key "`+filepath.Join(other, "theirs.txt")+`" /etc/shadow /etc/ssl/private /root /var/lib; do
  cat "$p" 2>/dev/null && echo "READ $p"
  ls "$p" 2>/dev/null | head -3
done
ls -a /workspace/..
echo done
`), runOpts{workspace: ws}).ok(t)
	for _, leak := range []string{"runner-secret-material", "other-session-data", "READ"} {
		if strings.Contains(r.log, leak) {
			t.Fatalf("the session saw %q:\n%s", leak, r.log)
		}
	}
	if !strings.Contains(r.log, "done") {
		t.Fatal(r.log)
	}
}

func TestDirectNetworkHasNoRoute(t *testing.T) {
	host, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := host.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	b := newBackend(t, Options{})
	// Every target is the runner's loopback or a network namespace this
	// test makes: were the sandbox broken, nothing would leave the host.
	tn := nstest.NewTestNet(t)
	outside := tn.ServerIP.String()

	t.Run("TCP to the host's loopback", func(t *testing.T) {
		r := run(t, b, helper("tcp", host.Addr().String()), runOpts{})
		if r.runErr != nil || r.res.ExitCode != 1 || !strings.Contains(r.log, "connection refused") {
			t.Fatalf("the connection did not fail as it should: %+v %v\n%s", r.res, r.runErr, r.log)
		}
		if accepted.Load() != 0 {
			t.Fatal("the host's loopback server accepted a connection from the session")
		}
	})
	t.Run("DNS", func(t *testing.T) {
		r := run(t, b, helper("dns", "example.com", outside), runOpts{}).ok(t)
		if !strings.Contains(r.log, "lookup example.com: [] ") || strings.Contains(r.log, "lookup example.com: [] <nil>") {
			t.Fatalf("the name resolved:\n%s", r.log)
		}
		if !strings.Contains(r.log, "udp dns: dial udp "+outside+":53: connect: network is unreachable") {
			t.Fatalf("a raw DNS query found a route:\n%s", r.log)
		}
	})
	t.Run("raw and ICMP sockets", func(t *testing.T) {
		r := run(t, b, helper("raw", outside), runOpts{}).ok(t)
		if !strings.Contains(r.log, "raw socket: operation not permitted") {
			t.Fatalf("a raw socket was opened:\n%s", r.log)
		}
		if !strings.Contains(r.log, "icmp socket: permission denied") && !strings.Contains(r.log, "icmp send: network is unreachable") {
			t.Fatalf("an ICMP datagram got out:\n%s", r.log)
		}
	})
	t.Run("seccomp", func(t *testing.T) {
		r := run(t, b, helper("keyctl"), runOpts{}).ok(t)
		if !strings.Contains(r.log, "keyctl: operation not permitted") || !strings.Contains(r.log, "bpf: operation not permitted") {
			t.Fatalf("a denied system call was allowed:\n%s", r.log)
		}
	})
}

func TestEgressThroughTheProxy(t *testing.T) {
	testutil.CheckGoroutines(t) // the bridge and the proxy end with the session
	requireNamespaces(t)
	tn := nstest.NewTestNet(t)
	b := newBackend(t, Options{AllowPrefixes: []netip.Prefix{tn.Prefix}})
	allowed := tn.ServerIP.String()

	t.Run("curl with the proxy variables reaches the allowlisted host", func(t *testing.T) {
		before := tn.Hits()
		r := run(t, b, shell(`curl -sS --max-time 10 `+tn.URL+`/plain; echo; curl -sS -p --max-time 10 `+tn.URL+`/tunnel; echo`, allowed), runOpts{}).ok(t)
		if strings.Count(r.log, nstest.Greeting) != 2 || tn.Hits() != before+2 {
			t.Fatalf("the allowlisted host was not reached (plain and CONNECT):\n%s", r.log)
		}
		want := protocol.NetworkConnected{Host: allowed, Decision: "allowed"}
		if got := r.rec.network(); len(got) != 2 || got[0] != want || got[1] != want {
			t.Fatalf("events %+v", got)
		}
	})
	t.Run("a host off the allowlist is blocked", func(t *testing.T) {
		before := tn.Hits()
		r := run(t, b, shell(`curl -sS --max-time 10 -o /dev/null -w '%{http_code}\n' http://denied.example.com/; curl -sS --max-time 10 -o /dev/null -w '%{http_code}\n' `+tn.URL+`/`), runOpts{})
		if got := r.rec.network(); len(got) != 2 || got[0] != (protocol.NetworkConnected{Host: "denied.example.com", Decision: "blocked"}) ||
			got[1] != (protocol.NetworkConnected{Host: allowed, Decision: "blocked"}) {
			t.Fatalf("events %+v", got)
		}
		if strings.Count(r.log, "403") != 2 || tn.Hits() != before {
			t.Fatalf("log %q", r.log)
		}
	})
	t.Run("curl without the proxy variables has no route", func(t *testing.T) {
		before := tn.Hits()
		r := run(t, b, shell(`unset HTTP_PROXY HTTPS_PROXY ALL_PROXY http_proxy https_proxy all_proxy; curl -sS --max-time 10 `+tn.URL+`/direct`, allowed), runOpts{})
		if r.runErr != nil || r.res.ExitCode == 0 || tn.Hits() != before {
			t.Fatalf("the allowlisted host was reached around the proxy: %+v\n%s", r.res, r.log)
		}
		if !strings.Contains(r.log, "Couldn't connect") && !strings.Contains(r.log, "unreachable") {
			t.Fatalf("log %q", r.log)
		}
		if got := r.rec.network(); len(got) != 0 {
			t.Fatalf("events %+v", got)
		}
	})
	t.Run("fail closed when the decision cannot be recorded", func(t *testing.T) {
		before := tn.Hits()
		rec := &recorder{}
		rec.fail.Store(true)
		r := run(t, b, shell(`curl -sS --max-time 10 `+tn.URL+`/`, allowed), runOpts{rec: rec})
		if tn.Hits() != before || strings.Contains(r.log, nstest.Greeting) {
			t.Fatalf("upstream reached although the decision was not recorded; log %q", r.log)
		}
	})
	t.Run("the mock agent's probe is recorded", func(t *testing.T) {
		c := contract(protocol.AgentMock, "network please", allowed)
		c.Execution = &protocol.ExecutionSpec{Kind: protocol.ExecAgent, Agent: &protocol.AgentSpec{Kind: protocol.AgentMock}, Prompt: "network please",
			Env: &protocol.ExecutionEnv{Vars: map[string]string{"MOCK_PROBE_HOST": allowed + ":8080"}}}
		r := run(t, b, c, runOpts{}).ok(t)
		if got := r.rec.network(); len(got) != 1 || got[0] != (protocol.NetworkConnected{Host: allowed, Decision: "allowed"}) {
			t.Fatalf("events %+v", got)
		}
		if !strings.Contains(r.log, "network probe status: 200") {
			t.Fatalf("log %q", r.log)
		}
	})
}

func TestProxyRefusesTheHostLoopback(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	c := contract(protocol.AgentMock, "network please", "localhost")
	c.Execution = &protocol.ExecutionSpec{Kind: protocol.ExecAgent, Agent: &protocol.AgentSpec{Kind: protocol.AgentMock}, Prompt: "network please",
		Env: &protocol.ExecutionEnv{Vars: map[string]string{"MOCK_PROBE_HOST": "localhost:" + u.Port()}}}
	r := run(t, newBackend(t, Options{}), c, runOpts{}).ok(t)
	if got := r.rec.network(); len(got) != 1 || got[0] != (protocol.NetworkConnected{Host: "localhost", Decision: "blocked"}) {
		t.Fatalf("events %+v", got)
	}
	if hits.Load() != 0 {
		t.Fatal("the runner's loopback was reached through the proxy")
	}
}

func TestForkBombIsContained(t *testing.T) {
	b := newBackend(t, Options{Limits: Limits{Pids: 64, CPUs: 0.5}})
	// The bomb starts in a subshell (a refused fork there must not end the
	// session); the loop is a builtin and forks nothing. The marker, in
	// every bomb's command line, tells this test's processes from those
	// of other tests running the same script at the same time.
	marker := fmt.Sprintf("bomb%d", rand.Int64())
	c := shell(marker + `() { ` + marker + ` | ` + marker + ` & }; (` + marker + `); while :; do :; done`)
	c.Execution.TimeoutMs = ptr(int64(2000))
	r := run(t, b, c, runOpts{})
	if r.runErr != nil || r.res.End != session.TimedOut {
		t.Fatalf("%+v %v", r.res, r.runErr)
	}
	if !strings.Contains(r.log, "[warrant: the session reached its limit of 64 processes;") {
		t.Fatalf("the pids limit was not what stopped the bomb:\n%s", r.log)
	}
	if left := nstest.ProcessesWith(marker); len(left) > 0 {
		t.Fatalf("processes left behind: %v", left)
	}
}

func TestMemoryHogIsKilled(t *testing.T) {
	b := newBackend(t, Options{Limits: Limits{MemoryBytes: 128 << 20}})
	r := run(t, b, helper("hog", "1024"), runOpts{})
	if r.runErr != nil || r.res.End != session.MemoryLimit || r.res.Detail != "128 MiB" {
		t.Fatalf("%+v %v", r.res, r.runErr)
	}
	if strings.Contains(r.log, "hog: survived") || !strings.Contains(r.log, "went over its memory limit of 128 MiB") {
		t.Fatalf("log %q", r.log)
	}
}

func TestKillingTheSessionLeavesNothing(t *testing.T) {
	testutil.CheckGoroutines(t)
	b := newBackend(t, Options{})
	marker := "98765"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var log lockedBuffer
	go func() {
		waitFor(t, "the session to start its processes", func() bool { return strings.Contains(log.String(), "ready") })
		cancel()
	}()
	// The processes ignore SIGTERM, and one leaves the process group.
	r := run(t, b, shell(`trap '' TERM; setsid sleep `+marker+`1 & sleep `+marker+`2 & (trap '' TERM; sleep `+marker+`3) & echo ready; wait`), runOpts{ctx: ctx, log: &log})
	if r.runErr != nil || r.res.End != session.Interrupted {
		t.Fatalf("%+v %v", r.res, r.runErr)
	}
	if left := nstest.ProcessesWith("sleep\x00" + marker); len(left) > 0 {
		t.Fatalf("processes left behind: %v", left)
	}
}

func TestMockAgentReportsSecretWithoutValue(t *testing.T) {
	b := newBackend(t, Options{})
	r := run(t, b, contract(protocol.AgentMock, "say hi"), runOpts{secrets: []session.Secret{{Name: "MOCK_SECRET", Value: "hunter2-value"}}}).ok(t)
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
	r = run(t, b, contract(protocol.AgentMock, "please fail"), runOpts{})
	if r.res.ExitCode != 1 || !strings.Contains(r.log, "mock agent failing as instructed") {
		t.Fatalf("fail task: %+v %q", r.res, r.log)
	}
}

func TestSpawnFailureAndCwd(t *testing.T) {
	b := newBackend(t, Options{Path: "/nonexistent"})
	r := run(t, b, contract(protocol.AgentCodex, "x"), runOpts{})
	if r.runErr != nil || r.res.ExitCode != session.SpawnFailedExitCode || !strings.Contains(r.log, `spawn error: exec: "codex": executable file not found in $PATH`) {
		t.Fatalf("%+v %v %q", r.res, r.runErr, r.log)
	}

	b = newBackend(t, Options{})
	ws := filepath.Join(t.TempDir(), "ws")
	if err := os.MkdirAll(filepath.Join(ws, "sub", "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := shell("pwd")
	c.Execution.Cwd = "sub/dir"
	r = run(t, b, c, runOpts{workspace: ws}).ok(t)
	if strings.TrimSpace(r.log) != "/workspace/sub/dir" {
		t.Fatalf("pwd = %q", r.log)
	}
	c.Execution.Cwd = "../.."
	if r := run(t, b, c, runOpts{workspace: ws}); !errors.Is(r.runErr, session.ErrCwdEscape) {
		t.Fatalf("err = %v, want ErrCwdEscape", r.runErr)
	}
}

func TestSetupFailureIsAnError(t *testing.T) {
	requireNamespaces(t)
	// An executable that is not the warrant init: the session cannot be
	// set up, and Run says so instead of reporting an agent exit.
	b, err := New(Options{Executable: "/bin/true"})
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, b, shell("echo never"), runOpts{})
	if r.runErr == nil || !strings.Contains(r.runErr.Error(), "namespace sandbox") || strings.Contains(r.log, "never") {
		t.Fatalf("%+v %v", r.res, r.runErr)
	}
}

func TestTimeout(t *testing.T) {
	c := shell("sleep 30")
	c.Execution.TimeoutMs = ptr(int64(300))
	r := run(t, newBackend(t, Options{}), c, runOpts{})
	if r.runErr != nil || r.res.End != session.TimedOut {
		t.Fatalf("%+v %v", r.res, r.runErr)
	}
}

func TestProbe(t *testing.T) {
	requireNamespaces(t)
	if !probeReport.Available {
		t.Fatal(probeReport.Err())
	}
	names := map[string]bool{}
	for _, f := range probeReport.Features {
		names[f.Name] = f.OK
	}
	for _, n := range []string{"user namespaces", "mount namespace", "PID namespace", "network namespace", "IPC namespace", "UTS namespace", "cgroup memory", "cgroup pids", "cgroup cpu", "session cgroup", "sandbox trial"} {
		if !names[n] {
			t.Errorf("feature %q missing or failed: %+v", n, probeReport.Features)
		}
	}
	bad := Probe(context.Background(), Options{Executable: "/bin/true"})
	if bad.Available || bad.Err() == nil || !errors.Is(bad.Err(), ErrUnavailable) {
		t.Fatalf("a probe with an executable that is no init passed: %+v", bad)
	}
	if !strings.Contains(bad.Err().Error(), "user namespaces") {
		t.Fatalf("the failing feature is not named: %v", bad.Err())
	}
}

func ptr[T any](v T) *T { return &v }

var _ = time.Second

// Without the egress proxy (env.egressProxy false) a namespace session
// has no network at all, rather than an unrecorded one.
func TestNoEgressProxyMeansNoNetwork(t *testing.T) {
	requireNamespaces(t)
	tn := nstest.NewTestNet(t)
	off := false
	c := shell(`env | grep -i _proxy || echo no-proxy-variables; curl -sS --max-time 3 ` + tn.URL + ` || echo no-network`)
	c.Execution.Env = &protocol.ExecutionEnv{EgressProxy: &off}
	r := run(t, newBackend(t, Options{}), c, runOpts{}).ok(t)
	if !strings.Contains(r.log, "no-proxy-variables") || !strings.Contains(r.log, "no-network") || tn.Hits() != 0 {
		t.Fatalf("log %q", r.log)
	}
	if got := r.rec.network(); len(got) != 0 {
		t.Fatalf("events %+v", got)
	}
}
