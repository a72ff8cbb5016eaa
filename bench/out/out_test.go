package out

import (
	"bytes"
	"encoding/csv"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestMarkdown(t *testing.T) {
	tests := []struct {
		name string
		t    Table
		want string
	}{
		{"alignments", Table{Head: []string{"a", "b", "c", "d"}, Align: []Align{AlignDefault, AlignLeft, AlignCenter, AlignRight},
			Rows: [][]string{{"1", "2", "3", "4"}}},
			"| a | b | c | d |\n|---|:---|:---:|---:|\n| 1 | 2 | 3 | 4 |\n"},
		{"missing alignments", Table{Head: []string{"a", "b"}, Align: []Align{AlignRight}},
			"| a | b |\n|---:|---|\n"},
		{"pipe and newline stay in the cell", Table{Head: []string{"cmd"}, Rows: [][]string{{"a | b\nc"}}},
			"| cmd |\n|---|\n| a \\| b c |\n"},
		{"blank marks empty body cells only", Table{Head: []string{"", "v"}, Rows: [][]string{{"x", ""}}, Blank: Dash},
			"|  | v |\n|---|---|\n| x | – |\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.t.Markdown(); got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

type rec struct {
	Name string  `json:"name"`
	V    float64 `json:"v"`
}

func TestColumnsCSV(t *testing.T) {
	cols := []Column[rec]{
		Col("name", func(r *rec) string { return r.Name }),
		Col("v", func(r *rec) string { return Plain(r.V) }),
	}
	var buf bytes.Buffer
	if err := Columns(cols, []rec{{"a, \"b\"", 1.5}, {"c", 0}}).WriteCSV(&buf); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"name", "v"}, {"a, \"b\"", "1.5"}, {"c", "0"}}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("rows %q, want %q", rows, want)
	}
}

func TestJSONL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new", "results.jsonl")
	for range 2 {
		if err := AppendJSONL(path, []rec{{"a", 1}, {"b", 2}}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ReadJSONL[rec](path)
	if err != nil || len(got) != 4 || got[3] != (rec{"b", 2}) {
		t.Fatalf("appended twice: %v %+v", err, got)
	}
	if err := WriteJSONL(path, []rec{{"c", 3}}); err != nil {
		t.Fatal(err)
	}
	if got, err = ReadJSONL[rec](path); err != nil || len(got) != 1 || got[0].Name != "c" {
		t.Fatalf("replaced: %v %+v", err, got)
	}
	if err := os.WriteFile(path, []byte("\n  \n{\"name\":\"x\"}\n{\"name\":\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadJSONL[rec](path); err == nil || !strings.Contains(err.Error(), "line 4") {
		t.Errorf("a bad line 4: error %v, want one naming line 4", err)
	}
	if _, err := ReadJSONL[rec](filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing file read without error")
	}
}

func FuzzDecodeJSONL(f *testing.F) {
	f.Add([]byte("{\"name\":\"a\",\"v\":1}\n\n{\"name\":\"b\"}\n"))
	f.Add([]byte("{\"name\":"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, err := DecodeJSONL[rec](bytes.NewReader(b))
		if err != nil {
			return
		}
		// What decodes must survive a write and a read back.
		path := filepath.Join(t.TempDir(), "r.jsonl")
		if err := WriteJSONL(path, rs); err != nil {
			t.Fatal(err)
		}
		back, err := ReadJSONL[rec](path)
		if err != nil || len(back) != len(rs) {
			t.Fatalf("read back %d of %d: %v", len(back), len(rs), err)
		}
	})
}

func TestWriteFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	ok := File{Name: "a.txt", Render: Of(func(w io.Writer, s []string) error {
		_, err := io.WriteString(w, s[0])
		return err
	}, []string{"new"})}
	if err := WriteFiles(dir, ok); err != nil {
		t.Fatal(err)
	}
	bad := File{Name: "a.txt", Render: func(w io.Writer) error {
		io.WriteString(w, "half")
		return errors.New("boom")
	}}
	if err := WriteFiles(dir, bad); err == nil || !strings.Contains(err.Error(), "a.txt") {
		t.Errorf("failed render: error %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "a.txt")); string(b) != "new" {
		t.Errorf("a failed render left %q, want the previous file", b)
	}
}

func TestFormat(t *testing.T) {
	tests := []struct{ got, want string }{
		{Fixed(-0.001, 2), "0.00"},
		{Fixed(-0.5, 1), "-0.5"},
		{Fixed(1.005, 0), "1"},
		{Plain(2.50), "2.5"},
		{Count(0), "0"},
		{Count(1234567), "1,234,567"},
		{Count(-1000), "-1,000"},
		{Count(999), "999"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestTicks(t *testing.T) {
	tests := []struct {
		lo, hi, want          float64
		start, end, stepWants float64
	}{
		{0, 550, 6, 0, 600, 100},
		{0, 0.143, 5, 0, 0.15, 0.05},
		{-0.002, 0.011, 5, -0.005, 0.015, 0.005},
		{0, 0, 5, 0, 1, 0.2},
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	for _, tt := range tests {
		s, e, step := Ticks(tt.lo, tt.hi, int(tt.want))
		if !near(s, tt.start) || !near(e, tt.end) || !near(step, tt.stepWants) {
			t.Errorf("Ticks(%g, %g) = %g..%g step %g, want %g..%g step %g",
				tt.lo, tt.hi, s, e, step, tt.start, tt.end, tt.stepWants)
		}
	}
}

// svgTexts parses an SVG and returns its texts and how many elements of
// each name it has.
func svgTexts(t *testing.T, render func(io.Writer) error) ([]string, map[string]int) {
	t.Helper()
	var buf bytes.Buffer
	if err := render(&buf); err != nil {
		t.Fatal(err)
	}
	if s := buf.String(); strings.Contains(s, "NaN") || strings.Contains(s, "Inf") {
		t.Errorf("non-finite coordinate in\n%s", s)
	}
	dec := xml.NewDecoder(&buf)
	var texts []string
	n := map[string]int{}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return texts, n
		}
		if err != nil {
			t.Fatalf("SVG does not parse: %v", err)
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			n[tk.Name.Local]++
		case xml.CharData:
			texts = append(texts, string(tk))
		}
	}
}

func TestLineChartRightAxis(t *testing.T) {
	c := LineChart{Title: "cpu & rss", XLabel: "n", YLabel: "cores", Y2Label: "MB",
		YTick:  func(v float64, dec int) string { return Fixed(v, dec) + "c" },
		Y2Tick: func(v float64, dec int) string { return Fixed(v, dec) + "M" },
		Series: []Series{
			{Label: "cpu", Color: "#000", Points: []Point{{2000, 0.5}, {1000, 0.25}}},
			{Label: "rss", Color: "#f00", Right: true, Points: []Point{{1000, 40}, {2000, 80}}},
		}}
	texts, n := svgTexts(t, c.WriteSVG)
	all := strings.Join(texts, "\n")
	for _, want := range []string{"cpu & rss", "MB", "cores", "0.6c", "100M", "rss at 2000: 80.0000M"} {
		if !strings.Contains(all, want) {
			t.Errorf("chart lacks %q", want)
		}
	}
	if n["path"] != 2 || n["circle"] != 4+2 {
		t.Errorf("%d paths and %d circles, want 2 and 6", n["path"], n["circle"])
	}
}

func TestBarChart(t *testing.T) {
	c := BarChart{Title: "memory <per conn>", Bars: []Bar{
		{Label: "TCP", Value: 10, Text: "10 kB", Color: "#4a8", Target: 20, TargetText: "target 20"},
		{Label: "TLS", Value: 30, Text: "30 kB", Color: "#c54"},
	}}
	texts, n := svgTexts(t, c.WriteSVG)
	all := strings.Join(texts, "\n")
	for _, want := range []string{"memory <per conn>", "TCP", "30 kB", "target 20"} {
		if !strings.Contains(all, want) {
			t.Errorf("chart lacks %q", want)
		}
	}
	if n["rect"] != 2 || n["line"] != 2 {
		t.Errorf("%d bars and %d lines, want 2 and 2 (axis, one target)", n["rect"], n["line"])
	}
}

func TestJSONColumns(t *testing.T) {
	type inner struct {
		K string `json:"kernel"`
	}
	type row struct {
		Name  string            `json:"name"`
		N     int               `json:"n"`
		U     uint64            `json:"u"`
		F     float64           `json:"f"`
		Opt   *float64          `json:"opt,omitempty"`
		OK    bool              `json:"ok"`
		When  time.Time         `json:"when"`
		Host  inner             `json:"host"`
		Notes []string          `json:"notes"`
		Codes map[string]int    `json:"codes"`
		Skip  string            `json:"-"`
		Extra map[string]string `json:"extra"`
	}
	cols := JSONColumns(map[string]func(*row) string{
		"codes": func(r *row) string { return fmt.Sprint(len(r.Codes)) },
		"extra": func(*row) string { return "x" },
	})
	half := 0.5
	tab := Columns(cols, []row{
		{Name: "a", N: -1, U: 2, F: 1.25, Opt: &half, OK: true, When: time.Date(2026, 4, 3, 12, 0, 0, 0, time.UTC),
			Host: inner{"6.1"}, Notes: []string{"p", "q"}, Codes: map[string]int{"200": 1}},
		{},
	})
	wantHead := []string{"name", "n", "u", "f", "opt", "ok", "when", "host_kernel", "notes", "codes", "extra"}
	if !reflect.DeepEqual(tab.Head, wantHead) {
		t.Errorf("head %q, want %q", tab.Head, wantHead)
	}
	want := [][]string{
		{"a", "-1", "2", "1.25", "0.5", "true", "2026-04-03T12:00:00Z", "6.1", "p; q", "1", "x"},
		{"", "0", "0", "0", "", "false", "", "", "", "0", "x"},
	}
	if !reflect.DeepEqual(tab.Rows, want) {
		t.Errorf("rows %q, want %q", tab.Rows, want)
	}
	defer func() {
		if recover() == nil {
			t.Error("a map field without a custom column did not panic")
		}
	}()
	JSONColumns[row](nil)
}
