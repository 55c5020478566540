package cli_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// ptyRun starts the real binary on a pseudo-terminal and collects what it
// writes there.
type ptyRun struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (s *stack) startOnPTY(t *testing.T, extraEnv []string, args ...string) *ptyRun {
	t.Helper()
	cmd := exec.Command(warrantBin, args...)
	cmd.Env = append(s.env(s.plane.AdminToken), append([]string{"TERM=xterm-256color"}, extraEnv...)...)
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 160})
	if err != nil {
		t.Fatalf("start on a pty: %v", err)
	}
	p := &ptyRun{cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			p.mu.Lock()
			p.out.Write(buf[:n])
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		f.Close()
	})
	return p
}

func (p *ptyRun) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *ptyRun) waitFor(t *testing.T, substr string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if strings.Contains(p.output(), substr) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no %q on the terminal after %s:\n%q", substr, d, p.output())
}

func (p *ptyRun) exitCode(t *testing.T) int {
	t.Helper()
	err := p.cmd.Wait()
	<-p.done
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return 0
}

// TestTerminalProgressAndColour checks, on a real pseudo-terminal, the
// progress line while a run waits for a runner and the colours of the
// event log; NO_COLOR turns colours off; piped output has no escapes.
func TestTerminalProgressAndColour(t *testing.T) {
	s := startStack(t)
	repo := gitRepo(t, map[string]string{"a": "a\n"})
	// Pool "default" has no runner: the run waits.
	sub := s.warrant(repo, s.plane.AdminToken, "run", "--detach", "--pool", "default", "--agent", "command", "true")
	expectCode(t, sub, 0, "submit")
	id := strings.TrimSpace(sub.stdout)

	p := s.startOnPTY(t, nil, "watch", id)
	p.waitFor(t, "waiting for a runner in pool default", 10*time.Second)
	time.Sleep(300 * time.Millisecond) // a few spinner frames
	if _, err := s.plane.Admin.Cancel(context.Background(), id, "test"); err != nil {
		t.Fatal(err)
	}
	if code := p.exitCode(t); code != 5 {
		t.Fatalf("watch of a cancelled run exited %d:\n%q", code, p.output())
	}
	out := p.output()
	for _, want := range []string{"\r\x1b[2K", "⠋", "\x1b[33mrun.cancelled\x1b[0m", "\x1b[2m"} {
		if !strings.Contains(out, want) {
			t.Errorf("terminal output lacks %q:\n%q", want, out)
		}
	}

	// NO_COLOR: the same run, replayed, carries no colour codes.
	nc := s.startOnPTY(t, []string{"NO_COLOR=1"}, "watch", id)
	if code := nc.exitCode(t); code != 5 {
		t.Fatalf("NO_COLOR watch exited %d", code)
	}
	if strings.Contains(nc.output(), "\x1b[3") || strings.Contains(nc.output(), "\x1b[2m") {
		t.Errorf("colour codes despite NO_COLOR:\n%q", nc.output())
	}
	if !strings.Contains(nc.output(), "run.cancelled") {
		t.Errorf("NO_COLOR output lacks the events:\n%q", nc.output())
	}

	// Piped: no escape codes at all, on either stream.
	piped := s.warrant(repo, s.plane.AdminToken, "watch", id)
	if strings.Contains(piped.stdout+piped.stderr, "\x1b") {
		t.Errorf("escape codes in piped output:\n%q\n%q", piped.stdout, piped.stderr)
	}
}
