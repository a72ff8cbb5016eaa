// Package proxy is the SIP core: it decides where each request goes
// (registrar, keep-alive answer, location lookup, loose routing), checks
// credentials, and forwards transaction-statefully, forking INVITEs to every
// registered contact.
package proxy

import (
	"errors"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"sipxdp/sipd/dialog"
	"sipxdp/sipd/digest"
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
	Media MediaController
	// Setup caps relayed calls in setup from callers who did not
	// authenticate (nil: no cap); Exempt sources are not capped.
	Setup  *protect.Setup
	Exempt func(netip.Addr) bool
	// Banned tells whether the flood filter has banned a source (see
	// banned.go); nil: nobody is.
	Banned func(transport string, src netip.Addr) bool
	// Binder ties each challenge's nonce to the address it goes to, in
	// its opaque (nil: challenges carry no opaque).
	Binder *protect.Binder
	// PeerRoutes: nodes share dialogs, so an in-dialog request whose
	// route names another node, with a token that verifies under
	// RouteKey, is taken over as if the route named this one (route.go,
	// ownRoutes).
	PeerRoutes bool
	// Path: the location table is shared with other nodes, so bindings
	// only reachable through this one get a Path naming it (path.go).
	Path bool
	// RouteKey keys the tokens in our Record-Route entries
	// (secret.Derive(secret, "route")); instances sharing it accept each
	// other's. Empty: a random key, good for this process only.
	RouteKey []byte
	// Flows keeps a phone's connection open while its registration lasts;
	// nil: nothing is told.
	Flows FlowKeeper
	// ObserveTransaction is told, for each request answered through its
	// server transaction, the method and the time from the request to its
	// first final response (sent locally or relayed); nil: nobody. It
	// runs on the request's goroutine and must be quick.
	ObserveTransaction func(method string, d time.Duration)
}

// FlowKeeper is told of each registration made over a TCP, TLS or WebSocket
// connection: the connection (known by its transport and source) is how
// sipd reaches the phone until until, so it must not be closed as idle.
type FlowKeeper interface {
	KeepFlow(transport string, src netip.AddrPort, until time.Time)
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
	// Banned counts what the core did with requests from banned sources.
	Banned BannedStats `json:"banned"`
	// Refused counts requests refused or absorbed for routing and dialog
	// reasons, by reason (the Refused* constants).
	Refused map[string]uint64 `json:"refused"`
}

// BannedStats count requests from banned sources that reached the core
// (the flood filter dropped the rest): served for credentials that
// verified or for a live dialog, challenged, or dropped without a reply.
type BannedStats struct {
	ServedCredentials uint64 `json:"served_credentials"`
	ServedDialog      uint64 `json:"served_dialog"`
	Challenged        uint64 `json:"challenged"`
	Dropped           uint64 `json:"dropped"`
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
	routes  routeSigner

	refused refusals

	requests, keepalives, registers, forwarded, replies atomic.Uint64
	authFailures, challenges, strays                    atomic.Uint64
	bannedServed, bannedDialog, bannedChallenged        atomic.Uint64
	bannedDropped                                       atomic.Uint64
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
	return &Proxy{cfg: cfg, log: log, ua: ua, self: self, auth: auth, reg: reg, dialogs: dialogs, routes: newRouteSigner(cfg.RouteKey)}
}

// Self is the proxy's idea of its own addresses.
func (p *Proxy) Self() *Self { return p.self }

// Stats returns the counters.
func (p *Proxy) Stats() Stats {
	return Stats{
		Requests: p.requests.Load(), Keepalives: p.keepalives.Load(), Registers: p.registers.Load(),
		Forwarded: p.forwarded.Load(), Replies: p.replies.Load(), AuthFailures: p.authFailures.Load(),
		Challenges: p.challenges.Load(), StrayForwards: p.strays.Load(), Transactions: p.inflight.Load(),
		Banned: BannedStats{ServedCredentials: p.bannedServed.Load(), ServedDialog: p.bannedDialog.Load(),
			Challenged: p.bannedChallenged.Load(), Dropped: p.bannedDropped.Load()},
		Refused: p.refused.snapshot(),
	}
}

// refusals are the refusal counters, one per reason.
type refusals struct {
	tokenMissing, tokenInvalid, dialog, foreignRoute, digestURI, strayACK, location atomic.Uint64
}

func (r *refusals) counter(reason string) *atomic.Uint64 {
	switch reason {
	case RefusedTokenMissing:
		return &r.tokenMissing
	case RefusedTokenInvalid:
		return &r.tokenInvalid
	case RefusedDialog:
		return &r.dialog
	case RefusedForeignRoute:
		return &r.foreignRoute
	case RefusedDigestURI:
		return &r.digestURI
	case RefusedStrayACK:
		return &r.strayACK
	case RefusedLocation:
		return &r.location
	}
	return nil
}

func (r *refusals) add(reason string) {
	if c := r.counter(reason); c != nil {
		c.Add(1)
	}
}

func (r *refusals) snapshot() map[string]uint64 {
	m := make(map[string]uint64, 7)
	for _, k := range []string{RefusedTokenMissing, RefusedTokenInvalid, RefusedDialog, RefusedForeignRoute, RefusedDigestURI, RefusedStrayACK, RefusedLocation} {
		m[k] = r.counter(k).Load()
	}
	return m
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
	p.handle(req, p.timed(req, tx))
}

// timed wraps tx to observe the time to its first final response, when
// the transaction times are observed.
func (p *Proxy) timed(req *sip.Request, tx *sip.ServerTx) sip.ServerTransaction {
	if p.cfg.ObserveTransaction == nil {
		return tx
	}
	return &timedTx{ServerTransaction: tx, start: time.Now(), method: string(req.Method), observe: p.cfg.ObserveTransaction}
}

// timedTx is a server transaction that reports the time from its request
// to the first final response sent through it. Every answer, local or
// relayed, goes through Respond, so one wrapper sees them all.
type timedTx struct {
	sip.ServerTransaction
	start   time.Time
	method  string
	observe func(method string, d time.Duration)
	final   atomic.Bool
}

func (t *timedTx) Respond(res *sip.Response) error {
	err := t.ServerTransaction.Respond(res)
	if err == nil && res.StatusCode >= 200 && t.final.CompareAndSwap(false, true) {
		t.observe(t.method, time.Since(t.start))
	}
	return err
}

// handle is HandleRequest's work on a request with a server transaction.
func (p *Proxy) handle(req *sip.Request, tx sip.ServerTransaction) {

	src := srcAddr(req)
	banned := p.banned(req, src) // then nothing but a challenge is answered
	if err := protect.Check(req); err != nil {
		var pr *protect.Problem
		if errors.As(err, &pr) && req.Method != sip.ACK && !banned {
			p.reply(req, tx, pr.Code, pr.Reason, pr.Headers()...)
		}
		return
	}
	if p.cfg.MaxSize > 0 && len(req.Body()) > p.cfg.MaxSize {
		if !banned {
			p.reply(req, tx, 513, "Message Too Large")
		}
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
	if d.InDialog && d.Action != ActKeepalive && p.dialogs != nil {
		// A request that names a call we track but none of its dialogs
		// changes nothing, whatever its route says (RFC 3261 §12.2.2).
		// A request routed by a valid token may belong to a call another
		// node set up (Find adopts it from the shared state).
		match := p.dialogs.Match
		if d.Action == ActForward {
			match = p.dialogs.Find
		}
		if m := match(req.CallID().Value(), req.From().Params.GetOr("tag", ""), req.To().Params.GetOr("tag", "")); m == dialog.Mismatch {
			d = Decision{Action: ActReply, Code: 481, Reason: "Call/Transaction Does Not Exist", InDialog: true, Refusal: RefusedDialog}
			if req.Method == sip.ACK {
				d = Decision{Action: ActDrop, InDialog: true, Refusal: RefusedStrayACK}
			}
		}
	}
	if banned && !p.admitBanned(req, d) {
		return
	}
	if d.Refusal != "" {
		p.refused.add(d.Refusal)
	}
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
		authenticate := p.authenticate
		if banned {
			authenticate = p.authenticateBanned
		}
		user, ok := authenticate(req, tx, d.Challenge)
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
			if !banned {
				p.reply(req, tx, 403, "Forbidden: identity mismatch")
			}
			return
		}
		d.Authenticated = true
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
	case ActFlow:
		// Another node of the set sends it, which applied its own caps
		// and challenge: counted per source, every call it passes on
		// would share one cap.
		d.Authenticated = true
		t := target{uri: req.Recipient, dest: d.FlowDest, transport: d.FlowTransport, nated: true}
		if sip.IsReliable(t.transport) && !p.flowAlive(t.transport, t.dest) {
			p.reply(req, tx, 480, "Temporarily Unavailable")
			return
		}
		p.forward(req, tx, d, []target{t})
	case ActForward:
		if req.Method == sip.ACK {
			if p.cfg.Media != nil {
				// The answer to a late offer comes in the ACK.
				if err := p.cfg.Media.Request(req); err != nil {
					p.log.Warn("media: ACK sdp left as is", "call_id", req.CallID().Value(), "error", err)
				} else if len(req.Body()) > 0 && p.dialogs != nil {
					// A late offer's answer: the call's media is set up now.
					if st := p.mediaState(true, req.CallID().Value()); st != nil {
						p.dialogs.SetMedia(req.CallID().Value(), req.From().Params.GetOr("tag", ""), req.To().Params.GetOr("tag", ""), st)
					}
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
	hdr := "Authorization"
	if code == 407 {
		hdr = "Proxy-Authorization"
	}
	var vals []string
	for _, h := range req.GetHeaders(hdr) {
		vals = append(vals, h.Value())
	}
	user, err := p.auth.Verify(string(req.Method), vals, func(uri string) bool { return sameRequestURI(uri, &req.Recipient) })
	if err == nil {
		return user, true
	}
	stale := errors.Is(err, digest.ErrStale)
	switch {
	case errors.Is(err, digest.ErrURIMismatch):
		// RFC 3261 §22.4: credentials are for one Request-URI. Answers
		// computed for another (a request captured on the way) are not
		// good for this one.
		p.authFailures.Add(1)
		p.refused.add(RefusedDigestURI)
		p.reply(req, tx, 400, "Bad Request", sip.NewHeader("Warning", `399 sipd "digest uri does not match the Request-URI"`))
		return "", false
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
	p.challenge(req, tx, code, stale)
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
	flow.Path = p.pathFor(flow, src)
	res := p.reg.Register(req, aor, flow)
	if res.StatusCode == 200 && p.cfg.Flows != nil && sip.IsReliable(flow.Transport) {
		p.keepFlow(aor, flow, src)
	}
	p.replies.Add(1)
	if err := tx.Respond(res); err != nil {
		p.log.Debug("register reply failed", "error", err)
	}
}

// keepFlow tells Flows how long the connection a REGISTER came over must
// stay: until the last of the AoR's bindings over it expires.
func (p *Proxy) keepFlow(aor string, flow registrar.Flow, src netip.AddrPort) {
	var until time.Time
	list, _ := p.reg.Store().Lookup(aor) // just stored: a failure now keeps the flow as before
	for _, b := range list {
		if b.Received == flow.Received && b.Transport == flow.Transport && b.Expires.After(until) {
			until = b.Expires
		}
	}
	if !until.IsZero() {
		p.cfg.Flows.KeepFlow(flow.Transport, src, until)
	}
}

func (p *Proxy) lookup(req *sip.Request, tx sip.ServerTransaction, d Decision) {
	user := UserKey(req.Recipient.User)
	bindings, err := p.reg.Store().Lookup(user)
	if err != nil {
		// A shared store that cannot be reached: the callee may well be
		// registered, so no 404; the caller may try again soon.
		// The store logs Redis going away and coming back; the count
		// is sipxdp_sip_refused_total{reason="location_unavailable"}.
		p.refused.add(RefusedLocation)
		p.log.Debug("location lookup failed", "user", user, "error", err)
		p.reply(req, tx, 500, "Location Store Unavailable",
			sip.NewHeader("Retry-After", strconv.Itoa(int(registrar.RetryAfter/time.Second))))
		return
	}
	if len(bindings) == 0 {
		// The same answer whether the user exists or is not registered,
		// as Kamailio's: anything else tells a stranger which names exist.
		p.reply(req, tx, 404, "Not Found")
		return
	}
	targets := make([]target, 0, len(bindings))
	for _, b := range bindings {
		var u sip.Uri
		if err := sip.ParseUri(b.Contact, &u); err != nil {
			continue
		}
		if t, ok := p.pathTarget(b, u); ok {
			targets = append(targets, t)
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
			} else if isWebSocket(b.Transport) {
				// A WebSocket client (a browser) listens on nothing and
				// its Contact names a .invalid host (RFC 7118 §5): with
				// its connection gone it is unreachable, 480 below.
				continue
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

func isWebSocket(transport string) bool {
	return strings.EqualFold(transport, "WS") || strings.EqualFold(transport, "WSS")
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
