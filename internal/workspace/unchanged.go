package workspace

import (
	"bytes"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path"

	"golang.org/x/sys/unix"
)

// This file is Collect's fast path: it tells, without git, that a work
// tree is exactly as Materialize left it, so a session that changed
// nothing costs no git process at all. Anything it cannot vouch for
// (a new, missing or changed entry, an unreadable baseline, any error)
// sends Collect down the git path, which is the reference.

// baseEntry is one entry of the base index as the fast path compares it.
type baseEntry struct {
	ctimeS, ctimeNs, mtimeS, mtimeNs uint32
	dev, ino, mode, uid, gid, size   uint32
	oid                              objectID
}

// baseIndex is the base index Materialize kept in the state directory:
// its entries by path, the directories they imply, and the index file's
// own modification time, which bounds the racily clean entries.
type baseIndex struct {
	entries []baseEntry
	byPath  map[string]int
	dirs    map[string]struct{}
	stampS  uint32 // the index file's mtime (seconds, truncated as in entries)
	stampNs uint32
}

// errUnreadableIndex marks a base index the fast path will not use.
var errUnreadableIndex = errors.New("base index not usable for the fast path")

// readBaseIndex parses a version 2 index without extensions, as
// writeIndex makes them, checking its trailing checksum.
func readBaseIndex(indexPath string) (*baseIndex, error) {
	f, err := os.Open(indexPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	if len(b) < 12+sha1.Size || string(b[:4]) != "DIRC" || binary.BigEndian.Uint32(b[4:]) != 2 {
		return nil, errUnreadableIndex
	}
	body, sum := b[:len(b)-sha1.Size], b[len(b)-sha1.Size:]
	if got := sha1.Sum(body); !bytes.Equal(got[:], sum) {
		return nil, errUnreadableIndex
	}
	n := int(binary.BigEndian.Uint32(b[8:]))
	if n > len(body)/62 {
		return nil, errUnreadableIndex
	}
	ix := &baseIndex{
		entries: make([]baseEntry, 0, n),
		byPath:  make(map[string]int, n),
		dirs:    map[string]struct{}{"": {}},
		stampS:  uint32(st.Mtim.Sec), stampNs: uint32(st.Mtim.Nsec),
	}
	rest := body[12:]
	prevDir := ""
	for range n {
		if len(rest) < 62 {
			return nil, errUnreadableIndex
		}
		var e baseEntry
		u := func(i int) uint32 { return binary.BigEndian.Uint32(rest[4*i:]) }
		e.ctimeS, e.ctimeNs, e.mtimeS, e.mtimeNs = u(0), u(1), u(2), u(3)
		e.dev, e.ino, e.mode, e.uid, e.gid, e.size = u(4), u(5), u(6), u(7), u(8), u(9)
		copy(e.oid[:], rest[40:60])
		flags := binary.BigEndian.Uint16(rest[60:])
		if flags&0xf000 != 0 { // assume-valid, extended or a merge stage: not ours
			return nil, errUnreadableIndex
		}
		nul := bytes.IndexByte(rest[62:], 0)
		if nul < 0 {
			return nil, errUnreadableIndex
		}
		p := string(rest[62 : 62+nul])
		entryLen := (62 + nul + 8) &^ 7 // 1 to 8 NULs pad the entry to a multiple of 8
		if entryLen > len(rest) || p == "" {
			return nil, errUnreadableIndex
		}
		rest = rest[entryLen:]
		if _, dup := ix.byPath[p]; dup {
			return nil, errUnreadableIndex
		}
		ix.byPath[p] = len(ix.entries)
		ix.entries = append(ix.entries, e)
		for d := path.Dir(p); d != "." && d != prevDir; d = path.Dir(d) {
			if _, ok := ix.dirs[d]; ok {
				break
			}
			ix.dirs[d] = struct{}{}
		}
		prevDir = path.Dir(p)
	}
	if len(rest) != 0 { // extensions: not written by writeIndex
		return nil, errUnreadableIndex
	}
	return ix, nil
}

// workTreeUnchanged reports whether the work tree at dir holds exactly
// the files of the base index, each unchanged: the same set of paths
// (the top-level .git aside), no other file, symlink or directory, and
// for every file the stat data recorded at materialization (ctime, mtime,
// device, inode, mode, owner, size). A file whose recorded mtime or ctime
// is not older than the index file itself could have been changed since
// within the same timestamp tick without its stat data showing it (git's
// "racily clean" entries): such files, and those whose size the index
// left zero for the same reason, are hashed and compared with their
// recorded blob id.
//
// An error means the answer is unknown; callers then take the git path.
func workTreeUnchanged(dir string, ix *baseIndex) (bool, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	seen := 0
	same, err := ix.walk(fd, "", &seen)
	if err != nil || !same {
		return false, err
	}
	return seen == len(ix.entries), nil
}

// walk compares the directory open at fd (whose path is rel) with the
// base index, and closes fd.
func (ix *baseIndex) walk(fd int, rel string, seen *int) (bool, error) {
	d := os.NewFile(uintptr(fd), rel)
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return false, err
	}
	for _, name := range names {
		if rel == "" && name == ".git" {
			continue
		}
		p := name
		if rel != "" {
			p = rel + "/" + name
		}
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return false, err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if _, ok := ix.dirs[p]; !ok {
				return false, nil // a new directory (possibly empty, possibly a repository)
			}
			sub, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return false, err
			}
			if same, err := ix.walk(sub, p, seen); err != nil || !same {
				return false, err
			}
			continue
		}
		i, ok := ix.byPath[p]
		if !ok {
			return false, nil
		}
		e := &ix.entries[i]
		if !e.sameStat(&st) {
			return false, nil
		}
		if e.size == 0 || ix.racy(e) {
			if same, err := e.sameContent(fd, name, &st); err != nil || !same {
				return false, err
			}
		}
		*seen++
	}
	return true, nil
}

// sameStat compares a file's lstat data with its index entry. A zero
// size in the entry is not compared (Materialize zeroes the size of
// racily clean entries, as git does); the content check decides those.
func (e *baseEntry) sameStat(st *unix.Stat_t) bool {
	var mode uint32
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		mode = 0o100644
		if st.Mode&0o100 != 0 {
			mode = 0o100755
		}
	case unix.S_IFLNK:
		mode = 0o120000
	default:
		return false
	}
	return mode == e.mode &&
		uint32(st.Ctim.Sec) == e.ctimeS && uint32(st.Ctim.Nsec) == e.ctimeNs &&
		uint32(st.Mtim.Sec) == e.mtimeS && uint32(st.Mtim.Nsec) == e.mtimeNs &&
		uint32(st.Dev) == e.dev && uint32(st.Ino) == e.ino &&
		st.Uid == e.uid && st.Gid == e.gid &&
		(e.size == 0 || uint32(st.Size) == e.size)
}

// racy reports whether an entry's mtime or ctime is not older than the
// index: a change in the same timestamp tick could then leave its stat
// data as recorded.
func (ix *baseIndex) racy(e *baseEntry) bool {
	stamp := uint64(ix.stampS)<<32 | uint64(ix.stampNs)
	return uint64(e.mtimeS)<<32|uint64(e.mtimeNs) >= stamp || uint64(e.ctimeS)<<32|uint64(e.ctimeNs) >= stamp
}

// sameContent hashes the file or symlink name in the directory fd as a
// git blob and compares it with the entry's id.
func (e *baseEntry) sameContent(fd int, name string, st *unix.Stat_t) (bool, error) {
	h := sha1.New()
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		buf := make([]byte, st.Size+1)
		n, err := unix.Readlinkat(fd, name, buf)
		if err != nil {
			return false, err
		}
		if int64(n) != st.Size {
			return false, nil
		}
		h.Write(objectHeader(objBlob, int64(n)))
		h.Write(buf[:n])
	} else {
		ffd, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return false, err
		}
		f := os.NewFile(uintptr(ffd), name)
		defer f.Close()
		h.Write(objectHeader(objBlob, st.Size))
		n, err := io.Copy(h, io.LimitReader(f, st.Size+1))
		if err != nil {
			return false, err
		}
		if n != st.Size {
			return false, nil
		}
	}
	var id objectID
	h.Sum(id[:0])
	return id == e.oid, nil
}
