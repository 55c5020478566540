package scale_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
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
func warrantBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "warrant-scale-bin-")
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

// lockedBuffer collects a process's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// tail returns the last n lines.
func (l *lockedBuffer) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := strings.Split(strings.TrimRight(l.b.String(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// proc is a warrant child process.
type proc struct {
	name string
	cmd  *exec.Cmd
	url  string // a plane's, once it serves
	logs *lockedBuffer
	done chan struct{}
	err  error // the exit, once done is closed
}

// startProc starts bin with args. With wantURL it waits until the process
// prints the line `warrant plane serving on URL`. At cleanup the process
// gets SIGTERM, then SIGKILL after 10 s; its log tail is printed if the
// test failed.
func startProc(t testing.TB, name, bin string, env []string, wantURL bool, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, logs: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout = p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.logs.Write([]byte(line + "\n"))
			if rest, ok := strings.CutPrefix(line, "warrant plane serving on "); ok {
				urlc <- strings.TrimSpace(rest)
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("--- %s (last lines):\n%s", name, p.logs.tail(40))
		}
	})
	if !wantURL {
		return p
	}
	select {
	case p.url = <-urlc:
	case <-p.done:
		t.Fatalf("%s exited: %v\n%s", name, p.err, p.logs)
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not start serving:\n%s", name, p.logs)
	}
	return p
}

// stop ends the process gracefully (SIGTERM), or kills it after 10 s.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// kill9 kills the process with SIGKILL and waits for it.
func (p *proc) kill9() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// sharedKeys writes the plane signing key every replica uses and returns
// its file, the base64 master key (WARRANT_MASTER_KEY) and the public key.
func sharedKeys(t testing.TB, dir string) (keyFile, masterB64 string, pub *protocol.PublicKey) {
	t.Helper()
	key, err := protocol.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	pemText, err := key.PEM()
	if err != nil {
		t.Fatal(err)
	}
	keyFile = filepath.Join(dir, "shared-plane.key.pem")
	if err := os.WriteFile(keyFile, []byte(pemText), 0o600); err != nil {
		t.Fatal(err)
	}
	master := make([]byte, 32)
	_, _ = rand.Read(master)
	return keyFile, base64.StdEncoding.EncodeToString(master), key.Public()
}

func newClient(t testing.TB, url, token string) *client.Client {
	t.Helper()
	c, err := client.New(url, client.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func readToken(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("admin token: %v", err)
	}
	return strings.TrimSpace(string(b))
}
