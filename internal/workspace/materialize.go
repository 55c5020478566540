package workspace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"warrant.dev/warrant/protocol"
)

// MaterializeOptions configures Materialize.
type MaterializeOptions struct {
	// Dir is the workspace to create. It must not exist or be an empty
	// directory.
	Dir string
	// StateDir, if set, is a runner-private directory outside Dir where
	// Materialize keeps the baseline Collect compares against (a copy of
	// the base index). Without it Collect rehashes every file.
	StateDir string
	Manifest *protocol.Manifest
	Source   BlobSource
	// Workers is how many blobs are fetched and written in parallel
	// (default 8).
	Workers int
	Logger  *slog.Logger
}

// Materialized describes a materialized workspace.
type Materialized struct {
	Dir        string // absolute
	StateDir   string // absolute, or empty
	BaseCommit string // the synthetic commit HEAD points at
	BaseTree   string
	Files      int
	Bytes      int64
}

// Errors of Materialize that callers may branch on. Refusals of unsafe
// content wrap protocol.ErrBadPath or ErrBlobMismatch.
var (
	ErrUnsupportedFormat = errors.New("workspace format not supported: only warrant.snapshot.v1 can be materialized")
	ErrInconsistent      = errors.New("manifest and snapshot disagree")
	ErrTargetNotEmpty    = errors.New("materialize target exists and is not an empty directory")
)

const (
	maxSnapshotBytes = 1 << 30
	maxSymlinkDepth  = 40
	// materializeInMemory is the largest blob verified in memory before it
	// is written; larger ones go to a temporary file renamed into place
	// once verified.
	materializeInMemory = 8 << 20
	baseBranch          = "main"
	baseRef             = "refs/warrant/base"
)

// Materialize creates a workspace from a manifest: it fetches the snapshot
// and every blob from src, verifies each against its hash before writing
// it, refuses unsafe paths and symlinks (see the package documentation),
// writes the files with their modes, and makes the directory a git
// repository whose HEAD (branch main, also refs/warrant/base) is a
// synthetic commit of exactly the captured state, so `git diff` in the
// workspace shows the session's changes and nothing else. No history is
// present. Nothing is written outside Dir and StateDir.
func Materialize(ctx context.Context, opts MaterializeOptions) (*Materialized, error) {
	start := time.Now()
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Dir == "" || opts.Manifest == nil || opts.Source == nil {
		return nil, errors.New("materialize: Dir, Manifest and Source are required")
	}
	m := opts.Manifest
	if m.Version != protocol.VersionManifest {
		return nil, fmt.Errorf("materialize: manifest version %q, want %q", m.Version, protocol.VersionManifest)
	}
	if m.Format != protocol.SnapshotVersion {
		return nil, fmt.Errorf("materialize: format %q: %w", m.Format, ErrUnsupportedFormat)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("materialize: %w", err)
	}
	stateDir := ""
	if opts.StateDir != "" {
		if stateDir, err = filepath.Abs(opts.StateDir); err != nil {
			return nil, fmt.Errorf("materialize: %w", err)
		}
		if within(stateDir, dir) {
			return nil, fmt.Errorf("materialize: state directory %s lies inside the workspace %s", stateDir, dir)
		}
	}

	snapBytes, err := getVerified(ctx, opts.Source, m.BundleHash, -1, maxSnapshotBytes)
	if err != nil {
		return nil, fmt.Errorf("materialize: snapshot: %w", err)
	}
	snap, err := protocol.ParseSnapshot(snapBytes)
	if err != nil {
		return nil, fmt.Errorf("materialize: %w", err)
	}
	if err := checkManifest(m, snap); err != nil {
		return nil, fmt.Errorf("materialize: %w", err)
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = 8
	}
	// Symlink targets first: they are checked before anything is written.
	targets, err := fetchSymlinks(ctx, opts.Source, snap, workers)
	if err != nil {
		return nil, fmt.Errorf("materialize: %w", err)
	}
	if err := checkSymlinks(targets); err != nil {
		return nil, fmt.Errorf("materialize: %w", err)
	}
	if err := prepareEmptyDir(dir); err != nil {
		return nil, fmt.Errorf("materialize: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("materialize: %w", err)
	}
	defer root.Close()
	var total int64
	for _, e := range snap.Entries {
		total += e.Size
	}
	if err := writeEntries(ctx, root, opts.Source, snap, targets, workers); err != nil {
		return nil, fmt.Errorf("materialize: %w", err)
	}
	tFiles := time.Since(start)
	commit, tree, err := commitBase(ctx, dir, snap, m.BundleHash)
	if err != nil {
		return nil, fmt.Errorf("materialize: %w", err)
	}
	res := &Materialized{Dir: dir, StateDir: stateDir, BaseCommit: commit, BaseTree: tree, Files: len(snap.Entries), Bytes: total}
	if stateDir != "" {
		if err := saveState(dir, stateDir, res); err != nil {
			return nil, fmt.Errorf("materialize: %w", err)
		}
	}
	log.Debug("workspace materialized", "dir", dir, "files", res.Files, "bytes", total, "commit", commit,
		"files_took", tFiles, "took", time.Since(start))
	return res, nil
}

// within reports whether p is base or lies below it.
func within(p, base string) bool {
	rel, err := filepath.Rel(base, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// checkManifest refuses a snapshot that contains what the manifest says
// was excluded, or that lacks the untracked files the manifest lists.
func checkManifest(m *protocol.Manifest, snap *protocol.Snapshot) error {
	deny, err := compilePatterns(m.DeniedPatterns, true)
	if err != nil {
		return fmt.Errorf("manifest deniedPatterns: %w", err)
	}
	denied := make(map[string]bool, len(m.DeniedPaths))
	for _, p := range m.DeniedPaths {
		denied[p] = true
	}
	byPath := make(map[string]*protocol.SnapshotEntry, len(m.UntrackedFiles))
	for _, u := range m.UntrackedFiles {
		byPath[u.Path] = nil
	}
	var memo dirMemo
	for i := range snap.Entries {
		e := &snap.Entries[i]
		if denied[e.Path] {
			return fmt.Errorf("%w: snapshot contains %q, which the manifest lists as denied", ErrInconsistent, e.Path)
		}
		if pat, hit := deny.match(e.Path, &memo); hit {
			return fmt.Errorf("%w: snapshot contains %q, which deny pattern %q excludes", ErrInconsistent, e.Path, pat)
		}
		if _, ok := byPath[e.Path]; ok {
			byPath[e.Path] = e
		}
	}
	for _, u := range m.UntrackedFiles {
		e := byPath[u.Path]
		if e == nil {
			return fmt.Errorf("%w: untracked file %q is not in the snapshot", ErrInconsistent, u.Path)
		}
		if e.Hash != u.Hash || e.Size != u.Bytes {
			return fmt.Errorf("%w: untracked file %q differs from its snapshot entry", ErrInconsistent, u.Path)
		}
	}
	return nil
}

// fetchSymlinks fetches and verifies the targets of the snapshot's
// symlinks.
func fetchSymlinks(ctx context.Context, src BlobSource, snap *protocol.Snapshot, workers int) (map[string]string, error) {
	targets := make(map[string]string)
	var links []protocol.SnapshotEntry
	for _, e := range snap.Entries {
		if e.Mode == protocol.ModeSymlink {
			if e.Size > protocol.MaxPathBytes {
				return nil, fmt.Errorf("%w: symlink %q: target longer than %d bytes", protocol.ErrBadPath, e.Path, protocol.MaxPathBytes)
			}
			links = append(links, e)
		}
	}
	var mu sync.Mutex
	err := parallel(ctx, len(links), workers, func(i int) error {
		e := links[i]
		b, err := getVerified(ctx, src, e.Hash, e.Size, e.Size)
		if err != nil {
			return fmt.Errorf("symlink %q: %w", e.Path, err)
		}
		mu.Lock()
		targets[e.Path] = string(b)
		mu.Unlock()
		return nil
	})
	return targets, err
}

// checkSymlinks refuses any symlink whose target is empty or absolute, or
// which, resolved through the snapshot's own symlinks, leaves the tree or
// enters a .git directory.
func checkSymlinks(targets map[string]string) error {
	for p, t := range targets {
		if _, err := resolveLink(targets, p, t, 0); err != nil {
			return err
		}
	}
	return nil
}

// resolveLink resolves the symlink at p with target t lexically, following
// the other symlinks of the tree, and returns the components it lands on.
func resolveLink(targets map[string]string, p, t string, depth int) ([]string, error) {
	switch {
	case depth > maxSymlinkDepth:
		return nil, fmt.Errorf("%w: symlink %q: too many levels of symlinks", protocol.ErrBadPath, p)
	case t == "":
		return nil, fmt.Errorf("%w: symlink %q has an empty target", protocol.ErrBadPath, p)
	case strings.HasPrefix(t, "/"):
		return nil, fmt.Errorf("%w: symlink %q points to the absolute path %q", protocol.ErrBadPath, p, t)
	case strings.ContainsAny(t, "\x00\\"):
		return nil, fmt.Errorf("%w: symlink %q: target contains a NUL or backslash", protocol.ErrBadPath, p)
	}
	var stack []string
	if d := path.Dir(p); d != "." {
		stack = strings.Split(d, "/")
	}
	for _, c := range strings.Split(t, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) == 0 {
				return nil, fmt.Errorf("%w: symlink %q -> %q leads outside the workspace", protocol.ErrBadPath, p, t)
			}
			stack = stack[:len(stack)-1]
			continue
		}
		if strings.EqualFold(c, ".git") {
			return nil, fmt.Errorf("%w: symlink %q -> %q leads into a .git directory", protocol.ErrBadPath, p, t)
		}
		stack = append(stack, c)
		cur := strings.Join(stack, "/")
		if next, ok := targets[cur]; ok {
			resolved, err := resolveLink(targets, cur, next, depth+1)
			if err != nil {
				return nil, fmt.Errorf("%w (through symlink %q)", err, p)
			}
			stack = append([]string(nil), resolved...)
		}
	}
	return stack, nil
}

// prepareEmptyDir creates dir, or accepts it if it is an empty directory
// (not a symlink).
func prepareEmptyDir(dir string) error {
	fi, err := os.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return err
		}
		return os.Mkdir(dir, 0o755)
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%w: %s", ErrTargetNotEmpty, dir)
	}
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if names, _ := f.Readdirnames(1); len(names) > 0 {
		return fmt.Errorf("%w: %s", ErrTargetNotEmpty, dir)
	}
	return nil
}

// writeEntries fetches each distinct blob once, verifies it and writes it
// to every path that has it.
func writeEntries(ctx context.Context, root *os.Root, src BlobSource, snap *protocol.Snapshot, targets map[string]string, workers int) error {
	type group struct {
		hash    string
		size    int64
		entries []int
	}
	var groups []group
	index := make(map[string]int)
	for i, e := range snap.Entries {
		if e.Mode == protocol.ModeSymlink {
			continue
		}
		g, ok := index[e.Hash]
		if !ok {
			g = len(groups)
			index[e.Hash] = g
			groups = append(groups, group{hash: e.Hash, size: e.Size})
		}
		if groups[g].size != e.Size {
			return fmt.Errorf("%w: %q and %q have hash %s but different sizes", ErrInconsistent,
				snap.Entries[groups[g].entries[0]].Path, e.Path, e.Hash)
		}
		groups[g].entries = append(groups[g].entries, i)
	}
	err := parallel(ctx, len(groups), workers, func(gi int) error {
		g := groups[gi]
		first := snap.Entries[g.entries[0]]
		if g.size > materializeInMemory {
			if err := writeLargeVerified(ctx, root, src, first); err != nil {
				return err
			}
			for _, i := range g.entries[1:] {
				if err := copyWithin(root, first.Path, snap.Entries[i]); err != nil {
					return err
				}
			}
			return nil
		}
		data, err := getVerified(ctx, src, g.hash, g.size, g.size)
		if err != nil {
			return fmt.Errorf("%q: %w", first.Path, err)
		}
		for _, i := range g.entries {
			if err := writeFile(root, snap.Entries[i], data); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, e := range snap.Entries {
		if e.Mode != protocol.ModeSymlink {
			continue
		}
		if err := mkParents(root, e.Path); err != nil {
			return err
		}
		if err := root.Symlink(targets[e.Path], e.Path); err != nil {
			return fmt.Errorf("symlink %q: %w", e.Path, err)
		}
	}
	return nil
}

func permOf(mode string) fs.FileMode {
	if mode == protocol.ModeExecutable {
		return 0o755
	}
	return 0o644
}

func mkParents(root *os.Root, p string) error {
	if d := path.Dir(p); d != "." {
		if err := root.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create directory %q: %w", d, err)
		}
	}
	return nil
}

// writeFile creates e.Path (which must not exist) with data.
func writeFile(root *os.Root, e protocol.SnapshotEntry, data []byte) error {
	if err := mkParents(root, e.Path); err != nil {
		return err
	}
	f, err := root.OpenFile(e.Path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, permOf(e.Mode))
	if err != nil {
		return fmt.Errorf("create %q: %w", e.Path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %q: %w", e.Path, err)
	}
	if err := f.Chmod(permOf(e.Mode)); err != nil { // exact mode, whatever the umask
		f.Close()
		return fmt.Errorf("chmod %q: %w", e.Path, err)
	}
	return f.Close()
}

// writeLargeVerified streams a large blob into a temporary file next to its
// destination, checks it, and renames it into place.
func writeLargeVerified(ctx context.Context, root *os.Root, src BlobSource, e protocol.SnapshotEntry) error {
	if err := mkParents(root, e.Path); err != nil {
		return err
	}
	tmp := e.Path + ".warrant-partial"
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create %q: %w", tmp, err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			root.Remove(tmp)
		}
	}()
	rc, err := src.Get(ctx, e.Hash)
	if err != nil {
		return fmt.Errorf("%q: fetch blob %s: %w", e.Path, e.Hash, err)
	}
	defer rc.Close()
	h := newSHA256()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(rc, e.Size+1))
	if err != nil {
		return fmt.Errorf("%q: fetch blob %s: %w", e.Path, e.Hash, err)
	}
	if n != e.Size || hexSum(h) != e.Hash {
		return fmt.Errorf("%q: blob %s: %w", e.Path, e.Hash, ErrBlobMismatch)
	}
	if err := f.Chmod(permOf(e.Mode)); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := root.Rename(tmp, e.Path); err != nil {
		return err
	}
	ok = true
	return nil
}

// copyWithin copies an already written (and verified) file to another
// entry with the same content.
func copyWithin(root *os.Root, from string, e protocol.SnapshotEntry) error {
	in, err := root.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := mkParents(root, e.Path); err != nil {
		return err
	}
	out, err := root.OpenFile(e.Path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, permOf(e.Mode))
	if err != nil {
		return fmt.Errorf("create %q: %w", e.Path, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Chmod(permOf(e.Mode)); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// neutralAttributes goes to .git/info/attributes of every repository this
// package runs git in on a runner, where it overrides the tree's own
// .gitattributes: no end-of-line conversion, no filters, no ident
// expansion, no encoding conversion, default diff and merge. Git then
// stores and diffs the bytes exactly as they are.
const neutralAttributes = "* -text -eol -filter -ident -working-tree-encoding !diff !merge\n"

// workspaceConfig is the .git/config of a materialized workspace.
const workspaceConfig = `[core]
	repositoryformatversion = 0
	filemode = true
	bare = false
	logallrefupdates = true
	symlinks = true
	ignorecase = false
	autocrlf = false
	safecrlf = false
[gc]
	auto = 0
[user]
	name = warrant
	email = warrant@localhost
`

// commitBase makes dir a git repository whose HEAD commits exactly the
// snapshot's files.
func commitBase(ctx context.Context, dir string, snap *protocol.Snapshot, bundleHash string) (commit, tree string, err error) {
	g := newGit(dir, runnerSide, fixedIdentity...)
	if _, err := g.run(ctx, nil, "init", "-q", "--template=", "--initial-branch="+baseBranch); err != nil {
		return "", "", err
	}
	gitDir := filepath.Join(dir, ".git")
	if err := os.WriteFile(filepath.Join(gitDir, "config"), []byte(workspaceConfig), 0o644); err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(filepath.Join(gitDir, "info"), 0o755); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(filepath.Join(gitDir, "info", "attributes"), []byte(neutralAttributes), 0o644); err != nil {
		return "", "", err
	}
	var paths bytes.Buffer
	for _, e := range snap.Entries {
		paths.WriteString(e.Path)
		paths.WriteByte(0)
	}
	if _, err := g.run(ctx, &paths, "update-index", "--add", "-z", "--stdin"); err != nil {
		return "", "", err
	}
	out, err := g.run(ctx, nil, "write-tree")
	if err != nil {
		return "", "", err
	}
	tree = strings.TrimSpace(string(out))
	msg := strings.NewReader("warrant snapshot " + bundleHash + "\n")
	out, err = g.run(ctx, msg, "commit-tree", tree)
	if err != nil {
		return "", "", err
	}
	commit = strings.TrimSpace(string(out))
	if _, err := g.run(ctx, nil, "update-ref", "refs/heads/"+baseBranch, commit); err != nil {
		return "", "", err
	}
	if _, err := g.run(ctx, nil, "update-ref", baseRef, commit); err != nil {
		return "", "", err
	}
	return commit, tree, nil
}

// parallel runs fn(0..n-1) on up to workers goroutines, stopping at the
// first error.
func parallel(ctx context.Context, n, workers int, fn func(i int) error) error {
	if n == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan int)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		}()
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return first
}
