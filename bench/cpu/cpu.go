// Package cpu samples system and per-process CPU time from /proc.
//
// On the project's VMs the busy categories of /proc/stat undercount bursty
// work while the idle counter stays right, so system busy time is derived
// from idle alone: wall × CPUs − (idle + iowait). Per-process figures come
// from /proc/PID/stat, which is accurate. Softirq work (XDP on veth) has no
// accounting of its own and lands on whatever task was running, so only the
// system figure captures the whole cost of a datapath.
package cpu

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// UserHZ is the unit of /proc/stat and /proc/PID/stat times. The kernel
// fixes USER_HZ at 100 on every architecture Go supports, and reading it via
// sysconf would need cgo.
const UserHZ = 100

// Stat is the aggregate "cpu" line of /proc/stat, in USER_HZ ticks.
type Stat struct {
	CPUs   int // number of per-CPU lines: the online CPUs
	Idle   uint64
	IOWait uint64
	Total  uint64 // sum of all categories, for reference only
}

// ParseStat reads /proc/stat text.
func ParseStat(r io.Reader) (Stat, error) {
	var s Stat
	found := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		switch {
		case fields[0] == "cpu":
			// user nice system idle iowait irq softirq steal guest guest_nice
			if len(fields) < 6 {
				return Stat{}, fmt.Errorf("parse /proc/stat cpu line: %d fields", len(fields))
			}
			for i, f := range fields[1:] {
				v, err := strconv.ParseUint(f, 10, 64)
				if err != nil {
					return Stat{}, fmt.Errorf("parse /proc/stat cpu field %d: %w", i+1, err)
				}
				// guest and guest_nice are already included in user and nice.
				if i < 8 {
					s.Total += v
				}
				switch i {
				case 3:
					s.Idle = v
				case 4:
					s.IOWait = v
				}
			}
			found = true
		case strings.HasPrefix(fields[0], "cpu"):
			s.CPUs++
		}
	}
	if err := sc.Err(); err != nil {
		return Stat{}, fmt.Errorf("read /proc/stat: %w", err)
	}
	if !found {
		return Stat{}, fmt.Errorf("parse /proc/stat: no aggregate cpu line")
	}
	if s.CPUs == 0 {
		return Stat{}, fmt.Errorf("parse /proc/stat: no per-CPU lines")
	}
	return s, nil
}

// ReadStat reads /proc/stat.
func ReadStat() (Stat, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return Stat{}, fmt.Errorf("read /proc/stat: %w", err)
	}
	return ParseStat(bytes.NewReader(b))
}

// BusyCores is the average number of busy CPUs between two samples taken
// wall apart: (wall × CPUs − Δ(idle+iowait)) / wall. The result is clamped
// to [0, CPUs] because the two clocks are read at slightly different times.
func BusyCores(a, b Stat, wall time.Duration) float64 {
	if wall <= 0 || b.CPUs == 0 {
		return 0
	}
	idle := float64(sub(b.Idle, a.Idle)+sub(b.IOWait, a.IOWait)) / UserHZ
	w := wall.Seconds()
	busy := (w*float64(b.CPUs) - idle) / w
	return clamp(busy, 0, float64(b.CPUs))
}

// ProcTimes is the CPU time of one process (all its threads), in ticks.
type ProcTimes struct {
	UTime, STime uint64
	// CUTime and CSTime are the times of children it has reaped: where the
	// CPU of a short-lived process (a compiler run) ends up.
	CUTime, CSTime uint64
	PPid           int
	Kthread        bool // PF_KTHREAD: softirq and worker threads of the kernel
}

const pfKthread = 0x00200000

// Ticks is user plus system time.
func (p ProcTimes) Ticks() uint64 { return p.UTime + p.STime }

// ParsePIDStat reads the text of /proc/PID/stat. The command name is in
// parentheses and may itself contain spaces and parentheses, so fields are
// counted from the last ')'.
func ParsePIDStat(b []byte) (ProcTimes, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return ProcTimes{}, fmt.Errorf("parse pid stat: no ')'")
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 15 {
		return ProcTimes{}, fmt.Errorf("parse pid stat: %d fields after comm", len(fields))
	}
	// Fields counted from state (field 3): ppid 4, flags 9, utime 14,
	// stime 15, cutime 16, cstime 17.
	var v [5]uint64
	for k, f := range []struct {
		name string
		idx  int
	}{{"flags", 6}, {"utime", 11}, {"stime", 12}, {"cutime", 13}, {"cstime", 14}} {
		n, err := strconv.ParseUint(fields[f.idx], 10, 64)
		if err != nil {
			return ProcTimes{}, fmt.Errorf("parse pid stat %s: %w", f.name, err)
		}
		v[k] = n
	}
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		return ProcTimes{}, fmt.Errorf("parse pid stat ppid: %w", err)
	}
	return ProcTimes{UTime: v[1], STime: v[2], CUTime: v[3], CSTime: v[4], PPid: ppid, Kthread: v[0]&pfKthread != 0}, nil
}

// ReadPID reads /proc/PID/stat.
func ReadPID(pid int) (ProcTimes, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ProcTimes{}, fmt.Errorf("read pid %d stat: %w", pid, err)
	}
	p, err := ParsePIDStat(b)
	if err != nil {
		return ProcTimes{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	return p, nil
}

// ProcCores is the average number of CPUs a process used between samples.
func ProcCores(a, b ProcTimes, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return float64(sub(b.Ticks(), a.Ticks())) / UserHZ / wall.Seconds()
}

// ScanProcs reads /proc/PID/stat of every process. Processes that exit
// during the scan are skipped.
func ScanProcs() (map[int]ProcTimes, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list /proc: %w", err)
	}
	out := make(map[int]ProcTimes, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, err := ReadPID(pid); err == nil {
			out[pid] = p
		}
	}
	return out, nil
}

// OtherCores is the CPU used between two scans by user processes that
// ours does not claim: other work on a shared machine, which the system
// busy figure would otherwise charge to the path under test. Kernel
// threads are left in the measurement because ksoftirqd does the path's
// own softirq work when it overflows. A process that started between the
// scans counts with all its time. One that exited shows up in its
// parent's reaped-children time with its whole lifetime, so what it had
// used by the first scan is taken off again.
func OtherCores(a, b map[int]ProcTimes, ours func(pid int, p ProcTimes) bool, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	var ticks, before uint64
	for pid, pb := range b {
		if pb.Kthread || ours(pid, pb) {
			continue
		}
		pa := a[pid]
		ticks += sub(pb.Ticks(), pa.Ticks()) + sub(pb.children(), pa.children())
	}
	for pid, pa := range a {
		if _, alive := b[pid]; alive || pa.Kthread || ours(pid, pa) {
			continue
		}
		before += pa.Ticks() + pa.children()
	}
	return float64(sub(ticks, before)) / UserHZ / wall.Seconds()
}

func (p ProcTimes) children() uint64 { return p.CUTime + p.CSTime }

// KthreadCores is the CPU used between two scans by kernel threads:
// ksoftirqd doing softirq work that overflowed, and workers.
func KthreadCores(a, b map[int]ProcTimes, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	var ticks uint64
	for pid, pb := range b {
		if pb.Kthread {
			ticks += sub(pb.Ticks(), a[pid].Ticks())
		}
	}
	return float64(ticks) / UserHZ / wall.Seconds()
}

// Snapshot is one reading of the system and of a set of processes.
type Snapshot struct {
	At    time.Time
	Sys   Stat
	Procs map[string]ProcTimes // by role; a process that exited is absent
	All   map[int]ProcTimes    // every process, filled by callers that ScanProcs
}

// Take reads /proc/stat and /proc/PID/stat for each named PID. A missing
// process is left out rather than failing the sample, because children can
// exit at the edge of a window.
func Take(pids map[string]int) (Snapshot, error) {
	s := Snapshot{Procs: make(map[string]ProcTimes, len(pids))}
	for role, pid := range pids {
		if pid <= 0 {
			continue
		}
		if p, err := ReadPID(pid); err == nil {
			s.Procs[role] = p
		}
	}
	st, err := ReadStat()
	if err != nil {
		return Snapshot{}, err
	}
	s.Sys = st
	s.At = time.Now()
	return s, nil
}

// Usage is CPU use over an interval, in cores.
type Usage struct {
	Wall  time.Duration
	Busy  float64            // whole system
	Procs map[string]float64 // by role
}

// Between computes the usage from a to b.
func Between(a, b Snapshot) Usage {
	u := Usage{Wall: b.At.Sub(a.At), Procs: map[string]float64{}}
	u.Busy = BusyCores(a.Sys, b.Sys, u.Wall)
	for role, pb := range b.Procs {
		if pa, ok := a.Procs[role]; ok {
			u.Procs[role] = ProcCores(pa, pb, u.Wall)
		}
	}
	return u
}

func sub(b, a uint64) uint64 {
	// Counters can step back by a tick across CPUs going idle; treat that
	// as no change rather than wrapping to a huge number.
	if b < a {
		return 0
	}
	return b - a
}

func clamp(v, lo, hi float64) float64 {
	if v < lo {
		return lo
	}
	if v > hi {
		return hi
	}
	return v
}
