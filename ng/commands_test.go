package ng

import (
	"reflect"
	"testing"
)

// TestUnsupportedCommands: every command rtpengine documents that the
// relay does not carry out gets an error naming it and why, and reaches
// no Backend; a command rtpengine does not know either gets rtpengine's
// own reply. Each row names the section of rtpengine's
// ng_control_protocol.md (or the source) the command comes from.
func TestUnsupportedCommands(t *testing.T) {
	for _, tc := range []struct {
		command, doc, reason string
	}{
		{"start recording", "`start recording` Message", "recording not supported: start recording"},
		{"stop recording", "`stop recording` Message", "recording not supported: stop recording"},
		{"pause recording", "`pause recording` Message", "recording not supported: pause recording"},
		{"start forwarding", "`start forwarding` and `stop forwarding` Messages", "recording (PCM forwarding) not supported: start forwarding"},
		{"stop forwarding", "`start forwarding` and `stop forwarding` Messages", "recording (PCM forwarding) not supported: stop forwarding"},
		{"play media", "`play media` Message", "media playback not supported: play media"},
		{"stop media", "`stop media` Message", "media playback not supported: stop media"},
		{"play DTMF", "`play DTMF` Message", "media playback (DTMF injection) not supported: play dtmf"},
		{"block DTMF", "`block DTMF` and `unblock DTMF` Messages", "DTMF blocking not supported: block dtmf"},
		{"unblock DTMF", "`block DTMF` and `unblock DTMF` Messages", "DTMF blocking not supported: unblock dtmf"},
		{"block media", "`block media` and `unblock media` Messages", "media blocking not supported: block media"},
		{"unblock media", "`block media` and `unblock media` Messages", "media blocking not supported: unblock media"},
		{"silence media", "`silence media` and `unsilence media` Messages", "media silencing (transcoding) not supported: silence media"},
		{"unsilence media", "`silence media` and `unsilence media` Messages", "media silencing (transcoding) not supported: unsilence media"},
		{"publish", "`publish` Message", "media subscriptions not supported: publish"},
		{"subscribe request", "`subscribe request` Message", "media subscriptions not supported: subscribe request"},
		{"subscribe answer", "`subscribe answer` Message", "media subscriptions not supported: subscribe answer"},
		{"unsubscribe", "`unsubscribe` Message", "media subscriptions not supported: unsubscribe"},
		{"inject start", "`inject start` Message", "media injection not supported: inject start"},
		{"inject stop", "`inject stop` Message", "media injection not supported: inject stop"},
		{"connect", "`connect` Message", "media subscriptions not supported: connect"},
		{"create", "`create` and `create answer` Messages", "media subscriptions not supported: create"},
		{"create answer", "`create` and `create answer` Messages", "media subscriptions not supported: create answer"},
		{"mesh", "`mesh` Message", "media subscriptions not supported: mesh"},
		{"transform", "control_ng.h NG_COMMANDS", "media transforms not supported: transform"},
		{"cli", "control_ng.h NG_COMMANDS", "rtpengine's CLI not supported: cli"},
		{"frobnicate", "control_ng.c: a command not in NG_COMMANDS", ReasonUnrecognized},
	} {
		t.Run(tc.command, func(t *testing.T) {
			b := &fakeBackend{}
			s := NewServer(b, Options{})
			in := map[string]any{"command": tc.command, "call-id": "c1", "from-tag": "ft"}
			got := parseReply(t, "ck", s.Handle(msg(t, "ck", in), testSrc))
			want := map[string]any{"result": "error", "error-reason": tc.reason}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s (%s): reply %#v, want %#v", tc.command, tc.doc, got, want)
			}
			if len(b.reqs) != 0 {
				t.Errorf("%s reached the backend: %v", tc.command, b.reqs)
			}
			if n := s.Stats()["commands.unknown"]; n != 1 {
				t.Errorf("commands.unknown = %d, want 1", n)
			}
		})
	}
}

// TestDictFlags: a dictionary value is read as its flags-list form
// (rtpengine's codec-* equivalence), so codec and moh dictionaries reach
// the backend; a nested dictionary is reported ignored.
func TestDictFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		d       map[string]any
		want    map[string]string
		ignored []string
	}{
		{"codec lists", map[string]any{"codec": map[string]any{"transcode": []any{"PCMA", "opus/48000/2"}}},
			map[string]string{"codec-transcode-pcma": "1", "codec-transcode-opus/48000/2": "2"}, nil},
		{"moh values", map[string]any{"MoH": map[string]any{"file": "/x.wav", "db-id": int64(7)}},
			map[string]string{"moh-file": "/x.wav", "moh-db-id": "7"}, nil},
		{"sdp-attr is nested deeper", map[string]any{"sdp-attr": map[string]any{"audio": map[string]any{"add": []any{"ptime:20"}}}},
			map[string]string{}, []string{"sdp-attr"}},
		{"a list holding a dictionary", map[string]any{"codec": map[string]any{"strip": []any{map[string]any{}}, "offer": []any{"PCMU"}}},
			map[string]string{"codec-offer-pcmu": "1"}, []string{"codec"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := map[string]any{"command": "ping"}
			for k, v := range tc.d {
				d[k] = v
			}
			r, ignored, err := ParseRequest(d)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(r.Flags, tc.want) {
				t.Errorf("flags %v, want %v", r.Flags, tc.want)
			}
			if !reflect.DeepEqual(ignored, tc.ignored) {
				t.Errorf("ignored %v, want %v", ignored, tc.ignored)
			}
		})
	}
}
