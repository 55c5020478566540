//go:build linux

package namespace

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
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
	case "dns": // dns NAME: the resolver, then a raw query to a public server
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		addrs, err := net.DefaultResolver.LookupHost(ctx, args[1])
		fmt.Printf("lookup %s: %v %v\n", args[1], addrs, err)
		c, err := net.DialTimeout("udp", "8.8.8.8:53", 3*time.Second)
		if err == nil {
			_, err = c.Write([]byte{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0})
			c.Close()
		}
		fmt.Printf("udp 8.8.8.8:53: %v\n", err)
	case "raw": // raw and ICMP sockets
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
		fmt.Printf("raw socket: %v\n", errOrOK(err))
		if err == nil {
			unix.Close(fd)
		}
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP)
		fmt.Printf("icmp socket: %v\n", errOrOK(err))
		if err == nil {
			err = unix.Sendto(fd, []byte{8, 0, 0, 0, 0, 0, 0, 0}, 0, &unix.SockaddrInet4{Addr: [4]byte{1, 1, 1, 1}})
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

// testNet is a network namespace the test made, joined to the host by a
// veth pair, with an HTTP server listening inside it: a stand-in for an
// allowlisted host on the internet.
type testNet struct {
	serverIP netip.Addr
	prefix   netip.Prefix
	url      string // http://10.77.x.2:8080
	hits     atomic.Int32
}

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("iproute2 (ip) is not installed")
	}
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	tag := hex.EncodeToString(suffix)
	ns := "wtest-" + tag
	hostIf, nsIf := "wv"+tag+"h", "wv"+tag+"n"
	third := int(suffix[0])
	hostIP := fmt.Sprintf("10.77.%d.1", third)
	serverIP := fmt.Sprintf("10.77.%d.2", third)
	ipCmd := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ipCmd("netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	ipCmd("link", "add", hostIf, "type", "veth", "peer", "name", nsIf)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", hostIf).Run() })
	ipCmd("link", "set", nsIf, "netns", ns)
	ipCmd("addr", "add", hostIP+"/30", "dev", hostIf)
	ipCmd("link", "set", hostIf, "up")
	ipCmd("-n", ns, "addr", "add", serverIP+"/30", "dev", nsIf)
	ipCmd("-n", ns, "link", "set", nsIf, "up")
	ipCmd("-n", ns, "link", "set", "lo", "up")

	tn := &testNet{
		serverIP: netip.MustParseAddr(serverIP),
		prefix:   netip.MustParsePrefix(fmt.Sprintf("10.77.%d.0/30", third)),
		url:      "http://" + serverIP + ":8080",
	}
	ln := listenInNetns(t, "/run/netns/"+ns, serverIP+":8080")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tn.hits.Add(1)
		fmt.Fprint(w, "hello from the test netns")
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return tn
}

// listenInNetns opens a TCP listener inside a network namespace: the
// socket is made by a thread that joined the namespace, and belongs to it
// for good; the thread then returns to the test's namespace.
func listenInNetns(t *testing.T, nsPath, addr string) net.Listener {
	t.Helper()
	type result struct {
		ln  net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// Not unlocked on failure to return: the thread then dies with the
		// goroutine instead of serving others from the wrong namespace.
		self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer unix.Close(self)
		target, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			ch <- result{err: err}
			return
		}
		ln, lerr := net.Listen("tcp", addr)
		if err := unix.Setns(self, unix.CLONE_NEWNET); err != nil {
			if ln != nil {
				ln.Close()
			}
			ch <- result{err: fmt.Errorf("return to the test's network namespace: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{ln: ln, err: lerr}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("listen in %s: %v", nsPath, r.err)
	}
	return r.ln
}

// processesWith lists host processes whose command line contains marker.
func processesWith(marker string) []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		stat, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
		if strings.Contains(string(cmdline), marker) && !strings.Contains(string(stat), ") Z") {
			out = append(out, e.Name()+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return out
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
