package bpf

import (
	"errors"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestMissingCaps(t *testing.T) {
	bit := func(cs ...int) uint64 {
		var s uint64
		for _, c := range cs {
			s |= 1 << c
		}
		return s
	}
	for _, tc := range []struct {
		name string
		set  uint64
		want string
	}{
		{"the units' set", bit(unix.CAP_BPF, unix.CAP_NET_ADMIN, unix.CAP_PERFMON, unix.CAP_NET_BIND_SERVICE), ""},
		{"none", 0, "CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON"},
		{"no perfmon", bit(unix.CAP_BPF, unix.CAP_NET_ADMIN), "CAP_PERFMON"},
		{"no net_admin", bit(unix.CAP_BPF, unix.CAP_PERFMON), "CAP_NET_ADMIN"},
		// CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON (all a
		// kernel before 5.8 has), never for CAP_NET_ADMIN.
		{"sys_admin and net_admin", bit(unix.CAP_SYS_ADMIN, unix.CAP_NET_ADMIN), ""},
		{"sys_admin alone", bit(unix.CAP_SYS_ADMIN), "CAP_NET_ADMIN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			missing := missingCaps(tc.set)
			if got := strings.Join(missing, ", "); got != tc.want {
				t.Fatalf("missing %q, want %q", got, tc.want)
			}
			err := capsError(missing)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("error %v with nothing missing", err)
				}
				return
			}
			if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), "(missing "+tc.want+")") {
				t.Errorf("error %q: want a permission error naming %s", err, tc.want)
			}
		})
	}
}

// Run as root (as the bpf tests are), the process has every capability.
func TestCheckCapabilitiesAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: the effective set of a non-root test process is not known")
	}
	if err := CheckCapabilities(); err != nil {
		t.Fatal(err)
	}
}
