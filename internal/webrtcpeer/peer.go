// Package webrtcpeer is a minimal browser-like WebRTC audio endpoint, for the relay's integration tests and the
// `bench calls srtp` load generator: one UDP socket, one audio m-line, rtcp-mux, ICE as the controlling agent
// with one host candidate, DTLS-SRTP in either role, and plain RTP in and out of the caller.
//
// It is deliberately not a pion/webrtc PeerConnection: a load generator runs hundreds of these, and a
// PeerConnection brings an ICE agent, SCTP, interceptors and several goroutines per call that the relay never
// exercises. The pieces are the project's own where they exist (relay/ice for the demux and the answers to the
// remote's checks, relay/srtpleg for the handshake and the SRTP session, sipd/webrtcsdp for reading SDP) and
// pion's (stun, dtls, srtp) underneath.
package webrtcpeer

import (
	"crypto/rand"
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
	"sipxdp/sipd/webrtcsdp"
)

// Config is one peer.
type Config struct {
	// Local is the address to bind, announced as the host candidate and the c= address. The zero value is
	// 127.0.0.1 on any port; the address must be a specific one, not a wildcard, as it is announced.
	Local netip.AddrPort
	// ICETimeout bounds the connectivity check (DefaultICETimeout when zero).
	ICETimeout time.Duration
	// HandshakeTimeout bounds the DTLS handshake (srtpleg.DefaultTimeout when zero).
	HandshakeTimeout time.Duration
	// ConsentInterval is how often consent checks go to the remote once connected (RFC 7675; browsers send one
	// about every 5 s): DefaultConsentInterval when zero, none when negative.
	ConsentInterval time.Duration
	// Queue is how many decrypted RTP (and, separately, RTCP) packets may wait for ReadRTP before new ones are
	// dropped and counted (DefaultQueue when zero).
	Queue int

	// WrongFingerprint announces a fingerprint that does not match the certificate, so the remote's handshake
	// must fail (a negative test).
	WrongFingerprint bool
	// NoDTLS answers ICE but never sends or answers DTLS, so the remote's handshake stalls (a negative test).
	// Connect then returns once ICE has succeeded, with no SRTP session.
	NoDTLS bool
}

// Defaults for Config's zero values.
const (
	DefaultICETimeout      = 10 * time.Second
	DefaultConsentInterval = 5 * time.Second
	DefaultQueue           = 256
)

// The errors Connect returns, for errors.Is; the message around them says which address, role and limit.
var (
	// ErrICE: no valid Binding success response to our checks within Config.ICETimeout.
	ErrICE = errors.New("webrtcpeer: ice connectivity check failed")
	// ErrHandshakeTimeout: the DTLS handshake did not complete within Config.HandshakeTimeout.
	ErrHandshakeTimeout = errors.New("webrtcpeer: dtls handshake timed out")
	// ErrFingerprint: the remote's certificate does not match its SDP's a=fingerprint.
	ErrFingerprint = srtpleg.ErrFingerprint
	// ErrRemoteAlert: the remote ended the handshake with a fatal DTLS alert, as it does when our certificate
	// does not match the fingerprint we announced.
	ErrRemoteAlert = errors.New("webrtcpeer: remote aborted the dtls handshake")
	// ErrNotConnected: WriteRTP before Connect has finished (or with NoDTLS).
	ErrNotConnected = errors.New("webrtcpeer: no srtp session (not connected)")
	// ErrClosed: the peer was closed.
	ErrClosed = errors.New("webrtcpeer: closed")
)

// Peer is one endpoint. Its methods are safe for concurrent use, except that Offer or Answer must come before
// Connect, and Connect runs once.
type Peer struct {
	cfg        Config
	sock       *net.UDPConn
	local      netip.AddrPort
	cert       *srtpleg.Certificate
	fp         webrtcsdp.Fingerprint // what the SDP announces (wrong on purpose with Config.WrongFingerprint)
	ufrag, pwd string
	sessID     uint64
	tieBreaker [8]byte

	mu         sync.Mutex
	setup      string // our a=setup: actpass after Offer, active or passive after Answer
	connecting bool

	remote atomic.Pointer[remoteState] // set by Connect before the first check
	sess   atomic.Pointer[srtpleg.Session]

	rtpIn, rtcpIn chan []byte
	msg           stun.Message // the read goroutine's STUN decode buffer

	writeMu sync.Mutex
	wbuf    []byte

	closed    chan struct{}
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup

	c counters
}

type counters struct {
	rtpSent, rtpReceived, rtcpSent, rtcpReceived, corruptSent atomic.Uint64
	queueDrops, stunAnswered, ignored                         atomic.Uint64
	consentSent, consentAcked                                 atomic.Uint64
}

// New binds the socket, makes the DTLS certificate and the ICE credentials, and starts the read goroutine.
func New(cfg Config) (*Peer, error) {
	if !cfg.Local.Addr().IsValid() {
		cfg.Local = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), cfg.Local.Port())
	}
	a := cfg.Local.Addr().Unmap()
	if a.IsUnspecified() {
		return nil, fmt.Errorf("webrtcpeer: local address %s is a wildcard; the candidate needs a specific address", a)
	}
	cfg.Local = netip.AddrPortFrom(a, cfg.Local.Port())
	if cfg.ICETimeout <= 0 {
		cfg.ICETimeout = DefaultICETimeout
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = srtpleg.DefaultTimeout
	}
	if cfg.ConsentInterval == 0 {
		cfg.ConsentInterval = DefaultConsentInterval
	}
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultQueue
	}
	cert, err := srtpleg.NewCertificate()
	if err != nil {
		return nil, fmt.Errorf("webrtcpeer: %w", err)
	}
	creds, err := ice.NewCreds()
	if err != nil {
		return nil, fmt.Errorf("webrtcpeer: %w", err)
	}
	network := "udp4"
	if a.Is6() {
		network = "udp6"
	}
	sock, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(cfg.Local))
	if err != nil {
		return nil, fmt.Errorf("webrtcpeer: listen %s: %w", cfg.Local, err)
	}
	p := &Peer{
		cfg: cfg, sock: sock, local: netip.AddrPortFrom(a, uint16(sock.LocalAddr().(*net.UDPAddr).Port)),
		cert: cert, fp: webrtcsdp.FingerprintOf(cert.DER()), ufrag: creds.LocalUfrag, pwd: creds.LocalPwd,
		rtpIn: make(chan []byte, cfg.Queue), rtcpIn: make(chan []byte, cfg.Queue),
		wbuf: make([]byte, 0, 2048), closed: make(chan struct{}),
	}
	if cfg.WrongFingerprint {
		// The hash of something else than the certificate: well-formed, and certain not to match.
		p.fp = webrtcsdp.FingerprintOf(append(append([]byte(nil), cert.DER()...), 0))
	}
	var r [16]byte
	if _, err := rand.Read(r[:]); err != nil {
		_ = sock.Close()
		return nil, fmt.Errorf("webrtcpeer: %w", err)
	}
	// o= session ids are positive 63-bit numbers in Chrome's offers.
	p.sessID = binary.BigEndian.Uint64(r[:8]) >> 1
	copy(p.tieBreaker[:], r[8:])
	p.wg.Add(1)
	go p.readLoop()
	return p, nil
}

// LocalAddr is the bound socket's address, which the SDP announces.
func (p *Peer) LocalAddr() netip.AddrPort { return p.local }

// RemoteAddr is the remote candidate that Connect checks and sends to; invalid before Connect.
func (p *Peer) RemoteAddr() netip.AddrPort {
	if r := p.remote.Load(); r != nil {
		return r.addr
	}
	return netip.AddrPort{}
}

// Fingerprint is the a=fingerprint the SDP announces.
func (p *Peer) Fingerprint() webrtcsdp.Fingerprint { return p.fp }

// Stats are a peer's counters.
type Stats struct {
	RTPSent, RTPReceived   uint64
	RTCPSent, RTCPReceived uint64
	CorruptSent            uint64 // by WriteCorruptRTP
	// DecryptFailures is every SRTP/SRTCP packet the session dropped (bad tag, replay, too short, malformed);
	// BadAuth is the part of it whose authentication tag did not verify.
	DecryptFailures, BadAuth uint64
	QueueDrops               uint64 // decrypted, but ReadRTP/ReadRTCP was too slow
	STUNAnswered             uint64 // the remote's Binding requests we answered
	ConsentSent              uint64 // consent checks sent after Connect
	ConsentAcked             uint64 // valid success responses to them
	Ignored                  uint64 // datagrams from elsewhere than the remote, before Connect, or of no kind we use
}

// Stats reads the counters.
func (p *Peer) Stats() Stats {
	s := Stats{
		RTPSent: p.c.rtpSent.Load(), RTPReceived: p.c.rtpReceived.Load(),
		RTCPSent: p.c.rtcpSent.Load(), RTCPReceived: p.c.rtcpReceived.Load(), CorruptSent: p.c.corruptSent.Load(),
		QueueDrops: p.c.queueDrops.Load(), STUNAnswered: p.c.stunAnswered.Load(), Ignored: p.c.ignored.Load(),
		ConsentSent: p.c.consentSent.Load(), ConsentAcked: p.c.consentAcked.Load(),
	}
	if sess := p.sess.Load(); sess != nil {
		for _, n := range sess.Drops() {
			s.DecryptFailures += n
		}
		s.BadAuth = sess.Dropped(srtpleg.BadAuth)
	}
	return s
}

// Close ends the peer: the DTLS association (with close_notify), a handshake or check in progress, the consent
// checks, the socket and the read goroutine. It returns once its goroutines are gone.
func (p *Peer) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		close(p.closed)
		sess := p.sess.Load()
		p.mu.Unlock()
		if sess != nil {
			_ = sess.Close() // while the socket is open, so close_notify goes out
		}
		if r := p.remote.Load(); r != nil && r.pc != nil {
			_ = r.pc.Close() // fails a handshake in progress
		}
		p.closeErr = p.sock.Close()
		p.wg.Wait()
	})
	return p.closeErr
}

func (p *Peer) isClosed() bool {
	select {
	case <-p.closed:
		return true
	default:
		return false
	}
}
