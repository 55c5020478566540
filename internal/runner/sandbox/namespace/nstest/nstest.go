//go:build linux

// Package nstest owns test helpers for the namespace tier that other
// packages' tests share: a network namespace the test makes, joined to
// the host by a veth pair, with an HTTP server inside it (a stand-in for
// an allowlisted host on the internet that no session can reach except
// through the egress proxy), and a scan for processes left behind.
package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// Greeting is what the server in a TestNet answers.
const Greeting = "hello from the test netns"

// TestNet is a network namespace with an HTTP server on ServerIP:8080,
// reachable from the host through a /30 on a veth pair.
type TestNet struct {
	ServerIP netip.Addr
	Prefix   netip.Prefix // the /30; the egress proxy needs it allowed (it is private)
	URL      string       // http://ServerIP:8080
	hits     atomic.Int32
}

// Hits is how many requests the server has answered.
func (n *TestNet) Hits() int32 { return n.hits.Load() }

// NewTestNet makes the namespace, the veth pair and the server; cleanup
// removes them when the test ends. It skips the test when iproute2 is
// missing.
func NewTestNet(t testing.TB) *TestNet {
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
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	ip("link", "add", hostIf, "type", "veth", "peer", "name", nsIf)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", hostIf).Run() })
	ip("link", "set", nsIf, "netns", ns)
	ip("addr", "add", hostIP+"/30", "dev", hostIf)
	ip("link", "set", hostIf, "up")
	ip("-n", ns, "addr", "add", serverIP+"/30", "dev", nsIf)
	ip("-n", ns, "link", "set", nsIf, "up")
	ip("-n", ns, "link", "set", "lo", "up")

	tn := &TestNet{
		ServerIP: netip.MustParseAddr(serverIP),
		Prefix:   netip.MustParsePrefix(fmt.Sprintf("10.77.%d.0/30", third)),
		URL:      "http://" + serverIP + ":8080",
	}
	ln := listenInNetns(t, "/run/netns/"+ns, serverIP+":8080")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tn.hits.Add(1)
		fmt.Fprint(w, Greeting)
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
func listenInNetns(t testing.TB, nsPath, addr string) net.Listener {
	t.Helper()
	type result struct {
		ln  net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// Left locked on failure: the thread then dies with the goroutine
		// instead of serving others from the wrong namespace.
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

// ProcessesWith lists the host's live processes whose command line
// contains marker (NUL-separated arguments), as "pid: argv".
func ProcessesWith(marker string) []string {
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
