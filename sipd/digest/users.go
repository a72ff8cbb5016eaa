// Package digest implements HTTP digest authentication for SIP (RFC 7616,
// RFC 2617, RFC 3261 §22) and the users file it checks against.
package digest

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
)

// Credential is what the server knows about one user. Either Password is
// set, or one HA1 per algorithm (hex, computed over user:realm:password).
type Credential struct {
	Password string
	HA1      map[string]string // algorithm → hex HA1
}

// Users is a reloadable set of credentials read from a file.
//
// File format, one user per line, '#' starts a comment:
//
//	alice  password=secret
//	bob    ha1-md5=<hex> ha1-sha256=<hex>
//
// A bare second field is taken as a password.
//
// A million users are held compactly: HA1s as bytes, not hex, in one
// slice, and the names in one string the index's keys point into, so a
// user costs about 110 bytes rather than 560.
type Users struct {
	path string
	mu   sync.RWMutex
	t    *userTable
}

type userTable struct {
	idx   map[string]uint32
	users []user
	names string // every name, back to back; idx keys are slices of it
}

type user struct {
	password string
	md5      [md5.Size]byte
	sha256   [sha256.Size]byte
	has      uint8 // hasMD5 | hasSHA256
}

const (
	hasMD5 = 1 << iota
	hasSHA256
)

func (t *userTable) lookup(name string) (Credential, bool) {
	if t == nil {
		return Credential{}, false
	}
	i, ok := t.idx[name]
	if !ok {
		return Credential{}, false
	}
	u := &t.users[i]
	c := Credential{Password: u.password}
	if u.has != 0 {
		c.HA1 = make(map[string]string, 2)
		if u.has&hasMD5 != 0 {
			c.HA1[MD5] = hex.EncodeToString(u.md5[:])
		}
		if u.has&hasSHA256 != 0 {
			c.HA1[SHA256] = hex.EncodeToString(u.sha256[:])
		}
	}
	return c, true
}

// NewUsers returns a fixed in-memory set (tests, embedded use). An HA1
// that is not hex of the algorithm's length is ignored.
func NewUsers(m map[string]Credential) *Users {
	t := &userTable{idx: make(map[string]uint32, len(m)), users: make([]user, 0, len(m))}
	for name, c := range m {
		u := user{password: c.Password}
		for alg, h := range c.HA1 {
			switch alg {
			case MD5:
				if n, err := hex.Decode(u.md5[:], []byte(h)); err == nil && n == md5.Size && len(h) == 2*md5.Size {
					u.has |= hasMD5
				}
			case SHA256:
				if n, err := hex.Decode(u.sha256[:], []byte(h)); err == nil && n == sha256.Size && len(h) == 2*sha256.Size {
					u.has |= hasSHA256
				}
			}
		}
		t.idx[name] = uint32(len(t.users))
		t.users = append(t.users, u)
	}
	return &Users{t: t}
}

// LoadUsers reads path; Reload reads it again.
func LoadUsers(path string) (*Users, error) {
	u := &Users{path: path}
	if err := u.Reload(); err != nil {
		return nil, err
	}
	return u, nil
}

// Reload replaces the set with the file's current content; on error the old
// set stays, so a half-written file cannot lock everyone out.
func (u *Users) Reload() error {
	if u.path == "" {
		return nil
	}
	data, err := os.ReadFile(u.path)
	if err != nil {
		return fmt.Errorf("read users file: %w", err)
	}
	t, err := parseTable(data)
	if err != nil {
		return fmt.Errorf("users file %s: %w", u.path, err)
	}
	u.mu.Lock()
	u.t = t
	u.mu.Unlock()
	return nil
}

// Path is the file the set was read from.
func (u *Users) Path() string { return u.path }

// Len is the number of users.
func (u *Users) Len() int {
	u.mu.RLock()
	defer u.mu.RUnlock()
	if u.t == nil {
		return 0
	}
	return len(u.t.users)
}

// Lookup finds a user.
func (u *Users) Lookup(name string) (Credential, bool) {
	u.mu.RLock()
	t := u.t
	u.mu.RUnlock()
	return t.lookup(name)
}

// ParseUsers parses users-file text.
func ParseUsers(data []byte) (map[string]Credential, error) {
	t, err := parseTable(data)
	if err != nil {
		return nil, err
	}
	m := make(map[string]Credential, len(t.users))
	for name := range t.idx {
		m[name], _ = t.lookup(name)
	}
	return m, nil
}

func parseTable(data []byte) (*userTable, error) {
	lines := bytes.Count(data, []byte{'\n'}) + 1
	t := &userTable{idx: make(map[string]uint32, lines), users: make([]user, 0, lines)}
	// Names first go into one buffer; the index is built over it once it
	// is a string, so the keys share it.
	names := make([]byte, 0, len(data)/8)
	var ends, at []uint32 // end of each name in names, its line
	var fields [8][]byte
	for line := 1; len(data) > 0; line++ {
		text := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			text, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if i := bytes.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		f := fieldsOf(text, fields[:0])
		if len(f) == 0 {
			continue
		}
		if len(f) < 2 {
			return nil, fmt.Errorf("line %d: user %q has no secret", line, f[0])
		}
		name := f[0]
		var u user
		for _, kv := range f[1:] {
			k, v, ok := bytes.Cut(kv, []byte("="))
			if !ok {
				k, v = []byte("password"), kv
			}
			switch strings.ToLower(string(k)) {
			case "password":
				// An empty password is one anyone can answer with.
				if len(v) == 0 {
					return nil, fmt.Errorf("line %d: empty password for %q", line, name)
				}
				u.password = string(v)
			case "ha1-md5", "ha1":
				if len(v) != 2*md5.Size || !isHex(string(v)) {
					return nil, fmt.Errorf("line %d: %s HA1 for %q is not %d hex digits", line, MD5, name, 2*hashLen(MD5))
				}
				hex.Decode(u.md5[:], v)
				u.has |= hasMD5
			case "ha1-sha256":
				if len(v) != 2*sha256.Size || !isHex(string(v)) {
					return nil, fmt.Errorf("line %d: %s HA1 for %q is not %d hex digits", line, SHA256, name, 2*hashLen(SHA256))
				}
				hex.Decode(u.sha256[:], v)
				u.has |= hasSHA256
			default:
				return nil, fmt.Errorf("line %d: unknown field %q", line, k)
			}
		}
		names = append(names, name...)
		ends = append(ends, uint32(len(names)))
		at = append(at, uint32(line))
		t.users = append(t.users, u)
	}
	t.names = string(names)
	start := uint32(0)
	for i, end := range ends {
		name := t.names[start:end]
		if _, dup := t.idx[name]; dup {
			return nil, fmt.Errorf("line %d: user %q listed twice", at[i], name)
		}
		t.idx[name] = uint32(i)
		start = end
	}
	t.users = slices.Clip(t.users)
	return t, nil
}

// fieldsOf splits s at spaces and tabs, into f.
func fieldsOf(s []byte, f [][]byte) [][]byte {
	for {
		i := 0
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\v' || s[i] == '\f') {
			i++
		}
		s = s[i:]
		if len(s) == 0 {
			return f
		}
		j := 0
		for j < len(s) && !(s[j] == ' ' || s[j] == '\t' || s[j] == '\r' || s[j] == '\v' || s[j] == '\f') {
			j++
		}
		f = append(f, s[:j])
		s = s[j:]
	}
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= '0' && ch <= '9' || ch >= 'a' && ch <= 'f' || ch >= 'A' && ch <= 'F') {
			return false
		}
	}
	return true
}
