package workspace

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"warrant.dev/warrant/protocol"
)

// baselineFor writes files into a fresh work tree and an index of them
// (as Materialize would, with ids from ids), returning the work tree and
// the index path. Racily clean sizes are not zeroed (the index's "now" is
// an hour ahead), so each test chooses the index's timestamp itself.
func baselineFor(t *testing.T, files map[string]string, ids map[string]string) (ws, index string) {
	t.Helper()
	dir := t.TempDir()
	ws = filepath.Join(dir, "ws")
	snap := &protocol.Snapshot{}
	for p := range files {
		snap.Entries = append(snap.Entries, protocol.SnapshotEntry{Path: p, Mode: protocol.ModeFile})
	}
	sortEntries(snap.Entries)
	entries := make([]indexEntry, len(snap.Entries))
	for i, e := range snap.Entries {
		full := filepath.Join(ws, e.Path)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(files[e.Path]), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := statEntry(ws, e, hashObject(objBlob, []byte(ids[e.Path])), &entries[i]); err != nil {
			t.Fatal(err)
		}
	}
	index = filepath.Join(dir, "index")
	if _, err := writeIndex(index, snap, entries, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	return ws, index
}

func sortEntries(es []protocol.SnapshotEntry) {
	slices.SortFunc(es, func(a, b protocol.SnapshotEntry) int { return strings.Compare(a.Path, b.Path) })
}

func unchangedWith(t *testing.T, ws, index string, stamp time.Time) bool {
	t.Helper()
	if err := os.Chtimes(index, stamp, stamp); err != nil {
		t.Fatal(err)
	}
	ix, err := readBaseIndex(index)
	if err != nil {
		t.Fatal(err)
	}
	same, err := workTreeUnchanged(ws, ix)
	if err != nil {
		t.Fatal(err)
	}
	return same
}

// A file changed in the same timestamp tick as its recorded stat data
// looks unchanged by stat alone. The index here records the stat data of
// the changed file with the id of the old content, which is what such a
// change leaves behind: the fast path must hash the file whenever its
// mtime or ctime is not older than the index, and may trust stat data
// only for entries older than the index.
func TestFastPathHashesRacilyCleanEntries(t *testing.T) {
	ws, index := baselineFor(t,
		map[string]string{"f.txt": "version 2\n", "d/e/same.txt": "same\n"},
		map[string]string{"f.txt": "version 1\n", "d/e/same.txt": "same\n"})
	fi, err := os.Lstat(filepath.Join(ws, "f.txt"))
	if err != nil {
		t.Fatal(err)
	}
	mtime := fi.ModTime()
	if unchangedWith(t, ws, index, mtime) {
		t.Error("index stamped in the file's timestamp tick: the change was not seen")
	}
	if unchangedWith(t, ws, index, mtime.Add(-time.Hour)) {
		t.Error("index older than the file: the change was not seen")
	}
	// An index written after the file's last change makes its stat data
	// trustworthy; this is the case the racy check exists for.
	if !unchangedWith(t, ws, index, time.Now().Add(time.Hour)) {
		t.Error("index newer than every file: stat data should have been trusted")
	}
}

// Racily clean entries whose content did not change are still
// unchanged, and a zeroed size (as writeIndex records for entries
// modified in the second of the index) is decided by content.
func TestFastPathRacyButUnchanged(t *testing.T) {
	ws, index := baselineFor(t, map[string]string{"a.txt": "a\n", "b/c.txt": "c\n"}, map[string]string{"a.txt": "a\n", "b/c.txt": "c\n"})
	if !unchangedWith(t, ws, index, time.Now().Add(-time.Hour)) {
		t.Error("racy entries with unchanged content reported as changed")
	}

	// The same files, the index written with "now" in their second: the
	// sizes are zeroed, yet content decides.
	snap := &protocol.Snapshot{Entries: []protocol.SnapshotEntry{{Path: "a.txt", Mode: protocol.ModeFile}}}
	entries := make([]indexEntry, 1)
	if err := statEntry(ws, snap.Entries[0], hashObject(objBlob, []byte("a\n")), &entries[0]); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(ws, "b"))
	b, err := writeIndex(index, snap, entries, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ix, err := readBaseIndex(index)
	if err != nil {
		t.Fatal(err)
	}
	if ix.entries[0].size != 0 {
		t.Fatalf("writeIndex did not zero the size of an entry of its own second (%d bytes of index)", len(b))
	}
	if !unchangedWith(t, ws, index, time.Now().Add(time.Hour)) {
		t.Error("zero-size entry with unchanged content reported as changed")
	}
	// Changed content whose stat data the index records (as a change in
	// the same tick would leave it), with the zeroed size: the content
	// decides even though the index is stamped later than the file.
	os.WriteFile(filepath.Join(ws, "a.txt"), []byte("A\n"), 0o644)
	if err := statEntry(ws, snap.Entries[0], hashObject(objBlob, []byte("a\n")), &entries[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := writeIndex(index, snap, entries, time.Now()); err != nil {
		t.Fatal(err)
	}
	if unchangedWith(t, ws, index, time.Now().Add(time.Hour)) {
		t.Error("zero-size entry with changed content reported as unchanged")
	}
}

// readBaseIndex reads back what writeIndex writes, names longer than the
// index's 12-bit length field included, and refuses damaged indexes.
func TestReadBaseIndexRoundTrip(t *testing.T) {
	long := strings.Repeat("d123456/", 511) + "f.txt" // 4093 bytes
	long2 := strings.Repeat("e", 4096)
	snap := &protocol.Snapshot{Entries: []protocol.SnapshotEntry{
		{Path: "a", Mode: protocol.ModeFile},
		{Path: long, Mode: protocol.ModeExecutable},
		{Path: long2, Mode: protocol.ModeSymlink},
		{Path: "z/y", Mode: protocol.ModeFile},
	}}
	entries := []indexEntry{
		{ctimeS: 1, ctimeNs: 2, mtimeS: 3, mtimeNs: 4, dev: 5, ino: 6, mode: 0o100644, uid: 7, gid: 8, fileSize: 9},
		{ctimeS: 11, mtimeS: 13, ino: 16, mode: 0o100755, fileSize: 19},
		{ino: 26, mode: 0o120000, fileSize: 29},
		{ino: 36, mode: 0o100644, fileSize: 39},
	}
	for i := range entries {
		entries[i].oid = hashObject(objBlob, []byte{byte(i)})
	}
	index := filepath.Join(t.TempDir(), "index")
	b, err := writeIndex(index, snap, entries, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ix, err := readBaseIndex(index)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range snap.Entries {
		k, ok := ix.byPath[e.Path]
		if !ok || k != i {
			t.Fatalf("entry %d (%d bytes) read back at %d, %v", i, len(e.Path), k, ok)
		}
		w, g := entries[i], ix.entries[k]
		if g != (baseEntry{w.ctimeS, w.ctimeNs, w.mtimeS, w.mtimeNs, w.dev, w.ino, w.mode, w.uid, w.gid, w.fileSize, w.oid}) {
			t.Errorf("entry %d: read %+v, wrote %+v", i, g, w)
		}
	}
	for _, d := range []string{"", "z", "d123456", strings.TrimSuffix(long, "/f.txt")} {
		if _, ok := ix.dirs[d]; !ok {
			t.Errorf("directory %q not implied", d)
		}
	}
	if len(ix.dirs) != 1+1+511 {
		t.Errorf("%d directories implied, want %d", len(ix.dirs), 1+1+511)
	}
	for _, at := range []int{0, 9, 100, len(b) - 1} {
		bad := append([]byte(nil), b...)
		bad[at] ^= 1
		os.WriteFile(index, bad, 0o600)
		if _, err := readBaseIndex(index); err == nil {
			t.Errorf("an index damaged at byte %d was read", at)
		}
	}
}
