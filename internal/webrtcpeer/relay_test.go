package webrtcpeer

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"sipxdp/relay/ice"
	"sipxdp/relay/srtpleg"
	"sipxdp/sipd/webrtcsdp"
)

// relayOpts shape the fake relay's leg; the zero value is a well-behaved relay.
type relayOpts struct {
	setup            string // the relay's a=setup: active or passive in an answer, any of three in an offer
	wrongFingerprint bool   // announce a fingerprint that is not its certificate's
	wrongPwd         bool   // announce an ice-pwd its Responder does not check with: our checks get no answer
	badResponse      bool   // answer checks, but sign the responses with another pwd than the announced one
	noDTLS           bool   // answer ICE, never DTLS
	hsTimeout        time.Duration
}

// fakeRelay is the relay's WebRTC leg as the userspace relay runs it: an ICE-lite relay/ice.Responder and
// srtpleg.Handshake over one loopback UDP socket, latching the peer on its nominating check. It echoes
// whatever SRTP/SRTCP it can decrypt, re-encrypted, so a round trip exercises both directions.
type fakeRelay struct {
	t     *testing.T
	o     relayOpts
	sock  *net.UDPConn
	addr  netip.AddrPort
	creds ice.Creds
	cert  *srtpleg.Certificate

	mu        sync.Mutex
	responder *ice.Responder
	remoteFP  webrtcsdp.Fingerprint
	role      srtpleg.Role
	peer      netip.AddrPort
	pc        *srtpleg.PacketConn
	sess      *srtpleg.Session

	hsDone   chan error
	received atomic.Uint64
	wg       sync.WaitGroup
}

func newFakeRelay(t *testing.T, o relayOpts) *fakeRelay {
	t.Helper()
	sock, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	creds, err := ice.NewCreds()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := srtpleg.NewCertificate()
	if err != nil {
		t.Fatal(err)
	}
	r := &fakeRelay{t: t, o: o, sock: sock, addr: sock.LocalAddr().(*net.UDPAddr).AddrPort(), creds: creds, cert: cert,
		hsDone: make(chan error, 1)}
	t.Cleanup(r.close)
	return r
}

// announce rewrites m-line 0 of b as the relay does toward the browser: its ICE-lite credentials and
// candidate, its fingerprint and setup, and its address in c=.
func (r *fakeRelay) announce(b *webrtcsdp.Body) []byte {
	r.t.Helper()
	pwd := r.creds.LocalPwd
	if r.o.wrongPwd {
		pwd = "x" + pwd[1:]
		if pwd == r.creds.LocalPwd {
			pwd = "y" + pwd[1:]
		}
	}
	fp := webrtcsdp.FingerprintOf(r.cert.DER())
	if r.o.wrongFingerprint {
		fp = webrtcsdp.FingerprintOf([]byte("not the certificate"))
	}
	if err := webrtcsdp.SetICE(b, 0, webrtcsdp.ICE{Ufrag: r.creds.LocalUfrag, Pwd: pwd,
		Addrs: []netip.Addr{r.addr.Addr()}, RTP: r.addr.Port()}); err != nil {
		r.t.Fatal(err)
	}
	if err := webrtcsdp.SetDTLS(b, 0, fp, r.o.setup); err != nil {
		r.t.Fatal(err)
	}
	for _, s := range append([]*webrtcsdp.Section{&b.Session}, &b.Media[0]) {
		for i, l := range s.Lines {
			if l.Type == 'c' {
				s.Lines[i].Value = "IN IP4 " + r.addr.Addr().String()
			}
		}
	}
	return b.Bytes()
}

// learn takes the peer's ufrag and fingerprint from its SDP and the relay's DTLS role from both a=setup lines.
func (r *fakeRelay) learn(peerSDP []byte) {
	r.t.Helper()
	b, err := webrtcsdp.Parse(peerSDP)
	if err != nil {
		r.t.Fatal(err)
	}
	o, err := webrtcsdp.Describe(b)
	if err != nil {
		r.t.Fatal(err)
	}
	m := o.Media[0]
	creds := r.creds
	creds.RemoteUfrag = m.Ufrag
	resp, err := ice.NewResponder(creds)
	if err != nil {
		r.t.Fatal(err)
	}
	role := srtpleg.Client
	if r.o.setup == webrtcsdp.SetupPassive || r.o.setup == webrtcsdp.SetupActpass && m.Setup == webrtcsdp.SetupActive {
		role = srtpleg.Server
	}
	r.mu.Lock()
	r.responder, r.remoteFP, r.role = resp, m.Fingerprints[0], role
	r.mu.Unlock()
}

// answer is the relay's answer to the peer's offer; the relay is then ready for checks.
func (r *fakeRelay) answer(offer []byte) []byte {
	r.t.Helper()
	r.learn(offer)
	b, err := webrtcsdp.Parse(offer)
	if err != nil {
		r.t.Fatal(err)
	}
	return r.announce(b)
}

// offer is the relay's offer toward the peer: a real Chrome offer (audio and video, BUNDLE) rewritten as the
// relay rewrites one.
func (r *fakeRelay) offer() []byte {
	r.t.Helper()
	raw, err := os.ReadFile("../../sipd/webrtcsdp/testdata/chrome_audio_video.sdp")
	if err != nil {
		r.t.Fatal(err)
	}
	b, err := webrtcsdp.Parse(raw)
	if err != nil {
		r.t.Fatal(err)
	}
	return r.announce(b)
}

func (r *fakeRelay) start() {
	r.wg.Add(1)
	go r.readLoop()
}

func (r *fakeRelay) readLoop() {
	defer r.wg.Done()
	buf := make([]byte, 1<<16)
	for {
		n, src, err := r.sock.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		pkt := buf[:n]
		switch ice.Demux(pkt) {
		case ice.KindSTUN:
			r.onSTUN(pkt, src)
		case ice.KindDTLS:
			r.mu.Lock()
			pc, peer := r.pc, r.peer
			r.mu.Unlock()
			if pc != nil && src == peer {
				pc.Deliver(pkt)
			}
		case ice.KindRTP:
			r.echo(pkt)
		}
	}
}

func (r *fakeRelay) onSTUN(pkt []byte, src netip.AddrPort) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.responder == nil {
		return
	}
	res := r.responder.Handle(pkt, src)
	if res.Reason != ice.Answered {
		return
	}
	if res.UseCandidate && !r.peer.IsValid() {
		r.peer = src
		if !r.o.noDTLS {
			r.pc = srtpleg.NewPacketConn(r.sock.LocalAddr(), net.UDPAddrFromAddrPort(src), func(b []byte) error {
				_, err := r.sock.WriteToUDPAddrPort(b, src)
				return err
			})
			r.wg.Add(1)
			go r.handshake(r.pc, src)
		}
	}
	out := res.Response
	if r.o.badResponse {
		var m stun.Message
		m.Raw = append(m.Raw, res.Response...)
		if err := m.Decode(); err != nil {
			r.t.Error(err)
			return
		}
		bad, err := stun.Build(stun.NewTransactionIDSetter(m.TransactionID), stun.BindingSuccess,
			&stun.XORMappedAddress{IP: src.Addr().AsSlice(), Port: int(src.Port())},
			stun.NewShortTermIntegrity("some-other-password-of-22+"), stun.Fingerprint)
		if err != nil {
			r.t.Error(err)
			return
		}
		out = bad.Raw
	}
	_, _ = r.sock.WriteToUDPAddrPort(out, src)
}

func (r *fakeRelay) handshake(pc *srtpleg.PacketConn, peer netip.AddrPort) {
	defer r.wg.Done()
	r.mu.Lock()
	cfg := srtpleg.Config{Role: r.role, Certificate: r.cert, Remote: srtpleg.Fingerprint(r.remoteFP), Timeout: r.o.hsTimeout}
	r.mu.Unlock()
	sess, err := srtpleg.Handshake(r.t.Context(), pc, net.UDPAddrFromAddrPort(peer), cfg)
	if err == nil {
		r.mu.Lock()
		r.sess = sess
		r.mu.Unlock()
	}
	r.hsDone <- err
}

func (r *fakeRelay) session() *srtpleg.Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sess
}

// echo decrypts one SRTP/SRTCP packet and sends it back re-encrypted; undecryptable ones are dropped (and
// counted by the session).
func (r *fakeRelay) echo(pkt []byte) {
	r.mu.Lock()
	s, peer := r.sess, r.peer
	r.mu.Unlock()
	if s == nil {
		return
	}
	var out []byte
	var err error
	if pkt[1] >= 192 && pkt[1] <= 223 {
		if out, err = s.DecryptRTCP(nil, pkt); err == nil {
			out, err = s.EncryptRTCP(nil, out)
		}
	} else {
		if out, err = s.DecryptRTP(nil, pkt); err == nil {
			r.received.Add(1)
			out, err = s.EncryptRTP(nil, out)
		}
	}
	if err == nil {
		_, _ = r.sock.WriteToUDPAddrPort(out, peer)
	}
}

// sendCorrupt sends one RTP packet to the peer with a broken authentication tag.
func (r *fakeRelay) sendCorrupt(pkt []byte) {
	r.t.Helper()
	r.mu.Lock()
	s, peer := r.sess, r.peer
	r.mu.Unlock()
	out, err := s.EncryptRTP(nil, pkt)
	if err != nil {
		r.t.Fatal(err)
	}
	out[len(out)-1] ^= 0x01
	if _, err := r.sock.WriteToUDPAddrPort(out, peer); err != nil {
		r.t.Fatal(err)
	}
}

// waitHandshake is the relay's handshake result.
func (r *fakeRelay) waitHandshake(d time.Duration) error {
	r.t.Helper()
	select {
	case err := <-r.hsDone:
		return err
	case <-time.After(d):
		r.t.Fatalf("relay handshake: no result within %s", d)
		return nil
	}
}

func (r *fakeRelay) close() {
	r.mu.Lock()
	s, pc := r.sess, r.pc
	r.mu.Unlock()
	if s != nil {
		_ = s.Close()
	} else if pc != nil {
		_ = pc.Close()
	}
	_ = r.sock.Close()
	r.wg.Wait()
}
