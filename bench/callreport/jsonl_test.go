package callreport

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestJSONLRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.jsonl")
	first := fixtureSet()
	Derive(first)
	if err := AppendJSONL(path, first[:2]); err != nil {
		t.Fatal(err)
	}
	if err := AppendJSONL(path, first[2:]); err != nil {
		t.Fatal(err)
	}
	got, err := ReadJSONL(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, first) {
		t.Errorf("round trip changed results:\n got %+v\nwant %+v", got, first)
	}
}

func TestReadJSONLBlankAndBadLines(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.jsonl")
	bad := filepath.Join(dir, "bad.jsonl")
	rs := fixtureSet()[:1]
	if err := AppendJSONL(good, rs); err != nil {
		t.Fatal(err)
	}
	line, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(good, append(append([]byte("\n  \n"), line...), '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ReadJSONL(good)
	if err != nil || len(got) != 1 {
		t.Fatalf("ReadJSONL with blank lines = %d results, %v; want 1, nil", len(got), err)
	}

	if err := os.WriteFile(bad, append(line, []byte("{\"scenario\": \"xdp\",\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = ReadJSONL(bad)
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("ReadJSONL on a bad line 2: error %v, want one naming line 2", err)
	}

	if _, err := ReadJSONL(filepath.Join(dir, "missing.jsonl")); err == nil {
		t.Error("ReadJSONL on a missing file succeeded")
	}
}
