package proxy

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Route tokens. sipd's Record-Route URI carries the caller's tag (ftag)
// and an HMAC over the Call-ID and that tag (sxt), keyed by a key derived
// from sip.secret. An in-dialog request is routed only through a Route of
// ours whose token fits its own Call-ID and one of its tags, so only the
// parties of a dialog sipd record-routed can send requests through it,
// and any sipd sharing the secret can tell without shared state. The
// callee's tag cannot be covered: the callee learns the route set from
// the INVITE, before its tag exists.
const (
	paramFtag  = "ftag"
	paramToken = "sxt"
	tokenBytes = 16
	// tokenLen is the token's length in base64url without padding.
	tokenLen = (tokenBytes*8 + 5) / 6
)

// routeSigner makes and checks route tokens.
type routeSigner struct{ key []byte }

func newRouteSigner(key []byte) routeSigner {
	if len(key) == 0 {
		// No configured key: tokens are good for this process only.
		key = make([]byte, 32)
		rand.Read(key)
	}
	return routeSigner{key: key}
}

func (s routeSigner) mac(callID, ftag string) []byte {
	m := hmac.New(sha256.New, s.key)
	var n [binary.MaxVarintLen64]byte
	// Length-prefixed, so no Call-ID and tag pair reads as another.
	m.Write(n[:binary.PutUvarint(n[:], uint64(len(callID)))])
	m.Write([]byte(callID))
	m.Write([]byte(ftag))
	return m.Sum(nil)[:tokenBytes]
}

// sign returns the token for a dialog with this Call-ID and caller tag.
func (s routeSigner) sign(callID, ftag string) string {
	return base64.RawURLEncoding.EncodeToString(s.mac(callID, ftag))
}

// verify tells whether token was issued for this Call-ID and caller tag.
func (s routeSigner) verify(callID, ftag, token string) bool {
	if len(token) != tokenLen {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return false
	}
	return hmac.Equal(b, s.mac(callID, ftag))
}

// tokenVerdict is what a request's Route set says about its right to be
// routed in a dialog.
type tokenVerdict int

const (
	tokenMissing tokenVerdict = iota // no Route of ours carrying a token
	tokenInvalid                     // a token, but not for this request
	tokenValid
)

// checkRoute looks at the leading Route entries that name us (own of
// them) for a token: the first that carries one decides. A phone that
// prepends sipd as its outbound proxy to a dialog's route set sends one
// entry of ours without a token above the recorded one; that is fine,
// since every leading entry of ours is removed before forwarding.
func (s routeSigner) checkRoute(routes []sip.Header, own int, callID, fromTag, toTag string) tokenVerdict {
	for _, h := range routes[:own] {
		r, ok := h.(*sip.RouteHeader)
		if !ok {
			break
		}
		if _, ok := uriParam(&r.Address, paramToken); !ok {
			continue
		}
		if !s.fits(&r.Address, callID, fromTag, toTag) {
			return tokenInvalid
		}
		return tokenValid
	}
	return tokenMissing
}

// fits tells whether a route URI carries a token for this Call-ID and
// one of the two tags.
func (s routeSigner) fits(u *sip.Uri, callID, tagA, tagB string) bool {
	token, ok := uriParam(u, paramToken)
	if !ok {
		return false
	}
	raw, _ := uriParam(u, paramFtag)
	ftag, ok := unescapeParam(raw)
	return ok && (ftag == tagA || ftag == tagB) && s.verify(callID, ftag, token)
}

// uriParam reads a URI parameter; names are case-insensitive (RFC 3261
// §19.1.4), sipgo's lookup is not.
func uriParam(u *sip.Uri, name string) (string, bool) {
	for _, kv := range u.UriParams {
		if strings.EqualFold(kv.K, name) {
			return kv.V, true
		}
	}
	return "", false
}

// paramSafe reports a byte that may stand unescaped in a URI parameter
// value (RFC 3261 paramchar: unreserved and param-unreserved).
func paramSafe(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-_.!~*'()[]/:&+$", c) >= 0
}

// escapeParam makes a tag (a token, which may hold % and `) fit a URI
// parameter value.
func escapeParam(v string) string {
	n := 0
	for i := 0; i < len(v); i++ {
		if !paramSafe(v[i]) {
			n++
		}
	}
	if n == 0 {
		return v
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(v)+2*n)
	for i := 0; i < len(v); i++ {
		c := v[i]
		if paramSafe(c) {
			b = append(b, c)
			continue
		}
		b = append(b, '%', hex[c>>4], hex[c&15])
	}
	return string(b)
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// unescapeParam undoes escapeParam (any %XX escape); ok is false for a
// broken escape.
func unescapeParam(v string) (string, bool) {
	if strings.IndexByte(v, '%') < 0 {
		return v, true
	}
	b := make([]byte, 0, len(v))
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			b = append(b, v[i])
			continue
		}
		if i+2 >= len(v) {
			return "", false
		}
		hi, ok1 := unhex(v[i+1])
		lo, ok2 := unhex(v[i+2])
		if !ok1 || !ok2 {
			return "", false
		}
		b = append(b, hi<<4|lo)
		i += 2
	}
	return string(b), true
}
