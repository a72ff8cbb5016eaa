// Package media joins SIP signaling to the relay engine: it decides which
// calls are relayed (media.mode), follows each call's offer/answer exchange
// (RFC 3264) through INVITE, provisional and final responses, ACK, UPDATE
// and re-INVITE, tells the engine where each side's media is, and rewrites
// the SDP each side receives so that it points at the relay.
//
// The proxy calls the Controller at a few hook points and never looks at
// SDP itself. The engine is reached through the small Engine interface so
// the controller can be tested with a fake.
package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/relay"
	"sipxdp/sipd/sdprewrite"
)

// Media modes, as in the config file.
const (
	ModeNone = "none"
	ModeAll  = "all"
	ModeNAT  = "nat"
)

// Engine is what the controller needs from relay.Engine.
type Engine interface {
	CreateSession(callID string) error
	AddStream(callID string, index int, a, b relay.LegSpec) (relay.StreamPorts, error)
	SetPeer(callID string, index int, side relay.Side, rtp, rtcp netip.AddrPort, rtcpMux bool) error
	SetSignal(callID string, side relay.Side, addr netip.Addr) error
	RestoreStream(callID string, index int, legs [2]relay.RestoreLeg, since time.Time) error
	RemoveStream(callID string, index int) error
	DeleteSession(callID string) (relay.SessionInfo, error)
	// SetSecurity and CertificateDER serve calls the relay bridges to
	// WebRTC or SRTP (webrtc.go).
	SetSecurity(callID string, index int, side relay.Side, sec relay.LegSecurity) error
	CertificateDER() []byte
	// SetSideOptions, SetTOS and SetDrop carry per-call options of the NG
	// flags (options.go).
	SetSideOptions(callID string, side relay.Side, o relay.SideOptions) error
	SetTOS(callID string, tos relay.TOS) error
	SetDrop(callID string, drop bool) error
}

// ErrUnavailable wraps every error that should make the proxy refuse a
// call with 503 rather than forward it with unrelayed media: the relay is
// draining or out of ports.
var ErrUnavailable = errors.New("media relay unavailable")

// OverrideHeader, when present on an initial INVITE, overrides the
// configured mode for that call: "relay" or "none" (a per-call switch for
// operators and tests; any other value is ignored).
const OverrideHeader = "X-Sipd-Media"

// Config of a Controller.
type Config struct {
	Mode   string // ModeAll or ModeNAT; ModeNone makes a controller that relays nothing
	Engine Engine
	Log    *slog.Logger
	// Address names the relay address (relay.AddressConfig.Name) for both
	// legs; empty picks the first of the right family. Ignored when Pick
	// is set.
	Address string
	// Pick chooses the relay address of the leg that faces peer (a media
	// or, failing that, signaling address), for a relay with several
	// interfaces. Nil: Address, in peer's family.
	Pick func(peer netip.Addr) relay.LegSpec
	// Interfaces are the relay's addresses (their Name and Local are
	// read), so Options.Direction can name them; without them every name
	// is unknown.
	Interfaces []relay.AddressConfig
	// Domain, when set, names the interface (or "") that faces a side of
	// a SIP call by its domain: the caller's From host, the callee's To
	// host. It wins over Pick; an NG direction wins over both.
	Domain func(host string) string
	// MaxBranches bounds the branches of one forked call (fork.go); 0 is
	// DefaultMaxBranches.
	MaxBranches int
	// Ended, when set, is told of every call whose relaying ended (a
	// whole call, not one fork branch), for the statistics of ended
	// calls. It is called with the controller's lock held and must be
	// quick.
	Ended EndRecorder
}

// CallEnd is a call whose relaying ended: why, whether it was ever
// answered, how long it lasted and its streams' final counters.
type CallEnd struct {
	CallID         string
	Reason         string // as given to End, Delete or the engine's event
	Answered       bool   // a 2xx or an NG answer locked a branch
	Created, Ended time.Time
	Streams        []relay.StreamInfo // from the engine's DeleteSession
}

// Reasons a call ends with that an EndRecorder tells apart (besides
// relay.ReasonMediaTimeout, relay.ReasonLegFailed and relayrepl's).
const (
	ReasonBye         = "bye"          // the SIP dialog ended
	ReasonNGDelete    = "ng delete"    // an NG delete; a delayed one adds " (delete-delay)"
	ReasonSetupFailed = "setup failed" // the offer was never set up
)

// EndRecorder is told of ended calls (Config.Ended).
type EndRecorder interface {
	CallEnded(CallEnd)
}

// Controller holds the offer/answer state of every relayed call.
type Controller struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	calls map[string]*call

	onTimeout func(Ended)
}

// Ended describes a call the controller ended by itself (media timeout),
// so the proxy can close the dialog.
type Ended struct {
	CallID    string
	CallerTag string
	CalleeTag string // the answering side's tag
	Reason    string
	Dialog    Dialog
}

// Dialog is what the controller saw of the dialog's signaling, enough to
// build an in-dialog BYE towards each side. The messages are trimmed to
// the headers a BYE needs (dialogHeaders) plus source and transport: they
// are kept for the whole call, and a full INVITE and 2xx with their SDP
// would be most of a relayed call's memory.
type Dialog struct {
	Invite *sip.Request  // initial INVITE as received from the caller
	OK     *sip.Response // 2xx as received from the callee (nil: not answered)
}

// dialogHeaders are the headers Dialog keeps: the dialog's identity, the
// remote targets and the route set.
var dialogHeaders = []string{"From", "To", "Call-ID", "CSeq", "Contact", "Record-Route"}

func copyDialogHeaders(dst interface{ AppendHeader(sip.Header) }, src interface{ GetHeaders(string) []sip.Header }) {
	for _, name := range dialogHeaders {
		for _, h := range src.GetHeaders(name) {
			dst.AppendHeader(sip.HeaderClone(h))
		}
	}
}

// slimRequest copies what Dialog needs of an INVITE, without its body.
func slimRequest(r *sip.Request) *sip.Request {
	out := sip.NewRequest(r.Method, r.Recipient)
	copyDialogHeaders(out, r)
	out.SetTransport(r.Transport())
	out.SetSource(r.Source())
	return out
}

// slimResponse copies what Dialog needs of a 2xx, without its body.
func slimResponse(r *sip.Response) *sip.Response {
	out := sip.NewResponse(r.StatusCode, r.Reason)
	copyDialogHeaders(out, r)
	out.SetTransport(r.Transport())
	out.SetSource(r.Source())
	return out
}

type call struct {
	callerTag string
	// Signaling addresses of the sides, used to pick a leg's relay
	// address while that side's media address is not known yet.
	sig [2]netip.Addr
	// iface is each side's interface as an offer's direction named it
	// (Options.Direction), for the call's later streams; "" leaves the
	// choice to Pick. dom is each side's SIP domain (Config.Domain).
	iface   [2]string
	dom     [2]string
	streams map[int]relay.StreamPorts
	// lockedTag is the To tag of the callee branch whose SDP the relay
	// follows: the first to answer with SDP, replaced by the branch that
	// sends the 2xx. Other forks' SDP is still rewritten, never followed.
	lockedTag string
	confirmed bool // a 2xx locked the branch
	// Last SDP seen from each side and what it became, so a retransmitted
	// 2xx or ACK gets byte-identical output (same o= version).
	lastIn, lastOut [2][]byte
	dialog          Dialog

	// For the SIP-free entry points (Offer, Answer): when the call
	// started and last saw signaling, and each stream's m-line kind.
	created, lastSignal time.Time
	kinds               map[int]MediaKind

	// announced is what each side's SDP gave the relay per stream (the
	// SetPeer arguments), kept so the call can be saved (State).
	announced map[int][2]announcement

	// WebRTC and SRTP bridging (webrtc.go): each side's transport says
	// it is a browser (ws, wss); sec is each bridged m-line's state;
	// offerer is the side whose offer awaits an answer (-1: none).
	webrtc  [2]bool
	sec     map[int]*streamSec
	offerer int8

	// Per-call options of the NG flags (options.go): each side's label
	// and options, and the call's TOS and drop-traffic.
	labels [2]string
	opts   [2]relay.SideOptions
	tos    relay.TOS
	drop   bool

	// Forks (fork.go; NG entry points only): base is the engine stream
	// index of this branch's m-line 0, via the via-branch its offer
	// came with, aliases the answering tags it had before its current
	// one. forks are the call's other branches: only the branch
	// c.calls holds has them.
	base    int
	via     string
	aliases []string
	forks   []*call
}

// announcement is one side's media addresses of one stream.
type announcement struct {
	Set  bool           `json:"set,omitempty"`
	RTP  netip.AddrPort `json:"rtp,omitzero"`
	RTCP netip.AddrPort `json:"rtcp,omitzero"`
	Mux  bool           `json:"mux,omitempty"`
}

// MediaKind is what an m-line carries.
type MediaKind struct {
	Type  string // "audio", "video", ...
	Proto string // "RTP/AVP", ...
}

// New returns a controller. A nil Log discards.
func New(cfg Config) *Controller {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Controller{cfg: cfg, log: cfg.Log, calls: map[string]*call{}}
}

// OnTimeout sets the function called (from Run's goroutine) for a call the
// engine reports as silent; the session is already deleted then.
func (c *Controller) OnTimeout(f func(Ended)) { c.onTimeout = f }

// Relays reports whether a new call with these NAT findings is relayed.
func (c *Controller) Relays(req *sip.Request, nated bool) bool { return Relays(c.cfg.Mode, req, nated) }

// Relays reports whether media mode mode relays a new call with these
// NAT findings, the OverrideHeader aside.
func Relays(mode string, req *sip.Request, nated bool) bool {
	if h := req.GetHeader(OverrideHeader); h != nil {
		switch strings.ToLower(strings.TrimSpace(h.Value())) {
		case "relay":
			return true
		case "none":
			return false
		}
	}
	switch mode {
	case ModeAll:
		return true
	case ModeNAT:
		return nated
	}
	return false
}

// OfferPairs is how many relay port pairs relaying the initial INVITE req
// takes: one per leg of each stream its offer opens (an m-line with a
// port), and one stream's worth for a late offer, whose streams come
// with the answer. Unreadable SDP counts as one stream (Invite refuses it
// later anyway).
func (c *Controller) OfferPairs(req *sip.Request) int { return OfferPairs(req) }

// OfferPairs is Controller.OfferPairs, for controllers of other relays.
func OfferPairs(req *sip.Request) int {
	const perStream = 2
	if !isSDP(req) {
		return perStream
	}
	ms, err := sdprewrite.Parse(req.Body())
	if err != nil {
		return perStream
	}
	n := 0
	for _, m := range ms {
		if m.Port != 0 {
			n++
		}
	}
	return perStream * max(n, 1)
}

// Active returns how many calls are relayed now.
func (c *Controller) Active() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.calls)
}

// msg is what requests and responses share.
type msg interface {
	Body() []byte
	GetHeader(name string) sip.Header
}

func isSDP(m msg) bool {
	if len(m.Body()) == 0 {
		return false
	}
	ct := m.GetHeader("Content-Type")
	if ct == nil {
		return false
	}
	v := strings.ToLower(ct.Value())
	if i := strings.IndexByte(v, ';'); i >= 0 {
		v = v[:i]
	}
	return strings.TrimSpace(v) == "application/sdp"
}

func fromTag(m msg) string {
	if f, ok := m.GetHeader("From").(*sip.FromHeader); ok {
		return f.Params.GetOr("tag", "")
	}
	return ""
}

func toTag(m msg) string {
	if t, ok := m.GetHeader("To").(*sip.ToHeader); ok {
		return t.Params.GetOr("tag", "")
	}
	return ""
}

// uriHost is the host of a From or To header's URI, lower-cased; "" if
// there is none.
func uriHost(h sip.Header) string {
	switch h := h.(type) {
	case *sip.FromHeader:
		return strings.ToLower(h.Address.Host)
	case *sip.ToHeader:
		return strings.ToLower(h.Address.Host)
	}
	return ""
}

func callID(m msg) string {
	if h := m.GetHeader("Call-ID"); h != nil {
		return h.Value()
	}
	return ""
}

// Invite starts relaying a call whose initial INVITE is about to be
// forwarded, and rewrites its offer, if any. The proxy has already decided
// the call is relayed (Relays). callee is where the INVITE goes (the first
// target; zero when unknown). An error wrapping ErrUnavailable means:
// answer 503 and do not forward.
//
// calleeTransport is the transport the INVITE leaves by ("" when unknown):
// a ws or wss callee is a browser, which gets the offer as WebRTC.
func (c *Controller) Invite(req *sip.Request, callee netip.Addr, calleeTransport string) error {
	id := callID(req)
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.calls[id]
	if !ok {
		if err := c.cfg.Engine.CreateSession(id); err != nil && !errors.Is(err, relay.ErrSessionExists) {
			// Draining, or closed at shutdown: either way not this relay.
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		cl = &call{callerTag: fromTag(req), streams: map[int]relay.StreamPorts{}, created: time.Now(), offerer: -1}
		cl.webrtc = [2]bool{isWebSocket(req.Transport()), isWebSocket(calleeTransport)}
		if src, err := netip.ParseAddrPort(req.Source()); err == nil {
			cl.sig[relay.SideA] = src.Addr().Unmap()
		}
		cl.sig[relay.SideB] = callee.Unmap()
		cl.dom = [2]string{uriHost(req.GetHeader("From")), uriHost(req.GetHeader("To"))}
		c.calls[id] = cl
		// Where each side's SIP comes from (or goes to) is a hint for
		// latching its media: a NATed phone sends from that address.
		c.signal(id, relay.SideA, cl.sig[relay.SideA])
		c.signal(id, relay.SideB, cl.sig[relay.SideB])
	}
	if cl.dialog.Invite == nil {
		// The caller's own INVITE; a spiral's second pass comes from us.
		cl.dialog.Invite = slimRequest(req)
	}
	if !isSDP(req) {
		return nil // late offer: it comes in the 2xx
	}
	body, err := c.sdp(id, cl, relay.SideA, req.Body(), true, nil, true)
	if err != nil {
		c.deleteLocked(id, ReasonSetupFailed)
		return err
	}
	req.SetBody(body)
	return nil
}

func isWebSocket(transport string) bool {
	t := strings.ToLower(transport)
	return t == "ws" || t == "wss"
}

// Request handles an in-dialog request of a relayed call that may carry
// SDP (re-INVITE, UPDATE, ACK, PRACK): it updates the sender's side and
// rewrites the body in place. A BYE in the dialog the relay follows ends
// the call's relaying. An error wrapping ErrUnavailable on a re-INVITE or
// UPDATE means: answer 503; the call itself goes on.
//
// Only the dialog the relay follows (the caller's tag and the answering
// branch's, in either order) moves or ends the media; the proxy checks
// that too, this is the second line. A request in another fork's dialog
// has its SDP pointed at the relay but moves nothing; one with tags of
// neither kind is refused with an error wrapping ErrUnknownTag.
func (c *Controller) Request(req *sip.Request) error {
	id := callID(req)
	from, to := fromTag(req), toTag(req)
	if req.Method == sip.BYE {
		c.mu.Lock()
		defer c.mu.Unlock()
		if cl, ok := c.calls[id]; ok && cl.confirmed && cl.followed(from, to) {
			c.deleteLocked(id, ReasonBye)
		}
		return nil
	}
	if !isSDP(req) {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.calls[id]
	if !ok {
		return nil
	}
	var side relay.Side
	switch {
	case from == cl.callerTag:
		side = relay.SideA
	case to == cl.callerTag:
		side = relay.SideB
	default:
		return fmt.Errorf("%w: %s from %q to %q, call has %q and %q", ErrUnknownTag, req.Method, from, to, cl.callerTag, cl.lockedTag)
	}
	// Before any answer with SDP, the caller's early requests (UPDATE)
	// may still move its own side.
	follow := cl.followed(from, to) || side == relay.SideA && cl.lockedTag == "" && !cl.confirmed
	if follow {
		c.signal(id, side, sourceAddr(req))
	}
	// ACK and PRACK carry answers; re-INVITE and UPDATE offers.
	offer := req.Method != sip.ACK && req.Method != sip.PRACK
	body, err := c.sdp(id, cl, side, req.Body(), follow, nil, offer)
	if err != nil {
		return err
	}
	req.SetBody(body)
	return nil
}

// followed reports whether a request with these tags is in the dialog
// the relay follows: the caller's tag and the followed branch's.
func (cl *call) followed(from, to string) bool {
	return cl.lockedTag != "" && (from == cl.callerTag && to == cl.lockedTag || from == cl.lockedTag && to == cl.callerTag)
}

// Response rewrites the SDP of a response on its way upstream (the caller
// of the request it answers). res is the proxy's own copy.
func (c *Controller) Response(res *sip.Response) {
	hasSDP := isSDP(res)
	// A 2xx to an INVITE without SDP still confirms the branch it came
	// from (the answer went in a reliable provisional response, RFC
	// 3262): only that dialog's BYE ends the call.
	answer := res.IsSuccess() && res.CSeq() != nil && res.CSeq().MethodName == sip.INVITE
	if (!hasSDP && !answer) || res.StatusCode < 101 || res.StatusCode >= 300 {
		return
	}
	id := callID(res)
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.calls[id]
	if !ok {
		return
	}
	// A response comes from whoever did not send the request.
	side := relay.SideA
	if fromTag(res) == cl.callerTag {
		side = relay.SideB
	}
	follow := true
	if side == relay.SideB && res.CSeq() != nil && res.CSeq().MethodName == sip.INVITE && !cl.confirmed {
		tag := toTag(res)
		switch {
		case res.IsSuccess():
			cl.lockedTag, cl.confirmed = tag, true
			cl.dialog.OK = slimResponse(res)
		case cl.lockedTag == "":
			cl.lockedTag = tag
		default:
			follow = tag == cl.lockedTag
		}
	} else if side == relay.SideB && cl.confirmed && toTag(res) != cl.lockedTag {
		follow = false // a late 2xx from another fork: the caller will BYE it
	}
	if !hasSDP {
		if follow {
			// The answer came earlier; this 2xx is still when the
			// caller's media starts: its learning window opens again.
			c.signal(id, side, netip.Addr{})
		}
		return
	}
	if follow {
		c.signal(id, side, sourceAddr(res))
	}
	// A response answers the request's offer, or (a 2xx to an INVITE
	// without SDP) makes one.
	offer := cl.offerer != int8(1-side) && cl.lastIn[side] == nil
	body, err := c.sdp(id, cl, side, res.Body(), follow, nil, offer)
	if err != nil {
		c.log.Warn("media: response sdp left as is", "call_id", id, "code", res.StatusCode, "error", err)
		return
	}
	res.SetBody(body)
}

// signal tells the engine that side signaled from addr (invalid: address
// unknown or unchanged): a latching hint, and the moment its learning
// windows open again.
func (c *Controller) signal(id string, side relay.Side, addr netip.Addr) {
	if err := c.cfg.Engine.SetSignal(id, side, addr); err != nil && !errors.Is(err, relay.ErrSessionNotFound) {
		c.log.Warn("media: signaling address", "call_id", id, "side", side.String(), "error", err)
	}
}

func sourceAddr(m interface{ Source() string }) netip.Addr {
	ap, err := netip.ParseAddrPort(m.Source())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// End stops relaying a call (BYE, CANCEL, failure, timeout). Unknown calls
// are ignored.
func (c *Controller) End(callID, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deleteLocked(callID, reason)
}

func (c *Controller) deleteLocked(id, reason string) bool {
	_, ok := c.deleteInfoLocked(id, reason)
	return ok
}

// deleteInfoLocked deletes the call and returns the relay session's final
// statistics (zero when the engine had none).
func (c *Controller) deleteInfoLocked(id, reason string) (relay.SessionInfo, bool) {
	cl, ok := c.calls[id]
	if !ok {
		return relay.SessionInfo{}, false
	}
	delete(c.calls, id)
	si, err := c.cfg.Engine.DeleteSession(id)
	if err != nil && !errors.Is(err, relay.ErrSessionNotFound) {
		c.log.Warn("media: delete relay session", "call_id", id, "error", err)
	}
	if c.cfg.Ended != nil {
		created := cl.created
		if created.IsZero() {
			created = si.Created
		}
		c.cfg.Ended.CallEnded(CallEnd{CallID: id, Reason: reason, Answered: slices.ContainsFunc(cl.branches(), func(b *call) bool { return b.confirmed }),
			Created: created, Ended: time.Now(), Streams: si.Streams})
	}
	c.log.Debug("media: call no longer relayed", "call_id", id, "reason", reason)
	return si, true
}

// Run consumes the engine's events until ctx is done or events closes: a
// call with no media for the timeout is deleted and reported to the
// OnTimeout function.
func (c *Controller) Run(ctx context.Context, events <-chan relay.Event) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			c.mu.Lock()
			cl := c.calls[ev.CallID]
			var e Ended
			if cl != nil {
				e = Ended{CallID: ev.CallID, CallerTag: cl.callerTag, CalleeTag: cl.lockedTag, Reason: ev.Reason, Dialog: cl.dialog}
			}
			c.deleteLocked(ev.CallID, ev.Reason)
			c.mu.Unlock()
			if cl == nil {
				// Not ours (e.g. adopted after a restart): still free it.
				if _, err := c.cfg.Engine.DeleteSession(ev.CallID); err != nil && !errors.Is(err, relay.ErrSessionNotFound) {
					c.log.Warn("media: delete timed-out session", "call_id", ev.CallID, "error", err)
				}
				continue
			}
			c.log.Info("media: call ended by the relay", "call_id", ev.CallID, "reason", ev.Reason)
			if c.onTimeout != nil {
				c.onTimeout(e)
			}
		}
	}
}

// ours reports whether m's address is one of the stream's relay legs.
func ours(sp relay.StreamPorts, m sdprewrite.Media) bool {
	a := m.Addr.Unmap()
	for _, l := range []relay.LegPorts{sp.A, sp.B} {
		if m.Port == l.RTP && (a == l.Advertised.Unmap() || a == l.Local.Unmap()) {
			return true
		}
	}
	return false
}

func (c *Controller) pick(peer netip.Addr) relay.LegSpec {
	if c.cfg.Pick != nil {
		return c.cfg.Pick(peer)
	}
	return relay.LegSpec{Address: c.cfg.Address, Family: familyOf(peer)}
}

// named is the spec of a leg on the interface name, from spec (the
// choice by route, with its family). A name of one family only gets
// that family, unless address-family forced spec's (the engine then
// refuses). An unknown name is what rtpengine does with it (its call.c,
// __init_interface): "internal" and "external", when no interface has
// those names, ask for IPv4 and IPv6 (its obsolete use), and any other
// leaves the default choice, with a warning.
func (c *Controller) named(callID, name string, spec relay.LegSpec, forced bool) relay.LegSpec {
	var fams [3]bool // by relay.Family
	known := false
	for _, a := range c.cfg.Interfaces {
		if a.Name == name {
			known = true
			fams[familyOf(a.Local)] = true
		}
	}
	if known {
		spec.Address = name
		if spec.Family != relay.FamilyAny && !fams[spec.Family] && !forced {
			spec.Family = relay.FamilyAny
		}
		return spec
	}
	want := relay.FamilyAny
	switch name {
	case "internal":
		want = relay.IPv4
	case "external":
		want = relay.IPv6
	default:
		c.log.Warn("media: interface not found, using default", "call_id", callID, "interface", name)
		return spec
	}
	if forced {
		return spec
	}
	for _, a := range c.cfg.Interfaces {
		if familyOf(a.Local) == want {
			return relay.LegSpec{Family: want}
		}
	}
	return spec
}

// ErrFamily means the relay has no address of the family asked for
// (rtpengine's address-family).
var ErrFamily = errors.New("no relay address of that family")

// from is the sender's media address for an SDP address a: a itself
// unless o says the SDP is not trusted (MediaFrom). An unspecified a
// (0.0.0.0, hold) stays.
func from(a netip.Addr, o *Options) netip.Addr {
	if o == nil || !o.MediaFrom.IsValid() || !a.IsValid() || a.IsUnspecified() {
		return a
	}
	return o.MediaFrom.Unmap()
}

func familyName(f relay.Family) string {
	if f == relay.IPv6 {
		return "IP6"
	}
	return "IP4"
}

func familyOf(a netip.Addr) relay.Family {
	switch {
	case !a.IsValid():
		return relay.FamilyAny
	case a.Unmap().Is4():
		return relay.IPv4
	}
	return relay.IPv6
}

// sdpFollow processes SDP from side: when follow, the engine learns side's
// media addresses (creating streams as needed); the body is rewritten with
// the other leg's relay ports, which is where the receiver must send. The
// same mapping serves offers and answers: what differs between them is
// only which streams may be new.
func (c *Controller) sdp(id string, cl *call, side relay.Side, body []byte, follow bool, o *Options, offer bool) ([]byte, error) {
	if follow && bytes.Equal(body, cl.lastIn[side]) && cl.lastOut[side] != nil {
		return cl.lastOut[side], nil
	}
	ms, err := sdprewrite.Parse(body)
	if err != nil {
		return nil, fmt.Errorf("parse sdp from side %s: %w", side, err)
	}
	var plan map[int]*streamSec
	if cl.needsWebRTC(body, o, o == nil && cl.webrtc[1-side]) {
		plan, err = c.planSDP(cl, side, body, o, offer, follow)
		if err != nil {
			return nil, err
		}
	}
	if follow && offer && o != nil {
		// rtpengine's direction: the first interface faces the sender of
		// the offer, the second its receiver. The call keeps it; an
		// answer's direction changes nothing (ng_control_protocol.md,
		// "direction" and "answer Message").
		for i, name := range o.Direction {
			if p := o.DirectionPeer[i]; name == "" && p.IsValid() {
				// inbound-peer, outbound-peer: the interface of the
				// route to that address.
				name = c.pick(p.Unmap()).Address
			}
			if name != "" {
				cl.iface[relay.Side(i)^side] = name
			}
		}
	}
	targets := map[int]sdprewrite.Target{}
	for _, m := range ms {
		sp, have := cl.streams[m.Index]
		if ss := plan[m.Index]; m.Port == 0 || ss != nil && ss.rejected {
			// Rejected or removed stream: it stays rejected, and its ports
			// go back to the pool.
			if have {
				if err := c.cfg.Engine.RemoveStream(id, cl.base+m.Index); err != nil && !errors.Is(err, relay.ErrStreamNotFound) {
					c.log.Warn("media: remove stream", "call_id", id, "index", m.Index, "error", err)
				}
				delete(cl.streams, m.Index)
				delete(cl.announced, m.Index)
			}
			continue
		}
		if have && ours(sp, m) {
			// SDP that already points at this call's relay legs went
			// through us before (a spiral): following it would make the
			// relay its own peer.
			continue
		}
		if !have {
			if !follow {
				continue
			}
			// Each leg faces one side: its relay address follows that
			// side's media address, or its signaling address until the
			// media address is known.
			peers := cl.sig
			peers[side] = from(m.Addr, o).Unmap()
			for i, p := range peers {
				if !p.IsValid() || p.IsUnspecified() {
					peers[i] = peers[1-i]
				}
			}
			specs := [2]relay.LegSpec{c.pick(peers[relay.SideA]), c.pick(peers[relay.SideB])}
			if o != nil && o.Family != relay.FamilyAny {
				specs[1-side].Family = o.Family
			}
			for s, name := range cl.iface {
				if name == "" && c.cfg.Domain != nil && cl.dom[s] != "" {
					name = c.cfg.Domain(cl.dom[s])
				}
				if name != "" {
					forced := o != nil && o.Family != relay.FamilyAny && relay.Side(s) != side
					specs[s] = c.named(id, name, specs[s], forced)
				}
			}
			a, b := specs[relay.SideA], specs[relay.SideB]
			if m.Index >= branchStride {
				return nil, fmt.Errorf("add stream %d: %w", m.Index, ErrTooManyStreams)
			}
			sp, err = c.cfg.Engine.AddStream(id, cl.base+m.Index, a, b)
			if err != nil {
				switch {
				case errors.Is(err, relay.ErrPortsExhausted) || errors.Is(err, relay.ErrDraining):
					err = fmt.Errorf("%w: %w", ErrUnavailable, err)
				case o != nil && o.Family != relay.FamilyAny && !errors.Is(err, relay.ErrSessionNotFound):
					// The engine's only other refusal: no address of the
					// family (or name) asked for.
					err = fmt.Errorf("%w: address-family %s: %w", ErrFamily, familyName(o.Family), err)
				}
				return nil, fmt.Errorf("add stream %d: %w", m.Index, err)
			}
			cl.streams[m.Index] = sp
		}
		if have && follow && o != nil && o.NoPortLatching {
			sp = c.renewPorts(id, cl, side, m, o, sp)
		}
		if ss := plan[m.Index]; follow && ss != nil && !ss.rejected {
			// Before SetPeer: the flows are never installed without the
			// crypto they need.
			if err := c.secure(id, cl.base+m.Index, ss); err != nil {
				return nil, err
			}
		}
		if follow {
			maddr := from(m.Addr, o)
			rtp := netip.AddrPortFrom(maddr, m.Port)
			rtcp := m.RTCP
			mux := m.RTCPMux && !(offer && o.rejectsMux())
			switch {
			case !mux && !rtcp.IsValid():
				rtcp = netip.AddrPortFrom(maddr, m.Port+1)
			case rtcp.IsValid() && maddr != m.Addr: // SIP-source-address
				rtcp = netip.AddrPortFrom(maddr, rtcp.Port())
			}
			if err := c.cfg.Engine.SetPeer(id, cl.base+m.Index, side, rtp, rtcp, mux); err != nil {
				return nil, fmt.Errorf("set peer of stream %d side %s: %w", m.Index, side, err)
			}
			if cl.announced == nil {
				cl.announced = map[int][2]announcement{}
			}
			a := cl.announced[m.Index]
			a[side] = announcement{Set: true, RTP: rtp, RTCP: rtcp, Mux: mux}
			cl.announced[m.Index] = a
		}
		if follow {
			if cl.kinds == nil {
				cl.kinds = map[int]MediaKind{}
			}
			cl.kinds[m.Index] = MediaKind{Type: m.Type, Proto: m.Proto}
		}
		// The receiver sends to the relay leg that faces it.
		l := sp.Leg(1 - side)
		if o != nil && o.Family != relay.FamilyAny && familyOf(l.Local) != o.Family {
			return nil, fmt.Errorf("%w: address-family %s: stream %d's relay address toward the receiver is %s", ErrFamily, familyName(o.Family), m.Index, l.Local)
		}
		addr := l.Advertised
		if !addr.IsValid() {
			addr = l.Local
		}
		if o != nil && o.Advertise.IsValid() {
			addr = o.Advertise
		}
		targets[m.Index] = sdprewrite.Target{Addr: addr, RTP: l.RTP, RTCP: l.RTCP}
	}
	out, err := sdprewrite.Rewrite(body, targets, sdprewrite.Options{RemoveICE: true, ReplaceZero: o != nil && o.ReplaceZero})
	if err != nil {
		return nil, fmt.Errorf("rewrite sdp from side %s: %w", side, err)
	}
	if plan != nil {
		if out, err = c.rewriteWebRTC(out, side, plan, cl.streams, o, offer); err != nil {
			return nil, fmt.Errorf("rewrite sdp from side %s: %w", side, err)
		}
	}
	if follow {
		switch {
		case offer:
			cl.offerer = int8(side)
		case cl.offerer == int8(1-side):
			cl.offerer = -1
		}
		cl.lastIn[side] = append([]byte(nil), body...)
		cl.lastOut[side] = out
	}
	return out, nil
}

// IsSDP reports whether a request's or response's body is SDP, for
// controllers of other relays.
func IsSDP(m interface {
	Body() []byte
	GetHeader(name string) sip.Header
}) bool {
	return isSDP(m)
}

// SlimDialog keeps of an initial INVITE and its 2xx (either may be nil)
// what building a BYE needs, as Ended.Dialog holds them, for controllers
// of other relays.
func SlimDialog(invite *sip.Request, ok *sip.Response) Dialog {
	var d Dialog
	if invite != nil {
		d.Invite = slimRequest(invite)
	}
	if ok != nil {
		d.OK = slimResponse(ok)
	}
	return d
}
