package callreport

import (
	"path/filepath"
	"reflect"
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
