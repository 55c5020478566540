package workspace_test

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"warrant.dev/warrant/internal/workspace"
	"warrant.dev/warrant/protocol"
)

func TestDirStoreRoundTrip(t *testing.T) {
	repo := baseRepo(t)
	store := workspace.DirStore{Dir: filepath.Join(t.TempDir(), "blobs")}
	c, err := workspace.Capture(context.Background(), workspace.CaptureOptions{Dir: repo})
	if err != nil {
		t.Fatal(err)
	}
	st, err := workspace.Upload(context.Background(), c, store)
	if err != nil {
		t.Fatal(err)
	}
	if st.Uploaded != c.BlobCount() {
		t.Errorf("uploaded %d of %d blobs to an empty store", st.Uploaded, c.BlobCount())
	}
	if st, err = workspace.Upload(context.Background(), c, store); err != nil || st.Uploaded != 0 {
		t.Errorf("second upload: %d blobs, %v; want 0", st.Uploaded, err)
	}
	w, err := workspace.Materialize(context.Background(), workspace.MaterializeOptions{
		Dir: filepath.Join(t.TempDir(), "ws"), Manifest: &c.Manifest, Source: store})
	if err != nil {
		t.Fatal(err)
	}
	if d := diffTrees(readTree(t, repo), readTree(t, w.Dir)); d != "" {
		t.Error(d)
	}

	bad := workspace.Blob{Hash: protocol.HashBytes([]byte("good")), Size: 4, Open: func() (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader("evil")), nil
	}}
	if err := store.Put(context.Background(), []workspace.Blob{bad}); !errors.Is(err, workspace.ErrBlobMismatch) {
		t.Errorf("Put of a mismatched blob: %v, want ErrBlobMismatch", err)
	}
	if _, err := store.Get(context.Background(), bad.Hash); !errors.Is(err, workspace.ErrBlobNotFound) {
		t.Errorf("Get after a refused Put: %v, want ErrBlobNotFound", err)
	}
	if _, err := store.Get(context.Background(), "../../etc/passwd"); err == nil {
		t.Error("Get accepted a path instead of a hash")
	}
}
