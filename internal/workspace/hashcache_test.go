package workspace

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// The hash cache is written in 64 KiB pieces; whatever the record sizes,
// the file parses back to exactly the cacheable records, in order.
func TestWriteHashCacheRoundTrip(t *testing.T) {
	const limit = 1000
	var files []candidate
	for i := range 3000 {
		c := candidate{path: fmt.Sprintf("d%04d/%s", i, strings.Repeat("x", i%300))}
		c.key = statKey{size: int64(i), mtime: int64(i % 1200), ctime: 5, ino: uint64(i) << 20, mode: 0o100644}
		c.sum[0], c.sum[31], c.oid[0], c.oid[19] = byte(i), byte(i>>8), byte(i>>3), 7
		files = append(files, c)
	}
	files = append(files, candidate{path: "z/" + strings.Repeat("y", 70_000)}) // longer than a piece
	files[len(files)-1].key.mtime = 1
	var b bytes.Buffer
	if err := writeHashCache(&b, files, 20, limit, "fp"); err != nil {
		t.Fatal(err)
	}
	r, err := parseHashCache(b.Bytes(), 20)
	if err != nil {
		t.Fatal(err)
	}
	if r.denyFP != "fp" {
		t.Errorf("deny fingerprint %q", r.denyFP)
	}
	n := 0
	for i := range files {
		f := &files[i]
		if !cacheable(f, limit) {
			continue
		}
		ok, err := r.next()
		if !ok || err != nil {
			t.Fatalf("record %d (%s): ok %v, err %v", n, f.path[:10], ok, err)
		}
		if r.path != f.path || r.key != f.key || r.sum != f.sum || r.oid != f.oid {
			t.Fatalf("record %d differs: %q %+v", n, r.path[:min(10, len(r.path))], r.key)
		}
		n++
	}
	if ok, err := r.next(); ok || err != nil {
		t.Errorf("after %d records: ok %v, err %v", n, ok, err)
	}
	if n < 2000 || b.Len() < 3*(64<<10) {
		t.Fatalf("only %d records, %d bytes: the test does not cross pieces", n, b.Len())
	}
}

// dedupeFiles then dropSpecialBlobs lists each distinct content once, in
// file order, leaving out one equal to the snapshot or the dirty diff.
func TestDedupeBlobs(t *testing.T) {
	sum := func(b, tail byte) (s [32]byte) {
		s[0], s[31] = b, tail
		return s
	}
	c := &Captured{Snapshot: []byte("snap"), DirtyDiff: []byte("diff!")}
	for _, s := range [][32]byte{sum(1, 0), sum(2, 0), sum(1, 0), sum(1, 1), sum(9, 9), sum(1, 1), sum(3, 0), sum(8, 8)} {
		f := candidate{sum: s}
		f.key.size = int64(s[0])*10 + int64(s[31])
		c.files = append(c.files, f)
	}
	snap, diff := sum(9, 9), sum(8, 8)
	c.Manifest.BundleHash = fmt.Sprintf("%x", snap[:])
	c.Manifest.DirtyDiffHash = fmt.Sprintf("%x", diff[:])
	c.dedupeBlobs()
	if want := []int32{0, 1, 3, 6}; fmt.Sprint(c.uniq) != fmt.Sprint(want) {
		t.Errorf("uniq %v, want %v", c.uniq, want)
	}
	if want := int64(4+5) + 10 + 20 + 11 + 30; c.blobBytes != want {
		t.Errorf("blob bytes %d, want %d", c.blobBytes, want)
	}
}

// Parsed in parallel parts, a listing gives exactly what it gives parsed
// whole, wherever the parts split it: between the stages of an unmerged
// path, at a submodule, or anywhere else.
func TestClassifyTrackedInParts(t *testing.T) {
	var b strings.Builder
	oid := strings.Repeat("ab", 20)
	for i := range 60 {
		p := fmt.Sprintf("dir/file%03d", i)
		switch i % 5 {
		case 0: // unmerged: three stages
			for st := 1; st <= 3; st++ {
				fmt.Fprintf(&b, "100644 %s %d\t%s\x00", oid, st, p)
			}
		case 1:
			fmt.Fprintf(&b, "160000 %s 0\t%s\x00", oid, p)
		case 2:
			fmt.Fprintf(&b, "100755 %s 0\t%s\x00", oid, p)
		case 3: // an unmerged submodule
			fmt.Fprintf(&b, "160000 %s 1\t%s\x00160000 %s 2\t%s\x00", oid, p, oid, p)
		default:
			fmt.Fprintf(&b, "120000 %s 0\t%s\x00", oid, p)
		}
	}
	listing := []byte(b.String())
	classify := func(workers, split int) ([]candidate, []SkippedFile, error) {
		old := classifySplitBytes
		classifySplitBytes = split
		defer func() { classifySplitBytes = old }()
		cp := &capture{workers: workers}
		cands, err := cp.classifyTracked(listing, 20)
		return cands, cp.skipped, err
	}
	want, wantSkipped, err := classify(1, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != 36 || len(wantSkipped) != 24 {
		t.Fatalf("whole: %d candidates, %d skipped", len(want), len(wantSkipped))
	}
	for workers := 2; workers <= 40; workers++ {
		got, skipped, err := classify(workers, 1)
		if err != nil {
			t.Fatalf("%d parts: %v", workers, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) || fmt.Sprint(skipped) != fmt.Sprint(wantSkipped) {
			t.Errorf("%d parts: differs from the whole parse", workers)
		}
	}
	// Out of order across a part boundary is still refused.
	bad := []byte(fmt.Sprintf("100644 %s 0\tb\x00100644 %s 0\ta\x00", oid, oid))
	for _, split := range []int{1, 1 << 30} {
		old := classifySplitBytes
		classifySplitBytes = split
		cp := &capture{workers: 2}
		_, err := cp.classifyTracked(bad, 20)
		classifySplitBytes = old
		if err == nil {
			t.Errorf("split %d: out-of-order listing accepted", split)
		}
	}
}

// The snapshot is the same whether encoded into fresh memory or into a
// scratch buffer (which is then used, with no room to spare when sized
// exactly).
func TestEncodeSnapshotScratch(t *testing.T) {
	files := []candidate{{path: "a", mode: modeFile}, {path: "b/c", mode: modeExec}, {path: "d", mode: modeLink}}
	for i, n := range []int64{0, 9, 10, 12345678901} {
		files[i%3].key.size = n
		files[i%3].sum[i] = byte(n)
	}
	want := encodeSnapshot(files, nil)
	if len(want) != cap(want) {
		t.Errorf("fresh encoding: length %d, capacity %d (the size is computed exactly)", len(want), cap(want))
	}
	scratch := make([]byte, len(want))
	for i := range scratch {
		scratch[i] = 'x'
	}
	got := encodeSnapshot(files, scratch)
	if !bytes.Equal(got, want) || &got[0] != &scratch[0] {
		t.Errorf("scratch encoding differs or is not in scratch:\n%s", got)
	}
	if got := encodeSnapshot(files, scratch[:0:len(want)-1]); !bytes.Equal(got, want) {
		t.Errorf("short scratch: %s", got)
	}
	if d := decimalLen(12345678901); d != 11 {
		t.Errorf("decimalLen = %d", d)
	}
}
