package media

import (
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

	"sipxdp/relay"
	"sipxdp/relay/cryptoleg"
	"sipxdp/relay/srtpleg"
	"sipxdp/sipd/webrtcsdp"
)

func readSDP(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../webrtcsdp/testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func describe(t *testing.T, body []byte) webrtcsdp.Offer {
	t.Helper()
	b, err := webrtcsdp.Parse(body)
	if err != nil {
		t.Fatalf("parse %v\n%s", err, body)
	}
	o, err := webrtcsdp.Describe(b)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func (f *fakeEngine) sec(id string, index int, side relay.Side) (relay.LegSecurity, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.security[peerKey{id, index, side}]
	return s, ok && s.Kind != cryptoleg.Plain
}

// TestBrowserToPhoneNG is the pair of rtpengine_manage calls a Kamailio
// WebRTC config makes: the browser's offer goes to the phone with
// "ICE=remove RTP/AVP rtcp-mux-demux", the phone's answer to the browser
// with "ICE=force DTLS=passive RTP/SAVPF". The phone must see plain RTP
// (no ICE, no DTLS, RTCP on its own port, video refused); the browser an
// ICE-lite DTLS answer from the relay; the engine must terminate DTLS on
// the browser's leg only.
func TestBrowserToPhoneNG(t *testing.T) {
	c, f := newCtl(ModeAll)
	chrome := readSDP(t, "chrome_audio_video.sdp")
	toPhone, err := c.Offer(cid, callerTag, chrome, netip.Addr{},
		&Options{Proto: "RTP/AVP", ICE: "remove", RTCPMux: []string{"demux"}})
	if err != nil {
		t.Fatal(err)
	}
	po := describe(t, toPhone)
	am, vm := po.Media[0], po.Media[1]
	sp := f.sessions[cid][0]
	switch {
	case am.Proto != webrtcsdp.ProtoAVP || am.Ufrag != "" || len(am.Fingerprints) != 0 || am.RTCPMux:
		t.Errorf("phone audio m-line is not plain RTP with RTCP apart: %+v\n%s", am, toPhone)
	case am.Port != sp.B.RTP:
		t.Errorf("phone audio port %d, want the B leg %d", am.Port, sp.B.RTP)
	case vm.Port != 0:
		t.Errorf("video m-line not refused: port %d\n%s", vm.Port, toPhone)
	case !strings.Contains(string(toPhone), "a=rtcp:"+itoa(sp.B.RTCP)):
		t.Errorf("phone's SDP lacks a=rtcp:%d\n%s", sp.B.RTCP, toPhone)
	case strings.Contains(string(toPhone), "a=candidate"), strings.Contains(string(toPhone), "ice-lite"):
		t.Errorf("ICE left toward the phone\n%s", toPhone)
	}
	if _, ok := f.sessions[cid][1]; ok {
		t.Error("a relay stream was allocated for the refused video m-line")
	}
	secA, ok := f.sec(cid, 0, relay.SideA)
	if !ok || secA.Kind != cryptoleg.DTLS || secA.ICE == nil || secA.ICE.RemoteUfrag != "Xk2f" ||
		secA.Fingerprint.Value[:8] != "7B:8B:F0" {
		t.Fatalf("browser leg security %+v, want DTLS with ICE (ufrag Xk2f) and Chrome's fingerprint", secA)
	}
	if _, ok := f.sec(cid, 0, relay.SideB); ok {
		t.Error("the phone's plain leg was given security")
	}

	phone := sdp("192.0.2.20", 1, audio(20000), video(0))
	toBrowser, err := c.Answer(cid, callerTag, calleeTag, []byte(phone), netip.Addr{},
		&Options{Proto: "RTP/SAVPF", ICE: "force", DTLS: "passive"})
	if err != nil {
		t.Fatal(err)
	}
	ba := describe(t, toBrowser)
	a := ba.Media[0]
	wantFP := webrtcsdp.FingerprintOf(fakeCert)
	switch {
	case !ba.ICELite:
		t.Errorf("answer to the browser is not ice-lite\n%s", toBrowser)
	case a.Proto != webrtcsdp.ProtoDTLS:
		t.Errorf("answer proto %q, want the browser's %q", a.Proto, webrtcsdp.ProtoDTLS)
	case a.Ufrag != secA.ICE.LocalUfrag || a.Pwd != secA.ICE.LocalPwd:
		t.Errorf("answer ICE %s/%s, engine has %s/%s", a.Ufrag, a.Pwd, secA.ICE.LocalUfrag, secA.ICE.LocalPwd)
	case a.Candidates != 1 || !strings.Contains(string(toBrowser), relayAddr.String()+" "+itoa(sp.A.RTP)+" typ host"):
		t.Errorf("want one host candidate %s:%d\n%s", relayAddr, sp.A.RTP, toBrowser)
	case len(a.Fingerprints) != 1 || a.Fingerprints[0] != wantFP:
		t.Errorf("fingerprint %v, want the relay's %v", a.Fingerprints, wantFP)
	case a.Setup != webrtcsdp.SetupPassive:
		t.Errorf("a=setup:%s, want passive (DTLS=passive)", a.Setup)
	case !a.RTCPMux || a.Mid != "0":
		t.Errorf("rtcp-mux %v mid %q, want mux and mid 0", a.RTCPMux, a.Mid)
	case len(ba.Bundles) != 1 || strings.Join(ba.Bundles[0], " ") != "0":
		t.Errorf("BUNDLE groups %v, want [0]", ba.Bundles)
	case ba.Media[1].Port != 0:
		t.Errorf("video in the answer to the browser has port %d", ba.Media[1].Port)
	}
	secA, _ = f.sec(cid, 0, relay.SideA)
	if secA.Role != srtpleg.Server {
		t.Errorf("relay role toward the browser %s, want server (a=setup:passive)", secA.Role)
	}
}

// TestPhoneToBrowserProxy: sipd's own call from a UDP phone to a ws
// callee. The browser is offered ICE-lite DTLS with rtcp-mux (actpass, so
// the browser picks), and its answer (setup active) makes the relay the
// DTLS server; the phone's answer is plain RTP.
func TestPhoneToBrowserProxy(t *testing.T) {
	c, f := newCtl(ModeAll)
	inv := invite(t, sdp("192.0.2.10", 1, audio(10000)))
	if err := c.Invite(inv, netip.MustParseAddr("192.0.2.20"), "WS"); err != nil {
		t.Fatal(err)
	}
	toBrowser := describe(t, inv.Body())
	m := toBrowser.Media[0]
	if m.Proto != webrtcsdp.ProtoDTLS || m.Setup != webrtcsdp.SetupActpass || !m.RTCPMux || m.Ufrag == "" || m.Mid == "" {
		t.Fatalf("offer to the browser %+v\n%s", m, inv.Body())
	}
	secB, ok := f.sec(cid, 0, relay.SideB)
	if !ok || secB.Kind != cryptoleg.DTLS || secB.ICE == nil || secB.ICE.LocalUfrag != m.Ufrag {
		t.Fatalf("browser leg security %+v", secB)
	}
	// The browser answers as Chrome does: active, its own ICE and
	// fingerprint, rtcp-mux.
	fp := "sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08"
	ans := "v=0\r\no=- 1 2 IN IP4 192.0.2.20\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n" +
		"m=audio 30000 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 192.0.2.20\r\na=rtpmap:0 PCMU/8000\r\n" +
		"a=ice-ufrag:brws\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:" + fp + "\r\na=setup:active\r\n" +
		"a=mid:0\r\na=rtcp-mux\r\na=candidate:1 1 udp 2122260223 192.0.2.20 30000 typ host\r\n"
	res := response(t, 200, true, "INVITE", ans)
	c.Response(res)
	toPhone := describe(t, res.Body())
	if p := toPhone.Media[0]; p.Proto != webrtcsdp.ProtoAVP || p.Ufrag != "" || len(p.Fingerprints) != 0 || p.RTCPMux {
		t.Errorf("answer to the phone %+v\n%s", p, res.Body())
	}
	secB, _ = f.sec(cid, 0, relay.SideB)
	if secB.Role != srtpleg.Server || secB.ICE.RemoteUfrag != "brws" || secB.Fingerprint.Hash != "sha-256" {
		t.Errorf("browser leg after its answer %+v, want server role, remote ufrag brws and its fingerprint", secB)
	}
	if _, ok := f.sec(cid, 0, relay.SideA); ok {
		t.Error("the phone's plain leg was given security")
	}
}

// TestSDESPassThrough: SDES on both sides with no flag that changes the
// profile is not terminated (the keys pass end to end, and the call can
// stay on the kernel path); an MKI-only offer cannot be bridged to RTP.
func TestSDESPassThrough(t *testing.T) {
	c, f := newCtl(ModeAll)
	phone := readSDP(t, "phone_savp_sdes.sdp")
	out, err := c.Offer(cid, callerTag, phone, netip.Addr{}, &Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:32") {
		t.Errorf("crypto lines not passed through\n%s", out)
	}
	if _, ok := f.sec(cid, 0, relay.SideA); ok {
		t.Error("pass-through SDES was terminated")
	}
	// To plain RTP, the relay terminates the first suite it supports
	// without an MKI (tag 2, SHA1_32) and keys the phone's answer with it.
	c2, f2 := newCtl(ModeAll)
	out, err = c2.Offer("c2", callerTag, phone, netip.Addr{}, &Options{Proto: "RTP/AVP"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "a=crypto") || !strings.Contains(string(out), " RTP/AVP ") {
		t.Errorf("offer to the plain side keeps SRTP\n%s", out)
	}
	ans, err := c2.Answer("c2", callerTag, calleeTag, []byte(sdp("192.0.2.20", 1, audio(20000))), netip.Addr{}, &Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := describe(t, ans).Media[0]
	if a.Proto != webrtcsdp.ProtoSAVP || len(a.Crypto) != 1 || a.Crypto[0].Tag != 2 || a.Crypto[0].Suite != "AES_CM_128_HMAC_SHA1_32" {
		t.Fatalf("answer to the SDES phone %+v\n%s", a, ans)
	}
	sec, ok := f2.sec("c2", 0, relay.SideA)
	if !ok || sec.Kind != cryptoleg.SDES || sec.RemoteKey.Suite != "AES_CM_128_HMAC_SHA1_32" ||
		string(sec.LocalKey.Key) != string(a.Crypto[0].Key) {
		t.Errorf("phone leg security %+v, want SDES keyed by tag 2 and the relay's answered key", sec)
	}
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }
