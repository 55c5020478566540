package workspace

import (
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"warrant.dev/warrant/protocol"
)

// fileState says what a scan found at a candidate path.
type fileState uint8

const (
	stateUnscanned fileState = iota
	statePresent             // a regular file or a symlink: captured
	stateMissing             // nothing there, a directory, or a path through a symlink: deleted
	stateSpecial             // a FIFO, socket or device: never read
)

// fileMode is a snapshot mode, stored small.
type fileMode uint8

const (
	modeNone fileMode = iota
	modeFile
	modeExec
	modeLink
)

func (m fileMode) String() string {
	switch m {
	case modeFile:
		return protocol.ModeFile
	case modeExec:
		return protocol.ModeExecutable
	case modeLink:
		return protocol.ModeSymlink
	}
	return ""
}

func parseMode(s string) fileMode {
	switch s {
	case protocol.ModeFile:
		return modeFile
	case protocol.ModeExecutable:
		return modeExec
	case protocol.ModeSymlink:
		return modeLink
	}
	return modeNone
}

// candidate is one path the capture considers: a tracked file, or an
// allowlisted untracked one. Before the scan, key, sum and oid hold the
// hash cache's record when cached is set.
type candidate struct {
	path     string
	content  []byte // the bytes, when retained for upload
	key      statKey
	sum      [32]byte // sha256 of the content
	oid      [32]byte // git blob id of the content
	indexOID [32]byte // the index's blob id, for tracked files
	hexOff   int      // offset of the hex sha256 in the snapshot text

	indexMode fileMode
	mode      fileMode
	state     fileState
	tracked   bool
	cached    bool // key, sum and oid came from the hash cache
	hashed    bool // the content was read (not taken from the cache)
	retained  bool // content holds the bytes
}

func (c *candidate) size() int64 { return c.key.size }

// scanner hashes candidates. One scanner per goroutine.
type scanner struct {
	dirs      dirStack
	oidLen    int
	retain    *atomic.Int64 // bytes of content left to retain
	maxRetain int64         // largest single file retained

	buf    []byte
	slab   []byte
	oidH   hash.Hash
	sha    hash.Hash
	header []byte
	link   []byte
}

const (
	// DefaultRetainBytes is how much small-file content a capture keeps in
	// memory so Upload need not read those files again.
	DefaultRetainBytes = 64 << 20
	maxRetainFile      = 256 << 10
	scanBufSize        = 64 << 10
	slabSize           = 1 << 20
)

func newScanner(rootFD, oidLen int, retain *atomic.Int64) *scanner {
	s := &scanner{
		dirs:      dirStack{root: rootFD},
		oidLen:    oidLen,
		retain:    retain,
		maxRetain: maxRetainFile,
		buf:       make([]byte, scanBufSize),
		sha:       sha256.New(),
		link:      make([]byte, 4096),
	}
	if oidLen == sha1.Size {
		s.oidH = sha1.New()
	} else {
		s.oidH = sha256.New()
	}
	return s
}

// dirStack holds open descriptors for the directories leading to the
// current one, each opened relative to its parent with O_NOFOLLOW: a path
// whose parent is (now) a symlink is never followed out of the tree, and
// each file is looked up by its base name alone.
type dirStack struct {
	root  int
	comps []string
	fds   []int
	cur   string // the directory the stack describes
	err   error  // why cur could not be opened completely
	valid bool
}

// dirFor returns a descriptor of p's directory and p's base name.
func (d *dirStack) dirFor(p string) (int, string, error) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return d.root, p, nil
	}
	dir, base := p[:i], p[i+1:]
	if d.valid && dir == d.cur {
		if d.err != nil {
			return -1, base, d.err
		}
		return d.fds[len(d.fds)-1], base, nil
	}
	comps := strings.Split(dir, "/")
	k := 0
	for k < len(comps) && k < len(d.fds) && comps[k] == d.comps[k] {
		k++
	}
	for _, fd := range d.fds[k:] {
		unix.Close(fd)
	}
	d.fds, d.comps = d.fds[:k], d.comps[:k]
	d.cur, d.valid, d.err = dir, true, nil
	for _, c := range comps[k:] {
		parent := d.root
		if len(d.fds) > 0 {
			parent = d.fds[len(d.fds)-1]
		}
		fd, err := openat(parent, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
		if err != nil {
			d.err = err
			return -1, base, err
		}
		d.fds = append(d.fds, fd)
		d.comps = append(d.comps, c)
	}
	return d.fds[len(d.fds)-1], base, nil
}

func (d *dirStack) close() {
	for _, fd := range d.fds {
		unix.Close(fd)
	}
	d.fds, d.comps, d.valid = nil, nil, false
}

// scan fills in c's state and digests. A cached file whose stat key still
// matches keeps the cached digests; any other regular file is read.
func (s *scanner) scan(c *candidate) error {
	dirfd, base, err := s.dirs.dirFor(c.path)
	if err != nil {
		return s.missing(c, err)
	}
	var st unix.Stat_t
	if c.cached {
		// Warm path: one fstatat, and nothing more if the file is unchanged.
		if err := fstatat(dirfd, base, &st); err != nil {
			return s.missing(c, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFREG && statKeyOf(&st) == c.key {
			c.state, c.mode = statePresent, regularMode(uint32(st.Mode))
			return nil
		}
	}
	// Cold path: open without following a symlink and without blocking on
	// a FIFO, then fstat the descriptor (no second path lookup).
	fd, err := openat(dirfd, base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC)
	if err != nil {
		switch {
		case errors.Is(err, unix.ELOOP):
			if err := fstatat(dirfd, base, &st); err != nil {
				return s.missing(c, err)
			}
			if st.Mode&unix.S_IFMT != unix.S_IFLNK {
				return fmt.Errorf("%s: changed while being captured", c.path)
			}
			return s.readSymlink(c, dirfd, base, statKeyOf(&st))
		case errors.Is(err, unix.ENXIO), errors.Is(err, unix.EOPNOTSUPP):
			c.state = stateSpecial // a socket
			return nil
		}
		return s.missing(c, err)
	}
	defer unix.Close(fd)
	if err := fstatFD(fd, &st); err != nil {
		return fmt.Errorf("%s: %w", c.path, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFDIR:
		c.state = stateMissing
		return nil
	default:
		c.state = stateSpecial
		return nil
	}
	key := statKeyOf(&st)
	c.key, c.mode, c.state, c.hashed = key, regularMode(uint32(st.Mode)), statePresent, true
	return s.readFile(c, fd, key.size)
}

func regularMode(m uint32) fileMode {
	if m&0o100 != 0 {
		return modeExec
	}
	return modeFile
}

func (s *scanner) missing(c *candidate, err error) error {
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.ELOOP):
		// Gone, or a parent is now a file or a symlink (which git, too,
		// treats as the file being deleted).
		c.state = stateMissing
		return nil
	}
	return fmt.Errorf("%s: %w", c.path, err)
}

func (s *scanner) readSymlink(c *candidate, dirfd int, base string, key statKey) error {
	for {
		n, err := readlinkat(dirfd, base, s.link)
		if err != nil {
			return s.missing(c, err)
		}
		if n < len(s.link) {
			target := s.link[:n]
			c.hashed = !c.cached || key != c.key
			c.key, c.mode, c.state = key, modeLink, statePresent
			c.key.size = int64(n)
			s.digest(c, target) // always: the target may have changed since the lstat
			c.content = s.keep(target)
			c.retained = true
			return nil
		}
		s.link = make([]byte, 2*len(s.link))
	}
}

// readFile reads an open regular file of the given size and digests it.
func (s *scanner) readFile(c *candidate, fd int, size int64) error {
	if size <= int64(len(s.buf)) {
		n, err := readFull(fd, s.buf[:size])
		if err != nil {
			return fmt.Errorf("%s: %w", c.path, err)
		}
		data := s.buf[:n]
		c.key.size = int64(n)
		s.digest(c, data)
		if int64(n) <= s.maxRetain && s.retain.Add(-int64(n)) >= 0 {
			c.content = s.keep(data)
			c.retained = true
		}
		return nil
	}
	// Large file: stream it through both digests.
	s.sha.Reset()
	s.oidH.Reset()
	s.oidH.Write(s.blobHeader(size))
	var total int64
	for total < size {
		want := min(int64(len(s.buf)), size-total)
		n, err := readFull(fd, s.buf[:want])
		s.sha.Write(s.buf[:n])
		s.oidH.Write(s.buf[:n])
		total += int64(n)
		if err != nil {
			return fmt.Errorf("%s: %w", c.path, err)
		}
		if int64(n) < want {
			return fmt.Errorf("%s: file shrank while being captured", c.path)
		}
	}
	s.sha.Sum(c.sum[:0])
	s.oidH.Sum(c.oid[:0])
	return nil
}

func (s *scanner) blobHeader(size int64) []byte {
	s.header = append(s.header[:0], "blob "...)
	s.header = strconv.AppendInt(s.header, size, 10)
	return append(s.header, 0)
}

// digest computes the sha256 and the git blob id of data.
func (s *scanner) digest(c *candidate, data []byte) {
	c.sum = sha256.Sum256(data)
	s.oidH.Reset()
	s.oidH.Write(s.blobHeader(int64(len(data))))
	s.oidH.Write(data)
	s.oidH.Sum(c.oid[:0])
}

// keep copies data into the scanner's slab.
func (s *scanner) keep(data []byte) []byte {
	if len(data) > len(s.slab) {
		s.slab = make([]byte, max(slabSize, len(data)))
	}
	out := s.slab[:len(data):len(data)]
	copy(out, data)
	s.slab = s.slab[len(data):]
	return out
}

func openat(dirfd int, name string, flags int) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, flags, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

func fstatat(dirfd int, name string, st *unix.Stat_t) error {
	for {
		err := unix.Fstatat(dirfd, name, st, unix.AT_SYMLINK_NOFOLLOW)
		if err != unix.EINTR {
			return err
		}
	}
}

func fstatFD(fd int, st *unix.Stat_t) error {
	for {
		err := unix.Fstat(fd, st)
		if err != unix.EINTR {
			return err
		}
	}
}

func readlinkat(dirfd int, name string, buf []byte) (int, error) {
	for {
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != unix.EINTR {
			return n, err
		}
	}
}

func readFull(fd int, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := unix.Read(fd, b[n:])
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, nil
		}
		n += m
	}
	return n, nil
}

// scanAll scans the candidates of the tree at root with workers
// goroutines. Workers take runs of consecutive (sorted) paths, so each
// mostly stays in one directory.
func scanAll(cands []candidate, root string, oidLen, workers int, retain *atomic.Int64, stop func() error) error {
	rootFD, err := openat(unix.AT_FDCWD, root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return fmt.Errorf("open %s: %w", root, err)
	}
	defer unix.Close(rootFD)
	workers = max(1, workers)
	const chunk = 256
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	var failed atomic.Bool
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := newScanner(rootFD, oidLen, retain)
			defer s.dirs.close()
			for !failed.Load() {
				start := int(next.Add(chunk) - chunk)
				if start >= len(cands) {
					return
				}
				if err := stop(); err != nil {
					errOnce.Do(func() { firstErr = err })
					failed.Store(true)
					return
				}
				for i := start; i < min(start+chunk, len(cands)); i++ {
					if err := s.scan(&cands[i]); err != nil {
						errOnce.Do(func() { firstErr = err })
						failed.Store(true)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// openVerified opens a captured regular file for upload and checks, as it
// is read, that it still has the captured size and sha256.
func openVerified(abs, rel string, size int64, sum [32]byte) (io.ReadCloser, error) {
	fd, err := openat(unix.AT_FDCWD, abs, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (capture again)", rel, err)
	}
	f := os.NewFile(uintptr(fd), abs)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, fmt.Errorf("%s: %w", rel, ErrChangedSinceCapture)
	}
	return &verifyingReader{r: io.LimitReader(f, size+1), c: f, h: sha256.New(), want: sum, size: size, path: rel}, nil
}

// ErrChangedSinceCapture is returned when a file's content no longer
// matches what Capture recorded by the time it is uploaded.
var ErrChangedSinceCapture = errors.New("file changed since it was captured; capture again")

type verifyingReader struct {
	r    io.Reader
	c    io.Closer
	h    hash.Hash
	want [32]byte
	size int64
	n    int64
	path string
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if err == io.EOF {
		var got [32]byte
		v.h.Sum(got[:0])
		if v.n != v.size || got != v.want {
			return n, fmt.Errorf("%s: %w", v.path, ErrChangedSinceCapture)
		}
	}
	return n, err
}

func (v *verifyingReader) Close() error { return v.c.Close() }
