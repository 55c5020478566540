package workspace_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"warrant.dev/warrant/internal/workspace"
	"warrant.dev/warrant/internal/workspace/workspacetest"
	"warrant.dev/warrant/protocol"
)

// rawEntry is a snapshot line written by hand, so tests can build
// snapshots that protocol.Snapshot.Encode would refuse.
type rawEntry struct {
	mode, path, content string
}

// rawManifest stores the entries' contents and a hand-written snapshot in
// store and returns a manifest naming it.
func rawManifest(store *workspacetest.MemStore, entries ...rawEntry) *protocol.Manifest {
	var b strings.Builder
	b.WriteString(protocol.SnapshotVersion + "\n")
	for _, e := range entries {
		h := store.Add([]byte(e.content))
		fmt.Fprintf(&b, "%s %s %d\t%s\n", e.mode, h, len(e.content), e.path)
	}
	return &protocol.Manifest{
		Version:        protocol.VersionManifest,
		Format:         protocol.SnapshotVersion,
		BundleHash:     store.Add([]byte(b.String())),
		UntrackedFiles: []protocol.ManifestFile{},
		DeniedPatterns: slices.Clone(workspace.DefaultDeny),
		DeniedPaths:    []string{},
	}
}

// Unsafe manifests are refused with a clear error, and nothing is written
// outside the target directory.
func TestMaterializeRefusesUnsafeContent(t *testing.T) {
	const f, x, l = protocol.ModeFile, protocol.ModeExecutable, protocol.ModeSymlink
	ok := rawEntry{f, "ok.txt", "fine\n"}
	cases := []struct {
		name    string
		entries []rawEntry
		want    error  // errors.Is target
		msg     string // substring of the message
	}{
		{"dot-dot path", []rawEntry{{f, "../evil", "x"}}, nil, "climbs out of the workspace"},
		{"dot-dot inside path", []rawEntry{{f, "a/../../evil", "x"}}, nil, "climbs out"},
		{"absolute path", []rawEntry{{f, "/tmp/evil", "x"}}, nil, "is absolute"},
		{"git hook", []rawEntry{{x, ".git/hooks/pre-commit", "#!/bin/sh\nrm -rf /\n"}}, nil, "inside a .git directory"},
		{"nested git dir", []rawEntry{{f, "sub/.GIT/config", "x"}}, nil, "inside a .git directory"},
		{"path through symlink", []rawEntry{{l, "link", "sub"}, {f, "link/file", "x"}}, nil, "which is a file"},
		{"absolute symlink", []rawEntry{ok, {l, "passwd", "/etc/passwd"}}, protocol.ErrBadPath, "absolute path"},
		{"escaping symlink", []rawEntry{{l, "a/b/out", "../../../outside"}}, protocol.ErrBadPath, "leads outside the workspace"},
		{"escape through another symlink", []rawEntry{{l, "d/up", ".."}, {l, "esc", "d/up/../x"}}, protocol.ErrBadPath, "leads outside"},
		{"symlink into .git", []rawEntry{{l, "cfg", "sub/../.git/config"}}, protocol.ErrBadPath, "into a .git directory"},
		{"symlink loop", []rawEntry{{l, "a", "b/x"}, {l, "b", "a/y"}}, protocol.ErrBadPath, "too many levels"},
		{"device mode", []rawEntry{{"020644", "dev", ""}}, nil, "mode"},
		{"denied file in snapshot", []rawEntry{{f, "conf/.env", "TOKEN=x"}, ok}, workspace.ErrInconsistent, "deny pattern"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			store := &workspacetest.MemStore{}
			m := rawManifest(store, tc.entries...)
			parent := t.TempDir()
			target := filepath.Join(parent, "ws")
			_, err := workspace.Materialize(context.Background(), workspace.MaterializeOptions{Dir: target, Manifest: m, Source: store})
			if err == nil {
				t.Fatal("Materialize accepted an unsafe manifest")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %v does not wrap %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
			assertOnlyChild(t, parent, "ws")
			if _, err := os.Lstat(target); err == nil {
				t.Errorf("target was created although the manifest was refused before writing")
			}
		})
	}
}

// assertOnlyChild checks that dir holds nothing but (optionally) name.
func assertOnlyChild(t *testing.T, dir, name string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != name {
			t.Errorf("unexpected %s written next to the target", filepath.Join(dir, e.Name()))
		}
	}
}

// A blob whose bytes do not match its hash is refused, whether it is the
// snapshot, a file or a symlink target, and never written under its name.
func TestMaterializeRefusesTamperedBlobs(t *testing.T) {
	for _, which := range []string{"file", "snapshot", "symlink", "size"} {
		t.Run(which, func(t *testing.T) {
			store := &workspacetest.MemStore{}
			m := rawManifest(store,
				rawEntry{protocol.ModeFile, "a.txt", "genuine content\n"},
				rawEntry{protocol.ModeSymlink, "l", "a.txt"})
			switch which {
			case "file":
				store.SetRaw(protocol.HashBytes([]byte("genuine content\n")), []byte("tampered content\n"))
			case "size":
				store.SetRaw(protocol.HashBytes([]byte("genuine content\n")), []byte("genuine content\nand more"))
			case "snapshot":
				store.SetRaw(m.BundleHash, []byte(protocol.SnapshotVersion+"\n"))
			case "symlink":
				store.SetRaw(protocol.HashBytes([]byte("a.txt")), []byte("../..")) // same length would not matter
			}
			parent := t.TempDir()
			target := filepath.Join(parent, "ws")
			_, err := workspace.Materialize(context.Background(), workspace.MaterializeOptions{Dir: target, Manifest: m, Source: store})
			if !errors.Is(err, workspace.ErrBlobMismatch) {
				t.Fatalf("Materialize error = %v, want ErrBlobMismatch", err)
			}
			assertOnlyChild(t, parent, "ws")
			if b, err := os.ReadFile(filepath.Join(target, "a.txt")); err == nil {
				t.Errorf("a.txt was written with %q", b)
			}
		})
	}
}

func TestMaterializeRefusesNonEmptyTargetAndOtherFormats(t *testing.T) {
	store := &workspacetest.MemStore{}
	m := rawManifest(store, rawEntry{protocol.ModeFile, "a.txt", "a"})
	target := t.TempDir()
	write(t, target, "existing", "x")
	_, err := workspace.Materialize(context.Background(), workspace.MaterializeOptions{Dir: target, Manifest: m, Source: store})
	if !errors.Is(err, workspace.ErrTargetNotEmpty) {
		t.Errorf("non-empty target: %v, want ErrTargetNotEmpty", err)
	}
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(t.TempDir(), link)
	_, err = workspace.Materialize(context.Background(), workspace.MaterializeOptions{Dir: link, Manifest: m, Source: store})
	if !errors.Is(err, workspace.ErrTargetNotEmpty) {
		t.Errorf("symlinked target: %v, want ErrTargetNotEmpty", err)
	}
	bundle := *m
	bundle.Format = ""
	_, err = workspace.Materialize(context.Background(), workspace.MaterializeOptions{Dir: filepath.Join(t.TempDir(), "ws"), Manifest: &bundle, Source: store})
	if !errors.Is(err, workspace.ErrUnsupportedFormat) {
		t.Errorf("git bundle format: %v, want ErrUnsupportedFormat", err)
	}
	// An empty existing directory is fine.
	w, err := workspace.Materialize(context.Background(), workspace.MaterializeOptions{Dir: t.TempDir(), Manifest: m, Source: store})
	if err != nil {
		t.Fatal(err)
	}
	if d := diffTrees(map[string]node{"a.txt": {protocol.ModeFile, "a"}}, readTree(t, w.Dir)); d != "" {
		t.Error(d)
	}
}

// Symlinks that stay inside the tree, even through other symlinks and
// parent directories, are materialized as symlinks.
func TestMaterializeKeepsSafeSymlinks(t *testing.T) {
	store := &workspacetest.MemStore{}
	const f, l = protocol.ModeFile, protocol.ModeSymlink
	m := rawManifest(store,
		rawEntry{l, "a/b/up", "../.."},
		rawEntry{l, "a/b/via", "up/c/d.txt"},
		rawEntry{f, "c/d.txt", "d"},
		rawEntry{l, "dangling", "no/such/file"},
		rawEntry{l, "dot", "./c/./d.txt"},
	)
	w := materialize(t, m, store)
	want := map[string]node{
		"a/b/up":   {l, "../.."},
		"a/b/via":  {l, "up/c/d.txt"},
		"c/d.txt":  {f, "d"},
		"dangling": {l, "no/such/file"},
		"dot":      {l, "./c/./d.txt"},
	}
	got := readTree(t, w.Dir)
	if d := diffTrees(want, got); d != "" {
		t.Error(d)
	}
	b, err := os.ReadFile(filepath.Join(w.Dir, "a/b/via"))
	if err != nil || string(b) != "d" {
		t.Errorf("a/b/via resolves to %q, %v", b, err)
	}
}

// The runner refuses a manifest that contradicts its snapshot: a path it
// lists as denied is present, or an untracked file it lists is missing or
// different.
func TestMaterializeRefusesInconsistentManifests(t *testing.T) {
	for name, edit := range map[string]func(m *protocol.Manifest){
		"denied path present": func(m *protocol.Manifest) { m.DeniedPaths = []string{"src/app.go"} },
		"untracked missing": func(m *protocol.Manifest) {
			m.UntrackedFiles = []protocol.ManifestFile{{Path: "notes.txt", Hash: protocol.HashBytes([]byte("x")), Bytes: 1}}
		},
		"untracked differs": func(m *protocol.Manifest) {
			m.UntrackedFiles = []protocol.ManifestFile{{Path: "src/app.go", Hash: protocol.HashBytes([]byte("x")), Bytes: 1}}
		},
		"deny pattern matches": func(m *protocol.Manifest) { m.DeniedPatterns = append(m.DeniedPatterns, "src/") },
	} {
		t.Run(name, func(t *testing.T) {
			store := &workspacetest.MemStore{}
			m := rawManifest(store, rawEntry{protocol.ModeFile, "src/app.go", "package app\n"})
			edit(m)
			_, err := workspace.Materialize(context.Background(), workspace.MaterializeOptions{
				Dir: filepath.Join(t.TempDir(), "ws"), Manifest: m, Source: store})
			if !errors.Is(err, workspace.ErrInconsistent) {
				t.Errorf("error %v, want ErrInconsistent", err)
			}
		})
	}
}
