package workspace

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"warrant.dev/warrant/protocol"
)

// DirStore keeps blobs as files named by their hash under Dir
// (Dir/ab/abcdef...). It is a BlobSink and a BlobSource: a local blob
// cache, an offline export, or a sink for benchmarks. Put verifies every
// blob's hash and size and writes it atomically; a blob already present
// is not written again.
type DirStore struct {
	Dir string
}

func (s DirStore) path(hash string) (string, error) {
	if !protocol.IsHash(hash) {
		return "", fmt.Errorf("blob %q: not a sha256 hex hash", hash)
	}
	return filepath.Join(s.Dir, hash[:2], hash), nil
}

// Missing implements BlobSink.
func (s DirStore) Missing(ctx context.Context, hashes []string) ([]string, error) {
	var out []string
	for _, h := range hashes {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		p, err := s.path(h)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			out = append(out, h)
		} else if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Put implements BlobSink.
func (s DirStore) Put(ctx context.Context, blobs []Blob) error {
	for _, b := range blobs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.put(b); err != nil {
			return err
		}
	}
	return nil
}

func (s DirStore) put(b Blob) error {
	p, err := s.path(b.Hash)
	if err != nil {
		return err
	}
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	rc, err := b.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(filepath.Dir(p), ".partial-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(rc, b.Size+1))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("blob %s: %w", b.Hash, err)
	}
	if n != b.Size || hex.EncodeToString(h.Sum(nil)) != b.Hash {
		return fmt.Errorf("blob %s: %w", b.Hash, ErrBlobMismatch)
	}
	return os.Rename(tmp.Name(), p)
}

// Get implements BlobSource.
func (s DirStore) Get(ctx context.Context, hash string) (io.ReadCloser, error) {
	p, err := s.path(hash)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", hash, ErrBlobNotFound)
	}
	return f, err
}
