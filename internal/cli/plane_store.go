package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"warrant.dev/warrant/internal/plane"
	"warrant.dev/warrant/internal/store"
	"warrant.dev/warrant/internal/store/postgres"
	"warrant.dev/warrant/protocol"
)

// planeState is what `plane serve` runs a plane on: its store, blobs,
// keys and notifier, whichever store backs them.
type planeState struct {
	Store      store.Store
	Blobs      store.BlobStore
	Key        *protocol.PrivateKey
	KeyCreated bool
	MasterKey  []byte
	Notifier   plane.Notifier // nil: the plane's in-process notifier
	close      func()
}

// Close releases the notifier and the store.
func (s *planeState) Close() { s.close() }

// isPostgresStore reports whether a --store value selects PostgreSQL:
// "postgres" (connection from the PG* environment variables) or a
// postgres:// URL.
func isPostgresStore(v string) bool {
	return v == "postgres" || strings.HasPrefix(v, "postgres://") || strings.HasPrefix(v, "postgresql://")
}

// openPlaneState opens the state --store names. With SQLite everything
// lives in the data directory. With PostgreSQL the database holds all
// state and blobs, shared by every replica; the data directory holds only
// this replica's files (the signing key and master key files when they
// are not given otherwise, and admin.token on the replica that
// bootstraps).
func openPlaneState(ctx context.Context, storeFlag, dataDir, keyFile, masterKeyEnv string, log *slog.Logger) (*planeState, error) {
	if !isPostgresStore(storeFlag) {
		data, err := plane.OpenDataDir(ctx, dataDir, keyFile, masterKeyEnv)
		if err != nil {
			return nil, err
		}
		return &planeState{Store: data.Store, Blobs: data.Blobs, Key: data.Key, KeyCreated: data.KeyCreated, MasterKey: data.MasterKey,
			close: func() { data.Close() }}, nil
	}
	conn := storeFlag
	if conn == "postgres" {
		conn = "" // pgx reads PGHOST, PGUSER, PGPASSWORD, PGDATABASE…
	}
	if keyFile == "" {
		keyFile = filepath.Join(dataDir, plane.KeyFile)
	}
	key, created, err := plane.LoadOrCreateKey(keyFile)
	if err != nil {
		return nil, err
	}
	master, err := plane.LoadOrCreateMasterKey(filepath.Join(dataDir, plane.MasterKeyFile), masterKeyEnv)
	if err != nil {
		return nil, err
	}
	st, err := postgres.Open(ctx, conn)
	if err != nil {
		return nil, err
	}
	// Every replica must sign with the same key and seal with the same
	// master key: a replica configured otherwise refuses to start.
	if err := st.PinSetting(ctx, "plane signing key", key.Public().ID()); err != nil {
		st.Close()
		return nil, pinError(err, "signing key (--key FILE)", "give every replica the same --key file")
	}
	if err := st.PinSetting(ctx, "master key fingerprint", masterKeyFingerprint(master)); err != nil {
		st.Close()
		return nil, pinError(err, "master key", "give every replica the same "+plane.MasterKeyEnv)
	}
	notifier, err := postgres.NewNotifier(ctx, st, log)
	if err != nil {
		st.Close()
		return nil, err
	}
	return &planeState{
		Store: st, Blobs: postgres.NewBlobStore(st.Pool(), 0), Key: key, KeyCreated: created, MasterKey: master, Notifier: notifier,
		close: func() { notifier.Close(); st.Close() },
	}, nil
}

func pinError(err error, what, fix string) error {
	if errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("this replica's %s differs from the one the other replicas of this database use: %s", what, fix)
	}
	return err
}

// masterKeyFingerprint identifies a master key without revealing it (a
// domain-separated SHA-256 of 32 random bytes).
func masterKeyFingerprint(key []byte) string {
	h := sha256.New()
	h.Write([]byte("warrant.master-key-fingerprint.v1\x00"))
	h.Write(key)
	return hex.EncodeToString(h.Sum(nil))
}
