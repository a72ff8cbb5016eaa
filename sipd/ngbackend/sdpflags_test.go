package ngbackend

import (
	"bytes"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"sipxdp/ng"
	"sipxdp/relay"
	"sipxdp/sipd/media"
)

// TestOriginalSendrecv: the relay writes direction attributes as the
// sender gave them, with original-sendrecv or without (ng control
// protocol, "original sendrecv": the flag leaves them unchanged; rtpengine
// without it writes its own, a c=0.0.0.0 stream as sendonly).
func TestOriginalSendrecv(t *testing.T) {
	for _, tc := range []struct {
		name, conn, attr string
	}{
		{"recvonly", "192.0.2.10", "a=recvonly\r\n"},
		{"sendonly", "192.0.2.10", "a=sendonly\r\n"},
		{"inactive", "192.0.2.10", "a=inactive\r\n"},
		{"sendrecv", "192.0.2.10", "a=sendrecv\r\n"},
		{"none on a zero address stays none (no sendonly added)", "0.0.0.0", ""},
	} {
		for _, withFlag := range []bool{true, false} {
			b, _ := newBackend()
			s := ng.NewServer(b, ng.Options{})
			cmd := map[string]any{"command": "offer", "call-id": "c1", "from-tag": "a",
				"sdp": replaceSDP("- 1 1 IN IP4 192.0.2.10", "-", tc.conn, tc.attr)}
			if withFlag {
				cmd["flags"] = []any{"original-sendrecv"}
			}
			rep := roundTrip(t, s, "os", cmd)
			out, _ := rep["sdp"].(string)
			if rep["result"] != "ok" {
				t.Fatalf("%s (flag %v): %v", tc.name, withFlag, rep)
			}
			var dirs []string
			for _, l := range strings.Split(out, "\r\n") {
				switch l {
				case "a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive":
					dirs = append(dirs, l+"\r\n")
				}
			}
			if want := strings.Join(dirs, ""); want != tc.attr {
				t.Errorf("%s (flag %v): directions %q, want %q\n%s", tc.name, withFlag, want, tc.attr, out)
			}
		}
	}
}

// TestFragment: an offer with the fragment flag (ng control protocol,
// "fragment"; call_interfaces.c trickle_ice_update: "SDP fragments for
// trickle ICE are consumed with no replacement returned") is answered ok
// with no sdp and leaves the call, known or not, as it was.
func TestFragment(t *testing.T) {
	b, f := newBackend()
	s := ng.NewServer(b, ng.Options{})
	frag := "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n" +
		"a=candidate:2 1 UDP 2 198.51.100.7 50000 typ srflx raddr 0.0.0.0 rport 0\r\n"
	fragCmd := func(call string) map[string]any {
		return map[string]any{"command": "offer", "call-id": call, "from-tag": "a", "sdp": frag, "flags": []any{"fragment"}}
	}
	if rep := roundTrip(t, s, "f0", fragCmd("unknown")); !reflect.DeepEqual(rep, map[string]any{"result": "ok"}) {
		t.Errorf("fragment for an unknown call: reply %v, want result ok alone", rep)
	}
	if calls := roundTrip(t, s, "f1", map[string]any{"command": "list"})["calls"].([]any); len(calls) != 0 {
		t.Errorf("a fragment made calls %v", calls)
	}
	if rep := roundTrip(t, s, "f2", offerCmd("c1", 10000)); rep["result"] != "ok" {
		t.Fatal(rep)
	}
	if rep := roundTrip(t, s, "f3", answerCmd("c1", 20000)); rep["result"] != "ok" {
		t.Fatal(rep)
	}
	before := *f.sessions["c1"]
	if rep := roundTrip(t, s, "f4", fragCmd("c1")); !reflect.DeepEqual(rep, map[string]any{"result": "ok"}) {
		t.Errorf("fragment for a known call: reply %v, want result ok alone", rep)
	}
	if after := *f.sessions["c1"]; !reflect.DeepEqual(before, after) {
		t.Errorf("the fragment changed the session:\n%+v\n%+v", before, after)
	}
	// Without the flag the same body is an offer, and a bad one.
	if rep := roundTrip(t, s, "f5", withKeys(fragCmd("c2"), "flags", []any{})); rep["result"] == "ok" && rep["sdp"] == nil {
		t.Errorf("without fragment the body was consumed: %v", rep)
	}
}

// TestDebugFlag: debug (or debugging) logs the message at info whatever
// the log level (ng control protocol, "debug"); without it nothing is
// logged at info.
func TestDebugFlag(t *testing.T) {
	for _, tc := range []struct {
		flags []any
		want  bool
	}{{[]any{"debug"}, true}, {[]any{"debugging"}, true}, {nil, false}} {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
		f := &fake{sessions: map[string]*relay.SessionInfo{}}
		b := New(media.New(media.Config{Mode: media.ModeAll, Engine: f}), f, log)
		s := ng.NewServer(b, ng.Options{})
		cmd := offerCmd("c1", 10000)
		if tc.flags != nil {
			cmd["flags"] = tc.flags
		}
		if rep := roundTrip(t, s, "d", cmd); rep["result"] != "ok" {
			t.Fatal(rep)
		}
		got := buf.String()
		logged := strings.Contains(got, "ng: debug") && strings.Contains(got, "call_id=c1") &&
			strings.Contains(got, "192.0.2.10") && strings.Contains(got, "203.0.113.1")
		if logged != tc.want {
			t.Errorf("flags %v: logged %v, want %v:\n%s", tc.flags, logged, tc.want, got)
		}
	}
}

// TestProvisional: an answer from a new to-tag after a final response
// (SIP code 200) goes to the answered branch, which rtpengine does only
// with provisional (call.c: FINAL_RESPONSE and flags->provisional); the
// relay does it always, so SIP code and SIP message type change nothing.
func TestProvisional(t *testing.T) {
	for _, extra := range [][]any{
		{"flags", []any{"provisional"}},
		{},
	} {
		b, _ := newBackend()
		s := ng.NewServer(b, ng.Options{})
		if rep := roundTrip(t, s, "p0", offerCmd("c1", 10000)); rep["result"] != "ok" {
			t.Fatal(rep)
		}
		first := roundTrip(t, s, "p1", answerCmd("c1", 20000, "SIP message type", "SIP response", "SIP code", int64(200)))
		second := roundTrip(t, s, "p2", withKeys(answerCmd("c1", 20000, append([]any{"SIP message type", "SIP response", "SIP code", int64(200)}, extra...)...), "to-tag", "c"))
		if first["result"] != "ok" || second["result"] != "ok" {
			t.Fatalf("%v: replies %v, %v", extra, first, second)
		}
		if first["sdp"] != second["sdp"] {
			t.Errorf("%v: the changed to-tag's answer got\n%v\nwant the branch's\n%v", extra, second["sdp"], first["sdp"])
		}
	}
}

// TestAliasKey: with alias key, an offer from a from-tag the call does
// not know is taken as from the tag whose offer had the same SDP (SDP) or
// first m-line address (address, endpoint), and its tag stays an alias of
// that one (ng control protocol, "alias key"; call.c
// call_get_monologue_alias). Without it, or when the first offer did not
// give it, such an offer fails as an unknown tag.
func TestAliasKey(t *testing.T) {
	const caller = "192.0.2.10"
	first := replaceSDP("- 1 1 IN IP4 "+caller, "-", caller)
	bumped := replaceSDP("- 1 2 IN IP4 "+caller, "-", caller) // same address, another SDP
	moved := replaceSDP("- 1 2 IN IP4 "+caller, "-", "192.0.2.99")
	offer := func(tag, body, key string) map[string]any {
		d := map[string]any{"command": "offer", "call-id": "c1", "from-tag": tag, "sdp": body}
		if key != "" {
			d["alias key"] = key
		}
		return d
	}
	for _, tc := range []struct {
		name     string
		firstKey string
		second   map[string]any
		aliased  bool
	}{
		{"SDP: the same SDP from a new tag is the caller's", "SDP", offer("a2", first, "SDP"), true},
		{"SDP: another SDP is not", "SDP", offer("a2", bumped, "SDP"), false},
		{"address: the same first m-line address", "address", offer("a2", bumped, "address"), true},
		{"endpoint is address", "endpoint", offer("a2", bumped, "endpoint"), true},
		{"address: another address is not", "address", offer("a2", moved, "address"), false},
		{"off: no alias", "off", offer("a2", first, "off"), false},
		{"no key: no alias", "", offer("a2", first, ""), false},
		{"the first offer had no key: no alias", "", offer("a2", first, "SDP"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, f := newBackend()
			s := ng.NewServer(b, ng.Options{})
			one := roundTrip(t, s, "k0", offer("a", first, tc.firstKey))
			if one["result"] != "ok" {
				t.Fatal(one)
			}
			two := roundTrip(t, s, "k1", tc.second)
			if !tc.aliased {
				if two["result"] != "error" {
					t.Errorf("offer from an unknown tag: %v, want an error", two)
				}
				return
			}
			if two["result"] != "ok" || two["sdp"] != one["sdp"] && !strings.Contains(two["sdp"].(string), "m=audio 40002 ") {
				t.Fatalf("aliased offer: %v, want the caller's re-offer (relay port 40002)\n%v", two, one["sdp"])
			}
			// The alias names the caller in an answer and a delete too.
			ans := roundTrip(t, s, "k2", map[string]any{"command": "answer", "call-id": "c1", "from-tag": "a2", "to-tag": "b",
				"sdp": string(sdp("192.0.2.20", 20000))})
			if ans["result"] != "ok" {
				t.Fatalf("answer with the alias as from-tag: %v", ans)
			}
			if q := roundTrip(t, s, "k3", queryCmd("c1")); q["result"] != "ok" || q["tags"].(map[string]any)["a2"] != nil {
				t.Errorf("query: %v, want the caller under its own tag only", q)
			}
			if d := roundTrip(t, s, "k4", map[string]any{"command": "delete", "call-id": "c1", "from-tag": "a2"}); d["result"] != "ok" || len(f.deleted) != 1 {
				t.Errorf("delete by the alias: %v, deleted %v", d, f.deleted)
			}
			if n := len(b.aliases.keys) + len(b.aliases.tags); n != 0 {
				t.Errorf("after delete, %d alias entries kept", n)
			}
		})
	}
}
