package proxy

import (
	"errors"
	"strconv"

	"github.com/emiago/sipgo/sip"

	"sipxdp/sipd/protect"
)

// setupRetryAfter is the Retry-After of a refusal under the setup caps,
// in seconds. Short: an upstream proxy that takes a 503 as "avoid this
// server for Retry-After" (RFC 3263 §4.3) should not stop sending every
// call because one source had too many ringing.
const setupRetryAfter = 5

// admitSetup admits a relayed call about to be forwarded under the setup
// caps (protect.Setup), or refuses it with 503 and Retry-After. Calls
// from authenticated callers and exempt sources are not capped: counting
// them per source would let a forger of their address refuse them.
//
// 503 and not 486 or 480: those speak of the callee (busy, away), and the
// caller would show that to its user; the refusal is about this server's
// resources, which is what 503 says (RFC 3261 §21.5.4), and a caller with
// another route tries it.
func (p *Proxy) admitSetup(req *sip.Request, stx sip.ServerTransaction, d Decision) (*protect.Hold, bool) {
	if p.cfg.Setup == nil || d.Authenticated {
		return nil, true
	}
	src := srcAddr(req).Addr().Unmap()
	if p.cfg.Exempt != nil && p.cfg.Exempt(src) {
		return nil, true
	}
	h, err := p.cfg.Setup.Acquire(src, p.cfg.Media.OfferPairs(req))
	if err == nil {
		return h, true
	}
	why := "too many calls in setup from your address"
	if errors.Is(err, protect.ErrSetupShare) {
		why = "too many calls in setup from unauthenticated callers"
	}
	p.reply(req, stx, 503, "Service Unavailable",
		sip.NewHeader("Retry-After", strconv.Itoa(setupRetryAfter)),
		sip.NewHeader("Warning", `399 sipd "`+why+`"`))
	return nil, false
}
