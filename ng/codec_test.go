package ng

import (
	"reflect"
	"testing"
)

func TestCodecFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   any
		want map[string]string
		ok   bool
	}{
		{"lists keep their order as the value", map[string]any{
			"strip": []any{"all"}, "offer": []any{"PCMA", "opus/48000/2"}, "except": []any{"G722"}},
			map[string]string{"codec-strip-all": "1", "codec-offer-pcma": "1", "codec-offer-opus/48000/2": "2", "codec-except-g722": "1"}, true},
		{"a single string is a list of one", map[string]any{"mask": "PCMU"},
			map[string]string{"codec-mask-pcmu": "1"}, true},
		{"names are folded like flag names", map[string]any{"Strip": []any{" telephone_event "}},
			map[string]string{"codec-strip-telephone-event": "1"}, true},
		{"empty names are dropped", map[string]any{"strip": []any{""}}, map[string]string{}, true},
		{"what is usable is used", map[string]any{"strip": []any{"PCMU", int64(8)}, "offer": int64(1)},
			map[string]string{"codec-strip-pcmu": "1"}, false},
		{"not a dictionary", []any{"strip"}, map[string]string{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string]string{}
			if ok := codecFlags(got, tc.in); ok != tc.ok || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("codecFlags(%v) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
}
