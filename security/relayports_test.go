package security

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/internal/netns"
	"sipxdp/internal/sipua"
	"sipxdp/sipd"
)

// smallPoolPairs is the relay pool of the port-exhaustion tests: one
// relay address with 50 RTP/RTCP pairs, so a relayed call (two legs, one
// pair each) takes 2 and 25 calls empty it.
const smallPoolPairs = 50

func smallRelayPool(c *sipd.Config) {
	c.Media.Addresses = []sipd.AddressConfig{
		{Name: "a", Local: netns.V4.RelayA.String(), PortMin: 30000, PortMax: 30000 + 2*smallPoolPairs - 1},
	}
}

// inviteOutcome is what became of one attack INVITE.
type inviteOutcome struct {
	ringing, refused int // forwarded and still in setup; answered 503
	other            []string
	retryAfter       int // refusals that carried Retry-After
}

// strangerInvites sends n INVITEs with SDP from a foreign domain to
// alice (whose phone rings and never answers) from x, one at a time,
// and sorts the outcomes: a call that got 100 Trying and no final answer
// within a moment is ringing, holding its relay ports.
func strangerInvites(t *testing.T, x *sipua.UA, n int, tag string) inviteOutcome {
	t.Helper()
	var o inviteOutcome
	for i := 0; i < n; i++ {
		callID := fmt.Sprintf("exhaust-%s-%d", tag, i)
		x.Send(x.Request(sipua.Msg{Method: "INVITE", RURI: "sip:alice@" + domain, From: "sip:mallory@evil.example",
			To: "sip:alice@" + domain, CallID: callID, CSeq: 1,
			Body: sipua.SDP(netip.AddrPortFrom(x.Addr().Addr(), uint16(40000+2*i)))}))
		var final *sip.Response
		trying := false
		for end := time.Now().Add(3 * time.Second); final == nil && time.Now().Before(end); {
			wait := time.Until(end)
			if trying {
				wait = 300 * time.Millisecond // a refusal follows its 100 at once
			}
			m := x.Recv(wait)
			if m == nil {
				break
			}
			r, ok := m.(*sip.Response)
			if !ok || r.CallID() == nil || r.CallID().Value() != callID {
				continue
			}
			if r.StatusCode == 100 {
				trying = true
				continue
			}
			final = r
		}
		switch {
		case final == nil && trying:
			o.ringing++
		case final != nil && final.StatusCode == 503:
			o.refused++
			if final.GetHeader("Retry-After") != nil {
				o.retryAfter++
			}
			x.Send(x.Ack(sipua.Msg{Method: "INVITE", RURI: "sip:alice@" + domain, From: "sip:mallory@evil.example",
				To: "sip:alice@" + domain, CallID: callID, CSeq: 1, Branch: final.Via().Params.GetOr("branch", "")}, final))
		case final != nil:
			o.other = append(o.other, fmt.Sprintf("%s: %d %s", callID, final.StatusCode, final.Reason))
		default:
			o.other = append(o.other, callID+": no answer")
		}
	}
	return o
}

// A stranger may call a local user (a proxy must take inbound calls from
// anyone), and each such INVITE with SDP takes relay ports for as long as
// the phone rings. The attacker fills the pool with calls nobody answers;
// an authenticated subscriber's call must still get ports.
func TestRelayPortExhaustion(t *testing.T) {
	e := newEnv(t, smallRelayPool)
	victim := e.caller() // alice's phone: rings, never answers
	victim.Register("alice", domain, password)

	x := e.attackerUA()
	o := strangerInvites(t, x, smallPoolPairs/2+5, "one")
	t.Logf("attack INVITEs from one source: %d ringing, %d refused (%d with Retry-After), other %v", o.ringing, o.refused, o.retryAfter, o.other)

	e.legitCall()

	perSource := e.sipd.Cfg.SIP.Protect.SetupPerSource
	if o.ringing > perSource {
		t.Fatalf("%d stranger calls from one source in setup, cap %d", o.ringing, perSource)
	}
	if o.refused == 0 || o.retryAfter != o.refused || len(o.other) > 0 {
		t.Fatalf("refusals %d (%d with Retry-After), other outcomes %v", o.refused, o.retryAfter, o.other)
	}
	if v, _ := e.sipd.Metric(`sipxdp_sip_setup_refused_total{reason="per_source"}`); int(v) != o.refused {
		t.Fatalf("per-source refusals counted %v, seen %d", v, o.refused)
	}
}

// The same with one attacker behind many source addresses (as a spoofer
// of UDP sources has): each address gets its own per-source allowance, so
// only the global bound on ports held by unauthenticated calls in setup
// keeps the subscriber's share free.
func TestRelayPortExhaustionManySources(t *testing.T) {
	e := newEnv(t, smallRelayPool)
	victim := e.caller()
	victim.Register("alice", domain, password)

	const sources, each = 10, 6
	var total inviteOutcome
	for i := 0; i < sources; i++ {
		a := netip.AddrFrom4([4]byte{10, 252, 3, byte(10 + i)})
		e.attacker.AddAddr(t, a)
		o := strangerInvites(t, e.ua(e.attacker.NS, a), each, a.String())
		total.ringing += o.ringing
		total.refused += o.refused
		total.retryAfter += o.retryAfter
		total.other = append(total.other, o.other...)
	}
	t.Logf("attack INVITEs from %d sources: %d ringing, %d refused (%d with Retry-After), other %v",
		sources, total.ringing, total.refused, total.retryAfter, total.other)

	e.legitCall()

	share := e.sipd.Cfg.SIP.Protect.SetupUnauthenticatedShare
	maxCalls := smallPoolPairs * share / 100 / 2
	if total.ringing > maxCalls {
		t.Fatalf("%d stranger calls in setup hold relay ports, bound %d (%d%% of %d pairs, 2 per call)",
			total.ringing, maxCalls, share, smallPoolPairs)
	}
	if total.refused == 0 || total.retryAfter != total.refused || len(total.other) > 0 {
		t.Fatalf("refusals %d (%d with Retry-After), other outcomes %v", total.refused, total.retryAfter, total.other)
	}
	if v, _ := e.sipd.Metric(`sipxdp_sip_setup_refused_total{reason="unauthenticated_share"}`); v == 0 {
		t.Fatal("no refusal counted under the unauthenticated share")
	}
}
