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
	rs := []Datapath{
		{Path: "direct", Rep: 1, OursCores: 0.9},
		{Path: "tc", Rep: 1, RelayUsPerPktProcs: f(1.5)},
		{Path: "direct", Rep: 2, OursCores: 0.8},
		{Path: "tc", Rep: 2, RelayUsPerPktProcs: f(1.1)},
		{Path: "direct", Rep: 3, OursCores: 1.0},
		{Path: "tc", Rep: 3, RelayUsPerPktProcs: f(1.3)},
	}
	s := Summarize(rs)
	if len(s) != 2 || s[0].Path != "direct" || s[1].Path != "tc" {
		t.Fatalf("order: %+v", s)
	}
	if s[0].Rep != 1 || s[0].Runs != 3 {
		t.Fatalf("direct median: rep %d runs %d, want rep 1 of 3", s[0].Rep, s[0].Runs)
	}
	tc := s[1]
	if *tc.RelayUsPerPktProcs != 1.3 || *tc.RelayUsMin != 1.1 || *tc.RelayUsMax != 1.5 {
		t.Fatalf("tc: %v [%v, %v]", *tc.RelayUsPerPkt, *tc.RelayUsMin, *tc.RelayUsMax)
	}
	var b bytes.Buffer
	if err := WriteTable(&b, s); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "| 1.10–1.50 |") {
		t.Fatalf("table lacks the range:\n%s", b.String())
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
}
