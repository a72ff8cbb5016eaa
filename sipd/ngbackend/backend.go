// Package ngbackend implements ng.Backend, the media side of rtpengine's NG
// control protocol, over sipd's media controller and relay engine: offer
// and answer go through the same offer/answer core and SDP rewriting as
// calls sipd proxies itself; query and delete report the engine's
// counters in rtpengine's shape.
package ngbackend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"strings"

	"sipxdp/ng"
	"sipxdp/relay"
	"sipxdp/sipd/media"
	"sipxdp/sipd/sdprewrite"
)

// Engine is what the backend reads from relay.Engine for query.
type Engine interface {
	Session(callID string) (relay.SessionInfo, error)
	// CallFlows lists the call's installed directions with their path
	// and counters (what /flows?call_id= shows).
	CallFlows(callID string) ([]relay.FlowInfo, error)
}

// Backend serves NG commands with a media controller.
type Backend struct {
	ctrl *media.Controller
	eng  Engine
	log  *slog.Logger
	// strict refuses offers and answers that need media work (see
	// Strict).
	strict bool
	// delays holds the deletes scheduled by delete-delay (see Delete).
	delays delays
	// id marks the SDP this relay writes under loop-protect (loop.go).
	id string
	// origins is what the replace flags remember of each side's o= and
	// s= (origin.go).
	origins origins
	// aliases are alias key's from-tag aliases (alias.go).
	aliases aliases
}

var _ ng.Backend = (*Backend)(nil)

// New returns a backend. A nil log discards.
func New(ctrl *media.Controller, eng Engine, log *slog.Logger) *Backend {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Backend{ctrl: ctrl, eng: eng, log: log, id: newInstanceID()}
}

// ErrNoCallID is returned for a command without call-id.
var ErrNoCallID = errors.New("missing call-id")

// ErrAddressFlag is returned for an address flag (media-address,
// address-family, SIP-source-address) whose value cannot be used.
var ErrAddressFlag = errors.New("unusable address flag")

// Offer rewrites an offer (side A on a new call; either side's re-offer).
// A new call the relay cannot take (draining, shutting down, out of
// ports) is refused with an error wrapping ng.ErrLoadLimit or
// ng.ErrOutOfPorts, which the proxy takes as "try the next relay"; a
// known call's re-offer is never refused that way, as the proxy would
// then move half a call.
func (b *Backend) Offer(r *ng.Request) ([]byte, error) {
	if err := b.check(r); err != nil {
		return nil, err
	}
	if b.looped(r) {
		return r.SDP, nil
	}
	if _, ok := r.Flags["fragment"]; ok {
		// A trickle ICE fragment (SIP INFO with new candidates): rtpengine
		// consumes it and returns no SDP (call_interfaces.c,
		// trickle_ice_update). The relay is ICE-lite toward a WebRTC side
		// and learns its address from its connectivity checks, so the
		// candidates change nothing; the fragment must not be taken for
		// a re-offer, which would drop the call's streams.
		b.log.Debug("ng: trickle ICE fragment consumed", "call_id", r.CallID, "from_tag", r.FromTag)
		return nil, nil
	}
	ci, known := b.ctrl.Call(r.CallID)
	key := b.aliases.offer(r, ci, known)
	out, err := b.ctrl.Offer(r.CallID, r.FromTag, b.codecs(r, true), signaling(r), Options(r))
	if err != nil {
		if !known {
			err = refusal(err)
		}
		return nil, err
	}
	if key != "" {
		b.aliases.learn(r.CallID, r.FromTag, key, b.alive)
	}
	return b.debug(r, b.finish(r, r.FromTag, out)), nil
}

// refusal marks err, the failure of a new call's offer, with why the
// relay cannot take the call, when that is load rather than the request.
func refusal(err error) error {
	switch {
	case errors.Is(err, relay.ErrDraining), errors.Is(err, relay.ErrEngineClosed):
		return fmt.Errorf("%w: %w", ng.ErrLoadLimit, err)
	case errors.Is(err, relay.ErrPortsExhausted):
		return fmt.Errorf("%w: %w", ng.ErrOutOfPorts, err)
	}
	return err
}

// Answer rewrites an answer; to-tag names the answering branch.
func (b *Backend) Answer(r *ng.Request) ([]byte, error) {
	if err := b.check(r); err != nil {
		return nil, err
	}
	if b.looped(r) {
		// rtpengine looks the call up before the SDP (call_offer_answer_ng).
		if _, ok := b.ctrl.Call(r.CallID); !ok {
			return nil, fmt.Errorf("%w: %q", media.ErrUnknownCall, r.CallID)
		}
		return r.SDP, nil
	}
	b.aliases.resolve(r)
	out, err := b.ctrl.Answer(r.CallID, r.FromTag, r.ToTag, b.codecs(r, false), signaling(r), Options(r))
	if err != nil {
		return nil, err
	}
	return b.debug(r, b.finish(r, r.ToTag, out)), nil
}

// debug logs an offer or answer with the debug (or debugging) flag at
// info, the SDP in and out with it: rtpengine's "full debug logging for
// this call, regardless of global log level settings" (ng control
// protocol, "debug"), for the messages that ask for it.
func (b *Backend) debug(r *ng.Request, out []byte) []byte {
	_, d1 := r.Flags["debug"]
	_, d2 := r.Flags["debugging"]
	if d1 || d2 {
		b.log.Info("ng: debug", "command", r.Command, "call_id", r.CallID, "from_tag", r.FromTag,
			"to_tag", r.ToTag, "via_branch", r.ViaBranch, "sdp_in", string(r.SDP), "sdp_out", string(out))
	}
	return out
}

// Query reports the call's ports, peers and counters.
func (b *Backend) Query(r *ng.Request) (ng.CallStats, error) {
	if r.CallID == "" {
		return ng.CallStats{}, ErrNoCallID
	}
	ci, ok := b.ctrl.Call(r.CallID)
	if !ok {
		return ng.CallStats{}, fmt.Errorf("%w: %q", media.ErrUnknownCall, r.CallID)
	}
	si, err := b.eng.Session(r.CallID)
	if err != nil {
		return ng.CallStats{}, fmt.Errorf("query %q: %w", r.CallID, err)
	}
	flows, err := b.eng.CallFlows(r.CallID)
	if err != nil {
		return ng.CallStats{}, fmt.Errorf("query %q: %w", r.CallID, err)
	}
	return callStats(ci, si, flows), nil
}

// List returns up to limit call IDs (0: all).
func (b *Backend) List(limit int) []string { return b.ctrl.CallIDs(limit) }

func (b *Backend) check(r *ng.Request) error {
	if r.CallID == "" {
		return ErrNoCallID
	}
	if len(r.SDP) == 0 {
		return fmt.Errorf("%w: no sdp", sdprewrite.ErrSDP)
	}
	if err := checkAddress(r); err != nil {
		return err
	}
	if err := b.strictCheck(r); err != nil {
		return err
	}
	if b.log.Enabled(context.Background(), slog.LevelDebug) {
		// Flags this relay does not act on: logged so an operator sees
		// what a script asked for.
		var ignored []string
		if ice := strings.ToLower(r.ICE); ice != "" && ice != "remove" && ice != "force" && ice != "default" {
			ignored = append(ignored, "ICE="+r.ICE)
		}
		for k, v := range r.Flags {
			if honoured(k) {
				continue
			}
			if v != "" {
				k += "=" + v
			}
			ignored = append(ignored, k)
		}
		if len(ignored) > 0 {
			sort.Strings(ignored)
			b.log.Debug("ng: flags ignored", "command", r.Command, "call_id", r.CallID, "flags", ignored)
		}
	}
	return nil
}

// Options turns the flags of an offer or answer into how the controller
// writes the SDP toward the receiving side; without flags, that side gets
// the protocol the sender speaks (rtpengine's
// NG control protocol documentation: ICE, DTLS, SDES, transport-protocol,
// rtcp-mux, generate-mid).
func Options(r *ng.Request) *media.Options {
	o := &media.Options{Proto: r.TransportProtocol, ICE: strings.ToLower(r.ICE)}
	webrtcOptions(r, o)
	for _, m := range r.RTCPMux {
		o.RTCPMux = append(o.RTCPMux, strings.ToLower(m))
	}
	_, o.GenerateMid = r.Flags["generate-mid"]
	o.ReplaceZero = replaces(r)["zero-address"]
	addressFlags(r, o)
	callFlags(r, o)
	o.Direction = direction(r)
	for i, k := range []string{"inbound-peer", "outbound-peer"} {
		if a, err := netip.ParseAddr(r.Flags[k]); err == nil {
			o.DirectionPeer[i] = a
		}
	}
	// The branch of a forked call (NG control protocol documentation,
	// "via-branch"; media's fork.go).
	o.ViaBranch, o.ToTag = r.ViaBranch, r.ToTag
	return o
}

// direction is the interface of each leg an offer asks for: the leg
// facing the sender, then the one facing the receiver (NG control
// protocol documentation: "direction", "from-interface", "to-interface";
// Kamailio's direction=/internal/external and OpenSIPS's
// in-iface=/out-iface= arrive as direction). from-interface and
// to-interface win over direction, as rtpengine reads the dictionary's
// keys in order. Names beyond the second are ignored, as rtpengine does.
func direction(r *ng.Request) [2]string {
	var d [2]string
	for i := 0; i < len(r.Direction) && i < 2; i++ {
		d[i] = r.Direction[i]
	}
	if v := r.Flags["from-interface"]; v != "" {
		d[0] = v
	}
	if v := r.Flags["to-interface"]; v != "" {
		d[1] = v
	}
	return d
}

// addressFlags applies rtpengine's address flags (NG control protocol
// documentation: "SIP source address", "trust address", "media address",
// "address family"). The SDP's address is trusted unless
// SIP-source-address asks for received-from in its place (rtpengine's
// default without --sip-source; fill_endpoint in rtpengine's sdp.c);
// trust-address wins over it. media-address is what rtpengine prints
// into the SDP in place of its own address (rtpengine's sdp.c).
// Malformed values are ignored here and refused by checkAddress.
func addressFlags(r *ng.Request, o *media.Options) {
	_, src := r.Flags["sip-source-address"]
	_, trust := r.Flags["trust-address"]
	if src && !trust {
		o.MediaFrom = signaling(r)
	}
	if a, err := netip.ParseAddr(r.Flags["media-address"]); err == nil {
		o.Advertise = a.Unmap()
	}
	switch strings.ToUpper(r.Flags["address-family"]) {
	case "IP4":
		o.Family = relay.IPv4
	case "IP6":
		o.Family = relay.IPv6
	}
}

// checkAddress refuses address flags whose values cannot be used, as
// rtpengine does, rather than relaying media somewhere unintended.
func checkAddress(r *ng.Request) error {
	if v, ok := r.Flags["media-address"]; ok {
		if _, err := netip.ParseAddr(v); err != nil {
			return fmt.Errorf("%w: media-address %q: %w", ErrAddressFlag, v, err)
		}
	}
	if v, ok := r.Flags["address-family"]; ok && !strings.EqualFold(v, "IP4") && !strings.EqualFold(v, "IP6") {
		return fmt.Errorf("%w: address-family %q: want IP4 or IP6", ErrAddressFlag, v)
	}
	_, src := r.Flags["sip-source-address"]
	_, trust := r.Flags["trust-address"]
	if src && !trust && !signaling(r).IsValid() {
		return fmt.Errorf("%w: SIP-source-address without a usable received-from", ErrAddressFlag)
	}
	return nil
}

// honoured reports whether the backend acts on a flag (for the debug log
// of those it ignores).
func honoured(k string) bool {
	switch {
	case k == "ice", k == "dtls", k == "sdes", k == "transport-protocol", k == "generate-mid",
		strings.HasPrefix(k, "replace-"), strings.HasPrefix(k, "rtcp-mux-"),
		webrtcFlag(k),
		k == "supports-load-limit", // the ng.Server's refusals
		k == "no-redis-update",     // relayrepl's Backend
		k == "sip-source-address", k == "trust-address", k == "media-address", k == "address-family",
		k == "from-interface", k == "to-interface", k == "inbound-peer", k == "outbound-peer",
		k == "original-sendrecv", k == "provisional", k == "fragment", k == "debug", k == "debugging", k == "alias-key",
		codecFlag(k), callFlag(k):
		return true
	}
	for _, p := range []string{"rtp/avp", "rtp/savp", "rtp/avpf", "rtp/savpf", "udp/tls/rtp/savp", "udp/tls/rtp/savpf"} {
		if k == p {
			return true
		}
	}
	return false
}

// signaling is the address whose side sent the SDP: received-from when
// the proxy gives it (["IP4", "192.0.2.1"]), else unknown (the command's
// source is the proxy, not the party).
func signaling(r *ng.Request) netip.Addr {
	if len(r.ReceivedFrom) == 2 {
		if a, err := netip.ParseAddr(r.ReceivedFrom[1]); err == nil {
			return a.Unmap()
		}
	}
	return netip.Addr{}
}

// looped reports whether r asks for loop-protect and its SDP already
// went through this relay: it is then returned as it came (loop.go).
func (b *Backend) looped(r *ng.Request) bool {
	if _, ok := r.Flags["loop-protect"]; !ok || !marked(r.SDP, b.id) {
		return false
	}
	b.log.Debug("ng: sdp already processed by this relay; returned untouched (loop-protect)",
		"command", r.Command, "call_id", r.CallID)
	return true
}

// finish applies the replace flags and loop-protect's mark. The
// session-level c= always names the relay (sdprewrite), which is
// replace=session-connection; replace=origin (and origin-full) also puts
// the relay's address into o=; zero-address is media's (Options); the
// others keep o= and s= as the side's earlier SDP had them (origin.go).
// tag is the tag of the side whose SDP body is.
func (b *Backend) finish(r *ng.Request, tag string, body []byte) []byte {
	rep := replaces(r)
	if rep["origin"] || rep["origin-full"] {
		body = replaceOrigin(body)
	}
	body = sdpFlagEdits(r, body)
	if _, ok := r.Flags["loop-protect"]; ok {
		body = mark(body, b.id)
	}
	return b.origins.apply(r.CallID, tag, rep, body, b.alive)
}

// alive reports whether a call exists, for the sweeps of what the
// backend keeps per call (origins, aliases).
func (b *Backend) alive(call string) bool {
	_, ok := b.ctrl.Call(call)
	return ok
}

// replaceOrigin sets the o= address to the address the SDP's first relayed
// m-line names, leaving the body alone if there is none.
func replaceOrigin(body []byte) []byte {
	ms, err := sdprewrite.Parse(body)
	if err != nil {
		return body
	}
	var addr netip.Addr
	for _, m := range ms {
		if m.Port != 0 && m.Addr.IsValid() && !m.Addr.IsUnspecified() {
			addr = m.Addr
			break
		}
	}
	if !addr.IsValid() {
		return body
	}
	start := 0
	if !bytes.HasPrefix(body, []byte("o=")) {
		i := bytes.Index(body, []byte("\no="))
		if i < 0 {
			return body
		}
		start = i + 1
	}
	end := bytes.IndexByte(body[start:], '\n')
	if end < 0 {
		end = len(body) - start
	}
	line := strings.TrimRight(string(body[start:start+end]), "\r")
	f := strings.Fields(line[2:])
	if len(f) != 6 {
		return body
	}
	f[4], f[5] = "IP4", addr.String()
	if addr.Is6() {
		f[4] = "IP6"
	}
	out := make([]byte, 0, len(body)+16)
	out = append(out, body[:start]...)
	out = append(out, "o="+strings.Join(f, " ")...)
	rest := body[start+len(line):]
	return append(out, rest...)
}

// callStats shapes a session into rtpengine's per-tag, per-media report.
// Each side's tag gets the streams of the leg that faces it: the relay
// port it sends to, its peer, and what arrived from it. The caller's tag
// gets the oldest branch's legs; each answered branch of a forked call
// gets its own callee's legs under its tag. flows, when given, split the
// counters into RTP and RTCP and say which flows the kernel forwards;
// without them a leg's counters go on its RTP stream.
func callStats(ci media.CallInfo, si relay.SessionInfo, flows []relay.FlowInfo) ng.CallStats {
	cs := ng.CallStats{Created: ci.Created, LastSignal: ci.LastSignal}
	type fkey struct {
		stream int
		side   relay.Side
		rtcp   bool
	}
	byKey := map[fkey]relay.FlowInfo{}
	for _, f := range flows {
		byKey[fkey{f.Stream, f.Side, f.Component == "rtcp"}] = f
	}
	branches := ci.Branches
	if len(branches) == 0 {
		branches = []media.BranchInfo{{Tag: ci.Tags[1], Kinds: ci.Kinds, Labels: ci.Labels}}
	}
	// A stream belongs to the branch of the highest base not above its
	// index (media's fork.go).
	branchOf := func(index int) int {
		at := -1
		for i, b := range branches {
			if b.Base <= index && (at < 0 || b.Base > branches[at].Base) {
				at = i
			}
		}
		return at
	}
	streams := append([]relay.StreamInfo(nil), si.Streams...)
	sort.Slice(streams, func(i, j int) bool { return streams[i].Index < streams[j].Index })
	medias := func(br int, side relay.Side) []ng.MediaStats {
		var out []ng.MediaStats
		for _, st := range streams {
			if branchOf(st.Index) != br {
				continue
			}
			leg := st.A
			if side == relay.SideB {
				leg = st.B
			}
			m := st.Index - branches[br].Base
			k := branches[br].Kinds[m]
			ms := ng.MediaStats{Index: m + 1, Type: k.Type, Protocol: k.Proto}
			for _, rtcp := range []bool{false, true} {
				ss := ng.StreamStats{LocalPort: leg.RTP, Advertised: leg.PeerRTP, Endpoint: leg.LatchedRTP, RTCP: rtcp}
				if rtcp {
					ss.LocalPort, ss.Advertised, ss.Endpoint = leg.RTCP, leg.PeerRTCP, leg.LatchedRTCP
					if leg.RTCPMux {
						ss.LocalPort, ss.Endpoint = leg.RTP, leg.LatchedRTP
					}
				}
				if !ss.Endpoint.IsValid() {
					ss.Endpoint = ss.Advertised
				}
				if flows == nil {
					if !rtcp {
						ss.Packets, ss.Bytes, ss.LastPacket = leg.Received.Packets, leg.Received.Bytes, leg.Received.LastSeen
					}
				} else if f, ok := byKey[fkey{st.Index, side, rtcp}]; ok {
					ss.Packets, ss.Bytes, ss.LastPacket = f.Packets, f.Bytes, f.LastSeen
					ss.Kernel = f.Path == relay.PathKernel
				}
				ms.Streams = append(ms.Streams, ss)
			}
			out = append(out, ms)
		}
		return out
	}
	cs.Tags = append(cs.Tags, ng.TagStats{Tag: ci.Tags[0], Label: branches[0].Labels[relay.SideA], InDialogueWith: branches[0].Tag,
		Created: ci.Created, Medias: medias(0, relay.SideA)})
	for i, b := range branches {
		if b.Tag == "" {
			continue // not answered
		}
		cs.Tags = append(cs.Tags, ng.TagStats{Tag: b.Tag, Label: b.Labels[relay.SideB], InDialogueWith: ci.Tags[0], Created: ci.Created,
			Medias: medias(i, relay.SideB)})
	}
	return cs
}
