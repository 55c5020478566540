// Package workspace owns a run's workspace on both ends: on the
// requester's machine it captures a working tree into a
// warrant.manifest.v1 with content-addressed blobs (Capture, Upload) and
// brings a run's changes back (Pull); on the runner it rebuilds the tree
// from the blobs (Materialize) and collects what the session changed
// (Collect). Git is driven through the git binary with a controlled
// environment; the package never runs hooks, filters, fsmonitor or other
// commands configured in a repository it did not create itself.
//
// # Capture
//
// In a git work tree (captured from its top level, whichever
// subdirectory Dir names), the snapshot holds every tracked file in its
// working state — staged and unstaged changes included, files deleted
// from the work tree absent, executable bits and symlinks kept (a symlink
// is recorded as a link, its content being the target; it is never
// followed) — plus untracked files that are not ignored by git and match
// an AllowUntracked pattern. A tracked path whose parent directory has
// become a symlink is treated as deleted, as git does, so nothing is read
// from outside the tree. Submodules, sparse-checkout directories, FIFOs,
// sockets, devices and names a snapshot cannot carry (tab, newline,
// backslash, a ".git" component) are left out and listed in
// Captured.Skipped. Outside git only files matching AllowUntracked are
// captured, and an empty allowlist is an error (ErrNotGitNoAllowlist).
//
// Deny patterns (DefaultDeny plus CaptureOptions.Deny) apply to tracked
// files too. Every path they exclude — tracked, or untracked and
// allowlisted — is listed in Manifest.DeniedPaths, so a verifier can see
// that the file was withheld rather than absent. Denied files never reach
// the snapshot, the blobs or the dirty diff.
//
// No git history is shipped: the snapshot is a list of files
// (warrant.snapshot.v1, see protocol.SnapshotVersion), since history keeps
// secrets that were deleted long ago.
//
// # Patterns
//
// Deny and allow patterns are gitignore-like globs: "*" matches any run
// of characters except "/", "?" one character, "[...]" a class, "\" escapes
// the next character.
//
//   - A pattern without "/" matches the base name of a path and also any
//     directory on the way: ".env" matches ".env", "config/.env" and every
//     file under a directory named ".env".
//   - A pattern with a trailing "/" matches directories only: "build/"
//     matches everything under any directory named "build", not a file
//     named "build".
//   - A pattern with any other "/" is anchored at the top of the tree (a
//     leading "/" only anchors): "docs/*.md" matches "docs/a.md" but not
//     "docs/x/a.md" nor "src/docs/a.md"; it also matches everything under
//     a directory it matches ("config/secrets" covers
//     "config/secrets/db.yml"). "**" as a whole segment matches zero or
//     more directories: "docs/**/*.md", "**/testdata/*.json".
//   - Deny patterns match case-insensitively (".ENV" is denied: erring
//     towards withholding); allow patterns match case-sensitively.
//   - Negation ("!pattern") is not supported and is an error, as are empty
//     patterns and "." or ".." segments.
//
// # Content addressing, caches and upload
//
// Every file is named by the sha256 of its bytes, so a later capture of
// the same tree uploads only what changed: Upload asks the sink which
// hashes it lacks (BlobSink.Missing, in batches of MaxMissingHashes) and
// Puts only those, in batches of at most MaxPutBlobs blobs or MaxPutBytes
// bytes. Content is streamed from disk, except small files (up to
// DefaultRetainBytes in total) that the capture kept in memory; a file
// edited between Capture and Upload fails the upload
// (ErrChangedSinceCapture) instead of being stored under a stale hash.
//
// Two caches in the repository's git directory (never in the work tree)
// make a warm capture cheap. warrant/hashcache maps each captured path to
// the sha256 and git blob id of its content, keyed by lstat data (size,
// mtime, ctime, inode, mode); a file whose key matches is not read, and a
// file modified within a second of a capture is never cached, so an edit
// in the same timestamp tick cannot hide. warrant/listing keeps the output
// of `git ls-files --stage` and `git diff-index --cached`, keyed by the
// index file's stat data and HEAD. Both are checksummed; a damaged file is
// ignored. CaptureOptions.NoHashCache disables both.
//
// # The manifest
//
// Capture fills a warrant.manifest.v1 as follows (no field is added to
// the v1 format; Format is its existing optional member):
//
//   - format: "warrant.snapshot.v1"; bundleHash: the sha256 of the
//     snapshot blob, which lists every captured file (tracked files in
//     their working state and allowlisted untracked files).
//   - baseRef: the commit id of HEAD; "" when HEAD has no commit yet or
//     the directory is not a git work tree.
//   - untrackedFiles: the allowlisted untracked files ({path, hash,
//     bytes}); each is also in the snapshot, with the same hash and size.
//   - deniedPatterns: the effective deny list (DefaultDeny, then the
//     configured patterns, without duplicates); deniedPaths: the sorted
//     paths they excluded.
//   - dirtyDiffHash (optional): the sha256 of a binary git diff from HEAD
//     (or the empty tree) to the working state of the captured tracked
//     files — staged and unstaged changes and deletions, never a denied
//     path, never an untracked file (those are in untrackedFiles). It is
//     git's view of the change, after the repository's own attributes (a
//     "text eol=crlf" file appears normalised), while the snapshot holds
//     the raw bytes. Absent when the tracked files match HEAD. The diff
//     blob is uploaded with the others.
//
// # Materialize
//
// Materialize fetches the snapshot and every blob from a BlobSource and
// checks each against its hash (and size) before writing it
// (ErrBlobMismatch). A source that is a BlobBatchSource delivers the
// symlink targets and the small files (up to 1 MiB) in batches of up to
// 1,000 blobs and 16 MiB, one round trip each instead of one per blob;
// a blob it leaves out, sends twice or was not asked for fails the
// materialization like a tampered one. Before anything is written it refuses: paths that are
// absolute, contain "..", ".", empty or ".git" components, or lie under
// another entry (so never through a symlink); modes other than file,
// executable and symlink (no devices); symlinks whose target is empty,
// absolute, leads into a .git directory, or — resolved through the
// snapshot's own symlinks — leaves the tree; and snapshots that contain a
// path the manifest lists as denied or matches one of its deny patterns,
// or lack one of its untracked files (ErrInconsistent). The target must
// not exist or be an empty directory (ErrTargetNotEmpty); files are
// created with O_EXCL through an os.Root.
//
// The result is a git repository with no history: HEAD (branch "main",
// also refs/warrant/base) is one synthetic commit of exactly the captured
// files, made with a fixed author, committer and date, so the same
// snapshot always gives the same commit id. Its .git/info/attributes
// overrides the tree's .gitattributes (no end-of-line conversion, no
// filters), so git stores and diffs the bytes as they are.
//
// No git process runs: Materialize writes the repository itself, as it
// writes the files. Each blob goes into one version 2 pack as it is
// written to the tree (zlib stored blocks: CPU matters more than disk
// for a pack that lives one run), then the trees (in git's entry order)
// and the commit; the pack's version 2 index, the refs (packed-refs),
// HEAD, the configuration and the index (from the stat data of the files
// as written) follow. Object ids are git's (SHA-1 of "<type> <size>\x00
// <content>"), so git reads the result as its own; the tests check it
// with git fsck --strict.
//
// # Collect
//
// Collect stages the session's work tree in a private git directory —
// its own configuration, index and attributes, new objects kept apart,
// base objects read from the workspace's object store — so nothing the
// session wrote into the workspace's .git (fsmonitor, filters, hooks,
// diff drivers) runs on the runner. The diff is against the base tree
// whatever the session committed, is binary-safe (full object ids, no
// renames), includes deletions and new files that .gitignore does not
// exclude, and leaves out nested git repositories and unrepresentable
// names (reported in Output.Skipped). Output.Changed lists each changed
// path with its new mode, size and sha256 (empty for deletions), taken
// from the same staged blobs the diff shows. With a StateDir, Collect
// starts from a copy of the base index made at materialization and reads
// only files whose stat data changed.
//
// With a StateDir, Collect first checks without git whether anything
// changed at all, against that private copy of the base index (never the
// workspace's own): the same set of paths outside the top-level .git (any
// new file, symlink or directory, even an ignored or empty one, counts as
// a change), and for each file the same ctime, mtime, device, inode,
// mode, owner and size. A file whose recorded mtime or ctime is not older
// than the copy itself — it could have been rewritten in the same
// timestamp tick, git's "racily clean" case — is hashed and compared
// with its base blob id. Only when all of it matches does Collect return
// an empty Output without running git; anything else, and any error,
// takes the git path above, whose answer is the reference.
//
// # Pull
//
// Pull rebuilds the base version of every path the run's diff touches
// from the snapshot blobs, applies the diff to it in a scratch directory
// to get the run's version, and compares base, run and local version
// path by path:
//
//   - local equals base: the run's version applies (add, modify or
//     delete);
//   - local already equals the run's version: nothing to do;
//   - both changed a text file in separate places: `git merge-file`
//     merges them cleanly;
//   - anything else (overlapping edits, binary files, delete against
//     modify, two different additions, a directory or symlink in the way,
//     an unsafe symlink from the run) is a conflict: reported with its
//     reason, never resolved, no conflict markers written.
//
// The tree has diverged when HEAD is not the manifest's baseRef or a
// touched file differs locally from both its base and run versions. In
// the default mode (PullAuto) an undiverged pull writes the working tree
// (through an os.Root, each file renamed into place; the index and HEAD
// are not touched) and a diverged one instead commits HEAD plus the clean
// changes to a new branch warrant/<run id>, built with a temporary index,
// hash-object, write-tree, commit-tree and update-ref, so the working
// tree, index, HEAD and uncommitted work are left exactly as they were.
// An existing branch is refused (ErrBranchExists) with the commands to
// inspect or delete it. PullWorktree and PullBranch force either
// destination; DryRun reports the same result and writes nothing. Diffs
// that touch unsafe paths (.git, "..", absolute) are refused outright.
//
// # Git environment
//
// Every git command runs with an environment built from scratch (PATH,
// TMPDIR, LC_ALL=C, GIT_CONFIG_NOSYSTEM, no inherited GIT_* variables)
// and with -c core.hooksPath=/dev/null -c core.fsmonitor=false and
// literal pathspecs. On the requester's machine HOME is kept so the
// user's global excludes file applies; on the runner (materialize,
// collect, scratch repositories) there is no global configuration at all
// and synthetic commits use a fixed identity.
package workspace
