package protocol

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Signer roles: who made a signature.
const (
	SignerOrg    = "org"
	SignerPlane  = "plane"
	SignerRunner = "runner"
)

// AlgEd25519 is the only signature algorithm of protocol v1.
const AlgEd25519 = "ed25519"

// ErrBadKey is wrapped by every error about malformed key material.
var ErrBadKey = errors.New("invalid key")

// PublicKey is an Ed25519 public key with its protocol key id.
type PublicKey struct {
	key ed25519.PublicKey
	pem string // canonical PEM text, ending in a newline
	id  string
}

// PrivateKey is an Ed25519 private key and its public half.
type PrivateKey struct {
	key ed25519.PrivateKey
	pub *PublicKey
}

// GenerateKey makes a new Ed25519 key pair from rand (crypto/rand when nil).
func GenerateKey(random io.Reader) (*PrivateKey, error) {
	if random == nil {
		random = rand.Reader
	}
	_, priv, err := ed25519.GenerateKey(random)
	if err != nil {
		return nil, fmt.Errorf("generate ed25519 key: %w", err)
	}
	return newPrivateKey(priv)
}

// NewPrivateKeyFromSeed returns the key pair for a 32-byte Ed25519 seed.
func NewPrivateKeyFromSeed(seed []byte) (*PrivateKey, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%w: seed is %d bytes, want %d", ErrBadKey, len(seed), ed25519.SeedSize)
	}
	return newPrivateKey(ed25519.NewKeyFromSeed(seed))
}

func newPrivateKey(priv ed25519.PrivateKey) (*PrivateKey, error) {
	pub, err := NewPublicKey(priv.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	return &PrivateKey{key: priv, pub: pub}, nil
}

// NewPublicKey wraps a raw 32-byte Ed25519 public key.
func NewPublicKey(raw ed25519.PublicKey) (*PublicKey, error) {
	if len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: public key is %d bytes, want %d", ErrBadKey, len(raw), ed25519.PublicKeySize)
	}
	der, err := x509.MarshalPKIXPublicKey(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: encode public key: %v", ErrBadKey, err)
	}
	text := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	return &PublicKey{key: append(ed25519.PublicKey(nil), raw...), pem: text, id: KeyIDFromPEM(text)}, nil
}

// ParsePublicKeyPEM reads an Ed25519 public key from PEM "PUBLIC KEY"
// (SPKI), as written by OpenSSL, Node and this package. The key id is
// computed over the canonical re-encoding, so line-ending or wrapping
// differences in the input do not change it.
func ParsePublicKeyPEM(text string) (*PublicKey, error) {
	block, rest := pem.Decode([]byte(text))
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block found (want -----BEGIN PUBLIC KEY-----)", ErrBadKey)
	}
	if block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%w: PEM block is %q, want \"PUBLIC KEY\"", ErrBadKey, block.Type)
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, fmt.Errorf("%w: unexpected data after the PEM block", ErrBadKey)
	}
	parsed, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	raw, ok := parsed.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: key is %T, want Ed25519", ErrBadKey, parsed)
	}
	return NewPublicKey(raw)
}

// ParsePrivateKeyPEM reads an Ed25519 private key from PEM "PRIVATE KEY"
// (PKCS#8).
func ParsePrivateKeyPEM(text string) (*PrivateKey, error) {
	block, rest := pem.Decode([]byte(text))
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block found (want -----BEGIN PRIVATE KEY-----)", ErrBadKey)
	}
	if block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: PEM block is %q, want \"PRIVATE KEY\"", ErrBadKey, block.Type)
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, fmt.Errorf("%w: unexpected data after the PEM block", ErrBadKey)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	priv, ok := parsed.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: key is %T, want Ed25519", ErrBadKey, parsed)
	}
	return newPrivateKey(priv)
}

// KeyIDFromPEM computes the protocol key id of a public key PEM text:
// "ed25519:" and the first 16 hex characters of the SHA-256 of the text
// with surrounding whitespace trimmed.
func KeyIDFromPEM(publicKeyPEM string) string {
	return "ed25519:" + HashBytes([]byte(strings.TrimSpace(publicKeyPEM)))[:16]
}

// ID returns the key id ("ed25519:" + 16 hex characters).
func (k *PublicKey) ID() string { return k.id }

// PEM returns the SPKI PEM text, with a trailing newline.
func (k *PublicKey) PEM() string { return k.pem }

// Raw returns the 32-byte public key.
func (k *PublicKey) Raw() ed25519.PublicKey { return append(ed25519.PublicKey(nil), k.key...) }

// Equal reports whether two public keys are the same key.
func (k *PublicKey) Equal(o *PublicKey) bool { return o != nil && k.key.Equal(o.key) }

// Public returns the public half.
func (k *PrivateKey) Public() *PublicKey { return k.pub }

// PEM returns the PKCS#8 PEM text of the private key.
func (k *PrivateKey) PEM() (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.key)
	if err != nil {
		return "", fmt.Errorf("%w: encode private key: %v", ErrBadKey, err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), nil
}

// Seed returns the 32-byte Ed25519 seed.
func (k *PrivateKey) Seed() []byte { return k.key.Seed() }

// Sign signs the ASCII bytes of a hex hash, as the protocol requires, and
// returns the signature entry for signer.
func (k *PrivateKey) Sign(hashHex, signer string) Signature {
	sig := ed25519.Sign(k.key, []byte(hashHex))
	return Signature{KeyID: k.pub.id, Alg: AlgEd25519, Signer: signer, Sig: base64.StdEncoding.EncodeToString(sig)}
}

// SignMessage signs arbitrary bytes and returns the standard base64 of the
// signature. Used by enrollment proofs and tests, never for protocol objects.
func (k *PrivateKey) SignMessage(msg []byte) string {
	return base64.StdEncoding.EncodeToString(ed25519.Sign(k.key, msg))
}

// VerifyMessage checks a standard base64 signature over msg.
func (k *PublicKey) VerifyMessage(msg []byte, sigB64 string) bool {
	sig, err := base64.StdEncoding.Strict().DecodeString(sigB64)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(k.key, msg, sig)
}
