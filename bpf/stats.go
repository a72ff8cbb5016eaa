package bpf

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// EnableRunStats asks the kernel to keep per-program run time and run
// count (BPF_ENABLE_STATS), which it does only while asked. Closing the
// returned fd stops it, and so does the process ending, however it ends,
// unlike a write to the kernel.bpf_stats_enabled sysctl.
//
// The switch is global and counted: stats stay on while any process holds
// such an fd, and the sysctl shows none of them. So that a process can
// tell whether another sipxdp process has them on (RunStatsHeldElsewhere),
// each holder also holds StatsLockPath with a shared flock; the lock is
// advisory and best effort (no lock if the file cannot be opened).
func EnableRunStats() (io.Closer, error) {
	c, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, fmt.Errorf("enable BPF run-time stats: %w", err)
	}
	rs := &runStats{stats: c}
	if f, err := os.OpenFile(StatsLockPath, os.O_RDONLY|os.O_CREATE, 0o644); err == nil {
		if unix.Flock(int(f.Fd()), unix.LOCK_SH) == nil {
			rs.lock = f
		} else {
			f.Close()
		}
	}
	return rs, nil
}

// StatsLockPath is the file EnableRunStats's holders flock shared.
const StatsLockPath = "/run/sipxdp-bpf-stats.lock"

type runStats struct {
	stats io.Closer
	lock  *os.File
}

func (r *runStats) Close() error {
	err := r.stats.Close()
	if r.lock != nil {
		r.lock.Close() // releases the flock
	}
	return err
}

// RunStatsHeldElsewhere reports whether another holder of EnableRunStats
// (another process, or another fd of this one) may have stats on. When it
// returns false the caller holds StatsLockPath exclusively until release
// is called, so none can start meanwhile.
func RunStatsHeldElsewhere() (held bool, release func()) {
	f, err := os.OpenFile(StatsLockPath, os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		return true, func() {}
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return true, func() {}
	}
	return false, func() { f.Close() }
}

// PinnedRunStats sums run time and run count (the run_time_ns and run_cnt
// of each program's info) over the programs pinned under dir, found as
// pinned programs or through pinned links, each program once. Reading them
// from outside keeps a figure exact to a measurement window without asking
// the relay that pinned them for anything. The figures grow only while
// EnableRunStats is in force.
func PinnedRunStats(dir string) (time.Duration, uint64, error) {
	seen := map[ebpf.ProgramID]bool{}
	var total time.Duration
	var runs uint64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
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
		return 0, 0, fmt.Errorf("walk %s: %w", dir, err)
	}
	if len(seen) == 0 {
		return 0, 0, fmt.Errorf("no programs pinned under %s", dir)
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
