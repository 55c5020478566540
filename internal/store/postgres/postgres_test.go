package postgres_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"warrant.dev/warrant/internal/store"
	"warrant.dev/warrant/internal/store/postgres"
	"warrant.dev/warrant/internal/store/postgres/pgtest"
	"warrant.dev/warrant/internal/store/storetest"
)

var bg = context.Background()

func open(t *testing.T, conn string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(bg, conn)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store {
		// Every subtest has its own schema: they may run side by side
		// (most of their time is spent creating the schema).
		t.Parallel()
		return open(t, pgtest.Schema(t))
	})
}

func TestBlobStoreConformance(t *testing.T) {
	t.Parallel()
	storetest.RunBlobStore(t, func(t *testing.T) store.BlobStore {
		t.Parallel()
		s := open(t, pgtest.Schema(t))
		t.Cleanup(func() { s.Close() })
		return postgres.NewBlobStore(s.Pool(), 0)
	})
}

// TestBlobChunks: a blob larger than the chunk size is stored in several
// chunks and read back whole, in order; a mismatch on the last chunk
// writes no chunk at all.
func TestBlobChunks(t *testing.T) {
	t.Parallel()
	s := open(t, pgtest.Schema(t))
	defer s.Close()
	bs := postgres.NewBlobStore(s.Pool(), 1000)
	data := make([]byte, 4500)
	for i := range data {
		data[i] = byte(i * 7)
	}
	sum := sha256.Sum256(data)
	h := hex.EncodeToString(sum[:])
	n, created, err := bs.Put(bg, h, bytes.NewReader(data), 1<<20)
	if err != nil || !created || n != 4500 {
		t.Fatalf("put = %d %v %v", n, created, err)
	}
	var chunks int
	if err := s.Pool().QueryRow(bg, "SELECT count(*) FROM blob_chunks WHERE hash = $1", h).Scan(&chunks); err != nil {
		t.Fatal(err)
	}
	if chunks != 5 {
		t.Fatalf("%d chunks, want 5 of at most 1000 bytes", chunks)
	}
	rc, size, err := bs.Open(bg, h)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || size != 4500 || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (size %d), equal %v, err %v", len(got), size, bytes.Equal(got, data), err)
	}
	// Same length, last byte differs: every chunk but the last was
	// written before the mismatch showed; none may remain.
	other := bytes.Clone(data)
	other[len(other)-1] ^= 1
	osum := sha256.Sum256(other)
	_, _, err = bs.Put(bg, hex.EncodeToString(osum[:]), bytes.NewReader(data), 1<<20)
	if !errors.Is(err, store.ErrHashMismatch) {
		t.Fatalf("mismatch: %v", err)
	}
	if err := s.Pool().QueryRow(bg, "SELECT count(*) FROM blob_chunks WHERE hash = $1", hex.EncodeToString(osum[:])).Scan(&chunks); err != nil || chunks != 0 {
		t.Fatalf("a failed put left %d chunks (%v)", chunks, err)
	}
	if err := bs.Delete(bg, h); err != nil {
		t.Fatal(err)
	}
	if err := s.Pool().QueryRow(bg, "SELECT count(*) FROM blob_chunks").Scan(&chunks); err != nil || chunks != 0 {
		t.Fatalf("delete left %d chunks (%v)", chunks, err)
	}
}

// TestRefusesNewerSchema: a database migrated by a newer binary is not
// opened, and not modified.
func TestRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	conn := pgtest.Schema(t)
	s := open(t, conn)
	if _, err := s.Pool().Exec(bg, "UPDATE warrant_schema_version SET version = 99"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err := postgres.Open(bg, conn)
	if !errors.Is(err, store.ErrSchemaTooNew) {
		t.Fatalf("open of a newer schema: %v, want ErrSchemaTooNew", err)
	}
	s = open(t, pgtest.Schema(t)) // a fresh schema still opens
	s.Close()
}

// TestMigrateConcurrently: replicas starting at the same moment on an
// empty schema migrate it once, and all of them open it.
func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	conn := pgtest.Schema(t)
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := postgres.Open(bg, conn)
			if err == nil {
				s.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent open: %v", err)
		}
	}
	s := open(t, conn)
	defer s.Close()
	var version, rows int
	if err := s.Pool().QueryRow(bg, "SELECT max(version), count(*) FROM warrant_schema_version").Scan(&version, &rows); err != nil {
		t.Fatal(err)
	}
	if version != postgres.SchemaVersion() || rows != 1 {
		t.Fatalf("schema version %d in %d rows, want %d in 1", version, rows, postgres.SchemaVersion())
	}
}

// TestReopenKeepsData: committed state survives closing and reopening.
func TestReopenKeepsData(t *testing.T) {
	t.Parallel()
	conn := pgtest.Schema(t)
	s := open(t, conn)
	if err := s.PutPlaneKey(bg, store.PlaneKey{KeyID: "k", PublicKeyPEM: "p", AddedAt: time.UnixMilli(1)}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, conn)
	defer s.Close()
	if _, err := s.GetPlaneKey(bg, "k"); err != nil {
		t.Fatalf("after reopen: %v", err)
	}
}

// TestPinSetting: the first value pinned wins; another is a conflict.
func TestPinSetting(t *testing.T) {
	t.Parallel()
	conn := pgtest.Schema(t)
	a, b := open(t, conn), open(t, conn)
	defer a.Close()
	defer b.Close()
	if err := a.PinSetting(bg, "plane key", "ed25519:aaaa"); err != nil {
		t.Fatal(err)
	}
	if err := b.PinSetting(bg, "plane key", "ed25519:aaaa"); err != nil {
		t.Fatalf("same value from another replica: %v", err)
	}
	err := b.PinSetting(bg, "plane key", "ed25519:bbbb")
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("different value: %v, want ErrConflict", err)
	}
	if bytes.Contains([]byte(err.Error()), []byte("aaaa")) || bytes.Contains([]byte(err.Error()), []byte("bbbb")) {
		t.Fatalf("the error quotes pinned values: %v", err)
	}
}

// TestTwoReplicasSweepOnce: two stores on one database (two replicas)
// expire leases at the same time; every lapsed run is ended once, with
// one run.failed, and each appears in exactly one replica's result. Then
// they apply retention at the same time: each run is deleted and logged
// once.
func TestTwoReplicasSweepOnce(t *testing.T) {
	t.Parallel()
	conn := pgtest.Schema(t)
	a, b := open(t, conn), open(t, conn)
	defer a.Close()
	defer b.Close()
	t0 := time.UnixMilli(1_800_000_000_000).UTC()
	const runs = 120
	for i := range runs {
		id := fmt.Sprintf("run_%03d", i)
		ch := hashOf("contract", id)
		r := store.Run{ID: id, State: store.StateCreated, Pool: "p", AgentKind: "mock", Isolation: "process", RequesterID: "prn", RequesterName: "r",
			CreatedAt: t0, UpdatedAt: t0, Contract: []byte("{}"), ContractHash: ch, ExpiresAt: t0.Add(time.Hour)}
		ev := store.Event{RunID: id, Seq: 0, Hash: hashOf(id, 0), Prev: ch, Type: "run.created", Data: []byte("{}")}
		if err := a.CreateRun(bg, r, []store.Event{ev}); err != nil {
			t.Fatal(err)
		}
		_, _, err := a.ClaimNext(bg, store.ClaimRequest{Pool: "p", Tiers: []string{"process"}, RunnerID: "rnr", TokenHash: hashOf("tok", i), Now: t0, LeaseUntil: t0.Add(time.Second)},
			func(run store.Run, head store.Event, _ []store.Secret) (store.ClaimDecision, error) {
				return store.ClaimDecision{Events: []store.Event{{RunID: run.ID, Seq: 1, Hash: hashOf(run.ID, 1), Prev: head.Hash, Type: "run.claimed", Data: []byte("{}")}}}, nil
			})
		if err != nil {
			t.Fatal(err)
		}
	}
	end := func(run store.Run, head *store.Event) (store.End, error) {
		ev := store.Event{RunID: run.ID, Seq: head.Seq + 1, Hash: hashOf(run.ID, "failed"), Prev: head.Hash, Type: "run.failed", Data: []byte("{}")}
		return store.End{Events: []store.Event{ev}, Failure: &store.Failure{Class: "session_failed", Message: "runner lost: lease expired"}}, nil
	}
	var mu sync.Mutex
	endedBy := map[string]int{}
	var wg sync.WaitGroup
	for w, s := range []*postgres.Store{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				ended, err := s.ExpireLeases(bg, t0.Add(2*time.Second), end)
				if err != nil {
					t.Errorf("sweeper %d: %v", w, err)
					return
				}
				mu.Lock()
				for _, r := range ended {
					endedBy[r.ID]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(endedBy) != runs {
		t.Fatalf("%d runs ended, want %d", len(endedBy), runs)
	}
	for id, n := range endedBy {
		if n != 1 {
			t.Fatalf("%s ended %d times", id, n)
		}
		ev, err := a.ListEvents(bg, id, -1, 0)
		if err != nil || len(ev) != 3 || ev[2].Type != "run.failed" {
			t.Fatalf("%s chain = %+v (%v)", id, ev, err)
		}
	}

	// Retention on every replica at once, in small batches: each ended
	// run is deleted and logged exactly once.
	deletedBy := map[string]int{}
	for w, s := range []*postgres.Store{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				recs, err := s.DeleteRunsEndedBefore(bg, t0.Add(time.Hour), t0.Add(time.Hour), "test", 7)
				if err != nil {
					t.Errorf("retention %d: %v", w, err)
					return
				}
				mu.Lock()
				for _, r := range recs {
					deletedBy[r.ID]++
				}
				mu.Unlock()
				if len(recs) == 0 {
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(deletedBy) != runs {
		t.Fatalf("%d runs deleted, want %d", len(deletedBy), runs)
	}
	for id, n := range deletedBy {
		if n != 1 {
			t.Fatalf("%s deleted %d times", id, n)
		}
	}
	log, err := a.ListRetention(bg, 1000)
	if err != nil || len(log) != runs {
		t.Fatalf("retention log has %d records (%v), want %d", len(log), err, runs)
	}
}

func hashOf(parts ...any) string {
	h := sha256.Sum256(fmt.Append(nil, parts...))
	return hex.EncodeToString(h[:])
}
