package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"sipxdp/internal/conntest"
	"sipxdp/internal/sipdtest"
	"sipxdp/internal/sipua"
	"sipxdp/internal/webrtcpeer"
	"sipxdp/sipd/sipconf"
	"sipxdp/sipd/wire"
)

// startWS runs the built sipd with UDP and ws listeners on loopback, media
// mode on the userspace relay, users alice and bob, and (when idle is not
// zero) that connection idle timeout.
func startWS(t *testing.T, mode string, idle time.Duration) *sipdtest.Sipd {
	cfg := sipdtest.Config(t)
	cfg.HTTP.Listen = freeAddr(t, "tcp")
	cfg.SIP.Listen = []sipconf.Listen{{Transport: "udp", Addr: "127.0.0.1:0"}, {Transport: "ws", Addr: "127.0.0.1:0"}}
	if idle > 0 {
		cfg.SIP.Connections.IdleTimeout = sipconf.Duration(idle)
	}
	cfg.Media.Mode, cfg.Media.Datapath = mode, "userspace"
	_, port, _ := net.SplitHostPort(cfg.HTTP.Listen)
	var p int
	fmt.Sscan(port, &p)
	// A relay range of its own, as TestServiceNotify picks one.
	cfg.Media.Addresses[0].PortMin, cfg.Media.Addresses[0].PortMax = 20000+20*(p%600), 20000+20*(p%600)+19
	return sipdtest.Start(t, cfg, sipdtest.Options{Users: map[string]string{"alice": "alicepw", "bob": "bobpw"}})
}

// TestWebSocketCalls runs the built sipd with a ws listener beside UDP, as
// an operator configures it, in media modes none and all: a ws UA
// registers with digest and calls a UDP UA and back, in-dialog requests
// find both; with media all the relay is in the SDP of both sides. An
// idle ws connection is closed and counted in the metrics that count TCP;
// the registered one is kept.
func TestWebSocketCalls(t *testing.T) {
	for _, mode := range []string{"none", "all"} {
		t.Run(mode, func(t *testing.T) {
			s := startWS(t, mode, time.Second)

			ws := sipua.DialWS(t, s.SIPAddr("ws").String(), nil)
			ws.Register("alice", "localhost", "alicepw")
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			udp := sipua.New(t, c, s.SIPAddr("udp"))
			udp.Register("bob", "localhost", "bobpw")

			offer, answer := netip.MustParseAddrPort("127.0.0.1:40000"), netip.MustParseAddrPort("127.0.0.1:40002")
			for i, dir := range []struct {
				caller, callee *sipua.UA
				from, to, pw   string
			}{{ws, udp, "alice", "bob", "alicepw"}, {udp, ws, "bob", "alice", "bobpw"}} {
				d := sipua.Establish(dir.caller, dir.callee, sipua.Call{From: dir.from, To: dir.to, Domain: "localhost", Password: dir.pw,
					Offer: sipua.SDP(offer), Answer: sipua.SDP(answer)})
				offered := strings.Contains(string(d.Received.Body()), fmt.Sprintf("m=audio %d ", offer.Port()))
				answered := strings.Contains(string(d.Answer.Body()), fmt.Sprintf("m=audio %d ", answer.Port()))
				if relayed := mode == "all"; offered == relayed || answered == relayed {
					t.Fatalf("call %d, mode %s: SDP passed through unchanged: offer %v, answer %v\n%s\n%s", i, mode, offered, answered, d.Received.Body(), d.Answer.Body())
				}
				d.Hangup(i == 1)
			}

			idle, err := net.Dial("tcp", s.SIPAddr("ws").String())
			if err != nil {
				t.Fatal(err)
			}
			defer idle.Close()
			if !conntest.ClosedWithin(idle, 3*time.Second) {
				t.Fatal("an idle ws connection was not closed")
			}
			if v, _ := s.Metric(`sipxdp_sip_connections_closed_total{reason="idle_timeout"}`); v < 1 {
				t.Fatalf("idle ws connection not counted: %v", v)
			}
			// The registered ws connection outlives the idle timeout: the
			// registration holds it, and it still reaches alice.
			time.Sleep(1500 * time.Millisecond)
			sipua.Establish(udp, ws, sipua.Call{From: "bob", To: "alice", Domain: "localhost", Password: "bobpw",
				Offer: sipua.SDP(offer), Answer: sipua.SDP(answer)}).Hangup(false)
		})
	}
}

// browserAndPhone registers alice over ws and bob over UDP to s.
func browserAndPhone(t *testing.T, s *sipdtest.Sipd) (ws, udp *sipua.UA) {
	ws = sipua.DialWS(t, s.SIPAddr("ws").String(), nil)
	ws.Register("alice", "localhost", "alicepw")
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	udp = sipua.New(t, c, s.SIPAddr("udp"))
	udp.Register("bob", "localhost", "bobpw")
	return ws, udp
}

// TestWebSocketWebRTCCall: a ws caller whose offer is a browser's (ICE,
// DTLS-SRTP, rtcp-mux; internal/webrtcpeer) calls a UDP phone through the
// built sipd with media all. The phone is offered plain RTP; the caller
// gets the relay's ICE-lite DTLS answer, connects, and RTP flows both
// ways, decrypted toward the phone and encrypted toward the caller. BYE
// from the caller ends it and the flows go.
func TestWebSocketWebRTCCall(t *testing.T) {
	s := startWS(t, "all", 0)

	peer, err := webrtcpeer.New(webrtcpeer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	ws, udp := browserAndPhone(t, s)
	phone, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer phone.Close()

	d := sipua.Establish(ws, udp, sipua.Call{From: "alice", To: "bob", Domain: "localhost", Password: "alicepw",
		Offer: string(peer.Offer()), Answer: sipua.SDP(phone.LocalAddr().(*net.UDPAddr).AddrPort())})
	toPhone := string(d.Received.Body())
	if !strings.Contains(toPhone, " RTP/AVP ") || strings.Contains(toPhone, "fingerprint") || strings.Contains(toPhone, "candidate") {
		t.Fatalf("the phone was not offered plain RTP:\n%s", toPhone)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := peer.Connect(ctx, d.Answer.Body()); err != nil {
		t.Fatalf("browser leg: %v\nanswer:\n%s", err, d.Answer.Body())
	}
	pkt := func(seq uint16) []byte {
		b := make([]byte, 172)
		b[0], b[2], b[3] = 0x80, byte(seq>>8), byte(seq)
		for i := 12; i < len(b); i++ {
			b[i] = byte(i) ^ byte(seq)
		}
		return b
	}
	buf := make([]byte, 2048)
	var relayAt netip.AddrPort
	got := 0
	for seq := uint16(1); seq <= 40 && got < 10; seq++ {
		if err := peer.WriteRTP(pkt(seq)); err != nil {
			t.Fatal(err)
		}
		phone.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		k, from, err := phone.ReadFromUDPAddrPort(buf)
		if err != nil {
			continue // the relay's keys may land a moment after the caller's
		}
		if !bytes.Equal(buf[:k], pkt(seq)) {
			t.Fatalf("phone got %x..., want the caller's plain RTP", buf[:16])
		}
		relayAt = from
		got++
	}
	if got < 10 {
		t.Fatalf("phone got %d of the caller's packets", got)
	}
	for seq := uint16(500); seq < 510; seq++ {
		if _, err := phone.WriteToUDPAddrPort(pkt(seq), relayAt); err != nil {
			t.Fatal(err)
		}
		back, err := peer.ReadRTP(ctx)
		if err != nil || !bytes.Equal(back, pkt(seq)) {
			t.Fatalf("caller decrypted %x (%v), want the phone's RTP", back, err)
		}
	}
	var flows []wire.FlowJSON
	s.GetJSON("/flows", &flows)
	if len(flows) == 0 || flows[0].UserspaceOnly == "" {
		t.Fatalf("flows %+v: want the call's flows, userspace only", flows)
	}
	d.Hangup(false)
	s.GetJSON("/flows", &flows)
	if len(flows) != 0 {
		t.Errorf("flows after BYE: %+v", flows)
	}
}

// TestWebSocketWebRTCBadFingerprint: a browser whose DTLS certificate does
// not match the fingerprint in its offer loses the call: sipd sends both
// sides a BYE whose Reason says the SRTP leg failed (cause 488), and no
// flow is left. Media never flows in the clear.
func TestWebSocketWebRTCBadFingerprint(t *testing.T) {
	s := startWS(t, "all", 0)
	peer, err := webrtcpeer.New(webrtcpeer.Config{WrongFingerprint: true})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	ws, udp := browserAndPhone(t, s)
	d := sipua.Establish(ws, udp, sipua.Call{From: "alice", To: "bob", Domain: "localhost", Password: "alicepw",
		Offer: string(peer.Offer()), Answer: sipua.SDP(netip.MustParseAddrPort("127.0.0.1:40002"))})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := peer.Connect(ctx, d.Answer.Body()); err == nil {
		t.Fatal("DTLS completed with a certificate that does not match the offer's fingerprint")
	}
	for _, side := range []struct {
		name string
		ua   *sipua.UA
	}{{"phone", udp}, {"browser", ws}} {
		bye := side.ua.WaitRequest("BYE", 5*time.Second)
		if bye == nil {
			t.Fatalf("the %s got no BYE after the failed DTLS leg", side.name)
		}
		if r := bye.GetHeader("Reason"); r == nil || !strings.Contains(r.Value(), "cause=488") || !strings.Contains(r.Value(), "srtp leg failed") {
			t.Errorf("the %s's BYE has Reason %v, want cause 488 and the failed SRTP leg", side.name, r)
		}
		side.ua.Respond(bye, 200, "OK", "", "")
	}
	var flows []wire.FlowJSON
	s.GetJSON("/flows", &flows)
	if len(flows) != 0 {
		t.Errorf("flows after the failed call: %+v", flows)
	}
}
