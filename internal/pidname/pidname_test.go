package pidname

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

func TestStale(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	gone := strconv.Itoa(cmd.Process.Pid) // reaped: its PID is free again, briefly
	self := strconv.Itoa(os.Getpid())
	tests := []struct {
		name     string
		ownStale bool
		want     bool
	}{
		{"p-" + gone, false, true},
		{"p-" + gone + "-3", false, true},
		{"p-" + self, false, false},
		{"p-" + self + "-1", true, true},
		{"p-1", true, false}, // init always runs
		{"p-0", true, false},
		{"p--5", true, false},
		{"p-x", true, false},
		{"q-" + gone, true, false},
		{"p-", true, false},
	}
	for _, tt := range tests {
		if got := Stale(tt.name, "p-", tt.ownStale); got != tt.want {
			t.Errorf("Stale(%q, own stale %v) = %v, want %v", tt.name, tt.ownStale, got, tt.want)
		}
	}
}

func FuzzStale(f *testing.F) {
	f.Add("p-1-2")
	f.Add("p-" + strconv.Itoa(os.Getpid()))
	f.Fuzz(func(t *testing.T, name string) {
		if Stale(name, "p-", true) && !strings.HasPrefix(name, "p-") {
			t.Errorf("%q is stale without the prefix", name)
		}
		if strings.HasPrefix(name, "p-1-") || name == "p-1" {
			if Stale(name, "p-", true) {
				t.Errorf("%q: init counted as gone", name)
			}
		}
	})
}
