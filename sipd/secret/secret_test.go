package secret

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret")
	first, err := Load("", path)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 64 {
		t.Fatalf("generated secret is %d hex characters, want 64", len(first))
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode %v, want 0600", fi.Mode().Perm())
	}
	again, err := Load("", path)
	if err != nil || !bytes.Equal(first, again) {
		t.Fatalf("second load: %q, %v; want the first secret again", again, err)
	}
	other, err := Load("", filepath.Join(t.TempDir(), "secret"))
	if err != nil || bytes.Equal(first, other) {
		t.Fatalf("a new directory gave %q (%v), want a different secret", other, err)
	}
	conf, err := Load("configured-secret-value", path)
	if err != nil || string(conf) != "configured-secret-value" {
		t.Fatalf("configured secret: %q, %v", conf, err)
	}
	if _, err := Load("short", path); !errors.Is(err, ErrTooShort) {
		t.Fatalf("short configured secret: %v, want ErrTooShort", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad"), []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load("", filepath.Join(dir, "bad")); !errors.Is(err, ErrTooShort) {
		t.Fatalf("short secret file: %v, want ErrTooShort", err)
	}
	if _, err := Load("", filepath.Join(dir, "missing-dir", "secret")); err == nil {
		t.Fatal("a secret in a missing directory was created")
	}
}

func TestDerive(t *testing.T) {
	s := []byte("0123456789abcdef0123456789abcdef")
	a, b := Derive(s, "route"), Derive(s, "nonce")
	if bytes.Equal(a, b) {
		t.Fatal("two purposes got the same key")
	}
	if !bytes.Equal(a, Derive(s, "route")) {
		t.Fatal("derivation is not deterministic")
	}
	if bytes.Equal(a, Derive([]byte("another secret, same purpose!!"), "route")) {
		t.Fatal("two secrets gave the same key")
	}
}
