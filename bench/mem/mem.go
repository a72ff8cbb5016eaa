// Package mem reads a process's resident set size from /proc, the figure
// every bench reports as sipd's memory.
package mem

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// RSS is the resident set of process pid in bytes: VmRSS of
// /proc/PID/status (anonymous, file and shared memory resident now).
func RSS(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read rss: %w", err)
	}
	v, err := ParseRSS(b)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return v, nil
}

// RSSMB is RSS in MiB, as the reports print it.
func RSSMB(pid int) (float64, error) {
	v, err := RSS(pid)
	return float64(v) / (1 << 20), err
}

// ParseRSS finds the VmRSS line of a /proc/PID/status and returns it in
// bytes.
func ParseRSS(status []byte) (uint64, error) {
	for line := range bytes.Lines(status) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("VmRSS line %q: want a number of kB", bytes.TrimSpace(line))
		}
		kb, err := strconv.ParseUint(string(f[0]), 10, 64)
		if err != nil || kb > 1<<44 {
			return 0, fmt.Errorf("VmRSS %q: not a size in kB", f[0])
		}
		return kb * 1024, nil
	}
	// Kernel threads and zombies have no VmRSS.
	return 0, fmt.Errorf("no VmRSS line")
}
