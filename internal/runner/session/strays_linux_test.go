package session

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestKillStrays starts a "session" whose harness forks a child and dies,
// as a runner SIGKILLed mid-session leaves it, and checks that KillStrays
// finds and kills both processes by the marker they inherited, and leaves
// other runners' sessions alone.
func TestKillStrays(t *testing.T) {
	root := filepath.Join(t.TempDir(), "sessions")
	other := filepath.Join(t.TempDir(), "sessions")
	start := func(scratch string) *exec.Cmd {
		cmd := exec.Command("sh", "-c", "sleep 300 & sleep 300")
		cmd.Env = append(os.Environ(), MarkerEnv+"="+scratch)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
		return cmd
	}
	mine := start(filepath.Join(root, "run_a", "scratch"))
	theirs := start(filepath.Join(other, "run_b", "scratch"))
	time.Sleep(200 * time.Millisecond) // let sh fork its background sleep

	if n := KillStrays(root); n < 2 {
		t.Fatalf("KillStrays killed %d processes, want the shell and its child", n)
	}
	done := make(chan error, 1)
	go func() { done <- mine.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the stray session's shell is still running")
	}
	deadline := time.Now().Add(5 * time.Second)
	for liveMember(mine.Process.Pid) {
		if time.Now().After(deadline) {
			t.Fatal("the stray session's child is still running")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !liveMember(theirs.Process.Pid) {
		t.Fatal("KillStrays killed another runner's session")
	}
	if n := KillStrays(root); n != 0 {
		t.Fatalf("a second pass killed %d processes", n)
	}
}
