package reliability_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

// proc is a warrant child process whose stdout and stderr go to a log
// file under the suite root (appended across restarts, scanned for leaks
// after the suite).
type proc struct {
	t       testing.TB
	name    string
	bin     string
	args    []string
	env     []string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// start launches the process. With serving it waits for the plane's
// "warrant plane serving on URL" line and returns the URL.
func (p *proc) start(serving bool) string {
	p.t.Helper()
	logf, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	fmt.Fprintf(logf, "=== %s start %s\n", p.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = p.env
	cmd.Stdout = logf
	stderr, err := cmd.StderrPipe()
	if err != nil {
		p.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.err = cmd, done, nil
	p.mu.Unlock()
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 4<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			if rest, ok := strings.CutPrefix(line, "warrant plane serving on "); ok {
				select {
				case urlc <- strings.TrimSpace(rest):
				default:
				}
			}
		}
		_, _ = io.Copy(logf, stderr)
		err := cmd.Wait()
		fmt.Fprintf(logf, "=== %s exit %v %s\n", p.name, err, time.Now().Format(time.RFC3339Nano))
		logf.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	if !serving {
		return ""
	}
	select {
	case u := <-urlc:
		return u
	case <-done:
		p.t.Fatalf("%s exited before serving: %v\n%s", p.name, p.exitErr(), p.tail(30))
	case <-time.After(60 * time.Second):
		p.t.Fatalf("%s did not start serving:\n%s", p.name, p.tail(30))
	}
	return ""
}

func (p *proc) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// running reports whether the process is alive.
func (p *proc) running() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// pid is the process id of the current incarnation.
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// kill9 kills the process with SIGKILL and waits for it to be gone.
func (p *proc) kill9() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// stop asks the process to stop (SIGTERM) and waits up to grace, then
// kills it. It reports whether it stopped by itself.
func (p *proc) stop(grace time.Duration) bool {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return true
	}
	select {
	case <-done:
		return true
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return true
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
		return false
	}
}

// tail returns the last n lines of the log.
func (p *proc) tail(n int) string {
	data, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// planeProc is a `warrant plane serve` on a fixed loopback port and data
// directory, so it can be killed and restarted in place.
type planeProc struct {
	*proc
	data       string
	addr       string
	url        string
	adminToken string
	admin      *client.Client
	key        *protocol.PublicKey
}

type planeConfig struct {
	data        string        // default: a fresh suite directory
	leaseTTL    time.Duration // default 3s
	heartbeat   time.Duration // default 1s
	contractTTL time.Duration // default 2m
	extra       []string
}

func startPlane(t testing.TB, name string, cfg planeConfig) *planeProc {
	t.Helper()
	bin := warrantBinary(t)
	if cfg.data == "" {
		cfg.data = filepath.Join(suiteDir(t, name), "data")
	}
	if cfg.leaseTTL == 0 {
		cfg.leaseTTL = 3 * time.Second
	}
	if cfg.heartbeat == 0 {
		cfg.heartbeat = time.Second
	}
	if cfg.contractTTL == 0 {
		cfg.contractTTL = 2 * time.Minute
	}
	addr := testutil.FreeAddr(t)
	logDir := suiteDir(t, name+"-log")
	args := append([]string{"plane", "serve", "--data", cfg.data, "--listen", addr,
		"--lease-ttl", cfg.leaseTTL.String(), "--heartbeat", cfg.heartbeat.String(), "--contract-ttl", cfg.contractTTL.String(),
		"--max-claim-wait", "5s", "--shutdown-grace", "5s", "--rate-limit", "100000", "--rate-burst", "100000"}, cfg.extra...)
	pp := &planeProc{
		proc: &proc{t: t, name: name, bin: bin, args: args, logPath: filepath.Join(logDir, "plane.log"),
			env: append(os.Environ(), "WARRANT_CONFIG_DIR="+filepath.Join(logDir, "config"))},
		data: cfg.data, addr: addr,
	}
	pp.url = pp.start(true)
	t.Cleanup(func() {
		if !pp.stop(10 * time.Second) {
			t.Errorf("%s did not stop on SIGTERM within 10s", name)
		}
		if t.Failed() {
			t.Logf("--- %s log (last lines):\n%s", name, pp.tail(40))
		}
	})
	tok, err := os.ReadFile(filepath.Join(cfg.data, plane.AdminTokenFile))
	if err != nil {
		t.Fatalf("admin token: %v", err)
	}
	pp.adminToken = strings.TrimSpace(string(tok))
	registerToken(t, pp.adminToken, "bootstrap admin token")
	pp.admin = newClient(t, pp.url, pp.adminToken)
	info, err := pp.admin.Info(bg(t))
	if err != nil {
		t.Fatal(err)
	}
	pp.key, err = protocol.ParsePublicKeyPEM(info.PlanePublicKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pp
}

// restart starts the plane again on the same port and data directory.
func (pp *planeProc) restart() {
	pp.t.Helper()
	if u := pp.start(true); u != pp.url {
		pp.t.Fatalf("restarted plane serves on %s, want %s", u, pp.url)
	}
}

// enrollToken returns a fresh enroll token for pool.
func (pp *planeProc) enrollToken(t testing.TB, pool string) string {
	t.Helper()
	et, err := pp.admin.CreateEnrollToken(bg(t), client.EnrollTokenRequest{Pool: pool})
	if err != nil {
		t.Fatalf("enroll token: %v", err)
	}
	registerToken(t, et.Token, "enroll token")
	return et.Token
}

// principal creates a principal with role and returns its token.
func (pp *planeProc) principal(t testing.TB, name, role string) string {
	t.Helper()
	resp, err := pp.admin.CreatePrincipal(bg(t), client.CreatePrincipalRequest{Name: name, Role: role})
	if err != nil {
		t.Fatalf("create %s %s: %v", role, name, err)
	}
	registerToken(t, resp.Token.Secret, role+" token of "+name)
	return resp.Token.Secret
}

// runnerProc is a `warrant runner start` with its own data directory.
type runnerProc struct {
	*proc
	data string
}

type runnerConfig struct {
	planeURL    string // where the runner connects (a relay, or the plane)
	enrollToken string
	pool        string // default "default"
	concurrency int    // default 2
	extra       []string
}

func startRunner(t testing.TB, name string, cfg runnerConfig) *runnerProc {
	t.Helper()
	bin := warrantBinary(t)
	if cfg.pool == "" {
		cfg.pool = "default"
	}
	if cfg.concurrency == 0 {
		cfg.concurrency = 2
	}
	dir := suiteDir(t, name)
	data := filepath.Join(dir, "data")
	args := append([]string{"runner", "start", "--pool", cfg.pool, "--enroll-token", cfg.enrollToken, "--data", data,
		"--name", name, "--concurrency", fmt.Sprint(cfg.concurrency), "--kill-grace", "1s", "--log-level", "debug"}, cfg.extra...)
	rp := &runnerProc{
		proc: &proc{t: t, name: name, bin: bin, args: args, logPath: filepath.Join(dir, "runner.log"),
			env: append(os.Environ(), "WARRANT_PLANE="+cfg.planeURL, "WARRANT_CONFIG_DIR="+filepath.Join(dir, "config"))},
		data: data,
	}
	rp.start(false)
	t.Cleanup(func() {
		rp.stop(20 * time.Second)
		if t.Failed() {
			t.Logf("--- %s log (last lines):\n%s", name, rp.tail(40))
		}
	})
	return rp
}

// identity waits for the runner to enroll and returns its id and public
// key, read from its data directory (not from the plane).
func (rp *runnerProc) identity(t testing.TB) (string, *protocol.PublicKey) {
	t.Helper()
	var id struct {
		RunnerID    string `json:"runnerId"`
		RunnerToken string `json:"runnerToken"`
	}
	ok := eventually(60*time.Second, func() bool {
		data, err := os.ReadFile(filepath.Join(rp.data, "identity.json"))
		return err == nil && json.Unmarshal(data, &id) == nil && id.RunnerID != ""
	})
	if !ok {
		t.Fatalf("%s did not enroll:\n%s", rp.name, rp.tail(30))
	}
	registerToken(t, id.RunnerToken, "runner token of "+rp.name)
	pemText, err := os.ReadFile(filepath.Join(rp.data, "runner.pub.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := protocol.ParsePublicKeyPEM(string(pemText))
	if err != nil {
		t.Fatal(err)
	}
	return id.RunnerID, pub
}

func newClient(t testing.TB, url, token string) *client.Client {
	t.Helper()
	c, err := client.New(url, client.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	return c
}
