package digest

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Algorithms.
const (
	MD5    = "MD5"
	SHA256 = "SHA-256"
)

// Sentinel errors of Verify. ErrStale means the credentials were right but
// the nonce expired: challenge again with stale=true.
var (
	ErrNoCredentials = errors.New("no credentials")
	ErrMalformed     = errors.New("malformed credentials")
	ErrUnknownUser   = errors.New("unknown user")
	ErrBadNonce      = errors.New("nonce not issued by this server")
	ErrStale         = errors.New("nonce expired")
	ErrReplay        = errors.New("nonce count replayed")
	ErrWrongRealm    = errors.New("wrong realm")
	ErrBadResponse   = errors.New("wrong response")
	ErrUnsupported   = errors.New("unsupported algorithm or qop")
	ErrURIMismatch   = errors.New("digest uri is not the request's")
)

func hashLen(alg string) int {
	if alg == SHA256 {
		return sha256.Size
	}
	return md5.Size
}

func newHash(alg string) hash.Hash {
	if alg == SHA256 {
		return sha256.New()
	}
	return md5.New()
}

// H is the hex digest of s under alg.
func H(alg, s string) string {
	h := newHash(alg)
	h.Write([]byte(s))
	return hex.EncodeToString(h.Sum(nil))
}

// HA1 computes user:realm:password under alg, as stored in a users file.
func HA1(alg, user, realm, password string) string {
	return H(alg, user+":"+realm+":"+password)
}

// Authenticator issues challenges and checks answers. Nonces carry their
// issue time and an HMAC over it, so any server sharing the secret can
// check them without state; only the nonce counts seen are kept, to refuse
// replays, and they are dropped when the nonce expires.
type Authenticator struct {
	realm string
	algs  []string
	ttl   time.Duration
	key   []byte
	users *Users
	now   func() time.Time

	mu   sync.Mutex
	seen map[string]seenNonce
	ops  int

	// decoy stands in for the HA1 of an unknown user, so that checking
	// one costs what checking a wrong password costs.
	decoy map[string]string
}

type seenNonce struct {
	nc      uint64
	expires time.Time
}

// Options configure an Authenticator.
type Options struct {
	Realm      string
	Algorithms []string // offered in this order; empty means SHA-256 and MD5
	TTL        time.Duration
	Secret     []byte // empty: a random one, so nonces die with the process
	Now        func() time.Time
}

// New builds an Authenticator over users.
func New(users *Users, o Options) (*Authenticator, error) {
	a := &Authenticator{realm: o.Realm, algs: o.Algorithms, ttl: o.TTL, key: o.Secret, users: users, now: o.Now, seen: map[string]seenNonce{}}
	if len(a.algs) == 0 {
		a.algs = []string{SHA256, MD5}
	}
	for _, alg := range a.algs {
		if alg != MD5 && alg != SHA256 {
			return nil, fmt.Errorf("algorithm %q: %w", alg, ErrUnsupported)
		}
	}
	if a.ttl <= 0 {
		a.ttl = 5 * time.Minute
	}
	if a.now == nil {
		a.now = time.Now
	}
	if len(a.key) == 0 {
		a.key = make([]byte, 32)
		if _, err := rand.Read(a.key); err != nil {
			return nil, fmt.Errorf("nonce secret: %w", err)
		}
	}
	var salt [16]byte
	rand.Read(salt[:])
	a.decoy = map[string]string{MD5: H(MD5, hex.EncodeToString(salt[:])), SHA256: H(SHA256, hex.EncodeToString(salt[:]))}
	return a, nil
}

// Realm is the realm challenged with.
func (a *Authenticator) Realm() string { return a.realm }

// Users is the credential set checked against.
func (a *Authenticator) Users() *Users { return a.users }

const nonceRaw = 8 + 8 + 16 // time, random, mac

// Nonce issues a fresh nonce.
func (a *Authenticator) Nonce() string {
	var b [nonceRaw]byte
	binary.BigEndian.PutUint64(b[:8], uint64(a.now().UnixNano()))
	rand.Read(b[8:16])
	copy(b[16:], a.mac(b[:16]))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (a *Authenticator) mac(b []byte) []byte {
	m := hmac.New(sha256.New, a.key)
	m.Write([]byte(a.realm))
	m.Write(b)
	return m.Sum(nil)[:16]
}

// checkNonce tells whether the nonce is ours and whether it is still fresh.
func (a *Authenticator) checkNonce(n string) (issued time.Time, err error) {
	b, err := base64.RawURLEncoding.DecodeString(n)
	if err != nil || len(b) != nonceRaw {
		return time.Time{}, ErrBadNonce
	}
	if !hmac.Equal(b[16:], a.mac(b[:16])) {
		return time.Time{}, ErrBadNonce
	}
	issued = time.Unix(0, int64(binary.BigEndian.Uint64(b[:8])))
	age := a.now().Sub(issued)
	if age > a.ttl || age < -time.Minute {
		return issued, ErrStale
	}
	return issued, nil
}

// Challenges returns one header value per offered algorithm, for
// WWW-Authenticate (401) or Proxy-Authenticate (407).
func (a *Authenticator) Challenges(stale bool) []string {
	nonce := a.Nonce()
	out := make([]string, 0, len(a.algs))
	for _, alg := range a.algs {
		var sb strings.Builder
		sb.WriteString(`Digest realm="`)
		sb.WriteString(a.realm)
		sb.WriteString(`", nonce="`)
		sb.WriteString(nonce)
		sb.WriteString(`", algorithm=`)
		sb.WriteString(alg)
		sb.WriteString(`, qop="auth"`)
		if stale {
			sb.WriteString(`, stale=true`)
		}
		out = append(out, sb.String())
	}
	return out
}

// Credentials are the parsed fields of an Authorization header.
type Credentials struct {
	Username, Realm, Nonce, URI, Response, Algorithm, Cnonce, QOP, NC, Opaque string
}

// Parse reads an Authorization or Proxy-Authorization value.
func Parse(v string) (Credentials, error) {
	var c Credentials
	v = strings.TrimSpace(v)
	scheme, rest, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Digest") {
		return c, fmt.Errorf("scheme %q: %w", scheme, ErrMalformed)
	}
	for rest = strings.TrimSpace(rest); rest != ""; {
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			return c, fmt.Errorf("parameter without value: %w", ErrMalformed)
		}
		key := strings.ToLower(strings.TrimSpace(rest[:eq]))
		rest = strings.TrimSpace(rest[eq+1:])
		var val string
		if strings.HasPrefix(rest, `"`) {
			end := strings.IndexByte(rest[1:], '"')
			if end < 0 {
				return c, fmt.Errorf("unterminated quote: %w", ErrMalformed)
			}
			val = rest[1 : end+1]
			rest = rest[end+2:]
		} else {
			end := strings.IndexByte(rest, ',')
			if end < 0 {
				end = len(rest)
			}
			val = strings.TrimSpace(rest[:end])
			rest = rest[end:]
		}
		rest = strings.TrimSpace(rest)
		if strings.HasPrefix(rest, ",") {
			rest = strings.TrimSpace(rest[1:])
		} else if rest != "" {
			return c, fmt.Errorf("missing comma: %w", ErrMalformed)
		}
		switch key {
		case "username":
			c.Username = val
		case "realm":
			c.Realm = val
		case "nonce":
			c.Nonce = val
		case "uri":
			c.URI = val
		case "response":
			c.Response = val
		case "algorithm":
			c.Algorithm = val
		case "cnonce":
			c.Cnonce = val
		case "qop":
			c.QOP = val
		case "nc":
			c.NC = val
		case "opaque":
			c.Opaque = val
		}
	}
	if c.Username == "" || c.Nonce == "" || c.Response == "" || c.URI == "" {
		return c, fmt.Errorf("username, nonce, uri and response are required: %w", ErrMalformed)
	}
	return c, nil
}

// Verify checks one or more Authorization values for method against our
// realm. It returns the authenticated user name. uriOK, when not nil,
// tells whether the credentials' uri names the request's Request-URI
// (RFC 3261 §22.4); ErrURIMismatch if not.
func (a *Authenticator) Verify(method string, values []string, uriOK func(uri string) bool) (string, error) {
	if len(values) == 0 {
		return "", ErrNoCredentials
	}
	var first error
	for _, v := range values {
		c, err := Parse(v)
		if err == nil && c.Realm != a.realm {
			err = ErrWrongRealm
		}
		if err == nil && uriOK != nil && !uriOK(c.URI) {
			return c.Username, fmt.Errorf("uri %q: %w", c.URI, ErrURIMismatch)
		}
		if err == nil {
			user, err := a.verify(method, c)
			if err == nil {
				return user, nil
			}
			return c.Username, err
		}
		if first == nil {
			first = err
		}
	}
	// None for our realm: as if none were sent (they are for another hop).
	if errors.Is(first, ErrWrongRealm) {
		return "", ErrNoCredentials
	}
	return "", first
}

func (a *Authenticator) verify(method string, c Credentials) (string, error) {
	alg := c.Algorithm
	if alg == "" {
		alg = MD5
	}
	offered := false
	for _, x := range a.algs {
		offered = offered || strings.EqualFold(x, alg)
	}
	if !offered {
		return "", fmt.Errorf("algorithm %q: %w", alg, ErrUnsupported)
	}
	if strings.EqualFold(alg, SHA256) {
		alg = SHA256
	} else {
		alg = MD5
	}
	// Without qop there is no nonce count, and so no replay protection.
	if c.QOP != "auth" || c.Cnonce == "" || len(c.NC) != 8 {
		return "", fmt.Errorf("qop %q: %w", c.QOP, ErrUnsupported)
	}
	nc, err := strconv.ParseUint(c.NC, 16, 32)
	if err != nil || nc == 0 {
		return "", fmt.Errorf("nc %q: %w", c.NC, ErrMalformed)
	}
	// The nonce first: a nonce we never issued gets a new challenge
	// whoever the user is, so the answer does not tell which names exist.
	issued, nerr := a.checkNonce(c.Nonce)
	if errors.Is(nerr, ErrBadNonce) {
		return "", nerr
	}
	cred, known := a.users.Lookup(c.Username)
	ha1 := a.decoy[alg]
	if known {
		if ha1 = cred.HA1[alg]; ha1 == "" {
			if cred.Password == "" {
				return "", fmt.Errorf("no %s secret for %q: %w", alg, c.Username, ErrUnsupported)
			}
			ha1 = HA1(alg, c.Username, a.realm, cred.Password)
		}
	}
	// An unknown user costs the same hashing as a wrong password, and
	// ends the same way (the caller answers both with 403).
	ha2 := H(alg, method+":"+c.URI)
	want := H(alg, ha1+":"+c.Nonce+":"+c.NC+":"+c.Cnonce+":"+c.QOP+":"+ha2)
	match := subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(c.Response))) == 1
	if !known {
		return "", ErrUnknownUser
	}
	if !match {
		return "", ErrBadResponse
	}
	// Stale is reported only for a right answer: the client knows the
	// password and can retry silently with the new nonce.
	if nerr != nil {
		return "", nerr
	}
	if err := a.useCount(c.Nonce, nc, issued.Add(a.ttl)); err != nil {
		return "", err
	}
	return c.Username, nil
}

// useCount accepts a nonce count only if it is above every count seen with
// that nonce, which is what makes a captured request useless to replay.
func (a *Authenticator) useCount(nonce string, nc uint64, expires time.Time) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ops++
	if a.ops%1024 == 0 {
		now := a.now()
		for k, s := range a.seen {
			if now.After(s.expires) {
				delete(a.seen, k)
			}
		}
	}
	s, ok := a.seen[nonce]
	if ok && nc <= s.nc {
		return ErrReplay
	}
	a.seen[nonce] = seenNonce{nc: nc, expires: expires}
	return nil
}
