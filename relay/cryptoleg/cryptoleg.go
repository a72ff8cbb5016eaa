// Package cryptoleg is the runtime of one relay leg whose media the relay
// decrypts and encrypts: an SDES-SRTP leg (RFC 4568), or a WebRTC leg with
// ICE-lite (relay/ice) and DTLS-SRTP (relay/srtpleg). The engine makes a
// Leg when the SDP asks for it and hands it to the userspace datapath in
// the flows that arrive on or leave by the leg; the datapath's worker
// calls STUN, DTLS, Decrypt and Encrypt for each datagram. The DTLS
// handshake runs in a goroutine of its own, fed by the worker.
package cryptoleg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"sipxdp/relay/ice"
	"sipxdp/relay/srtpleg"
)

// Kind is what a leg terminates.
type Kind uint8

const (
	Plain Kind = iota // nothing: RTP as is
	SDES              // SRTP keyed by a=crypto
	DTLS              // SRTP keyed by a DTLS handshake (WebRTC), usually with ICE-lite
)

func (k Kind) String() string {
	switch k {
	case SDES:
		return "sdes-srtp"
	case DTLS:
		return "dtls-srtp"
	}
	return "rtp"
}

// State of a leg's keying.
type State uint32

const (
	Waiting     State = iota // DTLS: no handshake yet
	Handshaking              // DTLS: handshake under way
	Ready                    // keys derived: media flows
	Failed                   // the leg cannot carry media; see Info.Error
	Closed
)

var stateNames = [...]string{Waiting: "waiting", Handshaking: "handshaking", Ready: "ready", Failed: "failed", Closed: "closed"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint32(s))
}

// Config of a leg. Send and OnFail are the datapath's and the engine's.
type Config struct {
	Kind Kind
	// ICE, when set, makes the leg an ICE-lite agent with these
	// credentials; RemoteUfrag may be filled in later (SetRemote).
	ICE *ice.Creds
	// DTLS: role, the relay's certificate, the remote a=fingerprint and
	// the handshake timeout.
	DTLS srtpleg.Config
	// SDES: the relay's key (what it encrypts with) and the endpoint's.
	LocalKey, RemoteKey srtpleg.Key
	// Send writes one datagram from the leg's relay port to dst.
	Send func(b []byte, dst netip.AddrPort) error
	// OnFail is called at most once, from the leg's goroutine, when the
	// leg can no longer carry media. It must not block.
	OnFail func(err error)
	// OnReady is called once a DTLS leg is keyed, from its goroutine. It
	// must not block.
	OnReady func()
}

// Remote is what the other end's SDP gives a leg, possibly after the leg
// was made (the answer comes after the offer).
type Remote struct {
	ICEUfrag    string
	Fingerprint srtpleg.Fingerprint
	Role        srtpleg.Role
}

// Errors of the per-packet calls: sentinels, so a drop does not allocate.
var (
	ErrNotReady = errors.New("srtp keys not ready")
	ErrFailed   = errors.New("leg failed")
)

// Leg is one leg's crypto. The per-packet methods are safe for concurrent
// use by the workers of the leg's ports.
type Leg struct {
	kind  Kind
	send  func([]byte, netip.AddrPort) error
	fail  func(error)
	ready func()

	mu        sync.Mutex // guards the fields below and the Responder
	responder *ice.Responder
	creds     ice.Creds
	dtls      srtpleg.Config
	conn      *srtpleg.PacketConn
	remote    netip.AddrPort // the DTLS peer, once the handshake started
	timer     *time.Timer
	errText   string
	armed     bool
	early     []earlyPacket // SRTP kept while the handshake finishes (Early)

	state    atomic.Uint32
	sess     atomic.Pointer[srtpleg.Session]
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	failOnce sync.Once

	cnt [numCounters]atomic.Uint64
}

// Counter slots of a leg.
const (
	CntSTUNAnswered  = iota // Binding requests answered
	CntSTUNRejected         // STUN that got no answer (wrong credentials, not a request...)
	CntDTLS                 // DTLS datagrams handed to the handshake
	CntDTLSDropped          // DTLS datagrams from a source that is not the leg's peer, or a full queue
	CntNotReady             // SRTP in or RTP out before the keys were ready, dropped
	CntHeld                 // SRTP in while the handshake finished, kept and decrypted once it had (Early)
	CntDecryptFailed        // SRTP/SRTCP that did not decrypt (srtpleg counts why)
	CntEncryptFailed        // RTP/RTCP from the other leg that did not encrypt
	numCounters
)

// CounterNames name the counters, as /flows and the metrics show them.
var CounterNames = [numCounters]string{
	CntSTUNAnswered: "stun_answered", CntSTUNRejected: "stun_rejected",
	CntDTLS: "dtls_in", CntDTLSDropped: "dtls_dropped",
	CntNotReady: "srtp_not_ready", CntHeld: "srtp_held", CntDecryptFailed: "srtp_decrypt_failed", CntEncryptFailed: "srtp_encrypt_failed",
}

// New makes a leg. An SDES leg is ready at once; a DTLS leg waits for its
// handshake.
func New(cfg Config) (*Leg, error) {
	if cfg.Send == nil {
		return nil, errors.New("crypto leg: no send function")
	}
	l := &Leg{kind: cfg.Kind, send: cfg.Send, fail: cfg.OnFail, ready: cfg.OnReady, dtls: cfg.DTLS}
	if l.fail == nil {
		l.fail = func(error) {}
	}
	if l.ready == nil {
		l.ready = func() {}
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	switch cfg.Kind {
	case SDES:
		s, err := srtpleg.NewSDES(cfg.LocalKey, cfg.RemoteKey)
		if err != nil {
			return nil, fmt.Errorf("sdes leg: %w", err)
		}
		l.sess.Store(s)
		l.state.Store(uint32(Ready))
	case DTLS:
		if cfg.DTLS.Certificate == nil {
			return nil, errors.New("dtls leg: no certificate")
		}
		if cfg.ICE != nil {
			l.creds = *cfg.ICE
			if err := l.setResponder(); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("crypto leg: kind %s needs no leg", cfg.Kind)
	}
	return l, nil
}

// setResponder makes the STUN responder once the remote ufrag is known.
// Caller holds mu (or owns l).
func (l *Leg) setResponder() error {
	if l.creds.RemoteUfrag == "" {
		return nil
	}
	r, err := ice.NewResponder(l.creds)
	if err != nil {
		return fmt.Errorf("ice-lite leg: %w", err)
	}
	l.responder = r
	return nil
}

// Kind is what the leg terminates.
func (l *Leg) Kind() Kind { return l.kind }

// ICE reports whether the leg answers STUN: only STUN latches its peer.
func (l *Leg) ICE() bool { return l.kind == DTLS && l.creds.LocalUfrag != "" }

// SetRemote gives a DTLS leg what the remote SDP says. Its parameters
// change only while no handshake has started (an answer after the offer).
// An SDES leg whose keys change is made anew by the engine instead.
func (l *Leg) SetRemote(r Remote) error {
	if l.kind != DTLS {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.creds.LocalUfrag != "" && r.ICEUfrag != "" && r.ICEUfrag != l.creds.RemoteUfrag {
		l.creds.RemoteUfrag = r.ICEUfrag
		if err := l.setResponder(); err != nil {
			return err
		}
	}
	if State(l.state.Load()) == Waiting {
		if r.Fingerprint.Value != "" {
			l.dtls.Remote = r.Fingerprint
		}
		l.dtls.Role = r.Role
	}
	return nil
}

// Arm starts the clock on the handshake: a DTLS leg that is not ready
// within d fails. The engine arms a leg once both sides' SDP is known,
// since before that the browser has nothing to connect to.
func (l *Leg) Arm(d time.Duration) {
	if l.kind != DTLS {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.armed || State(l.state.Load()) >= Ready {
		return
	}
	l.armed = true
	l.timer = time.AfterFunc(d, func() {
		if s := State(l.state.Load()); s < Ready {
			l.failWith(fmt.Errorf("dtls: no completed handshake within %s of the answer (state %s)", d, s))
		}
	})
}

// STUN answers a datagram Demux called STUN, from src. It returns the
// response (appended to dst[:0]) and whether the browser nominated src;
// ok is false when the datagram deserves no answer.
func (l *Leg) STUN(dst, pkt []byte, src netip.AddrPort) (resp []byte, nominated, ok bool) {
	l.mu.Lock()
	if l.responder == nil {
		l.mu.Unlock()
		l.cnt[CntSTUNRejected].Add(1)
		return nil, false, false
	}
	res := l.responder.Handle(pkt, src)
	if res.Reason != ice.Answered {
		l.mu.Unlock()
		l.cnt[CntSTUNRejected].Add(1)
		return nil, false, false
	}
	resp = append(dst[:0], res.Response...)
	l.mu.Unlock()
	l.cnt[CntSTUNAnswered].Add(1)
	return resp, res.UseCandidate, true
}

// Nominated tells a client-role leg that ICE chose src: it starts the
// handshake toward it.
func (l *Leg) Nominated(src netip.AddrPort) {
	if l.kind != DTLS {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dtls.Role == srtpleg.Client && State(l.state.Load()) == Waiting {
		l.startLocked(src)
	}
}

// Start begins a client-role handshake toward remote (a leg without ICE,
// once the peer's address is known).
func (l *Leg) Start(remote netip.AddrPort) { l.Nominated(remote) }

// DTLS hands a datagram Demux called DTLS, from src (already accepted as
// the leg's peer by the datapath), to the handshake. A server-role leg
// starts its handshake on the first one.
func (l *Leg) DTLS(pkt []byte, src netip.AddrPort) {
	l.mu.Lock()
	st := State(l.state.Load())
	if st == Waiting && l.dtls.Role == srtpleg.Server {
		l.startLocked(src)
		st = Handshaking
	}
	conn, remote := l.conn, l.remote
	l.mu.Unlock()
	if conn == nil || st >= Failed || src != remote || !conn.Deliver(pkt) {
		l.cnt[CntDTLSDropped].Add(1)
		return
	}
	l.cnt[CntDTLS].Add(1)
}

// startLocked runs the handshake in a goroutine. Caller holds mu.
func (l *Leg) startLocked(remote netip.AddrPort) {
	if l.ctx.Err() != nil {
		return
	}
	l.remote = remote
	addr := net.UDPAddrFromAddrPort(remote)
	l.conn = srtpleg.NewPacketConn(nil, addr, func(b []byte) error { return l.send(b, remote) })
	l.state.Store(uint32(Handshaking))
	cfg := l.dtls
	conn := l.conn
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		s, err := srtpleg.Handshake(l.ctx, conn, addr, cfg)
		if err != nil {
			if l.ctx.Err() == nil {
				l.failWith(err)
			}
			return
		}
		if l.ctx.Err() != nil || !l.state.CompareAndSwap(uint32(Handshaking), uint32(Ready)) {
			_ = s.Close()
			return
		}
		l.sess.Store(s)
		l.mu.Lock()
		if l.timer != nil {
			l.timer.Stop()
		}
		held := l.early
		l.early = nil
		l.mu.Unlock()
		l.ready()
		for _, p := range held {
			if out, err := l.Decrypt(make([]byte, 0, len(p.pkt)), p.pkt, p.rtcp); err == nil {
				p.deliver(out)
			}
		}
	}()
}

// MaxEarly bounds the SRTP a leg keeps while its handshake finishes. The
// peer's side of DTLS completes first when the peer sends the last flight,
// and it sends media at once: that media reaches a worker right behind the
// flight, while this leg's handshake goroutine is still deriving the keys.
// rtpengine runs the handshake inline in its packet path, so it never
// sees this; a few packets cover the goroutine's lag.
const MaxEarly = 8

// earlyPacket is a copy of SRTP that came before the keys, and where its
// plain form goes.
type earlyPacket struct {
	pkt     []byte
	rtcp    bool
	deliver func(plain []byte)
}

// Early takes SRTP (SRTCP when rtcp) that Decrypt refused with
// ErrNotReady. While the handshake runs it keeps a copy, and once the keys
// are ready decrypts it and hands the plain packet to deliver on the
// handshake's goroutine; if the keys became ready in between, it does so
// at once, on the caller's. It returns false, counting the packet dropped
// as not ready, when the leg is not handshaking (waiting for its peer,
// failed, closed) or already keeps MaxEarly packets. A leg that fails or
// closes drops what it keeps.
func (l *Leg) Early(pkt []byte, rtcp bool, deliver func(plain []byte)) bool {
	l.mu.Lock()
	st, s := State(l.state.Load()), l.sess.Load()
	switch {
	case st == Ready && s != nil:
		l.mu.Unlock()
		out, err := l.Decrypt(make([]byte, 0, len(pkt)), pkt, rtcp)
		if err != nil {
			return false
		}
		deliver(out)
		return true
	case st != Handshaking && st != Ready, len(l.early) >= MaxEarly:
		l.mu.Unlock()
		l.cnt[CntNotReady].Add(1)
		return false
	}
	// Handshaking, or Ready without a session yet: the handshake
	// goroutine takes the queue under mu after it stored the session, so
	// what is kept now is delivered.
	l.early = append(l.early, earlyPacket{pkt: append([]byte(nil), pkt...), rtcp: rtcp, deliver: deliver})
	l.mu.Unlock()
	l.cnt[CntHeld].Add(1)
	return true
}

func (l *Leg) failWith(err error) {
	l.failOnce.Do(func() {
		l.mu.Lock()
		l.errText = err.Error()
		l.early = nil
		l.mu.Unlock()
		l.state.Store(uint32(Failed))
		l.cancel()
		l.fail(err)
	})
}

// Decrypt turns SRTP (or SRTCP when rtcp) from the leg's endpoint into
// RTP, appended to dst[:0]. A packet it refuses with ErrNotReady is not
// counted: give it to Early, which keeps it or counts it dropped.
func (l *Leg) Decrypt(dst, pkt []byte, rtcp bool) ([]byte, error) {
	return l.apply(dst, pkt, rtcp, (*srtpleg.Session).DecryptRTP, (*srtpleg.Session).DecryptRTCP, CntDecryptFailed)
}

// Encrypt protects RTP (or RTCP) for the leg's endpoint, into dst[:0]
// (which needs room for the auth tag).
func (l *Leg) Encrypt(dst, pkt []byte, rtcp bool) ([]byte, error) {
	return l.apply(dst, pkt, rtcp, (*srtpleg.Session).EncryptRTP, (*srtpleg.Session).EncryptRTCP, CntEncryptFailed)
}

type transform func(s *srtpleg.Session, dst, pkt []byte) ([]byte, error)

// apply runs one of the session's transforms once the keys are ready,
// counting a failure in slot failed.
func (l *Leg) apply(dst, pkt []byte, rtcp bool, rtpFn, rtcpFn transform, failed int) ([]byte, error) {
	s := l.sess.Load()
	if s == nil || State(l.state.Load()) != Ready {
		if failed == CntEncryptFailed {
			l.cnt[CntNotReady].Add(1)
		}
		return nil, ErrNotReady
	}
	fn := rtpFn
	if rtcp {
		fn = rtcpFn
	}
	out, err := fn(s, dst[:0], pkt)
	if err != nil {
		l.cnt[failed].Add(1)
		return nil, err
	}
	return out, nil
}

// Close ends the leg: the handshake stops, an association sends
// close_notify. It returns once the leg's goroutine has ended.
func (l *Leg) Close() error {
	l.mu.Lock()
	l.early = nil
	if l.timer != nil {
		l.timer.Stop()
	}
	l.mu.Unlock()
	l.cancel()
	l.wg.Wait()
	l.state.Store(uint32(Closed))
	if s := l.sess.Load(); s != nil {
		return s.Close()
	}
	return nil
}

// Info is a leg as /flows and relayctl show it.
type Info struct {
	Kind     string            `json:"kind"`
	ICE      bool              `json:"ice,omitempty"`
	Role     string            `json:"dtls_role,omitempty"`
	State    string            `json:"state"`
	Profile  string            `json:"srtp_profile,omitempty"`
	Error    string            `json:"error,omitempty"`
	Counters map[string]uint64 `json:"counters,omitempty"`
}

// Info returns the leg's state and counters, with srtpleg's decrypt drops
// by reason.
func (l *Leg) Info() Info {
	in := Info{Kind: l.kind.String(), ICE: l.ICE(), State: State(l.state.Load()).String()}
	l.mu.Lock()
	in.Error = l.errText
	if l.kind == DTLS {
		in.Role = l.dtls.Role.String()
	}
	l.mu.Unlock()
	c := map[string]uint64{}
	for i, n := range CounterNames {
		if v := l.cnt[i].Load(); v != 0 {
			c[n] = v
		}
	}
	if s := l.sess.Load(); s != nil {
		in.Profile = s.Profile().String()
		for r := srtpleg.BadAuth; r <= srtpleg.Malformed; r++ {
			if v := s.Dropped(r); v != 0 {
				c["srtp_"+r.String()] = v
			}
		}
	}
	if len(c) > 0 {
		in.Counters = c
	}
	return in
}
