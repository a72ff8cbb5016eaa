package ngbackend

import (
	"fmt"
	"net/netip"
	"testing"

	"sipxdp/ng"
	"sipxdp/relay"
)

// TestRefusals drives the backend through ng.Server as a proxy's
// rtpengine module would and checks the replies on the wire: a new call
// on a draining or full relay is refused so that the proxy tries the next
// relay (ng.ErrLoadLimit), while the calls the relay has go on.
func TestRefusals(t *testing.T) {
	type step struct {
		engine func(f *fake) // changes the engine before the command
		cmd    map[string]any
		// result, and error-reason when result is "error"
		result, reason string
	}
	kamailio := []any{"load limit"} // Kamailio sends supports: ["load limit"]
	offer := func(id string, supports []any, mlines int) map[string]any {
		body := sdp("192.0.2.10", 10000)
		for i := 1; i < mlines; i++ {
			body = fmt.Appendf(body, "m=audio %d RTP/AVP 0\r\n", 10000+2*i)
		}
		d := map[string]any{"command": "offer", "call-id": id, "from-tag": "a", "sdp": string(body)}
		if supports != nil {
			d["supports"] = supports
		}
		return d
	}
	answer := map[string]any{"command": "answer", "call-id": "c1", "from-tag": "a", "to-tag": "b",
		"sdp": string(sdp("192.0.2.20", 20000)), "supports": kamailio}
	del := func(id string) map[string]any { return map[string]any{"command": "delete", "call-id": id} }
	list := map[string]any{"command": "list"}
	drain := func(f *fake) { f.createErr = relay.ErrDraining }
	full := func(f *fake) { f.addErr = relay.ErrPortsExhausted }
	closed := func(f *fake) { f.createErr = relay.ErrEngineClosed }
	for _, tc := range []struct {
		name  string
		steps []step
		calls int // calls listed at the end
	}{
		{"draining: new call, Kamailio", []step{
			{drain, offer("c1", kamailio, 1), "load limit", ""},
		}, 0},
		{"draining: new call, client without load limit (OpenSIPS)", []step{
			{drain, offer("c1", nil, 1), "error", "Parallel session limit reached"},
		}, 0},
		{"draining: the call it has goes on", []step{
			{nil, offer("c1", kamailio, 1), "ok", ""},
			{drain, offer("c2", kamailio, 1), "load limit", ""},
			{nil, answer, "ok", ""},
			{nil, offer("c1", kamailio, 1), "ok", ""}, // re-offer
			{nil, offer("c1", kamailio, 2), "ok", ""}, // re-offer adding a stream
			{nil, del("c1"), "ok", ""},
		}, 0},
		{"shutting down: new call", []step{
			{closed, offer("c1", kamailio, 1), "load limit", ""},
		}, 0},
		{"ports exhausted: new call, Kamailio", []step{
			{full, offer("c1", kamailio, 1), "error", "Ran out of ports"},
		}, 0},
		{"ports exhausted: new call, OpenSIPS", []step{
			{full, offer("c1", nil, 1), "error", "Ran out of ports"},
		}, 0},
		{"ports exhausted: a known call's new stream is a plain error", []step{
			{nil, offer("c1", kamailio, 1), "ok", ""},
			{nil, answer, "ok", ""},
			{full, offer("c1", kamailio, 2), "error", "add stream 1: media relay unavailable: relay port pool exhausted"},
			{nil, offer("c1", kamailio, 1), "ok", ""},
		}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, f := newBackend()
			s := ng.NewServer(b, ng.Options{})
			for i, st := range tc.steps {
				if st.engine != nil {
					st.engine(f)
				}
				rep := roundTrip(t, s, fmt.Sprint("ck", i), st.cmd)
				if rep["result"] != st.result || (st.result == "error" && rep["error-reason"] != st.reason) {
					t.Fatalf("step %d (%s %s): reply %v, want result %q error-reason %q",
						i, st.cmd["command"], st.cmd["call-id"], rep, st.result, st.reason)
				}
				if st.result == "load limit" || st.reason == ng.ReasonSessionLimit || st.reason == ng.ReasonOutOfPorts {
					if m, _ := rep["message"].(string); m == "" {
						t.Errorf("step %d: refusal without a message: %v", i, rep)
					}
				}
			}
			// A refused offer leaves nothing behind on this relay.
			if calls := roundTrip(t, s, "ck-list", list)["calls"].([]any); len(calls) != tc.calls {
				t.Errorf("calls left %v, want %d", calls, tc.calls)
			}
		})
	}
}

func roundTrip(t *testing.T, s *ng.Server, cookie string, cmd map[string]any) map[string]any {
	t.Helper()
	enc, err := ng.Encode(cmd)
	if err != nil {
		t.Fatal(err)
	}
	out := s.Handle(append([]byte(cookie+" "), enc...), netip.MustParseAddrPort("192.0.2.1:5060"))
	v, err := ng.Decode(out[len(cookie)+1:])
	if err != nil {
		t.Fatalf("reply %q: %v", out, err)
	}
	return v.(map[string]any)
}
