package workspace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"warrant.dev/warrant/protocol"
)

// PullMode chooses where Pull puts a run's changes.
type PullMode string

// Pull modes.
const (
	// PullAuto applies to the working tree when neither HEAD nor any file
	// the run touched changed since the capture, and to a new branch
	// otherwise.
	PullAuto PullMode = ""
	// PullWorktree always writes the working tree: changes that merge
	// cleanly are written, conflicts are reported and left alone.
	PullWorktree PullMode = "worktree"
	// PullBranch always commits the clean changes on a new branch
	// warrant/<run id>, leaving the working tree and index untouched.
	PullBranch PullMode = "branch"
)

// PullOptions configures Pull.
type PullOptions struct {
	Dir      string             // the local work tree (its repository's top level is used)
	RunID    string             // names the branch warrant/<RunID>
	Manifest *protocol.Manifest // the run's workspace manifest (the base)
	Diff     []byte             // the run's diff against the base (Output.Diff)
	Source   BlobSource         // provides the base snapshot and blobs
	Mode     PullMode
	DryRun   bool      // report what would change; write nothing
	Now      time.Time // commit time of the branch (default: now)
	Logger   *slog.Logger
}

// PullResult reports what Pull did (or, in a dry run, would do).
type PullResult struct {
	Mode      PullMode // PullWorktree or PullBranch: where the changes went
	DryRun    bool
	Diverged  bool
	Warnings  []string       // why the local tree counts as diverged
	Branch    string         // in branch mode, the branch (created unless DryRun or nothing to commit)
	Commit    string         // the branch's commit; empty in a dry run
	Applied   []PulledFile   // changes applied (or that would be)
	Unchanged []string       // touched paths that already have the run's content
	Conflicts []PullConflict // paths left alone, with the reason
}

// PulledFile is one change Pull applied.
type PulledFile struct {
	Path   string
	Action string // "add", "modify" or "delete"
	Merged bool   // content merged from local and run changes (git merge-file)
}

// PullConflict is a path Pull did not apply. Pull never writes conflict
// markers and never picks a side.
type PullConflict struct {
	Path   string
	Reason string
}

// Errors of Pull callers may branch on.
var (
	ErrBranchExists     = errors.New("pull branch already exists")
	ErrDiffDoesNotApply = errors.New("the run's diff does not apply to its own base")
)

// Pull brings a run's changes into a local work tree with a three-way
// comparison of the base (the captured snapshot), the run's output (base
// plus the run's diff) and the local state. See PullMode for where the
// changes go; see the package documentation for the rules.
func Pull(ctx context.Context, opts PullOptions) (*PullResult, error) {
	if opts.Dir == "" || opts.Manifest == nil || opts.Source == nil || opts.RunID == "" {
		return nil, errors.New("pull: Dir, RunID, Manifest and Source are required")
	}
	if opts.Manifest.Format != protocol.SnapshotVersion {
		return nil, fmt.Errorf("pull: format %q: %w", opts.Manifest.Format, ErrUnsupportedFormat)
	}
	switch opts.Mode {
	case PullAuto, PullWorktree, PullBranch:
	default:
		return nil, fmt.Errorf("pull: unknown mode %q", opts.Mode)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("pull: %w", err)
	}
	repo, err := findRepo(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("pull: %w", err)
	}
	p := &puller{opts: opts, repo: repo, top: dir}
	if repo != nil {
		p.top = repo.top
	}
	scratch, err := os.MkdirTemp("", "warrant-pull-")
	if err != nil {
		return nil, fmt.Errorf("pull: %w", err)
	}
	defer os.RemoveAll(scratch)
	p.scratch = scratch
	res, err := p.pull(ctx)
	if err != nil {
		return nil, fmt.Errorf("pull %s into %s: %w", opts.RunID, p.top, err)
	}
	opts.Logger.Debug("pull", "run", opts.RunID, "mode", res.Mode, "dry_run", res.DryRun, "diverged", res.Diverged,
		"applied", len(res.Applied), "conflicts", len(res.Conflicts), "branch", res.Branch)
	return res, nil
}

type puller struct {
	opts    PullOptions
	repo    *repoInfo // nil outside git
	top     string
	scratch string
	root    *os.Root
}

// fileSide is one side of a three-way comparison for one path.
type fileSide struct {
	kind    sideKind
	mode    string // for files and symlinks
	data    []byte // content, or symlink target
	blocked string // why the path cannot be used, for kindBlocked
}

type sideKind uint8

const (
	kindAbsent sideKind = iota
	kindFile
	kindSymlink
	kindBlocked // a directory or special file is there, or a parent is a symlink or file
)

// sameSide is equal, with two absent sides counting as the same.
func sameSide(a, b fileSide) bool {
	return a.equal(b) || a.kind == kindAbsent && b.kind == kindAbsent
}

func (a fileSide) equal(b fileSide) bool {
	return a.kind == b.kind && a.mode == b.mode && bytes.Equal(a.data, b.data) && a.kind != kindBlocked
}

// plan is the decision for one touched path.
type plan struct {
	path   string
	base   fileSide
	out    fileSide
	local  fileSide
	result fileSide // what to write, when action != ""
	action string   // "add", "modify", "delete", or "" (unchanged or conflict)
	merged bool
	reason string // conflict reason
}

func (p *puller) pull(ctx context.Context) (*PullResult, error) {
	o := p.opts
	res := &PullResult{DryRun: o.DryRun}
	if len(bytes.TrimSpace(o.Diff)) == 0 {
		res.Mode = PullWorktree
		return res, nil
	}
	root, err := os.OpenRoot(p.top)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	p.root = root

	paths, err := p.touchedPaths(ctx)
	if err != nil {
		return nil, err
	}
	plans, err := p.baseAndOutput(ctx, paths)
	if err != nil {
		return nil, err
	}

	// Divergence: HEAD moved, or a touched file changed locally.
	head := ""
	if p.repo != nil {
		if head, err = p.head(ctx); err != nil {
			return nil, err
		}
	}
	if head != o.Manifest.BaseRef {
		res.Warnings = append(res.Warnings, fmt.Sprintf("HEAD is %s but the run started from %s", orNone(head), orNone(o.Manifest.BaseRef)))
	}
	for _, pl := range plans {
		pl.local = p.localSide(pl.path)
		if !sameSide(pl.local, pl.base) && !sameSide(pl.local, pl.out) {
			res.Warnings = append(res.Warnings, pl.path+" changed locally since the capture")
		}
	}
	res.Diverged = len(res.Warnings) > 0

	mode := o.Mode
	if mode == PullAuto {
		mode = PullWorktree
		if res.Diverged && p.repo != nil {
			mode = PullBranch
		}
	}
	if mode == PullBranch && p.repo == nil {
		return nil, errors.New("branch mode needs a git repository")
	}
	res.Mode = mode
	if mode == PullBranch {
		res.Branch = "warrant/" + o.RunID
		if err := p.checkBranch(ctx, res.Branch); err != nil {
			return nil, err
		}
		// The branch starts at HEAD: "local" is HEAD's content.
		if err := p.headSides(ctx, plans, head); err != nil {
			return nil, err
		}
	}
	for _, pl := range plans {
		if err := p.decide(ctx, pl); err != nil {
			return nil, err
		}
	}
	if mode == PullWorktree {
		p.checkParents(plans)
	}
	for _, pl := range plans {
		switch {
		case pl.reason != "":
			res.Conflicts = append(res.Conflicts, PullConflict{pl.path, pl.reason})
		case pl.action == "":
			res.Unchanged = append(res.Unchanged, pl.path)
		default:
			res.Applied = append(res.Applied, PulledFile{pl.path, pl.action, pl.merged})
		}
	}
	if o.DryRun || len(res.Applied) == 0 {
		if len(res.Applied) == 0 {
			res.Branch = ""
		}
		return res, nil
	}
	if mode == PullWorktree {
		return res, p.applyWorktree(plans)
	}
	commit, err := p.commitBranch(ctx, plans, head, res)
	if err != nil {
		return nil, err
	}
	res.Commit = commit
	return res, nil
}

func orNone(s string) string {
	if s == "" {
		return "(no commit)"
	}
	return s
}

// touchedPaths lists the paths the diff changes, refusing unsafe ones.
func (p *puller) touchedPaths(ctx context.Context) ([]string, error) {
	patch := filepath.Join(p.scratch, "run.diff")
	if err := os.WriteFile(patch, p.opts.Diff, 0o600); err != nil {
		return nil, err
	}
	g := newGit(p.scratch, runnerSide, "GIT_CEILING_DIRECTORIES="+filepath.Dir(p.scratch))
	out, err := g.run(ctx, nil, "apply", "--numstat", "-z", "--binary", patch)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDiffDoesNotApply, err)
	}
	// "<added>\t<deleted>\t<path>\0", or for a rename or copy
	// "<added>\t<deleted>\t\0<old>\0<new>\0".
	var paths []string
	recs := splitNUL(out)
	for i := 0; i < len(recs); i++ {
		f := strings.SplitN(recs[i], "\t", 3)
		if len(f) != 3 {
			return nil, fmt.Errorf("git apply --numstat: malformed record %q", recs[i])
		}
		if f[2] != "" {
			paths = append(paths, f[2])
			continue
		}
		if i+2 >= len(recs) {
			return nil, errors.New("git apply --numstat: truncated rename record")
		}
		paths = append(paths, recs[i+1], recs[i+2])
		i += 2
	}
	slices.Sort(paths)
	paths = slices.Compact(paths)
	for _, q := range paths {
		if err := protocol.ValidatePath(q); err != nil {
			return nil, fmt.Errorf("the run's diff touches an unsafe path: %w", err)
		}
	}
	return paths, nil
}

// baseAndOutput writes the base version of every touched path into a
// scratch tree, applies the run's diff there, and reads both sides back.
func (p *puller) baseAndOutput(ctx context.Context, paths []string) ([]*plan, error) {
	m := p.opts.Manifest
	snapBytes, err := getVerified(ctx, p.opts.Source, m.BundleHash, -1, maxSnapshotBytes)
	if err != nil {
		return nil, fmt.Errorf("base snapshot: %w", err)
	}
	snap, err := protocol.ParseSnapshot(snapBytes)
	if err != nil {
		return nil, fmt.Errorf("base snapshot: %w", err)
	}
	byPath := make(map[string]protocol.SnapshotEntry, len(snap.Entries))
	for _, e := range snap.Entries {
		byPath[e.Path] = e
	}
	tree := filepath.Join(p.scratch, "tree")
	if err := os.Mkdir(tree, 0o700); err != nil {
		return nil, err
	}
	troot, err := os.OpenRoot(tree)
	if err != nil {
		return nil, err
	}
	defer troot.Close()
	plans := make([]*plan, len(paths))
	for i, q := range paths {
		pl := &plan{path: q}
		plans[i] = pl
		e, ok := byPath[q]
		if !ok {
			continue
		}
		data, err := getVerified(ctx, p.opts.Source, e.Hash, e.Size, e.Size)
		if err != nil {
			return nil, fmt.Errorf("base of %q: %w", q, err)
		}
		pl.base = fileSide{kind: kindFile, mode: e.Mode, data: data}
		if e.Mode == protocol.ModeSymlink {
			pl.base.kind = kindSymlink
			if err := mkParents(troot, q); err != nil {
				return nil, err
			}
			if err := troot.Symlink(string(data), q); err != nil {
				return nil, err
			}
			continue
		}
		if err := writeFile(troot, e, data); err != nil {
			return nil, err
		}
	}
	g := newGit(tree, runnerSide, "GIT_CEILING_DIRECTORIES="+p.scratch)
	if _, err := g.run(ctx, nil, "init", "-q", "--template="); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tree, ".git", "config"), []byte(workspaceConfig), 0o600); err != nil {
		return nil, err
	}
	if _, err := g.run(ctx, nil, "apply", "--binary", filepath.Join(p.scratch, "run.diff")); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDiffDoesNotApply, err)
	}
	for _, pl := range plans {
		pl.out = readSide(troot, pl.path)
		if pl.out.kind == kindBlocked {
			return nil, fmt.Errorf("%w: %q is %s after applying it", ErrDiffDoesNotApply, pl.path, pl.out.blocked)
		}
	}
	return plans, nil
}

// readSide reads what is at p under root without following symlinks
// anywhere along the path.
func readSide(root *os.Root, p string) fileSide {
	parts := strings.Split(p, "/")
	for i := 1; i < len(parts); i++ {
		parent := strings.Join(parts[:i], "/")
		fi, err := root.Lstat(parent)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return fileSide{kind: kindAbsent}
		case err != nil:
			return fileSide{kind: kindBlocked, blocked: "unreadable: " + err.Error()}
		case fi.Mode()&fs.ModeSymlink != 0:
			return fileSide{kind: kindBlocked, blocked: "under the symlink " + parent}
		case !fi.IsDir():
			return fileSide{kind: kindBlocked, blocked: "under the file " + parent}
		}
	}
	fi, err := root.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fileSide{kind: kindAbsent}
	case err != nil:
		return fileSide{kind: kindBlocked, blocked: "unreadable: " + err.Error()}
	case fi.Mode()&fs.ModeSymlink != 0:
		t, err := root.Readlink(p)
		if err != nil {
			return fileSide{kind: kindBlocked, blocked: "unreadable: " + err.Error()}
		}
		return fileSide{kind: kindSymlink, mode: protocol.ModeSymlink, data: []byte(t)}
	case fi.IsDir():
		return fileSide{kind: kindBlocked, blocked: "a directory"}
	case !fi.Mode().IsRegular():
		return fileSide{kind: kindBlocked, blocked: "a special file"}
	}
	f, err := root.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fileSide{kind: kindBlocked, blocked: "unreadable: " + err.Error()}
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		return fileSide{kind: kindBlocked, blocked: "unreadable: " + err.Error()}
	}
	mode := protocol.ModeFile
	if fi.Mode()&0o100 != 0 {
		mode = protocol.ModeExecutable
	}
	return fileSide{kind: kindFile, mode: mode, data: buf.Bytes()}
}

func (p *puller) localSide(q string) fileSide { return readSide(p.root, q) }

func (p *puller) head(ctx context.Context) (string, error) {
	var out bytes.Buffer
	code, err := p.repo.git.exitCode(ctx, &out, nil, "rev-parse", "-q", "--verify", "HEAD^{commit}")
	if err != nil {
		return "", err
	}
	if code != 0 {
		return "", nil
	}
	return strings.TrimSpace(out.String()), nil
}

func (p *puller) checkBranch(ctx context.Context, branch string) error {
	g := p.repo.git
	if _, err := g.run(ctx, nil, "check-ref-format", "--branch", branch); err != nil {
		return fmt.Errorf("run id %q does not make a valid branch name %q", p.opts.RunID, branch)
	}
	code, err := g.exitCode(ctx, nil, nil, "rev-parse", "-q", "--verify", "refs/heads/"+branch)
	if err != nil {
		return err
	}
	if code == 0 {
		return fmt.Errorf("%w: %s; inspect it with 'git log %s', delete it with 'git branch -D %s' to pull again, or pull into the working tree with the worktree mode",
			ErrBranchExists, branch, branch, branch)
	}
	return nil
}

// headSides replaces each plan's local side with HEAD's version.
func (p *puller) headSides(ctx context.Context, plans []*plan, head string) error {
	for _, pl := range plans {
		pl.local = fileSide{kind: kindAbsent}
	}
	if head == "" {
		return nil
	}
	byPath := make(map[string]*plan, len(plans))
	var paths []string
	for _, pl := range plans {
		byPath[pl.path] = pl
		paths = append(paths, pl.path)
	}
	var out bytes.Buffer
	for len(paths) > 0 {
		n := min(len(paths), 1000)
		args := append([]string{"ls-tree", "-z", "--full-tree", head, "--"}, paths[:n]...)
		if err := p.repo.git.runTo(ctx, &out, nil, args...); err != nil {
			return err
		}
		paths = paths[n:]
	}
	type want struct {
		pl  *plan
		oid string
	}
	var wants []want
	for _, rec := range splitNUL(out.Bytes()) {
		meta, q, ok := strings.Cut(rec, "\t")
		f := strings.Fields(meta)
		pl := byPath[q]
		if !ok || len(f) != 3 || pl == nil {
			continue
		}
		switch f[0] {
		case protocol.ModeFile, protocol.ModeExecutable:
			pl.local = fileSide{kind: kindFile, mode: f[0]}
		case protocol.ModeSymlink:
			pl.local = fileSide{kind: kindSymlink, mode: f[0]}
		default:
			pl.local = fileSide{kind: kindBlocked, blocked: "a directory or submodule in HEAD"}
			continue
		}
		wants = append(wants, want{pl, f[2]})
	}
	if len(wants) == 0 {
		return nil
	}
	oids := make([]string, len(wants))
	for i, w := range wants {
		oids[i] = w.oid
	}
	contents, err := catFileContents(ctx, p.repo.git, oids)
	if err != nil {
		return err
	}
	for _, w := range wants {
		w.pl.local.data = contents[w.oid]
	}
	return nil
}

// decide fills in the plan's action, result or conflict.
func (p *puller) decide(ctx context.Context, pl *plan) error {
	b, l, o := pl.base, pl.local, pl.out
	switch {
	case l.kind == kindBlocked:
		pl.reason = "the local path is " + l.blocked
		return nil
	case l.equal(o) || l.kind == kindAbsent && o.kind == kindAbsent:
		return nil // already in the run's state
	case l.equal(b) || l.kind == kindAbsent && b.kind == kindAbsent:
		pl.result = o
	default:
		return p.merge(ctx, pl)
	}
	if o.kind == kindSymlink {
		if _, err := resolveLink(map[string]string{pl.path: string(o.data)}, pl.path, string(o.data), 0); err != nil {
			pl.reason = "the run's symlink is unsafe: " + err.Error()
			return nil
		}
	}
	switch {
	case o.kind == kindAbsent:
		pl.action = "delete"
	case l.kind == kindAbsent:
		pl.action = "add"
	default:
		pl.action = "modify"
	}
	return nil
}

// merge handles a path both sides changed: regular text files whose
// changes do not overlap merge cleanly (git merge-file); anything else is
// a conflict.
func (p *puller) merge(ctx context.Context, pl *plan) error {
	b, l, o := pl.base, pl.local, pl.out
	switch {
	case b.kind == kindAbsent:
		pl.reason = "added locally and by the run, with different content"
		return nil
	case l.kind == kindAbsent:
		pl.reason = "deleted locally, changed by the run"
		return nil
	case o.kind == kindAbsent:
		pl.reason = "changed locally, deleted by the run"
		return nil
	case b.kind != kindFile || l.kind != kindFile || o.kind != kindFile:
		pl.reason = "changed locally and by the run (symlink or type change)"
		return nil
	case isBinary(b.data) || isBinary(l.data) || isBinary(o.data):
		pl.reason = "binary file changed locally and by the run"
		return nil
	}
	mode := o.mode
	switch {
	case l.mode == b.mode:
	case o.mode == b.mode:
		mode = l.mode
	case l.mode != o.mode:
		pl.reason = "file mode changed differently locally and by the run"
		return nil
	}
	dir, err := os.MkdirTemp(p.scratch, "merge-")
	if err != nil {
		return err
	}
	names := [3]string{"local", "base", "run"}
	for i, data := range [][]byte{l.data, b.data, o.data} {
		if err := os.WriteFile(filepath.Join(dir, names[i]), data, 0o600); err != nil {
			return err
		}
	}
	g := newGit(dir, runnerSide, "GIT_CEILING_DIRECTORIES="+p.scratch)
	var merged bytes.Buffer
	code, err := g.exitCode(ctx, &merged, nil, "merge-file", "-p", "-q", "local", "base", "run")
	if err != nil {
		return err
	}
	switch {
	case code == 0:
		pl.result = fileSide{kind: kindFile, mode: mode, data: merged.Bytes()}
		pl.action, pl.merged = "modify", true
		if pl.result.equal(l) {
			pl.action, pl.merged = "", false
		}
	case code > 0 && code < 128:
		pl.reason = "changed locally and by the run in overlapping lines"
	default:
		return fmt.Errorf("git merge-file %q: exit %d", pl.path, code)
	}
	return nil
}

// isBinary uses git's rule: a NUL byte in the first 8000 bytes.
func isBinary(b []byte) bool {
	return bytes.IndexByte(b[:min(len(b), 8000)], 0) >= 0
}

// checkParents turns into conflicts the additions whose parent directory
// cannot be created: a parent that is locally a file (unless this pull
// deletes it) or a symlink.
func (p *puller) checkParents(plans []*plan) {
	deleting := map[string]bool{}
	for _, pl := range plans {
		if pl.action == "delete" {
			deleting[pl.path] = true
		}
	}
	for _, pl := range plans {
		if pl.action != "add" && pl.action != "modify" {
			continue
		}
		parts := strings.Split(pl.path, "/")
		for i := 1; i < len(parts); i++ {
			parent := strings.Join(parts[:i], "/")
			fi, err := p.root.Lstat(parent)
			if err != nil || fi.IsDir() && fi.Mode()&fs.ModeSymlink == 0 || deleting[parent] {
				continue
			}
			pl.action, pl.reason = "", "a local file or symlink is in the way at "+parent
			break
		}
	}
}

// applyWorktree writes the clean changes: deletions first, then each new
// content through a temporary file renamed into place.
func (p *puller) applyWorktree(plans []*plan) error {
	for _, pl := range plans {
		if pl.action != "delete" {
			continue
		}
		if err := p.root.Remove(pl.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("delete %q: %w", pl.path, err)
		}
		for d := path.Dir(pl.path); d != "."; d = path.Dir(d) {
			if p.root.Remove(d) != nil { // stops at the first non-empty directory
				break
			}
		}
	}
	for i, pl := range plans {
		if pl.action != "add" && pl.action != "modify" {
			continue
		}
		if err := mkParents(p.root, pl.path); err != nil {
			return err
		}
		tmp := path.Join(path.Dir(pl.path), ".warrant-pull-"+strconv.Itoa(os.Getpid())+"-"+strconv.Itoa(i))
		if pl.result.kind == kindSymlink {
			if err := p.root.Symlink(string(pl.result.data), tmp); err != nil {
				return fmt.Errorf("write %q: %w", pl.path, err)
			}
		} else if err := writeFile(p.root, protocol.SnapshotEntry{Path: tmp, Mode: pl.result.mode}, pl.result.data); err != nil {
			return err
		}
		if err := p.root.Rename(tmp, pl.path); err != nil {
			p.root.Remove(tmp)
			return fmt.Errorf("write %q: %w", pl.path, err)
		}
	}
	return nil
}

// commitBranch commits HEAD plus the clean changes on the new branch with
// git plumbing and a temporary index: the working tree, the index and
// HEAD stay as they are.
func (p *puller) commitBranch(ctx context.Context, plans []*plan, head string, res *PullResult) (string, error) {
	index := filepath.Join(p.scratch, "index")
	g := p.repo.git.with("GIT_INDEX_FILE=" + index)
	if head != "" {
		if _, err := g.run(ctx, nil, "read-tree", head); err != nil {
			return "", err
		}
	} else if _, err := g.run(ctx, nil, "read-tree", "--empty"); err != nil {
		return "", err
	}
	// Blobs: each new content goes through a scratch file into
	// hash-object --no-filters, so the branch has the exact bytes.
	var files bytes.Buffer
	var writes []*plan
	for i, pl := range plans {
		if pl.action != "add" && pl.action != "modify" {
			continue
		}
		f := filepath.Join(p.scratch, "blob-"+strconv.Itoa(i))
		if err := os.WriteFile(f, pl.result.data, 0o600); err != nil {
			return "", err
		}
		files.WriteString(f + "\n")
		writes = append(writes, pl)
	}
	oids, err := g.run(ctx, &files, "hash-object", "-w", "--no-filters", "--stdin-paths")
	if err != nil {
		return "", err
	}
	lines := strings.Fields(string(oids))
	if len(lines) != len(writes) {
		return "", fmt.Errorf("git hash-object: %d ids for %d files", len(lines), len(writes))
	}
	zero := strings.Repeat("0", 2*p.repo.oidLen)
	var info bytes.Buffer
	for _, pl := range plans {
		if pl.action == "delete" {
			fmt.Fprintf(&info, "0 %s\t%s\x00", zero, pl.path)
		}
	}
	for i, pl := range writes {
		fmt.Fprintf(&info, "%s %s\t%s\x00", pl.result.mode, lines[i], pl.path)
	}
	if _, err := g.run(ctx, &info, "update-index", "-z", "--index-info"); err != nil {
		return "", err
	}
	out, err := g.run(ctx, nil, "write-tree")
	if err != nil {
		return "", err
	}
	tree := strings.TrimSpace(string(out))
	var msg strings.Builder
	fmt.Fprintf(&msg, "warrant: changes of run %s\n\nBase: %s\n", p.opts.RunID, orNone(p.opts.Manifest.BaseRef))
	if len(res.Conflicts) > 0 {
		msg.WriteString("\nNot included (conflicts):\n")
		for _, c := range res.Conflicts {
			fmt.Fprintf(&msg, "  %s: %s\n", c.Path, c.Reason)
		}
	}
	args := []string{"commit-tree", tree}
	if head != "" {
		args = append(args, "-p", head)
	}
	when := strconv.FormatInt(p.opts.Now.Unix(), 10) + " +0000"
	cg := g.with("GIT_AUTHOR_NAME=warrant", "GIT_AUTHOR_EMAIL=warrant@localhost", "GIT_AUTHOR_DATE="+when,
		"GIT_COMMITTER_NAME=warrant", "GIT_COMMITTER_EMAIL=warrant@localhost", "GIT_COMMITTER_DATE="+when)
	out, err = cg.run(ctx, strings.NewReader(msg.String()), args...)
	if err != nil {
		return "", err
	}
	commit := strings.TrimSpace(string(out))
	// The zero old value makes update-ref refuse an existing branch, even
	// one created since checkBranch.
	if _, err := g.run(ctx, nil, "update-ref", "-m", "warrant pull "+p.opts.RunID, "refs/heads/"+res.Branch, commit, zero); err != nil {
		return "", fmt.Errorf("%w: %v", ErrBranchExists, err)
	}
	return commit, nil
}

// catFileContents reads blobs by id (the touched files of a pull: few and
// small enough for memory).
func catFileContents(ctx context.Context, g *gitRunner, oids []string) (map[string][]byte, error) {
	var in bytes.Buffer
	for _, o := range oids {
		in.WriteString(o + "\n")
	}
	out, err := g.run(ctx, &in, "cat-file", "--batch")
	if err != nil {
		return nil, err
	}
	res := make(map[string][]byte, len(oids))
	for len(out) > 0 {
		line, rest, ok := bytes.Cut(out, []byte{'\n'})
		if !ok {
			return nil, errors.New("git cat-file: truncated output")
		}
		f := strings.Fields(string(line))
		if len(f) != 3 {
			return nil, fmt.Errorf("git cat-file: %q", line)
		}
		size, err := strconv.Atoi(f[2])
		if err != nil || size < 0 || size+1 > len(rest) {
			return nil, fmt.Errorf("git cat-file: bad record %q", line)
		}
		res[f[0]] = rest[:size]
		out = rest[size+1:]
	}
	return res, nil
}
