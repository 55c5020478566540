package workspace_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"warrant.dev/warrant/internal/workspace"
	"warrant.dev/warrant/internal/workspace/workspacetest"
	"warrant.dev/warrant/protocol"
)

// TestMain gives every test (and the package's own git calls, which keep
// HOME on the user side) an empty home, so no global git configuration of
// the machine running the tests takes part.
func TestMain(m *testing.M) {
	home, err := os.MkdirTemp("", "workspace-test-home-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("HOME", home)
	os.Unsetenv("XDG_CONFIG_HOME")
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GIT_") {
			os.Unsetenv(strings.SplitN(kv, "=", 2)[0])
		}
	}
	code := m.Run()
	for _, f := range cleanups {
		f()
	}
	os.RemoveAll(home)
	os.Exit(code)
}

// cleanups run after all tests and benchmarks (for shared fixtures).
var cleanups []func()

// git runs a git command for the test itself (setting up repositories and
// checking them), failing the test on error.
func git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	out, err := gitErr(dir, args...)
	if err != nil {
		t.Fatalf("git %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func gitErr(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=test", "GIT_AUTHOR_EMAIL=test@example.com",
		"GIT_COMMITTER_NAME=test", "GIT_COMMITTER_EMAIL=test@example.com",
		"LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%v: %s", err, stderr.String())
	}
	return stdout.String(), nil
}

// newRepo makes an empty repository with branch main.
func newRepo(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	git(t, dir, "init", "-q", "-b", "main")
	git(t, dir, "config", "commit.gpgsign", "false")
	return dir
}

func write(t testing.TB, dir, rel, content string) {
	t.Helper()
	writeMode(t, dir, rel, content, 0o644)
}

func writeMode(t testing.TB, dir, rel, content string, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func symlink(t testing.TB, dir, rel, target string) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

func commitAll(t testing.TB, dir, msg string) {
	t.Helper()
	git(t, dir, "add", "-A")
	git(t, dir, "commit", "-q", "-m", msg)
}

// node is one file of a tree as tests compare them.
type node struct {
	Mode    string // protocol mode
	Content string // content, or symlink target
}

// readTree returns every file and symlink under dir, skipping .git.
func readTree(t testing.TB, dir string) map[string]node {
	t.Helper()
	out := map[string]node{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if fi.IsDir() {
			if fi.Name() == ".git" {
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = node{protocol.ModeSymlink, target}
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			mode := protocol.ModeFile
			if fi.Mode()&0o100 != 0 {
				mode = protocol.ModeExecutable
			}
			out[rel] = node{mode, string(b)}
		default:
			out[rel] = node{"special", ""}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffTrees(want, got map[string]node) string {
	var keys []string
	seen := map[string]bool{}
	for k := range want {
		keys = append(keys, k)
		seen[k] = true
	}
	for k := range got {
		if !seen[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		w, wok := want[k]
		g, gok := got[k]
		switch {
		case !wok:
			fmt.Fprintf(&b, "  unexpected %s (%s %q)\n", k, g.Mode, trim(g.Content))
		case !gok:
			fmt.Fprintf(&b, "  missing %s\n", k)
		case w != g:
			fmt.Fprintf(&b, "  %s: want %s %q, got %s %q\n", k, w.Mode, trim(w.Content), g.Mode, trim(g.Content))
		}
	}
	return b.String()
}

func trim(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// captureUpload captures dir and uploads it to store.
func captureUpload(t testing.TB, opts workspace.CaptureOptions, store *workspacetest.MemStore) (*workspace.Captured, workspace.UploadStats) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	c, err := workspace.Capture(context.Background(), opts)
	if err != nil {
		t.Fatalf("Capture: %v", err)
	}
	st, err := workspace.Upload(context.Background(), c, store)
	if err != nil {
		t.Fatalf("Upload: %v", err)
	}
	return c, st
}

// materialize materializes a manifest into a fresh directory.
func materialize(t testing.TB, m *protocol.Manifest, src workspace.BlobSource) *workspace.Materialized {
	t.Helper()
	base := t.TempDir()
	w, err := workspace.Materialize(context.Background(), workspace.MaterializeOptions{
		Dir:      filepath.Join(base, "ws"),
		StateDir: filepath.Join(base, "state"),
		Manifest: m,
		Source:   src,
		Logger:   testLogger(t),
	})
	if err != nil {
		t.Fatalf("Materialize: %v", err)
	}
	return w
}
