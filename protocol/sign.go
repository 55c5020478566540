package protocol

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
)

// Signature failures, wrapped by *SignatureError.
var (
	ErrSignatureMissing = errors.New("no signature by this signer")
	ErrKeyIDMismatch    = errors.New("signature key id does not match the verification key")
	ErrBadAlgorithm     = errors.New("unsupported signature algorithm")
	ErrBadSignature     = errors.New("signature does not verify")
)

// SignatureError says which signature of which object failed and why.
type SignatureError struct {
	Object string // "contract" or "receipt"
	Signer string // "org", "plane" or "runner"
	KeyID  string // the key id the verifier expected
	Err    error
}

func (e *SignatureError) Error() string {
	return fmt.Sprintf("%s signature by %s (key %s): %v", e.Object, e.Signer, e.KeyID, e.Err)
}

func (e *SignatureError) Unwrap() error { return e.Err }

// Sign appends a signature by key over the contract hash. The plane signs
// contracts with signer "plane".
func (c *Contract) Sign(key *PrivateKey, signer string) error {
	h, err := c.Hash()
	if err != nil {
		return fmt.Errorf("hash contract: %w", err)
	}
	c.Signatures = append(c.Signatures, key.Sign(h, signer))
	return nil
}

// VerifySignature checks the contract's signature by signer under key.
func (c *Contract) VerifySignature(signer string, key *PublicKey) error {
	h, err := c.Hash()
	if err != nil {
		return fmt.Errorf("hash contract: %w", err)
	}
	return verifySignature("contract", c.Signatures, signer, key, h)
}

// Sign appends a signature by key over the receipt's unsigned hash: the
// runner signs first, the plane countersigns the same payload.
func (r *Receipt) Sign(key *PrivateKey, signer string) error {
	h, err := r.Hash()
	if err != nil {
		return fmt.Errorf("hash receipt: %w", err)
	}
	r.Signatures = append(r.Signatures, key.Sign(h, signer))
	return nil
}

// VerifySignature checks the receipt's signature by signer under key.
func (r *Receipt) VerifySignature(signer string, key *PublicKey) error {
	h, err := r.Hash()
	if err != nil {
		return fmt.Errorf("hash receipt: %w", err)
	}
	return verifySignature("receipt", r.Signatures, signer, key, h)
}

// verifySignature finds the first signature by signer (as the original
// does), checks its key id against key and verifies it over the ASCII bytes
// of hashHex.
func verifySignature(object string, sigs []Signature, signer string, key *PublicKey, hashHex string) error {
	fail := func(err error) error {
		return &SignatureError{Object: object, Signer: signer, KeyID: key.ID(), Err: err}
	}
	for _, s := range sigs {
		if s.Signer != signer {
			continue
		}
		if s.Alg != AlgEd25519 {
			return fail(fmt.Errorf("%w: %q", ErrBadAlgorithm, s.Alg))
		}
		if s.KeyID != key.ID() {
			return fail(fmt.Errorf("%w: signature names %s", ErrKeyIDMismatch, s.KeyID))
		}
		raw, err := base64.StdEncoding.Strict().DecodeString(s.Sig)
		if err != nil || len(raw) != ed25519.SignatureSize {
			return fail(fmt.Errorf("%w: not a base64 Ed25519 signature", ErrBadSignature))
		}
		if !ed25519.Verify(key.key, []byte(hashHex), raw) {
			return fail(ErrBadSignature)
		}
		return nil
	}
	return fail(ErrSignatureMissing)
}
