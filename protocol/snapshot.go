package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// SnapshotVersion names the workspace snapshot format this implementation
// ships instead of the original's git bundle. A manifest whose Format is
// SnapshotVersion names a snapshot blob in BundleHash.
//
// A snapshot is a text blob, one header line then one line per file,
// sorted by path (byte order), paths unique:
//
//	warrant.snapshot.v1
//	<mode> <sha256 hex of content> <size in bytes>\t<path>
//
// mode is 100644 (file), 100755 (executable) or 120000 (symlink, whose
// content is the link target). Paths are relative, slash-separated and
// clean (see ValidatePath). The same tree always gives the same bytes, so
// the same hash.
const SnapshotVersion = "warrant.snapshot.v1"

// File modes in a snapshot, as git spells them.
const (
	ModeFile       = "100644"
	ModeExecutable = "100755"
	ModeSymlink    = "120000"
)

// MaxSnapshotEntries caps the number of files in one snapshot.
const MaxSnapshotEntries = 2_000_000

// MaxPathBytes caps the length of one workspace path.
const MaxPathBytes = 4096

// ErrBadPath is wrapped by every error about an unsafe or malformed path.
var ErrBadPath = errors.New("unsafe workspace path")

// SnapshotEntry is one file of a snapshot.
type SnapshotEntry struct {
	Path string
	Mode string
	Hash string // sha256 hex of the content (of the target, for a symlink)
	Size int64
}

// Snapshot is a parsed warrant.snapshot.v1 blob.
type Snapshot struct {
	Entries []SnapshotEntry
}

// ValidatePath checks that p is a safe, clean, relative, slash-separated
// workspace path: not empty, not absolute, no "." or ".." or empty
// components, no backslash, NUL, newline or tab, not inside ".git", at most
// MaxPathBytes long.
func ValidatePath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("%w: empty path", ErrBadPath)
	case len(p) > MaxPathBytes:
		return fmt.Errorf("%w: path longer than %d bytes", ErrBadPath, MaxPathBytes)
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("%w: %q is absolute", ErrBadPath, p)
	case strings.ContainsAny(p, "\\\x00\n\r\t"):
		return fmt.Errorf("%w: %q contains a backslash or control character", ErrBadPath, p)
	}
	for _, part := range strings.Split(p, "/") {
		switch {
		case part == "" || part == ".":
			return fmt.Errorf("%w: %q is not clean", ErrBadPath, p)
		case part == "..":
			return fmt.Errorf("%w: %q climbs out of the workspace", ErrBadPath, p)
		case strings.EqualFold(part, ".git"):
			return fmt.Errorf("%w: %q is inside a .git directory", ErrBadPath, p)
		}
	}
	return nil
}

// Encode renders the snapshot in its canonical text form. Entries must be
// valid, sorted and unique.
func (s *Snapshot) Encode() ([]byte, error) {
	var b bytes.Buffer
	b.Grow(len(SnapshotVersion) + 1 + len(s.Entries)*96)
	b.WriteString(SnapshotVersion)
	b.WriteByte('\n')
	for i, e := range s.Entries {
		if err := e.validate(); err != nil {
			return nil, fmt.Errorf("snapshot entry %d: %w", i, err)
		}
		if i > 0 && s.Entries[i-1].Path >= e.Path {
			return nil, fmt.Errorf("snapshot entry %d: %q is not after %q: entries must be sorted and unique", i, e.Path, s.Entries[i-1].Path)
		}
		b.WriteString(e.Mode)
		b.WriteByte(' ')
		b.WriteString(e.Hash)
		b.WriteByte(' ')
		b.WriteString(strconv.FormatInt(e.Size, 10))
		b.WriteByte('\t')
		b.WriteString(e.Path)
		b.WriteByte('\n')
	}
	return b.Bytes(), nil
}

func (e SnapshotEntry) validate() error {
	if err := ValidatePath(e.Path); err != nil {
		return err
	}
	if e.Mode != ModeFile && e.Mode != ModeExecutable && e.Mode != ModeSymlink {
		return fmt.Errorf("%q: mode %q is not 100644, 100755 or 120000", e.Path, e.Mode)
	}
	if !IsHash(e.Hash) {
		return fmt.Errorf("%q: hash is not 64 lowercase hex characters", e.Path)
	}
	if e.Size < 0 {
		return fmt.Errorf("%q: negative size", e.Path)
	}
	return nil
}

// ParseSnapshot strictly parses a snapshot blob: header, line format,
// every path safe, entries sorted and unique.
func ParseSnapshot(data []byte) (*Snapshot, error) {
	header, rest, ok := bytes.Cut(data, []byte{'\n'})
	if !ok || string(header) != SnapshotVersion {
		return nil, fmt.Errorf("snapshot: first line must be %q", SnapshotVersion)
	}
	n := bytes.Count(rest, []byte{'\n'})
	if n > MaxSnapshotEntries {
		return nil, fmt.Errorf("snapshot: %d entries exceeds the limit of %d", n, MaxSnapshotEntries)
	}
	s := &Snapshot{Entries: make([]SnapshotEntry, 0, n)}
	files := make(map[string]struct{}, n)
	for line := 2; len(rest) > 0; line++ {
		l, tail, ok := bytes.Cut(rest, []byte{'\n'})
		if !ok {
			return nil, fmt.Errorf("snapshot line %d: missing final newline", line)
		}
		rest = tail
		meta, path, ok := bytes.Cut(l, []byte{'\t'})
		if !ok {
			return nil, fmt.Errorf("snapshot line %d: want \"<mode> <hash> <size>\\t<path>\"", line)
		}
		fields := strings.Split(string(meta), " ")
		if len(fields) != 3 {
			return nil, fmt.Errorf("snapshot line %d: want \"<mode> <hash> <size>\\t<path>\"", line)
		}
		size, err := strconv.ParseInt(fields[2], 10, 64)
		if err != nil || strconv.FormatInt(size, 10) != fields[2] {
			return nil, fmt.Errorf("snapshot line %d: size %q is not a canonical decimal integer", line, fields[2])
		}
		e := SnapshotEntry{Path: string(path), Mode: fields[0], Hash: fields[1], Size: size}
		if err := e.validate(); err != nil {
			return nil, fmt.Errorf("snapshot line %d: %w", line, err)
		}
		if k := len(s.Entries); k > 0 && s.Entries[k-1].Path >= e.Path {
			return nil, fmt.Errorf("snapshot line %d: %q is not after %q: entries must be sorted and unique", line, e.Path, s.Entries[k-1].Path)
		}
		for i := strings.IndexByte(e.Path, '/'); i >= 0; {
			if _, isFile := files[e.Path[:i]]; isFile {
				return nil, fmt.Errorf("snapshot line %d: %w: %q lies under %q, which is a file", line, ErrBadPath, e.Path, e.Path[:i])
			}
			next := strings.IndexByte(e.Path[i+1:], '/')
			if next < 0 {
				break
			}
			i += 1 + next
		}
		files[e.Path] = struct{}{}
		s.Entries = append(s.Entries, e)
	}
	return s, nil
}
