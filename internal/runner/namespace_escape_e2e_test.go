//go:build linux

package runner_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/runner"
	"warrant.dev/warrant/internal/runner/sandbox/namespace"
	"warrant.dev/warrant/internal/runner/sandbox/namespace/nstest"
	"warrant.dev/warrant/internal/runner/sandbox/process"
	"warrant.dev/warrant/internal/runner/session"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

// TestNamespaceEscapesAreRecordedInReceipts runs every escape attempt the
// namespace tier must stop as a real run (plane, runner, namespace
// session), and checks what each verified receipt and its log say.
func TestNamespaceEscapesAreRecordedInReceipts(t *testing.T) {
	t.Parallel()
	requireNamespaceTier(t)
	tp := testutil.StartPlane(t)
	tn := nstest.NewTestNet(t)
	var hostHits atomic.Int32
	host := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hostHits.Add(1) }))
	defer host.Close()
	hostURL, _ := url.Parse(host.URL)

	const memory, pids = 256 << 20, 128
	ns := namespaceBackend(t, namespace.Options{
		Limits:        namespace.Limits{MemoryBytes: memory, Pids: pids, CPUs: 1},
		AllowPrefixes: []netip.Prefix{tn.Prefix},
	})
	tr := startRunner(t, tp, withOptions(func(o *runner.Options) {
		o.Backends = []session.Backend{process.New(process.Options{}), ns}
		o.Concurrency = 4
	}))
	allowed := tn.ServerIP.String()
	key := filepath.Join(tr.DataDir, "runner.key.pem")

	type escape struct {
		name   string
		script string
		edit   func(*client.RunRequest)
		check  func(t *testing.T, run *client.Run, b *protocol.Bundle, log string)
	}
	completedWith := func(want ...string) func(*testing.T, *client.Run, *protocol.Bundle, string) {
		return func(t *testing.T, run *client.Run, b *protocol.Bundle, log string) {
			t.Helper()
			if run.State != protocol.StateCompleted {
				t.Fatalf("run %s %+v; log %q", run.State, run.Failure, log)
			}
			for _, w := range want {
				if !strings.Contains(log, w) {
					t.Fatalf("log lacks %q: %q", w, log)
				}
			}
			if strings.Contains(log, "ESCAPED") {
				t.Fatalf("escaped: %q", log)
			}
		}
	}
	noNetwork := func(t *testing.T, b *protocol.Bundle) {
		t.Helper()
		if len(b.Receipt.NetworkAccessed) != 0 {
			t.Fatalf("networkAccessed %+v: the attempt went through the proxy", b.Receipt.NetworkAccessed)
		}
	}
	escapes := []escape{{
		name:   "direct TCP to the host's loopback",
		script: `if curl --noproxy '*' -sS --max-time 5 http://127.0.0.1:` + hostURL.Port() + `/; then echo ESCAPED; else echo direct-tcp-failed; fi`,
		check: func(t *testing.T, run *client.Run, b *protocol.Bundle, log string) {
			completedWith("direct-tcp-failed", "Couldn't connect")(t, run, b, log)
			noNetwork(t, b)
			if hostHits.Load() != 0 {
				t.Fatal("the host's loopback server was reached")
			}
		},
	}, {
		name: "DNS lookup",
		script: `if getent hosts example.com; then echo ESCAPED; else echo dns-failed; fi
perl -MIO::Socket::INET -e 'IO::Socket::INET->new(PeerAddr => "` + allowed + `:53", Proto => "udp") ? print("ESCAPED\n") : print("udp-dns-failed: $!\n")'`,
		check: func(t *testing.T, run *client.Run, b *protocol.Bundle, log string) {
			completedWith("dns-failed", "udp-dns-failed: Network is unreachable")(t, run, b, log)
			noNetwork(t, b)
		},
	}, {
		name:   "raw and ICMP sockets",
		script: `perl -MSocket -e 'socket(my $s, PF_INET, SOCK_RAW, 1) ? print("ESCAPED raw\n") : print("raw-socket-failed: $!\n"); socket(my $i, PF_INET, SOCK_DGRAM, 1) ? print("ESCAPED icmp\n") : print("icmp-socket-failed: $!\n")'`,
		check: func(t *testing.T, run *client.Run, b *protocol.Bundle, log string) {
			completedWith("raw-socket-failed: Operation not permitted", "icmp-socket-failed: Permission denied")(t, run, b, log)
			noNetwork(t, b)
		},
	}, {
		name:   "curl without the proxy variables",
		script: `unset HTTP_PROXY HTTPS_PROXY ALL_PROXY http_proxy https_proxy all_proxy; if curl -sS --max-time 5 ` + tn.URL + `/direct; then echo ESCAPED; else echo no-route; fi`,
		edit:   func(r *client.RunRequest) { r.AllowHosts = []string{allowed} },
		check: func(t *testing.T, run *client.Run, b *protocol.Bundle, log string) {
			completedWith("no-route")(t, run, b, log)
			noNetwork(t, b)
		},
	}, {
		name:   "curl through the proxy",
		script: `curl -sS --max-time 10 ` + tn.URL + `/allowed; echo; curl -sS --max-time 10 -o /dev/null -w 'blocked-status=%{http_code}\n' http://denied.example.com/`,
		edit:   func(r *client.RunRequest) { r.AllowHosts = []string{allowed} },
		check: func(t *testing.T, run *client.Run, b *protocol.Bundle, log string) {
			completedWith(nstest.Greeting, "blocked-status=403")(t, run, b, log)
			got := b.Receipt.NetworkAccessed
			for _, want := range []protocol.NetworkAccess{{Host: allowed, Decision: "allowed"}, {Host: "denied.example.com", Decision: "blocked"}} {
				if !slices.Contains(got, want) {
					t.Fatalf("networkAccessed %+v lacks %+v", got, want)
				}
			}
		},
	}, {
		name: "writing outside the workspace",
		script: `for p in /usr/x /etc/x /etc/passwd /x /run/x /dev/x /proc/sys/kernel/hostname /sys/x /home/x; do
  if (echo pwned > "$p") 2>/dev/null; then echo "ESCAPED wrote $p"; fi
done
echo ok > /workspace/inside && echo writable-ok`,
		check: func(t *testing.T, run *client.Run, b *protocol.Bundle, log string) {
			completedWith("writable-ok")(t, run, b, log)
			if changed := payloads[protocol.FileChanged](t, b.Events); len(changed) != 1 || changed[0].Path != "inside" {
				t.Fatalf("file.changed %+v", changed)
			}
		},
	}, {
		name:   "reading the runner's private key",
		script: `for p in "` + key + `" "/proc/1/root` + key + `" /workspace/../../runner.key.pem; do cat "$p" 2>/dev/null && echo ESCAPED; done; echo key-unreadable`,
		check: func(t *testing.T, run *client.Run, b *protocol.Bundle, log string) {
			completedWith("key-unreadable")(t, run, b, log)
			if strings.Contains(log, "PRIVATE KEY") {
				t.Fatal("the runner's key is in the session log")
			}
		},
	}, {
		name:   "fork bomb",
		script: `bomb() { bomb | bomb & }; (bomb); while :; do :; done`, // the bomb starts in a subshell (a refused fork there must not end the session); the loop is a builtin and forks nothing
		edit: func(r *client.RunRequest) {
			ms := int64(3000)
			r.Execution = &protocol.ExecutionSpec{Kind: protocol.ExecShell, Script: r.Prompt, TimeoutMs: &ms}
		},
		check: func(t *testing.T, run *client.Run, b *protocol.Bundle, log string) {
			if run.State != protocol.StateFailed || run.Failure.Class != protocol.FailureBudgetExceeded || !strings.Contains(run.Failure.Message, "time limit") {
				t.Fatalf("run %s %+v", run.State, run.Failure)
			}
			if !strings.Contains(log, "[warrant: the session reached its limit of 128 processes;") {
				t.Fatalf("the pids limit did not contain the bomb: %.500q", log[max(0, len(log)-500):])
			}
		},
	}, {
		name:   "memory hog",
		script: `perl -e 'my $x = "a" x (1 << 30); print "ESCAPED\n"'`,
		check: func(t *testing.T, run *client.Run, b *protocol.Bundle, log string) {
			if run.State != protocol.StateFailed || run.Failure.Class != protocol.FailureBudgetExceeded || !strings.Contains(run.Failure.Message, "memory limit (256 MiB)") {
				t.Fatalf("run %s %+v", run.State, run.Failure)
			}
			if strings.Contains(log, "ESCAPED") || !strings.Contains(log, "went over its memory limit of 256 MiB") {
				t.Fatalf("log %q", log)
			}
		},
	}}

	ids := make([]string, len(escapes))
	for i, e := range escapes {
		req := commandRun(e.script)
		req.Isolation = protocol.IsolationNamespace
		if e.edit != nil {
			e.edit(&req)
		}
		ids[i] = submit(t, tp.Admin, req)
	}
	for i, e := range escapes {
		t.Run(e.name, func(t *testing.T) {
			run := waitEnded(t, tp.Admin, ids[i])
			b, _ := verifiedBundle(t, tp, ids[i])
			if b.Receipt.Runner.Isolation != protocol.IsolationNamespace {
				t.Fatalf("receipt isolation %q", b.Receipt.Runner.Isolation)
			}
			e.check(t, run, b, string(artifact(t, tp, b.Events, "log")))
		})
	}

	t.Run("killing the session leaves no process behind", func(t *testing.T) {
		const marker = "876540"
		req := commandRun(`trap '' TERM; setsid sleep ` + marker + `1 & sleep ` + marker + `2 & (trap '' TERM; exec sleep ` + marker + `3) & echo ready > /workspace/ready; wait`)
		req.Isolation = protocol.IsolationNamespace
		id := submit(t, tp.Admin, req)
		waitForGlob(t, filepath.Join(tr.DataDir, "sessions", id+"-*", "workspace", "ready"))
		// The file is written once the shell has forked them; exec follows.
		for deadline := time.Now().Add(30 * time.Second); len(nstest.ProcessesWith("sleep\x00"+marker)) != 3; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the session's processes are not all running: %v", nstest.ProcessesWith("sleep\x00"+marker))
			}
		}
		if _, err := tp.Admin.Cancel(context.Background(), id, "escape test"); err != nil {
			t.Fatal(err)
		}
		if run := waitEnded(t, tp.Admin, id); run.State != protocol.StateCancelled {
			t.Fatalf("run %s %+v", run.State, run.Failure)
		}
		b, _ := verifiedBundle(t, tp, id)
		if b.Receipt.Status != "cancelled" || b.Receipt.Runner.Isolation != protocol.IsolationNamespace {
			t.Fatalf("receipt %s %s", b.Receipt.Status, b.Receipt.Runner.Isolation)
		}
		if left := nstest.ProcessesWith("sleep\x00" + marker); len(left) > 0 {
			t.Fatalf("processes left behind: %v", left)
		}
	})
}

func waitForGlob(t *testing.T, pattern string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m, _ := filepath.Glob(pattern); len(m) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", pattern)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
