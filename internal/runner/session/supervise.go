//go:build unix

package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Limits bound a supervised process tree.
type Limits struct {
	// Timeout is the wall-clock ceiling; 0 means none.
	Timeout time.Duration
	// LogMaxBytes caps the bytes copied to the log; past it the tree is
	// killed. 0 means no cap.
	LogMaxBytes int64
	// KillGrace is the time between SIGTERM and SIGKILL; 0 means
	// DefaultKillGrace.
	KillGrace time.Duration
}

// DefaultKillGrace is the time a process tree has to exit after SIGTERM.
const DefaultKillGrace = 10 * time.Second

// How long Supervise waits, after SIGKILL, for the process group to be
// gone and for the output pipe to drain. A process in uninterruptible
// sleep, or one that left the group and still holds the pipe, cannot hold
// the session open longer than this.
const (
	reapTimeout  = 5 * time.Second
	drainTimeout = time.Second
	pollInterval = 10 * time.Millisecond
)

// Supervise runs cmd as the leader of a new process group and supervises
// the whole group: its stdout and stderr, merged, are copied to log; when
// the timeout passes, the log cap is crossed or ctx ends, the group gets
// SIGTERM and, after the grace period, SIGKILL; when the leader exits, the
// processes it left behind get SIGKILL. Supervise returns once no process
// of the group is left (or reapTimeout has passed), so nothing the session
// started outlives it. started, if set, is called with the leader's pid.
//
// A process that moves itself to another process group or session (setsid)
// escapes this supervision; backends that must contain such processes use a
// PID namespace, whose init takes every process with it.
//
// A command that cannot be started is reported as exit code
// SpawnFailedExitCode with the reason written to log. An error is returned
// only when ctx ended before the command was started.
func Supervise(ctx context.Context, cmd *exec.Cmd, log io.Writer, lim Limits, started func(pid int)) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("session not started: %w", context.Cause(ctx))
	}
	grace := lim.KillGrace
	if grace <= 0 {
		grace = DefaultKillGrace
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pgid = 0
	setDeathSignal(cmd.SysProcAttr)

	pr, pw, err := os.Pipe()
	if err != nil {
		return Result{}, fmt.Errorf("session output pipe: %w", err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		pw.Close()
		pr.Close()
		fmt.Fprintf(log, "spawn error: %v\n", err)
		return Result{ExitCode: SpawnFailedExitCode, End: Exited}, nil
	}
	pw.Close()
	pgid := cmd.Process.Pid
	if started != nil {
		started(pgid)
	}

	out := &cappedCopy{log: log, max: lim.LogMaxBytes, over: make(chan struct{})}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		out.copyFrom(pr)
	}()
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		_ = cmd.Wait() // the exit status is read from ProcessState
	}()

	var timeout <-chan time.Time
	if lim.Timeout > 0 {
		t := time.NewTimer(lim.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	end := Exited
	select {
	case <-exited:
	case <-ctx.Done():
		end = Interrupted
	case <-timeout:
		end = TimedOut
	case <-out.over:
		end = LogLimit
	}
	if end != Exited {
		terminateGroup(pgid, grace, exited)
	}
	<-exited
	// Whatever the leader left behind in its group goes with it.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	waitGroupGone(pgid, reapTimeout)
	select {
	case <-drained:
	case <-time.After(drainTimeout):
		// A process outside the group still holds the pipe: stop reading.
		pr.Close()
		<-drained
	}
	pr.Close()
	if end == Exited && out.exceeded() {
		end = LogLimit
	}
	return Result{ExitCode: exitCode(cmd.ProcessState), End: end}, nil
}

// terminateGroup sends SIGTERM to the group, waits up to grace for the
// leader and every member to be gone, then sends SIGKILL.
func terminateGroup(pgid int, grace time.Duration, exited <-chan struct{}) {
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	leaderDone := false
	for time.Now().Before(deadline) {
		if !leaderDone {
			select {
			case <-exited:
				leaderDone = true
			default:
			}
		}
		if leaderDone && !groupAlive(pgid) {
			return
		}
		time.Sleep(pollInterval)
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// waitGroupGone polls until no live process is left in the group.
func waitGroupGone(pgid int, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for groupAlive(pgid) && time.Now().Before(deadline) {
		time.Sleep(pollInterval)
	}
}

// groupAlive reports whether a process of group pgid still runs. Zombies
// do not count: they run nothing, and not every init reaps them promptly.
func groupAlive(pgid int) bool {
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	return liveMember(pgid)
}

// exitCode is the exit code, or 128+N for death by signal N.
func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return -1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// cappedCopy copies the session output to the log up to max bytes, then
// writes a marker, signals over and discards the rest.
type cappedCopy struct {
	log  io.Writer
	max  int64
	over chan struct{}

	mu      sync.Mutex
	written int64
	hitCap  bool
}

func (c *cappedCopy) copyFrom(r io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			c.write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

func (c *cappedCopy) write(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hitCap {
		return
	}
	if c.max > 0 && c.written+int64(len(p)) > c.max {
		keep := c.max - c.written
		_, _ = c.log.Write(p[:keep])
		c.written += keep
		fmt.Fprintf(c.log, "\n[warrant: session log exceeded its limit of %d bytes; the session was stopped]\n", c.max)
		c.hitCap = true
		close(c.over)
		return
	}
	_, _ = c.log.Write(p)
	c.written += int64(len(p))
}

func (c *cappedCopy) exceeded() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hitCap
}
