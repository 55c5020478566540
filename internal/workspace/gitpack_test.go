package workspace

import (
	"bytes"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
)

// Ids every git installation agrees on.
func TestHashObjectKnownIDs(t *testing.T) {
	for _, c := range []struct {
		t       objectType
		content string
		want    string
	}{
		{objBlob, "", "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"},
		{objBlob, "hello\n", "ce013625030ba8dba906f756967f9e9ca394464a"},
		{objTree, "", "4b825dc642cb6eb9a060e54bf8d69288fbee4904"},
	} {
		id := hashObject(c.t, []byte(c.content))
		if got := hex.EncodeToString(id[:]); got != c.want {
			t.Errorf("%s %q: %s, want %s", c.t, c.content, got, c.want)
		}
	}
}

// Offsets past 2 GiB go to the index's table of 64-bit offsets (no test
// writes such a pack; this reads the index as gitformat-pack(5) says).
func TestPackIndexLargeOffsets(t *testing.T) {
	objs := []packedObject{
		{id: hashObject(objBlob, []byte("c")), offset: 1<<32 + 5, crc: 3},
		{id: hashObject(objBlob, []byte("a")), offset: 12, crc: 1},
		{id: hashObject(objBlob, []byte("b")), offset: 1 << 31, crc: 2},
	}
	want := map[objectID]packedObject{}
	for _, o := range objs {
		want[o.id] = o
	}
	var packSum objectID
	packSum[0] = 0xaa
	p := filepath.Join(t.TempDir(), "x.idx")
	if err := writePackIndex(p, objs, packSum); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	n := 3
	if !bytes.Equal(b[:8], []byte{0xff, 't', 'O', 'c', 0, 0, 0, 2}) {
		t.Fatalf("header %x", b[:8])
	}
	if got := binary.BigEndian.Uint32(b[8+255*4:]); got != uint32(n) {
		t.Fatalf("fan-out total %d", got)
	}
	ids := 8 + 256*4
	crcs := ids + n*sha1.Size
	offs := crcs + n*4
	large := offs + n*4
	var prev objectID
	for i := range n {
		var id objectID
		copy(id[:], b[ids+i*sha1.Size:])
		if i > 0 && bytes.Compare(prev[:], id[:]) >= 0 {
			t.Errorf("ids not sorted at %d", i)
		}
		prev = id
		w, ok := want[id]
		if !ok {
			t.Fatalf("unknown id %x", id)
		}
		if crc := binary.BigEndian.Uint32(b[crcs+i*4:]); crc != w.crc {
			t.Errorf("%x: crc %d, want %d", id, crc, w.crc)
		}
		off := uint64(binary.BigEndian.Uint32(b[offs+i*4:]))
		if off&(1<<31) != 0 {
			off = binary.BigEndian.Uint64(b[large+int(off&^(1<<31))*8:])
		}
		if off != w.offset {
			t.Errorf("%x: offset %d, want %d", id, off, w.offset)
		}
	}
	end := len(b) - 2*sha1.Size
	if end != large+2*8 {
		t.Errorf("index is %d bytes, want %d (two 64-bit offsets)", len(b), large+2*8+2*sha1.Size)
	}
	if !bytes.Equal(b[end:end+sha1.Size], packSum[:]) {
		t.Error("pack checksum not at the end")
	}
	if sum := sha1.Sum(b[:len(b)-sha1.Size]); !bytes.Equal(sum[:], b[len(b)-sha1.Size:]) {
		t.Error("index checksum wrong")
	}
}
