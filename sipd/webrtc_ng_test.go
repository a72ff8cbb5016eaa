package sipd

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"sipxdp/internal/webrtcpeer"
	"sipxdp/relay/srtpleg"
	"sipxdp/sipd/webrtcsdp"
)

// The flags a Kamailio WebRTC config sends: toward the phone on the
// browser's offer, toward the browser on the phone's answer.
var (
	flagsToPhone   = []any{"ICE=remove", "RTP/AVP", "rtcp-mux-demux"}
	flagsToBrowser = []any{"ICE=force", "DTLS=passive", "RTP/SAVPF", "rtcp-mux-offer", "generate-mid"}
)

// rtpPacket is an RTP packet whose payload carries seq, so what arrives
// can be matched to what was sent.
func rtpPacket(seq uint16, ssrc uint32) []byte {
	p := make([]byte, 12+160)
	p[0], p[1] = 0x80, 0 // version 2, PCMU
	binary.BigEndian.PutUint16(p[2:], seq)
	binary.BigEndian.PutUint32(p[4:], uint32(seq)*160)
	binary.BigEndian.PutUint32(p[8:], ssrc)
	for i := 12; i < len(p); i++ {
		p[i] = byte(seq) ^ byte(i)
	}
	return p
}

// browserCall sets up a call from a WebRTC peer to a plain RTP phone
// through sipd -relay-only, driven over NG as Kamailio does. It returns
// the phone's RTP socket and where the phone must send.
func browserCall(t *testing.T, n *ngClient, callID string, peer *webrtcpeer.Peer) (*net.UDPConn, netip.AddrPort, []byte) {
	t.Helper()
	phone, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { phone.Close() })
	offer := n.do(map[string]any{"command": "offer", "call-id": callID, "from-tag": "browser",
		"sdp": string(peer.Offer()), "flags": flagsToPhone, "replace": []any{"origin", "session-connection"}})
	toPhone, phoneSends := sdpOf(t, offer)
	for _, bad := range []string{"a=candidate", "a=fingerprint", "a=ice-", "SAVPF", "a=rtcp-mux"} {
		if strings.Contains(toPhone, bad) {
			t.Fatalf("offer to the phone has %q:\n%s", bad, toPhone)
		}
	}
	pa := phone.LocalAddr().(*net.UDPAddr).AddrPort()
	phoneSDP := fmt.Sprintf("v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"+
		"m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n", pa.Port())
	ans := n.do(map[string]any{"command": "answer", "call-id": callID, "from-tag": "browser", "to-tag": "phone",
		"sdp": phoneSDP, "flags": flagsToBrowser})
	if ans["result"] != "ok" {
		t.Fatalf("answer: %v", ans)
	}
	toBrowser, _ := ans["sdp"].(string)
	for _, want := range []string{"a=ice-lite", "a=fingerprint:sha-256", "a=setup:passive", "a=rtcp-mux", "typ host"} {
		if !strings.Contains(toBrowser, want) {
			t.Fatalf("answer to the browser lacks %q:\n%s", want, toBrowser)
		}
	}
	return phone, phoneSends, []byte(toBrowser)
}

// TestWebRTCBridgeNG: a WebRTC endpoint (ICE, DTLS-SRTP, rtcp-mux) calls
// a plain RTP phone through sipd -relay-only. The relay answers ICE,
// terminates DTLS as the server (DTLS=passive), decrypts toward the
// phone (which gets the browser's exact RTP) and encrypts toward the
// browser; RTCP from the browser's muxed port reaches the phone's RTCP
// port. SRTP with a bad tag is dropped and counted, never forwarded.
// /flows shows both legs' crypto and why the flows are not in the
// kernel; delete ends it.
func TestWebRTCBridgeNG(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	d, n, _, _, stop := startRelayOnly(t, nil)
	defer stop()
	peer, err := webrtcpeer.New(webrtcpeer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	const callID = "webrtc-ng@test"
	phone, phoneSends, toBrowser := browserCall(t, n, callID, peer)
	rtcpSock, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: phone.LocalAddr().(*net.UDPAddr).Port + 1})
	if err != nil {
		t.Fatal(err)
	}
	defer rtcpSock.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := peer.Connect(ctx, toBrowser); err != nil {
		t.Fatalf("browser leg: %v", err)
	}

	// The browser may finish its handshake a moment before the relay
	// stores the keys (the server's last flight is sent before its
	// handshake returns): a packet in that moment is dropped as not ready,
	// as a browser's first packets may be. Wait for the first through.
	buf := make([]byte, 2048)
	for try := 0; ; try++ {
		if err := peer.WriteRTP(rtpPacket(uint16(try), 0x1234)); err != nil {
			t.Fatal(err)
		}
		phone.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, _, err := phone.ReadFromUDPAddrPort(buf); err == nil {
			break
		}
		if try == 20 {
			t.Fatalf("no RTP reached the phone in 2 s after the browser's handshake; flows %+v", d.flows(t, callID))
		}
	}
	// Browser to phone: SRTP in, the same RTP out (sequence numbers go on
	// from the warm-up: the relay's replay window drops older ones).
	for i := uint16(100); i < 120; i++ {
		sent := rtpPacket(i, 0x1234)
		if err := peer.WriteRTP(sent); err != nil {
			t.Fatal(err)
		}
		phone.SetReadDeadline(time.Now().Add(2 * time.Second))
		k, from, err := phone.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("phone got no RTP for packet %d: %v", i, err)
		}
		if from != phoneSends {
			t.Errorf("phone got RTP from %v, want the relay's %v", from, phoneSends)
		}
		if !bytes.Equal(buf[:k], sent) {
			t.Fatalf("phone got %d bytes %x..., want the browser's plain RTP (%d bytes)", k, buf[:min(k, 16)], len(sent))
		}
	}
	// Phone to browser: RTP in, SRTP out that the browser decrypts.
	for i := uint16(0); i < 20; i++ {
		sent := rtpPacket(100+i, 0x5678)
		if _, err := phone.WriteToUDPAddrPort(sent, phoneSends); err != nil {
			t.Fatal(err)
		}
		got, err := peer.ReadRTP(ctx)
		if err != nil {
			t.Fatalf("browser got no RTP for packet %d: %v", i, err)
		}
		if !bytes.Equal(got, sent) {
			t.Fatalf("browser decrypted %x..., want %x...", got[:16], sent[:16])
		}
	}
	// RTCP from the browser's muxed port goes to the phone's RTCP port.
	sr := []byte{0x80, 200, 0, 6, 0, 0, 0x12, 0x34, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3}
	if err := peer.WriteRTCP(sr); err != nil {
		t.Fatal(err)
	}
	rtcpSock.SetReadDeadline(time.Now().Add(2 * time.Second))
	if k, _, err := rtcpSock.ReadFromUDPAddrPort(buf); err != nil || !bytes.Equal(buf[:k], sr) {
		t.Errorf("phone's RTCP port got %x, %v; want the browser's sender report %x", buf[:max(k, 0)], err, sr)
	}
	// A forged tag is dropped and counted; the phone gets nothing.
	for i := uint16(0); i < 5; i++ {
		if err := peer.WriteCorruptRTP(rtpPacket(300+i, 0x1234)); err != nil {
			t.Fatal(err)
		}
	}
	phone.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if k, _, err := phone.ReadFromUDPAddrPort(buf); err == nil {
		t.Errorf("phone got %d bytes from a forged SRTP packet", k)
	}

	var badAuth uint64
	sawReady := false
	for _, f := range d.flows(t, callID) {
		if f.UserspaceOnly == "" || f.Path != "userspace" {
			t.Errorf("flow %s/%s %s: path %s, userspace_only %q; want userspace with a reason", f.Leg, f.Component, f.Local, f.Path, f.UserspaceOnly)
		}
		if f.In != nil {
			if f.In.Kind != "dtls-srtp" || !f.In.ICE || f.In.Role != "server" {
				t.Errorf("browser leg %+v: want dtls-srtp, ICE, server role", *f.In)
			}
			sawReady = sawReady || f.In.State == "ready"
			badAuth += f.In.Counters["srtp_bad_auth"]
		}
	}
	if !sawReady {
		t.Errorf("no flow shows the browser leg ready: %+v", d.flows(t, callID))
	}
	if badAuth != 5 {
		t.Errorf("srtp_bad_auth %d, want the 5 forged packets", badAuth)
	}
	if v := metricValue(t, d.http, `sipxdp_media_dtls_handshakes_total{result="ok"}`); v != 1 {
		t.Errorf("dtls handshakes ok %v, want 1", v)
	}
	if v := metricValue(t, d.http, `sipxdp_userspace_dropped_packets_total{reason="srtp"}`); v < 5 {
		t.Errorf("srtp drops in the metrics %v, want at least the 5 forged packets", v)
	}
	if r := n.do(map[string]any{"command": "delete", "call-id": callID, "from-tag": "browser"}); r["result"] != "ok" {
		t.Errorf("delete: %v", r)
	}
	if fs := d.flows(t, ""); len(fs) != 0 {
		t.Errorf("flows after delete: %+v", fs)
	}
}

// TestWebRTCBadPeers: a DTLS handshake that fails ends the call rather
// than let media through in the clear. A browser whose certificate does
// not match its a=fingerprint, and one that answers ICE but never speaks
// DTLS, each lose the call (gone from list and /flows) within
// media.dtls_timeout, and the phone never gets a packet.
func TestWebRTCBadPeers(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	// A media timeout far beyond the wait: only the failed leg may end
	// the call.
	d, n, _, _, stop := startRelayOnly(t, func(c *Config) {
		c.Media.DTLSTimeout = Duration(2 * time.Second)
		c.Media.Timeout = Duration(time.Minute)
	})
	defer stop()
	for _, c := range []struct {
		name string
		cfg  webrtcpeer.Config
	}{
		{"wrong fingerprint", webrtcpeer.Config{WrongFingerprint: true}},
		{"stalled dtls", webrtcpeer.Config{NoDTLS: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			peer, err := webrtcpeer.New(c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			callID := strings.ReplaceAll(c.name, " ", "-") + "@test"
			phone, _, toBrowser := browserCall(t, n, callID, peer)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err = peer.Connect(ctx, toBrowser)
			if !c.cfg.NoDTLS && err == nil {
				t.Fatal("the relay completed DTLS with a peer whose certificate does not match its fingerprint")
			}
			_ = peer.WriteRTP(rtpPacket(1, 1)) // not keyed: must not reach the phone in any form
			deadline := time.Now().Add(4 * time.Second)
			for {
				l := n.do(map[string]any{"command": "list"})
				if !strings.Contains(fmt.Sprint(l["calls"]), callID) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("call still listed 4 s after a failed DTLS leg (dtls_timeout 2s): %v; flows %+v", l, d.flows(t, callID))
				}
				time.Sleep(100 * time.Millisecond)
			}
			if fs := d.flows(t, callID); len(fs) != 0 {
				t.Errorf("flows left: %+v", fs)
			}
			phone.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if k, _, err := phone.ReadFromUDPAddrPort(make([]byte, 2048)); err == nil {
				t.Errorf("phone got %d bytes from a browser whose DTLS failed", k)
			}
		})
	}
	if v := metricValue(t, d.http, `sipxdp_media_dtls_handshakes_total{result="failed"}`); v != 2 {
		t.Errorf("failed dtls legs in the metrics %v, want 2", v)
	}
}

// TestSDESBridgeNG: an SDES-SRTP phone (RTP/SAVP, a=crypto) calls a plain
// RTP phone with "RTP/AVP": the relay answers the SRTP side with a key of
// its own in the offered suite and tag, decrypts what it sends and
// encrypts what it gets, packet for packet.
func TestSDESBridgeNG(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	_, n, _, _, stop := startRelayOnly(t, nil)
	defer stop()
	udp := func() (*net.UDPConn, netip.AddrPort) {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, c.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	sdes, sdesAddr := udp()
	plain, plainAddr := udp()
	ourKey, err := webrtcsdp.NewCrypto(1)
	if err != nil {
		t.Fatal(err)
	}
	offer := fmt.Sprintf("v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"+
		"m=audio %d RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:%s\r\n", sdesAddr.Port(), ourKey)
	toPlain, plainSends := sdpOf(t, n.do(map[string]any{"command": "offer", "call-id": "sdes@test", "from-tag": "a",
		"sdp": offer, "flags": []any{"RTP/AVP"}}))
	if strings.Contains(toPlain, "crypto") || !strings.Contains(toPlain, "RTP/AVP") {
		t.Fatalf("offer to the plain phone:\n%s", toPlain)
	}
	answer := fmt.Sprintf("v=0\r\no=b 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"+
		"m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n", plainAddr.Port())
	toSDES, sdesSends := sdpOf(t, n.do(map[string]any{"command": "answer", "call-id": "sdes@test", "from-tag": "a",
		"to-tag": "b", "sdp": answer}))
	b, err := webrtcsdp.Parse([]byte(toSDES))
	if err != nil {
		t.Fatal(err)
	}
	o, err := webrtcsdp.Describe(b)
	if err != nil || len(o.Media[0].Crypto) != 1 || o.Media[0].Proto != "RTP/SAVP" {
		t.Fatalf("answer to the SDES phone (%v):\n%s", err, toSDES)
	}
	relayKey := o.Media[0].Crypto[0]
	if relayKey.Tag != 1 || bytes.Equal(relayKey.Key, ourKey.Key) {
		t.Fatalf("relay's a=crypto %v: want tag 1 and a key of its own", relayKey)
	}
	// The SDES phone's SRTP, by pion through srtpleg: it encrypts with its
	// key and decrypts with the relay's.
	sess, err := srtpleg.NewSDES(srtpleg.Key{Suite: ourKey.Suite, Key: ourKey.Key}, srtpleg.Key{Suite: relayKey.Suite, Key: relayKey.Key})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	buf := make([]byte, 2048)
	for i := uint16(0); i < 10; i++ {
		sent := rtpPacket(i, 0xabc)
		enc, err := sess.EncryptRTP(nil, sent)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sdes.WriteToUDPAddrPort(enc, sdesSends); err != nil {
			t.Fatal(err)
		}
		plain.SetReadDeadline(time.Now().Add(2 * time.Second))
		k, _, err := plain.ReadFromUDPAddrPort(buf)
		if err != nil || !bytes.Equal(buf[:k], sent) {
			t.Fatalf("plain phone got %x (%v), want the decrypted RTP", buf[:max(k, 0)], err)
		}
		back := rtpPacket(50+i, 0xdef)
		if _, err := plain.WriteToUDPAddrPort(back, plainSends); err != nil {
			t.Fatal(err)
		}
		sdes.SetReadDeadline(time.Now().Add(2 * time.Second))
		k, _, err = sdes.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		dec, err := sess.DecryptRTP(nil, buf[:k])
		if err != nil || !bytes.Equal(dec, back) {
			t.Fatalf("SDES phone decrypted %x (%v), want the plain phone's RTP", dec, err)
		}
	}
	n.do(map[string]any{"command": "delete", "call-id": "sdes@test"})
}
