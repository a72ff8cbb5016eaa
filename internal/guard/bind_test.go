package guard

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
)

func TestExplainBind(t *testing.T) {
	denied := fmt.Errorf("listen tcp: %w", syscall.EACCES)
	for _, tc := range []struct {
		name, addr string
		err        error
		hint       bool
	}{
		{"privileged port denied", "0.0.0.0:80", denied, true},
		{"ipv6 privileged port", "[::1]:443", denied, true},
		{"unprivileged port denied", "127.0.0.1:8080", denied, false},
		{"port 0", "127.0.0.1:0", denied, false},
		{"other error", "127.0.0.1:80", fmt.Errorf("listen: %w", syscall.EADDRINUSE), false},
		{"no error", "127.0.0.1:80", nil, false},
		{"bad address", "localhost", denied, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ExplainBind(tc.addr, tc.err)
			if !errors.Is(got, tc.err) && tc.err != nil {
				t.Fatalf("%v no longer wraps %v", got, tc.err)
			}
			if tc.err == nil && got != nil {
				t.Fatalf("nil error became %v", got)
			}
			if has := got != nil && strings.Contains(got.Error(), "CAP_NET_BIND_SERVICE"); has != tc.hint {
				t.Errorf("%v: hint %v, want %v", got, has, tc.hint)
			}
		})
	}
}
