package workspace_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"warrant.dev/warrant/internal/workspace"
	"warrant.dev/warrant/internal/workspace/workspacetest"
	"warrant.dev/warrant/protocol"
)

// trickyEntries has names whose order differs between plain byte order
// and any naive tree order ("a-b" < "a.txt" < "a/…" < "a0"), a directory
// and a file sharing a prefix, executables, symlinks (one whose target
// equals a file's content), duplicate contents, an empty file, a name
// starting with a double quote, a space and non-ASCII bytes.
func trickyEntries() []rawEntry {
	const f, x, l = protocol.ModeFile, protocol.ModeExecutable, protocol.ModeSymlink
	return []rawEntry{
		{f, "\"quoted", "q\n"},
		{f, "a b/space.txt", "space\n"},
		{f, "a-b", "dash\n"},
		{f, "a.txt", "dot\n"},
		{f, "a/x", "same\n"},
		{f, "a/y/z", "same\n"},
		{x, "a/y/run.sh", "#!/bin/sh\necho run\n"},
		{f, "a0", "zero\n"},
		{f, "empty", ""},
		{l, "link", "a.txt"},
		{f, "names/a.txt", "a.txt"},
		{l, "names/up", "../a/y"},
		{f, "z/\u00e9t\u00e9.md", "été\n"},
		{f, "zz", string([]byte{0, 1, 2, 0xff, 0xfe})},
	}
}

// The base commit of a materialized workspace is git's own: the ids
// Materialize reports are what git computes for the same files with the
// fixed identity and message, and they have not changed since the base
// commit was made with git fast-import (the pinned ids).
func TestMaterializeBaseCommitIsGits(t *testing.T) {
	cases := []struct {
		name       string
		entries    []rawEntry
		wantCommit string // pinned: what the fast-import implementation made
	}{
		{"empty", nil, "12d989950ada3e544a3defdf75a1bed96d907599"},
		{"one file", []rawEntry{{protocol.ModeFile, "README", "hello\n"}}, "d691ca4963f6553112957c02acfaa24e28de71c6"},
		{"tricky", trickyEntries(), "5fbddaa028684e66a7a1b72993541b1f73683297"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			store := &workspacetest.MemStore{}
			slicesSortRaw(tc.entries)
			m := rawManifest(store, tc.entries...)
			w := materialize(t, m, store)
			if w.BaseCommit != tc.wantCommit {
				t.Errorf("BaseCommit = %s, want %s", w.BaseCommit, tc.wantCommit)
			}
			checkRepository(t, w, m, store)
		})
	}
}

var largeFiles = flag.Int("workspace.large-files", 1_000,
	"files in TestMaterializeLargeRepository's tree (creating a file costs up to a millisecond on some VMs; run with 10000 or 100000 to check big trees)")

// A large generated tree (files in nested directories, with executables,
// symlinks and duplicate contents) materializes into a repository git
// finds valid and clean, with git's own ids.
func TestMaterializeLargeRepository(t *testing.T) {
	n := *largeFiles
	if testing.Short() {
		n = min(n, 300)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	entries := make([]rawEntry, 0, n)
	for i := range n {
		dir := fmt.Sprintf("d%02d/s%d", i%37, i%5)
		switch {
		case i%97 == 0:
			entries = append(entries, rawEntry{protocol.ModeSymlink, fmt.Sprintf("%s/link%05d", dir, i), "../../README"})
		case i%13 == 0:
			entries = append(entries, rawEntry{protocol.ModeExecutable, fmt.Sprintf("%s/tool%05d", dir, i), "#!/bin/sh\n"})
		default:
			entries = append(entries, rawEntry{protocol.ModeFile, fmt.Sprintf("%s/f%05d.txt", dir, i),
				strings.Repeat(fmt.Sprintf("line %x\n", rng.Uint64()), 1+rng.IntN(20))})
		}
	}
	entries = append(entries, rawEntry{protocol.ModeFile, "README", "top\n"})
	slicesSortRaw(entries)
	store := &workspacetest.MemStore{}
	m := rawManifest(store, entries...)
	start := time.Now()
	w := materialize(t, m, store)
	t.Logf("materialize took %s", time.Since(start))
	if w.Files != len(entries) {
		t.Errorf("Files = %d, want %d", w.Files, len(entries))
	}
	checkRepository(t, w, m, store)
}

// A blob larger than the in-memory limit is streamed into the pack.
func TestMaterializeLargeBlob(t *testing.T) {
	big := make([]byte, 9<<20)
	rand.NewChaCha8([32]byte{1}).Read(big[:1<<20])
	for i := 1 << 20; i < len(big); i += 1 << 20 {
		copy(big[i:], big[:1<<20])
		big[i] ^= byte(i >> 20) // not a plain repetition
	}
	store := &workspacetest.MemStore{}
	m := rawManifest(store,
		rawEntry{protocol.ModeFile, "big.bin", string(big)},
		rawEntry{protocol.ModeFile, "copy/big.bin", string(big)},
		rawEntry{protocol.ModeFile, "small", "s\n"})
	w := materialize(t, m, store)
	checkRepository(t, w, m, store)
}

func slicesSortRaw(entries []rawEntry) {
	slices.SortFunc(entries, func(a, b rawEntry) int { return strings.Compare(a.path, b.path) })
}

// checkRepository checks a materialized workspace with git itself: fsck
// --strict finds nothing (it rehashes every object and checks every tree's
// format and order), the work tree and index are clean, HEAD is the one
// commit on main and refs/warrant/base, the commit lists exactly the
// snapshot's paths and modes, and git's own hash of each work tree file
// is the blob id the commit records for it. For small trees git also
// computes the tree and commit ids independently (add everything to a
// scratch index, write-tree, commit-tree with the fixed identity and
// message).
func checkRepository(t *testing.T, w *workspace.Materialized, m *protocol.Manifest, store *workspacetest.MemStore) {
	t.Helper()
	if out, err := gitErr(w.Dir, "fsck", "--strict", "--no-progress", "--no-dangling"); err != nil || out != "" {
		t.Errorf("git fsck --strict: %v\n%s", err, out)
	}
	if st := git(t, w.Dir, "status", "--porcelain", "--untracked-files=all"); st != "" {
		t.Errorf("git status is not clean:\n%s", st)
	}
	if head := strings.TrimSpace(git(t, w.Dir, "rev-parse", "HEAD", "refs/warrant/base", "HEAD^{tree}")); head != w.BaseCommit+"\n"+w.BaseCommit+"\n"+w.BaseTree {
		t.Errorf("HEAD, refs/warrant/base, tree = %q, want %s twice and %s", head, w.BaseCommit, w.BaseTree)
	}
	if b := strings.TrimSpace(git(t, w.Dir, "symbolic-ref", "HEAD")); b != "refs/heads/main" {
		t.Errorf("HEAD is %q, want refs/heads/main", b)
	}
	logOut := git(t, w.Dir, "log", "--format=%H %an <%ae> %at %s")
	if want := w.BaseCommit + " warrant <warrant@localhost> 946684800 warrant snapshot " + m.BundleHash + "\n"; logOut != want {
		t.Errorf("git log = %q, want %q", logOut, want)
	}

	// The commit's tree against the snapshot, and its blob ids against
	// git's hash of the files.
	start := time.Now()
	defer func() { t.Logf("checkRepository took %s", time.Since(start)) }()
	snapBytes, _ := store.Get(context.Background(), m.BundleHash)
	b, _ := io.ReadAll(snapBytes)
	snap, err := protocol.ParseSnapshot(b)
	if err != nil {
		t.Fatal(err)
	}
	lsTree := strings.Split(strings.TrimSuffix(git(t, w.Dir, "-c", "core.quotePath=false", "ls-tree", "-r", "-z", "HEAD"), "\x00"), "\x00")
	if len(snap.Entries) == 0 {
		lsTree = nil
	}
	if len(lsTree) != len(snap.Entries) {
		t.Fatalf("the commit has %d files, the snapshot %d", len(lsTree), len(snap.Entries))
	}
	var paths strings.Builder
	var ids []string
	for i, line := range lsTree {
		meta, p, _ := strings.Cut(line, "\t")
		f := strings.Fields(meta)
		e := snap.Entries[i]
		if p != e.Path || f[0] != e.Mode || f[1] != "blob" {
			t.Errorf("commit entry %d is %q, want %s blob %s", i, line, e.Mode, e.Path)
		}
		ids = append(ids, f[2])
		switch {
		case e.Mode == protocol.ModeSymlink:
		case strings.HasPrefix(e.Path, `"`): // --stdin-paths reads it C-quoted
			paths.WriteString(`"` + strings.ReplaceAll(e.Path, `"`, `\"`) + "\"\n")
		default:
			paths.WriteString(e.Path + "\n")
		}
	}
	hashed := strings.Fields(gitIn(t, w.Dir, paths.String(), "hash-object", "--no-filters", "--stdin-paths"))
	k := 0
	for i, e := range snap.Entries {
		if e.Mode == protocol.ModeSymlink {
			target, _ := os.Readlink(filepath.Join(w.Dir, e.Path))
			if got := strings.TrimSpace(gitIn(t, w.Dir, target, "hash-object", "--stdin")); got != ids[i] {
				t.Errorf("symlink %s: commit has blob %s, git hashes its target to %s", e.Path, ids[i], got)
			}
			continue
		}
		if k >= len(hashed) || hashed[k] != ids[i] {
			t.Errorf("%s: commit has blob %s, git hashes the file differently", e.Path, ids[i])
		}
		k++
	}
	if len(snap.Entries) > 100 {
		return
	}

	// Independently: git hashes the work tree itself.
	scratch := t.TempDir()
	env := []string{
		"GIT_DIR=" + scratch, "GIT_WORK_TREE=" + w.Dir, "GIT_INDEX_FILE=" + filepath.Join(scratch, "index"),
		"GIT_AUTHOR_NAME=warrant", "GIT_AUTHOR_EMAIL=warrant@localhost", "GIT_AUTHOR_DATE=946684800 +0000",
		"GIT_COMMITTER_NAME=warrant", "GIT_COMMITTER_EMAIL=warrant@localhost", "GIT_COMMITTER_DATE=946684800 +0000",
	}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = w.Dir
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("git", "init", "-q", "--bare", scratch).CombinedOutput(); err != nil {
		t.Fatalf("git init: %v\n%s", err, out)
	}
	run("-c", "core.autocrlf=false", "add", "-A", ".")
	tree := run("write-tree")
	if tree != w.BaseTree {
		t.Errorf("git write-tree of the work tree = %s, Materialize says %s", tree, w.BaseTree)
	}
	msg := filepath.Join(scratch, "msg")
	os.WriteFile(msg, []byte("warrant snapshot "+m.BundleHash+"\n"), 0o644)
	if commit := run("commit-tree", tree, "-F", msg); commit != w.BaseCommit {
		t.Errorf("git commit-tree = %s, Materialize says %s", commit, w.BaseCommit)
	}
}

// gitIn runs git with stdin and returns its output.
func gitIn(t *testing.T, dir, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}
