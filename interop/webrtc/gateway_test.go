package webrtc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"sipxdp/internal/netns"
	"sipxdp/relay/ice"
	"sipxdp/relay/srtpleg"
	"sipxdp/sipd/webrtcsdp"
)

// gateway is a test-only WebRTC-to-RTP bridge for one call, standing where
// the relay will: ICE-lite and DTLS-SRTP (passive) toward the browser on
// one socket, plain RTP toward the phone on another. It is built from the
// relay's own pieces (relay/ice, relay/srtpleg, sipd/webrtcsdp), wired by
// hand, so the browser tests' media checks can be run against a WebRTC
// peer known to work before the relay does this itself.
type gateway struct {
	t       *testing.T
	browser *net.UDPConn // toward the browser
	phone   *net.UDPConn // toward the phone
	toPhone netip.AddrPort

	creds ice.Creds
	cert  *srtpleg.Certificate
	fp    srtpleg.Fingerprint // the browser's a=fingerprint
	mid   string

	peer    atomic.Pointer[netip.AddrPort] // the browser, once it has sent a check
	session atomic.Pointer[srtpleg.Session]
	dtls    *srtpleg.PacketConn
	errs    chan error
	wg      sync.WaitGroup
}

// newGateway opens the gateway's sockets in ns, at browserSide and
// phoneSide, for the browser's offer; it sends the phone's direction to
// toPhone. It is closed with the test.
func newGateway(t *testing.T, ns *netns.NS, browserSide, phoneSide, toPhone netip.AddrPort, offer string) *gateway {
	t.Helper()
	g := &gateway{t: t, toPhone: toPhone, mid: sdpMid(offer), errs: make(chan error, 4)}
	var ufrag string
	for _, l := range sdpLines(offer) {
		if v, ok := strings.CutPrefix(l, "a=ice-ufrag:"); ok {
			ufrag = v
		}
		if v, ok := strings.CutPrefix(l, "a=fingerprint:"); ok {
			h, val, _ := strings.Cut(v, " ")
			g.fp = srtpleg.Fingerprint{Hash: h, Value: val}
		}
	}
	if ufrag == "" || g.fp.Value == "" {
		t.Fatalf("the browser's offer has no ice-ufrag or fingerprint:\n%s", offer)
	}
	var err error
	if g.creds, err = ice.NewCreds(); err != nil {
		t.Fatal(err)
	}
	g.creds.RemoteUfrag = ufrag
	if g.cert, err = srtpleg.NewCertificate(); err != nil {
		t.Fatal(err)
	}
	if g.browser, err = ns.ListenUDP(browserSide); err != nil {
		t.Fatal(err)
	}
	if g.phone, err = ns.ListenUDP(phoneSide); err != nil {
		t.Fatal(err)
	}
	resp, err := ice.NewResponder(g.creds)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.wg.Add(2)
	go g.fromBrowser(ctx, resp)
	go g.fromPhone()
	t.Cleanup(func() {
		cancel()
		if s := g.session.Load(); s != nil {
			s.Close()
		}
		g.browser.Close()
		g.phone.Close()
		g.wg.Wait()
	})
	return g
}

// answer is the gateway's SDP answer to the browser: ICE-lite, one host
// candidate, DTLS passive, rtcp-mux, PCMU.
func (g *gateway) answer() string {
	a := g.browser.LocalAddr().(*net.UDPAddr).AddrPort()
	return webrtcDesc{Addr: a, Mid: g.mid, Setup: "passive", Ufrag: g.creds.LocalUfrag, Pwd: g.creds.LocalPwd,
		Fingerprint: webrtcsdp.FingerprintOf(g.cert.DER()).String(), Candidate: webrtcsdp.Candidate(a.Addr(), a.Port(), 1, 0),
		Lite: true}.String()
}

func (g *gateway) fail(err error) {
	select {
	case g.errs <- err:
	default:
	}
}

// err is the first error the gateway met, if any.
func (g *gateway) err() error {
	select {
	case err := <-g.errs:
		return err
	default:
		return nil
	}
}

func (g *gateway) fromBrowser(ctx context.Context, resp *ice.Responder) {
	defer g.wg.Done()
	buf, plain := make([]byte, 2048), make([]byte, 2048)
	for {
		n, src, err := g.browser.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		pkt := buf[:n]
		switch ice.Demux(pkt) {
		case ice.KindSTUN:
			r := resp.Handle(pkt, src)
			if r.Reason != ice.Answered {
				g.fail(fmt.Errorf("STUN from %v not answered: %v", src, r.Reason))
				continue
			}
			g.browser.WriteToUDPAddrPort(r.Response, src)
			if g.peer.Load() == nil || r.UseCandidate {
				g.peer.Store(&src)
			}
		case ice.KindDTLS:
			if g.dtls == nil {
				local := g.browser.LocalAddr()
				g.dtls = srtpleg.NewPacketConn(local, net.UDPAddrFromAddrPort(src), func(b []byte) error {
					_, err := g.browser.WriteToUDPAddrPort(b, src)
					return err
				})
				go func(conn *srtpleg.PacketConn) {
					s, err := srtpleg.Handshake(ctx, conn, net.UDPAddrFromAddrPort(src),
						srtpleg.Config{Role: srtpleg.Server, Certificate: g.cert, Remote: g.fp})
					if err != nil {
						g.fail(fmt.Errorf("DTLS handshake with the browser: %w", err))
						return
					}
					g.session.Store(s)
				}(g.dtls)
			}
			g.dtls.Deliver(pkt)
		case ice.KindRTP:
			s := g.session.Load()
			if s == nil || pkt[1] >= 192 && pkt[1] <= 223 {
				continue // before the keys, or SRTCP: the phone gets RTP only
			}
			out, err := s.DecryptRTP(plain, pkt)
			if err != nil {
				continue
			}
			g.phone.WriteToUDPAddrPort(out, g.toPhone)
		}
	}
}

func (g *gateway) fromPhone() {
	defer g.wg.Done()
	buf, enc := make([]byte, 2048), make([]byte, 2048+64)
	for {
		n, _, err := g.phone.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		s, peer := g.session.Load(), g.peer.Load()
		if s == nil || peer == nil {
			continue
		}
		out, err := s.EncryptRTP(enc, buf[:n])
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				g.fail(fmt.Errorf("encrypt the phone's RTP: %w", err))
			}
			continue
		}
		g.browser.WriteToUDPAddrPort(out, *peer)
	}
}

// TestBrowserCallsGateway runs the media checks of TestBrowserCallsPhone
// on a call whose media goes through the test's gateway instead of the
// relay: sipd (media.mode none) passes the SDP through, bob answers with
// the gateway's SDP, and the gateway bridges the browser's DTLS-SRTP to
// bob's plain RTP. It shows that the checks pass against a WebRTC peer
// that works, so a failure of TestBrowserCallsPhone is the relay's; and
// it runs the relay's ICE and DTLS-SRTP pieces against a real browser.
func TestBrowserCallsGateway(t *testing.T) {
	e := newCallEnv(t, "none", "ws", "userspace")
	e.callGateway(t, true)
	e.callGateway(t, false)
}

// callGateway makes one call from the browser to bob with its media
// through a gateway in bob's namespace, runs the media checks and ends
// the call by a BYE from the browser or from bob.
func (e *callEnv) callGateway(t *testing.T, browserHangsUp bool) {
	t.Helper()
	e.calls++
	inv := e.invite(t)
	rtpAddr := netip.AddrPortFrom(e.tp.V4.Callee, uint16(bobRTP+2*e.calls))
	gwBrowser := netip.AddrPortFrom(e.tp.V4.Callee, uint16(31000+2*e.calls))
	gwPhone := netip.AddrPortFrom(e.tp.V4.Callee, uint16(32000+2*e.calls))
	gw := newGateway(t, e.tp.Callee, gwBrowser, gwPhone, rtpAddr, string(inv.Body()))
	rtpConn, err := e.tp.Callee.ListenUDP(rtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer rtpConn.Close()
	e.bob.Respond(inv, 200, "OK", toTag, gw.answer())
	phone := startPhone(rtpConn, gwPhone)
	defer phone.Stop()
	e.confirm(t)
	e.checkMedia(t, phone, gwPhone, gwBrowser)
	if err := gw.err(); err != nil {
		t.Errorf("gateway: %v", err)
	}
	e.hangup(t, inv, browserHangsUp)
}
