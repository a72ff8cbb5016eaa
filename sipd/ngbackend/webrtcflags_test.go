package ngbackend

import (
	"crypto/sha1"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"

	"sipxdp/ng"
)

// SDP bodies of the WebRTC flag rows: a browser's offer, a plain phone's
// with RTP header extensions, RTCP and rtcp-mux lines, an SDES phone's.
const (
	browserSDP = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\na=group:BUNDLE 0\r\n" +
		"m=audio 10000 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n" +
		"a=ice-ufrag:brws\r\na=ice-pwd:browserpasswordbrowserpass\r\n" +
		"a=fingerprint:sha-1 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33\r\n" +
		"a=setup:actpass\r\na=tls-id:0123456789abcdef\r\na=rtcp-mux\r\n" +
		"a=candidate:1 1 udp 2122260223 192.0.2.10 10000 typ host\r\n"
	phoneSDP = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n" +
		"m=audio 10000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n" +
		"a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=extmap:2 urn:ietf:params:rtp-hdrext:sdes:mid\r\n" +
		"a=rtcp:10001\r\na=rtcp-mux\r\na=tls-id:0123456789abcdef\r\n"
	calleeSDP = "v=0\r\no=- 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\n" +
		"m=audio 20000 RTP/AVP 0 111\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:111 opus/48000/2\r\n"
	sdesKey80 = "inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk"
	sdesKey32 = "inline:MDEyMzQ1Njc4OWFiY2RlZmdoaWprbG1ub3BxcnN0"
	sdesSDP   = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n" +
		"m=audio 10000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n" +
		"a=crypto:1 AES_CM_128_HMAC_SHA1_80 " + sdesKey80 + "\r\na=crypto:2 AES_CM_128_HMAC_SHA1_32 " + sdesKey32 + "\r\n"
)

// wstep is one command of a TestWebRTCFlags row: what the reply's SDP
// must and must not hold, or the error-reason it must have.
type wstep struct {
	cmd          map[string]any
	want, absent []string
	reason       string
}

func wOffer(body string, kv ...any) map[string]any {
	return withKeys(map[string]any{"command": "offer", "call-id": "w1", "from-tag": "a", "sdp": body}, kv...)
}

func wAnswer(body string, kv ...any) map[string]any {
	return withKeys(map[string]any{"command": "answer", "call-id": "w1", "from-tag": "a", "to-tag": "b", "sdp": body}, kv...)
}

func hexFP(sum []byte) string {
	h := make([]string, len(sum))
	for i, c := range sum {
		h[i] = fmt.Sprintf("%02X", c)
	}
	return strings.Join(h, ":")
}

// TestWebRTCFlags drives the ICE, DTLS, SDES, rtcp-mux, RTCP-attribute,
// extmap and WebRTC flags through ng.Server: NG request in, SDP or
// reply out. Each row names the section of rtpengine's
// ng_control_protocol.md its semantics come from.
func TestWebRTCFlags(t *testing.T) {
	cert := []byte("relay certificate") // the fake engine's
	s1, s256 := sha1.Sum(cert), sha256.Sum256(cert)
	fp1, fp256 := "a=fingerprint:sha-1 "+hexFP(s1[:]), "a=fingerprint:sha-256 "+hexFP(s256[:])
	for _, tc := range []struct {
		name, section string
		strict        bool
		steps         []wstep
	}{
		{name: "WebRTC: its flags", section: `offer flags: "WebRTC"`, steps: []wstep{
			{cmd: wOffer(phoneSDP, "flags", flags("WebRTC")),
				want:   []string{"m=audio 40002 UDP/TLS/RTP/SAVPF 0", "a=ice-lite", "a=ice-options:trickle", "a=rtcp-mux", "a=mid:0", fp256, "a=setup:actpass"},
				absent: []string{"a=rtcp:", "a=crypto:"}},
		}},
		{name: "ICE list: force, trickle, lite-both", section: `"ICE" (list), "ICE-lite", "trickle ICE"`, steps: []wstep{
			{cmd: wOffer(phoneSDP, "ICE", []any{"force", "trickle", "lite-both"}, "transport-protocol", "UDP/TLS/RTP/SAVPF"),
				want: []string{"a=ice-lite", "a=ice-options:trickle", "a=ice-ufrag:"}},
		}},
		{name: "ICE=optional: the relay's default, no ICE toward a plain phone", section: `"ICE" (optional)`, steps: []wstep{
			{cmd: wOffer(phoneSDP, "ICE", "optional"), want: []string{"m=audio 40002 RTP/AVP 0"}, absent: []string{"a=ice-ufrag:", "a=candidate:"}},
		}},
		{name: "ICE=force-relay: as default, ICE-lite toward a DTLS side", section: `"ICE" (force-relay)`, steps: []wstep{
			{cmd: wOffer(phoneSDP, "ICE", "force-relay", "transport-protocol", "UDP/TLS/RTP/SAVPF"),
				want: []string{"a=ice-lite", "a=ice-ufrag:", "a=candidate:"}},
		}},
		{name: "trickle ICE only in offers with ICE", section: `offer flags: "trickle ICE"`, steps: []wstep{
			{cmd: wOffer(phoneSDP, "flags", flags("trickle-ICE")), absent: []string{"a=ice-options:"}},
		}},
		{name: "ICE-lite=backward: the answer to the browser is lite", section: `"ICE-lite"`, steps: []wstep{
			{cmd: wOffer(browserSDP, "ICE-lite", "backward", "transport-protocol", "RTP/AVP"), want: []string{"m=audio 40002 RTP/AVP 111"}, absent: []string{"a=ice-"}},
			{cmd: wAnswer(calleeSDP), want: []string{"a=ice-lite", "a=ice-ufrag:", "a=candidate:"}},
		}},
		{name: "reject ICE: the answer to the browser has no ICE", section: `offer flags: "reject ICE"`, steps: []wstep{
			{cmd: wOffer(browserSDP, "flags", flags("reject-ICE"), "transport-protocol", "RTP/AVP"), want: []string{"m=audio 40002 RTP/AVP 111"}},
			{cmd: wAnswer(calleeSDP), want: []string{"a=setup:"}, absent: []string{"a=ice-", "a=candidate:"}},
		}},
		{name: "DTLS-fingerprint=sha-1", section: `"DTLS-fingerprint"`, steps: []wstep{
			{cmd: wOffer(phoneSDP, "DTLS-fingerprint", "SHA-1", "transport-protocol", "UDP/TLS/RTP/SAVPF"), want: []string{fp1}},
		}},
		{name: "DTLS-fingerprint of an unknown hash: refused", section: `"DTLS-fingerprint" ("Available are")`, steps: []wstep{
			{cmd: wOffer(phoneSDP, "DTLS-fingerprint", "MD5", "transport-protocol", "UDP/TLS/RTP/SAVPF"), reason: "*"},
		}},
		{name: "ICE=default toward a plain phone: none", section: `"ICE" (default)`, steps: []wstep{
			{cmd: wOffer(browserSDP, "ICE", "default", "transport-protocol", "RTP/AVP"), absent: []string{"a=ice-", "a=candidate:"}},
			{cmd: wAnswer(calleeSDP), want: []string{"a=ice-lite", "a=ice-ufrag:"}},
		}},
		{name: "DTLS-fingerprint default: sha-256", section: `"DTLS-fingerprint" ("The default is SHA-256")`, steps: []wstep{
			{cmd: wOffer(phoneSDP, "transport-protocol", "UDP/TLS/RTP/SAVPF"), want: []string{fp256}},
		}},
		{name: "DTLS-fingerprint default: the peer's hash", section: `"DTLS-fingerprint" ("or the same hashing function as was used by the peer")`, steps: []wstep{
			{cmd: wOffer(browserSDP, "transport-protocol", "RTP/AVP")},
			{cmd: wAnswer(calleeSDP), want: []string{fp1}},
		}},
		{name: "DTLS-reverse=passive is DTLS=passive", section: `"DTLS" (call_flags.c: DTLS-reverse takes the DTLS list)`, steps: []wstep{
			{cmd: wOffer(phoneSDP, "DTLS-reverse", "passive", "transport-protocol", "UDP/TLS/RTP/SAVPF"), want: []string{"a=setup:passive"}},
		}},
		{name: "SDES-no-SUITE: the relay offers another suite", section: `"SDES" (no-SUITE)`, steps: []wstep{
			{cmd: wOffer(phoneSDP, "SDES", []any{"no-AES_CM_128_HMAC_SHA1_80"}, "transport-protocol", "RTP/SAVP"),
				want: []string{"m=audio 40002 RTP/SAVP 0", "a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:"}, absent: []string{"_80"}},
		}},
		{name: "SDES-only-SUITE: the passed offer keeps that suite", section: `"SDES" (only-SUITE)`, steps: []wstep{
			{cmd: wOffer(sdesSDP, "flags", flags("SDES-only-AES_CM_128_HMAC_SHA1_32")),
				want: []string{"a=crypto:2 AES_CM_128_HMAC_SHA1_32 " + sdesKey32}, absent: []string{"_80"}},
		}},
		{name: "SDES-no-SUITE for every suite the relay has: refused", section: `"SDES" (no-SUITE)`, steps: []wstep{
			{cmd: wOffer(phoneSDP, "flags", flags("SDES-no-AES_CM_128_HMAC_SHA1_80", "SDES-no-AES_CM_128_HMAC_SHA1_32"), "transport-protocol", "RTP/SAVP"),
				reason: "*"},
		}},
		{name: "SDES-lifetime", section: `"SDES" (lifetime)`, steps: []wstep{
			{cmd: wOffer(phoneSDP, "SDES", []any{"lifetime"}, "transport-protocol", "RTP/SAVP"), want: []string{"|2^31"}},
		}},
		{name: "SDES end to end passes", section: `"recrypt" ("Without this flag set")`, steps: []wstep{
			{cmd: wOffer(sdesSDP), want: []string{"a=crypto:1 AES_CM_128_HMAC_SHA1_80 " + sdesKey80}},
		}},
		{name: "recrypt: the relay's own key", section: `offer flags: "recrypt"`, steps: []wstep{
			{cmd: wOffer(sdesSDP, "flags", flags("recrypt")), want: []string{"m=audio 40002 RTP/SAVP 0", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"},
				absent: []string{sdesKey80, sdesKey32}},
		}},
		{name: "rtcp-mux reject", section: `"rtcp-mux" (reject)`, steps: []wstep{
			{cmd: wOffer(phoneSDP, "rtcp-mux", []any{"reject"}), absent: []string{"a=rtcp-mux"}},
		}},
		{name: "rtcp-mux reject with offer: offer wins", section: `"rtcp-mux" (reject: "Can be used together with offer")`, steps: []wstep{
			{cmd: wOffer(phoneSDP, "rtcp-mux", []any{"reject", "offer"}), want: []string{"a=rtcp-mux"}},
		}},
		{name: "without flags: extmap, rtcp, rtcp-mux stay", section: `"strip extmap", "no rtcp attribute"`, steps: []wstep{
			{cmd: wOffer(phoneSDP), want: []string{"a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level", "a=rtcp-mux", "a=rtcp:40003", "a=tls-id:"}},
		}},
		{name: "strip extmap", section: `offer flags: "strip extmap"`, steps: []wstep{
			{cmd: wOffer(phoneSDP, "flags", flags("strip-extmap")), absent: []string{"a=extmap"}},
		}},
		{name: "extmap strip list", section: `"extmap" (strip)`, steps: []wstep{
			{cmd: wOffer(phoneSDP, "extmap", map[string]any{"strip": []any{"urn:ietf:params:rtp-hdrext:ssrc-audio-level"}}),
				want: []string{"a=extmap:2 urn:ietf:params:rtp-hdrext:sdes:mid"}, absent: []string{"ssrc-audio-level"}},
		}},
		{name: "no rtcp attribute", section: `offer flags: "no rtcp attribute"`, steps: []wstep{
			{cmd: wOffer(phoneSDP, "flags", flags("no-rtcp-attribute")), absent: []string{"a=rtcp:"}},
		}},
		{name: "full rtcp attribute", section: `offer flags: "full rtcp attribute"`, steps: []wstep{
			{cmd: wOffer(phoneSDP, "flags", flags("full-rtcp-attribute")), want: []string{"a=rtcp:40003 IN IP4 203.0.113.1"}},
		}},
		{name: "no-tls-id", section: `offer flags: "no-tls-id"`, steps: []wstep{
			{cmd: wOffer(phoneSDP, "flags", flags("no-tls-id")), absent: []string{"a=tls-id"}},
		}},
		{name: "the relay writes no a=tls-id toward a DTLS side", section: `offer flags: "no-tls-id"`, steps: []wstep{
			{cmd: wOffer(browserSDP, "transport-protocol", "RTP/AVP")},
			{cmd: wAnswer(calleeSDP), want: []string{"a=fingerprint:"}, absent: []string{"a=tls-id"}},
		}},
		{name: "OSRTP offer: strict", section: `"OSRTP" (offer)`, strict: true, steps: []wstep{
			{cmd: wOffer(phoneSDP, "OSRTP", "offer"), reason: "OSRTP (RTP/SRTP transcoding) not supported: osrtp=offer"},
		}},
		{name: "OSRTP pass through", section: `"OSRTP" ("Default behaviour is to pass through")`, strict: true, steps: []wstep{
			{cmd: wOffer(strings.Replace(sdesSDP, "RTP/SAVP", "RTP/AVP", 1)), want: []string{"m=audio 40002 RTP/AVP 0", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 " + sdesKey80}},
		}},
		{name: "extmap mask: strict", section: `"extmap" (mask)`, strict: true, steps: []wstep{
			{cmd: wOffer(phoneSDP, "extmap", map[string]any{"mask": []any{"all"}}), reason: "RTP header extension removal not supported: extmap-mask-all"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Logf("semantics: ng_control_protocol.md %s", tc.section)
			b, _ := newBackend()
			b.Strict(tc.strict)
			s := ng.NewServer(b, ng.Options{})
			for i, st := range tc.steps {
				rep := roundTrip(t, s, fmt.Sprintf("wf%d", i), st.cmd)
				what := fmt.Sprintf("step %d (%s)", i, st.cmd["command"])
				if st.reason != "" {
					if rep["result"] != "error" || st.reason != "*" && rep["error-reason"] != st.reason {
						t.Fatalf("%s: reply %v, want error-reason %q", what, rep, st.reason)
					}
					continue
				}
				if rep["result"] != "ok" {
					t.Fatalf("%s: reply %v", what, rep)
				}
				out, _ := rep["sdp"].(string)
				for _, l := range st.want {
					if !strings.Contains(out, l) {
						t.Errorf("%s: no %q in\n%s", what, l, out)
					}
				}
				for _, l := range st.absent {
					if strings.Contains(out, l) {
						t.Errorf("%s: %q in\n%s", what, l, out)
					}
				}
			}
		})
	}
}

// FuzzSDPFlagEdits: the line edits take any SDP without panicking, and
// what no rtcp attribute, strip extmap and no-tls-id drop is gone.
func FuzzSDPFlagEdits(f *testing.F) {
	for _, s := range []string{phoneSDP, browserSDP, sdesSDP, "m=audio 1 RTP/AVP 0\na=rtcp:9\n", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		r := &ng.Request{Command: "offer", RTCPMux: []string{"reject"}, Flags: map[string]string{
			"strip-extmap": "", "no-rtcp-attribute": "", "no-tls-id": "", "trickle-ice": "",
			"full-rtcp-attribute": "", "sdes-no-aes-cm-128-hmac-sha1-32": ""}}
		out := string(sdpFlagEdits(r, []byte(body)))
		for _, l := range strings.Split(out, "\n") {
			l = strings.TrimSuffix(l, "\r")
			for _, p := range []string{"a=rtcp:", "a=extmap:", "a=tls-id:"} {
				if strings.HasPrefix(l, p) {
					t.Fatalf("%q left in %q", l, out)
				}
			}
		}
	})
}

// TestRTCPMuxRejectLeg: under rtcp-mux reject the offerer, whose answer
// will not have a=rtcp-mux, gets its RTCP on its a=rtcp port, not
// multiplexed ("rtcp-mux", reject; RFC 5761 section 5.1.1).
func TestRTCPMuxRejectLeg(t *testing.T) {
	for _, tc := range []struct {
		mux  []any
		want bool
		rtcp string
	}{
		{nil, true, "192.0.2.10:10001"},
		{[]any{"reject"}, false, "192.0.2.10:10001"},
		{[]any{"reject", "offer"}, true, "192.0.2.10:10001"},
	} {
		b, f := newBackend()
		s := ng.NewServer(b, ng.Options{})
		cmd := wOffer(phoneSDP)
		if tc.mux != nil {
			cmd["rtcp-mux"] = tc.mux
		}
		if rep := roundTrip(t, s, "m1", cmd); rep["result"] != "ok" {
			t.Fatalf("rtcp-mux %v: %v", tc.mux, rep)
		}
		l := f.sessions["w1"].Streams[0].A
		if l.RTCPMux != tc.want || l.PeerRTCP.String() != tc.rtcp {
			t.Errorf("rtcp-mux %v: offerer's leg mux %v, RTCP %s; want %v, %s", tc.mux, l.RTCPMux, l.PeerRTCP, tc.want, tc.rtcp)
		}
	}
}
