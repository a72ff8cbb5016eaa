package webrtcpeer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
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
	addr      netip.AddrPort
	responder *ice.Responder        // answers the remote's checks (consent, or a full agent's); read goroutine only
	integ     stun.MessageIntegrity // the remote's pwd: signs our checks and verifies their responses
	txid      [stun.TransactionIDSize]byte
	pc        *srtpleg.PacketConn // the DTLS association's datagrams; nil with NoDTLS

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
// ErrFingerprint, ErrRemoteAlert, ErrClosed or ctx's error and says which address and role. Connect runs once per peer.
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
		addr: rd.addr, responder: responder, integ: stun.NewShortTermIntegrity(rd.pwd),
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

	if err := p.check(ctx, r, rd.ufrag); err != nil {
		if r.pc != nil {
			_ = r.pc.Close()
		}
		return err
	}
	if p.cfg.NoDTLS {
		return nil
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
	p.mu.Lock()
	if p.isClosed() {
		p.mu.Unlock()
		_ = sess.Close()
		return ErrClosed
	}
	p.sess.Store(sess)
	p.mu.Unlock()
	return nil
}

// isAlert tells pion's error for a fatal alert from the remote: its type is unexported, but it has this method.
func isAlert(err error) bool {
	var a interface{ IsFatalOrCloseNotify() bool }
	return errors.As(err, &a) && a.IsFatalOrCloseNotify()
}

// check sends our nominating Binding request (RFC 8445 section 7.2.4: USERNAME remote:local, PRIORITY,
// ICE-CONTROLLING, USE-CANDIDATE, MESSAGE-INTEGRITY with the remote's pwd, FINGERPRINT) and retransmits it
// until the read goroutine has seen a valid success response.
func (p *Peer) check(ctx context.Context, r *remoteState, remoteUfrag string) error {
	var prio [4]byte
	// A peer-reflexive candidate's priority (RFC 8445 section 7.1.1): type preference 110, component 1.
	binary.BigEndian.PutUint32(prio[:], 110<<24|65535<<8|255)
	req, err := stun.Build(stun.NewTransactionIDSetter(r.txid), stun.BindingRequest,
		stun.NewUsername(remoteUfrag+":"+p.ufrag),
		stun.RawAttribute{Type: stun.AttrPriority, Value: prio[:]},
		stun.RawAttribute{Type: stun.AttrICEControlling, Value: p.tieBreaker[:]},
		stun.RawAttribute{Type: stun.AttrUseCandidate},
		r.integ, stun.Fingerprint)
	if err != nil {
		return fmt.Errorf("webrtcpeer: binding request: %w", err)
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
			if _, err := p.sock.WriteToUDPAddrPort(req.Raw, r.addr); err != nil && !p.isClosed() {
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
	// Large enough for any UDP datagram a peer sends; pion fragments DTLS flights below the MTU.
	buf := make([]byte, 1<<16)
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
		if m.Type.Method != stun.MethodBinding || m.TransactionID != r.txid || src != r.addr {
			p.c.ignored.Add(1)
			return
		}
		if err := stun.Fingerprint.Check(m); err != nil {
			p.refused(r, "response without a valid FINGERPRINT")
			return
		}
		if m.Type.Class == stun.ClassErrorResponse {
			var ec stun.ErrorCodeAttribute
			if err := ec.GetFrom(m); err != nil {
				p.refused(r, "error response without ERROR-CODE")
			} else {
				p.refused(r, fmt.Sprintf("error response %d %s", ec.Code, ec.Reason))
			}
			return
		}
		if err := r.integ.Check(m); err != nil {
			p.refused(r, "success response fails MESSAGE-INTEGRITY with the remote's a=ice-pwd")
			return
		}
		r.iceOnce.Do(func() { close(r.iceDone) })
	default:
		p.c.ignored.Add(1)
	}
}

func (p *Peer) refused(r *remoteState, why string) {
	p.c.ignored.Add(1)
	r.iceErr.Store(&why)
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
