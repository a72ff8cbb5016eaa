package ngbackend

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"sipxdp/ng"
)

// replaceSDP is a caller's SDP with the o= and s= fields and the
// connection address given; extra lines go at the end.
func replaceSDP(origin, name, ip string, extra ...string) string {
	return fmt.Sprintf("v=0\r\no=%s\r\ns=%s\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio 10000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n", origin, name, ip) +
		strings.Join(extra, "")
}

// TestReplaceFlags drives offers and answers with rtpengine's replace
// values through ng.Server and checks the o=, s= and c= lines of each
// reply field by field. Each row names the section of rtpengine's
// ng_control_protocol.md ("Optionally included replace-flags") or the
// function of its sdp.c/call.c its semantics come from.
func TestReplaceFlags(t *testing.T) {
	type step struct {
		cmd    map[string]any
		origin string   // the reply's o= value
		name   string   // the reply's s= value
		lines  []string // other lines the reply must have
		gone   []string // text the reply must not have
	}
	offer := func(body string, kv ...any) map[string]any {
		return withKeys(map[string]any{"command": "offer", "call-id": "c1", "from-tag": "a", "sdp": body}, kv...)
	}
	answer := func(body string, kv ...any) map[string]any {
		return withKeys(map[string]any{"command": "answer", "call-id": "c1", "from-tag": "a", "to-tag": "b", "sdp": body}, kv...)
	}
	const ip = "192.0.2.10"
	first := replaceSDP("alice 111 1 IN IP4 "+ip, "First", ip)
	for _, tc := range []struct {
		name, section string
		steps         []step
	}{
		{"no replace: o= and s= follow the sender (the relay adds one to the version)", "replace (none given)",
			[]step{
				{cmd: offer(first), origin: "alice 111 2 IN IP4 " + ip, name: "First"},
				{cmd: offer(replaceSDP("bob 222 1 IN IP4 "+ip, "Second", ip)), origin: "bob 222 2 IN IP4 " + ip, name: "Second"},
			}},
		{"SDP-version: same SDP keeps the version, a changed one goes up by one", `"SDP version"; sdp.c sdp_version_check`,
			[]step{
				{cmd: offer(first, "replace", []any{"SDP-version"}), origin: "alice 111 2 IN IP4 " + ip},
				// The phone bumped its version without changing anything.
				{cmd: offer(replaceSDP("alice 111 7 IN IP4 "+ip, "First", ip), "replace", []any{"SDP version"}), origin: "alice 111 2 IN IP4 " + ip},
				{cmd: offer(replaceSDP("alice 111 8 IN IP4 "+ip, "First", ip, "a=sendonly\r\n"), "replace", []any{"SDP-version"}),
					origin: "alice 111 3 IN IP4 " + ip, lines: []string{"a=sendonly"}},
				{cmd: offer(replaceSDP("alice 111 9 IN IP4 "+ip, "First", ip, "a=sendonly\r\n"), "replace", []any{"SDP-version"}),
					origin: "alice 111 3 IN IP4 " + ip},
			}},
		{"force-increment-sdp-ver: up by one each time, changed or not", `"force-increment-sdp-ver"; sdp.c sdp_out_add_origin`,
			[]step{
				{cmd: offer(first, "replace", []any{"force-increment-sdp-ver"}), origin: "alice 111 2 IN IP4 " + ip},
				{cmd: offer(first, "replace", []any{"force-increment-sdp-ver"}), origin: "alice 111 3 IN IP4 " + ip},
				{cmd: offer(first, "replace", []any{"force-increment-sdp-ver"}), origin: "alice 111 4 IN IP4 " + ip},
			}},
		{"username: the o= username stays the first one written", `"username"; sdp.c sdp_out_add_origin`,
			[]step{
				{cmd: offer(first, "replace", []any{"username"}), origin: "alice 111 2 IN IP4 " + ip},
				{cmd: offer(replaceSDP("bob 222 5 IN IP4 "+ip, "First", ip), "replace", []any{"username"}), origin: "alice 222 6 IN IP4 " + ip},
			}},
		{"origin-full: the whole o= stays the first one, with the relay's address, and its version follows SDP-version", `"origin-full"; sdp.c sdp_out_add_origin`,
			[]step{
				{cmd: offer(first, "replace", []any{"origin-full"}), origin: "alice 111 2 IN IP4 203.0.113.1"},
				{cmd: offer(replaceSDP("bob 222 9 IN IP6 2001:db8::9", "First", ip), "replace", []any{"origin-full"}), origin: "alice 111 2 IN IP4 203.0.113.1"},
				{cmd: offer(replaceSDP("bob 222 10 IN IP6 2001:db8::9", "First", ip, "a=recvonly\r\n"), "replace", []any{"origin-full"}),
					origin: "alice 111 3 IN IP4 203.0.113.1"},
			}},
		{"session-name: the s= stays the first the sender gave", `"session name"; call.c __call_monologue_init_from_flags`,
			[]step{
				{cmd: offer(first, "replace", []any{"session-name"}), name: "First"},
				{cmd: offer(replaceSDP("alice 111 2 IN IP4 "+ip, "Second", ip), "replace", []any{"session name"}), name: "First", gone: []string{"Second"}},
			}},
		{"each side has its own: the answer's o= does not take the offer's", `"SDP version", "username" (per party); sdp.c sdp_out_add_origin`,
			[]step{
				{cmd: offer(first, "replace", []any{"username", "SDP-version"}), origin: "alice 111 2 IN IP4 " + ip},
				{cmd: answer(replaceSDP("carol 333 4 IN IP4 192.0.2.20", "Callee", "192.0.2.20"), "replace", []any{"username", "SDP-version"}),
					origin: "carol 333 5 IN IP4 192.0.2.20", name: "Callee"},
				{cmd: answer(replaceSDP("dave 333 6 IN IP4 192.0.2.20", "Callee", "192.0.2.20"), "replace", []any{"username", "SDP-version"}),
					origin: "carol 333 5 IN IP4 192.0.2.20"},
			}},
		{"zero address kept: old-style hold reaches the receiver", `"zero address" ("normally ... passed through"); call.c ZERO_ADDR`,
			[]step{
				{cmd: offer(replaceSDP("alice 111 1 IN IP4 "+ip, "First", "0.0.0.0")), lines: []string{"c=IN IP4 0.0.0.0"}, gone: []string{"203.0.113.1"}},
			}},
		{"zero-address: the relay's address replaces 0.0.0.0", `"zero address"; call.c (replace_zero_address)`,
			[]step{
				{cmd: offer(replaceSDP("alice 111 1 IN IP4 "+ip, "First", "0.0.0.0"), "replace", []any{"zero-address"}),
					lines: []string{"c=IN IP4 203.0.113.1", "m=audio 40002 "}, gone: []string{"0.0.0.0"}},
			}},
		{"Kamailio's replace-zero-address flag", `"zero address"; Kamailio rtpengine module replace-zero-address`,
			[]step{
				{cmd: offer(replaceSDP("alice 111 1 IN IP4 "+ip, "First", "0.0.0.0"), "flags", []any{"replace-zero-address"}),
					lines: []string{"c=IN IP4 203.0.113.1"}, gone: []string{"0.0.0.0"}},
			}},
		{"rtpp-flags replace-SDP-version", `"SDP version"; rtpp-flags`,
			[]step{
				{cmd: offer(first, "rtpp-flags", "replace-SDP-version"), origin: "alice 111 2 IN IP4 " + ip},
				{cmd: offer(replaceSDP("alice 111 5 IN IP4 "+ip, "First", ip), "rtpp-flags", "replace-SDP-version"), origin: "alice 111 2 IN IP4 " + ip},
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Logf("semantics: ng_control_protocol.md %s", tc.section)
			b, _ := newBackend()
			s := ng.NewServer(b, ng.Options{})
			for i, st := range tc.steps {
				rep := roundTrip(t, s, fmt.Sprintf("rp%d", i), st.cmd)
				out, _ := rep["sdp"].(string)
				if rep["result"] != "ok" || out == "" {
					t.Fatalf("step %d: reply %v", i, rep)
				}
				lines := strings.Split(out, "\r\n")
				get := func(p string) string {
					for _, l := range lines {
						if v, ok := strings.CutPrefix(l, p); ok {
							return v
						}
					}
					return ""
				}
				if st.origin != "" && get("o=") != st.origin {
					t.Errorf("step %d: o=%s, want o=%s", i, get("o="), st.origin)
				}
				if st.name != "" && get("s=") != st.name {
					t.Errorf("step %d: s=%s, want s=%s", i, get("s="), st.name)
				}
				for _, l := range st.lines {
					if !strings.Contains(out, l) {
						t.Errorf("step %d: no %q in\n%s", i, l, out)
					}
				}
				for _, g := range st.gone {
					if strings.Contains(out, g) {
						t.Errorf("step %d: %q still in\n%s", i, g, out)
					}
				}
			}
		})
	}
}

// TestReplaceStateDropped: what the replace flags remember goes with the
// call's delete, and a later call of the same Call-ID starts afresh.
func TestReplaceStateDropped(t *testing.T) {
	b, _ := newBackend()
	off := func(origin string) string {
		r := &ng.Request{Command: "offer", CallID: "c1", FromTag: "a", Replace: []string{"force-increment-sdp-ver"},
			SDP: []byte(replaceSDP(origin, "-", "192.0.2.10"))}
		out, err := b.Offer(r)
		if err != nil {
			t.Fatal(err)
		}
		_, o, _ := strings.Cut(string(out), "o=")
		o, _, _ = strings.Cut(o, "\r\n")
		return o
	}
	if o := off("x 1 1 IN IP4 192.0.2.10"); o != "x 1 2 IN IP4 192.0.2.10" {
		t.Fatalf("first offer o=%s", o)
	}
	if o := off("x 1 1 IN IP4 192.0.2.10"); o != "x 1 3 IN IP4 192.0.2.10" {
		t.Fatalf("second offer o=%s", o)
	}
	if _, err := b.Delete(&ng.Request{Command: "delete", CallID: "c1", FromTag: "a"}); err != nil {
		t.Fatal(err)
	}
	if n := len(b.origins.m); n != 0 {
		t.Errorf("after delete, %d sides remembered", n)
	}
	if o := off("x 1 1 IN IP4 192.0.2.10"); o != "x 1 2 IN IP4 192.0.2.10" {
		t.Errorf("new call of the same Call-ID: o=%s, want the sender's version plus one", o)
	}
}

// FuzzReplaceState feeds arbitrary SDP through the replace flags twice,
// as two messages of one side: it must not panic, and a body without a
// session-level o= line comes back as it went in.
func FuzzReplaceState(f *testing.F) {
	f.Add([]byte(replaceSDP("alice 111 1 IN IP4 192.0.2.10", "First", "192.0.2.10")), []byte(replaceSDP("bob 2 9 IN IP6 ::1", "Second", "0.0.0.0")))
	f.Add([]byte("v=0\r\no=\r\ns=\r\n"), []byte("o=a b c d e f\ns=x\nm=audio 1 RTP/AVP 0\n"))
	f.Add([]byte("o=a b 18446744073709551615 IN IP4 x\r\n"), []byte("o=a b 18446744073709551615 IN IP4 x\r\n"))
	rep := map[string]bool{"username": true, "origin-full": true, "session-name": true, "sdp-version": true, "force-increment-sdp-ver": true}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var s origins
		for _, body := range [][]byte{a, b} {
			in := bytes.Clone(body)
			out := s.apply("c", "t", rep, body, nil)
			if o, _, _, _ := sessionFields(in); o < 0 && !bytes.Equal(out, in) {
				t.Fatalf("no o= line, body changed:\n%q\n%q", in, out)
			}
		}
	})
}
