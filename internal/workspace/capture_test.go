package workspace_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"warrant.dev/warrant/internal/workspace"
	"warrant.dev/warrant/internal/workspace/workspacetest"
	"warrant.dev/warrant/protocol"
)

// Secrets in tracked files are excluded and listed; untracked files are
// captured only when allowlisted; no stored blob (snapshot, dirty diff or
// file) carries a secret value.
func TestCaptureExcludesSecretsEvenWhenTracked(t *testing.T) {
	repo := newRepo(t)
	const (
		envSecret  = "API_TOKEN=tracked-env-secret-1111"
		keySecret  = "-----BEGIN OPENSSH PRIVATE KEY-----tracked-key-2222"
		pemSecret  = "pem-secret-3333"
		custSecret = "custom-secret-4444"
		untrSecret = "untracked-pub-5555"
	)
	write(t, repo, "app.go", "package app\n")
	write(t, repo, ".env", envSecret+"\n")
	write(t, repo, "config/.ENV.production", envSecret+"-prod\n") // deny matches case-insensitively
	write(t, repo, "deploy/id_rsa", keySecret+"\n")
	write(t, repo, "certs/server.pem", pemSecret+"\n")
	write(t, repo, "vault/secrets/token.txt", custSecret+"\n")
	write(t, repo, "vault/readme.md", "not secret\n")
	commitAll(t, repo, "init")
	// Uncommitted edits to denied files must not reach the dirty diff.
	write(t, repo, ".env", envSecret+"-edited\n")
	write(t, repo, "deploy/id_rsa", keySecret+"-edited\n")
	write(t, repo, "app.go", "package app\n\nfunc main() {}\n")
	// Untracked files.
	write(t, repo, "notes.txt", "not allowlisted\n")
	write(t, repo, "docs/new.md", "allowlisted\n")
	write(t, repo, "docs/deep/other.md", "not matched by docs/*.md\n")
	write(t, repo, "keys/id_ed25519.pub", untrSecret+"\n")

	store := &workspacetest.MemStore{}
	c, _ := captureUpload(t, workspace.CaptureOptions{
		Dir:            repo,
		AllowUntracked: []string{"docs/*.md", "*.pub"},
		Deny:           []string{"secrets/"},
	}, store)
	m := c.Manifest

	wantDenied := []string{".env", "certs/server.pem", "config/.ENV.production", "deploy/id_rsa", "keys/id_ed25519.pub", "vault/secrets/token.txt"}
	if !slices.Equal(m.DeniedPaths, wantDenied) {
		t.Errorf("DeniedPaths = %q, want %q", m.DeniedPaths, wantDenied)
	}
	wantPatterns := append(slices.Clone(workspace.DefaultDeny), "secrets/")
	if !slices.Equal(m.DeniedPatterns, wantPatterns) {
		t.Errorf("DeniedPatterns = %q, want %q", m.DeniedPatterns, wantPatterns)
	}
	var untracked []string
	for _, u := range m.UntrackedFiles {
		untracked = append(untracked, u.Path)
	}
	if !slices.Equal(untracked, []string{"docs/new.md"}) {
		t.Errorf("UntrackedFiles = %q, want [docs/new.md]", untracked)
	}
	snap, err := protocol.ParseSnapshot(c.Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range snap.Entries {
		paths = append(paths, e.Path)
	}
	if want := []string{"app.go", "docs/new.md", "vault/readme.md"}; !slices.Equal(paths, want) {
		t.Errorf("snapshot paths = %q, want %q", paths, want)
	}
	if m.DirtyDiffHash == "" || !bytes.Contains(c.DirtyDiff, []byte("func main()")) {
		t.Errorf("dirty diff should carry the app.go edit:\n%s", c.DirtyDiff)
	}
	if bytes.Contains(c.DirtyDiff, []byte(".env")) || bytes.Contains(c.DirtyDiff, []byte("id_rsa")) {
		t.Errorf("dirty diff mentions a denied file:\n%s", c.DirtyDiff)
	}
	// No stored blob holds any secret.
	for b := range c.Blobs() {
		data, ok := store.Bytes(b.Hash)
		if !ok {
			t.Fatalf("blob %s not uploaded", b.Hash)
		}
		for _, s := range []string{envSecret, keySecret, pemSecret, custSecret, untrSecret} {
			if bytes.Contains(data, []byte(s)) {
				t.Errorf("blob %s contains secret %q", b.Hash, s)
			}
		}
	}
	if n := store.Len(); n != c.BlobCount() {
		t.Errorf("store holds %d blobs, capture has %d", n, c.BlobCount())
	}

	// Materializing gives exactly the captured files, and the runner
	// refuses a manifest whose snapshot contains a denied path.
	w := materialize(t, &m, store)
	got := readTree(t, w.Dir)
	want := map[string]node{
		"app.go":          {protocol.ModeFile, "package app\n\nfunc main() {}\n"},
		"docs/new.md":     {protocol.ModeFile, "allowlisted\n"},
		"vault/readme.md": {protocol.ModeFile, "not secret\n"},
	}
	if d := diffTrees(want, got); d != "" {
		t.Errorf("materialized tree differs:\n%s", d)
	}
}

// A working tree with staged, unstaged, deleted, renamed, binary,
// executable-bit and symlink changes survives capture → blobs →
// materialize byte for byte, modes and symlinks included; and the dirty
// diff turns HEAD into the captured tracked state.
func TestCaptureMaterializeRoundTrip(t *testing.T) {
	repo := newRepo(t)
	bin := func(seed byte, n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7) ^ seed
		}
		return string(b)
	}
	write(t, repo, "a.txt", "a1\n")
	write(t, repo, "b.txt", "b1\n")
	write(t, repo, "old.txt", "to be deleted in the work tree\n")
	write(t, repo, "gone.txt", "to be git rm'd\n")
	write(t, repo, "rename-me.txt", "renamed content\n")
	write(t, repo, "data.bin", bin(1, 3000))
	writeMode(t, repo, "bin/run.sh", "#!/bin/sh\necho run\n", 0o755)
	write(t, repo, "tool.sh", "#!/bin/sh\necho tool\n")
	write(t, repo, "same1.txt", "same content\n")
	write(t, repo, "nested/deep/dir/file.txt", "deep\n")
	write(t, repo, "empty.txt", "")
	write(t, repo, ".gitattributes", "*.txt text eol=crlf\n*.bin filter=lfs\n")
	symlink(t, repo, "link", "a.txt")
	symlink(t, repo, "nested/up", "../bin/run.sh")
	symlink(t, repo, "dangling", "nowhere/at/all")
	commitAll(t, repo, "init")

	write(t, repo, "a.txt", "a2 staged\n")
	git(t, repo, "add", "a.txt")
	write(t, repo, "a.txt", "a3 staged then edited\n")
	write(t, repo, "b.txt", "b2 unstaged\n")
	write(t, repo, "staged-new.txt", "new and staged\n")
	git(t, repo, "add", "staged-new.txt")
	os.Remove(filepath.Join(repo, "old.txt"))
	git(t, repo, "rm", "-q", "gone.txt")
	git(t, repo, "mv", "rename-me.txt", "renamed.txt")
	write(t, repo, "data.bin", bin(2, 5000))
	os.Chmod(filepath.Join(repo, "tool.sh"), 0o755)
	write(t, repo, "same2.txt", "same content\n")
	git(t, repo, "add", "same2.txt")
	os.Remove(filepath.Join(repo, "link"))
	symlink(t, repo, "link", "b.txt")
	symlink(t, repo, "newlink", "nested/deep")
	git(t, repo, "add", "newlink")
	write(t, repo, "crlf.txt", "windows\r\nline\r\n")
	git(t, repo, "add", "crlf.txt")
	write(t, repo, "untracked-allowed.txt", "allowlisted untracked\n")
	write(t, repo, "untracked-ignored.log", "not allowlisted\n")

	store := &workspacetest.MemStore{}
	c, _ := captureUpload(t, workspace.CaptureOptions{Dir: repo, AllowUntracked: []string{"untracked-*.txt"}}, store)

	want := readTree(t, repo)
	delete(want, "untracked-ignored.log")
	w := materialize(t, &c.Manifest, store)
	if d := diffTrees(want, readTree(t, w.Dir)); d != "" {
		t.Fatalf("materialized tree differs from the captured work tree:\n%s", d)
	}
	// The workspace is a git repository whose HEAD is the captured state.
	if st := git(t, w.Dir, "status", "--porcelain", "--untracked-files=all"); st != "" {
		t.Errorf("materialized workspace is not clean:\n%s", st)
	}
	if head := strings.TrimSpace(git(t, w.Dir, "rev-parse", "HEAD")); head != w.BaseCommit {
		t.Errorf("HEAD = %s, want base commit %s", head, w.BaseCommit)
	}
	if n := strings.Count(git(t, w.Dir, "rev-list", "--all"), "\n"); n != 1 {
		t.Errorf("materialized repository has %d commits, want 1 (no history)", n)
	}
	if c.Manifest.BaseRef != strings.TrimSpace(git(t, repo, "rev-parse", "HEAD")) {
		t.Errorf("BaseRef = %q, want the repository's HEAD", c.Manifest.BaseRef)
	}
	// Materializing the same manifest twice gives the same base commit.
	if w2 := materialize(t, &c.Manifest, store); w2.BaseCommit != w.BaseCommit {
		t.Errorf("base commit not deterministic: %s vs %s", w2.BaseCommit, w.BaseCommit)
	}

	// The dirty diff applied to a clean checkout of HEAD gives the
	// captured tracked files.
	if c.Manifest.DirtyDiffHash != protocol.HashBytes(c.DirtyDiff) {
		t.Fatal("DirtyDiffHash does not name the dirty diff")
	}
	clone := filepath.Join(t.TempDir(), "clone")
	git(t, "", "clone", "-q", "--no-hardlinks", "-c", "core.autocrlf=false", repo, clone)
	// Take the committed bytes exactly, without the crlf conversion the
	// tree's .gitattributes asks for, as the capture did.
	os.WriteFile(filepath.Join(clone, ".git", "info", "attributes"), []byte("* -text -filter\n"), 0o644)
	git(t, clone, "rm", "-q", "-r", "--cached", ".")
	git(t, clone, "reset", "-q", "--hard")
	patch := filepath.Join(t.TempDir(), "dirty.diff")
	os.WriteFile(patch, c.DirtyDiff, 0o644)
	git(t, clone, "apply", "--binary", patch)
	wantTracked := readTree(t, repo)
	for _, p := range []string{"untracked-allowed.txt", "untracked-ignored.log"} {
		delete(wantTracked, p)
	}
	// The dirty diff is git's view of the change, after the repository's
	// own attributes: crlf.txt was normalised to LF by "text eol=crlf"
	// when it was staged. The snapshot has its raw bytes (checked above).
	gotTracked := readTree(t, clone)
	if got := gotTracked["crlf.txt"].Content; got != "windows\nline\n" {
		t.Errorf("crlf.txt after the dirty diff = %q, want git's normalised form", got)
	}
	delete(wantTracked, "crlf.txt")
	delete(gotTracked, "crlf.txt")
	if d := diffTrees(wantTracked, gotTracked); d != "" {
		t.Errorf("HEAD + dirty diff differs from the captured tracked files:\n%s", d)
	}
}

// A second capture after 10 files changed uploads those 10 blobs plus the
// new snapshot and dirty diff, and hashes only the changed files.
func TestSecondCaptureUploadsOnlyChanges(t *testing.T) {
	defer workspace.SetRacyWindow(0)()
	repo := newRepo(t)
	const files = 1200
	for i := range files {
		write(t, repo, filepathN("src", i), contentN(i, 0))
	}
	commitAll(t, repo, "init")
	store := &workspacetest.MemStore{}
	c1, st1 := captureUpload(t, workspace.CaptureOptions{Dir: repo}, store)
	if st1.Uploaded != files+1 || c1.Stats.Hashed != files {
		t.Fatalf("first capture: uploaded %d blobs, hashed %d files; want %d and %d", st1.Uploaded, c1.Stats.Hashed, files+1, files)
	}
	// Put receives batches, never one blob at a time.
	if c := store.Counts(); c.PutCalls != 2 || c.LargestPut != workspace.MaxPutBlobs {
		t.Errorf("first upload: %d Put calls, largest %d blobs; want 2 calls of at most %d", c.PutCalls, c.LargestPut, workspace.MaxPutBlobs)
	}
	for i := range 10 {
		write(t, repo, filepathN("src", i*97), contentN(i*97, 1))
	}
	store.ResetCounts()
	c2, st2 := captureUpload(t, workspace.CaptureOptions{Dir: repo}, store)
	counts := store.Counts()
	if counts.BlobsPut != 12 || st2.Uploaded != 12 {
		t.Errorf("second capture put %d blobs (stats %d), want 12 (10 files + snapshot + dirty diff)", counts.BlobsPut, st2.Uploaded)
	}
	if counts.HashesAsked != c2.BlobCount() || counts.MissingCalls != 1 {
		t.Errorf("Missing asked %d hashes in %d calls, want %d in 1", counts.HashesAsked, counts.MissingCalls, c2.BlobCount())
	}
	if c2.Stats.Hashed != 10 {
		t.Errorf("second capture hashed %d files, want 10 (the rest from the cache)", c2.Stats.Hashed)
	}
	if c2.Manifest.DirtyDiffHash == "" {
		t.Error("second capture has no dirty diff")
	}
	// Nothing changed: nothing but nothing is uploaded, nothing is hashed.
	store.ResetCounts()
	c3, st3 := captureUpload(t, workspace.CaptureOptions{Dir: repo}, store)
	if st3.Uploaded != 0 || c3.Stats.Hashed != 0 {
		t.Errorf("unchanged re-capture uploaded %d blobs and hashed %d files, want 0 and 0", st3.Uploaded, c3.Stats.Hashed)
	}
	if c3.Manifest.BundleHash != c2.Manifest.BundleHash {
		t.Error("the same tree gave a different snapshot hash")
	}
}

// The cache never hides a change: same size, mtime restored, content
// different.
func TestHashCacheDetectsSameSizeSameMtimeEdit(t *testing.T) {
	defer workspace.SetRacyWindow(0)()
	repo := newRepo(t)
	write(t, repo, "f.txt", "aaaa\n")
	commitAll(t, repo, "init")
	p := filepath.Join(repo, "f.txt")
	old := time.Now().Add(-time.Hour)
	os.Chtimes(p, old, old)
	c1, err := workspace.Capture(context.Background(), workspace.CaptureOptions{Dir: repo})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p, []byte("bbbb\n"), 0o644)
	os.Chtimes(p, old, old)
	c2, err := workspace.Capture(context.Background(), workspace.CaptureOptions{Dir: repo})
	if err != nil {
		t.Fatal(err)
	}
	if c1.Manifest.BundleHash == c2.Manifest.BundleHash {
		t.Fatal("an edit that kept size and mtime was not seen")
	}
	if c2.Stats.Hashed != 1 {
		t.Errorf("hashed %d files, want 1", c2.Stats.Hashed)
	}
	// A damaged cache is ignored, not trusted.
	cache := filepath.Join(repo, ".git", "warrant", "hashcache")
	b, err := os.ReadFile(cache)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	os.WriteFile(cache, b, 0o644)
	c3, err := workspace.Capture(context.Background(), workspace.CaptureOptions{Dir: repo, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if c3.Manifest.BundleHash != c2.Manifest.BundleHash || c3.Stats.Hashed != 1 {
		t.Errorf("after cache damage: hash changed or hashed %d files (want 1)", c3.Stats.Hashed)
	}
}

// A file edited between Capture and Upload is refused, not uploaded
// under its old hash.
func TestUploadRefusesFileChangedSinceCapture(t *testing.T) {
	repo := newRepo(t)
	write(t, repo, "f.txt", "original\n")
	commitAll(t, repo, "init")
	c, err := workspace.Capture(context.Background(), workspace.CaptureOptions{Dir: repo, RetainBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	write(t, repo, "f.txt", "changed!\n")
	store := &workspacetest.MemStore{}
	_, err = workspace.Upload(context.Background(), c, store)
	if !errors.Is(err, workspace.ErrChangedSinceCapture) {
		t.Fatalf("Upload error = %v, want ErrChangedSinceCapture", err)
	}
}

func TestCaptureNonGitDirectoryNeedsAllowlist(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "src/main.c", "int main(){}\n")
	write(t, dir, "src/.env", "SECRET=x\n")
	write(t, dir, "README", "readme\n")
	symlink(t, dir, "src/current", "main.c")
	_, err := workspace.Capture(context.Background(), workspace.CaptureOptions{Dir: dir})
	if !errors.Is(err, workspace.ErrNotGitNoAllowlist) {
		t.Fatalf("Capture without allowlist: %v, want ErrNotGitNoAllowlist", err)
	}
	store := &workspacetest.MemStore{}
	c, _ := captureUpload(t, workspace.CaptureOptions{Dir: dir, AllowUntracked: []string{"src/"}}, store)
	if c.Manifest.BaseRef != "" || c.Manifest.DirtyDiffHash != "" {
		t.Errorf("non-git capture: BaseRef %q, DirtyDiffHash %q; want both empty", c.Manifest.BaseRef, c.Manifest.DirtyDiffHash)
	}
	if !slices.Equal(c.Manifest.DeniedPaths, []string{"src/.env"}) {
		t.Errorf("DeniedPaths = %q", c.Manifest.DeniedPaths)
	}
	w := materialize(t, &c.Manifest, store)
	want := map[string]node{
		"src/main.c":  {protocol.ModeFile, "int main(){}\n"},
		"src/current": {protocol.ModeSymlink, "main.c"},
	}
	if d := diffTrees(want, readTree(t, w.Dir)); d != "" {
		t.Errorf("materialized tree differs:\n%s", d)
	}
}

// The snapshot Capture writes is the canonical encoding of itself.
func TestSnapshotIsCanonical(t *testing.T) {
	repo := newRepo(t)
	write(t, repo, "b", "b")
	write(t, repo, "a-c", "x")
	write(t, repo, "a/b", "y")
	writeMode(t, repo, "x.sh", "z", 0o755)
	symlink(t, repo, "l", "a/b")
	commitAll(t, repo, "init")
	c, err := workspace.Capture(context.Background(), workspace.CaptureOptions{Dir: repo})
	if err != nil {
		t.Fatal(err)
	}
	s, err := protocol.ParseSnapshot(c.Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, c.Snapshot) {
		t.Errorf("snapshot is not canonical:\n%s\nvs\n%s", c.Snapshot, again)
	}
	if len(s.Entries) != 5 {
		t.Errorf("%d entries, want 5", len(s.Entries))
	}
}

func filepathN(dir string, i int) string {
	return dir + "/" + string(rune('a'+i%7)) + "/file" + itoa(i) + ".txt"
}

func contentN(i, gen int) string {
	return strings.Repeat("line of file "+itoa(i)+" generation "+itoa(gen)+"\n", 1+i%5)
}

func itoa(i int) string { return strconv.Itoa(i) }

// A tracked file under a directory that became a symlink is not read
// through the symlink (git, too, sees it as deleted), so nothing outside
// the tree is captured.
func TestCaptureNeverFollowsSymlinkedParents(t *testing.T) {
	outside := t.TempDir()
	write(t, outside, "passwd", "root:x:0:0:outside secret\n")
	repo := newRepo(t)
	write(t, repo, "config/passwd", "tracked\n")
	write(t, repo, "keep.txt", "keep\n")
	commitAll(t, repo, "init")
	os.RemoveAll(filepath.Join(repo, "config"))
	symlink(t, repo, "config", outside)
	store := &workspacetest.MemStore{}
	c, _ := captureUpload(t, workspace.CaptureOptions{Dir: repo, AllowUntracked: []string{"*"}}, store)
	snap, err := protocol.ParseSnapshot(c.Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range snap.Entries {
		paths = append(paths, e.Path)
	}
	// The symlink itself is captured as a symlink (an untracked one,
	// allowlisted); the file behind it is not.
	if want := []string{"config", "keep.txt"}; !slices.Equal(paths, want) {
		t.Errorf("snapshot paths %q, want %q", paths, want)
	}
	for b := range c.Blobs() {
		data, _ := store.Bytes(b.Hash)
		if bytes.Contains(data, []byte("outside secret")) {
			t.Fatal("content from outside the tree was captured")
		}
	}
	// The materialize side refuses that absolute symlink.
	_, err = workspace.Materialize(context.Background(), workspace.MaterializeOptions{
		Dir: filepath.Join(t.TempDir(), "ws"), Manifest: &c.Manifest, Source: store})
	if !errors.Is(err, protocol.ErrBadPath) {
		t.Errorf("materializing an absolute symlink: %v, want ErrBadPath", err)
	}
}

// A repository without commits: everything staged is captured, the base
// ref is empty and the dirty diff adds every file.
func TestCaptureUnbornRepository(t *testing.T) {
	repo := newRepo(t)
	write(t, repo, "a.txt", "a\n")
	writeMode(t, repo, "run.sh", "#!/bin/sh\n", 0o755)
	git(t, repo, "add", "a.txt", "run.sh")
	write(t, repo, "a.txt", "a, edited\n")
	write(t, repo, "new.md", "untracked\n")
	store := &workspacetest.MemStore{}
	c, _ := captureUpload(t, workspace.CaptureOptions{Dir: repo, AllowUntracked: []string{"*.md"}}, store)
	if c.Manifest.BaseRef != "" {
		t.Errorf("BaseRef = %q, want empty for a repository without commits", c.Manifest.BaseRef)
	}
	if !bytes.Contains(c.DirtyDiff, []byte("+a, edited")) || !bytes.Contains(c.DirtyDiff, []byte("new file mode 100755")) {
		t.Errorf("dirty diff:\n%s", c.DirtyDiff)
	}
	w := materialize(t, &c.Manifest, store)
	if d := diffTrees(readTree(t, repo), readTree(t, w.Dir)); d != "" {
		t.Error(d)
	}
}

// The caches never outlive what they describe: staging and unstaging
// changes the next capture (the index listing is keyed by the index), and
// a new deny pattern applies to files the hash cache already knows.
func TestCachesFollowIndexAndDenyChanges(t *testing.T) {
	defer workspace.SetRacyWindow(0)()
	repo := newRepo(t)
	write(t, repo, "a.txt", "a\n")
	write(t, repo, "b.txt", "b\n")
	write(t, repo, "conf/app.toml", "token = 1\n")
	commitAll(t, repo, "init")
	capture := func(opts workspace.CaptureOptions) *workspace.Captured {
		t.Helper()
		opts.Dir = repo
		c, err := workspace.Capture(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	paths := func(c *workspace.Captured) []string {
		s, err := protocol.ParseSnapshot(c.Snapshot)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range s.Entries {
			out = append(out, e.Path)
		}
		return out
	}
	c1 := capture(workspace.CaptureOptions{})
	if !slices.Equal(paths(c1), []string{"a.txt", "b.txt", "conf/app.toml"}) {
		t.Fatalf("first capture: %q", paths(c1))
	}
	if _, err := os.Stat(filepath.Join(repo, ".git", "warrant", "listing")); err != nil {
		t.Fatalf("index listing was not cached: %v", err)
	}
	// Untrack b.txt and stage a change to a.txt: the listing must change.
	git(t, repo, "rm", "-q", "--cached", "b.txt")
	write(t, repo, "a.txt", "a2\n")
	git(t, repo, "add", "a.txt")
	c2 := capture(workspace.CaptureOptions{})
	if !slices.Equal(paths(c2), []string{"a.txt", "conf/app.toml"}) {
		t.Errorf("after git rm --cached: %q", paths(c2))
	}
	if !bytes.Contains(c2.DirtyDiff, []byte("deleted file mode")) || !bytes.Contains(c2.DirtyDiff, []byte("+a2")) {
		t.Errorf("dirty diff misses the staged changes:\n%s", c2.DirtyDiff)
	}
	// A new deny pattern excludes a file the hash cache holds.
	c3 := capture(workspace.CaptureOptions{Deny: []string{"*.toml"}})
	if !slices.Equal(paths(c3), []string{"a.txt"}) || !slices.Equal(c3.Manifest.DeniedPaths, []string{"conf/app.toml"}) {
		t.Errorf("with deny *.toml: snapshot %q, denied %q", paths(c3), c3.Manifest.DeniedPaths)
	}
}

// A repository in the middle of a conflicted merge: the file is captured
// as it is in the work tree (markers and all) and the dirty diff shows it.
func TestCaptureDuringMergeConflict(t *testing.T) {
	repo := newRepo(t)
	write(t, repo, "f.txt", "base\n")
	commitAll(t, repo, "base")
	git(t, repo, "checkout", "-q", "-b", "other")
	write(t, repo, "f.txt", "theirs\n")
	commitAll(t, repo, "theirs")
	git(t, repo, "checkout", "-q", "main")
	write(t, repo, "f.txt", "ours\n")
	commitAll(t, repo, "ours")
	if _, err := gitErr(repo, "merge", "-q", "other"); err == nil {
		t.Fatal("expected a merge conflict")
	}
	store := &workspacetest.MemStore{}
	c, _ := captureUpload(t, workspace.CaptureOptions{Dir: repo}, store)
	w := materialize(t, &c.Manifest, store)
	if d := diffTrees(readTree(t, repo), readTree(t, w.Dir)); d != "" {
		t.Error(d)
	}
	if !bytes.Contains(c.DirtyDiff, []byte("+<<<<<<< HEAD")) {
		t.Errorf("dirty diff does not show the conflicted file:\n%s", c.DirtyDiff)
	}
}
