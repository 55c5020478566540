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
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"warrant.dev/warrant/protocol"
)

// CaptureOptions configures Capture.
type CaptureOptions struct {
	// Dir is the directory to capture. Inside a git work tree the whole
	// work tree is captured, from its top level.
	Dir string
	// AllowUntracked lists the patterns of untracked (and not ignored)
	// files to capture. In a directory that is not a git work tree it
	// names every file captured; there, an empty list is an error.
	AllowUntracked []string
	// Deny lists patterns excluded in addition to DefaultDeny.
	Deny []string
	// NoHashCache disables the digest cache kept in the repository's git
	// directory (warrant/hashcache).
	NoHashCache bool
	// Workers is how many files are hashed in parallel (default
	// GOMAXPROCS, at least 2).
	Workers int
	// RetainBytes caps the small-file content kept in memory for Upload
	// (0 means DefaultRetainBytes; negative keeps none).
	RetainBytes int64
	// Logger receives debug timings and warnings (nil: discard).
	Logger *slog.Logger
}

// Captured is the result of Capture: the manifest, the snapshot blob it
// names, the dirty diff, and the file contents, enumerable as Blobs.
type Captured struct {
	Manifest  protocol.Manifest
	Snapshot  []byte // the warrant.snapshot.v1 blob; Manifest.BundleHash is its hash (read-only: Upload reads hashes from it)
	DirtyDiff []byte // binary git diff of uncommitted changes; nil when there are none
	Root      string // absolute path of the captured tree
	Skipped   []SkippedFile
	Stats     CaptureStats

	files     []candidate // present files, sorted by path
	snapText  string      // Snapshot viewed as a string (same bytes): file hashes are substrings of it
	uniq      []int32     // index into files of the first file of each distinct content
	blobBytes int64
	fileBytes int64 // size of the files in uniq
}

// SkippedFile is a path Capture left out for a reason other than a deny
// pattern (those are in Manifest.DeniedPaths).
type SkippedFile struct {
	Path   string
	Reason string
}

// CaptureStats counts what Capture did.
type CaptureStats struct {
	Files     int   // files in the snapshot
	Bytes     int64 // their total size
	Untracked int   // allowlisted untracked files among them
	Hashed    int   // files whose content was read (the rest came from the cache)
	Denied    int
	Duration  time.Duration
}

// Capture records a directory as a warrant.manifest.v1 with a
// warrant.snapshot.v1 of its files: in a git work tree, the tracked files
// in their working state (staged and unstaged changes included, deleted
// files absent) plus allowlisted untracked files; elsewhere, the
// allowlisted files only. Deny patterns exclude files, tracked or not,
// and every excluded path is listed in the manifest. See the package
// documentation for the details.
func Capture(ctx context.Context, opts CaptureOptions) (*Captured, error) {
	start := time.Now()
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Dir == "" {
		return nil, errors.New("capture: no directory given")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("capture: %s is not a directory", dir)
	}
	denyList := effectiveDeny(opts.Deny)
	deny, err := compilePatterns(denyList, true)
	if err != nil {
		return nil, fmt.Errorf("capture: deny pattern: %w", err)
	}
	allow, err := compilePatterns(opts.AllowUntracked, false)
	if err != nil {
		return nil, fmt.Errorf("capture: allow pattern: %w", err)
	}
	cp := &capture{
		opts:   opts,
		log:    log,
		deny:   deny,
		denyFP: protocol.HashBytes([]byte(strings.Join(denyList, "\x00")))[:16],
		allow:  allow,
		start:  start,
	}
	cp.workers = opts.Workers
	if cp.workers <= 0 {
		cp.workers = max(2, runtime.GOMAXPROCS(0))
	}
	cp.retain.Store(opts.RetainBytes)
	if opts.RetainBytes == 0 {
		cp.retain.Store(DefaultRetainBytes)
	}

	repo, err := findRepo(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	var c *Captured
	if repo == nil {
		c, err = cp.captureDir(ctx, dir)
	} else {
		c, err = cp.captureRepo(ctx, repo)
	}
	if err != nil {
		return nil, fmt.Errorf("capture %s: %w", dir, err)
	}
	c.Manifest.DeniedPatterns = denyList
	c.Stats.Duration = time.Since(start)
	log.Debug("workspace captured", "root", c.Root, "files", c.Stats.Files, "hashed", c.Stats.Hashed,
		"denied", c.Stats.Denied, "dirty", c.Manifest.DirtyDiffHash != "", "took", c.Stats.Duration)
	return c, nil
}

type capture struct {
	opts    CaptureOptions
	log     *slog.Logger
	deny    *patternSet
	denyFP  string // fingerprint of the effective deny list
	allow   *patternSet
	workers int
	retain  atomic.Int64
	start   time.Time

	denied  []string
	skipped []SkippedFile
}

// repoInfo describes the git work tree being captured.
type repoInfo struct {
	top    string // work tree top level
	gitDir string // absolute git directory (per worktree)
	head   string // HEAD's commit id; empty when HEAD has no commit
	oidLen int    // 20 (sha1) or 32 (sha256)
	git    *gitRunner
}

// findRepo returns the work tree dir belongs to, or nil when dir is not in
// a git work tree. One git process answers everything, HEAD included (a
// second one runs only when HEAD has no commit yet).
func findRepo(ctx context.Context, dir string) (*repoInfo, error) {
	g := newGit(dir, userSide)
	args := []string{"rev-parse", "--is-bare-repository", "--is-inside-work-tree",
		"--absolute-git-dir", "--show-object-format", "--show-toplevel"}
	out, err := g.run(ctx, nil, append(args, "HEAD^{commit}", "--")...)
	withHead := true
	if err != nil {
		var ge *GitError
		if errors.As(err, &ge) && strings.Contains(ge.Stderr, "not a git repository") {
			return nil, nil
		}
		// No commit yet (or HEAD is broken): ask again without it.
		if out, err = g.run(ctx, nil, args...); err != nil {
			return nil, err
		}
		withHead = false
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if withHead && len(lines) > 0 && lines[len(lines)-1] == "--" {
		lines = lines[:len(lines)-1] // rev-parse echoes the separator
	}
	if len(lines) < 2 || lines[0] == "true" || lines[1] != "true" {
		return nil, fmt.Errorf("%s is not inside a git work tree (a bare repository or a .git directory)", dir)
	}
	want := 5
	if withHead {
		want = 6
	}
	if len(lines) != want {
		return nil, fmt.Errorf("git rev-parse: unexpected output %q", out)
	}
	info := &repoInfo{gitDir: lines[2], top: lines[4]}
	if withHead {
		info.head = lines[5]
	}
	switch lines[3] {
	case "sha1":
		info.oidLen = sha1.Size
	case "sha256":
		info.oidLen = 32
	default:
		return nil, fmt.Errorf("unsupported git object format %q", lines[3])
	}
	info.git = newGit(info.top, userSide)
	return info, nil
}

func (cp *capture) captureRepo(ctx context.Context, repo *repoInfo) (*Captured, error) {
	g := repo.git
	var (
		wg                sync.WaitGroup
		head              = repo.head
		listing           indexListing
		saveListing       func() error
		otherOut          []byte
		listErr, otherErr error
		cands             []candidate
		cache             = &cacheReader{oidLen: repo.oidLen}
	)
	cachePath := hashCachePath(repo.gitDir)
	wg.Add(3)
	go func() {
		defer wg.Done()
		listing, saveListing, listErr = listIndex(ctx, repo, !cp.opts.NoHashCache)
		if listErr == nil {
			// Meanwhile the hash cache is being read.
			cands, listErr = cp.classifyTracked(listing.ls, repo.oidLen)
		}
	}()
	go func() {
		defer wg.Done()
		if len(cp.allow.pats) == 0 {
			return
		}
		args := []string{"ls-files", "--others", "--exclude-standard", "-z"}
		if prefixes, ok := cp.allow.dirPrefixes(); ok {
			args = append(append(args, "--"), prefixes...)
		}
		otherOut, otherErr = g.run(ctx, nil, args...)
	}()
	go func() {
		defer wg.Done()
		if cp.opts.NoHashCache {
			return
		}
		r, err := readHashCache(cachePath, repo.oidLen)
		if err != nil {
			cp.log.Warn("ignoring damaged hash cache", "err", err)
		}
		cache = r
	}()
	wg.Wait()
	if err := errors.Join(listErr, otherErr); err != nil {
		return nil, err
	}
	stagedOut := listing.staged
	tLists := time.Since(cp.start) // repository, classified listing, hash cache

	if otherOut != nil {
		cands = cp.addUntracked(cands, otherOut)
	}
	cacheRecords := cp.joinCache(cands, cache)
	cands = cp.filterTracked(cands, cache.denyFP == cp.denyFP)
	scratch := cache.release() // the snapshot is encoded into it
	tJoin := time.Since(cp.start)
	if err := scanAll(cands, repo.top, repo.oidLen, cp.workers, &cp.retain, ctx.Err); err != nil {
		return nil, err
	}
	tScan := time.Since(cp.start)

	// The dirty diff is a git process: start it now, and build the
	// snapshot and save the cache meanwhile.
	dirty := cp.dirtyPaths(cands, splitNUL(stagedOut), head == "", repo.oidLen)
	var diff []byte
	var diffErr error
	diffDone := make(chan struct{})
	go func() {
		defer close(diffDone)
		if len(dirty.paths) == 0 {
			return
		}
		base := head
		if base == "" {
			base = emptyTree(repo.oidLen)
		}
		diff, diffErr = dirtyDiff(ctx, g, base, dirty)
	}()

	c := cp.assemble(repo.top, cands)
	c.Manifest.BaseRef = head
	var saveWG sync.WaitGroup
	if !cp.opts.NoHashCache && (c.Stats.Hashed > 0 || cacheRecords != len(c.files)) {
		saveWG.Add(1)
		go func() {
			defer saveWG.Done()
			limit := cp.start.Add(-racyWindow).UnixNano()
			err := saveAtomic(cachePath, func(w io.Writer) error {
				return writeHashCache(w, c.files, repo.oidLen, limit, cp.denyFP)
			})
			if err != nil {
				cp.log.Warn("could not save the hash cache", "path", cachePath, "err", err)
			}
		}()
	}
	saveWG.Add(1)
	go func() {
		defer saveWG.Done()
		c.dedupeFiles()
	}()
	if saveListing != nil {
		saveWG.Add(1)
		go func() {
			defer saveWG.Done()
			if err := saveListing(); err != nil {
				cp.log.Warn("could not save the index listing cache", "err", err)
			}
		}()
	}
	cp.finishSnapshot(c, scratch)
	tSnap := time.Since(cp.start)
	<-diffDone
	tDiff := time.Since(cp.start)
	saveWG.Wait()
	if diffErr != nil {
		return nil, diffErr
	}
	if len(diff) > 0 {
		c.DirtyDiff = diff
		c.Manifest.DirtyDiffHash = protocol.HashBytes(diff)
	}
	c.dropSpecialBlobs()
	cp.log.Debug("capture phases", "lists", tLists, "join", tJoin-tLists, "scan", tScan-tJoin,
		"snapshot", tSnap-tScan, "diffwait", tDiff-tSnap, "rest", time.Since(cp.start)-tDiff)
	return c, nil
}

// classifyTracked parses `git ls-files --stage -z` into candidates,
// dropping submodules. filterTracked applies the deny patterns later. A
// large listing is parsed in parts, in parallel, each into its own range
// of the result.
func (cp *capture) classifyTracked(out []byte, oidLen int) ([]candidate, error) {
	// Paths are substrings of the output, which is never modified: view
	// it as a string instead of copying it.
	all := unsafe.String(unsafe.SliceData(out), len(out))
	if len(all) > 0 && all[len(all)-1] != 0 {
		return nil, errors.New("git ls-files: truncated output")
	}
	// Split after NULs, so every part is whole records.
	parts := []string{all}
	if len(all) >= classifySplitBytes && cp.workers > 1 {
		parts = parts[:0]
		for k := cp.workers; k > 1 && len(all) > 0; k-- {
			cut := len(all) - len(all)/k
			cut += strings.IndexByte(all[cut-1:], 0) // all ends with a NUL
			parts = append(parts, all[:cut])
			all = all[cut:]
		}
		if len(all) > 0 {
			parts = append(parts, all)
		}
	}
	type part struct {
		cands       []candidate
		skipped     []SkippedFile
		first, last string
		err         error
	}
	res := make([]part, len(parts))
	counts := make([]int, len(parts))
	total := 0
	for k, p := range parts {
		counts[k] = strings.Count(p, "\x00")
		total += counts[k]
	}
	cands := make([]candidate, total)
	var wg sync.WaitGroup
	off := 0
	for k, p := range parts {
		r := &res[k]
		dst := cands[off : off : off+counts[k]]
		off += counts[k]
		wg.Go(func() {
			r.cands, r.skipped, r.first, r.last, r.err = parseStage(p, dst, oidLen)
		})
	}
	wg.Wait()
	// Join the parts in order. A path's stages are consecutive records, so
	// one path can end a part and begin the next: that first record of the
	// next part is another stage, and is dropped, as within a part.
	n, last := 0, ""
	for k := range res {
		r := &res[k]
		if r.err != nil {
			return nil, r.err
		}
		if r.first == "" {
			continue // no records
		}
		switch {
		case last == "":
		case r.first < last:
			return nil, fmt.Errorf("git ls-files: %q listed after %q", r.first, last)
		case r.first == last && len(r.cands) > 0 && r.cands[0].path == last:
			r.cands = r.cands[1:]
		case r.first == last:
			r.skipped = r.skipped[1:]
		}
		last = r.last
		if len(r.cands) > 0 && &r.cands[0] != &cands[n] {
			copy(cands[n:], r.cands)
		}
		n += len(r.cands)
		cp.skipped = append(cp.skipped, r.skipped...)
	}
	return cands[:n:n], nil
}

// classifySplitBytes is the listing size from which classifyTracked
// parses in parallel.
var classifySplitBytes = 1 << 20

// parseStage parses whole records of `git ls-files --stage -z` into dst
// (which has room for one candidate per record), keeping the first record
// of each path. It returns the first and last paths it saw.
func parseStage(all string, dst []candidate, oidLen int) (cands []candidate, skipped []SkippedFile, first, last string, err error) {
	cands = dst
	hexLen := 2 * oidLen
	for len(all) > 0 {
		rec, rest, ok := strings.Cut(all, "\x00")
		if !ok {
			return nil, nil, "", "", errors.New("git ls-files: truncated output")
		}
		all = rest
		// "<mode> <oid> <stage>\t<path>"
		tab := strings.IndexByte(rec, '\t')
		if tab != 6+1+hexLen+2 || rec[6] != ' ' || rec[7+hexLen] != ' ' {
			return nil, nil, "", "", fmt.Errorf("git ls-files: malformed record %q", rec)
		}
		mode, oid, stage, p := rec[:6], rec[7:7+hexLen], rec[8+hexLen], rec[tab+1:]
		if first == "" {
			first = p
		}
		if p == last {
			continue // another stage of an unmerged path
		}
		if last != "" && p < last {
			return nil, nil, "", "", fmt.Errorf("git ls-files: %q listed after %q", p, last)
		}
		last = p
		switch mode {
		case "160000":
			skipped = append(skipped, SkippedFile{p, "submodule (not captured)"})
			continue
		case "040000":
			skipped = append(skipped, SkippedFile{p, "sparse directory (not captured)"})
			continue
		}
		c := candidate{path: p, tracked: true, indexMode: parseMode(mode)}
		if stage == '0' {
			if _, err := hex.Decode(c.indexOID[:oidLen], []byte(oid)); err != nil {
				return nil, nil, "", "", fmt.Errorf("git ls-files: malformed object id in %q", rec)
			}
		} // unmerged: a zero index id marks the path dirty
		cands = append(cands, c)
	}
	return cands, skipped, first, last, nil
}

// validPath is protocol.ValidatePath without allocating, for the hot loop
// over every tracked path (a test checks they agree).
func validPath(p string) bool {
	if p == "" || len(p) > protocol.MaxPathBytes || p[0] == '/' {
		return false
	}
	start := 0
	for i := 0; i <= len(p); i++ {
		if i < len(p) {
			switch p[i] {
			case '\\', 0, '\n', '\r', '\t':
				return false
			case '/':
			default:
				continue
			}
		}
		switch c := p[start:i]; {
		case c == "", c == ".", c == "..", strings.EqualFold(c, ".git"):
			return false
		}
		start = i + 1
	}
	return true
}

// addUntracked merges the allowlisted, not denied paths of
// `git ls-files --others -z` into the sorted candidates.
func (cp *capture) addUntracked(cands []candidate, out []byte) []candidate {
	var add []candidate
	for _, p := range splitNUL(out) {
		if strings.HasSuffix(p, "/") {
			if _, ok := cp.allow.Match(strings.TrimSuffix(p, "/") + "/x"); ok {
				cp.skipped = append(cp.skipped, SkippedFile{strings.TrimSuffix(p, "/"), "nested git repository (not captured)"})
			}
			continue
		}
		if _, ok := cp.allow.Match(p); !ok {
			continue
		}
		if _, hit := cp.deny.Match(p); hit {
			cp.denied = append(cp.denied, p)
			continue
		}
		if !validPath(p) {
			cp.skipped = append(cp.skipped, SkippedFile{p, "path not representable in a snapshot"})
			continue
		}
		add = append(add, candidate{path: p})
	}
	if len(add) == 0 {
		return cands
	}
	cands = append(cands, add...)
	slices.SortFunc(cands, func(a, b candidate) int { return strings.Compare(a.path, b.path) })
	return cands
}

// filterTracked drops tracked candidates that a deny pattern excludes
// (recording them) or whose path a snapshot cannot carry. A candidate
// found in a hash cache written under the same deny patterns passed both
// checks then, so when trusted is set they are skipped for it.
func (cp *capture) filterTracked(cands []candidate, trusted bool) []candidate {
	var memo dirMemo
	n := 0
	for i := range cands {
		c := &cands[i]
		if c.tracked && !(trusted && c.cached) {
			if _, hit := cp.deny.match(c.path, &memo); hit {
				cp.denied = append(cp.denied, c.path)
				continue
			}
			if !validPath(c.path) {
				cp.skipped = append(cp.skipped, SkippedFile{c.path, "path not representable in a snapshot"})
				continue
			}
		}
		if n != i {
			cands[n] = *c
		}
		n++
	}
	return cands[:n]
}

// joinCache copies each candidate's cache record, if any, into it. Both
// are sorted by path. It returns how many records the cache held.
func (cp *capture) joinCache(cands []candidate, r *cacheReader) int {
	records := 0
	ok, err := r.next()
	for i := range cands {
		c := &cands[i]
		for ok && r.path < c.path {
			records++
			ok, err = r.next()
		}
		if ok && r.path == c.path {
			c.key, c.sum, c.oid, c.cached = r.key, r.sum, r.oid, true
			records++
			ok, err = r.next()
		}
	}
	for ok {
		records++
		ok, err = r.next()
	}
	if err != nil {
		cp.log.Warn("hash cache damaged part-way; reading the rest of the files", "err", err)
	}
	return records
}

// racyWindow is how recent a timestamp must be for a file not to be cached.
var racyWindow = time.Second

// assemble keeps the present candidates, in order (compacting cands in
// place), and fills the manifest lists and statistics.
func (cp *capture) assemble(root string, cands []candidate) *Captured {
	c := &Captured{Root: root}
	c.Manifest.UntrackedFiles = []protocol.ManifestFile{}
	n := 0
	for i := range cands {
		f := &cands[i]
		switch f.state {
		case statePresent:
		case stateSpecial:
			cp.skipped = append(cp.skipped, SkippedFile{f.path, "not a regular file or symlink"})
			continue
		default:
			continue
		}
		c.Stats.Bytes += f.size()
		if f.hashed {
			c.Stats.Hashed++
		}
		if !f.tracked {
			c.Manifest.UntrackedFiles = append(c.Manifest.UntrackedFiles, protocol.ManifestFile{
				Path: f.path, Hash: hex.EncodeToString(f.sum[:]), Bytes: f.size(),
			})
		}
		if n != i {
			cands[n] = *f
		}
		n++
	}
	c.files = cands[:n:n]
	c.Stats.Files = n
	c.Stats.Untracked = len(c.Manifest.UntrackedFiles)
	slices.Sort(cp.denied)
	cp.denied = slices.Compact(cp.denied)
	c.Manifest.DeniedPaths = cp.denied
	if c.Manifest.DeniedPaths == nil {
		c.Manifest.DeniedPaths = []string{}
	}
	c.Stats.Denied = len(cp.denied)
	c.Skipped = cp.skipped
	return c
}

// finishSnapshot encodes the snapshot (into scratch if it has room) and
// fills the manifest's version, format and bundle hash.
func (cp *capture) finishSnapshot(c *Captured, scratch []byte) {
	snap := encodeSnapshot(c.files, scratch)
	c.Snapshot = snap
	// The snapshot is never written to once encoded: view it as a string
	// rather than copying megabytes.
	c.snapText = unsafe.String(unsafe.SliceData(snap), len(snap))
	c.Manifest.Version = protocol.VersionManifest
	c.Manifest.Format = protocol.SnapshotVersion
	c.Manifest.BundleHash = protocol.HashBytes(snap)
}

// encodeSnapshot renders sorted, validated files in the
// warrant.snapshot.v1 form (byte-identical to protocol.Snapshot.Encode,
// without building the intermediate entries), into scratch when it has
// room (scratch must be memory nothing else refers to).
func encodeSnapshot(files []candidate, scratch []byte) []byte {
	size := len(protocol.SnapshotVersion) + 1
	for i := range files {
		size += 6 + 1 + 64 + 1 + decimalLen(files[i].size()) + 1 + len(files[i].path) + 1
	}
	b := scratch[:0]
	if cap(b) < size {
		b = make([]byte, 0, size)
	}
	b = append(b, protocol.SnapshotVersion...)
	b = append(b, '\n')
	var hexbuf [64]byte
	for i := range files {
		f := &files[i]
		b = append(b, f.mode.String()...)
		b = append(b, ' ')
		hex.Encode(hexbuf[:], f.sum[:])
		f.hexOff = len(b)
		b = append(b, hexbuf[:]...)
		b = append(b, ' ')
		b = strconv.AppendInt(b, f.size(), 10)
		b = append(b, '\t')
		b = append(b, f.path...)
		b = append(b, '\n')
	}
	return b
}

// decimalLen is the length of n >= 0 in decimal.
func decimalLen(n int64) int {
	l := 1
	for ; n >= 10; n /= 10 {
		l++
	}
	return l
}

// dedupeBlobs lists the first file of each distinct content, leaving out
// contents equal to the snapshot or dirty diff blobs.
func (c *Captured) dedupeBlobs() {
	c.dedupeFiles()
	c.dropSpecialBlobs()
}

// dedupeFiles lists the first file of each distinct content in c.uniq
// (it needs only the files' digests, so it can run while the snapshot is
// encoded). It keys a map on the first 8 bytes of each sha256 and
// compares the full digest on a match.
func (c *Captured) dedupeFiles() {
	first := make(map[uint64]int32, len(c.files))
	var extra map[[32]byte]struct{} // distinct digests sharing an 8-byte prefix
	c.uniq = make([]int32, 0, len(c.files))
	c.fileBytes = 0
	for i := range c.files {
		f := &c.files[i]
		k := binary.LittleEndian.Uint64(f.sum[:8])
		if j, ok := first[k]; !ok {
			first[k] = int32(i)
		} else if c.files[j].sum == f.sum {
			continue
		} else {
			if extra == nil {
				extra = make(map[[32]byte]struct{})
			}
			if _, dup := extra[f.sum]; dup {
				continue
			}
			extra[f.sum] = struct{}{}
		}
		c.uniq = append(c.uniq, int32(i))
		c.fileBytes += f.size()
	}
}

// dropSpecialBlobs removes from c.uniq the file (at most one, after
// dedupeFiles) whose content equals the snapshot or the dirty diff, which
// are blobs of their own, and totals the blob bytes.
func (c *Captured) dropSpecialBlobs() {
	for _, h := range []string{c.Manifest.BundleHash, c.Manifest.DirtyDiffHash} {
		var k [32]byte
		if _, err := hex.Decode(k[:], []byte(h)); err != nil || h == "" {
			continue
		}
		if i := slices.IndexFunc(c.uniq, func(i int32) bool { return c.files[i].sum == k }); i >= 0 {
			c.fileBytes -= c.files[c.uniq[i]].size()
			c.uniq = slices.Delete(c.uniq, i, i+1)
		}
	}
	c.blobBytes = int64(len(c.Snapshot)+len(c.DirtyDiff)) + c.fileBytes
}

// dirtySet is what the dirty diff covers: the captured tracked paths
// whose working state differs from HEAD (staged changes, files whose
// content or mode differs from the index, tracked files deleted from the
// work tree), never a denied path; and, for those still in the index,
// their index entries as `git update-index -z --index-info` records.
type dirtySet struct {
	paths []string
	info  []byte
}

func (cp *capture) dirtyPaths(cands []candidate, staged []string, unborn bool, oidLen int) dirtySet {
	var d dirtySet
	stagedSet := make(map[string]bool, len(staged))
	var memo dirMemo
	for _, p := range staged {
		if _, hit := cp.deny.match(p, &memo); hit || !validPath(p) {
			continue
		}
		stagedSet[p] = true
		d.paths = append(d.paths, p)
	}
	var zero [32]byte
	for i := range cands {
		f := &cands[i]
		if !f.tracked {
			continue
		}
		changed := unborn || f.state != statePresent || f.mode != f.indexMode ||
			!bytes.Equal(f.oid[:oidLen], f.indexOID[:oidLen])
		if !changed && !stagedSet[f.path] {
			continue
		}
		if changed {
			d.paths = append(d.paths, f.path)
		}
		oid := f.indexOID[:oidLen]
		if bytes.Equal(oid, zero[:oidLen]) { // unmerged: any id will do, git reads the file
			oid = emptyBlob(oidLen)
		}
		mode := f.indexMode.String()
		if mode == "" {
			mode = protocol.ModeFile
		}
		d.info = fmt.Appendf(d.info, "%s %x\t%s\x00", mode, oid, f.path)
	}
	slices.Sort(d.paths)
	d.paths = slices.Compact(d.paths)
	return d
}

func emptyBlob(oidLen int) []byte {
	h := "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
	if oidLen != sha1.Size {
		h = "473a0f4c3be8a93681a267e3b1e9a7dcda1185436fe141f7749120a303721813"
	}
	b, _ := hex.DecodeString(h)
	return b
}

func emptyTree(oidLen int) string {
	if oidLen == sha1.Size {
		return "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
	}
	return "6ef19b41225c5369f1c104d45d8d85efa9b057b53b14b4b9b939dd74decc5321"
}

// dirtyDiff renders the binary diff between base and the work tree for
// the dirty paths. It uses plumbing (diff-index), which applies no
// textconv, external diff or diff.* display settings, against a temporary
// index holding only the dirty entries: with the repository's full index,
// git 2.39's diff-index with a pathspec can take seconds on a large tree,
// and the temporary entries carry no stat data, so git compares the
// files' content. Paths go in chunks so no command line grows too long;
// chunks are sorted ranges, so their concatenation is the diff of the
// whole set.
func dirtyDiff(ctx context.Context, g *gitRunner, base string, d dirtySet) ([]byte, error) {
	tmp, err := os.MkdirTemp("", "warrant-dirty-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	g = g.with("GIT_INDEX_FILE=" + filepath.Join(tmp, "index"))
	if _, err := g.run(ctx, bytes.NewReader(d.info), "update-index", "-z", "--index-info"); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	const maxArgBytes = 64 << 10
	paths := d.paths
	for len(paths) > 0 {
		n, size := 0, 0
		for n < len(paths) && (n == 0 || size+len(paths[n]) < maxArgBytes) && n < 2000 {
			size += len(paths[n]) + 1
			n++
		}
		args := []string{"diff-index", "-p", "--binary", "--full-index", "--no-renames", "--no-color",
			"--ignore-submodules", "--src-prefix=a/", "--dst-prefix=b/", base, "--"}
		if err := g.runTo(ctx, &out, nil, append(args, paths[:n]...)...); err != nil {
			return nil, err
		}
		paths = paths[n:]
	}
	return out.Bytes(), nil
}

// captureDir captures a directory that is not a git work tree: only the
// allowlisted files, minus denied ones.
func (cp *capture) captureDir(ctx context.Context, dir string) (*Captured, error) {
	if len(cp.allow.pats) == 0 {
		return nil, ErrNotGitNoAllowlist
	}
	var cands []candidate
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel := filepath.ToSlash(p[len(dir)+1:])
		if d.IsDir() {
			if strings.EqualFold(d.Name(), ".git") {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() && d.Type()&fs.ModeSymlink == 0 {
			if _, ok := cp.allow.Match(rel); ok {
				cp.skipped = append(cp.skipped, SkippedFile{rel, "not a regular file or symlink"})
			}
			return nil
		}
		if _, ok := cp.allow.Match(rel); !ok {
			return nil
		}
		if _, hit := cp.deny.Match(rel); hit {
			cp.denied = append(cp.denied, rel)
			return nil
		}
		if !validPath(rel) {
			cp.skipped = append(cp.skipped, SkippedFile{rel, "path not representable in a snapshot"})
			return nil
		}
		cands = append(cands, candidate{path: rel})
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(cands, func(a, b candidate) int { return strings.Compare(a.path, b.path) })
	if err := scanAll(cands, dir, sha1.Size, cp.workers, &cp.retain, ctx.Err); err != nil {
		return nil, err
	}
	c := cp.assemble(dir, cands)
	c.Manifest.BaseRef = ""
	cp.finishSnapshot(c, nil)
	c.dedupeBlobs()
	return c, nil
}

// ErrNotGitNoAllowlist is returned when capturing a directory that is not
// a git work tree without an allowlist.
var ErrNotGitNoAllowlist = errors.New("not a git work tree: name the files to capture with an allowlist")
