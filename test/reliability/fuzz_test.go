package reliability_test

import (
	"context"
	"errors"
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
				resolved, err := resolveLink(p, 0)
				if err != nil {
					return nil // a loop resolves nowhere
				}
				if resolved != ws && !strings.HasPrefix(resolved, ws+string(filepath.Separator)) {
					target, _ := os.Readlink(p)
					t.Fatalf("materialization (err=%v) left symlink %s -> %s, which leads to %s, outside the workspace", merr, p, target, resolved)
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

// resolveLink resolves an absolute path the way the kernel does — each
// symlink followed where it stands, ".." taken from the directory reached
// — except that a component that does not exist is taken as a directory
// that might be created later, and the rest is resolved lexically: so a
// dangling link is judged by where it would lead, not passed for
// dangling.
func resolveLink(path string, depth int) (string, error) {
	if depth > 40 {
		return "", errors.New("too many levels of symlinks")
	}
	// Not filepath.Clean: "link/.." is the parent of where link leads,
	// which lexical cleaning would get wrong.
	parts := strings.Split(path, "/")
	cur := "/"
	for i, part := range parts {
		switch part {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, part)
		fi, err := os.Lstat(next)
		if err != nil {
			// Missing from here on: the rest lexically.
			return filepath.Join(append([]string{next}, parts[i+1:]...)...), nil
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		target, err := os.Readlink(next)
		if err != nil {
			return "", err
		}
		if !strings.HasPrefix(target, "/") {
			target = cur + "/" + target
		}
		if cur, err = resolveLink(target, depth+1); err != nil {
			return "", err
		}
	}
	return cur, nil
}

// TestResolveLink checks the fuzzer's oracle: links that lead out are
// seen leading out, through other links, ".." after a link and missing
// directories included; links that stay in are seen staying in.
func TestResolveLink(t *testing.T) {
	root := t.TempDir()
	ws := filepath.Join(root, "ws")
	if err := os.MkdirAll(filepath.Join(ws, "real", "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"out":     "../outside",     // out, to a path that does not exist
		"up":      "..",             // out
		"dir":     "b/z",            // in (dangling)
		"viadir":  "dir/../..",      // in: b/z/../.. is the workspace
		"viadir2": "dir/../../..",   // out
		"deep":    "real/sub/../..", // in
		"abs":     "/etc",           // out
		"chain":   "up/ws/real",     // in: up leads to root, then back into ws
		"chain2":  "up/elsewhere",   // out
		"loop1":   "loop2",
		"loop2":   "loop1",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(ws, name)); err != nil {
			t.Fatal(err)
		}
	}
	inside := func(p string) bool { return p == ws || strings.HasPrefix(p, ws+"/") }
	for name, wantIn := range map[string]bool{"out": false, "up": false, "dir": true, "viadir": true, "viadir2": false, "deep": true, "abs": false, "chain": true, "chain2": false} {
		got, err := resolveLink(filepath.Join(ws, name), 0)
		if err != nil || inside(got) != wantIn {
			t.Errorf("%s -> %s: resolved to %s (%v), inside=%v, want %v", name, links[name], got, err, inside(got), wantIn)
		}
	}
	if _, err := resolveLink(filepath.Join(ws, "loop1"), 0); err == nil {
		t.Error("a symlink loop resolved")
	}
}
