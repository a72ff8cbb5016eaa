package bpf

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
)

// Runs of a pinned program while stats are enabled are counted once,
// however many pins name it; none are counted after the stats are off,
// and a directory with no programs is an error.
func TestPinnedRunStats(t *testing.T) {
	requireRoot(t)
	dir := filepath.Join("/sys/fs/bpf", fmt.Sprintf("sxst-%d", os.Getpid()))
	// ensurePinDir mounts bpffs at /sys/fs/bpf when no test before this
	// one did (a fresh machine without systemd's mount).
	if err := ensurePinDir(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if _, _, err := PinnedRunStats(dir); err == nil {
		t.Fatal("no error for a directory without programs")
	}
	prog, err := NewPassXDP()
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	for _, name := range []string{"a", "b"} {
		if err := prog.Pin(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	run := func(n int) {
		for range n {
			// XDP test runs need an Ethernet-sized frame.
			if ret, err := prog.Run(&ebpf.RunOptions{Data: make([]byte, 64)}); err != nil || ret != 2 {
				t.Fatalf("test run: %d, %v", ret, err)
			}
		}
	}
	stats, err := EnableRunStats()
	if err != nil {
		t.Fatal(err)
	}
	_, runs0, err := PinnedRunStats(dir)
	if err != nil {
		t.Fatal(err)
	}
	run(5)
	took, runs, err := PinnedRunStats(dir)
	if err != nil {
		t.Fatal(err)
	}
	if runs-runs0 != 5 || took <= 0 {
		t.Fatalf("after 5 runs: %d runs (%d before) in %v", runs, runs0, took)
	}
	stats.Close()
	// The switch is global: another process (a bench run, or another
	// package's test running beside this one) may hold it on. The sysctl
	// shows only its own setting; EnableRunStats's holders hold a shared
	// lock, which this takes exclusively for the runs below.
	if b, _ := os.ReadFile("/proc/sys/kernel/bpf_stats_enabled"); len(b) > 0 && b[0] != '0' {
		t.Log("BPF stats enabled by the sysctl; not checking that they stopped")
		return
	}
	held, release := RunStatsHeldElsewhere()
	if held {
		t.Log("BPF stats held on by another process; not checking that they stopped")
		return
	}
	defer release()
	run(3)
	if _, after, err := PinnedRunStats(dir); err != nil || after != runs {
		t.Fatalf("with stats off: %d runs, want still %d (%v)", after, runs, err)
	}
}
