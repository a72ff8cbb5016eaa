package proxy

import (
	"net/netip"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// BranchPrefix starts the Via branch of every request this proxy sends: a
// response carrying it answers one of them (the flood filter lets such
// responses from a banned source through; the transaction layer matches
// them).
const BranchPrefix = branchMagic

// A banned source (the flood filter's ban, over UDP, where a source can be
// forged) reaches the core only with something a forger lacks, and the
// core checks it again here: digest credentials that verify, or an
// in-dialog request of a live call. Anything else from it is dropped
// without a reply, so a flood made in someone's name costs no writes and
// reflects nothing; the one reply it can get is a challenge, when the
// filter let a request through for one (at most one per
// sip.protect.banned_challenge_interval).

// banned tells whether src is banned by the flood filter now.
func (p *Proxy) banned(req *sip.Request, src netip.AddrPort) bool {
	return p.cfg.Banned != nil && src.IsValid() && p.cfg.Banned(req.Transport(), src.Addr().Unmap())
}

// admitBanned decides a request from a banned source that needs no
// credentials: only requests of a live dialog go on. One that needs
// credentials goes on to authenticateBanned.
func (p *Proxy) admitBanned(req *sip.Request, d Decision) bool {
	switch {
	case d.Action == ActReply || d.Action == ActDrop || d.Action == ActKeepalive:
	case d.Challenge != 0:
		return true
	case d.InDialog && p.dialogs != nil && p.dialogs.Live(req.CallID().Value(),
		req.From().Params.GetOr("tag", ""), req.To().Params.GetOr("tag", "")):
		// A live dialog's Call-ID and tags are known only to its parties
		// (and to whoever sees its signaling). Routing still applies its
		// own checks of the request's Route.
		p.bannedDialog.Add(1)
		return true
	}
	p.bannedDropped.Add(1)
	return false
}

// authenticateBanned is authenticate for a banned source: the request
// goes on when its credentials verify; a missing or stale nonce gets the
// challenge (the filter bounds how often); every other answer authenticate
// would give (403, 400) is swallowed.
func (p *Proxy) authenticateBanned(req *sip.Request, tx sip.ServerTransaction, code int) (string, bool) {
	q := &quietTx{ServerTransaction: tx}
	user, ok := p.authenticate(req, q, code)
	switch {
	case ok:
		p.bannedServed.Add(1)
	case q.challenged:
		p.bannedChallenged.Add(1)
	default:
		p.bannedDropped.Add(1)
	}
	return user, ok
}

// quietTx passes on challenges only.
type quietTx struct {
	sip.ServerTransaction
	challenged bool
}

func (q *quietTx) Respond(res *sip.Response) error {
	if res.StatusCode != 401 && res.StatusCode != 407 {
		return nil
	}
	q.challenged = true
	return q.ServerTransaction.Respond(res)
}

// challenge answers req with a digest challenge (401 or 407). The
// challenge's opaque ties its nonce to the address it is sent to
// (protect.Binder), which is how the owner of an address banned for a
// flood made in its name proves itself.
//
// A challenged non-INVITE request leaves no transaction behind: a
// retransmission gets a challenge of its own, so a REGISTER flood holds no
// memory for the 5 s a finished transaction lingers. An INVITE's
// transaction stays, to absorb the ACK of the challenge and retransmit it
// over UDP (RFC 3261 §17.2.1).
func (p *Proxy) challenge(req *sip.Request, tx sip.ServerTransaction, code int, stale bool) {
	hdr, reason := "WWW-Authenticate", "Unauthorized"
	if code == 407 {
		hdr, reason = "Proxy-Authenticate", "Proxy Authentication Required"
	}
	p.challenges.Add(1)
	src := srcAddr(req)
	cs := p.auth.Challenges(stale)
	if isWebSocket(req.Transport()) {
		cs = browserChallenges(cs)
	}
	var hs []sip.Header
	for _, c := range cs {
		if p.cfg.Binder != nil && src.IsValid() {
			if nonce := challengeNonce(c); nonce != "" {
				c += `, opaque="` + p.cfg.Binder.Opaque(src.Addr(), nonce) + `"`
			}
		}
		hs = append(hs, sip.NewHeader(hdr, c))
	}
	p.reply(req, tx, code, reason, hs...)
	if !req.IsInvite() {
		tx.Terminate()
	}
}

// browserChallenges narrows the challenges sent over WebSocket to the MD5
// one, when MD5 is offered at all. Browsers' SIP stacks know only MD5 and
// do not choose among several challenges as RFC 8760 asks: JsSIP keeps the
// last WWW-Authenticate and gives up unless it is MD5, SIP.js takes the
// first. Offering MD5 alone to them loses nothing the configuration did
// not already offer.
func browserChallenges(cs []string) []string {
	for _, c := range cs {
		if strings.Contains(c, "algorithm=MD5,") {
			return []string{c}
		}
	}
	return cs
}

// challengeNonce reads the nonce of a challenge digest.Challenges made.
func challengeNonce(c string) string {
	_, v, ok := strings.Cut(c, `nonce="`)
	if !ok {
		return ""
	}
	v, _, ok = strings.Cut(v, `"`)
	if !ok {
		return ""
	}
	return v
}
