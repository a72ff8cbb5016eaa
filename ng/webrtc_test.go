package ng

import (
	"slices"
	"testing"
)

// TestICEAndWebRTC: the ICE key as a string or list (rtpengine's
// ng_control_protocol.md, "ICE": "Contains a list of strings, or
// alternatively a single string"; its lite-*, trickle and ice2 entries
// as call_flags.c's call_ng_flags_ice reads them) and the WebRTC flag's
// expansion (offer flags: "WebRTC"; rtpengine's call_flags.h, ng_flags_webrtc).
func TestICEAndWebRTC(t *testing.T) {
	for _, tc := range []struct {
		name    string
		d       map[string]any
		ice     string
		proto   string
		mux     []string
		flags   map[string]string
		noFlags []string
	}{
		{name: "ICE string", d: map[string]any{"ICE": "force"}, ice: "force", noFlags: []string{"trickle-ice", "ice-lite"}},
		{name: "ICE list", d: map[string]any{"ICE": []any{"trickle", "force-relay", "lite-backward"}}, ice: "force-relay",
			flags: map[string]string{"trickle-ice": "", "ice-lite": "backward"}},
		{name: "ICE list: lite is forward", d: map[string]any{"ICE": []any{"lite"}}, flags: map[string]string{"ice-lite": "forward"}},
		{name: "ICE in flags list", d: map[string]any{"flags": []any{"ICE=remove"}}, ice: "remove"},
		{name: "WebRTC", d: map[string]any{"flags": []any{"WebRTC"}}, ice: "force", proto: "UDP/TLS/RTP/SAVPF",
			mux: []string{"offer", "require"},
			flags: map[string]string{"trickle-ice": "", "no-rtcp-attribute": "", "sdes-off": "", "generate-mid": "",
				"bundle-offer": "", "bundle-require": ""}},
		{name: "WebRTC: the request's own ICE and protocol win", d: map[string]any{"flags": []any{"WebRTC", "RTP/SAVPF"}, "ICE": "remove"},
			ice: "remove", proto: "RTP/SAVPF", mux: []string{"offer", "require"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.d["command"], tc.d["call-id"], tc.d["from-tag"], tc.d["sdp"] = "offer", "c", "a", "v=0"
			r, _, err := ParseRequest(tc.d)
			if err != nil {
				t.Fatal(err)
			}
			if r.ICE != tc.ice || r.TransportProtocol != tc.proto {
				t.Errorf("ICE %q, transport-protocol %q; want %q, %q", r.ICE, r.TransportProtocol, tc.ice, tc.proto)
			}
			for _, m := range tc.mux {
				if !slices.Contains(r.RTCPMux, m) {
					t.Errorf("rtcp-mux %v, want %q in it", r.RTCPMux, m)
				}
			}
			for k, v := range tc.flags {
				if got, ok := r.Flags[k]; !ok || got != v {
					t.Errorf("Flags[%q] = %q (present %v), want %q", k, got, ok, v)
				}
			}
			for _, k := range tc.noFlags {
				if _, ok := r.Flags[k]; ok {
					t.Errorf("Flags has %q", k)
				}
			}
		})
	}
}
