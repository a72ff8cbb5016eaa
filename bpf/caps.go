package bpf

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// capability is one the kernel path needs, and what for.
type capability struct {
	bit  int
	name string
	// orSysAdmin: CAP_SYS_ADMIN covers it too (the kernel's bpf_capable
	// and perfmon_capable), which is all kernels before 5.8 know.
	orSysAdmin bool
}

// needed is every capability Open needs. The reasons are the kernel's
// checks, measured by dropping each in turn (README, "Running as a
// non-root user"):
//   - CAP_BPF: creating maps and loading programs at all
//     (kernel.unprivileged_bpf_disabled is set on every distribution);
//   - CAP_NET_ADMIN: loading XDP and tc programs, attaching them, and
//     creating the XDP devmap;
//   - CAP_PERFMON: the verifier refuses the programs' packet-pointer
//     subtraction ("pointer -= pointer prohibited") without it: pointer
//     subtraction is allow_ptr_leaks, which the kernel grants with
//     perfmon_capable().
var needed = []capability{
	{unix.CAP_BPF, "CAP_BPF", true},
	{unix.CAP_NET_ADMIN, "CAP_NET_ADMIN", false},
	{unix.CAP_PERFMON, "CAP_PERFMON", true},
}

// effectiveCaps reads this thread's effective capability set. Every
// thread of a Go process has the same set unless something changed one
// thread's on purpose, which nothing here does.
func effectiveCaps() (uint64, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, fmt.Errorf("read capabilities: %w", err)
	}
	return uint64(data[1].Effective)<<32 | uint64(data[0].Effective), nil
}

func hasCap(set uint64, bit int) bool { return set&(1<<uint(bit)) != 0 }

// missingCaps names the needed capabilities the effective set lacks.
func missingCaps(set uint64) []string {
	var out []string
	for _, c := range needed {
		if hasCap(set, c.bit) || (c.orSysAdmin && hasCap(set, unix.CAP_SYS_ADMIN)) {
			continue
		}
		out = append(out, c.name)
	}
	return out
}

// CheckCapabilities reports whether this process may load and attach the
// kernel path. Checking up front turns what would be an EPERM from deep
// in the loader (blamed there on RLIMIT_MEMLOCK) into one line that names
// what to grant. The error wraps unix.EPERM, so errors.Is(err,
// os.ErrPermission) holds.
func CheckCapabilities() error {
	set, err := effectiveCaps()
	if err != nil {
		return err
	}
	return capsError(missingCaps(set))
}

func capsError(missing []string) error {
	if len(missing) == 0 {
		return nil
	}
	var all []string
	for _, c := range needed {
		all = append(all, c.name)
	}
	return fmt.Errorf("kernel path needs %s (missing %s): %w",
		strings.Join(all, ", "), strings.Join(missing, ", "), unix.EPERM)
}
