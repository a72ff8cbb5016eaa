package proxy

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Action is what the core does with a request.
type Action int

// Actions.
const (
	ActReply     Action = iota // answer with Code/Reason
	ActDrop                    // no answer possible or wanted (stray ACK)
	ActKeepalive               // stateless 200 OK: a NAT keep-alive to us
	ActRegister                // the registrar
	ActLookup                  // a call to a local user: location lookup
	ActForward                 // next hop from Route or Request-URI
	ActFlow                    // to a phone over its flow, for a node that found our Path
)

func (a Action) String() string {
	return [...]string{"reply", "drop", "keepalive", "register", "lookup", "forward", "flow"}[a]
}

// Decision is the routing verdict for one request.
type Decision struct {
	Action      Action
	Code        int
	Reason      string
	Challenge   int  // 401 or 407: authenticate before acting; 0: no
	RecordRoute bool // insert Record-Route (dialog-forming requests)
	OwnRoutes   int  // Route entries at the top that point at us: remove
	InDialog    bool

	// Authenticated is set by HandleRequest once the request's
	// credentials verified (Decide leaves it false).
	Authenticated bool
	// Refusal names why the request is refused or absorbed, for the
	// refusal counters (a Refusal constant); empty for ordinary answers.
	Refusal string
	// FlowTransport and FlowDest are the phone's flow named by the flow
	// token of our Path, for ActFlow.
	FlowTransport, FlowDest string
}

// Refusals counted by reason (sipxdp_sip_refused_total).
const (
	RefusedTokenMissing = "route_token_missing" // in-dialog request without a route token of ours
	RefusedTokenInvalid = "route_token_invalid" // a route token, not for this request
	RefusedDialog       = "dialog_mismatch"     // 481: no such dialog or transaction here
	RefusedForeignRoute = "foreign_route"       // unauthenticated initial request routed elsewhere
	RefusedDigestURI    = "digest_uri_mismatch" // credentials for another Request-URI
	RefusedStrayACK     = "stray_ack"           // ACK that belongs to nothing we route, absorbed
	// RefusedLocation: 500, the shared location store (Redis) could not
	// be read for the callee's bindings.
	RefusedLocation = "location_unavailable"
)

// branchMagic marks branches this proxy generated; the loop hash follows.
const branchMagic = sip.RFC3261BranchMagicCookie + "sx"

// loopHash identifies a request as RFC 3261 §16.6 item 8 suggests: if the
// same request comes back through us with the same hash, it is a loop; a
// different hash (the Request-URI changed) is a legitimate spiral.
func loopHash(req *sip.Request) string {
	h := sha256.New()
	h.Write([]byte(req.Recipient.String()))
	if c := req.CallID(); c != nil {
		h.Write([]byte(c.Value()))
	}
	if f := req.From(); f != nil {
		h.Write([]byte(f.Params.GetOr("tag", "")))
	}
	if t := req.To(); t != nil {
		h.Write([]byte(t.Params.GetOr("tag", "")))
	}
	if c := req.CSeq(); c != nil {
		h.Write([]byte(strconv.FormatUint(uint64(c.SeqNo), 10)))
	}
	for _, r := range req.GetHeaders("Route") {
		h.Write([]byte(r.Value()))
	}
	return hex.EncodeToString(h.Sum(nil)[:4])
}

// maxForwards reads Max-Forwards; absent means the RFC's 70.
func maxForwards(req *sip.Request) int {
	h := req.GetHeader("Max-Forwards")
	if h == nil {
		return 70
	}
	n, err := strconv.Atoi(strings.TrimSpace(h.Value()))
	if err != nil {
		return 0
	}
	return n
}

func (p *Proxy) looped(req *sip.Request) bool {
	var hash string
	for _, h := range req.GetHeaders("Via") {
		v, ok := h.(*sip.ViaHeader)
		if !ok {
			continue
		}
		b := v.Params.GetOr("branch", "")
		if !strings.HasPrefix(b, branchMagic) {
			continue
		}
		sentBy := sip.Uri{Host: v.Host, Port: v.Port}
		if !p.self.IsSelf(&sentBy) {
			continue
		}
		if hash == "" {
			hash = loopHash(req)
		}
		if strings.HasPrefix(b[len(branchMagic):], hash) {
			return true
		}
	}
	return false
}

// IsKeepalive reports a NAT keep-alive: OPTIONS or NOTIFY addressed to the
// proxy itself rather than to a user.
func IsKeepalive(req *sip.Request, self *Self) bool {
	return (req.Method == sip.OPTIONS || req.Method == sip.NOTIFY) &&
		req.Recipient.User == "" && self.IsSelf(&req.Recipient)
}

// Decide routes a request that passed the sanity check. It looks at the
// message and the proxy's configuration only, not at the location or user
// databases, so it is a pure function of its input.
func (p *Proxy) Decide(req *sip.Request) Decision {
	if maxForwards(req) <= 0 {
		if IsKeepalive(req, p.self) {
			return Decision{Action: ActKeepalive}
		}
		return Decision{Action: ActReply, Code: 483, Reason: "Too Many Hops"}
	}
	if p.looped(req) {
		return Decision{Action: ActReply, Code: 482, Reason: "Loop Detected"}
	}
	if req.Method == sip.CANCEL {
		// A CANCEL that matched a transaction never gets here.
		return Decision{Action: ActReply, Code: 481, Reason: "Call/Transaction Does Not Exist", Refusal: RefusedDialog}
	}
	routes := req.GetHeaders("Route")
	toTag, inDialog := req.To().Params.Get("tag")
	own := p.ownRoutes(req, routes, inDialog, toTag)
	more := len(routes) > own
	if inDialog {
		return p.decideInDialog(req, routes, own, toTag)
	}
	if own == 1 && !more && req.Method != sip.ACK && req.Method != sip.REGISTER {
		// Our Path, from a node that found a binding of ours in the
		// shared location table: its token names the phone's flow, and
		// that node has authenticated the caller as it would its own.
		if r, ok := routes[0].(*sip.RouteHeader); ok && r.Address.User != "" {
			if tr, dest, ok := p.routes.verifyFlow(r.Address.User); ok {
				return Decision{Action: ActFlow, OwnRoutes: own, RecordRoute: true, FlowTransport: tr, FlowDest: dest}
			}
		}
	}
	if req.Method == sip.ACK {
		// An ACK without a To tag acknowledges a non-2xx final answer,
		// which its INVITE's transaction absorbs; this one matched none.
		return Decision{Action: ActDrop, Refusal: RefusedStrayACK}
	}
	challenge := 0
	if p.cfg.AuthInvite && req.Method != sip.REGISTER && req.Method != sip.PRACK && p.self.LocalDomain(req.From().Address.Host) {
		challenge = 407
	}
	if more {
		// A pre-loaded route (RFC 3261 §16.4) beyond us: followed only for
		// our own users, who authenticate first, whatever allow_relay
		// says; otherwise anyone could bounce calls off us to a gateway
		// that trusts our address.
		if challenge == 0 {
			return Decision{Action: ActReply, Code: 403, Reason: "Relaying Forbidden", Refusal: RefusedForeignRoute}
		}
		return Decision{Action: ActForward, OwnRoutes: own, Challenge: challenge, RecordRoute: true}
	}
	if req.Method == sip.REGISTER {
		if p.self.IsSelf(&req.Recipient) || p.self.LocalDomain(req.Recipient.Host) {
			c := 0
			if p.cfg.AuthRegister {
				c = 401
			}
			return Decision{Action: ActRegister, Challenge: c, OwnRoutes: own}
		}
		if !p.cfg.AllowRelay {
			return Decision{Action: ActReply, Code: 403, Reason: "Relaying Forbidden"}
		}
		return Decision{Action: ActForward, OwnRoutes: own}
	}
	if IsKeepalive(req, p.self) {
		return Decision{Action: ActKeepalive, OwnRoutes: own}
	}
	if p.self.LocalDomain(req.Recipient.Host) || p.self.IsSelf(&req.Recipient) {
		if req.Recipient.User == "" {
			return Decision{Action: ActReply, Code: 404, Reason: "Not Found"}
		}
		return Decision{Action: ActLookup, OwnRoutes: own, Challenge: challenge, RecordRoute: true}
	}
	if !p.cfg.AllowRelay {
		return Decision{Action: ActReply, Code: 403, Reason: "Relaying Forbidden"}
	}
	return Decision{Action: ActForward, OwnRoutes: own, Challenge: challenge, RecordRoute: true}
}

// ownRoutes counts the Route entries at the top that are ours, to be
// removed: those naming this node, and with PeerRoutes, in a dialog,
// those of another node sharing the route key (one that failed, whose
// requests a load balancer, DNS or the phone now sends here) whose token
// fits the request. A peer's entry below one of ours that carries a
// token is not ours: the dialog goes through both nodes (a Path), and
// the request is on its way to that node.
func (p *Proxy) ownRoutes(req *sip.Request, routes []sip.Header, inDialog bool, toTag string) int {
	own, ourToken := 0, false
	for _, h := range routes {
		r, ok := h.(*sip.RouteHeader)
		if !ok {
			break
		}
		if p.self.IsSelf(&r.Address) {
			own++
			if _, ok := uriParam(&r.Address, paramToken); ok {
				ourToken = true
			}
			continue
		}
		if !p.cfg.PeerRoutes || !inDialog || ourToken ||
			!p.routes.fits(&r.Address, req.CallID().Value(), req.From().Params.GetOr("tag", ""), toTag) {
			break
		}
		own++
	}
	return own
}

// decideInDialog routes a request that carries a To tag. Only the route
// set sipd recorded leads anywhere: its topmost entries must be ours, with
// a token for this Call-ID and one of the request's tags. Nothing else is
// forwarded, whatever its Route or Request-URI names, since an in-dialog
// request is never challenged.
func (p *Proxy) decideInDialog(req *sip.Request, routes []sip.Header, own int, toTag string) Decision {
	ack := req.Method == sip.ACK
	if len(routes) == 0 {
		switch {
		case IsKeepalive(req, p.self):
			return Decision{Action: ActKeepalive, InDialog: true}
		case ack:
			return Decision{Action: ActDrop, InDialog: true, Refusal: RefusedStrayACK}
		case p.self.IsSelf(&req.Recipient):
			// Addressed to us, and we hold no dialogs as a UA.
			return Decision{Action: ActReply, Code: 481, Reason: "Call/Transaction Does Not Exist", InDialog: true, Refusal: RefusedDialog}
		}
	}
	v := tokenMissing
	if own > 0 {
		v = p.routes.checkRoute(routes, own, req.CallID().Value(), req.From().Params.GetOr("tag", ""), toTag)
	}
	switch {
	case v == tokenValid:
		return Decision{Action: ActForward, OwnRoutes: own, InDialog: true}
	case ack:
		// A stray or forged ACK gets no answer.
		return Decision{Action: ActDrop, InDialog: true, Refusal: RefusedStrayACK}
	case v == tokenInvalid:
		return Decision{Action: ActReply, Code: 403, Reason: "Forbidden: Bad Route Token", InDialog: true, Refusal: RefusedTokenInvalid}
	}
	return Decision{Action: ActReply, Code: 403, Reason: "Forbidden: Not Routed Here", InDialog: true, Refusal: RefusedTokenMissing}
}
