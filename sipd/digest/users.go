// Package digest implements HTTP digest authentication for SIP (RFC 7616,
// RFC 2617, RFC 3261 §22) and the users file it checks against.
package digest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
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
type Users struct {
	path string
	mu   sync.RWMutex
	m    map[string]Credential
}

// NewUsers returns a fixed in-memory set (tests, embedded use).
func NewUsers(m map[string]Credential) *Users {
	return &Users{m: m}
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
	m, err := ParseUsers(data)
	if err != nil {
		return fmt.Errorf("users file %s: %w", u.path, err)
	}
	u.mu.Lock()
	u.m = m
	u.mu.Unlock()
	return nil
}

// Path is the file the set was read from.
func (u *Users) Path() string { return u.path }

// Len is the number of users.
func (u *Users) Len() int {
	u.mu.RLock()
	defer u.mu.RUnlock()
	return len(u.m)
}

// Lookup finds a user.
func (u *Users) Lookup(name string) (Credential, bool) {
	u.mu.RLock()
	c, ok := u.m[name]
	u.mu.RUnlock()
	return c, ok
}

// ParseUsers parses users-file text.
func ParseUsers(data []byte) (map[string]Credential, error) {
	m := map[string]Credential{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		f := strings.Fields(text)
		if len(f) == 0 {
			continue
		}
		if len(f) < 2 {
			return nil, fmt.Errorf("line %d: user %q has no secret", line, f[0])
		}
		name := f[0]
		if _, dup := m[name]; dup {
			return nil, fmt.Errorf("line %d: user %q listed twice", line, name)
		}
		var c Credential
		for _, kv := range f[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				k, v = "password", kv
			}
			switch strings.ToLower(k) {
			case "password":
				c.Password = v
			case "ha1-md5", "ha1":
				c.setHA1(MD5, v)
			case "ha1-sha256":
				c.setHA1(SHA256, v)
			default:
				return nil, fmt.Errorf("line %d: unknown field %q", line, k)
			}
		}
		for alg, h := range c.HA1 {
			if len(h) != hashLen(alg)*2 || !isHex(h) {
				return nil, fmt.Errorf("line %d: %s HA1 for %q is not %d hex digits", line, alg, name, hashLen(alg)*2)
			}
		}
		m[name] = c
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return m, nil
}

func (c *Credential) setHA1(alg, v string) {
	if c.HA1 == nil {
		c.HA1 = map[string]string{}
	}
	c.HA1[alg] = strings.ToLower(v)
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
