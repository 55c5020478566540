// Package blobfs is the file-system BlobStore: content-addressed blobs
// under DIR/ab/cdef… (the first two hex characters of the SHA-256 name a
// directory). Writes go to a temporary file in DIR/tmp, are hashed while
// streaming, fsynced and renamed into place, so a blob file is either
// absent or complete and correct.
package blobfs

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
	"syscall"

	"warrant.dev/warrant/internal/store"
	"warrant.dev/warrant/protocol"
)

// Store keeps blobs in a directory.
type Store struct {
	dir string
}

var _ store.BlobStore = (*Store)(nil)

// Open returns the blob store rooted at dir, creating it (0700) if needed.
// Leftover temporary files of an interrupted write are removed.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("blob store %s: %w", dir, err)
	}
	tmps, _ := os.ReadDir(filepath.Join(dir, "tmp"))
	for _, t := range tmps {
		_ = os.Remove(filepath.Join(dir, "tmp", t.Name()))
	}
	return &Store{dir: dir}, nil
}

// Dir returns the root directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path(hash string) (string, error) {
	if !protocol.IsHash(hash) {
		return "", fmt.Errorf("blob name %q is not a sha256 hex hash: %w", hash, store.ErrNotFound)
	}
	return filepath.Join(s.dir, hash[:2], hash[2:]), nil
}

// Put stores r's bytes under hash, verifying the hash while streaming. A
// write refused because the disk is full is marked store.ErrStorageFull.
func (s *Store) Put(ctx context.Context, hash string, r io.Reader, maxBytes int64) (int64, bool, error) {
	n, created, err := s.put(ctx, hash, r, maxBytes)
	if err != nil && (errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)) {
		err = fmt.Errorf("%w: %w", store.ErrStorageFull, err)
	}
	return n, created, err
}

func (s *Store) put(ctx context.Context, hash string, r io.Reader, maxBytes int64) (int64, bool, error) {
	final, err := s.path(hash)
	if err != nil {
		return 0, false, err
	}
	if _, err := os.Stat(final); err == nil {
		n, err := verifyStream(ctx, hash, r, io.Discard, maxBytes)
		return n, false, err
	}
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), hash[:16]+".*")
	if err != nil {
		return 0, false, fmt.Errorf("store blob %s: %w", hash, err)
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	n, err := verifyStream(ctx, hash, r, tmp, maxBytes)
	if err != nil {
		tmp.Close()
		return n, false, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return n, false, fmt.Errorf("store blob %s: %w", hash, err)
	}
	if err := tmp.Close(); err != nil {
		return n, false, fmt.Errorf("store blob %s: %w", hash, err)
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return n, false, fmt.Errorf("store blob %s: %w", hash, err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return n, false, fmt.Errorf("store blob %s: %w", hash, err)
	}
	if d, err := os.Open(filepath.Dir(final)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return n, true, nil
}

// ctxReader stops a copy when the context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// verifyStream copies r to w, at most maxBytes, and checks the hash.
func verifyStream(ctx context.Context, hash string, r io.Reader, w io.Writer, maxBytes int64) (int64, error) {
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(ctxReader{ctx, r}, maxBytes+1))
	if err != nil {
		return n, fmt.Errorf("store blob %s: %w", hash, err)
	}
	if n > maxBytes {
		return n, fmt.Errorf("blob %s: more than %d bytes: %w", hash, maxBytes, store.ErrTooLarge)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != hash {
		return n, fmt.Errorf("blob %s: content hashes to %s: %w", hash, got, store.ErrHashMismatch)
	}
	return n, nil
}

// Open returns the blob's bytes.
func (s *Store) Open(ctx context.Context, hash string) (io.ReadCloser, int64, error) {
	p, err := s.path(hash)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("blob %s: %w", hash, store.ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("open blob %s: %w", hash, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open blob %s: %w", hash, err)
	}
	return f, st.Size(), nil
}

// Has reports whether the blob exists.
func (s *Store) Has(ctx context.Context, hash string) (bool, error) {
	_, err := s.Size(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Size returns the blob's size.
func (s *Store) Size(ctx context.Context, hash string) (int64, error) {
	p, err := s.path(hash)
	if err != nil {
		return 0, err
	}
	st, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("blob %s: %w", hash, store.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("blob %s: %w", hash, err)
	}
	return st.Size(), nil
}

// Delete removes the blob.
func (s *Store) Delete(ctx context.Context, hash string) error {
	p, err := s.path(hash)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete blob %s: %w", hash, err)
	}
	return nil
}
