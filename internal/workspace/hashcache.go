package workspace

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
)

// statKey is what a file's lstat says about it. Two equal keys mean the
// file was not modified in between, with the racy-timestamp caveat that
// hashCache.save handles: ctime cannot be set by a user, and editors that
// replace files change the inode.
type statKey struct {
	size  int64
	mtime int64 // ns
	ctime int64 // ns
	ino   uint64
	mode  uint32
}

// cacheEntry is one remembered file: its stat key and content digests.
type cacheEntry struct {
	path string
	key  statKey
	sum  [32]byte // sha256 of the content
	oid  [32]byte // git blob id of the content (first oidLen bytes)
}

// hashCache maps paths to the digests of their content, keyed by stat
// data, so a warm capture reads only the files that changed. It lives in
// the repository's git directory (warrant/hashcache), so it is never part
// of the work tree and never shipped.
//
// File format: a header line "warrant-hashcache-v1 <oidlen>\n", then per
// entry uvarint(len path), path, varint size, varint mtime, varint ctime,
// uvarint inode, uvarint mode, 32-byte sha256, oidlen-byte oid; then a
// CRC-32C of everything before it. Entries are sorted by path. A file that
// does not parse is ignored (the capture hashes everything).
type hashCache struct {
	entries []cacheEntry // sorted by path
}

const hashCacheHeader = "warrant-hashcache-v1"

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func hashCachePath(gitDir string) string { return filepath.Join(gitDir, "warrant", "hashcache") }

// loadHashCache reads the cache; a missing or damaged file gives an empty
// cache and the reason.
func loadHashCache(path string, oidLen int) (*hashCache, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return &hashCache{}, nil
		}
		return &hashCache{}, err
	}
	c, err := parseHashCache(data, oidLen)
	if err != nil {
		return &hashCache{}, fmt.Errorf("hash cache %s: %w", path, err)
	}
	return c, nil
}

func parseHashCache(data []byte, oidLen int) (*hashCache, error) {
	if len(data) < 4 {
		return nil, errors.New("truncated")
	}
	body, sum := data[:len(data)-4], binary.BigEndian.Uint32(data[len(data)-4:])
	if crc32.Checksum(body, crcTable) != sum {
		return nil, errors.New("checksum mismatch")
	}
	header := fmt.Sprintf("%s %d\n", hashCacheHeader, oidLen)
	if !bytes.HasPrefix(body, []byte(header)) {
		return nil, errors.New("unknown header")
	}
	body = body[len(header):]
	// One string for all paths: entries slice into it without copying.
	all := string(body)
	c := &hashCache{entries: make([]cacheEntry, 0, len(body)/100)}
	off := 0
	bad := errors.New("malformed entry")
	for off < len(body) {
		var e cacheEntry
		n, k := binary.Uvarint(body[off:])
		if k <= 0 || n > uint64(len(body)-off-k) {
			return nil, bad
		}
		off += k
		e.path = all[off : off+int(n)]
		off += int(n)
		var v int64
		var u uint64
		if v, k = binary.Varint(body[off:]); k <= 0 {
			return nil, bad
		}
		e.key.size, off = v, off+k
		if v, k = binary.Varint(body[off:]); k <= 0 {
			return nil, bad
		}
		e.key.mtime, off = v, off+k
		if v, k = binary.Varint(body[off:]); k <= 0 {
			return nil, bad
		}
		e.key.ctime, off = v, off+k
		if u, k = binary.Uvarint(body[off:]); k <= 0 {
			return nil, bad
		}
		e.key.ino, off = u, off+k
		if u, k = binary.Uvarint(body[off:]); k <= 0 || u > 1<<32-1 {
			return nil, bad
		}
		e.key.mode, off = uint32(u), off+k
		if len(body)-off < 32+oidLen {
			return nil, bad
		}
		copy(e.sum[:], body[off:off+32])
		copy(e.oid[:oidLen], body[off+32:off+32+oidLen])
		off += 32 + oidLen
		if len(c.entries) > 0 && c.entries[len(c.entries)-1].path >= e.path {
			return nil, errors.New("entries out of order")
		}
		c.entries = append(c.entries, e)
	}
	return c, nil
}

// encodeHashCache renders sorted entries in the file format.
func encodeHashCache(entries []cacheEntry, oidLen int) []byte {
	b := make([]byte, 0, 64+len(entries)*(48+32+oidLen))
	b = fmt.Appendf(b, "%s %d\n", hashCacheHeader, oidLen)
	for i := range entries {
		e := &entries[i]
		b = binary.AppendUvarint(b, uint64(len(e.path)))
		b = append(b, e.path...)
		b = binary.AppendVarint(b, e.key.size)
		b = binary.AppendVarint(b, e.key.mtime)
		b = binary.AppendVarint(b, e.key.ctime)
		b = binary.AppendUvarint(b, e.key.ino)
		b = binary.AppendUvarint(b, uint64(e.key.mode))
		b = append(b, e.sum[:]...)
		b = append(b, e.oid[:oidLen]...)
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
}

// saveHashCache writes the cache atomically (temporary file, rename).
func saveHashCache(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".hashcache-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
