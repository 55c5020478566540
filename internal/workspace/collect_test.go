package workspace_test

import (
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

// baseRepo is the repository most collect and pull tests start from.
func baseRepo(t *testing.T) string {
	repo := newRepo(t)
	write(t, repo, "README.md", "# project\n\nintro\n")
	write(t, repo, "src/main.go", "package main\n\nfunc main() {\n\tprintln(\"hi\")\n}\n")
	write(t, repo, "src/util.go", "package main\n\nfunc util() int { return 1 }\n")
	write(t, repo, "src/remove-me.go", "package main\n")
	write(t, repo, "assets/logo.bin", string([]byte{0, 1, 2, 3, 0xff, 0xfe, 0, 9}))
	writeMode(t, repo, "scripts/build.sh", "#!/bin/sh\ngo build ./...\n", 0o755)
	write(t, repo, "scripts/lint.sh", "#!/bin/sh\ngo vet ./...\n")
	write(t, repo, ".gitignore", "build/\n*.o\n")
	symlink(t, repo, "docs", "README.md")
	commitAll(t, repo, "init")
	return repo
}

func captureAndMaterialize(t *testing.T, repo string, stateDir bool) (*workspace.Captured, *workspacetest.MemStore, *workspace.Materialized) {
	store := &workspacetest.MemStore{}
	c, _ := captureUpload(t, workspace.CaptureOptions{Dir: repo}, store)
	if stateDir {
		return c, store, materialize(t, &c.Manifest, store)
	}
	w, err := workspace.Materialize(context.Background(), workspace.MaterializeOptions{
		Dir: filepath.Join(t.TempDir(), "ws"), Manifest: &c.Manifest, Source: store})
	if err != nil {
		t.Fatal(err)
	}
	return c, store, w
}

// agentEdits changes a workspace the way a session might.
func agentEdits(t *testing.T, ws string) {
	write(t, ws, "src/main.go", "package main\n\nfunc main() {\n\tprintln(\"hello\")\n}\n")
	write(t, ws, "src/new.go", "package main\n\nfunc added() {}\n")
	write(t, ws, "pkg/deep/new.txt", "new in a new directory\n")
	os.Remove(filepath.Join(ws, "src/remove-me.go"))
	write(t, ws, "assets/logo.bin", string([]byte{0, 1, 2, 3, 0xff, 0xfe, 0, 10, 11}))
	write(t, ws, "assets/new.bin", string([]byte{0xde, 0xad, 0, 0xbe, 0xef}))
	os.Chmod(filepath.Join(ws, "scripts/lint.sh"), 0o755)
	os.Remove(filepath.Join(ws, "docs"))
	symlink(t, ws, "docs", "src")
	symlink(t, ws, "latest", "src/new.go")
	write(t, ws, "build/out.txt", "ignored build output\n")
	write(t, ws, "x.o", "ignored object\n")
	// A nested repository the agent cloned or created.
	write(t, ws, "vendor/lib/lib.go", "package lib\n")
	git(t, filepath.Join(ws, "vendor/lib"), "init", "-q")
	// The session also commits and rewrites its own git state; the diff
	// is still against the base.
	git(t, ws, "add", "src/new.go")
	git(t, ws, "commit", "-q", "-m", "agent commit")
}

func TestCollectDiffReproducesSessionTree(t *testing.T) {
	for _, withState := range []bool{true, false} {
		name := "with state dir"
		if !withState {
			name = "without state dir"
		}
		t.Run(name, func(t *testing.T) {
			repo := baseRepo(t)
			c, store, w := captureAndMaterialize(t, repo, withState)
			agentEdits(t, w.Dir)
			out, err := workspace.Collect(context.Background(), w)
			if err != nil {
				t.Fatal(err)
			}
			tree := readTree(t, w.Dir)
			sum := func(p string) string { return protocol.HashBytes([]byte(tree[p].Content)) }
			want := []workspace.ChangedFile{
				{Path: "assets/logo.bin", Status: workspace.Modified, Mode: protocol.ModeFile, ContentHash: sum("assets/logo.bin"), Bytes: 9},
				{Path: "assets/new.bin", Status: workspace.Added, Mode: protocol.ModeFile, ContentHash: sum("assets/new.bin"), Bytes: 5},
				{Path: "docs", Status: workspace.Modified, Mode: protocol.ModeSymlink, ContentHash: protocol.HashBytes([]byte("src")), Bytes: 3},
				{Path: "latest", Status: workspace.Added, Mode: protocol.ModeSymlink, ContentHash: protocol.HashBytes([]byte("src/new.go")), Bytes: 10},
				{Path: "pkg/deep/new.txt", Status: workspace.Added, Mode: protocol.ModeFile, ContentHash: sum("pkg/deep/new.txt"), Bytes: 23},
				{Path: "scripts/lint.sh", Status: workspace.Modified, Mode: protocol.ModeExecutable, ContentHash: sum("scripts/lint.sh"), Bytes: int64(len(tree["scripts/lint.sh"].Content))},
				{Path: "src/main.go", Status: workspace.Modified, Mode: protocol.ModeFile, ContentHash: sum("src/main.go"), Bytes: int64(len(tree["src/main.go"].Content))},
				{Path: "src/new.go", Status: workspace.Added, Mode: protocol.ModeFile, ContentHash: sum("src/new.go"), Bytes: int64(len(tree["src/new.go"].Content))},
				{Path: "src/remove-me.go", Status: workspace.Deleted},
			}
			if !slices.Equal(out.Changed, want) {
				t.Errorf("Changed =\n%+v\nwant\n%+v", out.Changed, want)
			}
			if !slices.ContainsFunc(out.Skipped, func(s workspace.SkippedFile) bool { return s.Path == "vendor/lib" }) {
				t.Errorf("nested repository not reported as skipped: %+v", out.Skipped)
			}

			// git apply on a fresh materialization reproduces the tree
			// (minus what the diff deliberately leaves out).
			fresh := materialize(t, &c.Manifest, store)
			patch := filepath.Join(t.TempDir(), "out.diff")
			os.WriteFile(patch, out.Diff, 0o644)
			git(t, fresh.Dir, "apply", "--binary", patch)
			for _, p := range []string{"build/out.txt", "x.o", "vendor/lib/lib.go"} {
				delete(tree, p)
			}
			if d := diffTrees(tree, readTree(t, fresh.Dir)); d != "" {
				t.Errorf("fresh materialization + diff differs from the session's tree:\n%s", d)
			}
		})
	}
}

func TestCollectNoChanges(t *testing.T) {
	_, _, w := captureAndMaterialize(t, baseRepo(t), true)
	// As a restarted runner would: from the directories alone.
	reopened, err := workspace.OpenMaterialized(w.Dir, w.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	if reopened.BaseCommit != w.BaseCommit || reopened.BaseTree != w.BaseTree {
		t.Fatalf("reopened %+v, want %+v", reopened, w)
	}
	out, err := workspace.Collect(context.Background(), reopened)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Diff) != 0 || len(out.Changed) != 0 {
		t.Errorf("untouched workspace: diff %d bytes, %d changes", len(out.Diff), len(out.Changed))
	}
}

// Collect runs nothing the session configured in the workspace's .git:
// not fsmonitor, not a clean filter, not an external diff, not hooks.
func TestCollectIgnoresSessionGitConfig(t *testing.T) {
	_, _, w := captureAndMaterialize(t, baseRepo(t), true)
	marker := filepath.Join(t.TempDir(), "pwned")
	evil := filepath.Join(t.TempDir(), "evil.sh")
	writeMode(t, filepath.Dir(evil), "evil.sh", "#!/bin/sh\ntouch "+marker+"\ncat\n", 0o755)
	cfg := filepath.Join(w.Dir, ".git", "config")
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("[core]\n\tfsmonitor = " + evil + "\n\thooksPath = " + filepath.Dir(evil) + "\n" +
		"[filter \"evil\"]\n\tclean = " + evil + "\n\tsmudge = " + evil + "\n\trequired = true\n" +
		"[diff]\n\texternal = " + evil + "\n")
	f.Close()
	write(t, w.Dir, ".gitattributes", "* filter=evil diff=evil\n")
	write(t, w.Dir, ".git/info/attributes", "* filter=evil\n")
	write(t, w.Dir, "src/main.go", "package main // changed\n")
	out, err := workspace.Collect(context.Background(), w)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("Collect ran a command the session configured")
	}
	if len(out.Changed) != 2 { // .gitattributes added, main.go modified
		t.Errorf("Changed = %+v", out.Changed)
	}
}

// A same-size edit made in the same second as the materialization (git
// may compare whole seconds) is still collected: the base index keeps its
// timestamp, so git treats such entries as racily clean and compares
// content. A fresh timestamp on a copied index would hide the edit.
func TestCollectSeesSameSizeEditInTheSameSecond(t *testing.T) {
	store := &workspacetest.MemStore{}
	m := rawManifest(store, rawEntry{protocol.ModeFile, "f.txt", "version 1\n"})
	w := materialize(t, m, store)
	p := filepath.Join(w.Dir, "f.txt")
	before, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("version 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(p, before.ModTime(), before.ModTime()) // same mtime, same size
	// Collect in a later second than the materialization.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 20*time.Millisecond)))
	out, err := workspace.Collect(context.Background(), w)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Changed) != 1 || out.Changed[0].ContentHash != protocol.HashBytes([]byte("version 2\n")) {
		t.Errorf("Changed = %+v, want f.txt with its new content", out.Changed)
	}
}
