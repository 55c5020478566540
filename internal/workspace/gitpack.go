package workspace

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
)

// This file writes git objects without git: a packfile (version 2, no
// deltas) and its index (version 2), in the formats git documents in
// gitformat-pack(5). Object ids are SHA-1 over "<type> <size>\x00<content>",
// exactly as git computes them.

// objectType is a pack object type.
type objectType byte

const (
	objCommit objectType = 1
	objTree   objectType = 2
	objBlob   objectType = 3
)

func (t objectType) String() string {
	switch t {
	case objCommit:
		return "commit"
	case objTree:
		return "tree"
	case objBlob:
		return "blob"
	}
	return "unknown"
}

// objectID is a SHA-1 git object id.
type objectID = [sha1.Size]byte

// hashObject returns git's id of an object with this content.
func hashObject(t objectType, content []byte) objectID {
	h := sha1.New()
	h.Write(objectHeader(t, int64(len(content))))
	h.Write(content)
	var id objectID
	h.Sum(id[:0])
	return id
}

// objectHeader is the "<type> <size>\x00" prefix an object id hashes.
func objectHeader(t objectType, size int64) []byte {
	b := make([]byte, 0, 32)
	b = append(b, t.String()...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, size, 10)
	return append(b, 0)
}

// packLevel is the zlib level of packed objects: none (stored blocks, as
// git writes with core.compression=0). A workspace's pack lives as long
// as one run, on the runner's disk, and CPU is what limits a runner's
// throughput: zlib's fastest level compresses source text at about
// 90 MB/s on the 2-core VM this was measured on, stored blocks at about
// 470 MB/s, and for small files the Huffman set-up of every object costs
// more than the data. The price is a pack about as large as the tree.
var packLevel = zlib.NoCompression

var zlibPool = sync.Pool{New: func() any {
	w, _ := zlib.NewWriterLevel(io.Discard, packLevel)
	return w
}}

// packedObject is one object's entry in the pack index.
type packedObject struct {
	id     objectID
	offset uint64
	crc    uint32
}

// packWriter writes a version 2 packfile of undeltified objects. Objects
// may be added from several goroutines; the number of objects must be
// known up front (the pack header carries it).
type packWriter struct {
	dir  string // objects/pack
	tmp  string
	f    *os.File
	mu   sync.Mutex
	buf  *bufio.Writer
	sum  hash.Hash // SHA-1 of everything written so far
	crc  uint32    // CRC-32 of the current object's packed bytes
	off  uint64
	want uint32
	objs []packedObject
	seen map[objectID]struct{}
	err  error // first write error; the pack is unusable after it
	done bool  // finish or abort ran
}

// newPackWriter starts a pack of count objects in packDir.
func newPackWriter(packDir string, count int) (*packWriter, error) {
	if count < 0 || int64(count) > 1<<32-1 {
		return nil, fmt.Errorf("pack: %d objects", count)
	}
	f, err := os.CreateTemp(packDir, "tmp_pack_")
	if err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	p := &packWriter{
		dir: packDir, tmp: f.Name(), f: f,
		buf:  bufio.NewWriterSize(f, 256<<10),
		sum:  sha1.New(),
		want: uint32(count),
		objs: make([]packedObject, 0, count),
		seen: make(map[objectID]struct{}, count),
	}
	var hdr [12]byte
	copy(hdr[:], "PACK")
	binary.BigEndian.PutUint32(hdr[4:], 2)
	binary.BigEndian.PutUint32(hdr[8:], p.want)
	p.write(hdr[:])
	return p, p.err
}

// write appends raw bytes to the pack, updating its checksum and the
// current object's CRC. Errors are kept in p.err. Callers hold p.mu (or
// own p exclusively).
func (p *packWriter) write(b []byte) {
	if p.err != nil {
		return
	}
	p.sum.Write(b)
	p.crc = crc32.Update(p.crc, crc32.IEEETable, b)
	if _, err := p.buf.Write(b); err != nil {
		p.err = err
	}
	p.off += uint64(len(b))
}

// Write lets a zlib stream write into the pack (p.mu held).
func (p *packWriter) Write(b []byte) (int, error) {
	p.write(b)
	if p.err != nil {
		return 0, p.err
	}
	return len(b), nil
}

// begin starts an object (p.mu held): it records its offset and writes
// its type-and-size header. It reports false if the object is already in
// the pack.
func (p *packWriter) begin(t objectType, id objectID, size int64) bool {
	if _, dup := p.seen[id]; dup {
		return false
	}
	p.seen[id] = struct{}{}
	p.objs = append(p.objs, packedObject{id: id, offset: p.off})
	p.crc = 0
	var hdr [16]byte
	n := 0
	c := byte(t)<<4 | byte(size&0x0f)
	size >>= 4
	for size > 0 {
		hdr[n] = c | 0x80
		n++
		c = byte(size & 0x7f)
		size >>= 7
	}
	hdr[n] = c
	p.write(hdr[:n+1])
	return true
}

// end finishes the current object (p.mu held).
func (p *packWriter) end() { p.objs[len(p.objs)-1].crc = p.crc }

// add packs an object held in memory. Compression happens before the
// pack is locked, so several goroutines can add objects at once.
func (p *packWriter) add(t objectType, id objectID, content []byte) error {
	var z bytes.Buffer
	z.Grow(len(content)/2 + 64)
	zw := zlibPool.Get().(*zlib.Writer)
	zw.Reset(&z)
	zw.Write(content) // a bytes.Buffer does not fail
	zw.Close()
	zlibPool.Put(zw)

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.begin(t, id, int64(len(content))) {
		p.write(z.Bytes())
		p.end()
	}
	return p.err
}

// addStream packs an object of the given size read from r, compressing it
// as it goes (the pack stays locked meanwhile: for large blobs only).
func (p *packWriter) addStream(t objectType, id objectID, size int64, r io.Reader) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.begin(t, id, size) {
		return p.err
	}
	zw := zlibPool.Get().(*zlib.Writer)
	defer zlibPool.Put(zw)
	zw.Reset(p)
	n, err := io.Copy(zw, io.LimitReader(r, size))
	if err == nil {
		err = zw.Close()
	}
	if err == nil && n != size {
		err = fmt.Errorf("%d bytes, want %d", n, size)
	}
	if err != nil {
		if p.err == nil {
			p.err = err
		}
		return p.err
	}
	p.end()
	return p.err
}

// finish writes the pack's checksum and its index, moves both to their
// final names (pack-<checksum>.pack and .idx) and returns the checksum.
func (p *packWriter) finish() (objectID, error) {
	var sum objectID
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return sum, errors.New("pack: already finished")
	}
	p.done = true
	if p.err == nil && uint32(len(p.objs)) != p.want {
		p.err = fmt.Errorf("pack: %d objects written, %d announced", len(p.objs), p.want)
	}
	p.sum.Sum(sum[:0])
	if p.err == nil {
		_, p.err = p.buf.Write(sum[:])
	}
	if p.err == nil {
		p.err = p.buf.Flush()
	}
	if p.err == nil {
		p.err = p.f.Chmod(0o444) // as git leaves its packs
	}
	if err := p.f.Close(); err != nil && p.err == nil {
		p.err = err
	}
	if p.err != nil {
		os.Remove(p.tmp)
		return sum, fmt.Errorf("pack: %w", p.err)
	}
	base := filepath.Join(p.dir, "pack-"+hex.EncodeToString(sum[:]))
	if err := writePackIndex(base+".idx", p.objs, sum); err != nil {
		os.Remove(p.tmp)
		return sum, fmt.Errorf("pack index: %w", err)
	}
	if err := os.Rename(p.tmp, base+".pack"); err != nil {
		return sum, fmt.Errorf("pack: %w", err)
	}
	return sum, nil
}

// abort removes a pack that was not finished; after finish it does
// nothing.
func (p *packWriter) abort() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	p.done = true
	p.f.Close()
	os.Remove(p.tmp)
}

// writePackIndex writes a version 2 pack index: fan-out table, sorted
// ids, CRC-32s, 31-bit offsets (with a table of 64-bit offsets for those
// beyond 2 GiB), the pack's checksum and the index's own.
func writePackIndex(path string, objs []packedObject, packSum objectID) error {
	slices.SortFunc(objs, func(a, b packedObject) int { return bytes.Compare(a.id[:], b.id[:]) })
	for i := 1; i < len(objs); i++ {
		if objs[i].id == objs[i-1].id {
			return errors.New("duplicate object in pack")
		}
	}
	size := 8 + 256*4 + len(objs)*(sha1.Size+4+4) + 2*sha1.Size
	b := make([]byte, 0, size)
	b = append(b, 0xff, 't', 'O', 'c', 0, 0, 0, 2)
	var fanout [256]uint32
	for _, o := range objs {
		fanout[o.id[0]]++
	}
	var total uint32
	for i := range fanout {
		total += fanout[i]
		b = binary.BigEndian.AppendUint32(b, total)
	}
	for _, o := range objs {
		b = append(b, o.id[:]...)
	}
	for _, o := range objs {
		b = binary.BigEndian.AppendUint32(b, o.crc)
	}
	var large []uint64
	for _, o := range objs {
		if o.offset < 1<<31 {
			b = binary.BigEndian.AppendUint32(b, uint32(o.offset))
			continue
		}
		b = binary.BigEndian.AppendUint32(b, 1<<31|uint32(len(large)))
		large = append(large, o.offset)
	}
	for _, off := range large {
		b = binary.BigEndian.AppendUint64(b, off)
	}
	b = append(b, packSum[:]...)
	idxSum := sha1.Sum(b)
	b = append(b, idxSum[:]...)
	return os.WriteFile(path, b, 0o444)
}
