// Package workspacetest provides an in-memory blob store for tests and
// benchmarks of package workspace: it is both a workspace.BlobSink and a
// workspace.BlobSource, and counts what it is asked.
package workspacetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sync"

	"warrant.dev/warrant/internal/workspace"
)

// MemStore is an in-memory, content-addressed blob store. Put verifies
// each blob's hash as a real store would. The zero value is ready to use.
type MemStore struct {
	mu    sync.Mutex
	blobs map[string][]byte

	// Counters, read with Counts.
	missingCalls int
	hashesAsked  int
	putCalls     int
	blobsPut     int
	bytesPut     int64
	largestPut   int
	gets         int
	getManys     int
	gotMany      int
}

// Counts is a snapshot of a MemStore's counters.
type Counts struct {
	MissingCalls int   // calls to Missing
	HashesAsked  int   // hashes passed to Missing in total
	PutCalls     int   // calls to Put
	BlobsPut     int   // blobs received by Put
	BytesPut     int64 // bytes received by Put
	LargestPut   int   // most blobs in one Put call
	Gets         int   // calls to Get
	GetManys     int   // calls to GetMany (of a BatchStore)
	GotMany      int   // blobs delivered by GetMany
}

// Counts returns the counters so far.
func (s *MemStore) Counts() Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Counts{s.missingCalls, s.hashesAsked, s.putCalls, s.blobsPut, s.bytesPut, s.largestPut, s.gets, s.getManys, s.gotMany}
}

// ResetCounts zeroes the counters (the blobs stay).
func (s *MemStore) ResetCounts() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.missingCalls, s.hashesAsked, s.putCalls, s.blobsPut, s.bytesPut, s.largestPut, s.gets, s.getManys, s.gotMany = 0, 0, 0, 0, 0, 0, 0, 0, 0
}

// Missing implements workspace.BlobSink.
func (s *MemStore) Missing(ctx context.Context, hashes []string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.missingCalls++
	s.hashesAsked += len(hashes)
	var out []string
	seen := make(map[string]bool)
	for _, h := range hashes {
		if _, ok := s.blobs[h]; !ok && !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	return out, nil
}

// Put implements workspace.BlobSink: it reads every blob, checks its size
// and hash, and stores it.
func (s *MemStore) Put(ctx context.Context, blobs []workspace.Blob) error {
	type got struct {
		hash string
		data []byte
	}
	read := make([]got, 0, len(blobs))
	for _, b := range blobs {
		if err := ctx.Err(); err != nil {
			return err
		}
		rc, err := b.Open()
		if err != nil {
			return err
		}
		data := make([]byte, b.Size)
		_, err = io.ReadFull(rc, data)
		if err == nil {
			// The blob must end where its declared size says.
			var one [1]byte
			if n, _ := rc.Read(one[:]); n > 0 {
				err = fmt.Errorf("blob %s: longer than its declared %d bytes", b.Hash, b.Size)
			} else if _, rerr := io.Copy(io.Discard, rc); rerr != nil {
				err = rerr
			}
		}
		rc.Close()
		if err != nil {
			return fmt.Errorf("blob %s: %w", b.Hash, err)
		}
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != b.Hash {
			return fmt.Errorf("blob %s: content does not match its hash", b.Hash)
		}
		read = append(read, got{b.Hash, data})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.blobs == nil {
		s.blobs = make(map[string][]byte)
	}
	s.putCalls++
	s.blobsPut += len(read)
	s.largestPut = max(s.largestPut, len(read))
	for _, g := range read {
		s.bytesPut += int64(len(g.data))
		s.blobs[g.hash] = g.data
	}
	return nil
}

// Get implements workspace.BlobSource.
func (s *MemStore) Get(ctx context.Context, hash string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gets++
	b, ok := s.blobs[hash]
	if !ok {
		return nil, fmt.Errorf("%s: %w", hash, workspace.ErrBlobNotFound)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// BatchStore is a MemStore that also fetches many blobs in one call: a
// workspace.BlobBatchSource.
type BatchStore struct{ *MemStore }

var _ workspace.BlobBatchSource = BatchStore{}

// GetMany implements workspace.BlobBatchSource, delivering the blobs in
// the order asked.
func (b BatchStore) GetMany(ctx context.Context, hashes []string, fn func(hash string, r io.Reader) error) error {
	s := b.MemStore
	s.mu.Lock()
	s.getManys++
	s.mu.Unlock()
	for _, h := range hashes {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, ok := s.Bytes(h)
		if !ok {
			return fmt.Errorf("%s: %w", h, workspace.ErrBlobNotFound)
		}
		s.mu.Lock()
		s.gotMany++
		s.mu.Unlock()
		if err := fn(h, bytes.NewReader(data)); err != nil {
			return err
		}
	}
	return nil
}

// Add stores data under its own hash and returns the hash.
func (s *MemStore) Add(data []byte) string {
	sum := sha256.Sum256(data)
	h := hex.EncodeToString(sum[:])
	s.SetRaw(h, data)
	return h
}

// SetRaw stores data under hash without checking it: for tests of
// consumers that must refuse a blob whose bytes do not match its name.
func (s *MemStore) SetRaw(hash string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.blobs == nil {
		s.blobs = make(map[string][]byte)
	}
	s.blobs[hash] = bytes.Clone(data)
}

// Bytes returns the stored blob, if any.
func (s *MemStore) Bytes(hash string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blobs[hash]
	return b, ok
}

// Len is the number of stored blobs.
func (s *MemStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.blobs)
}
