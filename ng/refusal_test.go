package ng

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"
)

// TestRefusals checks the replies that make Kamailio's and OpenSIPS's
// rtpengine modules try the next relay (see ErrLoadLimit): exact
// strings, only for offers, and the reason in message.
func TestRefusals(t *testing.T) {
	sdp := "v=0\r\n"
	offer := func(extra map[string]any) map[string]any {
		d := map[string]any{"command": "offer", "call-id": "c1", "from-tag": "ft", "sdp": sdp}
		for k, v := range extra {
			d[k] = v
		}
		return d
	}
	kamailio := map[string]any{"supports": []any{"load limit"}}
	draining := fmt.Errorf("%w: relay is draining", ErrLoadLimit)
	noPorts := fmt.Errorf("%w: port pool exhausted", ErrOutOfPorts)
	for _, tc := range []struct {
		name   string
		in     map[string]any
		err    error
		want   map[string]any
		failed bool // counted as a failed command
	}{
		{"draining, client supports load limit (Kamailio)", offer(kamailio), draining,
			map[string]any{"result": "load limit", "message": "relay not taking new calls: relay is draining"}, true},
		{"draining, supports spelled with underscores", offer(map[string]any{"supports": []any{"load_limit"}}), draining,
			map[string]any{"result": "load limit", "message": "relay not taking new calls: relay is draining"}, true},
		{"draining, legacy client (OpenSIPS)", offer(nil), draining,
			map[string]any{"result": "error", "error-reason": "Parallel session limit reached",
				"message": "relay not taking new calls: relay is draining"}, true},
		{"out of ports, Kamailio", offer(kamailio), noPorts,
			map[string]any{"result": "error", "error-reason": "Ran out of ports",
				"message": "relay out of ports: port pool exhausted"}, true},
		{"out of ports, legacy client", offer(nil), noPorts,
			map[string]any{"result": "error", "error-reason": "Ran out of ports",
				"message": "relay out of ports: port pool exhausted"}, true},
		{"other offer error stays an error", offer(kamailio), errors.New("bad sdp"),
			map[string]any{"result": "error", "error-reason": "bad sdp"}, true},
		{"answer is never sent elsewhere", map[string]any{"command": "answer", "call-id": "c1", "from-tag": "ft",
			"to-tag": "tt", "sdp": sdp, "supports": []any{"load limit"}}, draining,
			map[string]any{"result": "error", "error-reason": "relay not taking new calls: relay is draining"}, true},
		{"delete is never sent elsewhere", map[string]any{"command": "delete", "call-id": "c1"}, noPorts,
			map[string]any{"result": "error", "error-reason": "relay out of ports: port pool exhausted"}, true},
		{"offer taken", offer(kamailio), nil,
			map[string]any{"result": "ok", "sdp": "v=0 offer c1"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var failed []bool
			s := NewServer(&fakeBackend{err: tc.err}, Options{Observe: func(_ string, f bool, _ time.Duration) {
				failed = append(failed, f)
			}})
			got := parseReply(t, "ck", s.Handle(msg(t, "ck", tc.in), testSrc))
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("reply %#v, want %#v", got, tc.want)
			}
			if !reflect.DeepEqual(failed, []bool{tc.failed}) {
				t.Errorf("observed failed %v, want [%v]", failed, tc.failed)
			}
		})
	}
}
