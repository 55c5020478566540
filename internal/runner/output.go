package runner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
	"time"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/redact"
	"warrant.dev/warrant/internal/workspace"
)

// logSink is where a session's output goes: redacted as it streams
// (secrets split across writes included) into a file outside the
// workspace, hashed on the way, so the log is uploaded without being held
// in memory and no unredacted byte ever touches the disk.
type logSink struct {
	mu     sync.Mutex
	f      *os.File
	hash   hash.Hash
	size   int64
	redact *redact.Writer
	err    error
}

func newLogSink(path string, r *redact.Redactor) (*logSink, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("session log: %w", err)
	}
	s := &logSink{f: f, hash: sha256.New()}
	s.redact = r.NewWriter(writerFunc(s.writeRedacted))
	return s, nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func (s *logSink) writeRedacted(p []byte) (int, error) {
	n, err := s.f.Write(p)
	s.hash.Write(p[:n])
	s.size += int64(n)
	return n, err
}

// Write implements io.Writer. A failure to write is remembered and the
// session's output is discarded from then on: the session is not killed
// for the runner's full disk, but the log is then reported missing.
func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return len(p), nil
	}
	if _, err := s.redact.Write(p); err != nil {
		s.err = fmt.Errorf("write session log: %w", err)
	}
	return len(p), nil
}

// finish flushes the held-back bytes and closes the file. It returns the
// redacted log's hash and size.
func (s *logSink) finish() (string, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.redact.Close(); err != nil && s.err == nil {
		s.err = fmt.Errorf("write session log: %w", err)
	}
	if err := s.f.Close(); err != nil && s.err == nil {
		s.err = fmt.Errorf("close session log: %w", err)
	}
	return hex.EncodeToString(s.hash.Sum(nil)), s.size, s.err
}

// uploadBlobs uploads blobs in one streaming request, retrying transient
// failures within budget.
func uploadBlobs(ctx context.Context, api *client.Client, blobs []client.BlobUpload, budget time.Duration) error {
	return client.Retry(ctx, client.DefaultBackoff, budget, func(ctx context.Context) error {
		_, err := api.PutBlobs(ctx, blobs)
		return err
	})
}

// claimBlobs fetches a run's blobs from the plane with its claim token,
// for workspace.Materialize (which verifies every hash itself).
type claimBlobs struct {
	api    *client.Client
	budget time.Duration
}

// claimBatchBlobs is claimBlobs for a plane that offers POST
// /v1/blobs/fetch: Materialize gets a workspace's small files in a few
// requests instead of one per file.
type claimBatchBlobs struct{ claimBlobs }

var _ workspace.BlobBatchSource = claimBatchBlobs{}

// GetMany fetches blobs in one request; a broken transfer is retried for
// the blobs not delivered yet, within the budget.
func (b claimBatchBlobs) GetMany(ctx context.Context, hashes []string, fn func(hash string, r io.Reader) error) error {
	delivered := make(map[string]bool, len(hashes))
	err := client.Retry(ctx, client.DefaultBackoff, b.budget, func(ctx context.Context) error {
		rest := make([]string, 0, len(hashes)-len(delivered))
		for _, h := range hashes {
			if !delivered[h] {
				rest = append(rest, h)
			}
		}
		return b.api.FetchBlobs(ctx, rest, func(hash string, _ int64, r io.Reader) error {
			if err := fn(hash, r); err != nil {
				return err
			}
			delivered[hash] = true
			return nil
		})
	})
	if errors.Is(err, client.ErrNotFound) {
		return fmt.Errorf("%w: %v", workspace.ErrBlobNotFound, err)
	}
	return err
}

func (b claimBlobs) Get(ctx context.Context, hash string) (io.ReadCloser, error) {
	var rc io.ReadCloser
	err := client.Retry(ctx, client.DefaultBackoff, b.budget, func(ctx context.Context) error {
		var err error
		rc, err = b.api.GetBlob(ctx, hash)
		return err
	})
	if errors.Is(err, client.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s: %v", workspace.ErrBlobNotFound, hash, err)
	}
	return rc, err
}
