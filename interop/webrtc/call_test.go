package webrtc

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/internal/browser"
	"sipxdp/internal/netns"
	"sipxdp/internal/rtpphone"
	"sipxdp/internal/sipdtest"
	"sipxdp/internal/sipua"
	"sipxdp/internal/testcert"
	"sipxdp/sipd/sipconf"
)

const (
	domain  = "sipxdp.test"
	alicePW = "alice-pw"
	bobPW   = "bob-pw"
	wsPort  = 8088
	wssPort = 8089
	// The relay's port range in its namespace, and bob's RTP ports.
	relayPortMin = 40000
	relayPortMax = 40099
	bobRTP       = 30000
	// toneHz is what bob sends; the browser must hear it.
	toneHz = 440
)

// callEnv is one browser test's world, each party in its own namespace:
//
//	Chromium (alice)  --ws/wss-->  sipd + relay  <--UDP--  bob
//	caller ns, .1.2               relay ns, .1.1/.2.1     callee ns, .2.2
type callEnv struct {
	tp    *netns.Topo
	sipd  *sipdtest.Sipd
	page  *browser.Page
	bob   *sipua.UA
	relay netip.Addr // the relay address sipd puts in SDP
	calls int
}

// newCallEnv starts sipd in media mode with ws and wss listeners, bob
// registered over UDP, and the browser registered as alice over
// transport ("ws" or "wss"). datapath is sipd's media.datapath: with a
// kernel one (tc) the WebRTC call must still run on the userspace relay,
// since only it can do the crypto.
func newCallEnv(t *testing.T, mode, transport, datapath string) *callEnv {
	t.Helper()
	bin := requireBrowser(t)
	tp := netns.New(t, netns.Config{Prefix: nsPrefix, Net4: net4})
	e := &callEnv{tp: tp, relay: tp.V4.RelayA}

	cert, key := testcert.Write(t, tp.V4.RelayA)
	cfg := sipdtest.Config(t)
	// Fixed ports: the relay namespace is new, so they are free.
	cfg.HTTP.Listen = "127.0.0.1:18080"
	cfg.SIP.Listen = []sipconf.Listen{
		{Transport: "udp", Addr: netip.AddrPortFrom(tp.V4.RelayB, 5060).String()},
		{Transport: "ws", Addr: netip.AddrPortFrom(tp.V4.RelayA, wsPort).String()},
		{Transport: "wss", Addr: netip.AddrPortFrom(tp.V4.RelayA, wssPort).String(), Cert: cert, Key: key},
	}
	cfg.SIP.Domains = []string{domain}
	cfg.Log.Level = "debug"
	cfg.Media.Mode = mode
	cfg.Media.Datapath = datapath
	// Both of the relay's links: bob's RTP comes in on the other one.
	cfg.Media.Interfaces = []string{netns.RelayA, netns.RelayB}
	cfg.Media.Addresses[0].Local = e.relay.String()
	cfg.Media.Addresses[0].PortMin, cfg.Media.Addresses[0].PortMax = relayPortMin, relayPortMax
	e.sipd = sipdtest.Start(t, cfg, sipdtest.Options{NS: tp.Relay, Users: map[string]string{"alice": alicePW, "bob": bobPW}})
	if h := e.sipd.Health(); mode != "none" && h.Media.Path != datapath {
		t.Fatalf("sipd's media path is %s (%s), want %s", h.Media.Path, h.Media.Reason, datapath)
	}

	conn, err := tp.Callee.ListenUDP(netip.AddrPortFrom(tp.V4.Callee, 5060))
	if err != nil {
		t.Fatal(err)
	}
	e.bob = sipua.New(t, conn, e.sipd.SIPAddr("udp"))
	e.bob.Register("bob", domain, bobPW)

	port := wsPort
	if transport == "wss" {
		port = wssPort
	}
	e.page = openPage(t, bin, tp.Caller, url.Values{
		"ws":       {fmt.Sprintf("%s://%s", transport, netip.AddrPortFrom(tp.V4.RelayA, uint16(port)))},
		"user":     {"alice"},
		"password": {alicePW},
		"domain":   {domain},
		"debug":    {"1"},
	})
	e.page.Await(15*time.Second, []string{"registered"}, "registrationFailed")
	return e
}

// invite has the browser call bob and returns the INVITE as bob got it.
func (e *callEnv) invite(t *testing.T) *sip.Request {
	t.Helper()
	e.page.Command("call", map[string]any{"target": "bob"})
	inv := e.bob.WaitRequest(sip.INVITE, 10*time.Second)
	if inv == nil {
		if ev, ok := e.page.Seen("failed", "ended"); ok {
			t.Fatalf("bob got no INVITE from the browser; the page reported %v", ev)
		}
		t.Fatal("bob got no INVITE from the browser")
	}
	return inv
}

// TestPhoneCallsBrowser is TestBrowserCallsPhone the other way round:
// bob calls the browser registered over ws or wss with a plain RTP/AVP
// offer, the relay offers the browser DTLS-SRTP with ICE, the browser
// answers, and the same media, BYE and /flows checks pass.
func TestPhoneCallsBrowser(t *testing.T) {
	for _, transport := range []string{"ws", "wss"} {
		t.Run(transport, func(t *testing.T) {
			e := newCallEnv(t, "all", transport, "userspace")
			e.callBrowser(t, true)
			e.callBrowser(t, false)
		})
	}
}

// TestBrowserCallsPhone: Chromium with JsSIP registers to sipd over ws
// (and over wss with the test's self-signed certificate) and calls bob, a
// plain-RTP phone on UDP, with media.mode all. The call is answered; bob
// gets RTP from the relay that is PCMU and carries the browser's fake
// microphone (sound, neither silence nor SRTP noise); the browser's
// getStats shows bob's tone arriving (packetsReceived growing,
// totalAudioEnergy above zero) over DTLS-SRTP from the relay. A BYE from
// the browser ends the first call, one from bob the second, and each
// leaves no flow in /flows. Over wss sipd runs the tc datapath, under
// which the WebRTC call must stay on the userspace relay (the kernel
// forwarding the phone's plain RTP to the browser would be neither
// encrypted nor heard).
func TestBrowserCallsPhone(t *testing.T) {
	for _, c := range []struct{ transport, datapath string }{{"ws", "userspace"}, {"wss", "tc"}} {
		t.Run(c.transport+"/"+c.datapath, func(t *testing.T) {
			e := newCallEnv(t, "all", c.transport, c.datapath)
			e.call(t, true)
			e.call(t, false)
		})
	}
}

// call makes one call from the browser to bob with media and ends it by
// a BYE from the browser or from bob.
func (e *callEnv) call(t *testing.T, browserHangsUp bool) {
	t.Helper()
	e.calls++
	inv := e.invite(t)
	callID := inv.CallID().Value()
	offer := string(inv.Body())
	// bob speaks plain RTP: the relay offers it RTP/AVP with PCMU and no
	// WebRTC attributes, and sends from the address it announces.
	if err := plainSDP(offer); err != nil {
		t.Fatalf("the INVITE bob got: %v\n%s", err, offer)
	}
	relayForBob, err := mediaAddr(offer)
	if err != nil {
		t.Fatalf("the INVITE bob got: %v\n%s", err, offer)
	}
	if relayForBob.Addr() != e.relay || relayForBob.Port() < relayPortMin || relayForBob.Port() > relayPortMax {
		t.Fatalf("the INVITE bob got points at %v, want the relay %v port %d-%d\n%s", relayForBob, e.relay, relayPortMin, relayPortMax, offer)
	}

	rtpAddr := netip.AddrPortFrom(e.tp.V4.Callee, uint16(bobRTP+2*e.calls))
	rtpConn, err := e.tp.Callee.ListenUDP(rtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer rtpConn.Close()
	e.bob.Respond(inv, 200, "OK", toTag, sipua.SDP(rtpAddr))
	phone := startPhone(rtpConn, relayForBob)
	defer phone.Stop()
	answer := e.confirm(t)
	if err := webrtcSDP(answer); err != nil {
		t.Fatalf("the 200 OK the browser got: %v\n%s", err, answer)
	}
	relayForBrowser, err := mediaAddr(answer)
	if err != nil {
		t.Fatalf("the 200 OK the browser got: %v\n%s", err, answer)
	}

	e.checkMedia(t, phone, relayForBob, relayForBrowser)
	e.checkFlows(t, callID)
	e.hangup(t, inv, browserHangsUp)
	phone.Stop()
	e.flowsGone(t, callID)
}

// callBrowser makes one call from bob to the browser with media and ends
// it by a BYE from the browser or from bob.
func (e *callEnv) callBrowser(t *testing.T, browserHangsUp bool) {
	t.Helper()
	e.calls++
	rtpAddr := netip.AddrPortFrom(e.tp.V4.Callee, uint16(bobRTP+2*e.calls))
	rtpConn, err := e.tp.Callee.ListenUDP(rtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer rtpConn.Close()
	offer, d := e.dialBrowser(t, sipua.SDP(rtpAddr))
	if err := webrtcSDP(offer); err != nil {
		t.Fatalf("the INVITE the browser got: %v\n%s", err, offer)
	}
	relayForBrowser, err := mediaAddr(offer)
	if err != nil {
		t.Fatalf("the INVITE the browser got: %v\n%s", err, offer)
	}
	answer := string(d.Answer.Body())
	if err := plainSDP(answer); err != nil {
		t.Fatalf("the 200 OK bob got: %v\n%s", err, answer)
	}
	relayForBob, err := mediaAddr(answer)
	if err != nil {
		t.Fatalf("the 200 OK bob got: %v\n%s", err, answer)
	}
	if relayForBob.Addr() != e.relay || relayForBob.Port() < relayPortMin || relayForBob.Port() > relayPortMax {
		t.Fatalf("the 200 OK bob got points at %v, want the relay %v port %d-%d\n%s", relayForBob, e.relay, relayPortMin, relayPortMax, answer)
	}
	phone := startPhone(rtpConn, relayForBob)
	defer phone.Stop()
	e.checkMedia(t, phone, relayForBob, relayForBrowser)
	e.checkFlows(t, d.Ack.CallID)
	e.hangupBrowser(t, d, browserHangsUp)
	phone.Stop()
	e.flowsGone(t, d.Ack.CallID)
}

// dialBrowser has bob call alice, the browser, with offer (answering
// sipd's challenge), has the browser answer when its INVITE arrives, and
// acknowledges the 200. It returns the SDP of the INVITE as the browser
// got it, and the dialog as bob sees it.
func (e *callEnv) dialBrowser(t *testing.T, offer string) (string, *sipua.Dialog) {
	t.Helper()
	callID := fmt.Sprintf("bob-calls-%d-%d", e.calls, time.Now().UnixNano())
	inv := sipua.Msg{Method: "INVITE", RURI: "sip:alice@" + domain, From: "sip:bob@" + domain, To: "sip:alice@" + domain,
		CallID: callID, CSeq: 1, Body: offer}
	if r := e.bob.Authenticated(inv, "bob", bobPW); r != nil && r.StatusCode >= 300 {
		t.Fatalf("bob's INVITE: %d %s", r.StatusCode, r.Reason)
	}
	var incoming struct{ SDP string }
	if err := e.page.Await(10*time.Second, []string{"incoming"}).Decode(&incoming); err != nil {
		t.Fatal(err)
	}
	e.page.Command("answer", nil)
	var ok *sip.Response
	for end := time.Now().Add(10 * time.Second); ok == nil || ok.StatusCode < 200; {
		if ok = e.bob.ResponseTo(callID, time.Until(end)); ok == nil {
			if ev, ok := e.page.Seen("failed", "ended"); ok {
				t.Fatalf("bob got no answer from the browser; the page reported %v", ev)
			}
			t.Fatal("bob got no answer from the browser")
		}
	}
	if ok.StatusCode != 200 {
		t.Fatalf("the browser answered bob's INVITE with %d %s; the offer it got:\n%s", ok.StatusCode, ok.Reason, incoming.SDP)
	}
	ack := sipua.Msg{Method: "ACK", RURI: sipua.ContactURI(ok), From: inv.From, To: inv.To, ToTag: ok.To().Params.GetOr("tag", ""),
		CallID: callID, CSeq: int(ok.CSeq().SeqNo), Headers: sipua.RouteSet(ok.GetHeaders("Record-Route"), true)}
	e.bob.Send(e.bob.Request(ack))
	e.page.Await(5*time.Second, []string{"confirmed"}, "failed", "ended")
	return incoming.SDP, &sipua.Dialog{Caller: e.bob, Invite: inv, Answer: ok, Ack: ack}
}

// hangupBrowser ends a call bob made with a BYE from the browser or from
// bob, and checks the other side gets it and the browser sees the end.
func (e *callEnv) hangupBrowser(t *testing.T, d *sipua.Dialog, browserHangsUp bool) {
	t.Helper()
	if browserHangsUp {
		e.byeFromBrowser(t)
		return
	}
	bye := d.Ack
	bye.Method, bye.CSeq = "BYE", d.Ack.CSeq+1
	e.byeFromBob(t, bye)
}

// checkMedia checks both directions of an established call's audio:
// the browser hears bob's tone from the relay over DTLS-SRTP, and bob
// hears the browser's beeps as PCMU from the relay. relayForBob and
// relayForBrowser are the relay's addresses in the SDP each side got.
func (e *callEnv) checkMedia(t *testing.T, phone *rtpphone.Phone, relayForBob, relayForBrowser netip.AddrPort) {
	t.Helper()
	// The browser hears bob: inbound audio with energy, still growing a
	// second later, over DTLS-SRTP with the relay.
	first := e.page.AwaitStats(10*time.Second, "inbound audio with energy from the relay", func(s browser.Stats) bool {
		return s.Inbound != nil && s.Inbound.PacketsReceived > 0 && s.Inbound.TotalAudioEnergy > 0
	})
	later := e.page.AwaitStats(5*time.Second, "packetsReceived growing", func(s browser.Stats) bool {
		return s.Inbound != nil && s.Inbound.PacketsReceived >= first.Inbound.PacketsReceived+25
	})
	t.Logf("call %d, browser: %v", e.calls, later)
	if later.DTLSState != "connected" || later.SRTPCipher == "" {
		t.Errorf("browser transport not DTLS-SRTP: %v", later)
	}
	if later.Outbound == nil || later.Outbound.PacketsSent == 0 || !strings.EqualFold(later.Outbound.Codec, "audio/PCMU") {
		t.Errorf("browser sends no PCMU: %v", later)
	}
	if p := later.Pair; p == nil || p.Remote.Address != relayForBrowser.Addr().String() || p.Remote.Port != int(relayForBrowser.Port()) {
		t.Errorf("browser's selected candidate pair %v, want the relay %v (from its SDP)", later.Pair, relayForBrowser)
	}

	// bob hears the browser: PCMU RTP from the relay, with the fake
	// microphone's beeps (every 500 ms) in it.
	var rec rtpphone.Recording
	deadline := time.Now().Add(5 * time.Second)
	for rec = phone.Recording(); (rec.Loud < 3 || rec.Packets < 50) && time.Now().Before(deadline); rec = phone.Recording() {
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("call %d, bob: %v", e.calls, rec)
	switch {
	case rec.Packets < 50:
		t.Errorf("bob got %d RTP packets from the browser, want 50 or more: %v", rec.Packets, rec)
	case rec.NotRTP > 0:
		t.Errorf("bob got %d datagrams that are not RTP: %v", rec.NotRTP, rec)
	case rec.Types[rtpphone.PCMU] != rec.Packets:
		t.Errorf("bob got payload types other than PCMU: %v", rec)
	case rec.Sources[relayForBob] != rec.Packets:
		t.Errorf("bob got RTP from elsewhere than the relay %v: %v", relayForBob, rec)
	case rec.Loud < 3 || rec.Noisy >= rec.Loud:
		t.Errorf("bob hears no beeps (3 loud, smooth packets wanted; noise means SRTP passed through): %v", rec)
	}
}

// checkFlows checks /flows while the call is up: it has flows, none on
// the kernel path (the browser's leg needs the userspace relay's crypto,
// whatever the datapath), and each says why it is not.
func (e *callEnv) checkFlows(t *testing.T, callID string) {
	t.Helper()
	fs := e.flows(t, callID)
	if len(fs) == 0 {
		t.Errorf("/flows shows no flow for call %s while it is up", callID)
	}
	for _, f := range fs {
		if f.Path == "kernel" || f.UserspaceOnly == "" {
			t.Errorf("flow %s %s %s: path %q, userspace_only %q; want it kept in userspace, and why", f.Leg, f.Component, f.Local, f.Path, f.UserspaceOnly)
		}
	}
}

// startPhone starts bob's media on conn, sending its tone to dst.
func startPhone(conn *net.UDPConn, dst netip.AddrPort) *rtpphone.Phone {
	return rtpphone.Start(conn, dst, toneHz)
}

// flowsGone waits for /flows to have no flow of the call.
func (e *callEnv) flowsGone(t *testing.T, callID string) {
	t.Helper()
	var left []flowJSON
	deadline := time.Now().Add(5 * time.Second)
	for left = e.flows(t, callID); len(left) > 0 && time.Now().Before(deadline); left = e.flows(t, callID) {
		time.Sleep(100 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("flows left after the BYE of call %s: %+v", callID, left)
	}
}

// toTag is bob's tag in every dialog.
const toTag = "bob-tag"

// confirm waits, after bob's 200, for the browser to accept the call and
// send the ACK, and for bob to get it; it returns the SDP of the 200 as
// the browser got it.
func (e *callEnv) confirm(t *testing.T) string {
	t.Helper()
	var accepted struct{ SDP string }
	if err := e.page.Await(10*time.Second, []string{"accepted"}, "failed", "ended").Decode(&accepted); err != nil {
		t.Fatal(err)
	}
	e.page.Await(5*time.Second, []string{"confirmed"}, "failed", "ended")
	if e.bob.WaitRequest(sip.ACK, 5*time.Second) == nil {
		t.Fatal("bob got no ACK")
	}
	return accepted.SDP
}

// hangup ends the call of inv with a BYE from the browser or from bob
// and checks the other side gets it and the browser sees the call end.
func (e *callEnv) hangup(t *testing.T, inv *sip.Request, browserHangsUp bool) {
	t.Helper()
	if browserHangsUp {
		e.byeFromBrowser(t)
		return
	}
	from := inv.From()
	e.byeFromBob(t, sipua.Msg{Method: "BYE", RURI: sipua.ContactURI(inv), From: "sip:bob@" + domain, FromTag: toTag,
		To: from.Address.String(), ToTag: from.Params.GetOr("tag", ""), CallID: inv.CallID().Value(), CSeq: 1,
		Headers: sipua.RouteSet(inv.GetHeaders("Record-Route"), false)})
}

// byeFromBrowser has the browser hang up, and checks bob gets the BYE
// (and answers it) and the browser sees its call end.
func (e *callEnv) byeFromBrowser(t *testing.T) {
	t.Helper()
	e.page.Command("hangup", nil)
	bye := e.bob.WaitRequest(sip.BYE, 5*time.Second)
	if bye == nil {
		t.Fatal("bob got no BYE from the browser")
	}
	e.bob.Respond(bye, 200, "OK", "", "")
	var ended struct{ Originator string }
	e.page.Await(5*time.Second, []string{"ended"}, "failed").Decode(&ended)
	if ended.Originator != "local" {
		t.Errorf("call ended by %q, want local (the browser's BYE)", ended.Originator)
	}
}

// byeFromBob sends bob's BYE, and checks the browser ends the call and
// its 200 comes back to bob.
func (e *callEnv) byeFromBob(t *testing.T, bye sipua.Msg) {
	t.Helper()
	e.bob.Send(e.bob.Request(bye))
	var ended struct{ Originator string }
	e.page.Await(5*time.Second, []string{"ended"}, "failed").Decode(&ended)
	if ended.Originator != "remote" {
		t.Errorf("call ended by %q, want remote (bob's BYE)", ended.Originator)
	}
	if r := e.bob.ResponseTo(bye.CallID, 3*time.Second); r == nil || r.StatusCode != 200 {
		t.Fatalf("bob's BYE: answer %v", r)
	}
}

// flowJSON is the part of /flows (sipd/wire.FlowJSON) the test reads.
type flowJSON struct {
	CallID    string `json:"call_id"`
	Leg       string `json:"leg"`
	Component string `json:"component"`
	Local     string `json:"local"`
	Path      string `json:"path"`
	Packets   uint64 `json:"packets"`
	// UserspaceOnly says why a flow cannot take the kernel path (an SRTP
	// leg, RTCP demultiplexed).
	UserspaceOnly string `json:"userspace_only"`
}

func (e *callEnv) flows(t *testing.T, callID string) []flowJSON {
	t.Helper()
	var fs []flowJSON
	e.sipd.GetJSON("/flows?call_id="+url.QueryEscape(callID), &fs)
	return fs
}

// sdpLines splits an SDP body into its lines.
func sdpLines(sdp string) []string {
	return strings.Split(strings.TrimSpace(strings.ReplaceAll(sdp, "\r\n", "\n")), "\n")
}

// mediaAddr is where an SDP says to send audio: the c= address (media
// level over session level) and the first m=audio port.
func mediaAddr(sdp string) (netip.AddrPort, error) {
	var addr netip.Addr
	port := -1
	for _, l := range sdpLines(sdp) {
		switch {
		case strings.HasPrefix(l, "c=IN IP4 "), strings.HasPrefix(l, "c=IN IP6 "):
			if port >= 0 || !addr.IsValid() {
				a, err := netip.ParseAddr(strings.TrimSpace(l[len("c=IN IP4 "):]))
				if err != nil {
					return netip.AddrPort{}, fmt.Errorf("c= line %q: %w", l, err)
				}
				addr = a
			}
		case strings.HasPrefix(l, "m=audio ") && port < 0:
			f := strings.Fields(l)
			p, err := strconv.Atoi(f[1])
			if err != nil || p <= 0 || p > 65535 {
				return netip.AddrPort{}, fmt.Errorf("m= line %q: bad port", l)
			}
			port = p
		}
	}
	if !addr.IsValid() || port < 0 {
		return netip.AddrPort{}, fmt.Errorf("no c= address or m=audio port")
	}
	return netip.AddrPortFrom(addr, uint16(port)), nil
}

// audioProfile is the transport protocol of the first m=audio line.
func audioProfile(sdp string) string {
	for _, l := range sdpLines(sdp) {
		if f := strings.Fields(l); len(f) > 3 && f[0] == "m=audio" {
			return f[2]
		}
	}
	return ""
}

func hasAttr(sdp, prefix string) bool {
	for _, l := range sdpLines(sdp) {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// plainOffer checks an offer is one a plain-RTP phone takes: RTP/AVP
// with PCMU, and no ICE, DTLS or SDES attributes.
func plainSDP(sdp string) error {
	if p := audioProfile(sdp); p != "RTP/AVP" {
		return fmt.Errorf("audio profile %q, want RTP/AVP", p)
	}
	for _, l := range sdpLines(sdp) {
		if f := strings.Fields(l); len(f) > 3 && f[0] == "m=audio" {
			found := false
			for _, pt := range f[3:] {
				found = found || pt == "0"
			}
			if !found {
				return fmt.Errorf("no PCMU (0) among the formats of %q", l)
			}
		}
	}
	for _, a := range []string{"a=ice-ufrag", "a=ice-pwd", "a=candidate", "a=fingerprint", "a=crypto"} {
		if hasAttr(sdp, a) {
			return fmt.Errorf("%s in SDP for a plain-RTP phone", a)
		}
	}
	return nil
}

// webrtcSDP checks an offer or answer is one a browser takes: DTLS-SRTP
// with ICE credentials, a candidate, a fingerprint, a setup role and
// rtcp-mux. RTP/SAVPF with a
// fingerprint is DTLS-SRTP too (RFC 5764's older spelling, which
// rtpengine's RTP/SAVPF flag names and Chromium accepts).
func webrtcSDP(sdp string) error {
	if p := audioProfile(sdp); p != "UDP/TLS/RTP/SAVPF" && p != "RTP/SAVPF" {
		return fmt.Errorf("audio profile %q, want UDP/TLS/RTP/SAVPF", p)
	}
	for _, a := range []string{"a=ice-ufrag:", "a=ice-pwd:", "a=candidate:", "a=fingerprint:", "a=setup:", "a=rtcp-mux"} {
		if !hasAttr(sdp, a) {
			return fmt.Errorf("no %s", a)
		}
	}
	return nil
}
