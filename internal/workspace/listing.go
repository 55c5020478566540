package workspace

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// indexListing is git's view of the index that a capture needs: the
// output of `git ls-files --stage -z` and, when HEAD has a commit, of
// `git diff-index --cached --name-only -z HEAD` (the staged paths). Both
// are functions of the index file and HEAD alone, so they are cached in
// the git directory (warrant/listing), keyed by the index file's stat
// data and HEAD: a capture after edits that did not touch the index runs
// neither command.
//
// Git replaces the index by renaming a new file over it, so a rewrite
// changes its inode, ctime or size; an index whose timestamps are within
// the racy window of the moment it is cached is not cached at all, so an
// inode reused within one timestamp tick cannot pass for the old one.
//
// File format: "warrant-listing-v1\n", the index's i64 size, i64 mtime,
// i64 ctime, u64 inode (little-endian), u16 length and bytes of HEAD,
// u32 length and bytes of each output, and a CRC-32C of all of it.
type indexListing struct {
	ls     []byte
	staged []byte
}

const listingHeader = "warrant-listing-v1\n"

func listingPath(gitDir string) string { return filepath.Join(gitDir, "warrant", "listing") }

// listIndex returns the listing, from the cache when it is still valid.
// save, if not nil, writes a new cache entry; call it after the capture.
func listIndex(ctx context.Context, repo *repoInfo, useCache bool) (l indexListing, save func() error, err error) {
	var key statKey
	var st unix.Stat_t
	indexFile := filepath.Join(repo.gitDir, "index")
	haveKey := unix.Lstat(indexFile, &st) == nil
	if haveKey {
		key = statKeyOf(&st)
	}
	cachePath := listingPath(repo.gitDir)
	if useCache && haveKey {
		if b, err := os.ReadFile(cachePath); err == nil {
			if cached, ok := parseListing(b, key, repo.head); ok {
				return cached, nil, nil
			}
		}
	}
	now := time.Now()
	var wg sync.WaitGroup
	var lsErr, stagedErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		// The output is about the size of the index: size the buffer once.
		var buf bytes.Buffer
		if haveKey {
			buf.Grow(int(key.size) + 4096)
		}
		lsErr = repo.git.runTo(ctx, &buf, nil, "ls-files", "--stage", "-z")
		l.ls = buf.Bytes()
	}()
	go func() {
		defer wg.Done()
		if repo.head != "" {
			l.staged, stagedErr = repo.git.run(ctx, nil, "diff-index", "--cached", "-z", "--name-only", "--no-renames", "--ignore-submodules", repo.head)
		}
	}()
	wg.Wait()
	if err := errors.Join(lsErr, stagedErr); err != nil {
		return l, nil, err
	}
	limit := now.Add(-racyWindow).UnixNano()
	if useCache && haveKey && key.mtime < limit && key.ctime < limit {
		save = func() error { return saveHashCache(cachePath, encodeListing(key, repo.head, l)) }
	}
	return l, save, nil
}

func encodeListing(key statKey, head string, l indexListing) []byte {
	b := make([]byte, 0, len(listingHeader)+48+len(head)+len(l.ls)+len(l.staged))
	b = append(b, listingHeader...)
	b = binary.LittleEndian.AppendUint64(b, uint64(key.size))
	b = binary.LittleEndian.AppendUint64(b, uint64(key.mtime))
	b = binary.LittleEndian.AppendUint64(b, uint64(key.ctime))
	b = binary.LittleEndian.AppendUint64(b, key.ino)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(head)))
	b = append(b, head...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(l.ls)))
	b = append(b, l.ls...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(l.staged)))
	b = append(b, l.staged...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
}

// parseListing returns the cached listing if the file is intact and was
// made for this index file and HEAD.
func parseListing(b []byte, key statKey, head string) (indexListing, bool) {
	var l indexListing
	if len(b) < len(listingHeader)+4 {
		return l, false
	}
	body := b[:len(b)-4]
	if crc32.Checksum(body, crcTable) != binary.BigEndian.Uint32(b[len(b)-4:]) {
		return l, false
	}
	if !bytes.HasPrefix(body, []byte(listingHeader)) {
		return l, false
	}
	r := body[len(listingHeader):]
	if len(r) < 34 {
		return l, false
	}
	got := statKey{
		size:  int64(binary.LittleEndian.Uint64(r)),
		mtime: int64(binary.LittleEndian.Uint64(r[8:])),
		ctime: int64(binary.LittleEndian.Uint64(r[16:])),
		ino:   binary.LittleEndian.Uint64(r[24:]),
	}
	if got.size != key.size || got.mtime != key.mtime || got.ctime != key.ctime || got.ino != key.ino {
		return l, false
	}
	n := int(binary.LittleEndian.Uint16(r[32:]))
	r = r[34:]
	if len(r) < n || string(r[:n]) != head {
		return l, false
	}
	r = r[n:]
	var ok bool
	if l.ls, r, ok = lengthPrefixed(r); !ok {
		return l, false
	}
	if l.staged, r, ok = lengthPrefixed(r); !ok || len(r) != 0 {
		return l, false
	}
	return l, true
}

func lengthPrefixed(r []byte) (field, rest []byte, ok bool) {
	if len(r) < 4 {
		return nil, nil, false
	}
	n := int(binary.LittleEndian.Uint32(r))
	if len(r)-4 < n {
		return nil, nil, false
	}
	return r[4 : 4+n], r[4+n:], true
}
