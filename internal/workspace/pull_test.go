package workspace_test

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"warrant.dev/warrant/internal/workspace"
	"warrant.dev/warrant/internal/workspace/workspacetest"
	"warrant.dev/warrant/protocol"
)

// runFixture is a repository captured with uncommitted work, and the
// output of a session on it.
type runFixture struct {
	repo  string
	c     *workspace.Captured
	store *workspacetest.MemStore
	out   *workspace.Output
	run   map[string]node // the session's final tree
}

const (
	userReadme = "# project\n\nintro\n\nuncommitted user note\n"
	utilBase   = "package main\n\n// one\n// two\n// three\n// four\n// five\n\nfunc util() int { return 1 }\n"
)

func newRunFixture(t *testing.T) *runFixture {
	repo := baseRepo(t)
	write(t, repo, "src/util.go", utilBase)
	commitAll(t, repo, "util")
	write(t, repo, "README.md", userReadme) // uncommitted work, captured
	store := &workspacetest.MemStore{}
	c, _ := captureUpload(t, workspace.CaptureOptions{Dir: repo}, store)
	w := materialize(t, &c.Manifest, store)

	// The session.
	write(t, w.Dir, "src/main.go", "package main\n\nfunc main() {\n\tprintln(\"from the run\")\n}\n")
	write(t, w.Dir, "src/new.go", "package main\n\nfunc added() {}\n")
	os.Remove(filepath.Join(w.Dir, "src/remove-me.go"))
	write(t, w.Dir, "assets/logo.bin", string([]byte{0, 1, 2, 3, 0xff, 0xfe, 0, 42}))
	write(t, w.Dir, "src/util.go", strings.Replace(utilBase, "return 1", "return 2", 1))
	out, err := workspace.Collect(context.Background(), w)
	if err != nil {
		t.Fatal(err)
	}
	return &runFixture{repo: repo, c: c, store: store, out: out, run: readTree(t, w.Dir)}
}

func (f *runFixture) pull(t *testing.T, mode workspace.PullMode, dry bool) (*workspace.PullResult, error) {
	return workspace.Pull(context.Background(), workspace.PullOptions{
		Dir: f.repo, RunID: "run-01", Manifest: &f.c.Manifest, Diff: f.out.Diff, Source: f.store,
		Mode: mode, DryRun: dry, Now: time.Unix(1_800_000_000, 0), Logger: testLogger(t),
	})
}

// repoState is everything Pull must not disturb unless asked to.
type repoState struct {
	tree   map[string]node
	status string
	index  string
	head   string
	refs   string
}

func stateOf(t *testing.T, repo string) repoState {
	return repoState{
		tree:   readTree(t, repo),
		status: git(t, repo, "status", "--porcelain=v1", "--untracked-files=all"),
		index:  git(t, repo, "ls-files", "-s"),
		head:   git(t, repo, "rev-parse", "HEAD"),
		refs:   git(t, repo, "for-each-ref"),
	}
}

func pathsOf(files []workspace.PulledFile) []string {
	var out []string
	for _, f := range files {
		out = append(out, f.Path)
	}
	return out
}

var touched = []string{"assets/logo.bin", "src/main.go", "src/new.go", "src/remove-me.go", "src/util.go"}

// Nothing changed locally since the capture: the run's changes land in
// the working tree, the user's uncommitted work stays, the index and HEAD
// do not move.
func TestPullCleanAppliesToWorktree(t *testing.T) {
	f := newRunFixture(t)
	before := stateOf(t, f.repo)

	dry, err := f.pull(t, workspace.PullAuto, true)
	if err != nil {
		t.Fatal(err)
	}
	if after := stateOf(t, f.repo); !equalState(before, after) {
		t.Fatal("a dry run changed the repository")
	}
	if dry.Mode != workspace.PullWorktree || dry.Diverged || len(dry.Applied) != 5 {
		t.Errorf("dry run: %+v", dry)
	}

	res, err := f.pull(t, workspace.PullAuto, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Mode != workspace.PullWorktree || res.Diverged || len(res.Conflicts) != 0 || len(res.Warnings) != 0 {
		t.Fatalf("result: %+v", res)
	}
	if got := pathsOf(res.Applied); !slices.Equal(got, touched) {
		t.Errorf("applied %q, want %q", got, touched)
	}
	after := stateOf(t, f.repo)
	want := maps.Clone(before.tree)
	for _, p := range touched {
		if n, ok := f.run[p]; ok {
			want[p] = n
		} else {
			delete(want, p)
		}
	}
	if d := diffTrees(want, after.tree); d != "" {
		t.Errorf("work tree after pull:\n%s", d)
	}
	if after.tree["README.md"].Content != userReadme {
		t.Error("the user's uncommitted work was lost")
	}
	if after.index != before.index || after.head != before.head || after.refs != before.refs {
		t.Error("pull into the working tree moved the index, HEAD or refs")
	}
	wantStatus := " M README.md\n M assets/logo.bin\n M src/main.go\n D src/remove-me.go\n M src/util.go\n?? src/new.go\n"
	if after.status != wantStatus {
		t.Errorf("git status after pull:\n%s\nwant\n%s", after.status, wantStatus)
	}

	// Pulling again finds everything in place.
	again, err := f.pull(t, workspace.PullAuto, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Applied) != 0 || len(again.Conflicts) != 0 || len(again.Unchanged) != 5 {
		t.Errorf("second pull: %+v", again)
	}
}

// Local edits to files the run also changed: overlapping edits are
// conflicts (reported, file untouched, no markers), separate edits merge,
// everything else applies.
func TestPullConflictsAreReportedNotResolved(t *testing.T) {
	f := newRunFixture(t)
	userMain := "package main\n\nfunc main() {\n\tprintln(\"from the user\")\n}\n"
	write(t, f.repo, "src/main.go", userMain)
	userUtil := strings.Replace(utilBase, "// one", "// one, edited by the user", 1)
	write(t, f.repo, "src/util.go", userUtil)
	write(t, f.repo, "src/new.go", "package main // the user's own new.go\n")
	before := stateOf(t, f.repo)

	res, err := f.pull(t, workspace.PullWorktree, false)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Diverged || res.Mode != workspace.PullWorktree {
		t.Errorf("mode %q diverged %v, want worktree and diverged", res.Mode, res.Diverged)
	}
	wantConflicts := []workspace.PullConflict{
		{Path: "src/main.go", Reason: "changed locally and by the run in overlapping lines"},
		{Path: "src/new.go", Reason: "added locally and by the run, with different content"},
	}
	if !slices.Equal(res.Conflicts, wantConflicts) {
		t.Errorf("conflicts = %+v\nwant %+v", res.Conflicts, wantConflicts)
	}
	wantApplied := []workspace.PulledFile{
		{Path: "assets/logo.bin", Action: "modify"},
		{Path: "src/remove-me.go", Action: "delete"},
		{Path: "src/util.go", Action: "modify", Merged: true},
	}
	if !slices.Equal(res.Applied, wantApplied) {
		t.Errorf("applied = %+v\nwant %+v", res.Applied, wantApplied)
	}
	after := stateOf(t, f.repo)
	if after.tree["src/main.go"].Content != userMain || after.tree["src/new.go"].Content != "package main // the user's own new.go\n" {
		t.Error("a conflicting file was changed")
	}
	for p, n := range after.tree {
		if strings.Contains(n.Content, "<<<<<<<") || strings.Contains(n.Content, ">>>>>>>") {
			t.Errorf("conflict markers written into %s", p)
		}
	}
	wantUtil := strings.Replace(userUtil, "return 1", "return 2", 1)
	if got := after.tree["src/util.go"].Content; got != wantUtil {
		t.Errorf("merged util.go = %q, want %q", got, wantUtil)
	}
	if after.tree["README.md"].Content != userReadme || after.index != before.index || after.head != before.head {
		t.Error("uncommitted work, index or HEAD disturbed")
	}
}

// HEAD moved since the capture: by default the run's changes go to a new
// branch built with plumbing; the working tree, index, HEAD and the
// user's uncommitted work do not change at all.
func TestPullDivergedGoesToBranch(t *testing.T) {
	f := newRunFixture(t)
	// The user commits work of their own, touching a file the run changed
	// (in overlapping lines) and one it did not, and keeps editing.
	write(t, f.repo, "src/main.go", "package main\n\nfunc main() {\n\tprintln(\"committed by the user\")\n}\n")
	write(t, f.repo, "other.txt", "user's other work\n")
	git(t, f.repo, "add", "src/main.go", "other.txt")
	git(t, f.repo, "commit", "-q", "-m", "user work")
	write(t, f.repo, "other.txt", "user's other work, still uncommitted\n")
	before := stateOf(t, f.repo)
	head := strings.TrimSpace(before.head)

	dry, err := f.pull(t, workspace.PullAuto, true)
	if err != nil {
		t.Fatal(err)
	}
	if dry.Mode != workspace.PullBranch || dry.Branch != "warrant/run-01" || dry.Commit != "" {
		t.Errorf("dry run: %+v", dry)
	}
	if !equalState(before, stateOf(t, f.repo)) {
		t.Fatal("dry run changed the repository")
	}

	res, err := f.pull(t, workspace.PullAuto, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Mode != workspace.PullBranch || !res.Diverged || res.Branch != "warrant/run-01" || res.Commit == "" {
		t.Fatalf("result: %+v", res)
	}
	if !slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.HasPrefix(w, "HEAD is "+head) }) {
		t.Errorf("warnings %q do not say HEAD moved", res.Warnings)
	}
	after := stateOf(t, f.repo)
	if d := diffTrees(before.tree, after.tree); d != "" || after.status != before.status || after.index != before.index || after.head != before.head {
		t.Fatalf("branch pull touched the work tree, index or HEAD:\n%s\nstatus before:\n%s\nafter:\n%s", d, before.status, after.status)
	}
	if got := strings.TrimSpace(git(t, f.repo, "rev-parse", "warrant/run-01")); got != res.Commit {
		t.Errorf("branch points at %s, want %s", got, res.Commit)
	}
	if parent := strings.TrimSpace(git(t, f.repo, "rev-parse", res.Commit+"^")); parent != head {
		t.Errorf("branch commit's parent = %s, want HEAD %s", parent, head)
	}
	if !slices.Equal(res.Conflicts, []workspace.PullConflict{{Path: "src/main.go", Reason: "changed locally and by the run in overlapping lines"}}) {
		t.Errorf("conflicts = %+v", res.Conflicts)
	}
	// The branch is HEAD plus the clean changes, byte for byte.
	changed := git(t, f.repo, "diff", "--name-status", "--no-renames", head, res.Commit)
	wantChanged := "M\tassets/logo.bin\nA\tsrc/new.go\nD\tsrc/remove-me.go\nM\tsrc/util.go\n"
	if changed != wantChanged {
		t.Errorf("branch changes:\n%s\nwant\n%s", changed, wantChanged)
	}
	for _, p := range []string{"assets/logo.bin", "src/new.go", "src/util.go"} {
		if got := git(t, f.repo, "cat-file", "blob", res.Commit+":"+p); got != f.run[p].Content {
			t.Errorf("%s on the branch = %q, want the run's %q", p, got, f.run[p].Content)
		}
	}

	// Pulling the same run again is refused with a way forward.
	_, err = f.pull(t, workspace.PullAuto, false)
	if !errors.Is(err, workspace.ErrBranchExists) || !strings.Contains(err.Error(), "git branch -D warrant/run-01") {
		t.Errorf("second pull: %v, want ErrBranchExists saying how to delete the branch", err)
	}
}

func equalState(a, b repoState) bool {
	return diffTrees(a.tree, b.tree) == "" && a.status == b.status && a.index == b.index && a.head == b.head && a.refs == b.refs
}

// A diff from a compromised runner cannot write into .git or outside the
// tree, and a symlink it adds cannot point outside.
func TestPullRefusesUnsafeDiffs(t *testing.T) {
	f := newRunFixture(t)
	hook := "diff --git a/.git/hooks/post-checkout b/.git/hooks/post-checkout\nnew file mode 100755\n--- /dev/null\n+++ b/.git/hooks/post-checkout\n@@ -0,0 +1 @@\n+rm -rf ~\n"
	up := "diff --git a/../outside b/../outside\nnew file mode 100644\n--- /dev/null\n+++ b/../outside\n@@ -0,0 +1 @@\n+x\n"
	for name, diff := range map[string]string{"git hook": hook, "parent dir": up} {
		_, err := workspace.Pull(context.Background(), workspace.PullOptions{
			Dir: f.repo, RunID: "r", Manifest: &f.c.Manifest, Diff: []byte(diff), Source: f.store})
		if !errors.Is(err, protocol.ErrBadPath) {
			t.Errorf("%s: Pull error = %v, want protocol.ErrBadPath", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(f.repo, ".git/hooks/post-checkout")); err == nil {
		t.Error("a hook was written")
	}
	link := "diff --git a/escape b/escape\nnew file mode 120000\nindex 0000000000000000000000000000000000000000..8e2a3e4d3c4d2d1c7e8dd0a7d6fb7cbb1c3e5a9f\n--- /dev/null\n+++ b/escape\n@@ -0,0 +1 @@\n+/etc/passwd\n\\ No newline at end of file\n"
	res, err := workspace.Pull(context.Background(), workspace.PullOptions{
		Dir: f.repo, RunID: "r", Manifest: &f.c.Manifest, Diff: []byte(link), Source: f.store})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Conflicts) != 1 || !strings.Contains(res.Conflicts[0].Reason, "absolute path") {
		t.Errorf("escaping symlink: %+v", res)
	}
	if _, err := os.Lstat(filepath.Join(f.repo, "escape")); err == nil {
		t.Error("the escaping symlink was written")
	}
}
