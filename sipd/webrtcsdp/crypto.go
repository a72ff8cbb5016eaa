package webrtcsdp

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// Crypto is one a=crypto line (RFC 4568 section 9.1): tag, crypto suite, key parameters and session parameters.
type Crypto struct {
	Tag   int
	Suite string
	// KeyParams are the key parameters as written ("inline:<base64>[|lifetime][|MKI:len]", several separated
	// by ';'); Key is the master key and salt of the first one, decoded.
	KeyParams string
	Key       []byte
	// SessionParams are the optional session parameters (UNENCRYPTED_SRTP, KDR=..., ...), kept as written.
	SessionParams []string
}

// SuiteAES128SHA1_80 is the suite every SDES endpoint supports (RFC 4568 section 6.2.1) and the one the relay
// generates.
const SuiteAES128SHA1_80 = "AES_CM_128_HMAC_SHA1_80"

// keyLen is the master key plus salt length of the suites the relay knows (RFC 4568 section 6.2, RFC 6188,
// RFC 7714); other suites are parsed but their key length is not checked.
var keyLen = map[string]int{
	"AES_CM_128_HMAC_SHA1_80": 30, "AES_CM_128_HMAC_SHA1_32": 30,
	"AES_192_CM_HMAC_SHA1_80": 38, "AES_192_CM_HMAC_SHA1_32": 38,
	"AES_256_CM_HMAC_SHA1_80": 46, "AES_256_CM_HMAC_SHA1_32": 46,
	"AEAD_AES_128_GCM": 28, "AEAD_AES_256_GCM": 44,
}

// ParseCrypto reads the value of an a=crypto line (without "crypto:").
func ParseCrypto(v string) (Crypto, error) {
	f := strings.Fields(v)
	if len(f) < 3 {
		return Crypto{}, fmt.Errorf("a=crypto:%s: want \"<tag> <suite> <key-params>\"", truncate(v))
	}
	tag, err := strconv.ParseUint(f[0], 10, 31)
	if err != nil || len(f[0]) > 9 {
		return Crypto{}, fmt.Errorf("a=crypto:%s: bad tag %q", truncate(v), truncate(f[0]))
	}
	c := Crypto{Tag: int(tag), Suite: f[1], KeyParams: f[2], SessionParams: f[3:]}
	first, _, _ := strings.Cut(f[2], ";")
	method, info, ok := strings.Cut(first, ":")
	if !ok || method != "inline" {
		return Crypto{}, fmt.Errorf("a=crypto:%s: key method is not inline", truncate(v))
	}
	b64, _, _ := strings.Cut(info, "|")
	// RFC 4568 keys are padded base64, but some UAs leave the padding off.
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(b64)
	}
	if err != nil {
		return Crypto{}, fmt.Errorf("a=crypto:%s: key is not base64", truncate(v))
	}
	if n, known := keyLen[c.Suite]; known && len(key) != n {
		return Crypto{}, fmt.Errorf("a=crypto:%s: %s wants %d bytes of key and salt, got %d", truncate(v), c.Suite, n, len(key))
	}
	c.Key = key
	return c, nil
}

// String is the a=crypto value (without "crypto:").
func (c Crypto) String() string {
	s := strconv.Itoa(c.Tag) + " " + c.Suite + " " + c.KeyParams
	for _, p := range c.SessionParams {
		s += " " + p
	}
	return s
}

// NewCrypto makes a fresh AES_CM_128_HMAC_SHA1_80 line with a master key and salt from crypto/rand.
func NewCrypto(tag int) (Crypto, error) {
	key := make([]byte, keyLen[SuiteAES128SHA1_80])
	if _, err := rand.Read(key); err != nil {
		return Crypto{}, fmt.Errorf("sdes key: %w", err)
	}
	return Crypto{
		Tag:       tag,
		Suite:     SuiteAES128SHA1_80,
		KeyParams: "inline:" + base64.StdEncoding.EncodeToString(key),
		Key:       key,
	}, nil
}
