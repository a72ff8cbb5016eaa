package report

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func f(v float64) *float64 { return &v }

func TestSummarizeMedian(t *testing.T) {
	// Per packet at 100k pps: direct 9, 8, 10 µs (median 9); tc 10, 11,
	// 15 µs (median 11), so tc costs 2 µs over direct. The paired per-run
	// figures are what the range shows.
	rs := []Datapath{
		{Path: "direct", Rep: 1, OursCores: 0.9, DeliveredPPS: 1e5},
		{Path: "tc", Rep: 1, OursCores: 1.0, DeliveredPPS: 1e5, RelayUsPerPktProcs: f(1)},
		{Path: "direct", Rep: 2, OursCores: 0.8, DeliveredPPS: 1e5},
		{Path: "tc", Rep: 2, OursCores: 1.1, DeliveredPPS: 1e5, RelayUsPerPktProcs: f(3)},
		{Path: "direct", Rep: 3, OursCores: 1.0, DeliveredPPS: 1e5},
		{Path: "tc", Rep: 3, OursCores: 1.5, DeliveredPPS: 1e5, RelayUsPerPktProcs: f(5)},
	}
	s := Summarize(rs)
	if len(s) != 2 || s[0].Path != "direct" || s[1].Path != "tc" {
		t.Fatalf("order: %+v", s)
	}
	if s[0].Rep != 1 || s[0].Runs != 3 {
		t.Fatalf("direct median: rep %d runs %d, want rep 1 of 3", s[0].Rep, s[0].Runs)
	}
	tc := s[1]
	if tc.Rep != 2 || *tc.RelayUsPerPktProcs != 2 || *tc.RelayUsMin != 1 || *tc.RelayUsMax != 5 {
		t.Fatalf("tc: rep %d, %v [%v, %v]", tc.Rep, *tc.RelayUsPerPktProcs, *tc.RelayUsMin, *tc.RelayUsMax)
	}
	var b bytes.Buffer
	if err := WriteTable(&b, s); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "| 2.00 | 1.00–5.00 |") {
		t.Fatalf("table lacks cost and range:\n%s", b.String())
	}
	// The input is left in its order: callers still write it out.
	if rs[1].Rep != 1 {
		t.Fatal("Summarize reordered its input")
	}
}

func TestAppendJSONL(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	for range 2 {
		if _, err := AppendJSONL(dir, "results.jsonl", []Datapath{{Path: "direct"}, {Path: "tc", ProgNsPerPkt: f(70)}}); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "results.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 4 (appended twice)", len(lines))
	}
	var d Datapath
	if err := json.Unmarshal([]byte(lines[1]), &d); err != nil || d.Path != "tc" || *d.ProgNsPerPkt != 70 {
		t.Fatalf("line 2: %v %+v", err, d)
	}
	back, err := ReadJSONL(filepath.Join(dir, "results.jsonl"))
	if err != nil || len(back) != 4 || back[3].Path != "tc" {
		t.Fatalf("read back: %v, %d rows", err, len(back))
	}
}
