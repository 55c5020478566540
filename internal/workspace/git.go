package workspace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
)

// GitError reports a git command that failed. Stderr is git's own message
// (trimmed and capped); it names paths and refs, never file contents.
type GitError struct {
	Args     []string // the git subcommand and its arguments
	ExitCode int      // -1 when git did not run or was killed
	Stderr   string
	Err      error
}

func (e *GitError) Error() string {
	name := "git"
	if len(e.Args) > 0 {
		name = "git " + e.Args[0]
	}
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" && e.Err != nil {
		msg = e.Err.Error()
	}
	return fmt.Sprintf("%s: exit %d: %s", name, e.ExitCode, msg)
}

func (e *GitError) Unwrap() error { return e.Err }

// ErrGitNotFound is returned when no git binary is on PATH.
var ErrGitNotFound = errors.New("workspace: git is not installed or not on PATH")

var (
	gitPathOnce sync.Once
	gitPath     string
	gitPathErr  error
)

func gitBinary() (string, error) {
	gitPathOnce.Do(func() {
		gitPath, gitPathErr = exec.LookPath("git")
		if gitPathErr != nil {
			gitPathErr = fmt.Errorf("%w: %v", ErrGitNotFound, gitPathErr)
		}
	})
	return gitPath, gitPathErr
}

// side says whose machine a git command runs on, which decides how much
// of the surrounding configuration it may see.
type side int

const (
	// userSide commands run in the requester's own repository (capture,
	// pull). They keep HOME and XDG_CONFIG_HOME so the user's global
	// excludes file and identity apply, but never the system config, hooks
	// or fsmonitor.
	userSide side = iota
	// runnerSide commands run on a runner over content the runner did not
	// write itself. They see no system or global configuration at all.
	runnerSide
)

// gitEnv builds a git environment from scratch: nothing of the caller's
// GIT_* variables (GIT_DIR, GIT_INDEX_FILE, GIT_EXTERNAL_DIFF, ...) leaks
// in, and the locale is C so messages and sort orders are stable.
func gitEnv(s side, extra ...string) []string {
	env := []string{
		"LC_ALL=C",
		"LANG=C",
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_ATTR_NOSYSTEM=1",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_NO_REPLACE_OBJECTS=1",
		"GIT_OPTIONAL_LOCKS=0",
		"GIT_NO_LAZY_FETCH=1",
		// glibc: keep freed memory instead of returning it at once. Git's
		// zlib streams otherwise grow and shrink the heap for every
		// object, which costs more than the work itself on some VMs.
		"GLIBC_TUNABLES=glibc.malloc.trim_threshold=134217728:glibc.malloc.top_pad=16777216:glibc.malloc.mmap_threshold=4194304",
	}
	for _, k := range []string{"PATH", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	switch s {
	case userSide:
		for _, k := range []string{"HOME", "XDG_CONFIG_HOME"} {
			if v, ok := os.LookupEnv(k); ok {
				env = append(env, k+"="+v)
			}
		}
	case runnerSide:
		env = append(env, "GIT_CONFIG_GLOBAL=/dev/null", "HOME=/nonexistent")
	}
	return append(env, extra...)
}

// gitGlobalArgs come before every subcommand: no hooks, no fsmonitor
// daemon or hook, no pager, raw paths in output.
var gitGlobalArgs = []string{
	"-c", "core.hooksPath=/dev/null",
	"-c", "core.fsmonitor=false",
	"-c", "core.quotePath=false",
	"-c", "protocol.allow=never",
	"--no-pager",
	"--literal-pathspecs",
}

// gitRunner runs git commands in one directory with one environment.
type gitRunner struct {
	dir string
	env []string
}

func newGit(dir string, s side, extra ...string) *gitRunner {
	return &gitRunner{dir: dir, env: gitEnv(s, extra...)}
}

// with returns a runner with extra environment entries.
func (g *gitRunner) with(extra ...string) *gitRunner {
	env := make([]string, 0, len(g.env)+len(extra))
	env = append(env, g.env...)
	return &gitRunner{dir: g.dir, env: append(env, extra...)}
}

// gitCommands counts the git processes this package started, for tests
// that check a path runs none.
var gitCommands atomic.Int64

func (g *gitRunner) command(ctx context.Context, args []string) (*exec.Cmd, error) {
	bin, err := gitBinary()
	if err != nil {
		return nil, err
	}
	gitCommands.Add(1)
	full := make([]string, 0, len(gitGlobalArgs)+len(args))
	full = append(full, gitGlobalArgs...)
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, bin, full...)
	cmd.Dir = g.dir
	cmd.Env = g.env
	return cmd, nil
}

const maxStderr = 4 << 10

// run runs git and returns its standard output. A non-zero exit is a
// *GitError.
func (g *gitRunner) run(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error) {
	var out bytes.Buffer
	if err := g.runTo(ctx, &out, stdin, args...); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// runTo runs git with its standard output streamed to w.
func (g *gitRunner) runTo(ctx context.Context, w io.Writer, stdin io.Reader, args ...string) error {
	cmd, err := g.command(ctx, args)
	if err != nil {
		return err
	}
	var stderr capWriter
	stderr.max = maxStderr
	cmd.Stdin = stdin
	cmd.Stdout = w
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return g.wrap(ctx, args, err, stderr.String())
	}
	return nil
}

// exitCode runs git and returns its exit code, for commands whose status
// is an answer (merge-file, rev-parse --verify). Output goes to w.
func (g *gitRunner) exitCode(ctx context.Context, w io.Writer, stdin io.Reader, args ...string) (int, error) {
	cmd, err := g.command(ctx, args)
	if err != nil {
		return -1, err
	}
	var stderr capWriter
	stderr.max = maxStderr
	cmd.Stdin = stdin
	cmd.Stdout = w
	cmd.Stderr = &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) && ctx.Err() == nil && exit.ExitCode() >= 0 {
		return exit.ExitCode(), nil
	}
	if err != nil {
		return -1, g.wrap(ctx, args, err, stderr.String())
	}
	return 0, nil
}

func (g *gitRunner) wrap(ctx context.Context, args []string, err error, stderr string) error {
	if ctx.Err() != nil {
		return fmt.Errorf("git %s: %w", args[0], ctx.Err())
	}
	code := -1
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	}
	return &GitError{Args: args, ExitCode: code, Stderr: stderr, Err: err}
}

// capWriter keeps the first max bytes written to it.
type capWriter struct {
	buf bytes.Buffer
	max int
}

func (w *capWriter) Write(p []byte) (int, error) {
	if room := w.max - w.buf.Len(); room > 0 {
		if len(p) > room {
			w.buf.Write(p[:room])
		} else {
			w.buf.Write(p)
		}
	}
	return len(p), nil
}

func (w *capWriter) String() string { return w.buf.String() }

// splitNUL splits NUL-terminated records.
func splitNUL(b []byte) []string {
	if len(b) == 0 {
		return nil
	}
	s := string(b)
	s = strings.TrimSuffix(s, "\x00")
	return strings.Split(s, "\x00")
}
