// Package testenv gates tests that need privileges. Outside CI they skip
// with a reason; in CI (CI=true, run as root) a missing privilege is a
// failure, so privileged tests can never pass by silently skipping.
package testenv

import (
	"os"
	"testing"
)

// InCI reports whether the tests run under CI.
func InCI() bool { return os.Getenv("CI") == "true" }

// RequireRoot skips t unless running as root; under CI it fails instead.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if InCI() {
		t.Fatal("this test needs root and CI must run it: run CI as root")
	}
	t.Skip("skipping: needs root (BPF, network namespaces); run as root to include it")
}

// Unavailable reports a missing facility (a kernel feature, a binary):
// skip outside CI, fail in CI where the environment is supposed to be
// complete.
func Unavailable(t testing.TB, why string) {
	t.Helper()
	if InCI() {
		t.Fatalf("required in CI: %s", why)
	}
	t.Skipf("skipping: %s", why)
}
