package security

import (
	"fmt"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/internal/sipua"
)

// An attacker holds a subscriber's digest answer computed for another
// Request-URI (captured on the path and kept from reaching sipd, so its
// nonce count is unused) and puts it on a request of its own choosing,
// hoping sipd checks the answer without checking what it was for.
func TestDigestURIMismatch(t *testing.T) {
	e := newEnv(t, nil)
	bob := e.callee()
	bob.Register("bob", domain, password)
	x := e.attackerUA()
	cases := []struct {
		name, method, uri string
		want              int
	}{
		{"answer for alice's call to another number", "INVITE", "sip:voicemail@" + domain, 400},
		{"answer for alice's REGISTER", "REGISTER", "sip:" + domain, 400},
		// The same URI written differently (RFC 3261 §19.1.4): accepted.
		{"answer for this URI, host in capitals", "INVITE", "sip:bob@EXAMPLE.COM", 0},
	}
	for i, c := range cases {
		inv := sipua.Msg{Method: "INVITE", RURI: "sip:bob@" + domain, From: "sip:alice@" + domain, To: "sip:bob@" + domain,
			CallID: fmt.Sprintf("uri-%d", i), CSeq: 1, Branch: x.Branch()}
		x.Send(x.Request(inv))
		r := x.Expect(407)
		x.Send(x.Ack(inv, r))
		inv.CSeq, inv.Branch = 2, x.Branch()
		inv.Headers = []string{"Proxy-Authorization: " + sipua.Authorization(r.GetHeader("Proxy-Authenticate").Value(), "alice", password, c.method, c.uri, "00000001")}
		x.Send(x.Request(inv))
		if c.want == 0 {
			got := bob.ExpectRequest("INVITE")
			bob.Respond(got, 486, "Busy Here", "b", "")
			x.Send(x.Ack(inv, x.Expect(486)))
			continue
		}
		r = x.Response(2 * time.Second)
		if r == nil || r.StatusCode != c.want {
			t.Errorf("%s: answered %v, want %d", c.name, r, c.want)
		}
		if got := bob.Recv(300 * time.Millisecond); got != nil {
			t.Errorf("%s: accepted, bob received %s", c.name, sipua.FirstLine(got))
			if req, ok := got.(*sip.Request); ok {
				bob.Respond(req, 486, "Busy Here", "b", "")
			}
			r = x.Response(2 * time.Second)
		}
		if r != nil && r.StatusCode >= 300 {
			x.Send(x.Ack(inv, r))
		}
	}
	wantMetric(t, e, "digest_uri_mismatch", 2)
	e.legitCall()
}
