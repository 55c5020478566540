package plane

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"warrant.dev/warrant/internal/fsutil"
	"warrant.dev/warrant/protocol"
)

// File names inside the plane's data directory.
const (
	KeyFile        = "plane.key.pem" // the plane's Ed25519 signing key (0600)
	MasterKeyFile  = "master.key"    // 32 random bytes sealing secrets (0600)
	AdminTokenFile = "admin.token"   // the bootstrap admin token (0600)
	DatabaseFile   = "plane.db"
	BlobDir        = "blobs"
)

// MasterKeyEnv names the environment variable that, when set, holds the
// base64 master key and overrides the key file.
const MasterKeyEnv = "WARRANT_MASTER_KEY"

// LoadOrCreateKey reads the plane signing key from path, creating a new
// one (file mode 0600) when the file does not exist.
func LoadOrCreateKey(path string) (*protocol.PrivateKey, bool, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		k, err := protocol.ParsePrivateKeyPEM(string(data))
		if err != nil {
			return nil, false, fmt.Errorf("plane key %s: %w", path, err)
		}
		if err := checkPrivate(path); err != nil {
			return nil, false, err
		}
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("read plane key: %w", err)
	}
	k, err := protocol.GenerateKey(nil)
	if err != nil {
		return nil, false, fmt.Errorf("generate plane key: %w", err)
	}
	pemText, err := k.PEM()
	if err != nil {
		return nil, false, fmt.Errorf("encode plane key: %w", err)
	}
	if err := writeSecretFile(path, []byte(pemText)); err != nil {
		return nil, false, err
	}
	return k, true, nil
}

// LoadOrCreateMasterKey returns the 32-byte master key: from the
// WARRANT_MASTER_KEY environment value env when non-empty (base64), else
// from path, creating it with 32 random bytes (0600) when absent.
func LoadOrCreateMasterKey(path, env string) ([]byte, error) {
	if env != "" {
		k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(env))
		if err != nil || len(k) != 32 {
			return nil, fmt.Errorf("%s must be the base64 of 32 bytes", MasterKeyEnv)
		}
		return k, nil
	}
	data, err := os.ReadFile(path)
	if err == nil {
		if len(data) != 32 {
			return nil, fmt.Errorf("master key %s: want 32 bytes, found %d", path, len(data))
		}
		if err := checkPrivate(path); err != nil {
			return nil, err
		}
		return data, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read master key: %w", err)
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("generate master key: %w", err)
	}
	if err := writeSecretFile(path, k); err != nil {
		return nil, err
	}
	return k, nil
}

// checkPrivate refuses key files that others can read.
func checkPrivate(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s is readable by other users (mode %o): chmod 600 it", path, st.Mode().Perm())
	}
	return nil
}

// writeSecretFile creates path exclusively with mode 0600 and fsyncs it.
func writeSecretFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	return fsutil.WriteFileExclusive(path, data, 0o600)
}

// sealer encrypts secret values with AES-256-GCM under the master key;
// the secret's name is the additional data, so a ciphertext cannot be
// moved to another name. Sealed form: 12-byte nonce || ciphertext+tag.
type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	return &sealer{aead: aead}, nil
}

func (s *sealer) seal(name string, value []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal secret: %w", err)
	}
	return s.aead.Seal(nonce, nonce, value, []byte(name)), nil
}

func (s *sealer) open(name string, sealed []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("sealed secret too short")
	}
	v, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(name))
	if err != nil {
		return nil, fmt.Errorf("open secret %q: wrong master key or corrupted ciphertext", name)
	}
	return v, nil
}

// --- tokens and ids ---

// Token prefixes (docs/api.md).
const (
	prefixPrincipal = "wpt_"
	prefixEnroll    = "wet_"
	prefixRunner    = "wrt_"
	prefixClaim     = "wct_"
)

// newToken returns a random 256-bit bearer token with its prefix, and the
// hash under which it is stored.
func newToken(prefix string) (secret, hash string) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error()) // never happens on supported platforms
	}
	secret = prefix + base64.RawURLEncoding.EncodeToString(b)
	return secret, tokenHash(secret)
}

// tokenHash is the stored form of a bearer token.
func tokenHash(secret string) string {
	s := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(s[:])
}

// newID returns prefix + a random UUID (version 4), like the original's
// run_… and rnr_… ids.
func newID(prefix string) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return prefix + h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
