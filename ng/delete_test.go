package ng

import (
	"reflect"
	"testing"
)

// TestDeleteWarningReply: a backend's warning is rtpengine's "ok with a
// warning" reply (rtpengine's NG control protocol documentation, "delete
// Message": the default for an unknown call), with no statistics when the
// backend has none.
func TestDeleteWarningReply(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stats CallStats
		want  map[string]any
	}{
		{"warning alone", CallStats{Warning: "Call-ID not found or tags didn't match"},
			map[string]any{"result": "ok", "warning": "Call-ID not found or tags didn't match"}},
		{"no warning, no stats (fast)", CallStats{}, map[string]any{"result": "ok"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewServer(&fakeBackend{stats: tc.stats}, Options{})
			got := parseReply(t, "d", s.Handle(msg(t, "d", map[string]any{"command": "delete", "call-id": "c", "from-tag": "f"}), testSrc))
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("reply %#v, want %#v", got, tc.want)
			}
		})
	}
}
