package bpf

import (
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// progCaps are what the loaded programs can do beyond the same-family
// rewrite. Each is a load-time constant in maps.h that the verifier prunes
// on when it is off, so a kernel that refuses a feature still gets the
// kernel path without it (loadProgram retries with fewer), and the engine
// is told what the kernel can take (Kernel.CrossFamily).
type progCaps struct {
	// crossFamily: flows between IPv4 and IPv6 (FLOW_XLATE): the XDP
	// program moves the head with bpf_xdp_adjust_head, the tc program calls
	// bpf_skb_change_proto (both since Linux 4.10 or earlier), and both
	// rewrite the IP header.
	crossFamily bool
	// refused is the verifier's answer to the larger set, when a smaller
	// one had to be loaded.
	refused string
}

var allProgCaps = progCaps{crossFamily: true}

// without returns the next smaller set to try, false when none is left.
func (c progCaps) without() (progCaps, bool) {
	if c.crossFamily {
		return progCaps{}, true
	}
	return c, false
}

// set writes the capabilities into the program's load-time constants.
func (c progCaps) set(spec *ebpf.CollectionSpec) error {
	var v uint8
	if c.crossFamily {
		v = 1
	}
	if err := spec.Variables["cross_family"].Set(v); err != nil {
		return fmt.Errorf("set cross_family: %w", err)
	}
	return nil
}

func (c progCaps) String() string {
	if c.crossFamily {
		return "cross-family"
	}
	return "same family only"
}

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
