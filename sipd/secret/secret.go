// Package secret holds sipd's long-lived secret: the key behind the HMACs
// that sipd puts in what it hands out (digest nonces, Record-Route
// tokens), so that what one instance issued, another instance with the
// same secret, or the same instance after a restart, can verify.
//
// The secret comes from the configuration or from a file in the state
// directory, created with 32 random bytes on first use; either way it is
// never derived from anything guessable. Each use gets its own key
// (Derive), so a key leaked from one use says nothing about another.
package secret

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// MinLen is the shortest configured secret accepted.
const MinLen = 16

// ErrTooShort is returned for a configured secret shorter than MinLen.
var ErrTooShort = fmt.Errorf("secret shorter than %d bytes", MinLen)

// Load returns the configured secret when it is set, else the one kept at
// path, which is created (mode 0600, written and synced before it is
// used) when it does not exist yet.
func Load(configured, path string) ([]byte, error) {
	if configured != "" {
		if len(configured) < MinLen {
			return nil, ErrTooShort
		}
		return []byte(configured), nil
	}
	b, err := os.ReadFile(path)
	if err == nil {
		s := strings.TrimSpace(string(b))
		if len(s) < MinLen {
			return nil, fmt.Errorf("secret file %s: %w", path, ErrTooShort)
		}
		return []byte(s), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read secret: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("generate secret: %w", err)
	}
	text := hex.EncodeToString(raw)
	if err := create(path, text+"\n"); err != nil {
		if errors.Is(err, os.ErrExist) {
			// Another sipd sharing the directory won the race: use its.
			return Load("", path)
		}
		return nil, err
	}
	return []byte(text), nil
}

// create writes a new file at path atomically: nothing is visible under
// path until the content is on disk, and an existing file is never
// replaced.
func create(path, content string) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".secret-*")
	if err != nil {
		return fmt.Errorf("create secret: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("create secret: %w", err)
	}
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		return fmt.Errorf("create secret: %w", err)
	}
	if err := errors.Join(tmp.Sync(), tmp.Close()); err != nil {
		return fmt.Errorf("create secret: %w", err)
	}
	// A hard link, unlike rename, fails when path exists.
	if err := os.Link(tmp.Name(), path); err != nil {
		return fmt.Errorf("create secret: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Derive returns the key for one purpose ("nonce", "route", ...): an HMAC
// of the purpose under the secret.
func Derive(secret []byte, purpose string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("sipxdp/" + purpose))
	return m.Sum(nil)
}
