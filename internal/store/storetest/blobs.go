package storetest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"sync"
	"testing"

	"warrant.dev/warrant/internal/store"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// RunBlobStore runs the BlobStore conformance suite. open returns a fresh,
// empty blob store for each subtest.
func RunBlobStore(t *testing.T, open func(t *testing.T) store.BlobStore) {
	t.Run("PutOpen", func(t *testing.T) {
		bs := open(t)
		data := []byte("hello, blob")
		h := sha(data)
		if ok, err := bs.Has(ctx, h); err != nil || ok {
			t.Fatalf("Has before put = %v, %v", ok, err)
		}
		n, created, err := bs.Put(ctx, h, bytes.NewReader(data), 1<<20)
		mustNil(t, err, "put")
		if n != int64(len(data)) || !created {
			t.Fatalf("put = %d, %v", n, created)
		}
		n, created, err = bs.Put(ctx, h, bytes.NewReader(data), 1<<20)
		mustNil(t, err, "put again")
		if n != int64(len(data)) || created {
			t.Fatalf("second put = %d, created %v; want dedupe", n, created)
		}
		rc, size, err := bs.Open(ctx, h)
		mustNil(t, err, "open")
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, data) || size != int64(len(data)) {
			t.Fatalf("open = %q (%d)", got, size)
		}
		sz, err := bs.Size(ctx, h)
		if err != nil || sz != int64(len(data)) {
			t.Fatalf("size = %d, %v", sz, err)
		}
		if ok, _ := bs.Has(ctx, h); !ok {
			t.Fatal("Has after put = false")
		}
		mustNil(t, bs.Delete(ctx, h), "delete")
		mustNil(t, bs.Delete(ctx, h), "delete twice")
		_, _, err = bs.Open(ctx, h)
		mustIs(t, err, store.ErrNotFound, "open deleted")
		_, err = bs.Size(ctx, h)
		mustIs(t, err, store.ErrNotFound, "size deleted")
	})
	t.Run("Empty", func(t *testing.T) {
		bs := open(t)
		h := sha(nil)
		_, created, err := bs.Put(ctx, h, bytes.NewReader(nil), 10)
		if err != nil || !created {
			t.Fatalf("put empty = %v, %v", created, err)
		}
		rc, size, err := bs.Open(ctx, h)
		mustNil(t, err, "open empty")
		rc.Close()
		if size != 0 {
			t.Fatalf("size = %d", size)
		}
	})
	t.Run("MismatchWritesNothing", func(t *testing.T) {
		bs := open(t)
		h := sha([]byte("claimed content"))
		_, _, err := bs.Put(ctx, h, bytes.NewReader([]byte("other content")), 1<<20)
		mustIs(t, err, store.ErrHashMismatch, "mismatch")
		if ok, _ := bs.Has(ctx, h); ok {
			t.Fatal("mismatched upload was stored")
		}
		// A stored blob re-uploaded with wrong bytes is reported, and kept.
		good := []byte("claimed content")
		_, _, err = bs.Put(ctx, h, bytes.NewReader(good), 1<<20)
		mustNil(t, err, "put good")
		_, _, err = bs.Put(ctx, h, bytes.NewReader([]byte("tampered")), 1<<20)
		mustIs(t, err, store.ErrHashMismatch, "mismatch over existing")
		rc, _, _ := bs.Open(ctx, h)
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, good) {
			t.Fatalf("stored blob changed to %q", got)
		}
	})
	t.Run("TooLarge", func(t *testing.T) {
		bs := open(t)
		data := bytes.Repeat([]byte("x"), 101)
		h := sha(data)
		_, _, err := bs.Put(ctx, h, bytes.NewReader(data), 100)
		mustIs(t, err, store.ErrTooLarge, "too large")
		if ok, _ := bs.Has(ctx, h); ok {
			t.Fatal("oversized blob stored")
		}
		_, _, err = bs.Put(ctx, h, bytes.NewReader(data), 101)
		mustNil(t, err, "exactly at the limit")
	})
	t.Run("ReaderError", func(t *testing.T) {
		bs := open(t)
		data := []byte("partial")
		h := sha(data)
		_, _, err := bs.Put(ctx, h, io.MultiReader(bytes.NewReader(data[:3]), errReader{}), 1<<20)
		if err == nil {
			t.Fatal("put with a failing reader succeeded")
		}
		if ok, _ := bs.Has(ctx, h); ok {
			t.Fatal("partial blob stored")
		}
	})
	t.Run("BadName", func(t *testing.T) {
		bs := open(t)
		_, _, err := bs.Open(ctx, "../../etc/passwd")
		if err == nil {
			t.Fatal("open of a non-hash name succeeded")
		}
		if _, _, err := bs.Put(ctx, "ABC", bytes.NewReader(nil), 10); err == nil {
			t.Fatal("put under a non-hash name succeeded")
		}
	})
	t.Run("ConcurrentPuts", func(t *testing.T) {
		bs := open(t)
		data := bytes.Repeat([]byte("concurrent "), 10000)
		h := sha(data)
		var wg sync.WaitGroup
		var mu sync.Mutex
		created := 0
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, c, err := bs.Put(ctx, h, bytes.NewReader(data), 1<<20)
				if err != nil {
					t.Errorf("put: %v", err)
				}
				mu.Lock()
				if c {
					created++
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		if created < 1 {
			t.Fatal("no put reported created")
		}
		rc, _, err := bs.Open(ctx, h)
		mustNil(t, err, "open")
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, data) {
			t.Fatal("concurrent puts corrupted the blob")
		}
	})
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }
