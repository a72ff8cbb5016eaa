package ng

import (
	"reflect"
	"strings"
	"testing"
)

// docRTPP is the section of rtpengine's ng_control_protocol.md that
// describes rtpp-flags (the introduction before "Messages description").
const docRTPP = "ng_control_protocol.md: introduction, rtpp_flags"

// TestRTPPFlagsRequest sends each rtpp-flags string in an offer and
// checks the Request fields it must fill, as the same flags sent in the
// dictionary would.
func TestRTPPFlagsRequest(t *testing.T) {
	base := func(extra map[string]any) map[string]any {
		d := map[string]any{"command": "offer", "call-id": "c1", "from-tag": "f1", "sdp": "v=0\r\n"}
		for k, v := range extra {
			d[k] = v
		}
		return d
	}
	tests := []struct {
		name, doc string
		in        map[string]any
		check     func(t *testing.T, r *Request)
	}{
		{
			name: "Kamailio's stock flags", doc: docRTPP + "; offer: replace, ICE",
			in: base(map[string]any{"rtpp-flags": "replace-origin replace-session-connection ICE=remove"}),
			check: func(t *testing.T, r *Request) {
				eq(t, "Replace", r.Replace, []string{"origin", "session-connection"})
				eq(t, "ICE", r.ICE, "remove")
				eq(t, "Flags[replace-origin]", hasFlag(r, "replace-origin"), false)
			},
		},
		{
			name: "doc example", doc: docRTPP + "; offer: strict-source, label, transport-protocol, address-family",
			in: base(map[string]any{"rtpp_flags": "replace-origin via-branch=auto-next strict-source label=callee OSRTP-accept transport-protocol=RTP/AVP address-family=IP4"}),
			check: func(t *testing.T, r *Request) {
				eq(t, "Replace", r.Replace, []string{"origin"})
				eq(t, "TransportProtocol", r.TransportProtocol, "RTP/AVP")
				eq(t, "Flags[strict-source]", flagVal(r, "strict-source"), "")
				eq(t, "Flags[label]", flagVal(r, "label"), "callee")
				eq(t, "Flags[osrtp-accept]", flagVal(r, "osrtp-accept"), "")
				eq(t, "Flags[address-family]", flagVal(r, "address-family"), "IP4")
				// Kamailio's branch directive is not a branch.
				eq(t, "ViaBranch", r.ViaBranch, "")
				eq(t, "Flags[rtpp-flags]", hasFlag(r, "rtpp-flags"), false)
			},
		},
		{
			name: "direction pairs", doc: docRTPP + "; offer: direction",
			in: base(map[string]any{"rtpp-flags": "direction=internal direction=external"}),
			check: func(t *testing.T, r *Request) {
				eq(t, "Direction", r.Direction, []string{"internal", "external"})
			},
		},
		{
			name: "bare interface names", doc: docRTPP + "; offer: direction",
			in: base(map[string]any{"rtpp-flags": "external internal"}),
			check: func(t *testing.T, r *Request) {
				eq(t, "Direction", r.Direction, []string{"external", "internal"})
			},
		},
		{
			name: "list appended to the dictionary's", doc: docRTPP + "; offer: replace",
			in: base(map[string]any{"replace": []any{"origin"}, "rtpp-flags": "replace=[session-connection]"}),
			check: func(t *testing.T, r *Request) {
				eq(t, "Replace", r.Replace, []string{"origin", "session-connection"})
			},
		},
		{
			name: "flags list merged", doc: docRTPP + "; offer: flags",
			in: base(map[string]any{"flags": []any{"trust-address"}, "rtpp-flags": "symmetric loop-protect"}),
			check: func(t *testing.T, r *Request) {
				for _, f := range []string{"trust-address", "symmetric", "loop-protect"} {
					eq(t, "Flags["+f+"]", hasFlag(r, f), true)
				}
			},
		},
		{
			name: "transport from parts", doc: docRTPP + "; offer: transport-protocol",
			in: base(map[string]any{"rtpp-flags": "RTP AVPF SRTP"}),
			check: func(t *testing.T, r *Request) {
				eq(t, "TransportProtocol", r.TransportProtocol, "RTP/SAVPF")
			},
		},
		{
			name: "rtcp-mux prefix form", doc: docRTPP + "; offer: rtcp-mux",
			in: base(map[string]any{"rtpp-flags": "rtcp-mux-demux"}),
			check: func(t *testing.T, r *Request) {
				eq(t, "RTCPMux", r.RTCPMux, []string{"demux"})
			},
		},
		{
			name: "received-from", doc: docRTPP + "; offer: received-from",
			in: base(map[string]any{"rtpp-flags": "received-from=2001:db8::5"}),
			check: func(t *testing.T, r *Request) {
				eq(t, "ReceivedFrom", r.ReceivedFrom, []string{"IP6", "2001:db8::5"})
			},
		},
		{
			name: "value flags", doc: docRTPP + "; offer: TOS, delete-delay, media-address, SIP-source-address",
			in: base(map[string]any{"rtpp-flags": "TOS=184 delete-delay=5 media-address=192.0.2.9 SIP-source-address"}),
			check: func(t *testing.T, r *Request) {
				eq(t, "Flags[tos]", flagVal(r, "tos"), "184")
				eq(t, "Flags[delete-delay]", flagVal(r, "delete-delay"), "5")
				eq(t, "Flags[media-address]", flagVal(r, "media-address"), "192.0.2.9")
				eq(t, "Flags[sip-source-address]", hasFlag(r, "sip-source-address"), true)
			},
		},
		{
			name: "to-tag overrides", doc: docRTPP + "; delete: to-tag",
			in: map[string]any{"command": "delete", "call-id": "c1", "from-tag": "f1", "to-tag": "old", "rtpp-flags": "to-tag=t9"},
			check: func(t *testing.T, r *Request) {
				eq(t, "ToTag", r.ToTag, "t9")
			},
		},
		{
			name: "literal via-branch kept", doc: docRTPP + "; offer: via-branch",
			in: base(map[string]any{"via-branch": "z9hG4bK1", "rtpp-flags": "via-branch=z9hG4bK2"}),
			check: func(t *testing.T, r *Request) {
				eq(t, "ViaBranch", r.ViaBranch, "z9hG4bK2")
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Logf("semantics: %s", tc.doc)
			r, _, err := ParseRequest(tc.in)
			if err != nil {
				t.Fatalf("ParseRequest: %v", err)
			}
			tc.check(t, r)
		})
	}
}

// TestRTPPFlagsDictionary checks the dictionary entries a flags string
// stands for, where the Request has no field of its own (codec).
func TestRTPPFlagsDictionary(t *testing.T) {
	tests := []struct {
		name, doc string
		in        map[string]any
		want      map[string]any
	}{
		{
			name: "codec prefix and value forms", doc: docRTPP + "; offer: codec",
			in: map[string]any{"rtpp-flags": "codec-strip=PCMA codec-strip-G722 codec-mask=opus codec-offer=PCMU codec-except=telephone-event"},
			want: map[string]any{"codec": map[string]any{
				"strip": []any{"PCMA", "G722"}, "mask": []any{"opus"},
				"offer": []any{"PCMU"}, "except": []any{"telephone-event"},
			}},
		},
		{
			name: "bracketed dictionary", doc: docRTPP + " (lists and dictionaries); offer: codec, OSRTP",
			in: map[string]any{"rtpp-flags": "via-branch=auto-next OSRTP=[accept] codec=[transcode=[PCMA PCMU] accept=[AMR-WB AMR] strip=[EVS]]"},
			want: map[string]any{
				"OSRTP": []any{"accept"},
				"codec": map[string]any{
					"transcode": []any{"PCMA", "PCMU"}, "accept": []any{"AMR-WB", "AMR"}, "strip": []any{"EVS"},
				},
			},
		},
		{
			name: "codec dictionary merged", doc: docRTPP + "; offer: codec",
			in:   map[string]any{"codec": map[string]any{"strip": []any{"PCMA"}}, "rtpp-flags": "codec-strip=PCMU"},
			want: map[string]any{"codec": map[string]any{"strip": []any{"PCMA", "PCMU"}}},
		},
		{
			name: "key spelling of the dictionary kept", doc: docRTPP + "; offer: flags",
			in:   map[string]any{"Flags": []any{"a"}, "rtpp flags": "b TOS=0"},
			want: map[string]any{"Flags": []any{"a", "b"}, "TOS": int64(0)},
		},
		{
			name: "no rtpp-flags", doc: docRTPP,
			in:   map[string]any{"flags": []any{"a"}},
			want: map[string]any{"flags": []any{"a"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Logf("semantics: %s", tc.doc)
			got, err := expandRTPPFlags(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %#v\nwant %#v", got, tc.want)
			}
		})
	}
}

func TestRTPPFlagsErrors(t *testing.T) {
	for _, s := range []string{
		"codec=[strip=[EVS]",    // unclosed
		"a ]",                   // stray close
		"x=[a b=c]",             // key=value in a list
		"x=[a=b c]",             // bare word in a dictionary
		"x=[a=b a=c]",           // duplicate key
		"received-from=nowhere", // not an address
		strings.Repeat("x=[", 20) + "a" + strings.Repeat("]", 20), // too deep
	} {
		d := map[string]any{"command": "ping", "rtpp-flags": s}
		if _, _, err := ParseRequest(d); err == nil {
			t.Errorf("rtpp-flags %q: no error", s)
		}
	}
	if _, _, err := ParseRequest(map[string]any{"command": "ping", "rtpp-flags": "a", "rtpp_flags": "b"}); err == nil {
		t.Error("two rtpp-flags keys: no error")
	}
	if _, _, err := ParseRequest(map[string]any{"command": "ping", "rtpp-flags": int64(1)}); err == nil {
		t.Error("integer rtpp-flags: no error")
	}
}

// FuzzRTPPFlags feeds arbitrary flag strings through the merge: it must
// not panic, and whatever it accepts must parse as a request.
func FuzzRTPPFlags(f *testing.F) {
	for _, s := range []string{
		"replace-origin ICE=remove", "codec=[transcode=[PCMA PCMU] strip=[EVS]]",
		"direction=internal direction=external RTP AVPF", "x=[[a] [b c]]", "]", "a=[",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d := map[string]any{"command": "offer", "call-id": "c", "from-tag": "f", "sdp": "v=0", "rtpp-flags": s}
		out, err := expandRTPPFlags(d)
		if err != nil {
			return
		}
		if _, ok := out["rtpp-flags"]; ok {
			t.Fatal("rtpp-flags left in the merged dictionary")
		}
		if _, err := Encode(out); err != nil {
			t.Fatalf("merged dictionary does not encode: %v", err)
		}
		_, _, _ = ParseRequest(d)
	})
}

func hasFlag(r *Request, k string) bool { _, ok := r.Flags[k]; return ok }

func flagVal(r *Request, k string) string {
	v, ok := r.Flags[k]
	if !ok {
		return "<unset>"
	}
	return v
}

func eq[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %#v, want %#v", what, got, want)
	}
}
