package security

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"sipxdp/internal/sipua"
)

// A stranger sends an INVITE that looks in-dialog (a To tag) with a Route
// naming sipd and a Request-URI at a PSTN gateway, hoping sipd forwards
// it without asking for credentials: a free call from sipd's address.
func TestTollFraudInDialogRoute(t *testing.T) {
	e := newEnv(t, nil)
	gw := e.callee() // the gateway: sipd must never send it anything from the attacker
	gwURI := fmt.Sprintf("sip:+15551234567@%s", gw.Addr())
	x := e.attackerUA()
	routes := map[string]string{
		"route names sipd":        fmt.Sprintf("Route: <sip:%s;lr>", e.SIP),
		"route names the gateway": fmt.Sprintf("Route: <sip:%s;lr>", gw.Addr()),
		"route names sipd and gw": fmt.Sprintf("Route: <sip:%s;lr>, <sip:%s;lr>", e.SIP, gw.Addr()),
	}
	i := 0
	for name, route := range routes {
		i++
		x.Send(x.Request(sipua.Msg{Method: "INVITE", RURI: gwURI, From: "sip:mallory@evil.example", To: gwURI,
			ToTag: "forged", CallID: fmt.Sprintf("fraud-%d", i), CSeq: 1, Headers: []string{route},
			Body: sipua.SDP(netip.AddrPortFrom(e.attacker.V4, 40000))}))
		if r := x.Response(2 * time.Second); r != nil && r.StatusCode < 300 {
			t.Errorf("%s: attacker got %d %s", name, r.StatusCode, r.Reason)
		}
		if m := gw.Recv(500 * time.Millisecond); m != nil {
			t.Errorf("%s: the gateway received %s from sipd", name, sipua.FirstLine(m))
		}
	}
	// Each refusal is counted: the first two lack a token of ours; the
	// third has a Route of ours, without a token.
	wantMetric(t, e, "route_token_missing", 3)
	// The subscriber still calls out.
	e.legitCall()
}
