package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"

	_ "modernc.org/sqlite"

	"warrant.dev/warrant/internal/store"
	"warrant.dev/warrant/internal/store/blobfs"
	"warrant.dev/warrant/internal/store/sqlite"
	"warrant.dev/warrant/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "plane.db"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestBlobFSConformance(t *testing.T) {
	storetest.RunBlobStore(t, func(t *testing.T) store.BlobStore {
		bs, err := blobfs.Open(filepath.Join(t.TempDir(), "blobs"))
		if err != nil {
			t.Fatal(err)
		}
		return bs
	})
}

// TestRefusesNewerSchema: a database written by a newer binary is not
// opened (and not modified).
func TestRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "plane.db")
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = sqlite.Open(context.Background(), path)
	if !errors.Is(err, store.ErrSchemaTooNew) {
		t.Fatalf("open of a newer schema: %v, want ErrSchemaTooNew", err)
	}
}

// TestReopenKeepsData: committed state survives closing and reopening, and
// migrations are not re-run.
func TestReopenKeepsData(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "plane.db")
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutPlaneKey(ctx, store.PlaneKey{KeyID: "k", PublicKeyPEM: "p"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.GetPlaneKey(ctx, "k"); err != nil {
		t.Fatalf("after reopen: %v", err)
	}
	if v := sqlite.SchemaVersion(); v < 1 {
		t.Fatalf("schema version %d", v)
	}
}
