//go:build linux

package session

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// treeScript starts two grandchildren that ignore SIGTERM (and so do
// their own children: an ignored signal stays ignored across exec), writes
// every pid to ./pids, waits until all three are written, then runs body.
const treeScript = `
sh -c 'trap "" TERM; echo $$ >> pids; while :; do sleep 1; done' &
sh -c 'trap "" TERM; echo $$ >> pids; exec sleep 1000' &
echo $$ >> pids
while [ "$(wc -l < pids)" -lt 3 ]; do sleep 0.01; done
`

// syncBuffer is a log the supervisor and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitPids waits until dir/pids lists n pids and returns them.
func waitPids(t *testing.T, dir string, n int) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, _ := os.ReadFile(filepath.Join(dir, "pids"))
		fields := strings.Fields(string(data))
		if len(fields) >= n {
			pids := make([]int, 0, len(fields))
			for _, f := range fields {
				p, err := strconv.Atoi(f)
				if err != nil {
					t.Fatalf("pids file: %q", data)
				}
				pids = append(pids, p)
			}
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d pids appeared: %q", len(fields), n, data)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ProcessAlive reports whether pid is a live (non-zombie) process.
func processAlive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	state, _, ok := parseStat(stat)
	return ok && state != 'Z' && state != 'X'
}

func assertAllDead(t *testing.T, pids []int) {
	t.Helper()
	for _, p := range pids {
		if processAlive(p) {
			t.Errorf("pid %d survived the session", p)
			_ = exec.Command("kill", "-9", strconv.Itoa(p)).Run()
		}
	}
}

func treeCmd(dir, body string) *exec.Cmd {
	cmd := exec.Command("/bin/sh", "-c", treeScript+body)
	cmd.Dir = dir
	return cmd
}

func TestSuperviseTimeoutKillsTheTree(t *testing.T) {
	dir := t.TempDir()
	var log syncBuffer
	res, err := Supervise(context.Background(), treeCmd(dir, "trap '' TERM; wait"), &log,
		Limits{Timeout: 500 * time.Millisecond, KillGrace: 200 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pids := waitPids(t, dir, 3)
	if res.End != TimedOut || res.ExitCode != 128+9 {
		t.Fatalf("result %+v, want timed out and killed (137)", res)
	}
	assertAllDead(t, pids)
}

func TestSuperviseLogCapKillsTheTree(t *testing.T) {
	dir := t.TempDir()
	var log syncBuffer
	var started int
	res, err := Supervise(context.Background(), treeCmd(dir, "while :; do echo 0123456789; done"), &log,
		Limits{Timeout: time.Minute, LogMaxBytes: 1000, KillGrace: 200 * time.Millisecond}, func(pid int) { started = pid })
	if err != nil {
		t.Fatal(err)
	}
	pids := waitPids(t, dir, 3)
	if res.End != LogLimit {
		t.Fatalf("result %+v, want log limit", res)
	}
	if !slices.Contains(pids, started) {
		t.Fatalf("started called with %d, not a pid of the tree %v", started, pids)
	}
	out := log.String()
	head, marker, ok := strings.Cut(out, "\n[warrant: session log exceeded its limit of 1000 bytes")
	if !ok || len(head) != 1000 || !strings.HasPrefix(head, "0123456789\n") {
		t.Fatalf("log (%d bytes) not capped at 1000 with a marker: %q…", len(out), out[:min(len(out), 80)])
	}
	if strings.Contains(marker, "0123456789") {
		t.Fatal("output after the cap reached the log")
	}
	assertAllDead(t, pids)
}

func TestSuperviseInterruptKillsTheTree(t *testing.T) {
	dir := t.TempDir()
	var log syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		waitPids(t, dir, 3)
		cancel()
	}()
	start := time.Now()
	res, err := Supervise(ctx, treeCmd(dir, "wait"), &log, Limits{Timeout: time.Minute, KillGrace: 300 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pids := waitPids(t, dir, 3)
	if res.End != Interrupted {
		t.Fatalf("result %+v, want interrupted", res)
	}
	// The leader dies of SIGTERM; its grandchildren ignore it and need
	// the SIGKILL that follows the grace period.
	if res.ExitCode != 128+15 {
		t.Fatalf("exit code %d, want 143 (SIGTERM)", res.ExitCode)
	}
	if time.Since(start) < 300*time.Millisecond {
		t.Fatal("returned before the grace period although processes ignored SIGTERM")
	}
	assertAllDead(t, pids)
}

func TestSuperviseExitTakesLeftoversAlong(t *testing.T) {
	dir := t.TempDir()
	var log syncBuffer
	res, err := Supervise(context.Background(), treeCmd(dir, "echo done; exit 3"), &log, Limits{Timeout: time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pids := waitPids(t, dir, 3)
	if res.End != Exited || res.ExitCode != 3 {
		t.Fatalf("result %+v, want exited 3", res)
	}
	if !strings.Contains(log.String(), "done\n") {
		t.Fatalf("log %q", log.String())
	}
	assertAllDead(t, pids)
}

func TestSuperviseSpawnFailure(t *testing.T) {
	var log syncBuffer
	res, err := Supervise(context.Background(), exec.Command(filepath.Join(t.TempDir(), "no-such-binary")), &log, Limits{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != SpawnFailedExitCode || !strings.Contains(log.String(), "spawn error:") {
		t.Fatalf("result %+v log %q", res, log.String())
	}
}

func TestSuperviseMergesStdoutAndStderr(t *testing.T) {
	var log syncBuffer
	res, err := Supervise(context.Background(), exec.Command("/bin/sh", "-c", "echo out; echo err >&2; echo out2"), &log, Limits{}, nil)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("%+v %v", res, err)
	}
	if log.String() != "out\nerr\nout2\n" {
		t.Fatalf("log %q", log.String())
	}
}
