package media

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"sipxdp/relay"
	"sipxdp/relay/cryptoleg"
	"sipxdp/relay/ice"
	"sipxdp/relay/srtpleg"
	"sipxdp/sipd/sdprewrite"
	"sipxdp/sipd/webrtcsdp"
)

// Bridging WebRTC and SRTP to plain RTP. Every m-line has, per side, what
// that side speaks: plain RTP, SDES-SRTP or DTLS-SRTP (WebRTC, with ICE).
// A side's own SDP says what it speaks; what a side that has not spoken
// yet is offered comes from Options (rtpengine's NG flags) or, for sipd's
// own calls, from its transport: a ws or wss endpoint is WebRTC, any
// other gets plain RTP when the sender is WebRTC, and what the sender
// speaks otherwise. Where the two sides speak the same plain or SDES
// profile, nothing is terminated: the packets pass unchanged (and SDES
// keys end to end keep the call on the kernel path). Otherwise the relay
// terminates each side's crypto on that side's leg (relay.SetSecurity)
// and writes the SDP toward each side in its own profile: ICE-lite
// candidates, the relay's fingerprint and a=setup, its own a=crypto, and
// rtcp-mux as that side needs.
//
// Only audio is bridged to or from a WebRTC side: its other m-lines are
// refused with port 0, so a browser never half-connects video.

// Options say how to write the SDP toward the side that receives it, as
// rtpengine's NG flags do. The zero value keeps what the sender speaks.
type Options struct {
	// Proto: transport-protocol (RTP/AVP, RTP/SAVP, RTP/SAVPF,
	// UDP/TLS/RTP/SAVPF); "" keeps the sender's.
	Proto string
	// ICE: "force" gives a DTLS side ICE-lite (the default for it),
	// "remove" none; other values keep the default.
	ICE string
	// DTLS: "passive" or "active" is the relay's a=setup toward a DTLS
	// side (offered, or preferred when answering actpass); "off" offers
	// no DTLS (RTP/SAVP then means SDES).
	DTLS string
	// SDESOff: RTP/SAVP(F) toward the receiver means DTLS-SRTP, not SDES.
	SDESOff bool
	// RTCPMux: "offer" adds a=rtcp-mux, "demux" removes it (the relay
	// demultiplexes), "accept" and "require" keep it where the receiver
	// offered it.
	RTCPMux []string
	// GenerateMid gives every m-line an a=mid.
	GenerateMid bool
	// ReplaceZero writes the relay's address over a held stream's
	// 0.0.0.0 (rtpengine's replace=zero-address) instead of keeping
	// the old-style hold visible to the receiver.
	ReplaceZero bool
	// FingerprintHash is the hash of the relay's a=fingerprint
	// (rtpengine's DTLS-fingerprint: sha-1 ... sha-512); "" uses the
	// receiver's own hash when it gave one, else sha-256.
	FingerprintHash string
	// RejectICE, in an offer: the relay does no ICE toward the sender,
	// so the answer it gets carries none (rtpengine's reject ICE).
	RejectICE bool
	// Recrypt, in an offer: SDES on both sides is terminated on each leg
	// with keys of the relay's own instead of passing end to end
	// (rtpengine's recrypt); the call keeps it.
	Recrypt bool
	// SDESSuite says whether the relay may offer an SDES suite
	// (rtpengine's SDES-no-SUITE and SDES-only-SUITE); nil allows all.
	SDESSuite func(suite string) bool
	// SDESLifetime adds the key lifetime 2^31 to the relay's a=crypto
	// keys (rtpengine's SDES-lifetime).
	SDESLifetime bool
	// MediaFrom, when valid, is the sender's media address in place of
	// the SDP's (rtpengine's SIP-source-address: the received-from
	// address, for a sender behind NAT); the SDP's ports are kept.
	MediaFrom netip.Addr
	// Advertise, when valid, is written into the SDP in place of the
	// relay leg's address (rtpengine's media-address).
	Advertise netip.Addr
	// Family, when not relay.FamilyAny, is the family of the relay leg
	// the receiver is given (rtpengine's address-family).
	Family relay.Family

	// What the message says about its sender and the call (per-call
	// options, applied by Offer and Answer; see options.go).
	//
	// Label names the sender's side (rtpengine's label); "" keeps the
	// label it has.
	Label string
	// Asymmetric: the sender sends from another address than it receives
	// on, so the relay sends to its SDP address, not to the source it
	// latched (rtpengine's asymmetric). Each message of the side sets or
	// clears it.
	Asymmetric bool
	// Learning, NATWait, Handover and PierceNAT are the sender's
	// latching (rtpengine's endpoint-learning, NAT-wait, media handover
	// and pierce NAT; see relay.SideOptions), set or cleared by each
	// message of the side.
	Learning  relay.LearnMode
	NATWait   bool
	Handover  bool
	PierceNAT bool
	// NoPortLatching: when the sender announces another media address
	// for a stream it had, its leg gets new relay ports (rtpengine's no
	// port latching); the default keeps them (port latching).
	NoPortLatching bool
	// TOS: an offer sets the TOS of every packet the relay sends for the
	// call to it, the zero TOS being the default, unless KeepTOS says to
	// leave the call's as it is (rtpengine's TOS, read in offers only: a
	// missing one means the default, a negative one no change).
	TOS     relay.TOS
	KeepTOS bool
	// Drop: an offer or answer starts or stops dropping the call's media
	// (rtpengine's drop-traffic); DropKeep leaves it as it is.
	Drop DropTraffic
	// Direction names the relay interfaces (relay.AddressConfig.Name)
	// of an offer's new streams: the leg that faces the sender, then the
	// one that faces the receiver (rtpengine's direction); "" leaves a
	// leg to Config.Pick. The call keeps the choice for its later streams.
	Direction [2]string
	// DirectionPeer, where Direction is "", names the leg's interface
	// by an address: the one Config.Pick gives for the route to it
	// (rtpengine's inbound-peer and outbound-peer).
	DirectionPeer [2]netip.Addr

	// Which branch of a forked call an offer or answer is for (fork.go):
	// ViaBranch is rtpengine's via-branch, ToTag an offer's to-tag (a
	// re-INVITE's).
	ViaBranch, ToTag string
}

func (o *Options) viaBranch() string {
	if o == nil {
		return ""
	}
	return o.ViaBranch
}

func (o *Options) toTag() string {
	if o == nil {
		return ""
	}
	return o.ToTag
}

func (o *Options) mux(s string) bool {
	if o == nil {
		return false
	}
	for _, m := range o.RTCPMux {
		if strings.EqualFold(m, s) {
			return true
		}
	}
	return false
}

// rejectsMux reports rtpengine's rtcp-mux reject without offer or
// require: the offer goes on without a=rtcp-mux (sipd/ngbackend drops
// the line), so the answer to the offerer does not have it either, and
// the offerer then sends and expects RTCP on its RTCP port (RFC 5761
// section 5.1.1), whatever it offered.
func (o *Options) rejectsMux() bool {
	return o.mux("reject") && !o.mux("offer") && !o.mux("require")
}

// sideSec is what one side speaks on one m-line, and what the relay
// announced to it.
type sideSec struct {
	known bool // this side's SDP was seen
	kind  cryptoleg.Kind
	proto string
	ice   bool
	mux   bool // the side's SDP had a=rtcp-mux
	// From the side's SDP.
	ufrag       string
	fingerprint webrtcsdp.Fingerprint
	setup       string
	crypto      *webrtcsdp.Crypto
	// The relay's, toward this side: made once, so retransmissions and
	// re-INVITEs announce the same.
	creds    *ice.Creds
	key      *webrtcsdp.Crypto
	ourSetup string
	role     srtpleg.Role
}

// streamSec is an m-line's bridging state.
type streamSec struct {
	side     [2]sideSec
	pass     bool // nothing terminated: plain or SDES end to end
	rejected bool // cannot be bridged: port 0 both ways
	recrypt  bool // SDES is terminated even where it could pass (Options.Recrypt)
}

func (s *streamSec) bridged() bool { return !s.pass && !s.rejected }

var errNoBridge = errors.New("cannot bridge")

// kindOf is what an SDP m-line speaks.
func kindOf(m webrtcsdp.MediaInfo) cryptoleg.Kind {
	savp := strings.Contains(m.Proto, "SAVP")
	switch {
	case m.Proto == webrtcsdp.ProtoDTLS, savp && len(m.Crypto) == 0 && len(m.Fingerprints) > 0:
		return cryptoleg.DTLS
	case savp && len(m.Crypto) > 0:
		return cryptoleg.SDES
	}
	return cryptoleg.Plain
}

// kindFor is what a side offered proto speaks.
func kindFor(proto string, o *Options) cryptoleg.Kind {
	switch {
	case proto == webrtcsdp.ProtoDTLS:
		return cryptoleg.DTLS
	case strings.Contains(proto, "SAVP"):
		// rtpengine offers DTLS beside SDES on an SRTP protocol; the relay
		// offers one: DTLS when the flags ask for something only DTLS or
		// WebRTC has, SDES otherwise.
		if o != nil && !strings.EqualFold(o.DTLS, "off") && (o.SDESOff || strings.EqualFold(o.ICE, "force") ||
			strings.EqualFold(o.DTLS, "passive") || strings.EqualFold(o.DTLS, "active")) {
			return cryptoleg.DTLS
		}
		return cryptoleg.SDES
	}
	return cryptoleg.Plain
}

// sdesSuites are the a=crypto suites the relay can terminate (srtpleg).
var sdesSuites = map[string]bool{"AES_CM_128_HMAC_SHA1_80": true, "AES_CM_128_HMAC_SHA1_32": true}

// offerSuite is the suite the relay offers an SDES side: the first of its
// own the flags allow, "" if none.
func offerSuite(o *Options) string {
	for _, s := range []string{webrtcsdp.SuiteAES128SHA1_80, "AES_CM_128_HMAC_SHA1_32"} {
		if o == nil || o.SDESSuite == nil || o.SDESSuite(s) {
			return s
		}
	}
	return ""
}

// newKey makes the relay's a=crypto line in a suite.
func newKey(tag int, suite string) (*webrtcsdp.Crypto, error) {
	key := make([]byte, 30) // both suites: 128-bit key, 112-bit salt
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("sdes key: %w", err)
	}
	return &webrtcsdp.Crypto{Tag: tag, Suite: suite, KeyParams: "inline:" + base64.StdEncoding.EncodeToString(key), Key: key}, nil
}

// hasMKI reports whether an a=crypto line uses an MKI ("|1:4" after the
// key), which the relay's SRTP contexts do not carry.
func hasMKI(c webrtcsdp.Crypto) bool {
	first, _, _ := strings.Cut(c.KeyParams, ";")
	parts := strings.Split(first, "|")
	for _, p := range parts[1:] {
		if strings.Contains(p, ":") {
			return true
		}
	}
	return false
}

func roleOf(ourSetup string) srtpleg.Role {
	if ourSetup == webrtcsdp.SetupActive {
		return srtpleg.Client
	}
	return srtpleg.Server
}

// needsWebRTC reports whether SDP from side needs the bridging path at
// all: a secure m-line, options that ask for a profile, or a call already
// bridged. Plain calls keep the old, byte-preserving path.
func (cl *call) needsWebRTC(body []byte, o *Options, toWebRTC bool) bool {
	if len(cl.sec) > 0 || toWebRTC || o != nil && (o.Proto != "" || o.GenerateMid || len(o.RTCPMux) > 0 ||
		strings.EqualFold(o.ICE, "force")) {
		return true
	}
	s := string(body)
	return strings.Contains(s, "SAVP") || strings.Contains(s, "a=fingerprint") || strings.Contains(s, "a=crypto")
}

// plan works out, for SDP from side, what each m-line speaks on both
// sides, creating what the relay announces on the receiving side, and
// returns the m-lines' states by index. offer says whether the SDP is an
// offer (else it answers the other side's). It changes the call's state
// only when follow.
func (c *Controller) plan(cl *call, side relay.Side, in webrtcsdp.Offer, o *Options, offer, follow bool) (map[int]*streamSec, error) {
	other := 1 - side
	toWebRTC := o == nil && cl.webrtc[other]
	out := map[int]*streamSec{}
	audioSeen := false
	for _, m := range in.Media {
		ss := cl.sec[m.Index]
		if ss == nil {
			ss = &streamSec{}
		} else {
			cp := *ss
			ss = &cp // not followed: work on a copy
		}
		out[m.Index] = ss
		if m.Port == 0 {
			continue
		}
		s, t := &ss.side[side], &ss.side[other]
		s.known = true
		s.kind, s.proto, s.mux = kindOf(m), m.Proto, m.RTCPMux
		s.ice = m.Ufrag != "" && s.kind == cryptoleg.DTLS && !(offer && o != nil && o.RejectICE)
		s.ufrag, s.setup = m.Ufrag, m.Setup
		s.fingerprint = webrtcsdp.Fingerprint{}
		if len(m.Fingerprints) > 0 {
			s.fingerprint = m.Fingerprints[0]
		}
		s.crypto = nil
		for i := range m.Crypto {
			if sdesSuites[m.Crypto[i].Suite] && !hasMKI(m.Crypto[i]) {
				cr := m.Crypto[i]
				s.crypto = &cr
				break
			}
		}
		if s.kind == cryptoleg.SDES && s.crypto == nil && offer {
			return nil, fmt.Errorf("%w: m-line %d: no a=crypto suite the relay supports (AES_CM_128_HMAC_SHA1_80 or _32)", errNoBridge, m.Index)
		}
		if offer && !t.known {
			// What the receiver is offered.
			proto := m.Proto
			switch {
			case o != nil && o.Proto != "":
				proto = o.Proto
			case toWebRTC:
				proto = webrtcsdp.ProtoDTLS
			case o == nil && s.kind == cryptoleg.DTLS:
				proto = webrtcsdp.ProtoAVP
			}
			if !webrtcsdp.KnownProto(proto) {
				return nil, fmt.Errorf("%w: transport protocol %q", errNoBridge, proto)
			}
			t.proto = proto
			t.kind = kindFor(proto, o)
			if t.kind == cryptoleg.Plain && s.kind == cryptoleg.DTLS && proto == webrtcsdp.ProtoDTLS {
				t.kind = cryptoleg.DTLS
			}
			t.ice = t.kind == cryptoleg.DTLS && (o == nil || !strings.EqualFold(o.ICE, "remove"))
		}
		if offer && o != nil && o.Recrypt {
			ss.recrypt = true
		}
		ss.pass = s.kind == t.kind && s.kind != cryptoleg.DTLS && s.proto == t.proto && !(ss.recrypt && s.kind == cryptoleg.SDES)
		if ss.pass {
			continue
		}
		secure := s.kind == cryptoleg.DTLS || t.kind == cryptoleg.DTLS
		if secure && (m.Type != "audio" || audioSeen) {
			ss.rejected = true
			continue
		}
		if m.Type == "audio" {
			audioSeen = true
		}
		// The relay's side of the sender's leg, for the SDP it will get.
		if err := c.prepare(s, offer, o, true); err != nil {
			return nil, fmt.Errorf("m-line %d side %s: %w", m.Index, side, err)
		}
		if offer && !t.known {
			if err := c.prepare(t, true, o, false); err != nil {
				return nil, fmt.Errorf("m-line %d side %s: %w", m.Index, relay.Side(other), err)
			}
		}
		if !offer && t.kind == cryptoleg.DTLS && t.setup == webrtcsdp.SetupActpass && o != nil {
			// The flags of the answer choose the role toward the offerer
			// (Kamailio gives DTLS=passive with the reply to a browser).
			if p := strings.ToLower(o.DTLS); p == webrtcsdp.SetupActive || p == webrtcsdp.SetupPassive {
				t.ourSetup, t.role = p, roleOf(p)
			}
		}
	}
	if follow {
		if cl.sec == nil {
			cl.sec = map[int]*streamSec{}
		}
		for i, ss := range out {
			cl.sec[i] = ss
		}
	}
	return out, nil
}

// prepare fills in what the relay announces to a side: ICE credentials,
// SDES key and a=setup. sender says the side's own SDP is at hand (offer
// says whether that SDP was an offer); otherwise the relay is about to
// offer to it.
func (c *Controller) prepare(x *sideSec, offer bool, o *Options, sender bool) error {
	if x.kind == cryptoleg.DTLS && x.ice && x.creds == nil {
		cr, err := ice.NewCreds()
		if err != nil {
			return err
		}
		x.creds = &cr
	}
	prefer := ""
	if o != nil {
		prefer = strings.ToLower(o.DTLS)
		if prefer != webrtcsdp.SetupActive && prefer != webrtcsdp.SetupPassive {
			prefer = ""
		}
	}
	switch {
	case x.kind == cryptoleg.SDES && x.key == nil:
		tag, suite := 1, offerSuite(o)
		if sender && x.crypto != nil {
			tag, suite = x.crypto.Tag, x.crypto.Suite
		}
		if suite == "" {
			return fmt.Errorf("%w: the SDES flags leave no suite the relay supports (AES_CM_128_HMAC_SHA1_80 or _32)", errNoBridge)
		}
		k, err := newKey(tag, suite)
		if err != nil {
			return err
		}
		if o != nil && o.SDESLifetime {
			k.KeyParams += "|2^31"
		}
		x.key = k
	case x.kind == cryptoleg.DTLS && sender && offer:
		// We answer the side's offer.
		s, err := webrtcsdp.AnswerSetup(x.setup, prefer)
		if err != nil {
			return err
		}
		x.ourSetup, x.role = s, roleOf(s)
	case x.kind == cryptoleg.DTLS && sender:
		// The side answered our offer: its a=setup settles the roles.
		switch x.setup {
		case webrtcsdp.SetupActive:
			x.role = srtpleg.Server
		case webrtcsdp.SetupPassive:
			x.role = srtpleg.Client
		default:
			return fmt.Errorf("%w: answer with a=setup:%q", errNoBridge, x.setup)
		}
	case x.kind == cryptoleg.DTLS && x.ourSetup == "":
		x.ourSetup = webrtcsdp.SetupActpass
		if prefer != "" {
			x.ourSetup = prefer
		}
		x.role = roleOf(x.ourSetup)
	}
	return nil
}

// security is what the relay terminates on the leg facing x.
func (x *sideSec) security() (relay.LegSecurity, bool) {
	switch x.kind {
	case cryptoleg.DTLS:
		ls := relay.LegSecurity{Kind: cryptoleg.DTLS, Role: x.role,
			Fingerprint: srtpleg.Fingerprint{Hash: x.fingerprint.Hash, Value: x.fingerprint.Value}}
		if x.creds != nil {
			cr := *x.creds
			cr.RemoteUfrag = x.ufrag
			ls.ICE = &cr
		}
		return ls, true
	case cryptoleg.SDES:
		if x.key == nil || x.crypto == nil {
			return relay.LegSecurity{}, false // the side has not given its key yet
		}
		return relay.LegSecurity{Kind: cryptoleg.SDES,
			LocalKey:  srtpleg.Key{Suite: x.key.Suite, Key: x.key.Key},
			RemoteKey: srtpleg.Key{Suite: x.crypto.Suite, Key: x.crypto.Key}}, true
	}
	return relay.LegSecurity{}, false
}

// secure tells the engine what to terminate on both legs of an m-line:
// nothing on a leg whose side speaks plain RTP, or on both when the
// crypto passes through (an answer can turn a bridged offer into that).
func (c *Controller) secure(id string, index int, ss *streamSec) error {
	for side := relay.SideA; side <= relay.SideB; side++ {
		ls, ok := ss.side[side].security()
		switch {
		case ss.pass || ss.side[side].kind == cryptoleg.Plain:
			ls = relay.LegSecurity{}
		case !ok:
			continue // an SDES side whose key is not known yet
		}
		if err := c.cfg.Engine.SetSecurity(id, index, side, ls); err != nil {
			return fmt.Errorf("set security of stream %d side %s: %w", index, side, err)
		}
	}
	return nil
}

// rewriteWebRTC writes the receiver's profile into out, the SDP from side
// already pointed at the relay, m-line by m-line.
func (c *Controller) rewriteWebRTC(out []byte, side relay.Side, plan map[int]*streamSec, streams map[int]relay.StreamPorts,
	o *Options, offer bool) ([]byte, error) {
	b, err := webrtcsdp.Parse(out)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoBridge, err)
	}
	other := 1 - side
	var bundle []string
	toDTLS := false
	mids := []string(nil)
	if o != nil && o.GenerateMid {
		mids = webrtcsdp.EnsureMid(b)
	}
	for i := range b.Media {
		ss := plan[i]
		if ss == nil || ss.pass {
			continue
		}
		if ss.rejected {
			if err := webrtcsdp.Reject(b, i); err != nil {
				return nil, err
			}
			continue
		}
		t := &ss.side[other]
		if t.kind == cryptoleg.Plain && ss.side[side].kind == cryptoleg.Plain {
			continue
		}
		sp, ok := streams[i]
		if !ok {
			continue // rejected by the sender (port 0)
		}
		l := sp.Leg(other)
		addr := l.Advertised
		if !addr.IsValid() {
			addr = l.Local
		}
		p := webrtcsdp.Profile{Proto: t.proto}
		if t.kind == cryptoleg.DTLS {
			toDTLS = true
			if t.creds != nil {
				rtcp := l.RTCP
				if offer || t.mux {
					rtcp = 0
				}
				p.ICE = &webrtcsdp.ICE{Ufrag: t.creds.LocalUfrag, Pwd: t.creds.LocalPwd, Addrs: []netip.Addr{addr}, RTP: l.RTP, RTCP: rtcp}
			}
			fp, err := c.fingerprint(t, o)
			if err != nil {
				return nil, fmt.Errorf("%w: m-line %d: %w", errNoBridge, i, err)
			}
			p.DTLS = &webrtcsdp.DTLS{Fingerprint: fp, Setup: t.ourSetup}
		}
		if t.kind == cryptoleg.SDES && t.key != nil {
			p.Crypto = []webrtcsdp.Crypto{*t.key}
		}
		switch {
		case o.mux("demux"):
			p.RTCPMux, p.RTCPPort = webrtcsdp.RTCPMuxDemux, l.RTCP
		case !offer:
			p.RTCPMux, p.MuxOffered = webrtcsdp.RTCPMuxAccept, t.mux
		case o.mux("offer") || t.kind == cryptoleg.DTLS:
			p.RTCPMux = webrtcsdp.RTCPMuxOffer
		}
		if err := webrtcsdp.Apply(b, i, p); err != nil {
			return nil, fmt.Errorf("%w: m-line %d: %w", errNoBridge, i, err)
		}
		if t.kind == cryptoleg.DTLS {
			if mids == nil {
				mids = webrtcsdp.EnsureMid(b)
			}
			bundle = append(bundle, mids[i])
		}
	}
	if toDTLS {
		webrtcsdp.SetBundle(b, bundle)
	}
	return b.Bytes(), nil
}

// fingerprint is the relay's a=fingerprint toward t: in the hash the
// flags name, else in the one t's own a=fingerprint uses, else sha-256
// (rtpengine's DTLS-fingerprint: "The default is SHA-256, or the same
// hashing function as was used by the peer").
func (c *Controller) fingerprint(t *sideSec, o *Options) (webrtcsdp.Fingerprint, error) {
	der := c.cfg.Engine.CertificateDER()
	if o != nil && o.FingerprintHash != "" {
		return webrtcsdp.FingerprintWith(der, o.FingerprintHash)
	}
	if t.fingerprint.Hash != "" {
		if fp, err := webrtcsdp.FingerprintWith(der, t.fingerprint.Hash); err == nil {
			return fp, nil
		}
	}
	return webrtcsdp.FingerprintOf(der), nil
}

// planSDP parses SDP from side for plan. A body webrtcsdp cannot read is
// refused: bridging it by halves would leak plain media.
func (c *Controller) planSDP(cl *call, side relay.Side, body []byte, o *Options, offer, follow bool) (map[int]*streamSec, error) {
	b, err := webrtcsdp.Parse(body)
	if err != nil {
		return nil, fmt.Errorf("parse sdp from side %s: %w: %w", side, sdprewrite.ErrSDP, err)
	}
	info, err := webrtcsdp.Describe(b)
	if err != nil {
		return nil, fmt.Errorf("parse sdp from side %s: %w: %w", side, sdprewrite.ErrSDP, err)
	}
	plan, err := c.plan(cl, side, info, o, offer, follow)
	if err != nil {
		return nil, fmt.Errorf("sdp from side %s: %w: %w", side, sdprewrite.ErrSDP, err)
	}
	return plan, nil
}
