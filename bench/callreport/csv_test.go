package callreport

import (
	"bytes"
	"encoding/csv"
	"reflect"
	"strings"
	"testing"
)

func TestWriteCSV(t *testing.T) {
	rs := fixtureSet()
	rs[0].StatusCodes = map[string]int{"487": 1, "200": 499, "timeout": 2}
	rs[0].Notes = []string{"comma, inside", "quote \" inside"}
	Derive(rs)
	rows, col := csvRows(t, rs)
	tests := []struct {
		row  int
		name string
		want string
	}{
		{1, "scenario", "xdp"},
		{1, "status_codes", "200:499 487:1 timeout:2"},
		{1, "relay_cpu", "4"},
		{1, "bpf_ns_per_pkt", "42.5"},
		{1, "notes", "comma, inside; quote \" inside"},
		{1, "time", "2026-04-03T12:00:00Z"},
		{1, "host_kernel", "6.1.0-fixture"},
		{2, "scenario", "none"},
		{2, "relay_cpu", ""},
		{2, "relay_cpu_per_call_pct", ""},
		{2, "bpf_ns_per_pkt", ""},
		{2, "tx_packets", "2994000"},
	}
	for _, tt := range tests {
		i, ok := col[tt.name]
		if !ok {
			t.Errorf("no column %q", tt.name)
			continue
		}
		if got := rows[tt.row][i]; got != tt.want {
			t.Errorf("row %d %s = %q, want %q", tt.row, tt.name, got, tt.want)
		}
	}
}

// Every field of Result must reach the CSV, so a field added for the
// orchestrator is not silently left out of the spreadsheet.
func TestCSVCoversEveryField(t *testing.T) {
	have := map[string]bool{}
	for _, c := range columns {
		have[c.Name] = true
	}
	var walk func(typ reflect.Type, prefix string)
	walk = func(typ reflect.Type, prefix string) {
		for f := range typ.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if f.Type.Kind() == reflect.Struct && f.Type.Name() == "Host" {
				walk(f.Type, name+"_")
				continue
			}
			if !have[prefix+name] {
				t.Errorf("Result field %s (json %q) has no CSV column", f.Name, prefix+name)
			}
		}
	}
	walk(reflect.TypeFor[Result](), "")
}

func TestWriteCSVHandshakes(t *testing.T) {
	rs := bridgedSet()
	Derive(rs)
	rows, col := csvRows(t, rs)
	for _, c := range []struct {
		row        int
		name, want string
	}{
		{3, "dtls_errors", "timeout:2"},
		{3, "dtls_handshakes", "498"},
		{3, "dtls_p99_ms", "12.25"},
		{2, "dtls_errors", ""},
		{2, "dtls_handshakes", "0"},
	} {
		if got := rows[c.row][col[c.name]]; got != c.want {
			t.Errorf("row %d %s = %q, want %q", c.row, c.name, got, c.want)
		}
	}
}

// csvRows writes rs as CSV and reads it back: the rows, header first, and
// each column's index by name.
func csvRows(t *testing.T, rs []Result) ([][]string, map[string]int) {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteCSV(&buf, rs); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatalf("CSV does not parse back: %v", err)
	}
	if len(rows) != len(rs)+1 {
		t.Fatalf("got %d rows, want header and %d", len(rows), len(rs))
	}
	col := map[string]int{}
	for i, name := range rows[0] {
		col[name] = i
	}
	return rows, col
}
