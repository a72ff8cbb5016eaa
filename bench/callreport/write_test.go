package callreport

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteAll(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out", "calls")
	rs := fixtureSet()
	Derive(rs)
	for range 2 {
		if err := WriteAll(dir, rs); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ReadJSONL(filepath.Join(dir, "results.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2*len(rs) {
		t.Errorf("results.jsonl has %d results after two writes of %d, want them appended", len(got), len(rs))
	}
	for _, name := range []string{"results.csv", "report.md", "cpu-per-channel.svg"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Error(err)
		} else if fi.Size() == 0 {
			t.Errorf("%s is empty", name)
		}
	}
}
