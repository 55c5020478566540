package runner_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"warrant.dev/warrant/internal/runner"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

// childRunner is `warrant runner start` running as a child process.
type childRunner struct {
	cmd    *exec.Cmd
	stderr *syncBuf
	done   chan error
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
	t  testing.TB
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startChild starts `warrant runner start` against the plane.
func startChild(t *testing.T, planeURL, dataDir, token string, extra ...string) *childRunner {
	t.Helper()
	args := append([]string{"runner", "start", "--plane", planeURL, "--pool", "default", "--data", dataDir,
		"--enroll-token", token, "--kill-grace", "500ms", "--log-level", "debug"}, extra...)
	cmd := exec.Command(warrantBin, args...)
	cmd.Env = append(os.Environ(), "WARRANT_CONFIG_DIR="+t.TempDir())
	c := &childRunner{cmd: cmd, stderr: &syncBuf{t: t}, done: make(chan error, 1)}
	cmd.Stderr = c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.done
		t.Logf("runner stderr:\n%s", c.stderr.String())
	})
	return c
}

func (c *childRunner) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-c.done:
		c.done <- err // for the cleanup
		return err
	case <-time.After(timeout):
		t.Fatalf("runner did not exit within %s; stderr:\n%s", timeout, c.stderr.String())
		return nil
	}
}

func TestChildRunnerDrainsOnSIGTERM(t *testing.T) {
	t.Parallel()
	tp := testutil.StartPlane(t)
	child := startChild(t, tp.URL, t.TempDir(), tp.EnrollToken("default"), "--concurrency", "2")
	dir := t.TempDir()
	var ids []string
	for _, name := range []string{"a", "b"} {
		marker := filepath.Join(dir, name)
		ids = append(ids, submit(t, tp.Admin, commandRun("touch "+marker+"; sleep 1; echo drained-"+name)))
		waitFile(t, marker)
	}
	// Both sessions are running: stop the runner.
	if err := child.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := child.wait(t, 30*time.Second); err != nil {
		t.Fatalf("runner exit: %v\n%s", err, child.stderr.String())
	}
	for i, id := range ids {
		run := waitEnded(t, tp.Admin, id)
		if run.State != protocol.StateCompleted || !run.HasReceipt {
			t.Fatalf("run %s %s %+v", id, run.State, run.Failure)
		}
		b, _ := verifiedBundle(t, tp, id)
		if log := string(artifact(t, tp, b.Events, "log")); !strings.Contains(log, "drained-"+string(rune('a'+i))) {
			t.Fatalf("log %q", log)
		}
	}
	// Nothing is claimed any more.
	late := submit(t, tp.Admin, commandRun("true"))
	if run, _ := tp.Admin.GetRun(context.Background(), late); run.State != protocol.StateCreated {
		t.Fatalf("a run submitted after the runner stopped is %s", run.State)
	}
}

func waitFile(t *testing.T, p string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(p); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", p)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestKilledRunnerLeaseExpiresAndRunNeverRunsTwice(t *testing.T) {
	t.Parallel()
	tp := testutil.StartPlane(t, testutil.WithLeases(3*time.Second, 500*time.Millisecond))
	child := startChild(t, tp.URL, t.TempDir(), tp.EnrollToken("default"))
	pids := filepath.Join(t.TempDir(), "pids")
	id := submit(t, tp.Admin, commandRun("echo $$ > "+pids+"; exec sleep 60"))
	leader := readPids(t, pids, 1, 30*time.Second)
	waitState(t, tp.Admin, id, 10*time.Second, protocol.StateRunning)

	if err := child.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	child.wait(t, 10*time.Second)
	run := waitState(t, tp.Admin, id, 30*time.Second, protocol.StateFailed, protocol.StateCompleted, protocol.StateCancelled)
	if run.State != protocol.StateFailed || run.Failure == nil || !strings.Contains(run.Failure.Message, "lease") {
		t.Fatalf("run %s %+v, want failed for its lapsed lease", run.State, run.Failure)
	}
	// The harness died with its runner (parent-death signal).
	deadline := time.Now().Add(5 * time.Second)
	for processAlive(leader[0]) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	assertDead(t, leader)

	// Another runner of the pool claims new work but never this run. The
	// new run outlives the 3 s lease: heartbeats keep it alive.
	second := startRunner(t, tp)
	next := submit(t, tp.Admin, commandRun("sleep 4; echo second"))
	if r := waitEnded(t, tp.Admin, next); r.State != protocol.StateCompleted {
		t.Fatalf("next run %s", r.State)
	}
	if claimed := second.claimedRuns(); len(claimed) != 1 || claimed[0] != next {
		t.Fatalf("second runner claimed %v", claimed)
	}
	evs, err := tp.Admin.Events(context.Background(), id, -1)
	if err != nil {
		t.Fatal(err)
	}
	claims := 0
	for _, e := range evs.Events {
		if e.Event.Type() == protocol.EventRunClaimed {
			claims++
		}
	}
	if claims != 1 || evs.State != protocol.StateFailed {
		t.Fatalf("run %s claimed %d times, state %s", id, claims, evs.State)
	}
}

func TestChildRunnerRefusesInvalidEnrollToken(t *testing.T) {
	t.Parallel()
	tp := testutil.StartPlane(t)
	data := t.TempDir()
	child := startChild(t, tp.URL, data, "wet_invalid")
	err := child.wait(t, 30*time.Second)
	if err == nil {
		t.Fatal("runner with an invalid token exited 0")
	}
	out := child.stderr.String()
	if !strings.Contains(out, "refused the enroll token") || strings.Contains(out, "retrying") {
		t.Fatalf("stderr:\n%s", out)
	}
}

// forwarder accepts on addr and relays each connection to target, until
// the returned stop is called (at the latest when the test ends): then it
// stops listening and cuts every connection, as a network partition would.
func forwarder(t *testing.T, addr, target string) (stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
		once  sync.Once
	)
	stop = func() {
		once.Do(func() {
			ln.Close()
			mu.Lock()
			for _, c := range conns {
				c.Close()
			}
			mu.Unlock()
			wg.Wait()
		})
	}
	t.Cleanup(stop)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(up, c); up.Close() }()
			go func() { defer wg.Done(); io.Copy(c, up); c.Close() }()
		}
	}()
	return stop
}

func TestRunnerCutOffFromThePlaneStopsItsSession(t *testing.T) {
	t.Parallel()
	tp := testutil.StartPlane(t, testutil.WithLeases(3*time.Second, 500*time.Millisecond))
	addr := testutil.FreeAddr(t)
	u, _ := url.Parse(tp.URL)
	cut := forwarder(t, addr, u.Host)
	tr := newRunner(t, tp, func(o *runner.Options) { o.PlaneURL = "http://" + addr })
	tr.start(t)

	pids := filepath.Join(t.TempDir(), "pids")
	id := submit(t, tp.Admin, commandRun("echo $$ > "+pids+"; exec sleep 60"))
	leader := readPids(t, pids, 1, 30*time.Second)
	waitState(t, tp.Admin, id, 10*time.Second, protocol.StateRunning)
	cut()

	// The runner gives the session up once its lease has run out...
	deadline := time.Now().Add(20 * time.Second)
	for processAlive(leader[0]) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	assertDead(t, leader)
	// ...and the plane fails the run itself.
	run := waitState(t, tp.Admin, id, 20*time.Second, protocol.StateFailed, protocol.StateCompleted, protocol.StateCancelled)
	if run.State != protocol.StateFailed || !strings.Contains(run.Failure.Message, "lease") {
		t.Fatalf("run %s %+v", run.State, run.Failure)
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		tr.mu.Lock()
		status, done := tr.finished[id]
		tr.mu.Unlock()
		if done {
			if status != "abandoned" {
				t.Fatalf("runner finished the run as %q", status)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the runner never gave the run up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(tr.Log.String(), "lease lost") {
		t.Fatalf("runner log does not say the lease was lost")
	}
}

func TestEnrollmentRetriesUntilThePlaneIsUp(t *testing.T) {
	t.Parallel()
	tp := testutil.StartPlane(t)
	addr := testutil.FreeAddr(t) // nothing listens there yet

	tr := newRunner(t, tp, func(o *runner.Options) {
		o.PlaneURL = "http://" + addr
		o.EnrollRetry = 30 * time.Second
	})
	tr.start(t)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(tr.Log.String(), "retrying enrollment") {
		if time.Now().After(deadline) {
			t.Fatal("the runner never retried enrollment")
		}
		time.Sleep(20 * time.Millisecond)
	}
	u, _ := url.Parse(tp.URL)
	forwarder(t, addr, u.Host)

	id := submit(t, tp.Admin, mockRun("hello after the outage"))
	if run := waitEnded(t, tp.Admin, id); run.State != protocol.StateCompleted {
		t.Fatalf("run %s %+v", run.State, run.Failure)
	}
	verifiedBundle(t, tp, id)
}

func TestSessionsLiveInTheWorkDir(t *testing.T) {
	t.Parallel()
	tp := testutil.StartPlane(t)
	work := t.TempDir()
	tr := startRunner(t, tp, func(o *runner.Options) { o.WorkDir = work })
	id := submit(t, tp.Admin, commandRun("pwd"))
	if run := waitEnded(t, tp.Admin, id); run.State != protocol.StateCompleted {
		t.Fatalf("run %s %+v", run.State, run.Failure)
	}
	b, _ := verifiedBundle(t, tp, id)
	ident, err := tr.Enroll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	root, _ := filepath.EvalSymlinks(filepath.Join(work, "warrant-"+ident.RunnerID))
	if log := strings.TrimSpace(string(artifact(t, tp, b.Events, "log"))); !strings.HasPrefix(log, root+string(filepath.Separator)+id+"-") {
		t.Fatalf("session ran in %q, not under %q", log, root)
	}
	if entries, err := os.ReadDir(root); err != nil || len(entries) != 0 {
		t.Fatalf("work dir after the run: %v %v", entries, err)
	}
}

func TestStopEndsAnEnrollmentWaitingForThePlane(t *testing.T) {
	t.Parallel()
	tp := testutil.StartPlane(t)
	tr := newRunner(t, tp, func(o *runner.Options) {
		o.PlaneURL = "http://" + testutil.FreeAddr(t)
		o.EnrollRetry = time.Hour
	})
	done := make(chan error, 1)
	go func() { done <- tr.Run(context.Background()) }()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(tr.Log.String(), "retrying enrollment") {
		if time.Now().After(deadline) {
			t.Fatal("the runner never retried enrollment")
		}
		time.Sleep(20 * time.Millisecond)
	}
	tr.Stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after Stop = %v, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Stop did not end the enrollment")
	}
}
