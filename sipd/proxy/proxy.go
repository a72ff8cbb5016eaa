// Package proxy is the SIP core: it decides where each request goes
// (registrar, keep-alive answer, location lookup, loose routing), checks
// credentials, and forwards transaction-statefully, forking INVITEs to every
// registered contact.
package proxy

import (
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"sipxdp/sipd/dialog"
	"sipxdp/sipd/digest"
	"sipxdp/sipd/media"
	"sipxdp/sipd/nat"
	"sipxdp/sipd/protect"
	"sipxdp/sipd/registrar"
)

// Config is the core's policy.
type Config struct {
	AuthRegister  bool
	AuthInvite    bool
	AllowRelay    bool
	FixContact    bool
	MaxSize       int
	InviteTimeout time.Duration // Timer C: give up on a ringing branch
	// Media steers relayed calls' RTP through the relay (SDP rewrite);
	// nil: signaling only, SDP untouched.
	Media *media.Controller
}

// Stats are the core's counters.
type Stats struct {
	Requests      uint64 `json:"requests"`
	Keepalives    uint64 `json:"keepalives"`
	Registers     uint64 `json:"registers"`
	Forwarded     uint64 `json:"forwarded"`
	Replies       uint64 `json:"local_replies"`
	AuthFailures  uint64 `json:"auth_failures"`
	Challenges    uint64 `json:"challenges"`
	StrayForwards uint64 `json:"stray_responses_forwarded"`
	Transactions  int64  `json:"transactions"`
}

// Proxy is the SIP core.
type Proxy struct {
	cfg     Config
	log     *slog.Logger
	ua      *sipgo.UserAgent
	self    *Self
	auth    *digest.Authenticator
	reg     *registrar.Registrar
	dialogs *dialog.Tracker

	requests, keepalives, registers, forwarded, replies atomic.Uint64
	authFailures, challenges, strays                    atomic.Uint64
	inflight                                            atomic.Int64
	stopped                                             atomic.Bool
}

// Stop makes the core refuse to originate anything more (forwarding,
// CANCELs): at shutdown a late send would open a socket nobody closes.
func (p *Proxy) Stop() { p.stopped.Store(true) }

// New builds the core. auth may be nil when neither REGISTER nor INVITE is
// authenticated.
func New(cfg Config, log *slog.Logger, ua *sipgo.UserAgent, self *Self, auth *digest.Authenticator, reg *registrar.Registrar, dialogs *dialog.Tracker) *Proxy {
	if cfg.InviteTimeout <= 0 {
		cfg.InviteTimeout = 3 * time.Minute
	}
	return &Proxy{cfg: cfg, log: log, ua: ua, self: self, auth: auth, reg: reg, dialogs: dialogs}
}

// Self is the proxy's idea of its own addresses.
func (p *Proxy) Self() *Self { return p.self }

// Stats returns the counters.
func (p *Proxy) Stats() Stats {
	return Stats{
		Requests: p.requests.Load(), Keepalives: p.keepalives.Load(), Registers: p.registers.Load(),
		Forwarded: p.forwarded.Load(), Replies: p.replies.Load(), AuthFailures: p.authFailures.Load(),
		Challenges: p.challenges.Load(), StrayForwards: p.strays.Load(), Transactions: p.inflight.Load(),
	}
}

// CountKeepalive records a keep-alive answered before the core (the UDP
// fast path).
func (p *Proxy) CountKeepalive() { p.keepalives.Add(1); p.requests.Add(1) }

func srcAddr(m interface{ Source() string }) netip.AddrPort {
	a, _ := netip.ParseAddrPort(m.Source())
	return a
}

// reply answers a request locally through its server transaction.
func (p *Proxy) reply(req *sip.Request, tx sip.ServerTransaction, code int, reason string, hdrs ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	p.replies.Add(1)
	if err := tx.Respond(res); err != nil {
		p.log.Debug("reply failed", "code", code, "error", err)
	}
}

// HandleRequest is the transaction layer's request handler. It runs in its
// own goroutine and returns when the transaction's work is done.
func (p *Proxy) HandleRequest(req *sip.Request, tx *sip.ServerTx) {
	p.requests.Add(1)
	if tx == nil {
		return
	}
	p.inflight.Add(1)
	defer p.inflight.Add(-1)
	defer tx.TerminateGracefully()

	src := srcAddr(req)
	if err := protect.Check(req); err != nil {
		var pr *protect.Problem
		if errors.As(err, &pr) && req.Method != sip.ACK {
			p.reply(req, tx, pr.Code, pr.Reason, pr.Headers()...)
		}
		return
	}
	if p.cfg.MaxSize > 0 && len(req.Body()) > p.cfg.MaxSize {
		p.reply(req, tx, 513, "Message Too Large")
		return
	}
	// Force rport (RFC 3581): answer the address the request came from,
	// which is the only one a NAT lets back in.
	if via := req.Via(); via != nil && src.IsValid() {
		if !via.Params.Has("rport") {
			via.Params.Add("rport", "")
		}
		nat.MarkVia(via, src)
	}

	d := p.Decide(req)
	if d.Action == ActRegister || d.Action == ActKeepalive {
		// sipd is the UAS here, and it supports no extension a client
		// could require (RFC 3261 §8.2.2.3).
		if tags := protect.UnsupportedRequire(req); len(tags) > 0 {
			p.reply(req, tx, 420, "Bad Extension", sip.NewHeader("Unsupported", strings.Join(tags, ", ")))
			return
		}
	}
	switch d.Action {
	case ActReply:
		if req.Method != sip.ACK {
			p.reply(req, tx, d.Code, d.Reason)
		}
		return
	case ActDrop:
		return
	case ActKeepalive:
		p.keepalives.Add(1)
		p.reply(req, tx, 200, "OK")
		return
	}
	if d.Challenge != 0 {
		user, ok := p.authenticate(req, tx, d.Challenge)
		if !ok {
			return
		}
		// The identity asserted must be the one authenticated (Kamailio's
		// check_to/check_from): no registering or calling as someone else.
		claimed := UserKey(req.From().Address.User)
		if d.Action == ActRegister {
			claimed = UserKey(req.To().Address.User)
		}
		if claimed != user {
			p.authFailures.Add(1)
			p.reply(req, tx, 403, "Forbidden: identity mismatch")
			return
		}
		if d.Challenge == 407 {
			// Our credentials are spent here; the next hop has no use for
			// them (Kamailio's consume_credentials).
			for req.RemoveHeader("Proxy-Authorization") {
			}
		}
	}
	for i := 0; i < d.OwnRoutes; i++ {
		req.RemoveHeader("Route")
	}
	switch d.Action {
	case ActRegister:
		p.register(req, tx, src)
	case ActLookup:
		p.lookup(req, tx, d)
	case ActForward:
		if req.Method == sip.ACK {
			if p.cfg.Media != nil {
				// The answer to a late offer comes in the ACK.
				if err := p.cfg.Media.Request(req); err != nil {
					p.log.Warn("media: ACK sdp left as is", "call_id", req.CallID().Value(), "error", err)
				}
			}
			p.forwardAck(req)
			return
		}
		p.forward(req, tx, d, []target{{uri: req.Recipient}})
	}
}

// authenticate checks credentials and, when they are missing or wrong,
// sends the challenge; ok means the request may proceed as user.
func (p *Proxy) authenticate(req *sip.Request, tx sip.ServerTransaction, code int) (user string, ok bool) {
	if p.auth == nil {
		p.reply(req, tx, 500, "Authentication Not Configured")
		return "", false
	}
	hdr, chal := "Authorization", "WWW-Authenticate"
	reason := "Unauthorized"
	if code == 407 {
		hdr, chal, reason = "Proxy-Authorization", "Proxy-Authenticate", "Proxy Authentication Required"
	}
	var vals []string
	for _, h := range req.GetHeaders(hdr) {
		vals = append(vals, h.Value())
	}
	user, err := p.auth.Verify(string(req.Method), vals)
	if err == nil {
		return user, true
	}
	stale := errors.Is(err, digest.ErrStale)
	switch {
	case errors.Is(err, digest.ErrNoCredentials), stale, errors.Is(err, digest.ErrBadNonce), errors.Is(err, digest.ErrReplay):
		// Ask (again): the UA has not tried yet, or tried with a nonce we no
		// longer accept.
	case errors.Is(err, digest.ErrMalformed):
		p.authFailures.Add(1)
		p.reply(req, tx, 400, "Bad Credentials")
		return "", false
	default:
		p.authFailures.Add(1)
		p.log.Debug("authentication failed", "user", user, "src", req.Source(), "error", err)
		p.reply(req, tx, 403, "Forbidden")
		return "", false
	}
	p.challenges.Add(1)
	var hs []sip.Header
	for _, c := range p.auth.Challenges(stale) {
		hs = append(hs, sip.NewHeader(chal, c))
	}
	p.reply(req, tx, code, reason, hs...)
	return "", false
}

func (p *Proxy) register(req *sip.Request, tx sip.ServerTransaction, src netip.AddrPort) {
	p.registers.Add(1)
	aor := UserKey(req.To().Address.User)
	if aor == "" {
		p.reply(req, tx, 400, "Bad To")
		return
	}
	var contact *sip.ContactHeader
	if c, ok := req.GetHeader("Contact").(*sip.ContactHeader); ok {
		contact = c
	}
	why := nat.Detect(src, req.Via(), contact, req.Transport())
	// The flow is recorded by its real source whatever the test says: it is
	// the only way back over a connection, and behind NAT over UDP.
	flow := registrar.Flow{Received: src.String(), Transport: strings.ToUpper(req.Transport()), NATed: why != 0}
	res := p.reg.Register(req, aor, flow)
	p.replies.Add(1)
	if err := tx.Respond(res); err != nil {
		p.log.Debug("register reply failed", "error", err)
	}
}

func (p *Proxy) lookup(req *sip.Request, tx *sip.ServerTx, d Decision) {
	user := UserKey(req.Recipient.User)
	bindings := p.reg.Store().Lookup(user)
	if len(bindings) == 0 {
		if p.auth != nil {
			if _, known := p.auth.Users().Lookup(user); !known {
				p.reply(req, tx, 404, "Not Found")
				return
			}
		}
		p.reply(req, tx, 480, "Temporarily Unavailable")
		return
	}
	targets := make([]target, 0, len(bindings))
	for _, b := range bindings {
		var u sip.Uri
		if err := sip.ParseUri(b.Contact, &u); err != nil {
			continue
		}
		t := target{uri: u, nated: b.NATed}
		switch {
		case b.Received == "":
		case sip.IsReliable(b.Transport):
			// Reuse the phone's connection while it lasts; once it is
			// gone only the Contact can be tried.
			if p.flowAlive(b.Transport, b.Received) {
				t.dest, t.transport = b.Received, b.Transport
			}
		case b.NATed:
			t.dest, t.transport = b.Received, b.Transport
		}
		targets = append(targets, t)
	}
	if len(targets) == 0 {
		p.reply(req, tx, 480, "Temporarily Unavailable")
		return
	}
	p.forward(req, tx, d, targets)
}

// flowAlive reports whether a connection from a registered phone is still
// open.
func (p *Proxy) flowAlive(transport, addr string) bool {
	c, err := p.ua.TransportLayer().GetConnection(transport, addr)
	if err != nil || c == nil {
		return false
	}
	c.TryClose() // GetConnection took a reference
	return true
}
