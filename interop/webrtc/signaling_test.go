package webrtc

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// TestBrowserSignaling runs the browser against sipd with media.mode
// none, which needs nothing of the relay: JsSIP registers over ws and
// over wss (the test's self-signed certificate), its INVITE reaches bob
// on UDP with the browser's WebRTC offer passed through unchanged, and
// bob's 486 reaches the browser. Then two calls that bob answers with a
// WebRTC answer of its own (media never connects: bob has no ICE or
// DTLS) end with a BYE from the browser and from bob, and two calls the
// other way, bob calling the browser with a WebRTC offer, end the same. A failure here is
// the SIP layer's, not the relay's; TestBrowserCallsPhone makes the same
// moves with media.
func TestBrowserSignaling(t *testing.T) {
	for _, transport := range []string{"ws", "wss"} {
		t.Run(transport, func(t *testing.T) {
			e := newCallEnv(t, "none", transport, "userspace")
			inv := e.invite(t)
			offer := string(inv.Body())
			if p := audioProfile(offer); p != "UDP/TLS/RTP/SAVPF" {
				t.Errorf("offer's audio profile %q, want the browser's UDP/TLS/RTP/SAVPF passed through\n%s", p, offer)
			}
			for _, a := range []string{"a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:", "a=setup:actpass", "a=rtcp-mux", "a=candidate:"} {
				if !hasAttr(offer, a) {
					t.Errorf("offer lacks %s\n%s", a, offer)
				}
			}
			// The browser's own candidate: its veth address.
			if addr, err := mediaAddr(offer); err != nil {
				t.Errorf("offer: %v", err)
			} else if addr.Addr() != e.tp.V4.Caller {
				t.Errorf("offer's media address %v, want the browser's %v (passed through)", addr, e.tp.V4.Caller)
			}
			e.bob.Respond(inv, 486, "Busy Here", "bob-tag", "")
			if e.bob.WaitRequest(sip.ACK, 5*time.Second) == nil {
				t.Error("bob got no ACK for its 486")
			}
			var failed struct {
				Cause  string
				Status int
			}
			if err := e.page.Await(5*time.Second, []string{"failed"}, "accepted").Decode(&failed); err != nil {
				t.Fatal(err)
			}
			if failed.Status != 486 {
				t.Errorf("the browser's call failed with %+v, want status 486", failed)
			}

			for _, browserHangsUp := range []bool{true, false} {
				inv := e.invite(t)
				e.bob.Respond(inv, 200, "OK", toTag, fakeWebRTC(netip.AddrPortFrom(e.tp.V4.Callee, bobRTP), sdpMid(string(inv.Body())), "active"))
				if answer := e.confirm(t); webrtcSDP(answer) != nil {
					t.Errorf("bob's answer changed on the way: %v\n%s", webrtcSDP(answer), answer)
				}
				e.hangup(t, inv, browserHangsUp)
			}

			// bob calls the browser: sipd finds it on the connection it
			// registered on, and in-dialog requests find it too.
			for _, browserHangsUp := range []bool{true, false} {
				e.calls++
				offer, d := e.dialBrowser(t, fakeWebRTC(netip.AddrPortFrom(e.tp.V4.Callee, bobRTP), "0", "actpass"))
				if err := webrtcSDP(offer); err != nil {
					t.Errorf("bob's offer changed on the way: %v\n%s", err, offer)
				}
				if err := webrtcSDP(string(d.Answer.Body())); err != nil {
					t.Errorf("the browser's answer: %v\n%s", err, d.Answer.Body())
				}
				e.hangupBrowser(t, d, browserHangsUp)
			}
		})
	}
}

// webrtcDesc is the SDP of a WebRTC endpoint's audio at Addr, PCMU only.
type webrtcDesc struct {
	Addr                   netip.AddrPort
	Mid, Setup             string
	Ufrag, Pwd             string
	Fingerprint, Candidate string // a=fingerprint and a=candidate values
	Lite                   bool   // a=ice-lite
}

func (d webrtcDesc) String() string {
	lite := ""
	if d.Lite {
		lite = "a=ice-lite\n"
	}
	return fmt.Sprintf(`v=0
o=- 1 1 IN IP4 %[1]s
s=-
t=0 0
%[9]sa=group:BUNDLE %[3]s
m=audio %[2]d UDP/TLS/RTP/SAVPF 0
c=IN IP4 %[1]s
a=mid:%[3]s
a=rtpmap:0 PCMU/8000
a=sendrecv
a=rtcp-mux
a=ice-ufrag:%[5]s
a=ice-pwd:%[6]s
a=fingerprint:%[7]s
a=setup:%[4]s
a=candidate:%[8]s
`, d.Addr.Addr(), d.Addr.Port(), d.Mid, d.Setup, d.Ufrag, d.Pwd, d.Fingerprint, d.Candidate, lite)
}

// fakeWebRTC is an audio offer or answer (setup actpass or active) from
// a WebRTC endpoint at addr, well formed enough for Chromium to accept,
// with made-up ICE credentials and fingerprint: nothing will answer its
// ICE checks. mid is the media's a=mid.
func fakeWebRTC(addr netip.AddrPort, mid, setup string) string {
	return webrtcDesc{Addr: addr, Mid: mid, Setup: setup, Ufrag: "bobufrag", Pwd: "bobpasswordbobpassword",
		Fingerprint: "sha-256 " + strings.TrimSuffix(strings.Repeat("AB:", 32), ":"),
		Candidate:   fmt.Sprintf("1 1 udp 2130706431 %s %d typ host", addr.Addr(), addr.Port())}.String()
}

// sdpMid is the first a=mid of an SDP ("0" if none).
func sdpMid(sdp string) string {
	for _, l := range sdpLines(sdp) {
		if m, ok := strings.CutPrefix(l, "a=mid:"); ok {
			return m
		}
	}
	return "0"
}
