package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"warrant.dev/warrant/internal/store"
	"warrant.dev/warrant/protocol"
)

// DefaultChunkSize is the size of the bytea chunks a blob is stored in.
const DefaultChunkSize = 1 << 20

// BlobStore keeps content-addressed blobs in PostgreSQL: a blob_objects
// row (hash, size, chunk count) and its bytes in blob_chunks, in chunks
// of ChunkSize. A Put streams the bytes into the database inside one
// transaction, hashing them on the way, and commits only when the hash
// matches, so a stored blob is always complete and correct. It implements
// store.BlobStore; an object store can replace it behind that seam.
type BlobStore struct {
	pool      *pgxpool.Pool
	chunkSize int
}

var _ store.BlobStore = (*BlobStore)(nil)

// NewBlobStore returns the blob store of the database pool connects to
// (the schema Open migrated). chunkSize ≤ 0 means DefaultChunkSize.
func NewBlobStore(pool *pgxpool.Pool, chunkSize int) *BlobStore {
	if chunkSize <= 0 {
		chunkSize = DefaultChunkSize
	}
	return &BlobStore{pool: pool, chunkSize: chunkSize}
}

func checkName(hash string) error {
	if !protocol.IsHash(hash) {
		return fmt.Errorf("blob name %q is not a sha256 hex hash: %w", hash, store.ErrNotFound)
	}
	return nil
}

// Put stores r's bytes under hash, verifying the hash while streaming.
// Concurrent puts of one hash are serialised by an advisory lock on it:
// the first stores the blob, the others verify their bytes and report
// created=false.
func (b *BlobStore) Put(ctx context.Context, hashHex string, r io.Reader, maxBytes int64) (int64, bool, error) {
	if err := checkName(hashHex); err != nil {
		return 0, false, err
	}
	if ok, err := b.Has(ctx, hashHex); err != nil {
		return 0, false, err
	} else if ok {
		n, err := verifyStream(ctx, hashHex, r, maxBytes, nil)
		return n, false, err
	}
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("store blob %s: %w", hashHex, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended('warrant.blob.' || current_schema() || '.' || $1, 0))", hashHex); err != nil {
		return 0, false, fmt.Errorf("store blob %s: %w", hashHex, err)
	}
	var exists bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM blob_objects WHERE hash = $1)", hashHex).Scan(&exists); err != nil {
		return 0, false, fmt.Errorf("store blob %s: %w", hashHex, err)
	}
	if exists { // another put stored it while we waited for the lock
		_ = tx.Rollback(ctx)
		n, err := verifyStream(ctx, hashHex, r, maxBytes, nil)
		return n, false, err
	}
	chunks := 0
	n, err := verifyStream(ctx, hashHex, r, maxBytes, &chunkWriter{size: b.chunkSize, flush: func(p []byte) error {
		if _, err := tx.Exec(ctx, "INSERT INTO blob_chunks (hash, n, data) VALUES ($1, $2, $3)", hashHex, chunks, p); err != nil {
			return fmt.Errorf("store blob %s chunk %d: %w", hashHex, chunks, err)
		}
		chunks++
		return nil
	}})
	if err != nil {
		return n, false, err
	}
	if _, err := tx.Exec(ctx, "INSERT INTO blob_objects (hash, size, chunks) VALUES ($1, $2, $3)", hashHex, n, chunks); err != nil {
		return n, false, fmt.Errorf("store blob %s: %w", hashHex, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return n, false, fmt.Errorf("store blob %s: %w", hashHex, err)
	}
	return n, true, nil
}

// chunkWriter buffers writes into chunks of size bytes and hands each
// full chunk (and, on close, the rest) to flush.
type chunkWriter struct {
	size  int
	buf   []byte
	flush func([]byte) error
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if w.buf == nil {
			w.buf = make([]byte, 0, w.size)
		}
		k := min(len(p), w.size-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p, written = p[k:], written+k
		if len(w.buf) == w.size {
			if err := w.flush(w.buf); err != nil {
				return written, err
			}
			w.buf = w.buf[:0]
		}
	}
	return written, nil
}

func (w *chunkWriter) close() error {
	if len(w.buf) == 0 {
		return nil
	}
	err := w.flush(w.buf)
	w.buf = w.buf[:0]
	return err
}

// verifyStream reads r (at most maxBytes) into w (nil discards), checks
// the hash, and only then writes w's last chunk.
func verifyStream(ctx context.Context, hashHex string, r io.Reader, maxBytes int64, w *chunkWriter) (int64, error) {
	h := sha256.New()
	var dst io.Writer = h
	if w != nil {
		dst = io.MultiWriter(h, w)
	}
	n, err := io.Copy(dst, io.LimitReader(ctxReader{ctx, r}, maxBytes+1))
	if err != nil {
		return n, fmt.Errorf("store blob %s: %w", hashHex, err)
	}
	if n > maxBytes {
		return n, fmt.Errorf("blob %s: more than %d bytes: %w", hashHex, maxBytes, store.ErrTooLarge)
	}
	if got := sum(h); got != hashHex {
		return n, fmt.Errorf("blob %s: content hashes to %s: %w", hashHex, got, store.ErrHashMismatch)
	}
	if w != nil {
		if err := w.close(); err != nil {
			return n, err
		}
	}
	return n, nil
}

func sum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

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

// Open returns a reader of the blob's bytes that fetches one chunk at a
// time. A blob deleted while it is read ends the read with an error.
func (b *BlobStore) Open(ctx context.Context, hashHex string) (io.ReadCloser, int64, error) {
	if err := checkName(hashHex); err != nil {
		return nil, 0, err
	}
	var size int64
	var chunks int
	err := b.pool.QueryRow(ctx, "SELECT size, chunks FROM blob_objects WHERE hash = $1", hashHex).Scan(&size, &chunks)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, fmt.Errorf("blob %s: %w", hashHex, store.ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("open blob %s: %w", hashHex, err)
	}
	return &chunkReader{ctx: ctx, pool: b.pool, hash: hashHex, chunks: chunks}, size, nil
}

// chunkReader reads a blob's chunks in order.
type chunkReader struct {
	ctx    context.Context
	pool   *pgxpool.Pool
	hash   string
	chunks int
	next   int
	buf    []byte
	closed bool
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.closed {
		return 0, errors.New("read of a closed blob")
	}
	for len(c.buf) == 0 {
		if c.next >= c.chunks {
			return 0, io.EOF
		}
		var data []byte
		err := c.pool.QueryRow(c.ctx, "SELECT data FROM blob_chunks WHERE hash = $1 AND n = $2", c.hash, c.next).Scan(&data)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, fmt.Errorf("blob %s: chunk %d is gone (deleted while read): %w", c.hash, c.next, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return 0, fmt.Errorf("read blob %s chunk %d: %w", c.hash, c.next, err)
		}
		c.buf, c.next = data, c.next+1
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

func (c *chunkReader) Close() error {
	c.closed, c.buf = true, nil
	return nil
}

// Has reports whether the blob exists.
func (b *BlobStore) Has(ctx context.Context, hashHex string) (bool, error) {
	_, err := b.Size(ctx, hashHex)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Size returns the blob's size.
func (b *BlobStore) Size(ctx context.Context, hashHex string) (int64, error) {
	if err := checkName(hashHex); err != nil {
		return 0, err
	}
	var size int64
	err := b.pool.QueryRow(ctx, "SELECT size FROM blob_objects WHERE hash = $1", hashHex).Scan(&size)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("blob %s: %w", hashHex, store.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("blob %s: %w", hashHex, err)
	}
	return size, nil
}

// Delete removes the blob and its chunks.
func (b *BlobStore) Delete(ctx context.Context, hashHex string) error {
	if err := checkName(hashHex); err != nil {
		return err
	}
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("delete blob %s: %w", hashHex, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	// The same lock as Put: a delete does not interleave with a store.
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended('warrant.blob.' || current_schema() || '.' || $1, 0))", hashHex); err != nil {
		return fmt.Errorf("delete blob %s: %w", hashHex, err)
	}
	if _, err := tx.Exec(ctx, "DELETE FROM blob_objects WHERE hash = $1", hashHex); err != nil {
		return fmt.Errorf("delete blob %s: %w", hashHex, err)
	}
	if _, err := tx.Exec(ctx, "DELETE FROM blob_chunks WHERE hash = $1", hashHex); err != nil {
		return fmt.Errorf("delete blob %s: %w", hashHex, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("delete blob %s: %w", hashHex, err)
	}
	return nil
}
