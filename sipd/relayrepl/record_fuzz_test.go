package relayrepl

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeRecord: whatever a key holds (another version, another
// program, corruption) decodes or fails without panicking, and what
// decodes encodes back to a record that decodes the same.
func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte(`{"node":"relay1","updated":"2026-01-01T00:00:00Z","call":{"caller_tag":"a"},"latches":[{"stream":0,"side":1,"latch":{"source":"192.0.2.1:4000","rank":"exact","locked":true}}]}`))
	f.Add([]byte(`{"call":null}`))
	f.Add([]byte(`{"call":{},"latches":[{"side":7,"latch":{"rank":"none"}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			return
		}
		out, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("encode decoded record: %v", err)
		}
		r2, err := decodeRecord(out)
		if err != nil {
			t.Fatalf("decode re-encoded record %s: %v", out, err)
		}
		if len(r2.Latches) != len(r.Latches) || r2.Node != r.Node {
			t.Fatalf("round trip changed the record: %+v then %+v", r, r2)
		}
	})
}

func TestValidName(t *testing.T) {
	for _, c := range []struct {
		s  string
		ok bool
	}{{"relay-a", true}, {"r1.example_2", true}, {"", false}, {"a:b", false}, {"a*", false}, {"a b", false}} {
		if got := ValidName(c.s); got != c.ok {
			t.Errorf("ValidName(%q) = %v, want %v", c.s, got, c.ok)
		}
	}
}
