// Package sealbox turns a password into an AES-256-GCM key with
// argon2id and seals and opens values under it. It is shared by the
// built-in credential store and the cluster storage module, so both
// derive keys under the same parameter limits and use the same nonce
// discipline: a fresh random 96-bit nonce for every seal.
package sealbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"

	"golang.org/x/crypto/argon2"
)

// Sizes fixed by the construction. Changing any of them changes every
// format built on this package.
const (
	SaltLen  = 16 // argon2id salt
	KeyLen   = 32 // AES-256
	NonceLen = 12 // standard GCM nonce
	TagLen   = 16 // GCM authentication tag
)

// Algorithm names the key derivation, for formats that record it.
const Algorithm = "argon2id"

// KDFParams are the argon2id parameters. Formats record them next to
// the salt, so a key can be derived again with the same cost.
type KDFParams struct {
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

// Limits bound the parameters Derive accepts, so that damaged or
// hostile parameters (read from a file or a database) cannot make it
// allocate or compute without limit.
type Limits struct {
	MaxTime      uint32
	MaxMemoryKiB uint32
}

// DefaultLimits are generous for real use: argon2id with 4 GiB is
// already far beyond any sensible setting.
var DefaultLimits = Limits{MaxTime: 100, MaxMemoryKiB: 4 << 20}

// Validate reports whether p can be used within limits.
func (p KDFParams) Validate(limits Limits) error {
	switch {
	case p.Time < 1:
		return errors.New("argon2id time must be at least 1")
	case p.Time > limits.MaxTime:
		return fmt.Errorf("argon2id time %d is above the limit of %d", p.Time, limits.MaxTime)
	case p.Threads < 1:
		return errors.New("argon2id threads must be at least 1")
	case p.MemoryKiB < 8*uint32(p.Threads):
		// argon2 needs at least 8 KiB per lane; refuse rather than let
		// the library silently change the parameters.
		return fmt.Errorf("argon2id memory %d KiB is below the minimum of 8 KiB per thread", p.MemoryKiB)
	case p.MemoryKiB > limits.MaxMemoryKiB:
		return fmt.Errorf("argon2id memory %d KiB is above the limit of %d KiB", p.MemoryKiB, limits.MaxMemoryKiB)
	}
	return nil
}

// Box seals and opens values under one derived key. It is safe for
// concurrent use.
type Box struct {
	aead cipher.AEAD
}

// Derive turns password into a Box. The parameters are checked against
// limits and the salt's length before the (expensive) derivation runs.
// The caller may clear password afterwards: the Box keeps only the
// cipher's expanded key.
func Derive(password, salt []byte, p KDFParams, limits Limits) (*Box, error) {
	if err := p.Validate(limits); err != nil {
		return nil, err
	}
	if len(salt) != SaltLen {
		return nil, fmt.Errorf("salt is %d bytes, want %d", len(salt), SaltLen)
	}
	if len(password) == 0 {
		return nil, errors.New("the password must not be empty")
	}
	key := argon2.IDKey(password, salt, p.Time, p.MemoryKiB, p.Threads, KeyLen)
	defer clear(key) // the AEAD keeps its own expanded key
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Box{aead: aead}, nil
}

// Seal encrypts plaintext under a fresh random nonce, binding it to ad
// (additional data: authenticated, not encrypted). Random nonces are
// safe for far more seals than any key here will see (2^32 under one
// key keeps the collision risk below 2^-32).
func (b *Box) Seal(plaintext, ad []byte) (nonce, ciphertext []byte) {
	nonce = Random(NonceLen)
	return nonce, b.aead.Seal(nil, nonce, plaintext, ad)
}

// ErrOpen means a sealed value does not authenticate: a wrong key, a
// different additional data or a modified nonce or ciphertext. The
// cases are indistinguishable on purpose.
var ErrOpen = errors.New("sealed value does not authenticate")

// Open decrypts and authenticates a value sealed with the same key and
// ad. Any failure is ErrOpen.
func (b *Box) Open(nonce, ciphertext, ad []byte) ([]byte, error) {
	if len(nonce) != NonceLen || len(ciphertext) < TagLen {
		return nil, ErrOpen
	}
	plain, err := b.aead.Open(nil, nonce, ciphertext, ad)
	if err != nil {
		return nil, ErrOpen
	}
	return plain, nil
}

// SealJoined is Seal with the nonce prepended to the ciphertext, for
// stores that keep one opaque value.
func (b *Box) SealJoined(plaintext, ad []byte) []byte {
	nonce, ct := b.Seal(plaintext, ad)
	return append(nonce, ct...)
}

// OpenJoined opens a value made by SealJoined.
func (b *Box) OpenJoined(sealed, ad []byte) ([]byte, error) {
	if len(sealed) < NonceLen+TagLen {
		return nil, ErrOpen
	}
	return b.Open(sealed[:NonceLen], sealed[NonceLen:], ad)
}

// Random returns n bytes from the system CSPRNG, for salts and nonces.
// Since Go 1.24 crypto/rand.Read never returns an error (it aborts the
// program instead), so there is nothing to handle.
func Random(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
