//go:build linux

package postgres_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"warrant.dev/warrant/internal/store"
	"warrant.dev/warrant/internal/store/postgres"
	"warrant.dev/warrant/internal/store/postgres/pgtest"
)

// TestDiskFull: when PostgreSQL's disk fills, a write fails with an error
// the plane recognises as storage full (store.IsStorageFull: it answers
// 503 unavailable, "retry later", not 500), and what was stored before is
// still there. The test's schema lives in a tablespace on a 3 MiB tmpfs
// the test mounts, so only it fills up. It needs root and the test server
// on this machine (under CI=true both hold, and it must not skip).
func TestDiskFull(t *testing.T) {
	pgtest.Require(t)
	pgUser, err := user.Lookup("postgres")
	local := strings.Contains(pgtest.URL(), "127.0.0.1") || strings.Contains(pgtest.URL(), "localhost")
	if os.Geteuid() != 0 || err != nil || !local {
		msg := fmt.Sprintf("needs root and a local PostgreSQL server run by user postgres (euid %d, user postgres: %v, server %s)", os.Geteuid(), err, pgtest.URL())
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip("SKIPPING: " + msg)
	}
	uid, _ := strconv.Atoi(pgUser.Uid)
	gid, _ := strconv.Atoi(pgUser.Gid)

	// A world-traversable directory (t.TempDir is 0700, which the server
	// cannot enter) with a small tmpfs on it, owned by the server's user.
	dir, err := os.MkdirTemp("", "warrant-pgfull-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=3m,mode=0700"); err != nil {
		t.Fatalf("mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	space := "wt_full_" + hex.EncodeToString(b[:])
	pgtest.Exec(t, "CREATE TABLESPACE "+space+" LOCATION '"+dir+"'")
	t.Cleanup(func() { pgtest.Exec(t, "DROP TABLESPACE IF EXISTS "+space) })
	// Registered after the tablespace's cleanup, so it runs first: the
	// schema is dropped before its tablespace.
	conn := pgtest.Schema(t) + "&default_tablespace=" + space

	s := open(t, conn)
	defer s.Close()
	bs := postgres.NewBlobStore(s.Pool(), 64<<10)
	put := func() (string, []byte, error) {
		data := make([]byte, 256<<10)
		_, _ = rand.Read(data) // incompressible: TOAST cannot shrink it
		sum := sha256.Sum256(data)
		h := hex.EncodeToString(sum[:])
		_, _, err := bs.Put(bg, h, bytes.NewReader(data), 1<<20)
		return h, data, err
	}
	firstHash, firstData, err := put()
	if err != nil {
		t.Fatalf("the first blob: %v", err)
	}
	var fullErr error
	for i := 0; i < 64 && fullErr == nil; i++ {
		_, _, fullErr = put()
	}
	if fullErr == nil {
		t.Fatal("64 blobs of 256 KiB fit in a 3 MiB tablespace")
	}
	if !store.IsStorageFull(fullErr) {
		t.Fatalf("the write that found the disk full failed with %v, which the plane does not recognise as storage full", fullErr)
	}
	rc, size, err := bs.Open(bg, firstHash)
	if err != nil {
		t.Fatalf("a blob stored before the disk filled: %v", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || size != int64(len(firstData)) || !bytes.Equal(got, firstData) {
		t.Fatalf("a blob stored before the disk filled reads back %d bytes (size %d), equal %v, err %v", len(got), size, bytes.Equal(got, firstData), err)
	}
	t.Logf("disk full after the first blob: %v", fullErr)
}
