package protect

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"net/netip"
	"sync"
)

// Binder ties a digest nonce to the address its challenge was sent to,
// through the challenge's opaque parameter, which clients return
// unchanged with their credentials (RFC 7616 §3.3, §3.4). Only whoever
// receives packets at that address can hold a nonce and opaque that check
// for it: someone forging the address never sees the challenges sent
// there. That is what lets the filter tell the owner of a banned address
// from the flood made in its name, from the raw bytes, before any parse.
//
// The opaque is not checked anywhere else: a phone that moved to a new
// address keeps authenticating as before, its opaque just does not help
// it past a ban on the new one.
type Binder struct {
	pool sync.Pool
}

// opaqueLen is the MAC length kept: 128 bits, 22 characters of base64.
const opaqueLen = 16

// NewBinder returns a Binder keyed by key (a key of its own, derived from
// the server secret, so instances sharing the secret accept each other's
// opaques).
func NewBinder(key []byte) *Binder {
	k := append([]byte(nil), key...)
	return &Binder{pool: sync.Pool{New: func() any { return hmac.New(sha256.New, k) }}}
}

func (b *Binder) mac(dst []byte, src netip.Addr, nonce []byte) []byte {
	h := b.pool.Get().(hash.Hash)
	defer b.pool.Put(h)
	h.Reset()
	a := src.Unmap().As16()
	h.Write(a[:])
	h.Write(nonce)
	return h.Sum(dst)[:opaqueLen]
}

// Opaque is the opaque to send with a challenge carrying nonce to src.
func (b *Binder) Opaque(src netip.Addr, nonce string) string {
	var buf [sha256.Size]byte
	return base64.RawURLEncoding.EncodeToString(b.mac(buf[:0], src, []byte(nonce)))
}

// Check tells whether opaque is the one Opaque gives for src and nonce.
func (b *Binder) Check(src netip.Addr, nonce, opaque []byte) bool {
	if b == nil || len(nonce) == 0 || base64.RawURLEncoding.DecodedLen(len(opaque)) != opaqueLen {
		return false
	}
	var got [opaqueLen + 2]byte
	n, err := base64.RawURLEncoding.Decode(got[:], opaque)
	if err != nil || n != opaqueLen {
		return false
	}
	var buf [sha256.Size]byte
	return hmac.Equal(got[:n], b.mac(buf[:0], src, nonce))
}
