package bench

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"sipxdp/bench/childproc"
	"sipxdp/bpf"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
)

// progStats sums run time and run count over the programs the relay pinned
// under pinPath, found as pinned programs or through pinned links. Reading
// them from outside keeps the figure exact to the measurement window
// without asking the relay for anything.
func progStats(pinPath string) (time.Duration, uint64, error) {
	seen := map[ebpf.ProgramID]bool{}
	var total time.Duration
	var runs uint64
	err := filepath.WalkDir(pinPath, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		prog, err := pinnedProgram(p)
		if err != nil {
			return nil // a map or something else
		}
		defer prog.Close()
		info, err := prog.Info()
		if err != nil {
			return nil
		}
		id, ok := info.ID()
		if !ok || seen[id] {
			return nil
		}
		seen[id] = true
		st, err := prog.Stats()
		if err != nil {
			return nil
		}
		total += st.Runtime
		runs += st.RunCount
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("walk %s: %w", pinPath, err)
	}
	if len(seen) == 0 {
		return 0, 0, fmt.Errorf("no programs pinned under %s", pinPath)
	}
	return total, runs, nil
}

func pinnedProgram(p string) (*ebpf.Program, error) {
	if prog, err := ebpf.LoadPinnedProgram(p, nil); err == nil {
		return prog, nil
	}
	l, err := link.LoadPinnedLink(p, nil)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	li, err := l.Info()
	if err != nil {
		return nil, fmt.Errorf("link info %s: %w", p, err)
	}
	return ebpf.NewProgramFromID(li.Program)
}

type xdpPassConfig struct {
	Interface string `json:"interface"`
}

// runXDPPassChild attaches a program that returns XDP_PASS, in native mode,
// to an interface of the namespace it runs in. The attachment is the
// netlink kind, which outlives this process and goes away with the
// namespace.
func runXDPPassChild() int {
	var c xdpPassConfig
	if err := childproc.Params(&c); err != nil {
		childproc.Emit("result", nil, err)
		return 2
	}
	err := attachXDPPass(c.Interface)
	childproc.Emit("result", nil, err)
	if err != nil {
		return 1
	}
	return 0
}

func attachXDPPass(ifname string) error {
	prog, err := bpf.NewPassXDP()
	if err != nil {
		return err
	}
	defer prog.Close()
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("link %s: %w", ifname, err)
	}
	if err := netlink.LinkSetXdpFdWithFlags(l, prog.FD(), nl.XDP_FLAGS_DRV_MODE); err != nil {
		return fmt.Errorf("attach XDP_PASS to %s: %w", ifname, err)
	}
	return nil
}
