package webrtc

import (
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// TestBrowserSignaling runs the browser against sipd with media.mode
// none, which needs nothing of the relay: JsSIP registers over ws and
// over wss (the test's self-signed certificate), its INVITE reaches bob
// on UDP with the browser's WebRTC offer passed through unchanged, and
// bob's 486 reaches the browser. A failure here is the SIP layer's, not
// the relay's.
func TestBrowserSignaling(t *testing.T) {
	for _, transport := range []string{"ws", "wss"} {
		t.Run(transport, func(t *testing.T) {
			e := newCallEnv(t, "none", transport)
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
		})
	}
}
