package workspace

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
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
	"syscall"
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
	gitDir, err := initRepository(dir)
	if err != nil {
		return nil, fmt.Errorf("materialize: %w", err)
	}
	pack, err := newPackWriter(filepath.Join(gitDir, "objects", "pack"), countObjects(snap))
	if err != nil {
		return nil, fmt.Errorf("materialize: %w", err)
	}
	defer pack.abort()
	entries, err := writeEntries(ctx, root, dir, opts.Source, snap, targets, workers, pack)
	if err != nil {
		return nil, fmt.Errorf("materialize: %w", err)
	}
	tFiles := time.Since(start)
	commit, tree, index, err := commitBase(gitDir, snap, entries, pack, m.BundleHash)
	if err != nil {
		return nil, fmt.Errorf("materialize: %w", err)
	}
	res := &Materialized{Dir: dir, StateDir: stateDir, BaseCommit: commit, BaseTree: tree, Files: len(snap.Entries), Bytes: total}
	if stateDir != "" {
		if err := saveState(stateDir, res, index); err != nil {
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
	if batch, ok := src.(BlobBatchSource); ok && len(links) > 0 {
		// Fetch each distinct target once; links with the same target
		// share it.
		paths := map[string][]string{}
		var want []blobWant
		for _, e := range links {
			if _, ok := paths[e.Hash]; !ok {
				want = append(want, blobWant{hash: e.Hash, size: e.Size})
			}
			paths[e.Hash] = append(paths[e.Hash], e.Path)
		}
		err := getManyVerified(ctx, batch, want, 1, func(i int, data []byte) error {
			for _, p := range paths[want[i].hash] {
				targets[p] = string(data)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("symlink targets: %w", err)
		}
		for _, e := range links { // the same hash with another size
			if int64(len(targets[e.Path])) != e.Size {
				return nil, fmt.Errorf("symlink %q: blob %s: %w: %d bytes, want %d", e.Path, e.Hash, ErrBlobMismatch, len(targets[e.Path]), e.Size)
			}
		}
		return targets, nil
	}
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

// indexEntry is what the git index records for one written file.
type indexEntry struct {
	oid                                [sha1.Size]byte
	ctimeS, ctimeNs, mtimeS, mtimeNs   uint32
	dev, ino, mode, uid, gid, fileSize uint32
}

// writeEntries fetches each distinct blob once, verifies it, writes it to
// every path that has it and adds it to the pack, recording each file's
// git blob id and stat data for the index.
func writeEntries(ctx context.Context, root *os.Root, dir string, src BlobSource, snap *protocol.Snapshot, targets map[string]string, workers int, pack *packWriter) ([]indexEntry, error) {
	dirs, err := makeDirs(root, snap)
	defer dirs.close()
	if err != nil {
		return nil, err
	}
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
			return nil, fmt.Errorf("%w: %q and %q have hash %s but different sizes", ErrInconsistent,
				snap.Entries[groups[g].entries[0]].Path, e.Path, e.Hash)
		}
		groups[g].entries = append(groups[g].entries, i)
	}
	out := make([]indexEntry, len(snap.Entries))
	// writeGroup writes the files of group gi, fetching the blob itself
	// unless data (verified) is given.
	writeGroup := func(gi int, data []byte) error {
		g := groups[gi]
		first := snap.Entries[g.entries[0]]
		var oid [sha1.Size]byte
		if g.size > materializeInMemory {
			var err error
			if oid, err = writeLargeVerified(ctx, root, src, first); err != nil {
				return err
			}
			if err := packFile(pack, root, first, oid); err != nil {
				return err
			}
			if err := statEntry(dir, first, oid, &out[g.entries[0]]); err != nil {
				return err
			}
			for _, i := range g.entries[1:] {
				if err := copyWithin(root, first.Path, snap.Entries[i]); err != nil {
					return err
				}
				if err := statEntry(dir, snap.Entries[i], oid, &out[i]); err != nil {
					return err
				}
			}
			return nil
		}
		if data == nil {
			var err error
			if data, err = getVerified(ctx, src, g.hash, g.size, g.size); err != nil {
				return fmt.Errorf("%q: %w", first.Path, err)
			}
		}
		oid = hashObject(objBlob, data)
		if err := pack.add(objBlob, oid, data); err != nil {
			return fmt.Errorf("%q: %w", first.Path, err)
		}
		for _, i := range g.entries {
			e := snap.Entries[i]
			r, name, release, err := dirs.at(e.Path)
			if err != nil {
				return err
			}
			st, err := createFile(r, name, e, data)
			release()
			if err != nil {
				return err
			}
			fillEntry(&out[i], e.Mode, oid, st)
		}
		return nil
	}
	if batch, ok := src.(BlobBatchSource); ok {
		var small []blobWant
		var smallGroup, rest []int
		for gi, g := range groups {
			if g.size <= maxBatchedBlob {
				small = append(small, blobWant{hash: g.hash, size: g.size})
				smallGroup = append(smallGroup, gi)
			} else {
				rest = append(rest, gi)
			}
		}
		err = fetchAndWrite(ctx, batch, small, smallGroup, rest, workers, writeGroup)
	} else {
		err = parallel(ctx, len(groups), workers, func(gi int) error { return writeGroup(gi, nil) })
	}
	if err != nil {
		return nil, err
	}
	for i, e := range snap.Entries {
		if e.Mode != protocol.ModeSymlink {
			continue
		}
		r, name, release, err := dirs.at(e.Path)
		if err != nil {
			return nil, err
		}
		err = r.Symlink(targets[e.Path], name)
		var fi fs.FileInfo
		if err == nil {
			fi, err = r.Lstat(name)
		}
		release()
		if err != nil {
			return nil, fmt.Errorf("symlink %q: %w", e.Path, err)
		}
		target := []byte(targets[e.Path])
		oid := hashObject(objBlob, target)
		if err := pack.add(objBlob, oid, target); err != nil { // once: the pack skips ids it has
			return nil, fmt.Errorf("symlink %q: %w", e.Path, err)
		}
		fillEntry(&out[i], e.Mode, oid, fi.Sys().(*syscall.Stat_t))
	}
	return out, nil
}

// maxBatchedBlob is the largest blob fetched in a batch: the many small
// files of a tree are what costs round trips; larger blobs are fetched one
// by one, several at a time.
const maxBatchedBlob = 1 << 20

// fetchAndWrite writes the groups of a tree from a batch source: the small
// blobs (want, for the groups wantGroup) come in batches on up to two
// streams and are handed, verified, to workers writers, which also fetch
// and write the other groups (rest) one by one. It stops at the first
// error.
func fetchAndWrite(ctx context.Context, src BlobBatchSource, want []blobWant, wantGroup, rest []int, workers int, write func(gi int, data []byte) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	type job struct {
		gi   int
		data []byte
	}
	jobs := make(chan job, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if ctx.Err() != nil {
					continue // drain
				}
				if err := write(j.gi, j.data); err != nil {
					cancel(err)
				}
			}
		}()
	}
	send := func(j job) error {
		select {
		case jobs <- j:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	var err error
	for _, gi := range rest {
		if err = send(job{gi: gi}); err != nil {
			break
		}
	}
	if err == nil && len(want) > 0 {
		err = getManyVerified(ctx, src, want, 2, func(i int, data []byte) error {
			return send(job{gi: wantGroup[i], data: data})
		})
	}
	close(jobs)
	wg.Wait()
	if cause := context.Cause(ctx); cause != nil {
		return cause // the writer's error that stopped the fetch
	}
	return err
}

// packFile adds a large file Materialize wrote and verified to the pack.
func packFile(pack *packWriter, root *os.Root, e protocol.SnapshotEntry, oid objectID) error {
	f, err := root.Open(e.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pack.addStream(objBlob, oid, e.Size, f); err != nil {
		return fmt.Errorf("%q: %w", e.Path, err)
	}
	return nil
}

// statEntry lstat()s a file Materialize just wrote (inside the directory
// it created, so no path component can be a foreign symlink) and fills
// its index entry.
func statEntry(dir string, e protocol.SnapshotEntry, oid [sha1.Size]byte, ie *indexEntry) error {
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(dir, filepath.FromSlash(e.Path)), &st); err != nil {
		return fmt.Errorf("stat %q: %w", e.Path, err)
	}
	fillEntry(ie, e.Mode, oid, &st)
	return nil
}

// fillEntry fills an index entry from a file's stat data.
func fillEntry(ie *indexEntry, mode string, oid objectID, st *syscall.Stat_t) {
	*ie = indexEntry{
		oid:    oid,
		ctimeS: uint32(st.Ctim.Sec), ctimeNs: uint32(st.Ctim.Nsec),
		mtimeS: uint32(st.Mtim.Sec), mtimeNs: uint32(st.Mtim.Nsec),
		dev: uint32(st.Dev), ino: uint32(st.Ino), uid: st.Uid, gid: st.Gid,
		fileSize: uint32(st.Size),
	}
	switch mode {
	case protocol.ModeExecutable:
		ie.mode = 0o100755
	case protocol.ModeSymlink:
		ie.mode = 0o120000
	default:
		ie.mode = 0o100644
	}
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

// maxOpenDirs bounds how many directories writeEntries keeps open (file
// descriptors are shared with the rest of the runner). Files are written
// roughly in path order, so a small cache serves nearly every file.
const maxOpenDirs = 128

// treeDirs are the directories of a tree being written: every one is
// created (parents first) before any file, and recently used ones are
// kept open as an os.Root, so a file costs a single openat in its
// directory instead of one per path component.
type treeDirs struct {
	root *os.Root
	mu   sync.Mutex
	open map[string]*openDir // "." is the root, never closed
}

type openDir struct {
	r    *os.Root
	refs int
}

// makeDirs creates the directories of the snapshot's entries.
func makeDirs(root *os.Root, snap *protocol.Snapshot) (*treeDirs, error) {
	t := &treeDirs{root: root, open: map[string]*openDir{".": {r: root}}}
	made := map[string]bool{".": true}
	for _, e := range snap.Entries {
		var missing []string
		for d := path.Dir(e.Path); !made[d]; d = path.Dir(d) {
			made[d] = true
			missing = append(missing, d)
		}
		for i := len(missing) - 1; i >= 0; i-- { // parents first
			d := missing[i]
			parent, name, release, err := t.at(d)
			if err != nil {
				return t, err
			}
			err = parent.Mkdir(name, 0o755)
			release()
			if err != nil {
				return t, fmt.Errorf("create directory %q: %w", d, err)
			}
		}
	}
	return t, nil
}

// at returns the Root to create p in, the name to use there, and a
// function to call once done with the Root.
func (t *treeDirs) at(p string) (*os.Root, string, func(), error) {
	d := path.Dir(p)
	t.mu.Lock()
	defer t.mu.Unlock()
	od, ok := t.open[d]
	if !ok {
		r, err := t.root.OpenRoot(d)
		if err != nil {
			return nil, "", nil, fmt.Errorf("open directory %q: %w", d, err)
		}
		if len(t.open) > maxOpenDirs {
			t.evict()
		}
		od = &openDir{r: r}
		t.open[d] = od
	}
	od.refs++
	return od.r, path.Base(p), func() {
		t.mu.Lock()
		od.refs--
		t.mu.Unlock()
	}, nil
}

// evict closes unused directories (t.mu held) until half the cache is
// free. Directories in use stay open, so the cache can exceed its bound
// by the number of workers.
func (t *treeDirs) evict() {
	for d, od := range t.open {
		if len(t.open) <= maxOpenDirs/2 {
			return
		}
		if d != "." && od.refs == 0 {
			od.r.Close()
			delete(t.open, d)
		}
	}
}

func (t *treeDirs) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for d, od := range t.open {
		if d != "." {
			od.r.Close()
		}
	}
	t.open = nil
}

// createFile creates name in r (it must not exist) with data and e's
// mode, and returns its stat data.
func createFile(r *os.Root, name string, e protocol.SnapshotEntry, data []byte) (*syscall.Stat_t, error) {
	f, err := r.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, permOf(e.Mode))
	if err != nil {
		return nil, fmt.Errorf("create %q: %w", e.Path, err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return nil, fmt.Errorf("write %q: %w", e.Path, err)
	}
	if err := f.Chmod(permOf(e.Mode)); err != nil { // exact mode, whatever the umask
		return nil, fmt.Errorf("chmod %q: %w", e.Path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %q: %w", e.Path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write %q: %w", e.Path, err)
	}
	return fi.Sys().(*syscall.Stat_t), nil
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
func writeLargeVerified(ctx context.Context, root *os.Root, src BlobSource, e protocol.SnapshotEntry) (oid [sha1.Size]byte, err error) {
	if err := mkParents(root, e.Path); err != nil {
		return oid, err
	}
	tmp := e.Path + ".warrant-partial"
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return oid, fmt.Errorf("create %q: %w", tmp, err)
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
		return oid, fmt.Errorf("%q: fetch blob %s: %w", e.Path, e.Hash, err)
	}
	defer rc.Close()
	h := newSHA256()
	g := sha1.New()
	fmt.Fprintf(g, "blob %d\x00", e.Size)
	n, err := io.Copy(io.MultiWriter(f, h, g), io.LimitReader(rc, e.Size+1))
	if err != nil {
		return oid, fmt.Errorf("%q: fetch blob %s: %w", e.Path, e.Hash, err)
	}
	if n != e.Size || hexSum(h) != e.Hash {
		return oid, fmt.Errorf("%q: blob %s: %w", e.Path, e.Hash, ErrBlobMismatch)
	}
	if err := f.Chmod(permOf(e.Mode)); err != nil {
		return oid, err
	}
	if err := f.Close(); err != nil {
		return oid, err
	}
	if err := root.Rename(tmp, e.Path); err != nil {
		return oid, err
	}
	ok = true
	g.Sum(oid[:0])
	return oid, nil
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

// baseIdentity is the author and committer line of the synthetic base
// commit: a fixed identity and date make the commit id a function of the
// snapshot alone.
const baseIdentity = "warrant <warrant@localhost> 946684800 +0000"

// initRepository creates the git directory of a workspace with no more
// than git needs (creating a file or directory costs more than anything
// else Materialize does on some machines): HEAD, objects/pack and refs
// (the refs themselves go to packed-refs; git creates refs/heads when a
// session commits), the workspace's configuration and the neutral
// attributes. It returns the git directory.
func initRepository(dir string) (string, error) {
	gitDir := filepath.Join(dir, ".git")
	for _, d := range []string{"", "objects", "objects/pack", "refs", "info"} {
		if err := os.Mkdir(filepath.Join(gitDir, d), 0o755); err != nil {
			return "", fmt.Errorf("init repository: %w", err)
		}
	}
	for name, content := range map[string]string{
		"HEAD":            "ref: refs/heads/" + baseBranch + "\n",
		"config":          workspaceConfig,
		"info/attributes": neutralAttributes,
	} {
		if err := os.WriteFile(filepath.Join(gitDir, name), []byte(content), 0o644); err != nil {
			return "", fmt.Errorf("init repository: %w", err)
		}
	}
	return gitDir, nil
}

// countObjects returns how many objects the base commit's pack holds:
// one blob per distinct content, one tree per directory (the top one
// included) and the commit.
func countObjects(snap *protocol.Snapshot) int {
	contents := make(map[string]struct{}, len(snap.Entries))
	dirs := make(map[string]struct{})
	prev := ""
	for _, e := range snap.Entries {
		contents[e.Hash] = struct{}{}
		for d := path.Dir(e.Path); d != "." && d != prev; d = path.Dir(d) {
			if _, ok := dirs[d]; ok {
				break
			}
			dirs[d] = struct{}{}
		}
		prev = path.Dir(e.Path)
	}
	return len(contents) + len(dirs) + 1 + 1
}

// commitBase completes the repository of a workspace whose files (and
// their blobs, in pack) are written: it packs the trees and the base
// commit, writes the pack index, points refs/heads/main and
// refs/warrant/base at the commit (in packed-refs), and writes the index from the stat
// data gathered while writing the files, so git never re-reads the tree.
// No git process runs.
func commitBase(gitDir string, snap *protocol.Snapshot, entries []indexEntry, pack *packWriter, bundleHash string) (commit, tree string, index []byte, err error) {
	treeID, err := packTrees(pack, snap, entries)
	if err != nil {
		return "", "", nil, err
	}
	body := commitBody(treeID, bundleHash)
	commitID := hashObject(objCommit, body)
	if err := pack.add(objCommit, commitID, body); err != nil {
		return "", "", nil, fmt.Errorf("pack: %w", err)
	}
	if _, err := pack.finish(); err != nil {
		return "", "", nil, err
	}
	commit, tree = hex.EncodeToString(commitID[:]), hex.EncodeToString(treeID[:])
	// Sorted by name, as the header promises: refs/heads/… < refs/warrant/….
	refs := "# pack-refs with: peeled fully-peeled sorted \n" +
		commit + " refs/heads/" + baseBranch + "\n" +
		commit + " " + baseRef + "\n"
	if err := os.WriteFile(filepath.Join(gitDir, "packed-refs"), []byte(refs), 0o644); err != nil {
		return "", "", nil, fmt.Errorf("write refs: %w", err)
	}
	if index, err = writeIndex(filepath.Join(gitDir, "index"), snap, entries, time.Now()); err != nil {
		return "", "", nil, fmt.Errorf("write index: %w", err)
	}
	return commit, tree, index, nil
}

// commitBody is the base commit object: the tree, the fixed identity and
// the message naming the snapshot.
func commitBody(tree objectID, bundleHash string) []byte {
	var b bytes.Buffer
	b.WriteString("tree ")
	b.WriteString(hex.EncodeToString(tree[:]))
	b.WriteString("\nauthor " + baseIdentity + "\ncommitter " + baseIdentity + "\n\nwarrant snapshot ")
	b.WriteString(bundleHash)
	b.WriteString("\n")
	return b.Bytes()
}

// packTrees adds a tree object for every directory of the snapshot to
// the pack, deepest first, and returns the id of the top one.
//
// Git orders a tree's entries by name, a directory's name compared as if
// it ended in "/". The snapshot is sorted by full path, which is the same
// order: the paths under directory "d" all start with "d/", and no other
// name in the same directory can start with "d/" (names hold no "/") or
// equal "d" (a file cannot also be a directory). So the entries of every
// directory come contiguous and already in tree order.
func packTrees(pack *packWriter, snap *protocol.Snapshot, entries []indexEntry) (objectID, error) {
	var build func(prefix string, lo, hi int) (objectID, error)
	build = func(prefix string, lo, hi int) (objectID, error) {
		var b []byte
		for i := lo; i < hi; {
			rest := snap.Entries[i].Path[len(prefix):]
			if slash := strings.IndexByte(rest, '/'); slash >= 0 {
				name := rest[:slash]
				sub := prefix + name + "/"
				j := i + 1
				for j < hi && strings.HasPrefix(snap.Entries[j].Path, sub) {
					j++
				}
				id, err := build(sub, i, j)
				if err != nil {
					return id, err
				}
				b = append(b, "40000 "...)
				b = append(b, name...)
				b = append(b, 0)
				b = append(b, id[:]...)
				i = j
				continue
			}
			b = append(b, snap.Entries[i].Mode...)
			b = append(b, ' ')
			b = append(b, rest...)
			b = append(b, 0)
			b = append(b, entries[i].oid[:]...)
			i++
		}
		id := hashObject(objTree, b)
		if err := pack.add(objTree, id, b); err != nil {
			return id, fmt.Errorf("pack tree %q: %w", prefix, err)
		}
		return id, nil
	}
	return build("", 0, len(snap.Entries))
}

// writeIndex writes a version 2 git index of the snapshot's entries. An
// entry modified in the second the index is written could later change
// without changing its stat data, so, as git does, such entries get a
// zero size: git then compares their content instead of trusting them.
func writeIndex(path string, snap *protocol.Snapshot, entries []indexEntry, now time.Time) ([]byte, error) {
	racy := uint32(now.Unix())
	b := make([]byte, 0, 12+len(snap.Entries)*(64+40))
	b = append(b, "DIRC"...)
	b = binary.BigEndian.AppendUint32(b, 2)
	b = binary.BigEndian.AppendUint32(b, uint32(len(snap.Entries)))
	for i, e := range snap.Entries {
		ie := entries[i]
		size := ie.fileSize
		if ie.mtimeS >= racy || ie.ctimeS >= racy {
			size = 0
		}
		start := len(b)
		for _, v := range []uint32{ie.ctimeS, ie.ctimeNs, ie.mtimeS, ie.mtimeNs, ie.dev, ie.ino, ie.mode, ie.uid, ie.gid, size} {
			b = binary.BigEndian.AppendUint32(b, v)
		}
		b = append(b, ie.oid[:]...)
		b = binary.BigEndian.AppendUint16(b, uint16(min(len(e.Path), 0xfff)))
		b = append(b, e.Path...)
		// 1 to 8 NULs, so the entry's length is a multiple of 8.
		pad := 8 - (len(b)-start)%8
		for range pad {
			b = append(b, 0)
		}
	}
	sum := sha1.Sum(b)
	b = append(b, sum[:]...)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return nil, err
	}
	return b, nil
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
