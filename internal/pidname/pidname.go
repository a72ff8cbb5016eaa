// Package pidname reads the process ID that bench and test resources
// (network namespaces, bpffs pin directories) carry in their names, so
// that a later run can tell which ones a killed run left behind.
package pidname

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Stale reports whether name is prefix followed by a process ID (and
// optionally "-" and more) of a process that no longer runs. ownStale
// says whether this process's own names count as stale: a caller that
// creates a name once per process can clear its own leftovers, one that
// creates them while other goroutines use theirs cannot.
func Stale(name, prefix string, ownStale bool) bool {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return false
	}
	idStr, _, _ := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(idStr)
	if err != nil || pid <= 0 {
		return false
	}
	if pid == os.Getpid() {
		return ownStale
	}
	return !alive(pid)
}

// alive counts EPERM as alive: the process exists, it is only not ours
// to signal.
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
