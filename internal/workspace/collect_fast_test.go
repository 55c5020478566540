package workspace_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"warrant.dev/warrant/internal/workspace"
	"warrant.dev/warrant/internal/workspace/workspacetest"
	"warrant.dev/warrant/protocol"
)

// fastPathEntries is a small workspace with a file in the top directory
// and in nested ones, an executable, a symlink and a .gitignore.
func fastPathEntries() []rawEntry {
	const f, x, l = protocol.ModeFile, protocol.ModeExecutable, protocol.ModeSymlink
	return []rawEntry{
		{f, ".gitignore", "build/\n*.o\n"},
		{f, "README.md", "# project\n"},
		{l, "docs", "README.md"},
		{x, "scripts/build.sh", "#!/bin/sh\ngo build ./...\n"},
		{f, "src/deep/util.go", "package deep\n"},
		{f, "src/main.go", "package main\n\nfunc main() {}\n"},
	}
}

// An untouched workspace costs no git process at all, from Materialize
// through Collect.
func TestMaterializeAndUnchangedCollectRunNoGit(t *testing.T) {
	store := &workspacetest.MemStore{}
	m := rawManifest(store, fastPathEntries()...)
	before := workspace.GitCommands()
	w := materialize(t, m, store)
	out, err := workspace.Collect(context.Background(), w)
	if err != nil {
		t.Fatal(err)
	}
	if n := workspace.GitCommands() - before; n != 0 {
		t.Errorf("Materialize and Collect ran %d git commands, want none", n)
	}
	if len(out.Diff) != 0 || len(out.Changed) != 0 || len(out.Skipped) != 0 {
		t.Errorf("untouched workspace: %+v", out)
	}
}

// Whatever a session does, Collect with the state directory (fast path
// when nothing changed, git otherwise) gives exactly what the git path
// alone gives. Changes the fast path must see go to git; changes that
// leave the work tree as it was (in .git only) do not.
func TestCollectFastPathAgreesWithGit(t *testing.T) {
	type mutation struct {
		name string
		edit func(t *testing.T, ws string)
		fast bool // Collect should answer without git
		// same: the git path reports nothing either (the work tree
		// changed in a way a diff does not show)
		same bool
	}
	rewrite := func(rel, content string, keepMtime bool) func(t *testing.T, ws string) {
		return func(t *testing.T, ws string) {
			p := filepath.Join(ws, rel)
			fi, err := os.Lstat(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			if keepMtime {
				os.Chtimes(p, fi.ModTime(), fi.ModTime())
			}
		}
	}
	cases := []mutation{
		{"nothing", func(t *testing.T, ws string) {}, true, true},
		{"session commits and rewrites its git config", func(t *testing.T, ws string) {
			git(t, ws, "commit", "-q", "--allow-empty", "-m", "agent")
			write(t, ws, ".git/config", "[core]\n\tbare = false\n")
		}, true, true},
		{"same-size rewrite at once", rewrite("README.md", "# PROJECT\n", false), false, false},
		{"same-size rewrite, mtime put back", rewrite("src/main.go", "package niam\n\nfunc main() {}\n", true), false, false},
		{"same content rewritten", rewrite("README.md", "# project\n", false), false, true},
		{"append", rewrite("src/deep/util.go", "package deep\n// more\n", false), false, false},
		{"delete", func(t *testing.T, ws string) { os.Remove(filepath.Join(ws, "src/main.go")) }, false, false},
		{"delete a whole directory", func(t *testing.T, ws string) { os.RemoveAll(filepath.Join(ws, "src/deep")) }, false, false},
		{"chmod +x", func(t *testing.T, ws string) { os.Chmod(filepath.Join(ws, "README.md"), 0o755) }, false, false},
		{"chmod -x", func(t *testing.T, ws string) { os.Chmod(filepath.Join(ws, "scripts/build.sh"), 0o644) }, false, false},
		{"chmod without exec change", func(t *testing.T, ws string) { os.Chmod(filepath.Join(ws, "README.md"), 0o600) }, false, true},
		{"touch", func(t *testing.T, ws string) {
			later := time.Now().Add(time.Hour)
			os.Chtimes(filepath.Join(ws, "README.md"), later, later)
		}, false, true},
		{"symlink retargeted, same length", func(t *testing.T, ws string) {
			os.Remove(filepath.Join(ws, "docs"))
			symlink(t, ws, "docs", "README.mx")
		}, false, false},
		{"symlink replaced by a file", func(t *testing.T, ws string) {
			os.Remove(filepath.Join(ws, "docs"))
			write(t, ws, "docs", "README.md")
		}, false, false},
		{"new file", func(t *testing.T, ws string) { write(t, ws, "src/new.go", "package main\n") }, false, false},
		{"new file in a new directory", func(t *testing.T, ws string) { write(t, ws, "pkg/a/b.txt", "b\n") }, false, false},
		{"new ignored file", func(t *testing.T, ws string) { write(t, ws, "build/out.o", "binary\n") }, false, true},
		{"new empty directory", func(t *testing.T, ws string) { os.Mkdir(filepath.Join(ws, "empty"), 0o755) }, false, true},
		{"new hard link to a tracked file", func(t *testing.T, ws string) {
			os.Link(filepath.Join(ws, "README.md"), filepath.Join(ws, "README.copy"))
		}, false, false},
		{"rename", func(t *testing.T, ws string) {
			os.Rename(filepath.Join(ws, "src/main.go"), filepath.Join(ws, "src/app.go"))
		}, false, false},
		{"file replaced by a directory", func(t *testing.T, ws string) {
			os.Remove(filepath.Join(ws, "README.md"))
			write(t, ws, "README.md/inner", "x\n")
		}, false, false},
		{"directory replaced by a file", func(t *testing.T, ws string) {
			os.RemoveAll(filepath.Join(ws, "src/deep"))
			write(t, ws, "src/deep", "now a file\n")
		}, false, false},
		{"nested repository", func(t *testing.T, ws string) {
			write(t, ws, "vendor/lib/lib.go", "package lib\n")
			git(t, filepath.Join(ws, "vendor/lib"), "init", "-q")
		}, false, false},
		{"a .git directory inside a tracked directory", func(t *testing.T, ws string) {
			git(t, filepath.Join(ws, "src/deep"), "init", "-q")
		}, false, true},
	}
	store := &workspacetest.MemStore{}
	m := rawManifest(store, fastPathEntries()...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := materialize(t, m, store)
			tc.edit(t, w.Dir)
			before := workspace.GitCommands()
			got, err := workspace.Collect(context.Background(), w)
			if err != nil {
				t.Fatal(err)
			}
			if ran := workspace.GitCommands() - before; (ran == 0) != tc.fast {
				t.Errorf("Collect ran %d git commands; want the fast path: %v", ran, tc.fast)
			}
			// The git path alone: no state directory, so no fast path.
			want, err := workspace.Collect(context.Background(), &workspace.Materialized{Dir: w.Dir, BaseCommit: w.BaseCommit, BaseTree: w.BaseTree})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Diff, want.Diff) || !slices.Equal(got.Changed, want.Changed) || !slices.Equal(got.Skipped, want.Skipped) {
				t.Errorf("Collect with the state directory:\n%+v\ngit path alone:\n%+v", got, want)
			}
			if seen := len(want.Changed) > 0 || len(want.Skipped) > 0; seen == tc.same {
				t.Errorf("the git path reports changes: %v, want %v", seen, !tc.same)
			}
		})
	}
}

// A damaged baseline in the state directory is not trusted: Collect
// takes the git path and still reports the change.
func TestCollectIgnoresDamagedBaseIndex(t *testing.T) {
	store := &workspacetest.MemStore{}
	m := rawManifest(store, fastPathEntries()...)
	w := materialize(t, m, store)
	write(t, w.Dir, "README.md", "# changed\n")
	index := filepath.Join(w.StateDir, "index")
	b, err := os.ReadFile(index)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(index, b, 0o600); err != nil {
		t.Fatal(err)
	}
	before := workspace.GitCommands()
	out, err := workspace.Collect(context.Background(), w)
	if workspace.GitCommands() == before {
		t.Error("Collect trusted a damaged base index")
	}
	// Git refuses the damaged copy too: an error, never a silent miss.
	if err == nil && len(out.Changed) == 0 {
		t.Errorf("the change was missed: %+v", out)
	}
}
