package mem

import (
	"os"
	"testing"
)

func TestParseRSS(t *testing.T) {
	tests := []struct {
		name   string
		status string
		want   uint64
		ok     bool
	}{
		{"status excerpt", "Name:\tsipd\nVmPeak:\t  900 kB\nVmRSS:\t   20480 kB\nRssAnon:\t 1 kB\n", 20480 * 1024, true},
		{"last line without newline", "VmRSS:\t4 kB", 4096, true},
		{"zero", "VmRSS:\t0 kB\n", 0, true},
		{"no VmRSS (kernel thread)", "Name:\tkthreadd\nState:\tS\n", 0, false},
		{"not a number", "VmRSS:\tlots kB\n", 0, false},
		{"no unit", "VmRSS:\t12\n", 0, false},
		{"negative", "VmRSS:\t-12 kB\n", 0, false},
		{"absurd", "VmRSS:\t99999999999999999 kB\n", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRSS([]byte(tt.status))
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("ParseRSS = %d, %v; want %d, ok %v", got, err, tt.want, tt.ok)
			}
		})
	}
}

func TestRSSOfSelf(t *testing.T) {
	v, err := RSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// A running Go test binary holds at least a megabyte.
	if v < 1<<20 {
		t.Errorf("RSS of the test itself = %d bytes", v)
	}
	mb, err := RSSMB(os.Getpid())
	if err != nil || mb < 1 {
		t.Errorf("RSSMB = %g, %v", mb, err)
	}
	if _, err := RSS(-1); err == nil {
		t.Error("RSS of pid -1 succeeded")
	}
}

func FuzzParseRSS(f *testing.F) {
	f.Add([]byte("Name:\tsipd\nVmRSS:\t   20480 kB\n"))
	f.Add([]byte("VmRSS:\t1 kB"))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ParseRSS(b)
		if err == nil && v%1024 != 0 {
			t.Errorf("%d bytes is not whole kB", v)
		}
	})
}
