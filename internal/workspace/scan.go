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
	"sync"
	"sync/atomic"
	"syscall"

	"warrant.dev/warrant/protocol"
)

// fileState says what a scan found at a candidate path.
type fileState uint8

const (
	stateUnscanned fileState = iota
	statePresent             // a regular file or a symlink: captured
	stateMissing             // nothing there (or a directory): deleted
	stateSpecial             // a FIFO, socket or device: never read
)

// candidate is one path the capture considers: a tracked file, or an
// allowlisted untracked one.
type candidate struct {
	path      string
	tracked   bool
	indexOID  [32]byte // the index's blob id, for tracked files
	indexMode string   // the index's mode, for tracked files
	cached    *cacheEntry

	state    fileState
	mode     string // protocol.ModeFile, ModeExecutable or ModeSymlink
	key      statKey
	sum      [32]byte // sha256 of the content
	oid      [32]byte // git blob id of the content
	hashed   bool     // content was read (not taken from the cache)
	retained bool     // content holds the bytes for upload
	content  []byte
}

func (c *candidate) size() int64 { return c.key.size }

// scanner hashes candidates. One scanner per goroutine.
type scanner struct {
	root      string // absolute, with a trailing separator
	oidLen    int
	retain    *atomic.Int64 // bytes of content left to retain
	maxRetain int64         // largest single file retained

	buf    []byte
	slab   []byte
	sha    hash.Hash
	oidH   hash.Hash
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

func newScanner(root string, oidLen int, retain *atomic.Int64) *scanner {
	s := &scanner{
		root:      root,
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

// scan fills in c's state and digests. With a cache entry it first
// lstat()s the path and reuses the entry when the stat key still matches;
// otherwise it opens the file without following symlinks and reads it.
func (s *scanner) scan(c *candidate) error {
	abs := s.root + c.path
	if c.cached != nil {
		var st syscall.Stat_t
		if err := lstat(abs, &st); err != nil {
			return s.missing(c, err)
		}
		key := statKeyOf(&st)
		if key == c.cached.key {
			c.key, c.sum, c.oid = key, c.cached.sum, c.cached.oid
			c.state, c.mode = statePresent, modeOf(st.Mode)
			if c.mode == "" {
				c.state = stateSpecial
			} else if c.mode == protocol.ModeSymlink {
				// Symlinks are tiny: keep the target so upload never
				// needs to read it again.
				return s.readSymlink(c, abs, key)
			}
			return nil
		}
	}
	fd, err := openNoFollow(abs)
	if err != nil {
		switch {
		case errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.EMLINK):
			var st syscall.Stat_t
			if err := lstat(abs, &st); err != nil {
				return s.missing(c, err)
			}
			if st.Mode&syscall.S_IFMT != syscall.S_IFLNK {
				return fmt.Errorf("%s: changed while being captured", c.path)
			}
			return s.readSymlink(c, abs, statKeyOf(&st))
		case errors.Is(err, syscall.ENXIO), errors.Is(err, syscall.EOPNOTSUPP):
			c.state = stateSpecial // a socket or a FIFO without a writer
			return nil
		}
		return s.missing(c, err)
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := fstat(fd, &st); err != nil {
		return fmt.Errorf("%s: %w", c.path, err)
	}
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
	case syscall.S_IFDIR:
		c.state = stateMissing
		return nil
	default:
		c.state = stateSpecial
		return nil
	}
	key := statKeyOf(&st)
	c.key, c.mode, c.state, c.hashed = key, modeOf(st.Mode), statePresent, true
	return s.readFile(c, fd, key.size)
}

func (s *scanner) missing(c *candidate, err error) error {
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR) {
		c.state = stateMissing
		return nil
	}
	return fmt.Errorf("%s: %w", c.path, err)
}

func (s *scanner) readSymlink(c *candidate, abs string, key statKey) error {
	for {
		n, err := syscall.Readlink(abs, s.link)
		if err != nil {
			return s.missing(c, err)
		}
		if n < len(s.link) {
			target := s.link[:n]
			c.hashed = c.cached == nil || key != c.cached.key
			c.key, c.mode, c.state = key, protocol.ModeSymlink, statePresent
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

func modeOf(m uint32) string {
	switch m & syscall.S_IFMT {
	case syscall.S_IFREG:
		if m&0o100 != 0 {
			return protocol.ModeExecutable
		}
		return protocol.ModeFile
	case syscall.S_IFLNK:
		return protocol.ModeSymlink
	}
	return ""
}

func lstat(path string, st *syscall.Stat_t) error {
	for {
		err := syscall.Lstat(path, st)
		if err != syscall.EINTR {
			return err
		}
	}
}

func fstat(fd int, st *syscall.Stat_t) error {
	for {
		err := syscall.Fstat(fd, st)
		if err != syscall.EINTR {
			return err
		}
	}
}

// openNoFollow opens path for reading without following a final symlink
// and without blocking on a FIFO.
func openNoFollow(path string) (int, error) {
	for {
		fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
		if err != syscall.EINTR {
			return fd, err
		}
	}
}

func readFull(fd int, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := syscall.Read(fd, b[n:])
		if err == syscall.EINTR || err == syscall.EAGAIN {
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

// scanAll scans candidates with workers goroutines.
func scanAll(cands []candidate, root string, oidLen, workers int, retain *atomic.Int64, stop func() error) error {
	if workers < 1 {
		workers = 1
	}
	const chunk = 128
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	var failed atomic.Bool
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := newScanner(root, oidLen, retain)
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
	fd, err := openNoFollow(abs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (capture again)", rel, err)
	}
	f := os.NewFile(uintptr(fd), abs)
	var st syscall.Stat_t
	if err := fstat(fd, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
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
