package plane_test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// warrantBinary builds the real warrant binary once per test process.
func warrantBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "warrant-bin-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "warrant")
		out, err := exec.Command("go", "build", "-o", binPath, "warrant.dev/warrant/cmd/warrant").CombinedOutput()
		if err != nil {
			binErr = &buildError{out: string(out), err: err}
		}
	})
	if binErr != nil {
		t.Fatalf("build warrant: %v", binErr)
	}
	return binPath
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// planeProcess is a `warrant plane serve` child process.
type planeProcess struct {
	cmd  *exec.Cmd
	url  string
	logs *lockedBuffer
	done chan struct{}
}

func startPlaneProcess(t *testing.T, bin, data string, extra ...string) *planeProcess {
	t.Helper()
	args := append([]string{"plane", "serve", "--data", data, "--listen", "127.0.0.1:0", "--lease-ttl", "3s", "--heartbeat", "1s"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "WARRANT_CONFIG_DIR="+t.TempDir())
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pp := &planeProcess{cmd: cmd, logs: &lockedBuffer{}, done: make(chan struct{})}
	urlc := make(chan string, 1)
	go func() {
		defer close(pp.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			pp.logs.Write([]byte(line + "\n"))
			if rest, ok := strings.CutPrefix(line, "warrant plane serving on "); ok {
				urlc <- strings.TrimSpace(rest)
			}
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-pp.done
		if t.Failed() {
			t.Logf("plane process log:\n%s", pp.logs.Bytes())
		}
	})
	select {
	case pp.url = <-urlc:
	case <-pp.done:
		t.Fatalf("the plane exited:\n%s", pp.logs.Bytes())
	case <-time.After(30 * time.Second):
		t.Fatalf("the plane did not start:\n%s", pp.logs.Bytes())
	}
	return pp
}

func newClient(t *testing.T, url, token string) *client.Client {
	c, err := client.New(url, client.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestDurabilityKill9 kills `warrant plane serve` with SIGKILL while runs
// are in flight and restarts it on the same data directory: everything
// committed is still there, the claimed run completes under its original
// claim token and verifies offline (with the real `warrant verify`), the
// run whose runner vanished fails cleanly once its lease lapses, and the
// queued run is claimed after the restart.
func TestDurabilityKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the warrant binary")
	}
	bin := warrantBinary(t)
	data := filepath.Join(t.TempDir(), "plane")
	p1 := startPlaneProcess(t, bin, data)
	tokenBytes, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		t.Fatalf("admin token: %v", err)
	}
	adminToken := strings.TrimSpace(string(tokenBytes))
	admin := newClient(t, p1.url, adminToken)
	info1, err := admin.Info(bg)
	if err != nil {
		t.Fatal(err)
	}
	reqResp, err := admin.CreatePrincipal(bg, client.CreatePrincipalRequest{Name: "dana", Role: client.RoleRequester})
	if err != nil {
		t.Fatal(err)
	}
	req := newClient(t, p1.url, reqResp.Token.Secret)
	ws := testutil.UploadWorkspace(t, req, map[string]string{"README.md": "# durable\n"})
	runReq := client.RunRequest{Agent: protocol.AgentSpec{Kind: protocol.AgentMock}, Prompt: "survive", Pool: "default", Workspace: ws}
	var runs []*client.Run
	for range 3 {
		resp, err := req.SubmitRun(bg, runReq)
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, resp.Run)
		time.Sleep(2 * time.Millisecond) // distinct creation times: claims go oldest first
	}
	key, _ := protocol.GenerateKey(nil)
	et, err := admin.CreateEnrollToken(bg, client.EnrollTokenRequest{Pool: "default"})
	if err != nil {
		t.Fatal(err)
	}
	enr, err := newClient(t, p1.url, "").Enroll(bg, client.EnrollRequest{EnrollToken: et.Token, PublicKeyPEM: key.Public().PEM(), Pool: "default", Proof: key.SignMessage(client.EnrollProofMessage(et.Token))})
	if err != nil {
		t.Fatal(err)
	}
	runner := newClient(t, p1.url, enr.RunnerToken)
	claimA, err := runner.Claim(bg, client.ClaimRequest{Pool: "default", WaitSeconds: 5})
	if err != nil || claimA == nil || claimA.RunID != runs[0].ID {
		t.Fatalf("claim A: %+v %v", claimA, err)
	}
	claimB, err := runner.Claim(bg, client.ClaimRequest{Pool: "default", WaitSeconds: 5})
	if err != nil || claimB == nil || claimB.RunID != runs[1].ID {
		t.Fatalf("claim B: %+v %v", claimB, err)
	}
	chainA := claimA.Events
	appendA := func(c *client.Client, bodies ...protocol.EventPayload) {
		t.Helper()
		var batch []protocol.ChainedEvent
		for _, b := range bodies {
			e, err := protocol.NextEvent(&chainA[len(chainA)-1], "", protocol.NewEvent(b), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			chainA = append(chainA, e)
			batch = append(batch, e)
		}
		if _, err := c.AppendEvents(bg, claimA.RunID, batch); err != nil {
			t.Fatalf("append: %v", err)
		}
	}
	ca := newClient(t, p1.url, claimA.ClaimToken)
	if _, err := ca.Heartbeat(bg, claimA.RunID, client.HeartbeatRequest{Phase: client.PhaseRunning}); err != nil {
		t.Fatal(err)
	}
	mh, _ := claimA.Contract.ManifestHash()
	appendA(ca, protocol.WorkspaceMaterialized{ManifestHash: mh}, protocol.CommandExecuted{ArgvHash: protocol.HashBytes([]byte("argv")), ExitCode: 0})
	diff := []byte("diff --git a/README.md b/README.md\n")
	diffHash, err := ca.PutBlob(bg, diff)
	if err != nil {
		t.Fatal(err)
	}

	// SIGKILL: no shutdown, no checkpoint.
	if err := p1.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p1.done
	p2 := startPlaneProcess(t, bin, data)
	if strings.Contains(string(p2.logs.Bytes()), "bootstrap admin token") {
		t.Fatal("the restarted plane bootstrapped a new admin")
	}
	admin = newClient(t, p2.url, adminToken)
	info2, err := admin.Info(bg)
	if err != nil {
		t.Fatalf("admin token after restart: %v", err)
	}
	if info2.PlaneKeyID != info1.PlaneKeyID {
		t.Fatalf("plane key changed across restart: %s → %s", info1.PlaneKeyID, info2.PlaneKeyID)
	}
	req = newClient(t, p2.url, reqResp.Token.Secret)
	got, err := req.GetRun(bg, claimA.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != protocol.StateRunning || got.EventCount != int64(len(chainA)) {
		t.Fatalf("run A after restart: state %s, %d events, want running with %d", got.State, got.EventCount, len(chainA))
	}
	// The runner carries on under its claim token.
	ca = newClient(t, p2.url, claimA.ClaimToken)
	if _, err := ca.Heartbeat(bg, claimA.RunID, client.HeartbeatRequest{Phase: client.PhaseRunning}); err != nil {
		t.Fatalf("heartbeat after restart: %v", err)
	}
	if rc, err := ca.GetBlob(bg, diffHash); err != nil {
		t.Fatalf("output uploaded before the kill: %v", err)
	} else {
		rc.Close()
	}
	appendA(ca, protocol.ArtifactCreated{Kind: "diff", Hash: diffHash}, protocol.RunCompleted{})
	receipt, err := protocol.BuildReceipt(protocol.ReceiptInput{Contract: claimA.Contract, Events: chainA, DiffHash: diffHash, ArtifactHashes: []string{diffHash},
		Runner: protocol.RunnerIdentity{RunnerID: enr.RunnerID, KeyID: key.Public().ID(), Pool: "default", AttestationTier: protocol.AttestationMock, Isolation: "process"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := receipt.Sign(key, protocol.SignerRunner); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Complete(bg, claimA.RunID, receipt); err != nil {
		t.Fatalf("complete after restart: %v", err)
	}
	_, raw, err := req.Bundle(bg, claimA.RunID)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bundlePath, trustPath := filepath.Join(dir, "run.bundle.json"), filepath.Join(dir, "trust.json")
	trust, _ := json.Marshal(protocol.TrustFile{Version: protocol.VersionTrust, Keys: []protocol.TrustedKey{{Role: "plane", PublicKeyPEM: info1.PlanePublicKeyPEM}}})
	if err := os.WriteFile(bundlePath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(trustPath, trust, 0o600); err != nil {
		t.Fatal(err)
	}
	verify := exec.Command(bin, "verify", "--trust", trustPath, bundlePath)
	verify.Env = append(os.Environ(), "WARRANT_CONFIG_DIR="+dir)
	if out, err := verify.CombinedOutput(); err != nil {
		t.Fatalf("warrant verify: %v\n%s", err, out)
	}

	// Run B's runner is gone: its lease lapses and the plane fails it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := req.GetRun(bg, claimB.RunID)
		if err != nil {
			t.Fatal(err)
		}
		if b.State == protocol.StateFailed {
			if b.Failure == nil || b.Failure.Class != protocol.FailureSessionFailed || !strings.Contains(b.Failure.Message, "runner lost") {
				t.Fatalf("run B failed with %+v", b.Failure)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("run B is still %s", b.State)
		}
		time.Sleep(200 * time.Millisecond)
	}
	cb := newClient(t, p2.url, claimB.ClaimToken)
	_, err = cb.Heartbeat(bg, claimB.RunID, client.HeartbeatRequest{})
	mustCode(t, err, client.CodeClaimExpired)

	// Run C was queued: it is claimed now, and only once.
	runner = newClient(t, p2.url, enr.RunnerToken)
	claimC, err := runner.Claim(bg, client.ClaimRequest{Pool: "default", WaitSeconds: 5})
	if err != nil || claimC == nil || claimC.RunID != runs[2].ID {
		t.Fatalf("claim C: %+v %v", claimC, err)
	}
	if again, err := runner.Claim(bg, client.ClaimRequest{Pool: "default", WaitSeconds: 0}); err != nil || again != nil {
		t.Fatalf("a second claim after restart: %+v %v", again, err)
	}

	// A graceful stop (SIGTERM) exits 0.
	if err := p2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p2.done:
	case <-time.After(30 * time.Second):
		t.Fatal("SIGTERM did not stop the plane")
	}
	if code := p2.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d", code)
	}
}
