package workspace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"path/filepath"

	"warrant.dev/warrant/protocol"
)

// Blob is one content-addressed blob to upload. Open streams its bytes;
// the reader fails at EOF if the content no longer matches Hash (a file
// edited between Capture and Upload), so a sink never stores bytes under
// the wrong name.
type Blob struct {
	Hash string // lowercase hex sha256 of the content
	Size int64
	Open func() (io.ReadCloser, error)
}

// BlobSink receives uploads. Missing returns the subset of hashes the
// sink does not hold yet; Put stores a batch of blobs, reading each with
// its Open. Upload calls Missing first and Puts only what is missing, in
// batches bounded by MaxPutBlobs and MaxPutBytes.
type BlobSink interface {
	Missing(ctx context.Context, hashes []string) ([]string, error)
	Put(ctx context.Context, blobs []Blob) error
}

// BlobSource provides blobs by hash for Materialize and Pull. They
// verify every blob's hash themselves, so a source need not be trusted.
type BlobSource interface {
	Get(ctx context.Context, hash string) (io.ReadCloser, error)
}

// BlobBatchSource is a BlobSource that also fetches many blobs in one
// round trip (the plane's POST /v1/blobs/fetch). Materialize fetches the
// symlink targets and the small files through it when its source has it;
// it verifies those blobs too.
type BlobBatchSource interface {
	BlobSource
	// GetMany calls fn for each of hashes (distinct) in any order with a
	// reader of its content, valid only during the call, and returns fn's
	// first error. An unknown hash is ErrBlobNotFound (wrapped).
	GetMany(ctx context.Context, hashes []string, fn func(hash string, r io.Reader) error) error
}

// ErrBlobNotFound is what a BlobSource returns (wrapped) for an unknown
// hash.
var ErrBlobNotFound = errors.New("blob not found")

// Batch limits of Upload.
const (
	MaxMissingHashes = 20_000   // hashes per Missing call
	MaxPutBlobs      = 1_000    // blobs per Put call
	MaxPutBytes      = 16 << 20 // bytes per Put call (a larger blob goes alone)
)

// UploadStats counts what Upload did.
type UploadStats struct {
	Blobs         int   // distinct blobs of the capture
	Bytes         int64 // their total size
	Missing       int   // blobs the sink lacked
	Uploaded      int   // blobs Put
	UploadedBytes int64
	MissingCalls  int
	PutCalls      int
}

// Blobs enumerates the capture's distinct blobs: the snapshot, the dirty
// diff (if any) and each distinct file content.
func (c *Captured) Blobs() iter.Seq[Blob] {
	return func(yield func(Blob) bool) {
		for i := range c.BlobCount() {
			if !yield(c.blobAt(i)) {
				return
			}
		}
	}
}

// BlobCount is the number of blobs Blobs yields.
func (c *Captured) BlobCount() int {
	return c.extraBlobs() + len(c.uniq)
}

func (c *Captured) extraBlobs() int {
	if c.Manifest.DirtyDiffHash != "" {
		return 2
	}
	return 1
}

func (c *Captured) hashAt(i int) string {
	switch {
	case i == 0:
		return c.Manifest.BundleHash
	case i < c.extraBlobs():
		return c.Manifest.DirtyDiffHash
	}
	f := &c.files[c.uniq[i-c.extraBlobs()]]
	return c.snapText[f.hexOff : f.hexOff+64] // the hex is in the snapshot already
}

func (c *Captured) blobAt(i int) Blob {
	switch {
	case i == 0:
		return bytesBlob(c.Manifest.BundleHash, c.Snapshot)
	case i < c.extraBlobs():
		return bytesBlob(c.Manifest.DirtyDiffHash, c.DirtyDiff)
	}
	f := &c.files[c.uniq[i-c.extraBlobs()]]
	hash := c.hashAt(i)
	if f.retained {
		return bytesBlob(hash, f.content)
	}
	abs := filepath.Join(c.Root, filepath.FromSlash(f.path))
	size, sum, rel := f.size(), f.sum, f.path
	return Blob{Hash: hash, Size: size, Open: func() (io.ReadCloser, error) {
		return openVerified(abs, rel, size, sum)
	}}
}

func bytesBlob(hash string, b []byte) Blob {
	return Blob{Hash: hash, Size: int64(len(b)), Open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}}
}

// Upload sends the capture's blobs to sink: it asks Missing about every
// distinct hash (in batches of MaxMissingHashes) and Puts only the missing
// ones, in batches. File content is streamed from disk (or from the small
// files the capture kept in memory), never gathered for the whole tree.
func Upload(ctx context.Context, c *Captured, sink BlobSink) (UploadStats, error) {
	st := UploadStats{Blobs: c.BlobCount(), Bytes: c.blobBytes}
	var batch []Blob
	var batchBytes int64
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := sink.Put(ctx, batch); err != nil {
			return fmt.Errorf("upload %d blobs: %w", len(batch), err)
		}
		st.PutCalls++
		st.Uploaded += len(batch)
		st.UploadedBytes += batchBytes
		clear(batch)
		batch, batchBytes = batch[:0], 0
		return nil
	}
	n := c.BlobCount()
	hashes := make([]string, 0, min(n, MaxMissingHashes))
	for start := 0; start < n; start += MaxMissingHashes {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		hashes = hashes[:0]
		for i := start; i < min(start+MaxMissingHashes, n); i++ {
			hashes = append(hashes, c.hashAt(i))
		}
		missing, err := sink.Missing(ctx, hashes)
		st.MissingCalls++
		if err != nil {
			return st, fmt.Errorf("ask which blobs are missing: %w", err)
		}
		if len(missing) == 0 {
			continue
		}
		want := make(map[string]bool, len(missing))
		for _, h := range missing {
			want[h] = true
		}
		for j, h := range hashes {
			if !want[h] {
				continue
			}
			delete(want, h) // each blob once
			st.Missing++
			b := c.blobAt(start + j)
			if len(batch) > 0 && (len(batch) >= MaxPutBlobs || batchBytes+b.Size > MaxPutBytes) {
				if err := flush(); err != nil {
					return st, err
				}
			}
			batch = append(batch, b)
			batchBytes += b.Size
		}
		for h := range want {
			return st, fmt.Errorf("blob sink reported %q missing, which was not asked about", h)
		}
	}
	if err := flush(); err != nil {
		return st, err
	}
	return st, nil
}

// getVerified fetches a blob and checks its size and hash. size < 0 means
// unknown (then at most maxSize bytes are accepted).
func getVerified(ctx context.Context, src BlobSource, hash string, size, maxSize int64) ([]byte, error) {
	if !protocol.IsHash(hash) {
		return nil, fmt.Errorf("blob %q: not a sha256 hex hash", hash)
	}
	rc, err := src.Get(ctx, hash)
	if err != nil {
		return nil, fmt.Errorf("fetch blob %s: %w", hash, err)
	}
	defer rc.Close()
	return readVerified(rc, hash, size, maxSize)
}

// readVerified reads a blob and checks its size and hash (size < 0:
// unknown, at most maxSize bytes).
func readVerified(r io.Reader, hash string, size, maxSize int64) ([]byte, error) {
	limit := maxSize
	if size >= 0 {
		limit = size
	}
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("fetch blob %s: %w", hash, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("blob %s: %w: larger than %d bytes", hash, ErrBlobMismatch, limit)
	}
	if size >= 0 && int64(len(data)) != size {
		return nil, fmt.Errorf("blob %s: %w: %d bytes, want %d", hash, ErrBlobMismatch, len(data), size)
	}
	if got := protocol.HashBytes(data); got != hash {
		return nil, fmt.Errorf("blob %s: %w: content hashes to %s", hash, ErrBlobMismatch, got)
	}
	return data, nil
}

// blobWant is a blob to fetch: its hash and its size (which the snapshot
// names).
type blobWant struct {
	hash string
	size int64
}

// Batches of getManyVerified.
const (
	maxBatchBlobs = 1_000    // blobs per GetMany call
	maxBatchBytes = 16 << 20 // bytes per GetMany call (at least one blob)
)

// getManyVerified fetches distinct blobs through a batch source, in batches of at
// most maxBatchBlobs and maxBatchBytes, batches runs at a time, and hands
// each blob to got (from the fetching goroutine) once its size and hash
// are checked. It fails if the source sends a blob it was not asked for,
// sends one twice, or leaves one out.
func getManyVerified(ctx context.Context, src BlobBatchSource, want []blobWant, batches int, got func(i int, data []byte) error) error {
	var starts []int
	var bytes int64
	for i, w := range want {
		if i == 0 || i-starts[len(starts)-1] >= maxBatchBlobs || bytes+w.size > maxBatchBytes {
			starts = append(starts, i)
			bytes = 0
		}
		bytes += w.size
	}
	return parallel(ctx, len(starts), batches, func(b int) error {
		lo, hi := starts[b], len(want)
		if b+1 < len(starts) {
			hi = starts[b+1]
		}
		index := make(map[string]int, hi-lo)
		hashes := make([]string, 0, hi-lo)
		for i := lo; i < hi; i++ {
			if !protocol.IsHash(want[i].hash) {
				return fmt.Errorf("blob %q: not a sha256 hex hash", want[i].hash)
			}
			if _, dup := index[want[i].hash]; dup {
				return fmt.Errorf("blob %s: asked for twice", want[i].hash)
			}
			index[want[i].hash] = i
			hashes = append(hashes, want[i].hash)
		}
		delivered := make(map[string]bool, len(hashes))
		err := src.GetMany(ctx, hashes, func(hash string, r io.Reader) error {
			i, ok := index[hash]
			switch {
			case !ok:
				return fmt.Errorf("blob %s: %w: the source sent a blob not asked for", hash, ErrBlobMismatch)
			case delivered[hash]:
				return fmt.Errorf("blob %s: %w: the source sent it twice", hash, ErrBlobMismatch)
			}
			delivered[hash] = true
			data, err := readVerified(r, hash, want[i].size, want[i].size)
			if err != nil {
				return err
			}
			return got(i, data)
		})
		if err != nil {
			return fmt.Errorf("fetch %d blobs: %w", len(hashes), err)
		}
		for _, h := range hashes {
			if !delivered[h] {
				return fmt.Errorf("blob %s: %w: the source left it out", h, ErrBlobNotFound)
			}
		}
		return nil
	})
}

// ErrBlobMismatch is wrapped by errors about a blob whose bytes do not
// match the hash (or size) it was fetched by.
var ErrBlobMismatch = errors.New("blob content does not match its hash")
