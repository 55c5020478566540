package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"warrant.dev/warrant/internal/store"
)

// TestStatementsArePreparedOnce: reads and writes reuse prepared
// statements; a query first met in a write transaction is prepared after
// it (the writer's only connection is busy during it).
func TestStatementsArePreparedOnce(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "plane.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.UnixMilli(1_700_000_000_000).UTC()
	p := store.Principal{ID: "p1", Name: "alice", Kind: "human", Role: "admin", CreatedAt: now}
	if err := s.CreatePrincipal(ctx, p, store.Token{ID: "t1", PrincipalID: "p1", Hash: "h1", CreatedAt: now, LastUsedAt: now}); err != nil {
		t.Fatal(err)
	}
	writes := len(s.wc.stmts)
	if writes == 0 {
		t.Fatal("the write transaction's statements were not prepared after it")
	}
	if err := s.CreatePrincipal(ctx, store.Principal{ID: "p2", Name: "bob", Kind: "human", Role: "admin", CreatedAt: now},
		store.Token{ID: "t2", PrincipalID: "p2", Hash: "h2", CreatedAt: now, LastUsedAt: now}); err != nil {
		t.Fatal(err)
	}
	if n := len(s.wc.stmts); n != writes {
		t.Errorf("the same write prepared %d statements, then %d", writes, n)
	}
	for range 3 {
		if _, err := s.GetPrincipal(ctx, "p1"); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(s.rc.stmts); n != 1 {
		t.Errorf("three reads with one query prepared %d statements, want 1", n)
	}
}

// TestStatementCacheIsBounded: past maxCachedStatements distinct queries,
// queries still run, unprepared.
func TestStatementCacheIsBounded(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "plane.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range maxCachedStatements + 10 {
		var got int
		if err := s.rq.QueryRowContext(ctx, fmt.Sprintf("SELECT %d + ?", i), 1).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != i+1 {
			t.Fatalf("query %d answered %d", i, got)
		}
	}
	if n := len(s.rc.stmts); n != maxCachedStatements {
		t.Errorf("%d statements cached, want the bound %d", n, maxCachedStatements)
	}
	if err := s.rq.QueryRowContext(ctx, "SELECT nonsense FROM nowhere").Scan(new(int)); err == nil {
		t.Error("a query that does not prepare ran without an error")
	}
}
