package srtpleg

import (
	"fmt"

	"github.com/pion/srtp/v3"
)

// sdesSuites are the a=crypto suites (RFC 4568 section 6.2) the relay bridges.
var sdesSuites = map[string]srtp.ProtectionProfile{
	"AES_CM_128_HMAC_SHA1_80": srtp.ProtectionProfileAes128CmHmacSha1_80,
	"AES_CM_128_HMAC_SHA1_32": srtp.ProtectionProfileAes128CmHmacSha1_32,
}

// Key is one direction's SDES keying: the a=crypto suite name and its inline master key and salt, decoded (as
// sipd/webrtcsdp's Crypto.Suite and Crypto.Key hold them).
type Key struct {
	Suite string
	Key   []byte
}

// NewSDES makes the session of an SDES leg: local is the a=crypto line the relay announced (it encrypts what
// the relay sends), remote the line the endpoint announced (it decrypts what the endpoint sends).
func NewSDES(local, remote Key) (*Session, error) {
	lp, lk, ls, err := splitKey(local)
	if err != nil {
		return nil, fmt.Errorf("local a=crypto: %w", err)
	}
	rp, rk, rs, err := splitKey(remote)
	if err != nil {
		return nil, fmt.Errorf("remote a=crypto: %w", err)
	}
	return newSession(lp, rp, lk, ls, rk, rs)
}

func splitKey(k Key) (srtp.ProtectionProfile, []byte, []byte, error) {
	p, ok := sdesSuites[k.Suite]
	if !ok {
		return 0, nil, nil, fmt.Errorf("suite %q is not supported", k.Suite)
	}
	keyLen, err := p.KeyLen()
	if err != nil {
		return 0, nil, nil, err
	}
	saltLen, err := p.SaltLen()
	if err != nil {
		return 0, nil, nil, err
	}
	if len(k.Key) != keyLen+saltLen {
		return 0, nil, nil, fmt.Errorf("%s wants %d bytes of key and salt, got %d", k.Suite, keyLen+saltLen, len(k.Key))
	}
	return p, k.Key[:keyLen], k.Key[keyLen:], nil
}
