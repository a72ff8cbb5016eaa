package webrtcpeer

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"go.uber.org/goleak"

	"sipxdp/relay/srtpleg"
	"sipxdp/sipd/webrtcsdp"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newPeer(t *testing.T, cfg Config) *Peer {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// negotiate runs the offer/answer between peer and relay and returns the SDP the peer connects with.
func negotiate(t *testing.T, p *Peer, r *fakeRelay, peerOffers bool) []byte {
	t.Helper()
	if peerOffers {
		ans := r.answer(p.Offer())
		r.start()
		return ans
	}
	offer := r.offer()
	ans, err := p.Answer(offer)
	if err != nil {
		t.Fatalf("Answer: %v", err)
	}
	r.learn(ans)
	r.start()
	return offer
}

func rtpPacket(t *testing.T, seq uint16, payload []byte) []byte {
	t.Helper()
	b, err := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: seq, Timestamp: uint32(seq) * 160,
		SSRC: 0x11223344}, Payload: payload}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestConnect connects a peer to the fake relay in every offer/answer and DTLS role combination, and sends
// RTP and RTCP through SRTP both ways (the relay echoes).
func TestConnect(t *testing.T) {
	cases := []struct {
		name       string
		peerOffers bool
		relaySetup string
		relayRole  srtpleg.Role
	}{
		{"peer offers, relay answers active", true, webrtcsdp.SetupActive, srtpleg.Client},
		{"peer offers, relay answers passive", true, webrtcsdp.SetupPassive, srtpleg.Server},
		{"relay offers actpass", false, webrtcsdp.SetupActpass, srtpleg.Server},
		{"relay offers passive", false, webrtcsdp.SetupPassive, srtpleg.Server},
		{"relay offers active", false, webrtcsdp.SetupActive, srtpleg.Client},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newPeer(t, Config{})
			r := newFakeRelay(t, relayOpts{setup: tc.relaySetup})
			remote := negotiate(t, p, r, tc.peerOffers)
			if r.role != tc.relayRole {
				t.Fatalf("relay role %s, want %s", r.role, tc.relayRole)
			}
			ctx := ctxFor(t, 10*time.Second)
			if err := p.Connect(ctx, remote); err != nil {
				t.Fatalf("Connect: %v", err)
			}
			if err := r.waitHandshake(10 * time.Second); err != nil {
				t.Fatalf("relay handshake: %v", err)
			}
			if got := p.RemoteAddr(); got != r.addr {
				t.Fatalf("RemoteAddr %s, want the relay's candidate %s", got, r.addr)
			}
			const n = 5
			for i := range n {
				pkt := rtpPacket(t, uint16(100+i), bytes.Repeat([]byte{byte(i + 1)}, 160))
				if err := p.WriteRTP(pkt); err != nil {
					t.Fatal(err)
				}
				got, err := p.ReadRTP(ctx)
				if err != nil {
					t.Fatalf("ReadRTP %d: %v", i, err)
				}
				if !bytes.Equal(got, pkt) {
					t.Fatalf("packet %d came back as %x, want %x", i, got, pkt)
				}
			}
			rr, err := (&rtcp.ReceiverReport{SSRC: 0x55667788, Reports: []rtcp.ReceptionReport{{SSRC: 0x11223344, LastSequenceNumber: 104}}}).Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if err := p.WriteRTCP(rr); err != nil {
				t.Fatal(err)
			}
			got, err := p.ReadRTCP(ctx)
			if err != nil {
				t.Fatalf("ReadRTCP: %v", err)
			}
			if !bytes.Equal(got, rr) {
				t.Fatalf("RTCP came back as %x, want %x", got, rr)
			}
			st := p.Stats()
			if st.RTPSent != n || st.RTPReceived != n || st.RTCPSent != 1 || st.RTCPReceived != 1 || st.DecryptFailures != 0 {
				t.Fatalf("stats %+v", st)
			}
			if r.received.Load() != n {
				t.Fatalf("relay decrypted %d RTP packets, want %d", r.received.Load(), n)
			}
		})
	}
}

// TestConnectFails covers the handshakes that must fail, each with an error that says why.
func TestConnectFails(t *testing.T) {
	cases := []struct {
		name       string
		cfg        Config
		relay      relayOpts
		peerErr    error  // errors.Is target; nil: any error
		peerMsg    string // in the peer's error
		relayErr   error  // the relay's handshake error (errors.Is)
		relayMsg   string
		relayNoHS  bool // the relay never gets to a handshake
		peerSucced bool // Connect returns nil (NoDTLS)
	}{
		{name: "relay fingerprint wrong, peer client", relay: relayOpts{setup: "passive", wrongFingerprint: true},
			peerErr: ErrFingerprint, peerMsg: "dtls handshake as client"},
		{name: "relay fingerprint wrong, peer server", relay: relayOpts{setup: "active", wrongFingerprint: true},
			peerErr: ErrFingerprint, peerMsg: "dtls handshake as server"},
		{name: "peer fingerprint wrong, peer client", cfg: Config{WrongFingerprint: true, HandshakeTimeout: 3 * time.Second},
			relay: relayOpts{setup: "passive"}, relayErr: srtpleg.ErrFingerprint, peerErr: ErrRemoteAlert, peerMsg: "BadCertificate"},
		{name: "peer fingerprint wrong, peer server", cfg: Config{WrongFingerprint: true, HandshakeTimeout: 3 * time.Second},
			relay: relayOpts{setup: "active"}, relayErr: srtpleg.ErrFingerprint, peerErr: ErrRemoteAlert, peerMsg: "BadCertificate"},
		{name: "relay stalls dtls, peer client", cfg: Config{HandshakeTimeout: 300 * time.Millisecond},
			relay: relayOpts{setup: "passive", noDTLS: true}, relayNoHS: true,
			peerErr: ErrHandshakeTimeout, peerMsg: "as client with 127.0.0.1:"},
		{name: "relay stalls dtls, peer server", cfg: Config{HandshakeTimeout: 300 * time.Millisecond},
			relay: relayOpts{setup: "active", noDTLS: true}, relayNoHS: true,
			peerErr: ErrHandshakeTimeout, peerMsg: "no completion within 300ms"},
		{name: "peer stalls dtls, relay client", cfg: Config{NoDTLS: true}, peerSucced: true,
			relay: relayOpts{setup: "active", hsTimeout: 300 * time.Millisecond}, relayMsg: "no completion within 300ms"},
		{name: "peer stalls dtls, relay server", cfg: Config{NoDTLS: true}, peerSucced: true,
			relay: relayOpts{setup: "passive", hsTimeout: 300 * time.Millisecond}, relayMsg: "no completion within 300ms"},
		{name: "relay announces another ice-pwd", cfg: Config{ICETimeout: 400 * time.Millisecond},
			relay: relayOpts{setup: "active", wrongPwd: true}, relayNoHS: true,
			peerErr: ErrICE, peerMsg: "within 400ms (no response)"},
		{name: "relay signs responses with another pwd", cfg: Config{ICETimeout: 400 * time.Millisecond},
			relay: relayOpts{setup: "active", badResponse: true, noDTLS: true}, relayNoHS: true,
			peerErr: ErrICE, peerMsg: "fails MESSAGE-INTEGRITY"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newPeer(t, tc.cfg)
			r := newFakeRelay(t, tc.relay)
			remote := negotiate(t, p, r, true)
			start := time.Now()
			err := p.Connect(ctxFor(t, 10*time.Second), remote)
			switch {
			case tc.peerSucced && err != nil:
				t.Fatalf("Connect: %v", err)
			case !tc.peerSucced && err == nil:
				t.Fatal("Connect succeeded")
			case tc.peerErr != nil && !errors.Is(err, tc.peerErr):
				t.Fatalf("Connect: %v, want %v", err, tc.peerErr)
			case tc.peerMsg != "" && !strings.Contains(err.Error(), tc.peerMsg):
				t.Fatalf("Connect: %q, want it to say %q", err, tc.peerMsg)
			}
			if err != nil {
				t.Logf("Connect after %s: %v", time.Since(start).Round(time.Millisecond), err)
			}
			if tc.relayNoHS {
				if r.session() != nil {
					t.Fatal("relay has a session")
				}
			} else {
				rerr := r.waitHandshake(10 * time.Second)
				switch {
				case rerr == nil:
					t.Fatal("relay handshake succeeded")
				case tc.relayErr != nil && !errors.Is(rerr, tc.relayErr):
					t.Fatalf("relay handshake: %v, want %v", rerr, tc.relayErr)
				case tc.relayMsg != "" && !strings.Contains(rerr.Error(), tc.relayMsg):
					t.Fatalf("relay handshake: %q, want it to say %q", rerr, tc.relayMsg)
				}
			}
			if err := p.WriteRTP(rtpPacket(t, 1, []byte{1})); !errors.Is(err, ErrNotConnected) {
				t.Fatalf("WriteRTP without a session: %v, want ErrNotConnected", err)
			}
		})
	}
}

// TestCorruptSRTP: packets with a broken tag are dropped and counted on both sides, and good ones still pass.
func TestCorruptSRTP(t *testing.T) {
	p := newPeer(t, Config{})
	r := newFakeRelay(t, relayOpts{setup: webrtcsdp.SetupActive})
	ctx := ctxFor(t, 10*time.Second)
	if err := p.Connect(ctx, negotiate(t, p, r, true)); err != nil {
		t.Fatal(err)
	}
	if err := r.waitHandshake(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.WriteCorruptRTP(rtpPacket(t, 1, []byte("bad"))); err != nil {
		t.Fatal(err)
	}
	r.sendCorrupt(rtpPacket(t, 7, []byte("bad")))
	good := rtpPacket(t, 2, []byte("good"))
	if err := p.WriteRTP(good); err != nil {
		t.Fatal(err)
	}
	got, err := p.ReadRTP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, good) {
		t.Fatalf("got %x, want the good packet %x", got, good)
	}
	// The echo of the good packet left the relay after its corrupt one, and the socket keeps order on loopback.
	if st := p.Stats(); st.BadAuth != 1 || st.DecryptFailures != 1 || st.RTPReceived != 1 || st.CorruptSent != 1 {
		t.Fatalf("peer stats %+v", st)
	}
	if n := r.session().Dropped(srtpleg.BadAuth); n != 1 {
		t.Fatalf("relay dropped %d packets for bad auth, want 1", n)
	}
	if n := r.received.Load(); n != 1 {
		t.Fatalf("relay decrypted %d packets, want 1", n)
	}
}

// TestConsent: once connected, the peer keeps sending consent checks, which the relay's Responder answers.
func TestConsent(t *testing.T) {
	cases := []struct {
		name     string
		interval time.Duration
		want     bool
	}{
		{"every 30ms", 30 * time.Millisecond, true},
		{"off", -1, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newPeer(t, Config{ConsentInterval: tc.interval})
			r := newFakeRelay(t, relayOpts{setup: webrtcsdp.SetupActive})
			if err := p.Connect(ctxFor(t, 10*time.Second), negotiate(t, p, r, true)); err != nil {
				t.Fatal(err)
			}
			if err := r.waitHandshake(10 * time.Second); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(300 * time.Millisecond)
			if tc.want {
				deadline = time.Now().Add(10 * time.Second)
			}
			for time.Now().Before(deadline) && p.Stats().ConsentAcked < 3 {
				time.Sleep(10 * time.Millisecond)
			}
			st := p.Stats()
			if tc.want && (st.ConsentAcked < 3 || st.ConsentSent < st.ConsentAcked) {
				t.Fatalf("consent: %+v, want 3 or more acknowledged", st)
			}
			if !tc.want && st.ConsentSent != 0 {
				t.Fatalf("consent off, but %d checks sent", st.ConsentSent)
			}
		})
	}
}

// TestPeerToPeer: two peers, both controlling and answering each other's checks, connect to each other, on
// IPv4 and (where the host has it) IPv6 loopback.
func TestPeerToPeer(t *testing.T) {
	for _, local := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(local, func(t *testing.T) { peerToPeer(t, mustAddrPort(local)) })
	}
}

func peerToPeer(t *testing.T, local netip.AddrPort) {
	a, err := New(Config{Local: local})
	if err != nil && local.Addr().Is6() {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	b := newPeer(t, Config{Local: local})
	offer := a.Offer()
	ans, err := b.Answer(offer)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t, 10*time.Second)
	errc := make(chan error, 1)
	go func() { errc <- b.Connect(ctx, offer) }()
	if err := a.Connect(ctx, ans); err != nil {
		t.Fatalf("a: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("b: %v", err)
	}
	pkt := rtpPacket(t, 9, []byte("hello"))
	if err := a.WriteRTP(pkt); err != nil {
		t.Fatal(err)
	}
	got, err := b.ReadRTP(ctx)
	if err != nil || !bytes.Equal(got, pkt) {
		t.Fatalf("b read %x, %v; want %x", got, err, pkt)
	}
	if a.Stats().STUNAnswered == 0 || b.Stats().STUNAnswered == 0 {
		t.Fatalf("a full agent's checks went unanswered: a %+v, b %+v", a.Stats(), b.Stats())
	}
}

// TestClose: Close ends a Connect that is waiting for ICE, and later reads and writes report ErrClosed.
func TestClose(t *testing.T) {
	p, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	r := newFakeRelay(t, relayOpts{setup: webrtcsdp.SetupActive, wrongPwd: true})
	remote := negotiate(t, p, r, true)
	errc := make(chan error, 1)
	go func() { errc <- p.Connect(context.Background(), remote) }()
	time.Sleep(50 * time.Millisecond)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Connect: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end Connect")
	}
	if _, err := p.ReadRTP(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("ReadRTP: %v", err)
	}
	if err := p.WriteRTP(rtpPacket(t, 1, nil)); !errors.Is(err, ErrClosed) {
		t.Fatalf("WriteRTP: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestNew(t *testing.T) {
	if _, err := New(Config{Local: mustAddrPort("0.0.0.0:0")}); err == nil {
		t.Fatal("New accepted a wildcard address")
	}
	p := newPeer(t, Config{})
	if !p.LocalAddr().Addr().IsLoopback() || p.LocalAddr().Port() == 0 {
		t.Fatalf("LocalAddr %s", p.LocalAddr())
	}
	if p.RemoteAddr().IsValid() {
		t.Fatalf("RemoteAddr before Connect: %s", p.RemoteAddr())
	}
	if err := p.Connect(context.Background(), p.Offer()); err == nil {
		t.Fatal("Connect with our own offer as the answer (setup actpass) succeeded")
	}
	if err := p.Connect(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "once") {
		t.Fatalf("second Connect: %v", err)
	}
}
