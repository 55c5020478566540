package workspace

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"warrant.dev/warrant/protocol"
)

// ChangeStatus says how a file changed relative to the base.
type ChangeStatus string

// Change statuses of ChangedFile.
const (
	Added    ChangeStatus = "added"
	Modified ChangeStatus = "modified" // content, mode or type (file/symlink)
	Deleted  ChangeStatus = "deleted"
)

// ChangedFile is one file a session changed. The runner emits a
// file.changed {path, contentHash} event for each.
type ChangedFile struct {
	Path        string
	Status      ChangeStatus
	Mode        string // new mode (protocol.ModeFile, ...); empty when deleted
	ContentHash string // sha256 hex of the new content; empty when deleted
	Bytes       int64  // size of the new content
}

// Output is what Collect found: the diff against the base and the files
// it touches.
type Output struct {
	// Diff is a git diff (--binary, full object ids, no renames) from the
	// base to the work tree, including new untracked files that are not
	// ignored and deletions. `git apply` reproduces the session's tree on
	// a fresh materialization of the same manifest. Empty when nothing
	// changed.
	Diff    []byte
	Changed []ChangedFile // sorted by path
	Skipped []SkippedFile // new files left out (nested repositories, unrepresentable names)
}

// Collect compares a materialized workspace with its base after a
// session. It never runs git with the workspace's own .git configuration,
// index or hooks, which the session could have changed: it uses a private
// git directory (under the state directory, or the system temporary
// directory) whose object store borrows the workspace's objects
// read-only, and a private copy of the base index.
func Collect(ctx context.Context, w *Materialized) (*Output, error) {
	if w == nil || w.Dir == "" || w.BaseTree == "" {
		return nil, errors.New("collect: a materialized workspace with a base tree is required")
	}
	if w.StateDir != "" {
		// The fast path: nothing changed since Materialize (judged from
		// the runner-private copy of the base index, never from the
		// workspace's own .git), so there is nothing to diff.
		if ix, err := readBaseIndex(filepath.Join(w.StateDir, "index")); err == nil {
			if same, err := workTreeUnchanged(w.Dir, ix); err == nil && same {
				return &Output{}, nil
			}
		}
	}
	scratch, err := os.MkdirTemp(w.StateDir, "collect-")
	if err != nil {
		return nil, fmt.Errorf("collect: %w", err)
	}
	defer os.RemoveAll(scratch)
	g, err := privateGit(scratch, w.Dir)
	if err != nil {
		return nil, fmt.Errorf("collect: %w", err)
	}
	out, err := collect(ctx, g, w, scratch)
	if err != nil {
		return nil, fmt.Errorf("collect %s: %w", w.Dir, err)
	}
	return out, nil
}

func collect(ctx context.Context, g *gitRunner, w *Materialized, scratch string) (*Output, error) {
	index := filepath.Join(scratch, "index")
	if w.StateDir != "" {
		if err := copyIndex(filepath.Join(w.StateDir, "index"), index); err != nil {
			return nil, fmt.Errorf("base index: %w", err)
		}
	} else if _, err := g.run(ctx, nil, "read-tree", w.BaseTree); err != nil {
		return nil, err
	}
	// Tracked files: modifications, deletions, type and mode changes.
	if _, err := g.run(ctx, nil, "add", "--update", "--", "."); err != nil {
		return nil, err
	}
	// New files that .gitignore does not exclude. Nested repositories
	// (listed with a trailing slash) and names a snapshot cannot carry
	// are left out and reported.
	others, err := g.run(ctx, nil, "ls-files", "--others", "--exclude-standard", "-z")
	if err != nil {
		return nil, err
	}
	o := &Output{}
	var add bytes.Buffer
	for _, p := range splitNUL(others) {
		switch {
		case strings.HasSuffix(p, "/"):
			o.Skipped = append(o.Skipped, SkippedFile{strings.TrimSuffix(p, "/"), "nested git repository (not collected)"})
		case protocol.ValidatePath(p) != nil:
			o.Skipped = append(o.Skipped, SkippedFile{p, "path not representable in a workspace snapshot"})
		default:
			add.WriteString(p)
			add.WriteByte(0)
		}
	}
	if add.Len() > 0 {
		if _, err := g.run(ctx, &add, "update-index", "--add", "-z", "--stdin"); err != nil {
			return nil, err
		}
	}
	raw, err := g.run(ctx, nil, "diff-index", "--cached", "--raw", "-z", "--no-renames", "--no-abbrev", w.BaseTree)
	if err != nil {
		return nil, err
	}
	changes, err := parseRawDiff(raw)
	if err != nil {
		return nil, err
	}
	if len(changes) == 0 {
		return o, nil
	}
	var diff bytes.Buffer
	if err := g.runTo(ctx, &diff, nil, "diff-index", "--cached", "-p", "--binary", "--full-index", "--no-renames",
		"--no-color", "--src-prefix=a/", "--dst-prefix=b/", w.BaseTree); err != nil {
		return nil, err
	}
	o.Diff = diff.Bytes()
	var want []string
	for _, c := range changes {
		if c.status != 'D' {
			want = append(want, c.newOID)
		}
	}
	sums, err := catFileSums(ctx, g, want)
	if err != nil {
		return nil, err
	}
	for _, c := range changes {
		f := ChangedFile{Path: c.path}
		switch c.status {
		case 'A':
			f.Status = Added
		case 'D':
			f.Status = Deleted
		default:
			f.Status = Modified
		}
		if c.status != 'D' {
			f.Mode = c.newMode
			s := sums[c.newOID]
			f.ContentHash, f.Bytes = s.hash, s.size
		}
		o.Changed = append(o.Changed, f)
	}
	slices.SortFunc(o.Changed, func(a, b ChangedFile) int { return strings.Compare(a.Path, b.Path) })
	return o, nil
}

// privateGit prepares a git directory at gitDir whose configuration,
// index, attributes and refs belong to this package, whose new objects
// stay in it, and which reads existing objects from the work tree's
// repository. It returns a runner for that directory with the given work
// tree.
func privateGit(gitDir, workTree string) (*gitRunner, error) {
	for _, d := range []string{"objects/info", "objects/pack", "refs/heads", "refs/tags", "info"} {
		if err := os.MkdirAll(filepath.Join(gitDir, d), 0o700); err != nil {
			return nil, err
		}
	}
	files := map[string]string{
		"HEAD":                    "ref: refs/heads/" + baseBranch + "\n",
		"config":                  workspaceConfig,
		"info/attributes":         neutralAttributes,
		"info/exclude":            "",
		"objects/info/alternates": filepath.Join(workTree, ".git", "objects") + "\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(gitDir, name), []byte(content), 0o600); err != nil {
			return nil, err
		}
	}
	return newGit(workTree, runnerSide,
		"GIT_DIR="+gitDir,
		"GIT_WORK_TREE="+workTree,
		"GIT_INDEX_FILE="+filepath.Join(gitDir, "index"),
		"GIT_OBJECT_DIRECTORY="+filepath.Join(gitDir, "objects"),
	), nil
}

type rawChange struct {
	oldMode, newMode string
	oldOID, newOID   string
	status           byte
	path             string
}

// parseRawDiff parses `git diff-index --raw -z` output:
// ":<old mode> <new mode> <old oid> <new oid> <status>\0<path>\0".
func parseRawDiff(out []byte) ([]rawChange, error) {
	recs := splitNUL(out)
	var changes []rawChange
	for i := 0; i < len(recs); i += 2 {
		if i+1 >= len(recs) || !strings.HasPrefix(recs[i], ":") {
			return nil, fmt.Errorf("git diff-index: malformed raw output near %q", recs[i])
		}
		f := strings.Fields(recs[i][1:])
		if len(f) != 5 || len(f[4]) == 0 {
			return nil, fmt.Errorf("git diff-index: malformed raw record %q", recs[i])
		}
		changes = append(changes, rawChange{oldMode: f[0], newMode: f[1], oldOID: f[2], newOID: f[3], status: f[4][0], path: recs[i+1]})
	}
	return changes, nil
}

type blobSum struct {
	hash string
	size int64
}

// catFileSums streams the given blobs out of git and returns the sha256
// and size of each.
func catFileSums(ctx context.Context, g *gitRunner, oids []string) (map[string]blobSum, error) {
	sums := make(map[string]blobSum, len(oids))
	if len(oids) == 0 {
		return sums, nil
	}
	var in bytes.Buffer
	for _, o := range oids {
		in.WriteString(o)
		in.WriteByte('\n')
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := g.runTo(ctx, pw, &in, "cat-file", "--batch")
		pw.CloseWithError(err)
		done <- err
	}()
	r := bufio.NewReaderSize(pr, 64<<10)
	h := sha256.New()
	var err error
	for range oids {
		var s blobSum
		var oid string
		if oid, s, err = readBatchBlob(r, h); err != nil {
			break
		}
		sums[oid] = s
	}
	if err != nil {
		pr.CloseWithError(err)
		<-done
		return nil, fmt.Errorf("git cat-file: %w", err)
	}
	io.Copy(io.Discard, r)
	if err := <-done; err != nil {
		return nil, err
	}
	return sums, nil
}

// readBatchBlob reads one "<oid> blob <size>\n<content>\n" record.
func readBatchBlob(r *bufio.Reader, h hash.Hash) (string, blobSum, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", blobSum{}, err
	}
	f := strings.Fields(line)
	if len(f) != 3 || f[1] != "blob" {
		return "", blobSum{}, fmt.Errorf("unexpected record %q", strings.TrimSpace(line))
	}
	size, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil || size < 0 {
		return "", blobSum{}, fmt.Errorf("unexpected size in %q", strings.TrimSpace(line))
	}
	h.Reset()
	if _, err := io.CopyN(h, r, size); err != nil {
		return "", blobSum{}, err
	}
	if b, err := r.ReadByte(); err != nil || b != '\n' {
		return "", blobSum{}, errors.New("missing record terminator")
	}
	return f[0], blobSum{hash: hex.EncodeToString(h.Sum(nil)), size: size}, nil
}

// saveState keeps what Collect needs in the runner-private state
// directory: a copy of the base index (with the stat data of the files as
// written) and the base commit and tree. The copy is written after the
// workspace's files and index, so its modification time, which decides
// which entries are racily clean, is not older than theirs.
func saveState(stateDir string, m *Materialized, index []byte) error {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(stateDir, "index"), index, 0o600); err != nil {
		return fmt.Errorf("save base index: %w", err)
	}
	return os.WriteFile(filepath.Join(stateDir, "base"), []byte(m.BaseCommit+" "+m.BaseTree+"\n"), 0o600)
}

// copyIndex copies a git index file and gives the copy the original's
// modification time. Git compares each entry's mtime with the index
// file's own to spot "racily clean" entries (a file changed in the same
// timestamp tick as the index was written, keeping its size); a copy with
// a fresh mtime would make git trust those entries and miss the change.
func copyIndex(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chtimes(to, fi.ModTime(), fi.ModTime())
}

func newSHA256() hash.Hash { return sha256.New() }

func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

// OpenMaterialized describes a workspace materialized earlier (say, by a
// runner process that has since restarted) from its state directory, so
// Collect can run on it. Files and Bytes are not recorded and stay zero.
func OpenMaterialized(dir, stateDir string) (*Materialized, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, "base"))
	if err != nil {
		return nil, fmt.Errorf("open materialized workspace: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return nil, fmt.Errorf("open materialized workspace: malformed %s", filepath.Join(stateDir, "base"))
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	absState, err := filepath.Abs(stateDir)
	if err != nil {
		return nil, err
	}
	return &Materialized{Dir: absDir, StateDir: absState, BaseCommit: f[0], BaseTree: f[1]}, nil
}
