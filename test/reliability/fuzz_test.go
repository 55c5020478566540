package reliability_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"warrant.dev/warrant/internal/workspace"
	"warrant.dev/warrant/internal/workspace/workspacetest"
	"warrant.dev/warrant/protocol"
)

// FuzzMaterializeStaysInside materializes workspaces described by the fuzz
// input — regular files, executables and symlinks at arbitrary paths
// (traversal, .git, absolute, through other symlinks) with arbitrary
// targets — and checks that, whether materialization succeeds or refuses,
// nothing is created outside the workspace and state directories, the
// file planted next to them is untouched, and every symlink left in the
// workspace resolves inside it.
//
// Input: lines "<f|x|l> <path>\t<content or symlink target>"; the
// snapshot is written verbatim from them (sorted, not validated here), so
// the runner's own parsing and checks decide.
func FuzzMaterializeStaysInside(f *testing.F) {
	for _, s := range []string{
		"f README.md\thello\nf src/a.go\tpackage a\n",
		"l link\t../outside\nf link/pwned\tx\n",
		"l link\t../../../../../../../../tmp\n",
		"l a\tb\nl b\ta\n",
		"l up\t..\nf up/x\ty\n",
		"l dir\tsub\nf sub/file\tz\nl dir2\tdir/../../outside/planted\n",
		"f ../escape\tx\n",
		"f .git/config\t[core]\n",
		"l abs\t/etc/passwd\n",
		"x bin/run\t#!/bin/sh\nl bin/sh\t/bin/sh\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		type entry struct{ mode, path, content string }
		var entries []entry
		seen := map[string]bool{}
		for _, line := range strings.Split(spec, "\n") {
			kind, rest, ok := strings.Cut(line, " ")
			if !ok {
				continue
			}
			path, content, _ := strings.Cut(rest, "\t")
			mode := map[string]string{"f": protocol.ModeFile, "x": protocol.ModeExecutable, "l": protocol.ModeSymlink}[kind]
			if mode == "" || path == "" || seen[path] || strings.ContainsAny(path, "\n\t") {
				continue
			}
			seen[path] = true
			entries = append(entries, entry{mode, path, content})
		}
		if len(entries) == 0 || len(entries) > 20 {
			return
		}
		sort.Slice(entries, func(i, j int) bool { return entries[i].path < entries[j].path })
		src := &workspacetest.MemStore{}
		var snap strings.Builder
		snap.WriteString(protocol.SnapshotVersion + "\n")
		for _, e := range entries {
			h := src.Add([]byte(e.content))
			snap.WriteString(e.mode + " " + h + " " + strconv.Itoa(len(e.content)) + "\t" + e.path + "\n")
		}
		m := &protocol.Manifest{Version: protocol.VersionManifest, BaseRef: strings.Repeat("0", 40), BundleHash: src.Add([]byte(snap.String())),
			UntrackedFiles: []protocol.ManifestFile{}, DeniedPatterns: []string{}, DeniedPaths: []string{}, Format: protocol.SnapshotVersion}

		root := t.TempDir()
		ws, state, outside := filepath.Join(root, "ws"), filepath.Join(root, "state"), filepath.Join(root, "outside")
		if err := os.MkdirAll(outside, 0o700); err != nil {
			t.Fatal(err)
		}
		planted := filepath.Join(outside, "planted")
		if err := os.WriteFile(planted, []byte("untouched"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, merr := workspace.Materialize(context.Background(), workspace.MaterializeOptions{Dir: ws, StateDir: state, Manifest: m, Source: src})

		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch {
			case p == root || p == outside || p == planted:
				return nil
			case p == ws || p == state || strings.HasPrefix(p, ws+string(filepath.Separator)) || strings.HasPrefix(p, state+string(filepath.Separator)):
			default:
				t.Fatalf("materialization (err=%v) created %s outside the workspace", merr, p)
			}
			if d.Type()&fs.ModeSymlink != 0 && strings.HasPrefix(p, ws+string(filepath.Separator)) {
				target, err := os.Readlink(p)
				if err != nil {
					t.Fatal(err)
				}
				resolved := target
				if !filepath.IsAbs(resolved) {
					resolved = filepath.Join(filepath.Dir(p), target)
				}
				if real, err := filepath.EvalSymlinks(p); err == nil {
					resolved = real
				}
				if resolved != ws && !strings.HasPrefix(resolved, ws+string(filepath.Separator)) {
					t.Fatalf("materialization (err=%v) left symlink %s -> %s, which leads outside the workspace", merr, p, target)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(planted); err != nil || string(b) != "untouched" {
			t.Fatalf("the file next to the workspace was changed: %q %v", b, err)
		}
		if entries, _ := os.ReadDir(outside); len(entries) != 1 {
			t.Fatalf("something was created beside the workspace: %v", entries)
		}
	})
}
