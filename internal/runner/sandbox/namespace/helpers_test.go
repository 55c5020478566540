//go:build linux

package namespace

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"warrant.dev/warrant/internal/runner/mockagent"
	"warrant.dev/warrant/internal/runner/session"
	"warrant.dev/warrant/protocol"
)

// The test binary is the session init, the mock agent and a few probes
// that run inside sandboxes, selected by its first argument.
const (
	agentArg  = "namespace-test-mock-agent"
	helperArg = "namespace-test-helper"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		// syscall.Exit, not os.Exit: under -race, os.Exit sleeps a second
		// for the race detector's report, and these processes run by the
		// hundred.
		switch os.Args[1] {
		case InitCommand:
			syscall.Exit(Init())
		case agentArg:
			syscall.Exit(mockagent.Main(context.Background(), os.Args[2:], mockagent.Env{Getenv: os.Getenv, Stdout: os.Stdout, Stderr: os.Stderr}))
		case helperArg:
			syscall.Exit(helperMain(os.Args[2:]))
		case unprivilegedArg:
			syscall.Exit(unprivilegedMain(os.Args[2:]))
		}
	}
	os.Exit(m.Run())
}

// helperMain runs one probe inside a sandbox and prints what happened.
func helperMain(args []string) int {
	if len(args) == 0 {
		return 2
	}
	switch args[0] {
	case "tcp": // tcp ADDR: a direct TCP connection
		c, err := net.DialTimeout("tcp", args[1], 3*time.Second)
		if err != nil {
			fmt.Printf("tcp %s: %v\n", args[1], err)
			return 1
		}
		c.Close()
		fmt.Printf("tcp %s: CONNECTED\n", args[1])
	case "dns": // dns NAME SERVER: the resolver, then a query sent to SERVER:53 directly
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		addrs, err := net.DefaultResolver.LookupHost(ctx, args[1])
		fmt.Printf("lookup %s: %v %v\n", args[1], addrs, err)
		c, err := net.DialTimeout("udp", args[2]+":53", 3*time.Second)
		if err == nil {
			_, err = c.Write([]byte{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0})
			c.Close()
		}
		fmt.Printf("udp dns: %v\n", err)
	case "raw": // raw ADDR: raw and ICMP sockets, an echo request to ADDR
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
		fmt.Printf("raw socket: %v\n", errOrOK(err))
		if err == nil {
			unix.Close(fd)
		}
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP)
		fmt.Printf("icmp socket: %v\n", errOrOK(err))
		if err == nil {
			to := &unix.SockaddrInet4{}
			copy(to.Addr[:], net.ParseIP(args[1]).To4())
			err = unix.Sendto(fd, []byte{8, 0, 0, 0, 0, 0, 0, 0}, 0, to)
			fmt.Printf("icmp send: %v\n", errOrOK(err))
			unix.Close(fd)
		}
	case "hog": // hog MiB: allocate and touch memory
		var n int
		fmt.Sscan(args[1], &n)
		var keep [][]byte
		for i := 0; i < n/16; i++ {
			b := make([]byte, 16<<20)
			for j := 0; j < len(b); j += 4096 {
				b[j] = 1
			}
			keep = append(keep, b)
		}
		fmt.Printf("hog: survived with %d MiB\n", len(keep)*16)
	case "keyctl": // the kernel keyring, denied by seccomp
		_, err := unix.KeyctlGetKeyringID(unix.KEY_SPEC_SESSION_KEYRING, true)
		fmt.Printf("keyctl: %v\n", errOrOK(err))
		_, _, errno := unix.Syscall(unix.SYS_BPF, 0, 0, 0)
		fmt.Printf("bpf: %v\n", errno)
	case "read": // read PATH
		data, err := os.ReadFile(args[1])
		fmt.Printf("read %s: %q %v\n", args[1], data, err)
	default:
		return 2
	}
	return 0
}

func errOrOK(err error) string {
	if err == nil {
		return "OK"
	}
	return err.Error()
}

var (
	probeOnce   sync.Once
	probeReport *Report
)

// requireNamespaces skips (or, under CI, fails) when this host cannot run
// the namespace tier.
func requireNamespaces(t *testing.T) {
	t.Helper()
	probeOnce.Do(func() {
		self, _ := os.Executable()
		probeReport = Probe(context.Background(), Options{Executable: self})
	})
	if err := probeReport.Err(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the namespace tier must be available under CI: %v", err)
		}
		t.Skipf("namespace tier unavailable on this host: %v", err)
	}
}

func newBackend(t *testing.T, opts Options) *Backend {
	t.Helper()
	requireNamespaces(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	opts.Executable = self
	b, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func contract(agent, prompt string, allow ...string) *protocol.Contract {
	return &protocol.Contract{
		Version:   protocol.VersionContract,
		RunID:     "run_ns",
		Agent:     protocol.AgentSpec{Kind: agent},
		Task:      protocol.TaskSpec{Prompt: prompt},
		Network:   protocol.NetworkPolicy{DefaultDeny: true, AllowHosts: allow},
		Isolation: protocol.IsolationNamespace,
	}
}

// shell is a contract running script with sh.
func shell(script string, allow ...string) *protocol.Contract {
	c := contract(protocol.AgentCommand, script, allow...)
	c.Execution = &protocol.ExecutionSpec{Kind: protocol.ExecShell, Script: script}
	return c
}

// helper is a contract running the test binary's helper inside.
func helper(args ...string) *protocol.Contract {
	self, _ := os.Executable()
	c := contract(protocol.AgentCommand, "helper")
	c.Execution = &protocol.ExecutionSpec{Kind: protocol.ExecArgv, Command: self, Args: append([]string{helperArg}, args...)}
	return c
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

type ran struct {
	res     session.Result
	log     string
	rec     *recorder
	ws      string
	scratch string
	runErr  error
}

type runOpts struct {
	secrets   []session.Secret
	rec       *recorder
	workspace string // default: a fresh directory
	ctx       context.Context
	started   func(pid int)
	log       *lockedBuffer
}

func run(t *testing.T, b *Backend, c *protocol.Contract, o runOpts) ran {
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
	if o.rec == nil {
		o.rec = &recorder{}
	}
	dir := t.TempDir()
	ws := o.workspace
	if ws == "" {
		ws = filepath.Join(dir, "ws")
		if err := os.Mkdir(ws, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if o.log == nil {
		o.log = &lockedBuffer{}
	}
	ctx := o.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	scratch := filepath.Join(dir, "scratch")
	res, err := b.Run(ctx, &session.Session{
		RunID: c.RunID, Contract: c, Execution: e, Workspace: ws,
		ScratchDir: scratch, Secrets: o.secrets,
		Log: o.log, Record: o.rec.record, KillGrace: time.Second, Started: o.started,
		Logger: nil,
	})
	shown := o.log.String()
	if len(shown) > 2000 {
		shown = "…" + shown[len(shown)-2000:]
	}
	t.Logf("session %v → %+v (err %v); log:\n%s", e.Argv(), res, err, shown)
	return ran{res: res, log: o.log.String(), rec: o.rec, ws: ws, scratch: scratch, runErr: err}
}

func (r ran) ok(t *testing.T) ran {
	t.Helper()
	if r.runErr != nil || r.res.ExitCode != 0 || r.res.End != session.Exited {
		t.Fatalf("session failed: %+v %v\n%s", r.res, r.runErr, r.log)
	}
	return r
}

// waitFor polls cond until it holds or the test's patience runs out.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
