package sqlite

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"warrant.dev/warrant/internal/store"
)

// TestFullDatabaseIsStorageFull: a write SQLite refuses because the
// database cannot grow (SQLITE_FULL, here from max_page_count as from a
// full disk) is store.ErrStorageFull, writes nothing, and the same write
// succeeds once there is room again.
func TestFullDatabaseIsStorageFull(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "plane.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var pages int
	if err := s.w.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.ExecContext(ctx, "PRAGMA max_page_count = "+strconv.Itoa(pages)); err != nil {
		t.Fatal(err)
	}
	now := time.UnixMilli(1_700_000_000_000).UTC()
	big := store.Secret{Name: "BIG", Ciphertext: make([]byte, 256<<10), CreatedAt: now, UpdatedAt: now}
	_, err = s.PutSecret(ctx, big)
	if !errors.Is(err, store.ErrStorageFull) {
		t.Fatalf("PutSecret into a full database: %v, want ErrStorageFull", err)
	}
	if _, err := s.GetSecret(ctx, "BIG"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused write left something: %v", err)
	}
	if _, err := s.w.ExecContext(ctx, "PRAGMA max_page_count = 1000000"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutSecret(ctx, big); err != nil {
		t.Fatalf("the same write with room again: %v", err)
	}
}
