package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/sipd/media"
	"sipxdp/sipd/nat"
	"sipxdp/sipd/protect"
)

// Sentinel errors.
var (
	ErrNoListener = errors.New("no socket for the transport")
	ErrBadTarget  = errors.New("unusable target")
	ErrFlowGone   = errors.New("websocket connection gone")
	ErrStopped    = errors.New("proxy stopped")
)

// target is one destination of a forwarded request: the new Request-URI
// and, for a registered flow, the address and transport to send to.
type target struct {
	uri       sip.Uri
	dest      string // ip:port; empty: from Route or Request-URI
	transport string
	nated     bool // the registered binding is behind NAT
	// route is pushed as the Route of the request to it: the Path of a
	// binding another node stored (path.go); nil: none.
	route *sip.RouteHeader
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func uriTransport(u *sip.Uri) string {
	t := "UDP"
	if v, ok := u.UriParams.Get("transport"); ok && v != "" {
		t = strings.ToUpper(v)
	}
	if u.Scheme == "sips" && t != "TLS" {
		t = "TLS"
	}
	return t
}

func hostIP(host string) netip.Addr {
	a, _ := netip.ParseAddr(normHost(host))
	return a
}

// mediaRequest lets the media controller see a request about to be
// forwarded: it starts relaying an initial INVITE when the media mode says
// so, and follows SDP in in-dialog requests. ok false means the request was
// answered (503: the relay cannot take it) and must not be forwarded. A
// relayed call in setup from an unauthenticated caller is admitted under
// the setup caps first; *hold is its admission, to release at the final
// answer.
func (p *Proxy) mediaRequest(req *sip.Request, stx sip.ServerTransaction, d Decision, initial bool, targets []target, hold **protect.Hold) (relayed, ok bool) {
	m := p.cfg.Media
	if m == nil {
		return false, true
	}
	var err error
	switch {
	case initial:
		relays := m.Relays(req, p.natInvolved(req, targets))
		// The override is for this proxy; the next hop has no use for it.
		for req.RemoveHeader(media.OverrideHeader) {
		}
		if !relays {
			return false, true
		}
		h, admitted := p.admitSetup(req, stx, d)
		if !admitted {
			return false, false
		}
		transport := ""
		if len(targets) > 0 {
			transport = targets[0].transport
		}
		if err = m.Invite(req, p.firstHop(targets), transport); err == nil {
			*hold = h
			return true, true
		}
		h.Release()
	case d.InDialog:
		if err = m.Request(req); err == nil {
			return false, true
		}
	default:
		return false, true
	}
	callID := req.CallID().Value()
	if !errors.Is(err, media.ErrUnavailable) {
		// Bad SDP or an engine fault: refuse rather than let media bypass
		// the relay on a call that was meant to use it.
		p.log.Warn("media: cannot relay", "call_id", callID, "method", string(req.Method), "error", err)
		p.reply(req, stx, 488, "Not Acceptable Here", sip.NewHeader("Warning", `399 sipd "media relay refused the session description"`))
		return false, false
	}
	p.log.Warn("media: relay unavailable, refusing", "call_id", callID, "method", string(req.Method), "error", err)
	p.reply(req, stx, 503, "Service Unavailable",
		sip.NewHeader("Warning", `399 sipd "media relay unavailable"`),
		sip.NewHeader("Reason", `SIP;cause=503;text="media relay unavailable"`))
	return false, false
}

// firstHop is the address the first target's request goes to, when it is
// an IP address: the relay leg towards the callee is chosen by it until
// the callee's SDP is known.
func (p *Proxy) firstHop(targets []target) netip.Addr {
	if len(targets) == 0 {
		return netip.Addr{}
	}
	t := targets[0]
	if t.dest != "" {
		if ap, err := netip.ParseAddrPort(t.dest); err == nil {
			return ap.Addr()
		}
	}
	return hostIP(t.uri.Host)
}

// natInvolved tells whether the caller of req or any callee target is
// behind NAT, as media.mode nat needs.
func (p *Proxy) natInvolved(req *sip.Request, targets []target) bool {
	for _, t := range targets {
		if t.nated {
			return true
		}
	}
	src := srcAddr(req)
	if !src.IsValid() {
		return false
	}
	var contact *sip.ContactHeader
	if c, ok := req.GetHeader("Contact").(*sip.ContactHeader); ok {
		contact = c
	}
	return nat.Detect(src, req.Via(), contact, req.Transport()) != 0
}

// recordRoute is our Record-Route entry on l for a dialog whose caller
// tag is ftag, with the route token for it.
func (l Listener) recordRoute(ftag, token string) *sip.RecordRouteHeader {
	u := sip.Uri{Scheme: "sip", Host: l.host(), Port: int(l.Addr.Port()), UriParams: sip.NewParams()}
	u.UriParams.Add("transport", strings.ToLower(l.Transport))
	u.UriParams.Add("lr", "")
	u.UriParams.Add(paramFtag, escapeParam(ftag))
	u.UriParams.Add(paramToken, token)
	return &sip.RecordRouteHeader{Address: u}
}

// prepare builds the copy of req that goes to t: new Request-URI, one less
// Max-Forwards, our Via on top, Record-Route when asked, and the socket and
// destination to use.
func (p *Proxy) prepare(req *sip.Request, t target, rr bool, branch string) (*sip.Request, error) {
	if p.stopped.Load() {
		return nil, ErrStopped
	}
	out := req.Clone()
	out.Recipient = *t.uri.Clone()
	next := &out.Recipient
	if r := out.Route(); r != nil {
		next = &r.Address
	}
	transport, dest := t.transport, t.dest
	if dest == "" {
		transport = uriTransport(next)
		port := next.Port
		if port == 0 {
			port = sip.DefaultPort(transport)
		}
		if next.Host == "" {
			return nil, fmt.Errorf("next hop %q: %w", next.String(), ErrBadTarget)
		}
		dest = net.JoinHostPort(normHost(next.Host), strconv.Itoa(port))
	}
	host, _, err := net.SplitHostPort(dest)
	if err != nil {
		return nil, fmt.Errorf("destination %q: %w", dest, ErrBadTarget)
	}
	l, ok := p.self.Listener(transport, hostIP(host))
	if !ok {
		return nil, fmt.Errorf("%s: %w", transport, ErrNoListener)
	}
	if isWebSocket(transport) && !p.flowAlive(transport, dest) {
		// A WebSocket client is reached only over the connection it
		// opened; sipgo would dial it, and a browser behind NAT never
		// answers (RFC 7118 §5).
		return nil, fmt.Errorf("%s %s: %w", transport, dest, ErrFlowGone)
	}
	if t.route != nil {
		out.PrependHeader(t.route.Clone())
	}
	out.SetTransport(transport)
	out.SetDestination(dest)
	out.SetSource("")
	if transport == "UDP" {
		// Send from the listening socket, so replies and NATs see the port
		// that is in our Via.
		out.Laddr = sip.Addr{IP: l.Addr.Addr().AsSlice(), Port: int(l.Addr.Port())}
	} else {
		out.Laddr = sip.Addr{}
	}
	// The parsed header is shared between clones; replace, never modify.
	out.RemoveHeader("Max-Forwards")
	mf := sip.MaxForwardsHeader(maxForwards(req) - 1)
	out.AppendHeader(&mf)
	if rr {
		in, ok := p.self.Listener(req.Transport(), srcAddr(req).Addr())
		if !ok {
			in = l
		}
		ftag := req.From().Params.GetOr("tag", "")
		token := p.routes.sign(req.CallID().Value(), ftag)
		// Two entries when the sides differ in transport or socket, so
		// each side's in-dialog requests reach us over its own transport.
		out.PrependHeader(in.recordRoute(ftag, token))
		if in != l {
			out.PrependHeader(l.recordRoute(ftag, token))
		}
	}
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: transport,
		Host: l.host(), Port: int(l.Addr.Port()), Params: sip.NewParams()}
	via.Params.Add("branch", branch)
	via.Params.Add("rport", "")
	out.PrependHeader(via)
	return out, nil
}

// fixRequestContact rewrites the Contact of a dialog-forming request from
// a UA behind NAT, so in-dialog requests towards it reach its public flow.
// A request another proxy passed on (a Via below the sender's) is left
// alone: the UA is that proxy's to fix, for the flow it holds, as an
// answer relayed by a proxy downstream is (throughProxy). Pointing the
// Contact at the proxy would make it the Request-URI of in-dialog
// requests, which that proxy, after popping its Route, sends to itself.
func (p *Proxy) fixRequestContact(req, out *sip.Request) {
	if !p.cfg.FixContact || len(req.GetHeaders("Via")) > 1 {
		return
	}
	c, ok := out.GetHeader("Contact").(*sip.ContactHeader)
	if !ok {
		return
	}
	src := srcAddr(req)
	if !src.IsValid() || nat.Detect(src, req.Via(), c, req.Transport()) == 0 {
		return
	}
	c = c.Clone()
	nat.FixContact(c, src)
	if t := req.Transport(); !strings.EqualFold(t, "udp") {
		flowTransport(c, t)
	}
	out.ReplaceHeader(c)
}

// flowTransport makes the transport parameter of a Contact that now
// points at a flow name the flow's own transport, replacing what the UA
// wrote: JsSIP writes transport=ws on wss too, and a request sent by that
// would look for a ws connection that does not exist.
func flowTransport(c *sip.ContactHeader, transport string) {
	if c.Address.UriParams == nil {
		c.Address.UriParams = sip.NewParams()
	}
	c.Address.UriParams.Add("transport", strings.ToLower(transport))
}

type event struct {
	branch int
	res    *sip.Response
	err    error
}

type branch struct {
	out         *sip.Request
	tx          *sip.ClientTx
	provisional bool
	cancel      bool // CANCEL wanted: send it once a provisional arrives
	cancelSent  bool
	done        bool
}

// forward relays req to the targets, in parallel, and answers the server
// transaction with the best final response (RFC 3261 §16.7).
func (p *Proxy) forward(req *sip.Request, stx sip.ServerTransaction, d Decision, targets []target) {
	invite := req.IsInvite()
	hash := loopHash(req)
	callID, fromTag, toTag := req.CallID().Value(), req.From().Params.GetOr("tag", ""), req.To().Params.GetOr("tag", "")
	initialInvite := invite && !d.InDialog
	if invite {
		if err := stx.Respond(sip.NewResponseFromRequest(req, 100, "Trying", nil)); err != nil {
			return
		}
	}
	canceled := make(chan struct{}, 1)
	if invite {
		if !stx.OnCancel(func(*sip.Request) {
			select {
			case canceled <- struct{}{}:
			default:
			}
		}) {
			return // canceled already; the transaction answered 487
		}
	}
	var setup *protect.Hold
	relayed, ok := p.mediaRequest(req, stx, d, initialInvite, targets, &setup)
	if !ok {
		return
	}
	defer setup.Release()
	if initialInvite && p.dialogs != nil {
		p.dialogs.Invite(callID, fromTag, req.From().Address.String(), req.To().Address.String())
	}

	finished := make(chan struct{})
	defer close(finished)
	events := make(chan event, 4*len(targets)+4)
	var branches []*branch
	var best *sip.Response
	wsGone := false
	for _, t := range targets {
		out, err := p.prepare(req, t, d.RecordRoute, branchMagic+hash+"."+randHex(6))
		if err != nil {
			p.log.Debug("cannot forward", "to", t.uri.String(), "error", err)
			if errors.Is(err, ErrFlowGone) {
				wsGone = true
			}
			continue
		}
		if initialInvite || req.Method == sip.SUBSCRIBE {
			p.fixRequestContact(req, out)
		}
		// The context bounds connecting (a TCP dial), not the transaction.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ctxTx, err := p.ua.TransactionLayer().Request(ctx, out)
		cancel()
		if err != nil {
			p.log.Debug("send failed", "to", out.Destination(), "error", err)
			continue
		}
		p.forwarded.Add(1)
		b := &branch{out: out, tx: ctxTx}
		branches = append(branches, b)
		idx := len(branches) - 1
		if invite {
			// 2xx retransmissions (RFC 6026) go upstream as they come.
			ctxTx.OnRetransmission(func(r *sip.Response) {
				if r.IsSuccess() {
					p.relayStateless(req, r)
				}
			})
		}
		go func() {
			for {
				select {
				case r := <-ctxTx.Responses():
					select {
					case events <- event{branch: idx, res: r}:
					case <-finished:
						return
					}
					if r.StatusCode >= 200 {
						return
					}
				case <-ctxTx.Done():
					select {
					case events <- event{branch: idx, err: ctxTx.Err()}:
					case <-finished:
					}
					return
				}
			}
		}()
	}
	if len(branches) == 0 {
		code, reason := 503, "Service Unavailable"
		if wsGone {
			code, reason = 480, "Temporarily Unavailable"
		}
		p.reply(req, stx, code, reason)
		p.finalDialog(initialInvite, callID, fromTag, "", code, nil)
		if relayed {
			p.cfg.Media.End(callID, "not forwarded")
		}
		return
	}

	var timerC <-chan time.Time
	if invite {
		t := time.NewTimer(p.cfg.InviteTimeout)
		defer t.Stop()
		timerC = t.C
	}
	cancelAll := func() {
		for _, b := range branches {
			if b.done || b.cancel {
				continue
			}
			b.cancel = true
			if b.provisional {
				p.sendCancel(b)
			}
		}
	}
	pending := len(branches)
	answered, gaveUp := false, false
	// The caller's transaction can end under us (its connection closed):
	// then nobody waits for an answer and ringing phones are cancelled.
	upstreamGone := stx.Done()
	for pending > 0 {
		select {
		case <-upstreamGone:
			upstreamGone = nil
			gaveUp = true
			cancelAll()
		case e := <-events:
			b := branches[e.branch]
			if b.done {
				continue
			}
			if e.res == nil {
				b.done = true
				pending--
				code, reason := 408, "Request Timeout"
				if !errors.Is(e.err, sip.ErrTransactionTimeout) {
					code, reason = 503, "Service Unavailable"
				}
				if better(code, best) {
					best = sip.NewResponseFromRequest(req, code, reason, nil)
				}
				continue
			}
			r := e.res
			if r.StatusCode < 200 {
				b.provisional = true
				if b.cancel && !b.cancelSent {
					p.sendCancel(b)
				}
				if r.StatusCode > 100 && !answered && !gaveUp {
					// The caller may use the early dialog as soon as it hears.
					p.seenDialog(initialInvite, callID, fromTag, r)
					p.relay(req, stx, r)
				}
				continue
			}
			b.done = true
			pending--
			switch {
			case r.IsSuccess():
				if answered {
					// Another fork answered too: a dialog of its own, which
					// the caller will ACK and BYE through us.
					p.seenDialog(initialInvite, callID, fromTag, r)
					p.relayStateless(req, r) // every 2xx goes upstream (§16.7 item 4)
					continue
				}
				answered = true
				setup.Release() // no longer in setup
				// The answer's SDP goes through the relay first, so the call
				// state below holds the media as the caller will hear of it.
				out := p.upstream(req, r)
				// Call state first, on disk with what the relay needs to
				// resume the call after a restart: the caller may look (or
				// send a BYE) as soon as it hears.
				p.finalDialog(initialInvite, callID, fromTag, r.To().Params.GetOr("tag", ""), r.StatusCode, p.mediaState(initialInvite, callID))
				switch {
				case req.Method == sip.BYE && p.dialogs != nil:
					p.dialogs.End(callID, fromTag, toTag, "bye")
				case !initialInvite && (req.Method == sip.INVITE || req.Method == sip.UPDATE) && p.dialogs != nil:
					// A re-INVITE or UPDATE may have moved the media.
					if st := p.mediaState(true, callID); st != nil {
						p.dialogs.SetMedia(callID, fromTag, toTag, st)
					}
				}
				p.relayBuilt(req, stx, r, out)
				cancelAll()
			case answered:
			case r.StatusCode >= 600:
				best = r
				cancelAll()
			case better(r.StatusCode, best):
				best = r
			}
		case <-canceled:
			gaveUp = true
			cancelAll()
		case <-timerC:
			gaveUp = true
			if best == nil {
				best = sip.NewResponseFromRequest(req, 408, "Request Timeout", nil)
			}
			cancelAll()
		}
	}
	if answered {
		return
	}
	if best == nil {
		best = sip.NewResponseFromRequest(req, 500, "Server Internal Error", nil)
	}
	if req.Method == sip.BYE && p.dialogs != nil {
		p.dialogs.End(callID, fromTag, toTag, "bye")
	}
	p.finalDialog(initialInvite, callID, fromTag, "", best.StatusCode, nil)
	if relayed {
		// CANCEL, a failure, or no answer in time: the call never started.
		p.cfg.Media.End(callID, "failed")
	}
	if isDownstream(best) {
		p.relay(req, stx, best)
		return
	}
	p.reply(req, stx, best.StatusCode, best.Reason)
}

// isDownstream tells a response received from a branch from one we built.
func isDownstream(res *sip.Response) bool {
	v := res.Via()
	return v != nil && strings.HasPrefix(v.Params.GetOr("branch", ""), branchMagic)
}

// seenDialog notes the callee-side tag of a response to the initial
// INVITE, so requests in that dialog are recognised as the call's.
func (p *Proxy) seenDialog(initial bool, callID, fromTag string, r *sip.Response) {
	if initial && p.dialogs != nil {
		p.dialogs.Seen(callID, fromTag, r.To().Params.GetOr("tag", ""))
	}
}

func (p *Proxy) finalDialog(initial bool, callID, fromTag, toTag string, code int, media []byte) {
	if initial && p.dialogs != nil {
		p.dialogs.Final(callID, fromTag, toTag, code, media)
	}
}

// mediaState is the relay's state of a relayed call, kept with its dialog
// so a restarted sipd can resume relaying it; nil when the call is not
// relayed (or want is false).
func (p *Proxy) mediaState(want bool, callID string) []byte {
	if !want || p.cfg.Media == nil {
		return nil
	}
	st, ok := p.cfg.Media.State(callID)
	if !ok {
		return nil
	}
	return st
}

// better ranks final responses as §16.7 item 6 says, simplified: the
// lowest class wins, 6xx aside (handled by the caller).
func better(code int, cur *sip.Response) bool {
	if cur == nil {
		return true
	}
	return code/100 < cur.StatusCode/100
}

// throughProxy reports an answer that a record-routing proxy downstream
// relayed (its Record-Route is on top, above ours): the callee's Contact
// is that proxy's to fix, for the flow it holds, as a node reached
// through a Path (path.go) does. Straight from the callee, ours is on top.
func (p *Proxy) throughProxy(r *sip.Response) bool {
	rr, ok := r.GetHeader("Record-Route").(*sip.RecordRouteHeader)
	return ok && !p.self.IsSelf(&rr.Address)
}

// upstream builds the copy of a downstream response that goes back to the
// sender of req: our Via removed, and the Contact of a NATed callee fixed.
func (p *Proxy) upstream(req *sip.Request, r *sip.Response) *sip.Response {
	out := r.Clone()
	out.RemoveHeader("Via")
	if r.StatusCode == 503 {
		// §16.7 item 6: a 503 from downstream means that server is busy, not
		// us; tell the client to try elsewhere instead.
		out.StatusCode, out.Reason = 500, "Server Internal Error"
	}
	if p.cfg.FixContact && req.IsInvite() && r.StatusCode < 300 && !p.throughProxy(r) {
		if c, ok := out.GetHeader("Contact").(*sip.ContactHeader); ok {
			src := srcAddr(r)
			// A private Contact cannot be reached; a Contact on a stream
			// other than the one the answer came on may not be either (a
			// phone's connection from an ephemeral port): use the flow.
			reliable := sip.IsReliable(r.Transport())
			if src.IsValid() && (nat.Detect(src, nil, c, r.Transport())&nat.ContactPrivate != 0 ||
				reliable && !sameHostPort(&c.Address, src, r.Transport())) {
				c = c.Clone()
				nat.FixContact(c, src)
				if reliable {
					flowTransport(c, r.Transport())
				}
				out.ReplaceHeader(c)
			}
		}
	}
	if p.cfg.Media != nil {
		p.cfg.Media.Response(out)
	}
	out.SetTransport(req.Transport())
	out.SetDestination(req.Source())
	return out
}

func (p *Proxy) relay(req *sip.Request, stx sip.ServerTransaction, r *sip.Response) {
	p.relayBuilt(req, stx, r, p.upstream(req, r))
}

// relayBuilt relays out, the upstream copy of r.
func (p *Proxy) relayBuilt(req *sip.Request, stx sip.ServerTransaction, r, out *sip.Response) {
	if err := stx.Respond(out); err != nil {
		if r.IsSuccess() {
			// A 2xx that lost the race with a CANCEL still has to reach the
			// caller, who must ACK and then BYE it (RFC 3261 §16.7).
			p.relayStateless(req, r)
			return
		}
		p.log.Debug("relay response failed", "code", r.StatusCode, "error", err)
	}
}

// relayStateless sends a response upstream outside the server
// transaction: extra 2xx from forks and 2xx retransmissions.
func (p *Proxy) relayStateless(req *sip.Request, r *sip.Response) {
	if p.stopped.Load() {
		return
	}
	p.strays.Add(1)
	if err := p.writeResponse(p.upstream(req, r)); err != nil {
		p.log.Debug("stateless relay failed", "code", r.StatusCode, "error", err)
	}
}

// writeResponse sends a response outside any transaction. Over UDP it goes
// out of our listening socket explicitly: the transport layer would look
// the peer up among addresses it has read from, and a peer heard from only
// on the fast path, or before a restart, is not there.
func (p *Proxy) writeResponse(r *sip.Response) error {
	tp := p.ua.TransportLayer()
	if !strings.EqualFold(r.Transport(), "UDP") {
		return tp.WriteMsg(r)
	}
	dst, err := netip.ParseAddrPort(r.Destination())
	if err != nil {
		return fmt.Errorf("response destination %q: %w", r.Destination(), ErrBadTarget)
	}
	l, ok := p.self.Listener("UDP", dst.Addr())
	if !ok {
		return fmt.Errorf("udp: %w", ErrNoListener)
	}
	conn, err := tp.GetConnection("udp", l.Addr.String())
	if err != nil {
		return fmt.Errorf("udp listener %s: %w", l.Addr, err)
	}
	defer conn.TryClose()
	return conn.WriteMsg(r)
}

// sendCancel cancels one branch (RFC 3261 §9.1): same Request-URI, Via,
// Call-ID, From, To and CSeq number as the INVITE it cancels.
func (p *Proxy) sendCancel(b *branch) {
	b.cancelSent = true
	if p.stopped.Load() {
		return
	}
	o := b.out
	c := sip.NewRequest(sip.CANCEL, *o.Recipient.Clone())
	c.AppendHeader(o.Via().Clone())
	for _, h := range o.GetHeaders("Route") {
		c.AppendHeader(sip.HeaderClone(h))
	}
	c.AppendHeader(sip.HeaderClone(o.From()))
	c.AppendHeader(sip.HeaderClone(o.To()))
	c.AppendHeader(sip.HeaderClone(o.CallID()))
	c.AppendHeader(&sip.CSeqHeader{SeqNo: o.CSeq().SeqNo, MethodName: sip.CANCEL})
	mf := sip.MaxForwardsHeader(70)
	c.AppendHeader(&mf)
	c.SetBody(nil)
	c.SetTransport(o.Transport())
	c.SetDestination(o.Destination())
	c.Laddr = o.Laddr
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tx, err := p.ua.TransactionLayer().Request(ctx, c)
	if err != nil {
		p.log.Debug("cancel failed", "error", err)
		return
	}
	go func() {
		for {
			select {
			case <-tx.Responses():
			case <-tx.Done():
				return
			}
		}
	}()
}

// forwardAck relays an ACK for a 2xx statelessly: it has no transaction.
func (p *Proxy) forwardAck(req *sip.Request) {
	// The branch must be the same for a retransmitted ACK; derive it.
	b := branchMagic + loopHash(req) + "." + req.Via().Params.GetOr("branch", "")
	if len(b) > 64 {
		b = b[:64]
	}
	out, err := p.prepare(req, target{uri: req.Recipient}, false, b)
	if err != nil {
		p.log.Debug("cannot forward ACK", "error", err)
		return
	}
	p.forwarded.Add(1)
	if err := p.ua.TransportLayer().WriteMsg(out); err != nil {
		p.log.Debug("ACK send failed", "to", out.Destination(), "error", err)
	}
}

// HandleStrayResponse forwards responses that match no client transaction
// statelessly, if our Via is on top. Only a 2xx to an INVITE has a reason
// to outlive its transaction (the callee retransmits it until the ACK);
// anything else is dropped, so nobody can bounce responses off us.
func (p *Proxy) HandleStrayResponse(r *sip.Response) {
	v := r.Via()
	if p.stopped.Load() || v == nil || !strings.HasPrefix(v.Params.GetOr("branch", ""), branchMagic) ||
		!r.IsSuccess() || r.CSeq() == nil || r.CSeq().MethodName != sip.INVITE {
		return
	}
	sentBy := sip.Uri{Host: v.Host, Port: v.Port}
	if !p.self.IsSelf(&sentBy) {
		return
	}
	out := r.Clone()
	out.RemoveHeader("Via")
	if p.cfg.Media != nil {
		p.cfg.Media.Response(out)
	}
	next := out.Via()
	if next == nil {
		return
	}
	out.SetTransport(next.Transport)
	out.SetDestination("")
	out.SetDestination(out.Destination())
	p.strays.Add(1)
	if err := p.writeResponse(out); err != nil {
		p.log.Debug("stray relay failed", "error", err)
	}
}

func sameHostPort(u *sip.Uri, a netip.AddrPort, transport string) bool {
	port := u.Port
	if port == 0 {
		port = sip.DefaultPort(transport)
	}
	return hostIP(u.Host).Unmap() == a.Addr().Unmap() && port == int(a.Port())
}
