// Package procsample reads one process's CPU time and resident memory, and
// the system's CPU time, at a steady period while a bench runs: the loop
// the calls and the itsp benches both drive.
package procsample

import (
	"context"
	"os"
	"time"

	"sipxdp/bench/cpu"
	"sipxdp/bench/mem"
)

// Reading is one look at the watched process, this process and the
// system. A figure that could not be read is zero, so that a gone process
// shows as a gap rather than ending the run.
type Reading struct {
	At     time.Time
	Sys    cpu.Stat
	Proc   cpu.ProcTimes
	ProcOK bool // false once the process has gone
	Self   cpu.ProcTimes
	RSS    uint64 // bytes
}

// Read looks at process pid now.
func Read(pid int) Reading {
	r := Reading{At: time.Now()}
	r.Sys, _ = cpu.ReadStat()
	p, err := cpu.ReadPID(pid)
	r.Proc, r.ProcOK = p, err == nil
	r.Self, _ = cpu.ReadPID(os.Getpid())
	r.RSS, _ = mem.RSS(pid)
	return r
}

// Every reads pid at once and then every period until ctx ends or stop
// is closed (a nil stop never is). fn gets each reading's index and the
// reading before it, nil for the first.
func Every(ctx context.Context, stop <-chan struct{}, period time.Duration, pid int, fn func(i int, prev *Reading, cur Reading)) {
	t := time.NewTicker(period)
	defer t.Stop()
	var prev *Reading
	for i := 0; ; i++ {
		cur := Read(pid)
		fn(i, prev, cur)
		prev = &cur
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case <-t.C:
		}
	}
}
