package ngbackend

import (
	"net/netip"
	"reflect"
	"testing"

	"sipxdp/ng"
	"sipxdp/sipd/media"
)

// TestRTPPFlagsOptions: flags sent in Kamailio's rtpp-flags string give
// the backend the same options as the same flags sent as dictionary keys
// and list entries (rtpengine's ng_control_protocol.md, introduction,
// rtpp_flags: "a functional behavior remains the same").
func TestRTPPFlagsOptions(t *testing.T) {
	cases := []struct {
		name, doc string
		rtpp      string
		dict      map[string]any
		want      media.Options
		from      netip.Addr // the signalling address received-from gives
	}{
		{
			name: "to the browser", doc: "offer: ICE, DTLS, transport-protocol, rtcp-mux, generate-mid, SDES",
			rtpp: "replace-origin ICE=force DTLS=passive RTP/SAVPF rtcp-mux-offer generate-mid SDES-off",
			dict: map[string]any{"replace": []any{"origin"}, "ICE": "force", "DTLS": "passive", "transport-protocol": "RTP/SAVPF",
				"rtcp-mux": []any{"offer"}, "SDES": []any{"off"}, "flags": []any{"generate-mid"}},
			want: media.Options{Proto: "RTP/SAVPF", ICE: "force", DTLS: "passive", SDESOff: true, RTCPMux: []string{"offer"}, GenerateMid: true},
		},
		{
			name: "to the phone", doc: "offer: ICE, transport-protocol, rtcp-mux",
			rtpp: "ICE=remove RTP AVP rtcp-mux=demux",
			dict: map[string]any{"ICE": "remove", "transport-protocol": "RTP/AVP", "rtcp-mux": []any{"demux"}},
			want: media.Options{Proto: "RTP/AVP", ICE: "remove", RTCPMux: []string{"demux"}},
		},
		{
			name: "received-from", doc: "offer: received-from",
			rtpp: "received-from=198.51.100.7",
			dict: map[string]any{"received-from": []any{"IP4", "198.51.100.7"}},
			from: netip.MustParseAddr("198.51.100.7"),
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Logf("semantics: ng_control_protocol.md %s", c.doc)
			for form, extra := range map[string]map[string]any{
				"rtpp-flags": {"rtpp-flags": c.rtpp},
				"dictionary": c.dict,
			} {
				d := map[string]any{"command": "offer", "call-id": "x", "from-tag": "a", "sdp": "v=0"}
				for k, v := range extra {
					d[k] = v
				}
				r, _, err := ng.ParseRequest(d)
				if err != nil {
					t.Fatalf("%s: %v", form, err)
				}
				if got := Options(r); !reflect.DeepEqual(*got, c.want) {
					t.Errorf("%s: options %+v, want %+v", form, *got, c.want)
				}
				if got := signaling(r); got != c.from {
					t.Errorf("%s: signalling address %v, want %v", form, got, c.from)
				}
			}
		})
	}
}
