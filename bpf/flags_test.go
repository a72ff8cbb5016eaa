package bpf

import (
	"os"
	"regexp"
	"strconv"
	"testing"
)

// The flag bits are written twice, in maps.h and in maps.go (BTF does not
// carry #defines). Two branches once took the same free bit for different
// flags; this keeps the copies equal, the bits distinct, and all of them
// below the TOS byte in flags' top 8 bits.
func TestFlagsMatchMapsH(t *testing.T) {
	src, err := os.ReadFile("maps.h")
	if err != nil {
		t.Fatal(err)
	}
	goFlags := map[string]int{
		"FLOW_LEARNING":   flagLearning,
		"FLOW_PINNED_MAC": flagPinnedMAC,
		"FLOW_LOCAL":      flagLocal,
		"FLOW_TOS":        flagTOS,
		"FLOW_XLATE":      flagXlate,
		"FLOW_DROP":       flagDrop,
	}
	cFlags := map[string]int{}
	for _, m := range regexp.MustCompile(`(?m)^#define (FLOW_\w+)\s+\(1 << (\d+)\)`).FindAllSubmatch(src, -1) {
		bit, _ := strconv.Atoi(string(m[2]))
		cFlags[string(m[1])] = 1 << bit
	}
	shift := regexp.MustCompile(`(?m)^#define FLOW_TOS_SHIFT\s+(\d+)`).FindSubmatch(src)
	if shift == nil {
		t.Fatal("maps.h defines no FLOW_TOS_SHIFT")
	}
	if s, _ := strconv.Atoi(string(shift[1])); s != tosShift {
		t.Errorf("FLOW_TOS_SHIFT is %d in maps.h, tosShift %d in maps.go", s, tosShift)
	}
	if len(cFlags) != len(goFlags) {
		t.Errorf("maps.h defines %d flags %v, maps.go mirrors %d", len(cFlags), cFlags, len(goFlags))
	}
	seen := 0
	for name, v := range goFlags {
		if c, ok := cFlags[name]; !ok || c != v {
			t.Errorf("%s: maps.h %#x (defined %v), maps.go %#x", name, c, ok, v)
		}
		if seen&v != 0 {
			t.Errorf("%s: bit %#x taken by another flag", name, v)
		}
		if v >= 1<<tosShift {
			t.Errorf("%s: bit %#x is inside the TOS byte (from bit %d)", name, v, tosShift)
		}
		seen |= v
	}
}
