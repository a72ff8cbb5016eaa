package ngbackend

import (
	"fmt"
	"strings"
	"testing"

	"sipxdp/ng"
	"sipxdp/relay"
	"sipxdp/sipd/sdprewrite"
)

// step is one NG command of a callFlags row and what must come back.
type step struct {
	cmd map[string]any
	// reason: the command fails with this error-reason; otherwise ok.
	reason string
	// For offer and answer: untouched means the reply's SDP is the
	// request's byte for byte; else the SDP must point at the relay
	// (port) and carry the relay's loop-protect mark exactly marks times
	// at session level, and these other lines.
	untouched bool
	port      int
	marks     int
	lines     []string
	// For query: each tag's label ("" means the tag has no label key).
	labels map[string]string
	// After the step: each side's options and the call's TOS as the
	// engine was told (nil: not checked).
	opts *[2]relay.SideOptions
	tos  *relay.TOS
	// drop: the call's drop-traffic as the engine was told (nil: not
	// checked).
	drop *bool
}

func offerCmd(id string, port int, kv ...any) map[string]any {
	return withKeys(map[string]any{"command": "offer", "call-id": id, "from-tag": "a",
		"sdp": string(sdp("192.0.2.10", port))}, kv...)
}

func answerCmd(id string, port int, kv ...any) map[string]any {
	return withKeys(map[string]any{"command": "answer", "call-id": id, "from-tag": "a", "to-tag": "b",
		"sdp": string(sdp("192.0.2.20", port))}, kv...)
}

func queryCmd(id string) map[string]any { return map[string]any{"command": "query", "call-id": id} }

func withKeys(d map[string]any, kv ...any) map[string]any {
	for i := 0; i+1 < len(kv); i += 2 {
		d[kv[i].(string)] = kv[i+1]
	}
	return d
}

// withSDP replaces a command's SDP.
func withSDP(d map[string]any, body string) map[string]any { d["sdp"] = body; return d }

// markedSDP is the caller's SDP with a session-level a=rtpengine line.
func markedSDP(id string) string {
	return strings.Replace(string(sdp("192.0.2.10", 10000)), "t=0 0\r\n", "t=0 0\r\na=rtpengine:"+id+"\r\n", 1)
}

func flags(fs ...string) []any {
	out := make([]any, len(fs))
	for i, f := range fs {
		out[i] = f
	}
	return out
}

// TestCallFlags drives the per-call flags through ng.Server, NG request
// in, SDP and reply out. Each row names the section of rtpengine's NG
// control protocol documentation (rtpengine's ng_control_protocol.md) or the
// rtpengine source its semantics come from.
func TestCallFlags(t *testing.T) {
	const self = "@self" // stands for the backend's loop-protect id
	sym, asymA := [2]relay.SideOptions{}, [2]relay.SideOptions{{Asymmetric: true}, {}}
	asymB := [2]relay.SideOptions{{}, {Asymmetric: true}}
	ef, cs2, def := relay.TOS{Set: true, Value: 184}, relay.TOS{Set: true, Value: 0x40}, relay.TOS{}
	dropping, forwarding := true, false
	for _, tc := range []struct {
		name, section string
		steps         []step
	}{
		{name: "label names each side, query reports it", section: `"label"; query reply: tags, "label"`,
			steps: []step{
				{cmd: offerCmd("c1", 10000, "flags", flags("label=caller")), port: 40002},
				{cmd: answerCmd("c1", 20000, "label", "callee"), port: 40000},
				{cmd: queryCmd("c1"), labels: map[string]string{"a": "caller", "b": "callee"}},
				// A later message without a label keeps it.
				{cmd: offerCmd("c1", 10000), port: 40002},
				{cmd: queryCmd("c1"), labels: map[string]string{"a": "caller", "b": "callee"}},
				// A new one replaces it.
				{cmd: offerCmd("c1", 10000, "label", "transferee"), port: 40002},
				{cmd: queryCmd("c1"), labels: map[string]string{"a": "transferee", "b": "callee"}},
			}},
		{name: "from-label is label", section: `"label" or "from-label"`,
			steps: []step{
				{cmd: offerCmd("c1", 10000, "from-label", "caller"), port: 40002},
				{cmd: queryCmd("c1"), labels: map[string]string{"a": "caller"}},
			}},
		{name: "label in rtpp-flags", section: `introduction, "rtpp_flags" example: label=callee`,
			steps: []step{
				{cmd: offerCmd("c1", 10000, "rtpp-flags", "replace-origin label=callee strict-source"), port: 40002},
				{cmd: queryCmd("c1"), labels: map[string]string{"a": "callee"}},
			}},
		{name: "set-label, to-label, from-tags act only in commands that pick parties",
			section: `"set-label", "to-label", "from-tags"; call_interfaces.c media_block_match`,
			steps: []step{
				{cmd: offerCmd("c1", 10000, "set-label", "x", "to-label", "y", "from-tags", []any{"a", "b"},
					"flags", flags("from-tags-a")), port: 40002},
				{cmd: answerCmd("c1", 20000, "to-label", "x"), port: 40000},
				{cmd: queryCmd("c1"), labels: map[string]string{"a": "", "b": ""}},
			}},
		{name: "asymmetric is the sending side's, from each of its messages", section: `"asymmetric"; call.c media_update_flags`,
			steps: []step{
				{cmd: offerCmd("c1", 10000, "flags", flags("asymmetric")), port: 40002, opts: &asymA},
				{cmd: answerCmd("c1", 20000), port: 40000, opts: &asymA},
				{cmd: offerCmd("c1", 10000), port: 40002, opts: &sym},
				{cmd: answerCmd("c1", 20000, "rtpp-flags", "asymmetric"), port: 40000, opts: &asymB},
			}},
		{name: "symmetric, strict source, port latching: what the relay always does",
			section: `"symmetric", "strict source", "port latching"`,
			steps: []step{
				{cmd: offerCmd("c1", 10000, "flags", flags("symmetric", "strict-source", "port-latching")), port: 40002, opts: &sym},
				{cmd: answerCmd("c1", 20000, "flags", flags("strict source")), port: 40000, opts: &sym},
			}},
		{name: "TOS in an offer is the call's", section: `"TOS"; call.c __tos_change`,
			steps: []step{
				{cmd: offerCmd("c1", 10000, "TOS", int64(184)), port: 40002, tos: &ef},
				// An answer does not change it, whatever it says.
				{cmd: answerCmd("c1", 20000, "TOS", int64(0)), port: 40000, tos: &ef},
				// Negative: unchanged.
				{cmd: offerCmd("c1", 10000, "TOS", int64(-1)), port: 40002, tos: &ef},
				// A string, as in the flags list or rtpp-flags.
				{cmd: offerCmd("c1", 10000, "rtpp-flags", "TOS=64"), port: 40002, tos: &cs2},
				// Missing: back to the default.
				{cmd: offerCmd("c1", 10000), port: 40002, tos: &def},
				{cmd: offerCmd("c1", 10000, "TOS", int64(184)), port: 40002, tos: &ef},
				// 256 and up: the default.
				{cmd: offerCmd("c1", 10000, "TOS", int64(256)), port: 40002, tos: &def},
				// Not a number: as missing (get_int_str's default).
				{cmd: offerCmd("c1", 10000, "flags", flags("TOS=EF")), port: 40002, tos: &def},
			}},
		{name: "drop-traffic starts and stops dropping the call's media", section: `"drop-traffic"; call_interfaces.c CALL_FLAG_DROP_TRAFFIC`,
			steps: []step{
				{cmd: offerCmd("c1", 10000, "drop-traffic", "start"), port: 40002, drop: &dropping},
				// A message without it leaves the call as it is.
				{cmd: answerCmd("c1", 20000), port: 40000, drop: &dropping},
				// An answer stops it as well as an offer.
				{cmd: answerCmd("c1", 20000, "drop-traffic", "stop"), port: 40000, drop: &forwarding},
				{cmd: offerCmd("c1", 10000, "flags", flags("drop-traffic-start")), port: 40002, drop: &dropping},
				// An unknown value: rtpengine warns and changes nothing.
				{cmd: offerCmd("c1", 10000, "drop-traffic", "pause"), port: 40002, drop: &dropping},
				{cmd: offerCmd("c1", 10000, "drop-traffic", "stop"), port: 40002, drop: &forwarding},
			}},
		{name: "loop-protect marks the SDP the relay writes", section: `"loop protect"; sdp.c sdp_out_add_other`,
			steps: []step{
				{cmd: offerCmd("c1", 10000, "flags", flags("loop-protect")), port: 40002, marks: 1,
					lines: []string{"c=IN IP4 " + relayIP.String()}},
				// A retransmission gets the same, still marked once.
				{cmd: offerCmd("c1", 10000, "flags", flags("loop protect")), port: 40002, marks: 1},
				{cmd: answerCmd("c1", 20000, "rtpp-flags", "loop-protect"), port: 40000, marks: 1},
				// Without the flag, no mark.
				{cmd: offerCmd("c1", 10000), port: 40002, marks: 0},
			}},
		{name: "loop-protect: SDP with the relay's own mark comes back untouched", section: `"loop protect"; call_interfaces.c, sdp.c sdp_is_duplicate`,
			steps: []step{
				{cmd: withSDP(offerCmd("c1", 10000, "flags", flags("loop-protect")), markedSDP(self)), untouched: true},
				// Nothing was set up.
				{cmd: queryCmd("c1"), reason: `unknown call-id: "c1"`},
				// An answer needs the call, as in rtpengine.
				{cmd: withSDP(answerCmd("c1", 20000, "flags", flags("loop-protect")), markedSDP(self)), reason: `unknown call-id: "c1"`},
				{cmd: offerCmd("c1", 10000, "flags", flags("loop-protect")), port: 40002, marks: 1},
				{cmd: withSDP(answerCmd("c1", 20000, "flags", flags("loop-protect")), markedSDP(self)), untouched: true},
			}},
		{name: "loop-protect: another relay's mark is not ours", section: `"loop protect"`,
			steps: []step{
				{cmd: withSDP(offerCmd("c1", 10000, "flags", flags("loop-protect")), markedSDP("0123456789ab")), port: 40002, marks: 1,
					lines: []string{"a=rtpengine:0123456789ab"}},
			}},
		{name: "own mark without loop-protect: processed", section: `"loop protect" ("When this flag is present")`,
			steps: []step{
				{cmd: withSDP(offerCmd("c1", 10000), markedSDP(self)), port: 40002, marks: 1},
			}},
	} {
		t.Run(tc.name, func(t *testing.T) { runSteps(t, tc.section, tc.steps) })
	}
}

// runSteps sends a row's commands through ng.Server and checks each reply
// and what the engine was told.
func runSteps(t *testing.T, section string, steps []step) {
	t.Helper()
	const self = "@self"
	t.Logf("semantics: ng_control_protocol.md %s", section)
	b, f := newBackend()
	s := ng.NewServer(b, ng.Options{})
	for i, st := range steps {
		cmd := st.cmd
		if body, ok := cmd["sdp"].(string); ok {
			cmd["sdp"] = strings.ReplaceAll(body, self, b.id)
		}
		rep := roundTrip(t, s, fmt.Sprintf("ck%d", i), cmd)
		what := fmt.Sprintf("step %d (%s)", i, cmd["command"])
		if st.reason != "" {
			if rep["result"] != "error" || rep["error-reason"] != st.reason {
				t.Fatalf("%s: reply %v, want error-reason %q", what, rep, st.reason)
			}
			continue
		}
		if rep["result"] != "ok" {
			t.Fatalf("%s: reply %v", what, rep)
		}
		if out, ok := rep["sdp"].(string); ok {
			checkSDP(t, what, st, cmd["sdp"].(string), out, b.id)
		}
		if st.labels != nil {
			tags, _ := rep["tags"].(map[string]any)
			for tag, want := range st.labels {
				td, _ := tags[tag].(map[string]any)
				got, has := td["label"]
				if want == "" && has || want != "" && got != want {
					t.Errorf("%s: tag %q label %v (present %v), want %q", what, tag, got, has, want)
				}
				if drop, set := f.drop["c1"]; st.drop != nil && (!set || drop != *st.drop) {
					t.Errorf("%s: drop %v (set %v), want %v", what, drop, set, *st.drop)
				}
			}
		}
		if st.opts != nil && f.sideOpts["c1"] != *st.opts {
			t.Errorf("%s: side options %+v, want %+v", what, f.sideOpts["c1"], *st.opts)
		}
		if st.tos != nil && f.tos["c1"] != *st.tos {
			t.Errorf("%s: tos %v, want %v", what, f.tos["c1"], *st.tos)
		}
	}
}

func checkSDP(t *testing.T, what string, st step, in, out, id string) {
	t.Helper()
	if st.untouched {
		if out != in {
			t.Errorf("%s: sdp changed\n got %q\nwant %q", what, out, in)
		}
		return
	}
	ms, err := sdprewrite.Parse([]byte(out))
	if err != nil || len(ms) != 1 || ms[0].Addr != relayIP || int(ms[0].Port) != st.port {
		t.Errorf("%s: sdp %+v %v, want the relay's %s:%d\n%s", what, ms, err, relayIP, st.port, out)
	}
	session, _, _ := strings.Cut(out, "m=")
	if n := strings.Count(session, "a=rtpengine:"+id+"\r\n"); n != st.marks {
		t.Errorf("%s: %d session-level marks of this relay, want %d\n%s", what, n, st.marks, out)
	}
	if strings.Count(out, "a=rtpengine:"+id) != st.marks {
		t.Errorf("%s: marks outside the session section\n%s", what, out)
	}
	for _, l := range st.lines {
		if !strings.Contains(out, l+"\r\n") {
			t.Errorf("%s: no %q in\n%s", what, l, out)
		}
	}
}

// The mark goes last in the session section, with the body's own line
// ends; a body without m= lines gets it at the end.
func TestMark(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"crlf", "v=0\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n", "v=0\r\ns=-\r\nt=0 0\r\na=rtpengine:id\r\nm=audio 1 RTP/AVP 0\r\n"},
		{"lf", "v=0\ns=-\nt=0 0\nm=audio 1 RTP/AVP 0\n", "v=0\ns=-\nt=0 0\na=rtpengine:id\nm=audio 1 RTP/AVP 0\n"},
		{"no media", "v=0\r\nt=0 0\r\n", "v=0\r\nt=0 0\r\na=rtpengine:id\r\n"},
		{"no final line end", "v=0\r\nt=0 0", "v=0\r\nt=0 0\r\na=rtpengine:id\r\n"},
		{"already marked", "v=0\r\na=rtpengine:id\r\nm=audio 1 RTP/AVP 0\r\n", "v=0\r\na=rtpengine:id\r\nm=audio 1 RTP/AVP 0\r\n"},
		{"marked in a media section only", "v=0\r\nm=audio 1 RTP/AVP 0\r\na=rtpengine:id\r\n",
			"v=0\r\na=rtpengine:id\r\nm=audio 1 RTP/AVP 0\r\na=rtpengine:id\r\n"},
	} {
		if got := string(mark([]byte(tc.in), "id")); got != tc.want {
			t.Errorf("%s: mark\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
	if id := newInstanceID(); len(id) != 12 || strings.Trim(id, "0123456789abcdef") != "" || id == newInstanceID() {
		t.Errorf("instance id %q: want 12 random hex digits", id)
	}
}

// FuzzMark: whatever the body, a marked body is marked, and marking it
// again changes nothing.
func FuzzMark(f *testing.F) {
	f.Add([]byte("v=0\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n"))
	f.Add([]byte("a=rtpengine:id\nm="))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, body []byte) {
		once := mark(body, "id")
		if !marked(once, "id") {
			t.Fatalf("mark(%q) = %q: not marked", body, once)
		}
		if twice := mark(once, "id"); string(twice) != string(once) {
			t.Fatalf("marking twice changed %q to %q", once, twice)
		}
	})
}
