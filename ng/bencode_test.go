package ng

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestBencodeRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		wire string
		val  any
	}{
		{"0:", ""},
		{"4:spam", "spam"},
		{"5:a b\x00c", "a b\x00c"},
		{"i0e", int64(0)},
		{"i42e", int64(42)},
		{"i-42e", int64(-42)},
		{"i9223372036854775807e", int64(9223372036854775807)},
		{"i-9223372036854775808e", int64(-9223372036854775808)},
		{"le", []any{}},
		{"l4:spami7ee", []any{"spam", int64(7)}},
		{"de", map[string]any{}},
		{"d3:bar4:spam3:fooi42ee", map[string]any{"foo": int64(42), "bar": "spam"}},
		{"d1:ad1:bl1:ceee", map[string]any{"a": map[string]any{"b": []any{"c"}}}},
		{"d7:call-id3:abc5:flagsl13:trust-address10:ICE=removeee",
			map[string]any{"call-id": "abc", "flags": []any{"trust-address", "ICE=remove"}}},
	} {
		got, err := Decode([]byte(tc.wire))
		if err != nil {
			t.Errorf("Decode(%q): %v", tc.wire, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.val) {
			t.Errorf("Decode(%q) = %#v, want %#v", tc.wire, got, tc.val)
		}
		enc, err := Encode(tc.val)
		if err != nil {
			t.Errorf("Encode(%#v): %v", tc.val, err)
			continue
		}
		if string(enc) != tc.wire {
			t.Errorf("Encode(%#v) = %q, want %q", tc.val, enc, tc.wire)
		}
	}
}

func TestDecodeUnsortedKeys(t *testing.T) {
	v, err := Decode([]byte("d1:bi2e1:ai1ee"))
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := Encode(v)
	if string(enc) != "d1:ai1e1:bi2ee" {
		t.Errorf("re-encoded as %q, want sorted keys", enc)
	}
}

func TestEncodeTypes(t *testing.T) {
	type strs []string
	in := map[string]any{
		"b": []byte("xy"), "i": int32(-3), "u": uint16(7), "u64": uint64(1 << 63),
		"l": []string{"a"}, "m": map[string]string{"k": "v"}, "lm": []map[string]any{{"x": 1}},
		"n": strs{"z"},
	}
	got, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	want := "d1:b2:xy1:ii-3e1:ll1:ae2:lmld1:xi1eee1:md1:k1:ve1:nl1:ze1:ui7e3:u64i9223372036854775808ee"
	if string(got) != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	for _, bad := range []any{nil, true, 1.5, map[int]any{1: "x"}, []any{struct{}{}}} {
		if _, err := Encode(bad); err == nil {
			t.Errorf("Encode(%#v) succeeded", bad)
		}
	}
	deep := any("x")
	for range MaxDepth + 1 {
		deep = []any{deep}
	}
	if _, err := Encode(deep); err == nil {
		t.Error("Encode of too deep a value succeeded")
	}
	cyclic := []any{nil}
	cyclic[0] = cyclic
	if _, err := Encode(cyclic); err == nil {
		t.Error("Encode of a cyclic value succeeded")
	}
}

func TestDecodeMalformed(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string // in the error text
		partial bool   // wraps ErrUnexpectedEOF
	}{
		{"", "end of input", true},
		{"i", "end of input", true},
		{"i12", "end of input", true},
		{"ie", "without digits", false},
		{"i-e", "without digits", false},
		{"i-0e", "negative zero", false},
		{"i03e", "leading zero", false},
		{"i-03e", "leading zero", false},
		{"i1.5e", "invalid byte", false},
		{"i 1e", "invalid byte", false},
		{"i9223372036854775808e", "out of range", false},
		{"i-9223372036854775809e", "out of range", false},
		{"i123456789012345678901234e", "too long", false},
		{"5:abc", "end of input", true},
		{"5", "end of input", true},
		{"03:abc", "leading zero", false},
		{"3abc", "invalid byte", false},
		{"-3:abc", "unexpected byte", false},
		{"99999999999999999999:x", "longer than", false},
		{"65537:x", "longer than", false},
		{"l", "end of input", true},
		{"li1e", "end of input", true},
		{"d", "end of input", true},
		{"d1:a", "end of input", true},
		{"di1ei2ee", "key is not a string", false},
		{"dle1:ae", "key is not a string", false},
		{"d1:ai1e1:ai2ee", "duplicate dictionary key", false},
		{"i1ei2e", "trailing data", false},
		{"4:spamx", "trailing data", false},
		{"dee", "trailing data", false},
		{"x", "unexpected byte", false},
		{"e", "unexpected byte", false},
		{strings.Repeat("l", MaxDepth+1) + strings.Repeat("e", MaxDepth+1), "nesting deeper", false},
	} {
		v, err := Decode([]byte(tc.in))
		if err == nil {
			t.Errorf("Decode(%.40q) = %#v, want an error", tc.in, v)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Decode(%.40q): %v, want %q in it", tc.in, err, tc.want)
		}
		if errors.Is(err, ErrUnexpectedEOF) != tc.partial {
			t.Errorf("Decode(%.40q): %v; wraps ErrUnexpectedEOF: %v, want %v", tc.in, err, !tc.partial, tc.partial)
		}
	}
	// The depth limit itself is fine.
	ok := strings.Repeat("l", MaxDepth) + strings.Repeat("e", MaxDepth)
	if _, err := Decode([]byte(ok)); err != nil {
		t.Errorf("nesting of exactly %d: %v", MaxDepth, err)
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"", "i0e", "i-1e", "4:spam", "le", "de", "d3:bar4:spam3:fooi42ee",
		"d7:command4:ping7:call-id3:abce", "l" + strings.Repeat("l", 70), "d1:bi2e1:ai1ee",
		"i-0e", "03:abc", "d1:ai1e1:ai2ee",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := Decode(b)
		if err != nil {
			return
		}
		enc, err := Encode(v)
		if err != nil {
			t.Fatalf("Encode(Decode(%q)): %v", b, err)
		}
		v2, err := Decode(enc)
		if err != nil {
			t.Fatalf("Decode(Encode(Decode(%q))) = Decode(%q): %v", b, enc, err)
		}
		if !reflect.DeepEqual(v, v2) {
			t.Fatalf("round trip of %q changed %#v to %#v", b, v, v2)
		}
	})
}
