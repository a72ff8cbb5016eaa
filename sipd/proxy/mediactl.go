package proxy

import (
	"net/netip"

	"github.com/emiago/sipgo/sip"
)

// MediaController is what the proxy asks of whatever relays calls' media:
// the embedded engine (media.Controller) or a set of NG relays
// (ngmedia.Controller). The proxy calls it at a few hook points and never
// looks at SDP itself; media.Controller's methods document the contract.
type MediaController interface {
	// Relays says whether a new call with these NAT findings is relayed.
	Relays(req *sip.Request, nated bool) bool
	// OfferPairs is how many relay port pairs the initial INVITE takes,
	// for the setup caps.
	OfferPairs(req *sip.Request) int
	// Invite starts relaying a call and rewrites its offer; an error
	// wrapping media.ErrUnavailable means answer 503.
	Invite(req *sip.Request, callee netip.Addr, calleeTransport string) error
	// Request follows SDP in an in-dialog request; a BYE ends the call.
	Request(req *sip.Request) error
	// Response rewrites a response's SDP on its way upstream.
	Response(res *sip.Response)
	// End stops relaying a call.
	End(callID, reason string)
	// State is the call's relay state to keep with its dialog (false:
	// nothing to keep).
	State(callID string) ([]byte, bool)
}
