package plane_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/internal/store"
	"warrant.dev/warrant/internal/testutil"
	"warrant.dev/warrant/protocol"
)

// fullBlobs is a BlobStore whose disk is full while full is set: Put
// fails the way blobfs does on ENOSPC.
type fullBlobs struct {
	store.BlobStore
	full atomic.Bool
}

func (b *fullBlobs) Put(ctx context.Context, hash string, r io.Reader, maxBytes int64) (int64, bool, error) {
	if b.full.Load() {
		_, _ = io.Copy(io.Discard, r)
		return 0, false, fmt.Errorf("store blob %s: %w: write: %w", hash, store.ErrStorageFull, syscall.ENOSPC)
	}
	return b.BlobStore.Put(ctx, hash, r, maxBytes)
}

// TestStorageFullIsUnavailable: a write refused because the plane's disk
// is full answers 503 unavailable (retry later), not 500 internal (a bug),
// records nothing, and the same request succeeds once there is room.
func TestStorageFullIsUnavailable(t *testing.T) {
	var fb *fullBlobs
	tp := testutil.StartPlane(t, testutil.WithConfig(func(c *plane.Config) {
		fb = &fullBlobs{BlobStore: c.Blobs}
		c.Blobs = fb
	}))
	reqC, _ := tp.NewPrincipal(client.RoleRequester)
	data := make([]byte, 4096)
	_, _ = rand.Read(data)
	fb.full.Store(true)
	_, err := reqC.PutBlob(bg, data)
	var api *client.APIError
	if !errors.As(err, &api) || api.Code != client.CodeUnavailable || api.Status != http.StatusServiceUnavailable {
		t.Fatalf("PUT blob on a full disk: %v, want 503 unavailable", err)
	}
	if !client.IsTransient(err) {
		t.Error("a full disk should be worth retrying")
	}
	hash, _ := tp.Admin.MissingBlobs(bg, []string{protocol.HashBytes(data)})
	if len(hash) != 1 {
		t.Errorf("the refused blob was recorded: missing = %v", hash)
	}
	fb.full.Store(false)
	if _, err := reqC.PutBlob(bg, data); err != nil {
		t.Fatalf("the same upload with room again: %v", err)
	}
}
