package cpu

import (
	"math"
	"strings"
	"testing"
	"time"
)

const statA = `cpu  4585 0 1998 96338 527 0 100 14 0 0
cpu0 2007 0 791 48898 36 0 47 8 0 0
cpu1 2577 0 1206 47440 491 0 53 6 0 0
intr 233366 0 0
ctxt 1
btime 1763777000
`

// Ten seconds later on two CPUs: 2000 ticks of wall capacity, of which
// 1200 idle and 100 iowait, so 700 ticks busy = 0.7 cores. The busy
// categories only grew by 50 ticks: the undercount the idle method avoids.
const statB = `cpu  4615 0 2018 97538 627 0 100 14 0 0
cpu0 2007 0 791 48898 36 0 47 8 0 0
cpu1 2577 0 1206 47440 491 0 53 6 0 0
intr 233366 0 0
`

func TestParseStat(t *testing.T) {
	s, err := ParseStat(strings.NewReader(statA))
	if err != nil {
		t.Fatal(err)
	}
	if s.CPUs != 2 || s.Idle != 96338 || s.IOWait != 527 {
		t.Fatalf("got %+v", s)
	}
	if want := uint64(4585 + 1998 + 96338 + 527 + 100 + 14); s.Total != want {
		t.Fatalf("total %d, want %d", s.Total, want)
	}
}

func TestParseStatErrors(t *testing.T) {
	for name, in := range map[string]string{
		"empty":     "",
		"no cpu":    "intr 1 2\n",
		"no percpu": "cpu  1 2 3 4 5 6\n",
		"short":     "cpu  1 2 3\ncpu0 1 2 3 4 5\n",
		"garbage":   "cpu  1 x 3 4 5 6\ncpu0 1 2 3 4 5 6\n",
	} {
		if _, err := ParseStat(strings.NewReader(in)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestBusyCores(t *testing.T) {
	a, _ := ParseStat(strings.NewReader(statA))
	b, _ := ParseStat(strings.NewReader(statB))
	got := BusyCores(a, b, 10*time.Second)
	if math.Abs(got-0.7) > 1e-9 {
		t.Fatalf("busy %v, want 0.7", got)
	}
	// Idle growing faster than wall (clock skew between reads) clamps to 0.
	if got := BusyCores(a, b, time.Second); got != 0 {
		t.Fatalf("busy %v, want clamp to 0", got)
	}
	if got := BusyCores(b, a, 10*time.Second); got != 2 {
		t.Fatalf("busy %v, want clamp to 2 when counters step back", got)
	}
}

func TestParsePIDStat(t *testing.T) {
	// A comm with spaces and a ')' must not shift the fields.
	line := "6521 (a b) c) R 6515 6515 5194 0 -1 4194304 99 0 0 0 250 75 7 8 20 0 1 0 51871 3133440 355\n"
	p, err := ParsePIDStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if p.UTime != 250 || p.STime != 75 || p.Ticks() != 325 || p.PPid != 6515 || p.Kthread || p.CUTime != 7 || p.CSTime != 8 {
		t.Fatalf("got %+v", p)
	}
	if _, err := ParsePIDStat([]byte("1 (x) R 1 2")); err == nil {
		t.Fatal("short line: no error")
	}
	if got := ProcCores(ProcTimes{UTime: 100}, ProcTimes{UTime: 150, STime: 50}, 2*time.Second); math.Abs(got-0.5) > 1e-9 {
		t.Fatalf("proc cores %v, want 0.5", got)
	}
}

func TestBetween(t *testing.T) {
	a, _ := ParseStat(strings.NewReader(statA))
	b, _ := ParseStat(strings.NewReader(statB))
	t0 := time.Unix(1000, 0)
	u := Between(
		Snapshot{At: t0, Sys: a, Procs: map[string]ProcTimes{"relay": {UTime: 10}, "gone": {}}},
		Snapshot{At: t0.Add(10 * time.Second), Sys: b, Procs: map[string]ProcTimes{"relay": {UTime: 310}}},
	)
	if math.Abs(u.Busy-0.7) > 1e-9 || math.Abs(u.Procs["relay"]-0.3) > 1e-9 {
		t.Fatalf("got %+v", u)
	}
	if _, ok := u.Procs["gone"]; ok {
		t.Fatal("exited process reported")
	}
}

func TestOtherCores(t *testing.T) {
	a := map[int]ProcTimes{
		1:  {UTime: 100},               // ours
		2:  {UTime: 100, CUTime: 40},   // someone else's build
		3:  {STime: 10, Kthread: true}, // ksoftirqd: part of the path
		99: {UTime: 50, PPid: 2},       // a compiler, reaped by 2 before b
	}
	b := map[int]ProcTimes{
		1: {UTime: 300},
		2: {UTime: 150, STime: 50, CUTime: 110}, // reaped the compiler at 70 ticks
		3: {STime: 90, Kthread: true},
		4: {UTime: 20}, // started inside the window
	}
	ours := func(pid int, _ ProcTimes) bool { return pid == 1 }
	// 2 ran 100 itself; the compiler ran 20 inside the window (70 − 50);
	// 4 ran 20: 140 ticks over 2 s.
	if got := OtherCores(a, b, ours, 2*time.Second); math.Abs(got-0.7) > 1e-9 {
		t.Fatalf("other cores %v, want 140/100/2 = 0.7", got)
	}
	if got := KthreadCores(a, b, 2*time.Second); math.Abs(got-0.4) > 1e-9 {
		t.Fatalf("kthread cores %v, want 80/100/2 = 0.4", got)
	}
}
