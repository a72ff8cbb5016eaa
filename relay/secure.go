package relay

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"sipxdp/relay/cryptoleg"
	"sipxdp/relay/ice"
	"sipxdp/relay/srtpleg"
)

// LegSecurity is what the relay terminates on one leg of a stream: nothing
// (plain RTP, the zero value), SDES-SRTP, or DTLS-SRTP with or without
// ICE-lite. The SIP layer works it out from the SDP each side sends and
// what the other side needs; the engine keeps the keys and the handshake.
type LegSecurity struct {
	Kind cryptoleg.Kind
	// ICE: the relay's credentials on this leg (announced in the SDP toward
	// it) and the endpoint's ufrag, "" until its SDP is known.
	ICE *ice.Creds
	// DTLS: the relay's role and the endpoint's a=fingerprint (zero until
	// its SDP is known).
	Role        srtpleg.Role
	Fingerprint srtpleg.Fingerprint
	// SDES: the key the relay announced toward the endpoint and the one
	// the endpoint announced.
	LocalKey, RemoteKey srtpleg.Key
}

// Sender is implemented by a slow path that can send a datagram from one of
// its relay ports: what a crypto leg answers STUN and runs DTLS with.
type Sender interface {
	SendFrom(local, dst netip.AddrPort, b []byte) error
}

// ReasonLegFailed starts the Event reason of a call whose crypto leg
// failed (DTLS handshake error or timeout): the call ends, it never falls
// back to plain RTP.
const ReasonLegFailed = "srtp leg failed"

type legFailure struct {
	callID string
	leg    *cryptoleg.Leg
	err    error
}

// CertificateDER is the relay's DTLS certificate, whose fingerprint the SIP
// layer announces on WebRTC legs.
func (e *Engine) CertificateDER() []byte { return e.cert.DER() }

// SetSecurity sets what the relay terminates on one leg. Called again with
// the same local parameters (the answer after the offer), it completes the
// leg; with other ones (new keys, another kind), the leg is made anew. The
// stream's flows leave the kernel path while any leg is secured.
func (e *Engine) SetSecurity(callID string, index int, side Side, sec LegSecurity) error {
	if side > SideB {
		return fmt.Errorf("set security %q/%d: bad side %d", callID, index, side)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	st, err := e.streamOf("set security", callID, index)
	if err != nil {
		return err
	}
	l := &st.legs[side]
	switch {
	case sec.Kind == cryptoleg.Plain:
		e.closeLeg(l)
	case l.sec != nil && sameLocal(l.spec, sec):
		if sec.Kind == cryptoleg.DTLS {
			r := cryptoleg.Remote{Fingerprint: sec.Fingerprint, Role: sec.Role}
			if sec.ICE != nil {
				r.ICEUfrag = sec.ICE.RemoteUfrag
			}
			if err := l.sec.SetRemote(r); err != nil {
				return fmt.Errorf("set security %q/%d side %s: %w", callID, index, side, err)
			}
		}
	default:
		e.closeLeg(l)
		sl, ok := e.slow.(Sender)
		if !ok {
			return fmt.Errorf("set security %q/%d side %s: the %s datapath cannot terminate SRTP", callID, index, side, e.slow.Name())
		}
		local := l.local(compRTP)
		cfg := cryptoleg.Config{
			Kind: sec.Kind, ICE: sec.ICE,
			DTLS:     srtpleg.Config{Role: sec.Role, Certificate: e.cert, Remote: sec.Fingerprint, Timeout: e.cfg.DTLSTimeout},
			LocalKey: sec.LocalKey, RemoteKey: sec.RemoteKey,
			Send: func(b []byte, dst netip.AddrPort) error { return sl.SendFrom(local, dst, b) },
		}
		var cl *cryptoleg.Leg
		cfg.OnReady = func() { e.dtlsDone.Add(1) }
		cfg.OnFail = func(err error) {
			e.legFails.Add(1)
			select {
			case e.failq <- legFailure{callID: callID, leg: cl, err: err}:
			default:
				e.failDrops.Add(1)
			}
		}
		cl, err = cryptoleg.New(cfg)
		if err != nil {
			return fmt.Errorf("set security %q/%d side %s: %w", callID, index, side, err)
		}
		l.sec = cl
	}
	l.spec = sec
	err = e.reconcile(st)
	e.armSecurity(st)
	if err != nil {
		return fmt.Errorf("set security %q/%d side %s: %w", callID, index, side, err)
	}
	return nil
}

// sameLocal reports whether b keeps the leg a made: same kind and the same
// relay-side parameters (ICE credentials, SDES keys).
func sameLocal(a, b LegSecurity) bool {
	if a.Kind != b.Kind {
		return false
	}
	switch a.Kind {
	case cryptoleg.SDES:
		return a.LocalKey.Suite == b.LocalKey.Suite && slices.Equal(a.LocalKey.Key, b.LocalKey.Key) &&
			a.RemoteKey.Suite == b.RemoteKey.Suite && slices.Equal(a.RemoteKey.Key, b.RemoteKey.Key)
	case cryptoleg.DTLS:
		if (a.ICE == nil) != (b.ICE == nil) {
			return false
		}
		return a.ICE == nil || a.ICE.LocalUfrag == b.ICE.LocalUfrag && a.ICE.LocalPwd == b.ICE.LocalPwd
	}
	return true
}

// armSecurity starts the handshake clock of a stream's DTLS legs once both
// sides have announced their media (the answer is out), and starts a
// client-role leg without ICE toward its peer. Caller holds e.mu.
func (e *Engine) armSecurity(st *stream) {
	if !st.legs[SideA].peerSet || !st.legs[SideB].peerSet {
		return
	}
	for s := range st.legs {
		l := &st.legs[s]
		if l.sec == nil || l.sec.Kind() != cryptoleg.DTLS {
			continue
		}
		l.sec.Arm(e.cfg.DTLSTimeout)
		if !l.sec.ICE() && l.spec.Role == srtpleg.Client {
			dst := l.latch[compRTP].Dest()
			if !dst.IsValid() {
				dst = l.announced[compRTP]
			}
			if known(dst) {
				l.sec.Start(dst)
			}
		}
	}
}

// closeSecurity ends the crypto of both legs of a stream. Caller holds e.mu.
func (e *Engine) closeSecurity(st *stream) {
	for s := range st.legs {
		e.closeLeg(&st.legs[s])
	}
}

func (e *Engine) closeLeg(l *leg) {
	if l.sec == nil {
		return
	}
	if err := l.sec.Close(); err != nil && e.debug() {
		e.log.Debug("close crypto leg", "err", err)
	}
	l.sec = nil
	l.spec = LegSecurity{}
}

// legFailed turns a failed crypto leg into an Event that ends its call,
// unless the leg was replaced or the call ended meanwhile.
func (e *Engine) legFailed(f legFailure) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.sessions[f.callID]
	if !ok || s.deleted {
		return
	}
	for _, st := range s.streams {
		for i := range st.legs {
			if st.legs[i].sec == f.leg {
				reason := ReasonLegFailed + ": " + f.err.Error()
				e.log.Warn("crypto leg failed; ending the call", "call", f.callID, "stream", st.index,
					"side", Side(i).String(), "err", f.err)
				e.pending = append(e.pending, Event{CallID: f.callID, Reason: reason, At: e.now()})
				return
			}
		}
	}
}

// IsLegFailure reports whether an Event's reason is a failed crypto leg.
func IsLegFailure(reason string) bool {
	return strings.HasPrefix(reason, ReasonLegFailed)
}
