package workspace

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"unsafe"
)

// statKey is what a file's lstat says about it. Two equal keys mean the
// file was not modified in between, with the racy-timestamp caveat that
// cacheable handles: ctime cannot be set by a user, and editors that
// replace files change the inode.
type statKey struct {
	size  int64
	mtime int64 // ns
	ctime int64 // ns
	ino   uint64
	mode  uint32
}

// The hash cache maps paths to the digests of their content, keyed by
// stat data, so a warm capture reads only the files that changed. It lives
// in the repository's git directory (warrant/hashcache), so it is never
// part of the work tree and never shipped.
//
// File format: a header line "warrant-hashcache-v1 <oidlen> <deny>\n",
// where deny fingerprints the deny patterns the files passed, then one
// record per file, sorted by path: u16 path length, path, then
// little-endian i64 size, i64 mtime, i64 ctime, u64 inode, u32 mode, the
// 32-byte sha256 and the oidlen-byte git blob id of the content; then a
// CRC-32C of everything before it. A file that does not parse is ignored
// (the capture then reads every file).
const hashCacheHeader = "warrant-hashcache-v1"

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func hashCachePath(gitDir string) string { return filepath.Join(gitDir, "warrant", "hashcache") }

const cacheFixed = 8 + 8 + 8 + 8 + 4 + 32 // bytes after the path, before the oid

// cacheReader iterates the records of a hash cache in path order without
// materializing them: a warm capture of 100k files merges them straight
// into its candidates.
type cacheReader struct {
	buf    []byte // the file's bytes, which all views
	all    string // the records, as one string: paths are substrings
	off    int
	oidLen int
	denyFP string // fingerprint of the deny patterns the cached files passed
	// current record
	path string
	key  statKey
	sum  [32]byte
	oid  [32]byte
}

// readHashCache loads and checks the cache file. A missing file gives an
// empty reader and no error.
func readHashCache(path string, oidLen int) (*cacheReader, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return &cacheReader{oidLen: oidLen}, nil
		}
		return &cacheReader{oidLen: oidLen}, err
	}
	r, err := parseHashCache(data, oidLen)
	if err != nil {
		return &cacheReader{oidLen: oidLen}, fmt.Errorf("hash cache %s: %w", path, err)
	}
	return r, nil
}

// parseHashCache checks data and returns a reader of its records, which
// keeps referring to data: the caller must not modify it afterwards.
func parseHashCache(data []byte, oidLen int) (*cacheReader, error) {
	if len(data) < 4 {
		return nil, errors.New("truncated")
	}
	body, sum := data[:len(data)-4], binary.BigEndian.Uint32(data[len(data)-4:])
	if crc32.Checksum(body, crcTable) != sum {
		return nil, errors.New("checksum mismatch")
	}
	line, rest, ok := bytes.Cut(body, []byte{'\n'})
	prefix := fmt.Sprintf("%s %d ", hashCacheHeader, oidLen)
	if !ok || !bytes.HasPrefix(line, []byte(prefix)) {
		return nil, errors.New("unknown header")
	}
	// data is this reader's own (read from the file, never written to
	// again): view it as a string rather than copying megabytes.
	all := unsafe.String(unsafe.SliceData(rest), len(rest))
	return &cacheReader{buf: data, all: all, oidLen: oidLen, denyFP: string(line[len(prefix):])}, nil
}

// release ends the reader (next reports no more records) and hands its
// buffer over for reuse as scratch memory (empty, nil if there is none):
// once the records are merged into the candidates, which copy what they
// keep, nothing refers to those bytes, and reusing them spares a large
// capture megabytes of fresh memory.
func (r *cacheReader) release() []byte {
	b := r.buf[:0:len(r.buf)]
	r.buf, r.all, r.off, r.path = nil, "", 0, ""
	return b
}

var errCacheRecord = errors.New("malformed hash cache record")

// next moves to the next record. It returns false at the end, or with an
// error when the rest of the file cannot be trusted.
func (r *cacheReader) next() (bool, error) {
	s := r.all
	if r.off >= len(s) {
		return false, nil
	}
	if len(s)-r.off < 2 {
		return false, errCacheRecord
	}
	n := int(uint16(s[r.off]) | uint16(s[r.off+1])<<8)
	off := r.off + 2
	if n == 0 || len(s)-off < n+cacheFixed+r.oidLen {
		return false, errCacheRecord
	}
	path := s[off : off+n]
	if path <= r.path && r.path != "" {
		return false, errors.New("hash cache records out of order")
	}
	off += n
	le := func(i int) uint64 {
		b := s[off+i : off+i+8]
		return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
			uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
	}
	r.path = path
	r.key.size = int64(le(0))
	r.key.mtime = int64(le(8))
	r.key.ctime = int64(le(16))
	r.key.ino = le(24)
	m := s[off+32 : off+36]
	r.key.mode = uint32(m[0]) | uint32(m[1])<<8 | uint32(m[2])<<16 | uint32(m[3])<<24
	copy(r.sum[:], s[off+36:off+68])
	copy(r.oid[:r.oidLen], s[off+68:off+68+r.oidLen])
	r.off = off + cacheFixed + r.oidLen
	return true, nil
}

// appendCacheRecord appends one record in the file format.
func appendCacheRecord(b []byte, c *candidate, oidLen int) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(len(c.path)))
	b = append(b, c.path...)
	b = binary.LittleEndian.AppendUint64(b, uint64(c.key.size))
	b = binary.LittleEndian.AppendUint64(b, uint64(c.key.mtime))
	b = binary.LittleEndian.AppendUint64(b, uint64(c.key.ctime))
	b = binary.LittleEndian.AppendUint64(b, c.key.ino)
	b = binary.LittleEndian.AppendUint32(b, c.key.mode)
	b = append(b, c.sum[:]...)
	return append(b, c.oid[:oidLen]...)
}

// writeHashCache writes the cache file for the cacheable files (sorted by
// path) to w, in pieces: a capture of a large tree never holds the whole
// encoding in memory.
func writeHashCache(w io.Writer, files []candidate, oidLen int, limit int64, denyFP string) error {
	var crc uint32
	buf := make([]byte, 0, 64<<10)
	flush := func() error {
		crc = crc32.Update(crc, crcTable, buf)
		_, err := w.Write(buf)
		buf = buf[:0]
		return err
	}
	buf = fmt.Appendf(buf, "%s %d %s\n", hashCacheHeader, oidLen, denyFP)
	for i := range files {
		f := &files[i]
		if !cacheable(f, limit) {
			continue
		}
		if len(buf)+2+len(f.path)+cacheFixed+oidLen > cap(buf) {
			if err := flush(); err != nil {
				return err
			}
		}
		buf = appendCacheRecord(buf, f, oidLen)
	}
	if err := flush(); err != nil {
		return err
	}
	_, err := w.Write(binary.BigEndian.AppendUint32(buf, crc))
	return err
}

// cacheable reports whether a file's digests may be remembered: its
// timestamps must be safely older than the scan. A file modified within
// the clock granularity of the scan could change again without changing
// its stat data ("racy git"), so it is read again next time instead.
func cacheable(f *candidate, limit int64) bool {
	return f.key.mtime < limit && f.key.ctime < limit && len(f.path) <= 0xffff
}

// saveHashCache writes the cache atomically (temporary file, rename).
func saveHashCache(path string, data []byte) error {
	return saveAtomic(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// saveAtomic writes a file in the cache directory with write, atomically
// (temporary file, rename).
func saveAtomic(path string, write func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".hashcache-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := write(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
