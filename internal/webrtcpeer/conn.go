package webrtcpeer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v4"

	"sipxdp/relay/ice"
	"sipxdp/relay/srtpleg"
)

// remoteState is what Connect learnt from the remote SDP, shared with the read goroutine.
type remoteState struct {
	addr  netip.AddrPort
	ufrag string
	// responder answers the remote's checks (consent, or a full agent's); only the read goroutine uses it.
	responder *ice.Responder
	// integ is the remote's pwd: it signs our checks and verifies their responses.
	integ     stun.MessageIntegrity
	txid      [stun.TransactionIDSize]byte                 // our nominating check's
	consentTx atomic.Pointer[[stun.TransactionIDSize]byte] // the latest consent check's
	pc        *srtpleg.PacketConn                          // the DTLS association's datagrams; nil with NoDTLS

	iceOnce sync.Once
	iceDone chan struct{}          // closed by the first valid success response
	iceErr  atomic.Pointer[string] // the last reason a response was refused, for ErrICE's message
}

// Retransmission of our check (RFC 8489 section 6.2.1 doubles the RTO; it starts lower here because the peer
// runs on loopback and in namespaces, where a lost first check should not cost half a second).
const (
	checkRTO    = 100 * time.Millisecond
	maxCheckRTO = 800 * time.Millisecond
)

// Connect makes the media path to the remote whose SDP is remote (the answer to our Offer, or the offer we
// answered): ICE as the controlling agent toward the remote's candidate, then the DTLS handshake in the role
// the a=setup lines give, checking the remote's certificate against its a=fingerprint. It returns once the SRTP
// session is up (with Config.NoDTLS, once ICE is), or with an error that wraps ErrICE, ErrHandshakeTimeout,
// ErrFingerprint, ErrRemoteAlert, ErrClosed or ctx's error and says which address and role. Connect runs once
// per peer.
func (p *Peer) Connect(ctx context.Context, remote []byte) error {
	p.mu.Lock()
	setup, again := p.setup, p.connecting
	p.connecting = true
	p.mu.Unlock()
	if again {
		return errors.New("webrtcpeer: Connect runs once")
	}
	rd, err := parseRemote(remote, p.local.Addr().Is4())
	if err != nil {
		return fmt.Errorf("webrtcpeer: remote sdp: %w", err)
	}
	role, err := dtlsRole(setup, rd.setup)
	if err != nil {
		return fmt.Errorf("webrtcpeer: remote sdp: %w", err)
	}
	responder, err := ice.NewResponder(ice.Creds{LocalUfrag: p.ufrag, LocalPwd: p.pwd, RemoteUfrag: rd.ufrag})
	if err != nil {
		return fmt.Errorf("webrtcpeer: remote sdp: a=ice-ufrag: %w", err)
	}
	if !ice.ValidPwd(rd.pwd) {
		return fmt.Errorf("webrtcpeer: remote sdp: a=ice-pwd: %w", ice.ErrCreds)
	}
	r := &remoteState{
		addr: rd.addr, responder: responder, integ: stun.NewShortTermIntegrity(rd.pwd), ufrag: rd.ufrag,
		txid: stun.NewTransactionID(), iceDone: make(chan struct{}),
	}
	raddr := net.UDPAddrFromAddrPort(rd.addr)
	if !p.cfg.NoDTLS {
		// Made before the first check: a remote that is the DTLS client starts its handshake as soon as our
		// nominating check reaches it, and its ClientHello must wait in the queue rather than be dropped.
		r.pc = srtpleg.NewPacketConn(p.sock.LocalAddr(), raddr, func(b []byte) error {
			_, err := p.sock.WriteToUDPAddrPort(b, rd.addr)
			return err
		})
	}
	p.mu.Lock()
	if p.isClosed() {
		p.mu.Unlock()
		return ErrClosed
	}
	p.remote.Store(r)
	p.mu.Unlock()

	if err := p.check(ctx, r); err != nil {
		if r.pc != nil {
			_ = r.pc.Close()
		}
		return err
	}
	if p.cfg.NoDTLS {
		return p.connected(r, nil)
	}
	timeout := p.cfg.HandshakeTimeout
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	sess, err := srtpleg.Handshake(hctx, r.pc, raddr, srtpleg.Config{
		Role: role, Certificate: p.cert, Remote: srtpleg.Fingerprint(rd.fingerprint), Timeout: timeout,
	})
	if err != nil {
		switch {
		case p.isClosed():
			return ErrClosed
		case errors.Is(err, srtpleg.ErrFingerprint):
			return fmt.Errorf("webrtcpeer: dtls handshake as %s with %s: remote's a=fingerprint %s: %w", role, rd.addr, rd.fingerprint, err)
		case ctx.Err() != nil:
			return fmt.Errorf("webrtcpeer: dtls handshake as %s with %s: %w", role, rd.addr, ctx.Err())
		case hctx.Err() != nil:
			return fmt.Errorf("%w: as %s with %s, no completion within %s (%v)", ErrHandshakeTimeout, role, rd.addr, timeout, err)
		case isAlert(err):
			return fmt.Errorf("%w: as %s with %s (%v)", ErrRemoteAlert, role, rd.addr, err)
		}
		return fmt.Errorf("webrtcpeer: dtls handshake as %s with %s: %w", role, rd.addr, err)
	}
	return p.connected(r, sess)
}

// connected stores the session and starts the consent checks, unless Close came first (under mu, so that
// Close's wg.Wait sees the consent goroutine or it never starts).
func (p *Peer) connected(r *remoteState, sess *srtpleg.Session) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.isClosed() {
		if sess != nil {
			_ = sess.Close()
		}
		return ErrClosed
	}
	if sess != nil {
		p.sess.Store(sess)
	}
	if p.cfg.ConsentInterval > 0 {
		p.wg.Add(1)
		go p.consent(r)
	}
	return nil
}

// consent sends a Binding request every ConsentInterval, randomised by ±20% as RFC 7675 section 5.1 asks,
// as browsers do for as long as a call lasts; responses are counted by handleSTUN.
func (p *Peer) consent(r *remoteState) {
	defer p.wg.Done()
	next := func() time.Duration {
		d := p.cfg.ConsentInterval
		return d*8/10 + rand.N(d*4/10+1)
	}
	t := time.NewTimer(next())
	defer t.Stop()
	for {
		select {
		case <-p.closed:
			return
		case <-t.C:
		}
		txid := stun.NewTransactionID()
		if req, err := p.bindingRequest(r, txid, false); err == nil {
			r.consentTx.Store(&txid)
			if _, err := p.sock.WriteToUDPAddrPort(req, r.addr); err == nil {
				p.c.consentSent.Add(1)
			}
		}
		t.Reset(next())
	}
}

// isAlert tells pion's error for a fatal alert from the remote: its type is unexported, but it has this method.
func isAlert(err error) bool {
	var a interface{ IsFatalOrCloseNotify() bool }
	return errors.As(err, &a) && a.IsFatalOrCloseNotify()
}

// bindingRequest is a check as the controlling agent sends it (RFC 8445 section 7.2.4: USERNAME
// remote:local, PRIORITY, ICE-CONTROLLING, USE-CANDIDATE when it nominates, MESSAGE-INTEGRITY with the
// remote's pwd, FINGERPRINT). Consent checks are the same without USE-CANDIDATE (RFC 7675 section 5.1).
func (p *Peer) bindingRequest(r *remoteState, txid [stun.TransactionIDSize]byte, nominate bool) ([]byte, error) {
	var prio [4]byte
	// A peer-reflexive candidate's priority (RFC 8445 section 7.1.1): type preference 110, component 1.
	binary.BigEndian.PutUint32(prio[:], 110<<24|65535<<8|255)
	setters := []stun.Setter{stun.NewTransactionIDSetter(txid), stun.BindingRequest,
		stun.NewUsername(r.ufrag + ":" + p.ufrag),
		stun.RawAttribute{Type: stun.AttrPriority, Value: prio[:]},
		stun.RawAttribute{Type: stun.AttrICEControlling, Value: p.tieBreaker[:]},
	}
	if nominate {
		setters = append(setters, stun.RawAttribute{Type: stun.AttrUseCandidate})
	}
	m, err := stun.Build(append(setters, r.integ, stun.Fingerprint)...)
	if err != nil {
		return nil, fmt.Errorf("webrtcpeer: binding request: %w", err)
	}
	return m.Raw, nil
}

// check sends our nominating check and retransmits it until the read goroutine has seen a valid success
// response.
func (p *Peer) check(ctx context.Context, r *remoteState) error {
	req, err := p.bindingRequest(r, r.txid, true)
	if err != nil {
		return err
	}
	deadline := time.NewTimer(p.cfg.ICETimeout)
	defer deadline.Stop()
	rto := checkRTO
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-r.iceDone:
			return nil
		case <-retry.C:
			if _, err := p.sock.WriteToUDPAddrPort(req, r.addr); err != nil && !p.isClosed() {
				return fmt.Errorf("webrtcpeer: ice check to %s: %w", r.addr, err)
			}
			retry.Reset(rto)
			rto = min(2*rto, maxCheckRTO)
		case <-deadline.C:
			why := "no response"
			if s := r.iceErr.Load(); s != nil {
				why = *s
			}
			return fmt.Errorf("%w: no valid binding response from %s within %s (%s)", ErrICE, r.addr, p.cfg.ICETimeout, why)
		case <-ctx.Done():
			return fmt.Errorf("webrtcpeer: ice check to %s: %w", r.addr, ctx.Err())
		case <-p.closed:
			return ErrClosed
		}
	}
}

// readLoop is the one reader of the socket.
func (p *Peer) readLoop() {
	defer p.wg.Done()
	// Larger than any datagram a relay sends (RTP is below the MTU, pion fragments DTLS flights below it), and
	// small, as a load generator runs hundreds of peers.
	buf := make([]byte, 1<<12)
	for {
		n, src, err := p.sock.ReadFromUDPAddrPort(buf)
		if err != nil {
			if p.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.handle(buf[:n], src)
	}
}

// handle demultiplexes one datagram (RFC 7983, by relay/ice.Demux): STUN to the check logic, DTLS to the
// handshake's PacketConn, SRTP/SRTCP through the session to the read queues. Only the remote's address is
// listened to, except for STUN requests, which the Responder's credentials check guards.
func (p *Peer) handle(b []byte, src netip.AddrPort) {
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	r := p.remote.Load()
	if r == nil {
		p.c.ignored.Add(1)
		return
	}
	switch ice.Demux(b) {
	case ice.KindSTUN:
		p.handleSTUN(r, b, src)
	case ice.KindDTLS:
		if r.pc == nil || src != r.addr || !r.pc.Deliver(b) {
			p.c.ignored.Add(1)
		}
	case ice.KindRTP:
		s := p.sess.Load()
		if s == nil || src != r.addr {
			p.c.ignored.Add(1)
			return
		}
		// RFC 5761 section 4: on a muxed port, payload types 192-223 in the second byte are RTCP.
		if len(b) > 1 && b[1] >= 192 && b[1] <= 223 {
			if out, err := s.DecryptRTCP(nil, b); err == nil {
				p.enqueue(p.rtcpIn, out, &p.c.rtcpReceived)
			}
			return
		}
		if out, err := s.DecryptRTP(nil, b); err == nil {
			p.enqueue(p.rtpIn, out, &p.c.rtpReceived)
		}
	default:
		p.c.ignored.Add(1)
	}
}

func (p *Peer) enqueue(q chan []byte, pkt []byte, n *atomic.Uint64) {
	select {
	case q <- pkt:
		n.Add(1)
	default:
		p.c.queueDrops.Add(1)
	}
}

// handleSTUN answers the remote's Binding requests that carry our credentials, and takes the success response
// to our check when it comes from the checked address and verifies with the remote's pwd (RFC 8445 section
// 7.2.5: the source must be where the request went, and the integrity that of the remote's password).
func (p *Peer) handleSTUN(r *remoteState, b []byte, src netip.AddrPort) {
	m := &p.msg
	m.Raw = append(m.Raw[:0], b...)
	if err := m.Decode(); err != nil {
		p.c.ignored.Add(1)
		return
	}
	switch m.Type.Class {
	case stun.ClassRequest:
		res := r.responder.Handle(b, src)
		if res.Reason != ice.Answered {
			p.c.ignored.Add(1)
			return
		}
		if _, err := p.sock.WriteToUDPAddrPort(res.Response, src); err == nil {
			p.c.stunAnswered.Add(1)
		}
	case stun.ClassSuccessResponse, stun.ClassErrorResponse:
		nominating := m.TransactionID == r.txid
		consent := r.consentTx.Load()
		if m.Type.Method != stun.MethodBinding || src != r.addr || !nominating && (consent == nil || m.TransactionID != *consent) {
			p.c.ignored.Add(1)
			return
		}
		if why := verifyResponse(r, m); why != "" {
			p.c.ignored.Add(1)
			if nominating {
				r.iceErr.Store(&why)
			}
			return
		}
		if nominating {
			r.iceOnce.Do(func() { close(r.iceDone) })
		} else {
			p.c.consentAcked.Add(1)
		}
	default:
		p.c.ignored.Add(1)
	}
}

// verifyResponse says why a response to one of our checks is not a success, or "" when it is one.
func verifyResponse(r *remoteState, m *stun.Message) string {
	if err := stun.Fingerprint.Check(m); err != nil {
		return "response without a valid FINGERPRINT"
	}
	if m.Type.Class == stun.ClassErrorResponse {
		var ec stun.ErrorCodeAttribute
		if err := ec.GetFrom(m); err != nil {
			return "error response without ERROR-CODE"
		}
		return fmt.Sprintf("error response %d %s", ec.Code, ec.Reason)
	}
	if err := r.integ.Check(m); err != nil {
		return "success response fails MESSAGE-INTEGRITY with the remote's a=ice-pwd"
	}
	return ""
}

// WriteRTP encrypts one RTP packet (header and payload, as the caller builds it) and sends it to the remote.
func (p *Peer) WriteRTP(pkt []byte) error { return p.write(pkt, false, false) }

// WriteRTCP is WriteRTP for one RTCP packet (or compound packet).
func (p *Peer) WriteRTCP(pkt []byte) error { return p.write(pkt, true, false) }

// WriteCorruptRTP is WriteRTP with the last byte of the authentication tag flipped, so that the remote must
// drop the packet and count it (a negative test). It advances the SRTP sequence state like a good packet.
func (p *Peer) WriteCorruptRTP(pkt []byte) error { return p.write(pkt, false, true) }

func (p *Peer) write(pkt []byte, rtcp, corrupt bool) error {
	if p.isClosed() {
		return ErrClosed
	}
	s := p.sess.Load()
	if s == nil {
		return ErrNotConnected
	}
	to := p.remote.Load().addr
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	var (
		out []byte
		err error
	)
	if rtcp {
		out, err = s.EncryptRTCP(p.wbuf[:0], pkt)
	} else {
		out, err = s.EncryptRTP(p.wbuf[:0], pkt)
	}
	if err != nil {
		return fmt.Errorf("webrtcpeer: %w", err)
	}
	if cap(out) > cap(p.wbuf) {
		p.wbuf = out[:0]
	}
	if corrupt {
		out[len(out)-1] ^= 0xff // the tag ends the packet in every profile srtpleg negotiates
	}
	if _, err := p.sock.WriteToUDPAddrPort(out, to); err != nil {
		return fmt.Errorf("webrtcpeer: send to %s: %w", to, err)
	}
	switch {
	case corrupt:
		p.c.corruptSent.Add(1)
	case rtcp:
		p.c.rtcpSent.Add(1)
	default:
		p.c.rtpSent.Add(1)
	}
	return nil
}

// ReadRTP returns the next RTP packet the remote sent, decrypted; packets that fail authentication are
// dropped and counted in Stats, not returned.
func (p *Peer) ReadRTP(ctx context.Context) ([]byte, error) { return p.read(ctx, p.rtpIn) }

// ReadRTCP is ReadRTP for RTCP.
func (p *Peer) ReadRTCP(ctx context.Context) ([]byte, error) { return p.read(ctx, p.rtcpIn) }

func (p *Peer) read(ctx context.Context, q chan []byte) ([]byte, error) {
	select {
	case b := <-q:
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.closed:
		return nil, ErrClosed
	}
}
