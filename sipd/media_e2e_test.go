package sipd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sipxdp/relayctl"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/goleak"

	"sipxdp/relay"
	"sipxdp/sipd/sdprewrite"
	"sipxdp/sipd/sipconf"
)

// daemon is sipd running in-process on loopback for an end-to-end test.
type daemon struct {
	sip     netip.AddrPort
	http    string
	portMin int
	portMax int
	relay   netip.Addr
	stop    func()
	cdrPath string
}

func startDaemon(t *testing.T, mode string, edit func(*Config)) *daemon {
	t.Helper()
	cfg := testConfig(t)
	httpPort := freePort(t, "tcp")
	sipPort := freePort(t, "udp")
	// A port range of our own, so parallel packages do not collide, and
	// below the ephemeral range: the relay would otherwise add it to the
	// host's ip_local_reserved_ports, and nothing takes it out again.
	pmin := 20000 + 20*(sipPort%600)
	d := &daemon{sip: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(sipPort)),
		http: fmt.Sprintf("http://127.0.0.1:%d", httpPort), portMin: pmin, portMax: pmin + 19,
		relay: netip.MustParseAddr("127.0.0.1")}
	cfg.HTTP.Listen = fmt.Sprintf("127.0.0.1:%d", httpPort)
	// UDP only: a free UDP port need not be free for TCP.
	cfg.SIP.Listen = []sipconf.Listen{{Transport: "udp", Addr: d.sip.String()}}
	cfg.Media.Mode, cfg.Media.Datapath = mode, "userspace"
	cfg.Media.Addresses[0].PortMin, cfg.Media.Addresses[0].PortMax = d.portMin, d.portMax
	// No users: these tests are about media, not digest.
	cfg.SIP.Auth.Register, cfg.SIP.Auth.Invite = false, false
	d.cdrPath = t.TempDir() + "/cdr.jsonl"
	cfg.SIP.Dialog.CDRFile = d.cdrPath
	if edit != nil {
		edit(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.SIP.Auth.Register || cfg.SIP.Auth.Invite {
		t.Fatal("test config still asks for authentication")
	}
	d.stop = startRun(t, cfg)
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get(d.http + "/health")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			d.stop()
			t.Fatalf("no /health: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return d
}

func (d *daemon) flows(t *testing.T, callID string) []FlowJSON {
	t.Helper()
	resp, err := http.Get(d.http + "/flows?call_id=" + callID)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var fs []FlowJSON
	if err := json.NewDecoder(resp.Body).Decode(&fs); err != nil {
		t.Fatal(err)
	}
	return fs
}

// waitNoFlows waits until the call's flows are gone: the proxy ends the
// session as the final answer passes, which may be just after the ACK that
// a phone sees.
func (d *daemon) waitNoFlows(t *testing.T, callID, after string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		fs := d.flows(t, callID)
		if len(fs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("flows left 3 s after %s: %+v", after, fs)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ua is a minimal SIP phone on a loopback UDP socket, with an RTP socket.
type ua struct {
	t      *testing.T
	name   string
	sip    *net.UDPConn
	rtp    *net.UDPConn
	proxy  netip.AddrPort
	domain string
}

func newUA(t *testing.T, name string, proxy netip.AddrPort) *ua {
	t.Helper()
	s, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return uaOn(t, name, proxy, s, r)
}

// uaOn makes a phone of two open sockets; it closes them when t ends.
func uaOn(t *testing.T, name string, proxy netip.AddrPort, s, r *net.UDPConn) *ua {
	t.Cleanup(func() { s.Close(); r.Close() })
	return &ua{t: t, name: name, sip: s, rtp: r, proxy: proxy, domain: uriHost(proxy.Addr())}
}

// uriHost writes an address as a SIP URI host: IPv6 in brackets.
func uriHost(a netip.Addr) string {
	if a.Is6() {
		return "[" + a.String() + "]"
	}
	return a.String()
}

func (u *ua) sipAddr() netip.AddrPort { return u.sip.LocalAddr().(*net.UDPAddr).AddrPort() }
func (u *ua) rtpAddr() netip.AddrPort { return u.rtp.LocalAddr().(*net.UDPAddr).AddrPort() }

func (u *ua) contact() string { return fmt.Sprintf("<sip:%s@%s>", u.name, u.sipAddr()) }

func (u *ua) sdp() string {
	a := u.rtpAddr()
	fam := "IP4"
	if a.Addr().Is6() {
		fam = "IP6"
	}
	return fmt.Sprintf("v=0\r\no=%s 1 1 IN %s %s\r\ns=-\r\nc=IN %s %s\r\nt=0 0\r\n"+
		"m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n", u.name, fam, a.Addr(), fam, a.Addr(), a.Port())
}

func (u *ua) sendText(text string) {
	u.t.Helper()
	if _, err := u.sip.WriteToUDPAddrPort([]byte(text), u.proxy); err != nil {
		u.t.Fatal(err)
	}
}

// recv returns the next message that is not a 100 Trying.
func (u *ua) recv() sip.Message {
	u.t.Helper()
	buf := make([]byte, 65535)
	for {
		u.sip.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := u.sip.Read(buf)
		if err != nil {
			u.t.Fatalf("%s: no SIP message: %v", u.name, err)
		}
		m, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
		if err != nil {
			u.t.Fatalf("%s: unparsable message: %v\n%s", u.name, err, buf[:n])
		}
		if r, ok := m.(*sip.Response); ok && r.StatusCode == 100 {
			continue
		}
		return m
	}
}

func (u *ua) expectResponse(code int) *sip.Response {
	u.t.Helper()
	m := u.recv()
	r, ok := m.(*sip.Response)
	if !ok || r.StatusCode != code {
		u.t.Fatalf("%s: got\n%s\nwant a %d", u.name, m, code)
	}
	return r
}

func (u *ua) expectRequest(method sip.RequestMethod) *sip.Request {
	u.t.Helper()
	m := u.recv()
	r, ok := m.(*sip.Request)
	if !ok || r.Method != method {
		u.t.Fatalf("%s: got\n%s\nwant a %s", u.name, m, method)
	}
	return r
}

// answer responds to req with code, adding the To tag, Contact and body.
func (u *ua) answer(req *sip.Request, code int, reason, tag, body string) {
	u.t.Helper()
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	if tag != "" && !res.To().Params.Has("tag") {
		res.To().Params.Add("tag", tag)
	}
	c := &sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: u.name, Host: uriHost(u.sipAddr().Addr()), Port: int(u.sipAddr().Port())}}
	res.AppendHeader(c)
	if body != "" {
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res.SetBody([]byte(body))
	}
	// Back to where it came from: the proxy.
	if _, err := u.sip.WriteToUDPAddrPort([]byte(res.String()), u.proxy); err != nil {
		u.t.Fatal(err)
	}
}

func (u *ua) register() {
	u.t.Helper()
	a := u.sipAddr()
	u.sendText(fmt.Sprintf("REGISTER sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-reg-%s;rport\r\n"+
		"Max-Forwards: 70\r\nFrom: <sip:%s@%s>;tag=r%s\r\nTo: <sip:%s@%s>\r\nCall-ID: reg-%s@test\r\n"+
		"CSeq: 1 REGISTER\r\nContact: %s\r\nExpires: 300\r\nContent-Length: 0\r\n\r\n", u.domain, a, u.name, u.name, u.domain, u.name, u.name, u.domain, u.name, u.contact()))
	u.expectResponse(200)
}

func (u *ua) invite(callee, callID string, cseq int, body string, extra ...string) {
	u.t.Helper()
	a := u.sipAddr()
	ct := ""
	if body != "" {
		ct = "Content-Type: application/sdp\r\n"
	}
	u.sendText(fmt.Sprintf("INVITE sip:%s@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-inv-%s-%d;rport\r\n"+
		"Max-Forwards: 70\r\nFrom: <sip:%s@%s>;tag=%s-tag\r\nTo: <sip:%s@%s>\r\nCall-ID: %s\r\n"+
		"CSeq: %d INVITE\r\nContact: %s\r\n%s%s"+"Content-Length: %d\r\n\r\n%s",
		callee, u.domain, a, callID, cseq, u.name, u.domain, u.name, callee, u.domain, callID, cseq, u.contact(), strings.Join(extra, ""), ct, len(body), body))
}

// ackFailure acknowledges a failure response to invite (same branch).
func (u *ua) ackFailure(r *sip.Response, callID string) {
	u.t.Helper()
	u.sendText(fmt.Sprintf("ACK sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-inv-%s-1;rport\r\n"+
		"Max-Forwards: 70\r\nFrom: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
		u.sipAddr(), callID, r.From().Value(), r.To().Value(), callID))
}

// inDialog sends a request within the dialog that resp (caller side) or req
// (callee side) established, following the route set.
func (u *ua) inDialog(method sip.RequestMethod, target sip.Uri, routes []string, from, to, callID string, cseq int, body string) {
	u.t.Helper()
	a := u.sipAddr()
	var rs string
	for _, r := range routes {
		rs += "Route: " + r + "\r\n"
	}
	ct := ""
	if body != "" {
		ct = "Content-Type: application/sdp\r\n"
	}
	u.sendText(fmt.Sprintf("%s %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-%s-%d-%d;rport\r\n"+
		"Max-Forwards: 70\r\nFrom: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d %s\r\n%sContact: %s\r\n%sContent-Length: %d\r\n\r\n%s",
		method, target.String(), a, strings.ToLower(string(method)), cseq, time.Now().UnixNano(), from, to, callID, cseq, method, rs, u.contact(), ct, len(body), body))
}

func recordRoutes(m sip.Message) []string {
	var out []string
	for _, h := range m.GetHeaders("Record-Route") {
		out = append(out, h.Value())
	}
	return out
}

func reversed(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

// mediaOf parses the one audio stream of the SDP in m.
func mediaOf(t *testing.T, m sip.Message) netip.AddrPort {
	t.Helper()
	ms, err := sdprewrite.Parse(m.Body())
	if err != nil || len(ms) == 0 {
		t.Fatalf("sdp: %v\n%s", err, m.Body())
	}
	if cl := m.ContentLength(); cl == nil || int(*cl) != len(m.Body()) {
		t.Errorf("Content-Length %v for a %d-byte body", cl, len(m.Body()))
	}
	if strings.Contains(string(m.Body()), "candidate") {
		t.Errorf("ICE candidates survived:\n%s", m.Body())
	}
	return netip.AddrPortFrom(ms[0].Addr, ms[0].Port)
}

func (d *daemon) checkRelayed(t *testing.T, who string, ap netip.AddrPort) {
	t.Helper()
	if ap.Addr() != d.relay || int(ap.Port()) < d.portMin || int(ap.Port()) > d.portMax {
		t.Fatalf("%s was told to send media to %v, want the relay %v in ports %d-%d", who, ap, d.relay, d.portMin, d.portMax)
	}
}

// waitTimeoutCDR waits up to 2 s for callID's CDR with end_reason
// "media timeout" in the file at path.
func waitTimeoutCDR(t *testing.T, path, callID string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), `"end_reason":"media timeout"`) && strings.Contains(string(b), callID) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no CDR with end_reason media timeout: %q", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// answeredCall places alice's call to bob up to the ACK and returns the
// 200 and where each side must send its media.
func answeredCall(t *testing.T, alice, bob *ua, callID string) (*sip.Response, netip.AddrPort, netip.AddrPort) {
	t.Helper()
	alice.invite("bob", callID, 1, alice.sdp())
	inv := bob.expectRequest(sip.INVITE)
	bobSends := mediaOf(t, inv)
	bob.answer(inv, 200, "OK", "bob-tag", bob.sdp())
	ok := alice.expectResponse(200)
	aliceSends := mediaOf(t, ok)
	alice.inDialog(sip.ACK, ok.Contact().Address, reversed(recordRoutes(ok)), ok.From().Value(), ok.To().Value(), callID, 1, "")
	bob.expectRequest(sip.ACK)
	return ok, aliceSends, bobSends
}

// rtpExchange sends n packets from each side to where its SDP says and
// checks that the other side receives them, from the address its own SDP
// announced for the far end (the relay).
func rtpExchange(t *testing.T, a, b *ua, aSends, bSends netip.AddrPort, n int) {
	t.Helper()
	pkt := func(seq int) []byte {
		p := make([]byte, 172)
		p[0] = 0x80
		p[2], p[3] = byte(seq>>8), byte(seq)
		return p
	}
	recvAll := func(u *ua, want netip.AddrPort) int {
		buf := make([]byte, 2048)
		got := 0
		for {
			u.rtp.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			n, from, err := u.rtp.ReadFromUDPAddrPort(buf)
			if err != nil {
				return got
			}
			if from != want {
				t.Errorf("%s got RTP from %v, want the relay port %v", u.name, from, want)
			}
			if n == 172 {
				got++
			}
		}
	}
	for i := 0; i < n; i++ {
		if _, err := a.rtp.WriteToUDPAddrPort(pkt(i), aSends); err != nil {
			t.Fatal(err)
		}
		if _, err := b.rtp.WriteToUDPAddrPort(pkt(i), bSends); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	// b receives a's packets from the relay port b sends to, and so on.
	if got := recvAll(b, bSends); got < n*9/10 {
		t.Errorf("%s received %d of %d RTP packets through the relay", b.name, got, n)
	}
	if got := recvAll(a, aSends); got < n*9/10 {
		t.Errorf("%s received %d of %d RTP packets through the relay", a.name, got, n)
	}
}

// TestMediaRelayedCall runs a call through sipd in media.mode all with the
// userspace relay: both sides see the relay in SDP, RTP flows both ways
// through it, the flows show packets, a re-INVITE (hold) keeps the ports,
// and BYE removes the flows.
func TestMediaRelayedCall(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	d := startDaemon(t, MediaAll, nil)
	defer d.stop()
	alice, bob := newUA(t, "alice", d.sip), newUA(t, "bob", d.sip)
	bob.register()

	const callID = "e2e-relayed-1@test"
	alice.invite("bob", callID, 1, alice.sdp()+"a=candidate:1 1 UDP 2130706431 127.0.0.1 9 typ host\r\n")
	inv := bob.expectRequest(sip.INVITE)
	bobSends := mediaOf(t, inv)
	d.checkRelayed(t, "bob", bobSends)
	bob.answer(inv, 180, "Ringing", "bob-tag", "")
	alice.expectResponse(180)
	bob.answer(inv, 200, "OK", "bob-tag", bob.sdp())
	ok := alice.expectResponse(200)
	aliceSends := mediaOf(t, ok)
	d.checkRelayed(t, "alice", aliceSends)
	if aliceSends == bobSends {
		t.Fatalf("both legs on one relay port %v", aliceSends)
	}
	from, to := ok.From().Value(), ok.To().Value()
	okContact := ok.Contact().Address
	routeA := reversed(recordRoutes(ok))
	alice.inDialog(sip.ACK, okContact, routeA, from, to, callID, 1, "")
	bob.expectRequest(sip.ACK)

	rtpExchange(t, alice, bob, aliceSends, bobSends, 50)
	fs := d.flows(t, callID)
	if len(fs) == 0 {
		t.Fatal("no flows for the call in /flows")
	}
	var pkts uint64
	for _, f := range fs {
		pkts += f.Packets
	}
	if pkts < 90 {
		t.Errorf("flows count %d packets, want about 100: %+v", pkts, fs)
	}
	checkRelayctl(t, d.http, callID, fs)

	// Bob puts alice on hold: same relay ports, direction passed on.
	invContact := inv.Contact().Address
	routeB := recordRoutes(inv)
	hold := strings.Replace(bob.sdp(), "a=sendrecv", "a=sendonly", 1)
	bob.inDialog(sip.INVITE, invContact, routeB, to, from, callID, 1, hold)
	reinv := alice.expectRequest(sip.INVITE)
	if got := mediaOf(t, reinv); got != aliceSends {
		t.Errorf("hold re-INVITE points alice at %v, want the same relay port %v", got, aliceSends)
	}
	if !strings.Contains(string(reinv.Body()), "a=sendonly") {
		t.Errorf("hold direction lost:\n%s", reinv.Body())
	}
	alice.answer(reinv, 200, "OK", "", strings.Replace(alice.sdp(), "a=sendrecv", "a=recvonly", 1))
	ok2 := bob.expectResponse(200)
	if got := mediaOf(t, ok2); got != bobSends {
		t.Errorf("hold answer points bob at %v, want the same relay port %v", got, bobSends)
	}
	bob.inDialog(sip.ACK, invContact, routeB, to, from, callID, 1, "")
	alice.expectRequest(sip.ACK)

	// Bob hangs up.
	bob.inDialog(sip.BYE, invContact, routeB, to, from, callID, 2, "")
	bye := alice.expectRequest(sip.BYE)
	alice.answer(bye, 200, "OK", "", "")
	bob.expectResponse(200)
	deadline := time.Now().Add(3 * time.Second)
	for len(d.flows(t, callID)) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("flows left after BYE: %+v", d.flows(t, callID))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMediaForkedAnswers: two of bob's phones answer one call. The relay
// follows the first 2xx; the caller ACKs the second too and hangs up that
// dialog through sipd, which forwards the BYE (a real dialog, through our
// route) and leaves the call's flows and /calls entry alone. The BYE of
// the followed dialog then ends the call.
func TestMediaForkedAnswers(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	d := startDaemon(t, MediaAll, nil)
	defer d.stop()
	alice, bob1, bob2 := newUA(t, "alice", d.sip), newUA(t, "bob", d.sip), newUA(t, "bob", d.sip)
	bob1.register()
	a := bob2.sipAddr()
	bob2.sendText(fmt.Sprintf("REGISTER sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-reg-bob2;rport\r\n"+
		"Max-Forwards: 70\r\nFrom: <sip:bob@%s>;tag=r2\r\nTo: <sip:bob@%s>\r\nCall-ID: reg-bob2@test\r\n"+
		"CSeq: 1 REGISTER\r\nContact: %s\r\nExpires: 300\r\nContent-Length: 0\r\n\r\n", bob2.domain, a, bob2.domain, bob2.domain, bob2.contact()))
	bob2.expectResponse(200)

	const callID = "e2e-forked@test"
	alice.invite("bob", callID, 1, alice.sdp())
	inv1, inv2 := bob1.expectRequest(sip.INVITE), bob2.expectRequest(sip.INVITE)
	bob1.answer(inv1, 200, "OK", "fork1", bob1.sdp())
	ok1 := alice.expectResponse(200)
	bob2.answer(inv2, 200, "OK", "fork2", bob2.sdp())
	ok2 := alice.expectResponse(200)
	tag1 := ok1.To().Params.GetOr("tag", "")
	if tag1 == "" || tag1 == ok2.To().Params.GetOr("tag", "") {
		t.Fatalf("answers from %s and %s", ok1.To().Value(), ok2.To().Value())
	}
	from := ok1.From().Value()
	alice.inDialog(sip.ACK, ok1.Contact().Address, reversed(recordRoutes(ok1)), from, ok1.To().Value(), callID, 1, "")
	bob1.expectRequest(sip.ACK)
	alice.inDialog(sip.ACK, ok2.Contact().Address, reversed(recordRoutes(ok2)), from, ok2.To().Value(), callID, 1, "")
	bob2.expectRequest(sip.ACK)
	flows := len(d.flows(t, callID))
	if flows == 0 {
		t.Fatal("no flows for the call")
	}

	alice.inDialog(sip.BYE, ok2.Contact().Address, reversed(recordRoutes(ok2)), from, ok2.To().Value(), callID, 2, "")
	bob2.answer(bob2.expectRequest(sip.BYE), 200, "OK", "", "")
	alice.expectResponse(200)
	if n := len(d.flows(t, callID)); n != flows {
		t.Errorf("the other fork's BYE changed the call's flows from %d to %d", flows, n)
	}
	resp, err := http.Get(d.http + "/calls")
	if err != nil {
		t.Fatal(err)
	}
	var calls []struct {
		CallID string `json:"call_id"`
		ToTag  string `json:"to_tag"`
	}
	err = json.NewDecoder(resp.Body).Decode(&calls)
	resp.Body.Close()
	if err != nil || len(calls) != 1 || calls[0].CallID != callID || calls[0].ToTag != tag1 {
		t.Fatalf("calls after the other fork's BYE: %+v %v", calls, err)
	}

	alice.inDialog(sip.BYE, ok1.Contact().Address, reversed(recordRoutes(ok1)), from, ok1.To().Value(), callID, 3, "")
	bob1.answer(bob1.expectRequest(sip.BYE), 200, "OK", "", "")
	alice.expectResponse(200)
	d.waitNoFlows(t, callID, "the BYE")
	cdr, _ := os.ReadFile(d.cdrPath)
	if !strings.Contains(string(cdr), `"call_id":"`+callID+`"`) || !strings.Contains(string(cdr), `"to_tag":"`+tag1+`"`) || strings.Count(string(cdr), "\n") != 1 {
		t.Errorf("cdr %s", cdr)
	}
}

// TestMediaModeNoneUntouched: with media.mode none the SDP passes as is.
func TestMediaModeNoneUntouched(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	d := startDaemon(t, MediaNone, nil)
	defer d.stop()
	alice, bob := newUA(t, "alice", d.sip), newUA(t, "bob", d.sip)
	bob.register()
	alice.invite("bob", "e2e-none-1@test", 1, alice.sdp())
	inv := bob.expectRequest(sip.INVITE)
	if string(inv.Body()) != alice.sdp() {
		t.Errorf("mode none changed the SDP:\n%s", inv.Body())
	}
	bob.answer(inv, 486, "Busy Here", "bob-tag", "")
	alice.expectResponse(486)
}

// TestMediaDrainingRefuses: a draining relay makes sipd refuse new calls
// with 503 instead of forwarding them with unrelayed media; a CANCELled
// and a failed call leave no flows.
func TestMediaDrainingAndFailures(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	d := startDaemon(t, MediaAll, nil)
	defer d.stop()
	alice, bob := newUA(t, "alice", d.sip), newUA(t, "bob", d.sip)
	bob.register()

	// Failure: bob is busy.
	alice.invite("bob", "e2e-busy@test", 1, alice.sdp())
	inv := bob.expectRequest(sip.INVITE)
	if len(d.flows(t, "e2e-busy@test")) == 0 {
		t.Error("no flows while the call is set up")
	}
	bob.answer(inv, 486, "Busy Here", "bob-tag", "")
	r := alice.expectResponse(486)
	alice.ackFailure(r, "e2e-busy@test")
	bob.expectRequest(sip.ACK) // the proxy's, for its own transaction
	d.waitNoFlows(t, "e2e-busy@test", "486")

	// CANCEL while ringing.
	const cid = "e2e-cancel@test"
	alice.invite("bob", cid, 1, alice.sdp())
	inv = bob.expectRequest(sip.INVITE)
	bob.answer(inv, 180, "Ringing", "bob-tag", "")
	alice.expectResponse(180)
	a := alice.sipAddr()
	alice.sendText(fmt.Sprintf("CANCEL sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-inv-%s-1;rport\r\n"+
		"Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=alice-tag\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: %s\r\n"+
		"CSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n", a, cid, cid))
	cancel := bob.expectRequest(sip.CANCEL)
	bob.answer(cancel, 200, "OK", "", "")
	bob.answer(inv, 487, "Request Terminated", "bob-tag", "")
	// Alice sees 200 for the CANCEL and 487 for the INVITE, in either order.
	seen := map[int]bool{}
	for len(seen) < 2 {
		m := alice.recv()
		if r, ok := m.(*sip.Response); ok {
			seen[r.StatusCode] = true
		}
	}
	if !seen[487] {
		t.Errorf("alice saw %v, want 487", seen)
	}
	bob.expectRequest(sip.ACK)
	d.waitNoFlows(t, cid, "CANCEL")

	// Draining: 503 with a Warning, and bob never hears of it.
	resp, err := http.Post(d.http+"/drain", "application/json", strings.NewReader(`{"on":true}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("drain: %s %s", resp.Status, body)
	}
	alice.invite("bob", "e2e-drain@test", 1, alice.sdp())
	res := alice.expectResponse(503)
	if w := res.GetHeader("Warning"); w == nil || !strings.Contains(w.Value(), "relay") {
		t.Errorf("503 without a Warning about the relay:\n%s", res)
	}
	bob.sip.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := bob.sip.Read(make([]byte, 2048)); err == nil {
		t.Errorf("bob got a message (%d bytes) for a refused call", n)
	}
}

// TestMediaTimeoutEndsCall: a relayed call whose RTP stops is ended by
// sipd: both phones get a BYE, the CDR says why, and the flows go.
func TestMediaTimeoutEndsCall(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	d := startDaemon(t, MediaAll, func(c *Config) { c.Media.Timeout = Duration(time.Second) })
	defer d.stop()
	alice, bob := newUA(t, "alice", d.sip), newUA(t, "bob", d.sip)
	bob.register()
	const callID = "e2e-timeout@test"
	ok, aliceSends, bobSends := answeredCall(t, alice, bob, callID)
	rtpExchange(t, alice, bob, aliceSends, bobSends, 10)
	start := time.Now()
	// Both sides go silent; each gets a BYE from sipd within a few scans.
	bobTag, _ := ok.To().Params.Get("tag")
	for _, u := range []*ua{alice, bob} {
		bye := u.expectRequest(sip.BYE)
		if bye.CallID().Value() != callID {
			t.Errorf("%s got a BYE for %q", u.name, bye.CallID().Value())
		}
		want := map[string]string{"alice": "alice-tag", "bob": bobTag}[u.name]
		if tag, _ := bye.To().Params.Get("tag"); tag != want {
			t.Errorf("%s got a BYE whose To tag is %q, want its own %q", u.name, tag, want)
		}
		u.answer(bye, 200, "OK", "", "")
	}
	if el := time.Since(start); el > 4*time.Second {
		t.Errorf("BYE after %v of silence with a 1 s timeout", el)
	}
	if fs := d.flows(t, callID); len(fs) != 0 {
		t.Errorf("flows left after the media timeout: %+v", fs)
	}
	waitTimeoutCDR(t, d.cdrPath, callID)
}

// TestMediaModeNAT: in mode nat a call between phones on their real
// addresses keeps its SDP, and a caller whose Via shows a NAT is relayed;
// the per-call header forces relaying and is not passed on.
func TestMediaModeNAT(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	d := startDaemon(t, MediaNAT, nil)
	defer d.stop()
	alice, bob := newUA(t, "alice", d.sip), newUA(t, "bob", d.sip)
	bob.register()
	busy := func(inv *sip.Request) {
		bob.answer(inv, 486, "Busy Here", "bob-tag", "")
		r := alice.expectResponse(486)
		alice.ackFailure(r, inv.CallID().Value())
		bob.expectRequest(sip.ACK)
	}

	alice.invite("bob", "e2e-nat-direct@test", 1, alice.sdp())
	inv := bob.expectRequest(sip.INVITE)
	if string(inv.Body()) != alice.sdp() {
		t.Errorf("mode nat relayed a call with no NAT:\n%s", inv.Body())
	}
	busy(inv)

	// The caller claims a private address in Via: it is behind NAT.
	a := alice.sipAddr()
	body := alice.sdp()
	alice.sendText(fmt.Sprintf("INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.20:%d;branch=z9hG4bK-inv-e2e-nat@test-1;rport\r\n"+
		"Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=alice-tag\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: e2e-nat@test\r\n"+
		"CSeq: 1 INVITE\r\nContact: <sip:alice@192.168.1.20:%d>\r\nContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s",
		a.Port(), a.Port(), len(body), body))
	inv = bob.expectRequest(sip.INVITE)
	d.checkRelayed(t, "bob (NATed caller)", mediaOf(t, inv))
	busy(inv)

	alice.invite("bob", "e2e-nat-forced@test", 1, alice.sdp(), OverrideHeaderLine)
	inv = bob.expectRequest(sip.INVITE)
	d.checkRelayed(t, "bob (forced)", mediaOf(t, inv))
	if inv.GetHeader("X-Sipd-Media") != nil {
		t.Error("the override header was forwarded")
	}
	busy(inv)
	d.waitNoFlows(t, "", "failed calls")
}

const OverrideHeaderLine = "X-Sipd-Media: relay\r\n"

// TestLegPicker: with several relay addresses, a leg gets the one the
// kernel would send from towards the peer.
func TestLegPicker(t *testing.T) {
	if legPicker([]relay.AddressConfig{{Name: "x", Local: netip.MustParseAddr("127.0.0.1")}}, interfaceRules{}) != nil {
		t.Error("a picker for a single address")
	}
	pick := legPicker([]relay.AddressConfig{
		{Name: "other", Local: netip.MustParseAddr("192.0.2.1")},
		{Name: "lo", Local: netip.MustParseAddr("127.0.0.1")},
	}, interfaceRules{})
	if got := pick(netip.MustParseAddr("127.0.0.1")); got != (relay.LegSpec{Address: "lo", Family: relay.IPv4}) {
		t.Errorf("pick(127.0.0.1) = %+v, want the loopback address", got)
	}
	if got := pick(netip.Addr{}); got != (relay.LegSpec{}) {
		t.Errorf("pick(unknown) = %+v, want any", got)
	}
}

// TestMediaLateOffer: INVITE without SDP, the offer in the 200 and the
// answer in the ACK; RTP then crosses the relay both ways.
func TestMediaLateOffer(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	d := startDaemon(t, MediaAll, nil)
	defer d.stop()
	alice, bob := newUA(t, "alice", d.sip), newUA(t, "bob", d.sip)
	bob.register()
	const callID = "e2e-late@test"
	alice.invite("bob", callID, 1, "")
	inv := bob.expectRequest(sip.INVITE)
	if len(inv.Body()) != 0 {
		t.Fatalf("empty INVITE arrived with a body:\n%s", inv.Body())
	}
	bob.answer(inv, 200, "OK", "", bob.sdp())
	ok := alice.expectResponse(200)
	aliceSends := mediaOf(t, ok)
	d.checkRelayed(t, "alice (offer in 200)", aliceSends)
	alice.inDialog(sip.ACK, ok.Contact().Address, reversed(recordRoutes(ok)), ok.From().Value(), ok.To().Value(), callID, 1, alice.sdp())
	ack := bob.expectRequest(sip.ACK)
	bobSends := mediaOf(t, ack)
	d.checkRelayed(t, "bob (answer in ACK)", bobSends)
	rtpExchange(t, alice, bob, aliceSends, bobSends, 30)

	alice.inDialog(sip.BYE, ok.Contact().Address, reversed(recordRoutes(ok)), ok.From().Value(), ok.To().Value(), callID, 2, "")
	bye := bob.expectRequest(sip.BYE)
	bob.answer(bye, 200, "OK", "", "")
	alice.expectResponse(200)
	d.waitNoFlows(t, callID, "BYE")
}

// checkRelayctl runs relayctl against the daemon's API and checks that it
// reports the same flows, with the same counters, as /flows did (no RTP
// moves between the two reads: the phones have stopped sending).
func checkRelayctl(t *testing.T, api, callID string, want []FlowJSON) {
	t.Helper()
	var out, errb bytes.Buffer
	if code := relayctl.Main(context.Background(), []string{"-api", api, "flows", "-call", callID, "-json", "-interval", "0"}, &out, &errb); code != 0 {
		t.Fatalf("relayctl flows: exit %d: %s", code, errb.String())
	}
	var got []relayctl.Flow
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("relayctl flows -json: %v\n%s", err, out.String())
	}
	byLocal := map[string]FlowJSON{}
	for _, f := range want {
		byLocal[f.Local] = f
	}
	if len(got) != len(want) {
		t.Fatalf("relayctl lists %d flows, /flows %d", len(got), len(want))
	}
	for _, g := range got {
		w, ok := byLocal[g.Local]
		if !ok || g.CallID != callID || g.Packets != w.Packets || g.Bytes != w.Bytes || g.Peer != w.Peer || g.Path != w.Path {
			t.Errorf("relayctl flow %+v does not match /flows %+v", g.FlowJSON, w)
		}
	}
	var table bytes.Buffer
	if code := relayctl.Main(context.Background(), []string{"-api", api, "flows", "-call", callID, "-interval", "0"}, &table, &errb); code != 0 || !strings.Contains(table.String(), callID) {
		t.Fatalf("relayctl flows table (exit %d):\n%s%s", code, table.String(), errb.String())
	}
}

// startRun runs sipd's Run with cfg in the background and returns the
// function that stops it and checks it ended cleanly within 10 s.
func startRun(t *testing.T, cfg *Config) (stop func()) {
	if cfg.StateDir == DefaultStateDir {
		// Never the machine's own: each run keeps its state apart.
		cfg.StateDir = t.TempDir()
		cfg.Resolve()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	return func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not stop within 10 s of cancel")
		}
	}
}
