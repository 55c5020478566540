package plane

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"warrant.dev/warrant/client"
	"warrant.dev/warrant/internal/store"
	"warrant.dev/warrant/internal/store/blobfs"
	"warrant.dev/warrant/internal/store/sqlite"
	"warrant.dev/warrant/protocol"
)

// DataDir is a plane's state on disk: DIR/plane.db (SQLite), DIR/blobs/,
// DIR/plane.key.pem and DIR/master.key (both 0600, created on first
// start), DIR/admin.token (the bootstrap admin token, 0600).
type DataDir struct {
	Dir        string
	Store      store.Store
	Blobs      store.BlobStore
	Key        *protocol.PrivateKey
	KeyCreated bool // the signing key was made by this open
	MasterKey  []byte
}

// OpenDataDir opens (creating as needed) a plane data directory. keyFile
// overrides DIR/plane.key.pem; masterKeyEnv, when non-empty, is the base64
// master key (the value of WARRANT_MASTER_KEY) and overrides DIR/master.key.
func OpenDataDir(ctx context.Context, dir, keyFile, masterKeyEnv string) (*DataDir, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	if keyFile == "" {
		keyFile = filepath.Join(dir, KeyFile)
	}
	key, created, err := LoadOrCreateKey(keyFile)
	if err != nil {
		return nil, err
	}
	master, err := LoadOrCreateMasterKey(filepath.Join(dir, MasterKeyFile), masterKeyEnv)
	if err != nil {
		return nil, err
	}
	st, err := sqlite.Open(ctx, filepath.Join(dir, DatabaseFile))
	if err != nil {
		return nil, err
	}
	blobs, err := blobfs.Open(filepath.Join(dir, BlobDir))
	if err != nil {
		st.Close()
		return nil, err
	}
	return &DataDir{Dir: dir, Store: st, Blobs: blobs, Key: key, KeyCreated: created, MasterKey: master}, nil
}

// Close closes the store.
func (d *DataDir) Close() error { return d.Store.Close() }

// Bootstrap makes a fresh plane usable: when no principal exists it
// creates the admin principal "admin", writes its token to tokenFile
// (0600) before storing it, and returns the token. On a plane that has
// principals it returns created=false.
func (p *Plane) Bootstrap(ctx context.Context, tokenFile string) (token string, created bool, err error) {
	prs, err := p.store.ListPrincipals(ctx)
	if err != nil {
		return "", false, err
	}
	if len(prs) > 0 {
		return "", false, nil
	}
	now := p.now()
	secret, hash := newToken(prefixPrincipal)
	pr := store.Principal{ID: newID("prn_"), Name: "admin", Kind: "human", Role: client.RoleAdmin, CreatedAt: now}
	_ = os.Remove(tokenFile) // a leftover of a bootstrap that did not finish
	if err := writeSecretFile(tokenFile, []byte(secret+"\n")); err != nil {
		return "", false, err
	}
	err = p.store.CreatePrincipal(ctx, pr, store.Token{ID: newID("tok_"), PrincipalID: pr.ID, Hash: hash, CreatedAt: now})
	if errors.Is(err, store.ErrConflict) {
		// Another replica of a shared database bootstrapped at the same
		// moment: this token was never stored.
		_ = os.Remove(tokenFile)
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	p.log.Info("bootstrap admin created", "principal", pr.ID, "tokenFile", tokenFile)
	return secret, true, nil
}
