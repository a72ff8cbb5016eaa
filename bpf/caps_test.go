package bpf

import (
	"errors"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"sipxdp/relay"
	"sipxdp/relay/relaytest"
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

// The fallback a kernel that refuses the translation gets: both programs
// load with cross_family off, the verifier pruning the translation, and
// cross-family flows are refused so the engine keeps them in userspace.
func TestProgramsWithoutCrossFamily(t *testing.T) {
	requireRoot(t)
	m, err := newMaps()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, kind := range []string{"xdp", "tc"} {
		prog, err := loadProgramCaps(kind, m, 0, 0, progCaps{})
		if err != nil {
			t.Fatalf("%s without cross-family: %v", kind, err)
		}
		prog.Close()
	}
	if m.crossFamily {
		t.Fatal("maps claim cross-family with no program loaded with it")
	}
	cross := relay.Flow{Key: relay.FlowKey{Local: relaytest.RelayA}, Peer: relaytest.CallerA,
		Out: relaytest.Relay6B, Dst: relaytest.Callee6B}
	if err := m.Upsert(cross); !errors.Is(err, relay.ErrUnsupportedFlow) {
		t.Errorf("cross-family upsert without the capability: %v, want ErrUnsupportedFlow", err)
	}
	if next, ok := allProgCaps.without(); !ok || next.crossFamily {
		t.Errorf("allProgCaps.without() = %+v, %v; want a set without cross-family", next, ok)
	}
}
