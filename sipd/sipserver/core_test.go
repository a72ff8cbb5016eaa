package sipserver

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/sipd/registrar"
	"sipxdp/sipd/sipconf"
)

func noAuth(c *sipconf.Config) {
	c.Auth.Register = false
	c.Auth.Invite = false
}

func TestKeepalives(t *testing.T) {
	s := testServer(t, nil)
	ua := newRawUA(t)
	udp := serverAddr(t, s, "udp")
	ua.send(udp, fmt.Sprintf("NOTIFY sip:%s SIP/2.0\nVia: SIP/2.0/UDP 10.1.1.1:5060;branch=%s;rport\nFrom: <sip:alice@example.org>;tag=1\nTo: <sip:alice@example.org>\nCall-ID: ka1\nCSeq: 1 NOTIFY\nEvent: keep-alive\nContent-Length: 0\n\n", udp, branch()))
	res := ua.expect(200)
	v := res.Via()
	if v.Params.GetOr("received", "") != "127.0.0.1" || v.Params.GetOr("rport", "") != fmt.Sprint(ua.addr().Port()) {
		t.Fatalf("keep-alive answer Via %s lacks received/rport", v.Value())
	}
	if s.fastKeepalives.Load() != 1 || s.Stats().Core.Keepalives != 1 {
		t.Fatalf("fast path not taken: %d", s.fastKeepalives.Load())
	}
	// OPTIONS by domain name over TCP: the core answers it.
	tcp := newTCPUA(t, serverAddr(t, s, "tcp"))
	tcp.send(fmt.Sprintf("OPTIONS sip:example.org SIP/2.0\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=%s\nFrom: <sip:alice@example.org>;tag=1\nTo: <sip:example.org>\nCall-ID: ka2\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n", branch()))
	if m, ok := tcp.recv(3 * time.Second).(*sip.Response); !ok || m.StatusCode != 200 {
		t.Fatalf("TCP OPTIONS answer: %v", m)
	}
	// RFC 5626 CRLF ping gets a CRLF pong.
	tcp.send("\r\n\r\n")
	tcp.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	pong := make([]byte, 2)
	if _, err := io.ReadFull(tcp.conn, pong); err != nil || string(pong) != "\r\n" {
		t.Fatalf("pong %q %v", pong, err)
	}
	if s.Stats().Core.Keepalives != 2 {
		t.Fatalf("keepalives %d", s.Stats().Core.Keepalives)
	}
}

func TestLocalAnswers(t *testing.T) {
	s := testServer(t, func(c *sipconf.Config) { noAuth(c); c.Domains = append(c.Domains, "127.0.0.1") })
	ua := newRawUA(t)
	srv := serverAddr(t, s, "udp")
	cases := []struct {
		name, text string
		code       int
	}{
		{"unknown user", ua.request("INVITE", "sip:nobody@example.org", "sip:x@far.net", "sip:nobody@example.org", "l1", 1), 404},
		// The same answer as for an unknown user: no user enumeration.
		{"not registered", ua.request("INVITE", "sip:carol@example.org", "sip:x@far.net", "sip:carol@example.org", "l2", 1), 404},
		{"foreign domain", ua.request("INVITE", "sip:x@far.net", "sip:alice@example.org", "sip:x@far.net", "l3", 1), 403},
		{"too many hops", strings.Replace(ua.request("INVITE", "sip:carol@example.org", "sip:x@far.net", "sip:carol@example.org", "l4", 1), "Max-Forwards: 70", "Max-Forwards: 0", 1), 483},
		{"too brief", ua.request("REGISTER", "sip:example.org", "sip:bob@example.org", "sip:bob@example.org", "l5", 1, "Expires: 5"), 423},
		{"cseq mismatch", strings.Replace(ua.request("INVITE", "sip:carol@example.org", "sip:x@far.net", "sip:carol@example.org", "l6", 1), "CSeq: 1 INVITE", "CSeq: 1 BYE", 1), 400},
		{"stray cancel", ua.request("CANCEL", "sip:carol@example.org", "sip:x@far.net", "sip:carol@example.org", "l7", 1), 481},
		{"unsupported extension", ua.request("MESSAGE", "sip:carol@example.org", "sip:x@far.net", "sip:carol@example.org", "l8", 1, "Proxy-Require: foo"), 420},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ua.send(srv, c.text)
			ua.expect(c.code)
		})
	}
}

// registerRaw registers ua for user with auth off and returns the 200.
func registerRaw(t *testing.T, ua *rawUA, srv string, user, callID string, extra ...string) *sip.Response {
	t.Helper()
	ua.send(netip.MustParseAddrPort(srv), ua.request("REGISTER", "sip:example.org", "sip:"+user+"@example.org", "sip:"+user+"@example.org", callID, 1, append([]string{"Expires: 600"}, extra...)...))
	return ua.expect(200)
}

func TestForkingBestAnswerWins(t *testing.T) {
	s := testServer(t, noAuth)
	srv := serverAddr(t, s, "udp")
	uas1, uas2, caller := newRawUA(t), newRawUA(t), newRawUA(t)
	registerRaw(t, uas1, srv.String(), "bob", "r1")
	if res := registerRaw(t, uas2, srv.String(), "bob", "r2"); len(res.GetHeaders("Contact")) != 2 {
		t.Fatalf("200 OK lists %d contacts, want 2", len(res.GetHeaders("Contact")))
	}
	caller.send(srv, caller.request("INVITE", "sip:bob@example.org", "sip:alice@example.org", "sip:bob@example.org", "call1", 1))
	caller.expect(100)
	inv1, inv2 := uas1.expectRequest(sip.INVITE), uas2.expectRequest(sip.INVITE)
	if inv1.Via().Params.GetOr("branch", "") == inv2.Via().Params.GetOr("branch", "") {
		t.Fatal("both branches carry the same Via branch")
	}
	if len(inv1.GetHeaders("Record-Route")) != 1 || inv1.GetHeader("Max-Forwards").Value() != "69" {
		t.Fatalf("forwarded INVITE: RR %v, Max-Forwards %s", inv1.GetHeaders("Record-Route"), inv1.GetHeader("Max-Forwards").Value())
	}
	uas2.respond(inv2, 180, "Ringing", "u2")
	if r := caller.expect(180); r.To().Params.GetOr("tag", "") != "u2" {
		t.Fatalf("180 to tag %q", r.To().Params.GetOr("tag", ""))
	}
	uas1.respond(inv1, 200, "OK", "u1")
	ok := caller.expect(200)
	if ok.Via().Params.GetOr("branch", "") == inv1.Via().Params.GetOr("branch", "") || len(ok.GetHeaders("Via")) != 1 {
		t.Fatalf("200 upstream still carries our Via: %v", ok.GetHeaders("Via"))
	}
	// The losing branch is cancelled, then acknowledged after its 487.
	cancel := uas2.expectRequest(sip.CANCEL)
	if cancel.Via().Params.GetOr("branch", "") != inv2.Via().Params.GetOr("branch", "") {
		t.Fatal("CANCEL branch differs from the INVITE's")
	}
	uas2.respond(cancel, 200, "OK", "u2")
	uas2.respond(inv2, 487, "Request Terminated", "u2")
	if ack := uas2.expectRequest(sip.ACK); ack.Via().Params.GetOr("branch", "") != inv2.Via().Params.GetOr("branch", "") {
		t.Fatal("hop-by-hop ACK for 487 has another branch")
	}
	// ACK and BYE follow the Record-Route.
	rr := ok.GetHeader("Record-Route").Value()
	caller.send(srv, strings.Replace(caller.request("ACK", "sip:uas@"+uas1.addr().String(), "sip:alice@example.org", "sip:bob@example.org", "call1", 1, "Route: "+rr),
		"To: <sip:bob@example.org>", "To: <sip:bob@example.org>;tag=u1", 1))
	uas1.expectRequest(sip.ACK)
	bye := strings.Replace(caller.request("BYE", "sip:uas@"+uas1.addr().String(), "sip:alice@example.org", "sip:bob@example.org", "call1", 2, "Route: "+rr), "To: <sip:bob@example.org>", "To: <sip:bob@example.org>;tag=u1", 1)
	caller.send(srv, bye)
	b := uas1.expectRequest(sip.BYE)
	uas1.respond(b, 200, "OK", "")
	caller.expect(200)
	if st := s.Stats(); st.CallsCompleted != 1 || st.ActiveCalls != 0 {
		t.Fatalf("calls %+v", st)
	}
}

func TestForkingAllFail(t *testing.T) {
	s := testServer(t, noAuth)
	srv := serverAddr(t, s, "udp")
	uas1, uas2, caller := newRawUA(t), newRawUA(t), newRawUA(t)
	registerRaw(t, uas1, srv.String(), "bob", "r1")
	registerRaw(t, uas2, srv.String(), "bob", "r2")
	caller.send(srv, caller.request("INVITE", "sip:bob@example.org", "sip:alice@example.org", "sip:bob@example.org", "call2", 1))
	inv1, inv2 := uas1.expectRequest(sip.INVITE), uas2.expectRequest(sip.INVITE)
	uas1.respond(inv1, 503, "Busy Here", "u1")
	uas1.expectRequest(sip.ACK)
	uas2.respond(inv2, 486, "Busy Here", "u2")
	uas2.expectRequest(sip.ACK)
	caller.expect(486) // a 4xx beats a 5xx
	if st := s.Stats(); st.CallsFailed != 1 {
		t.Fatalf("calls %+v", st)
	}
}

func TestNATedContactReachedThroughFlow(t *testing.T) {
	s := testServer(t, noAuth)
	srv := serverAddr(t, s, "udp")
	phone, caller := newRawUA(t), newRawUA(t)
	// A phone behind NAT: it advertises its private address everywhere.
	text := strings.ReplaceAll(phone.request("REGISTER", "sip:example.org", "sip:bob@example.org", "sip:bob@example.org", "n1", 1, "Expires: 600"),
		phone.addr().String(), "192.168.1.20:5060")
	phone.send(srv, text)
	phone.expect(200)
	b := regs(t, s)
	if len(b) != 1 || !b[0].NATed || b[0].Received != phone.addr().String() || !strings.Contains(b[0].Contact, "192.168.1.20") {
		t.Fatalf("binding %+v", b)
	}
	caller.send(srv, strings.ReplaceAll(caller.request("INVITE", "sip:bob@example.org", "sip:alice@example.org", "sip:bob@example.org", "n2", 1),
		"Contact: <sip:ua@"+caller.addr().String()+">", "Contact: <sip:ua@10.9.9.9:5060>"))
	inv := phone.expectRequest(sip.INVITE) // arrived at the real socket, not 192.168.1.20
	if inv.Recipient.Host != "192.168.1.20" {
		t.Fatalf("Request-URI %s", inv.Recipient.String())
	}
	if c := inv.Contact(); c.Address.Host != "127.0.0.1" || c.Address.Port != int(caller.addr().Port()) {
		t.Fatalf("caller's private Contact not fixed: %s", c.Address.String())
	}
	phone.respond(inv, 180, "Ringing", "p1")
	caller.expect(180)
}

// A dialog-forming request that another proxy passed on (a Via below
// the sender's) keeps its Contact, private or not: the UA is that
// proxy's client and only it holds the UA's flow, as for an answer
// relayed by a proxy downstream. Pointed at the proxy instead, the
// Contact became the Request-URI of the callee's BYE, which that proxy,
// having popped its Route, sent to itself (two sipd sharing a location
// table, cmd/sipd TestTwoProxiesSharedLocation).
func TestContactFromUpstreamProxyKept(t *testing.T) {
	s := testServer(t, noAuth)
	srv := serverAddr(t, s, "udp")
	phone, proxy := newRawUA(t), newRawUA(t)
	registerRaw(t, phone, srv.String(), "bob", "u1")
	// What the upstream proxy made of its NATed caller's Contact: her
	// public address, which on a private network is a private one.
	contact := "Contact: <sip:ua@10.20.30.40:5062>"
	text := strings.Replace(proxy.request("INVITE", "sip:bob@example.org", "sip:alice@example.org", "sip:bob@example.org", "u2", 1,
		"Via: SIP/2.0/UDP 192.168.1.30:5062;branch=z9hG4bKua1;rport=5062;received=10.20.30.40",
		"Record-Route: <sip:"+proxy.addr().String()+";lr>"),
		"Contact: <sip:ua@"+proxy.addr().String()+">", contact, 1)
	proxy.send(srv, text)
	inv := phone.expectRequest(sip.INVITE)
	if c := inv.Contact(); c.Address.Host != "10.20.30.40" || c.Address.Port != 5062 {
		t.Fatalf("the Contact of a request from another proxy was rewritten to %s", c.Address.String())
	}
	if n := len(inv.GetHeaders("Via")); n != 3 {
		t.Fatalf("the callee got %d Vias, want ours, the proxy's and the UA's", n)
	}
}

func TestRegistrationsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "location.json")
	run := func(f func(s *Server)) {
		cfg := sipconf.Default()
		noAuth(&cfg)
		cfg.Domains = []string{"example.org"}
		cfg.Listen = []sipconf.Listen{{Transport: "udp", Addr: "127.0.0.1:0"}}
		cfg.Registrar.Store = store
		s, err := New(cfg, nil, Options{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Serve(ctx) }()
		f(s)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	ua := newRawUA(t)
	run(func(s *Server) { registerRaw(t, ua, serverAddr(t, s, "udp").String(), "bob", "p1") })
	if _, err := os.Stat(store); err != nil {
		t.Fatalf("no snapshot written: %v", err)
	}
	run(func(s *Server) {
		if b := regs(t, s); len(b) != 1 || b[0].AoR != "bob" {
			t.Fatalf("after restart: %+v", b)
		}
	})
}

func TestFloodBan(t *testing.T) {
	s := testServer(t, func(c *sipconf.Config) {
		c.Protect.Limit = 5
		c.Protect.Exempt = nil
	})
	ua := newRawUA(t)
	srv := serverAddr(t, s, "udp")
	// Responses do not count towards the limit.
	for i := 0; i < 10; i++ {
		ua.send(srv, fmt.Sprintf("SIP/2.0 200 OK\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKr%d\nFrom: <sip:a@b>;tag=1\nTo: <sip:a@b>;tag=2\nCall-ID: r%d\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n", i, i))
	}
	answered := 0
	for i := 0; i < 12; i++ {
		ua.send(srv, ua.request("OPTIONS", "sip:"+srv.String(), "sip:x@far.net", "sip:"+srv.String(), fmt.Sprint("f", i), 1))
		if ua.recv(300*time.Millisecond) != nil {
			answered++
		}
	}
	if answered != 5 {
		t.Fatalf("%d of 12 answered, want 5", answered)
	}
	if st := s.Stats(); st.Bans != 1 || st.BannedSources != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTCPPhoneReachedOverItsConnection(t *testing.T) {
	s := testServer(t, noAuth)
	phone := newTCPUA(t, serverAddr(t, s, "tcp"))
	local := phone.conn.LocalAddr().String()
	// The Contact names a port nobody listens on: only the phone's own
	// connection can reach it.
	phone.send(fmt.Sprintf("REGISTER sip:example.org SIP/2.0\nVia: SIP/2.0/TCP %s;branch=%s\nFrom: <sip:bob@example.org>;tag=1\nTo: <sip:bob@example.org>\nCall-ID: tc1\nCSeq: 1 REGISTER\nContact: <sip:bob@127.0.0.1:1;transport=tcp>\nExpires: 600\nContent-Length: 0\n\n", local, branch()))
	if r, ok := phone.recv(3 * time.Second).(*sip.Response); !ok || r.StatusCode != 200 {
		t.Fatalf("register: %v", r)
	}
	caller := newRawUA(t)
	caller.send(serverAddr(t, s, "udp"), caller.request("INVITE", "sip:bob@example.org", "sip:alice@example.org", "sip:bob@example.org", "tc2", 1))
	var inv *sip.Request
	for inv == nil {
		m := phone.recv(3 * time.Second)
		if m == nil {
			t.Fatal("INVITE did not come over the phone's connection")
		}
		inv, _ = m.(*sip.Request)
	}
	if inv.Method != sip.INVITE || inv.Via().Transport != "TCP" {
		t.Fatalf("got %s over %s", inv.Method, inv.Via().Transport)
	}
	// Caller on UDP, callee on TCP: two Record-Route entries.
	rrs := inv.GetHeaders("Record-Route")
	if len(rrs) != 2 {
		t.Fatalf("record-route %v", rrs)
	}
	var b strings.Builder
	b.WriteString("SIP/2.0 200 OK\r\n")
	for _, h := range inv.GetHeaders("Via") {
		b.WriteString("Via: " + h.Value() + "\r\n")
	}
	for _, h := range rrs {
		b.WriteString("Record-Route: " + h.Value() + "\r\n")
	}
	fmt.Fprintf(&b, "From: %s\r\nTo: %s;tag=tp\r\nCall-ID: tc2\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@127.0.0.1:1;transport=tcp>\r\nContent-Length: 0\r\n\r\n",
		inv.From().Value(), inv.To().Value())
	phone.send(b.String())
	ok := caller.expect(200)
	if c := ok.Contact().Address; c.Port != int(netip.MustParseAddrPort(local).Port()) {
		t.Fatalf("callee Contact not pointed at its connection: %s", c.String())
	}
	// The caller's ACK follows the route set back to the phone's connection.
	var route []string
	for i := len(ok.GetHeaders("Record-Route")) - 1; i >= 0; i-- {
		route = append(route, ok.GetHeaders("Record-Route")[i].Value())
	}
	ack := strings.Replace(caller.request("ACK", ok.Contact().Address.String(), "sip:alice@example.org", "sip:bob@example.org", "tc2", 1,
		"Route: "+strings.Join(route, ", ")), "To: <sip:bob@example.org>", "To: <sip:bob@example.org>;tag=tp", 1)
	caller.send(serverAddr(t, s, "udp"), ack)
	for {
		m := phone.recv(3 * time.Second)
		if m == nil {
			t.Fatal("ACK did not reach the phone's connection")
		}
		if r, isReq := m.(*sip.Request); isReq && r.Method == sip.ACK {
			break
		}
	}
}

func TestUsersFileReloaded(t *testing.T) {
	s := testServer(t, nil)
	if s.Stats().Users != 3 {
		t.Fatalf("users %d", s.Stats().Users)
	}
	// mtime granularity: make sure the change is visible as a change.
	time.Sleep(20 * time.Millisecond)
	if err := os.WriteFile(s.cfg.UsersFile, []byte(usersText+"dave password=d\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Users != 4 {
		if time.Now().After(deadline) {
			t.Fatal("users file change not picked up")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := os.WriteFile(s.cfg.UsersFile, []byte("broken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.ReloadUsers(); err == nil || s.Stats().Users != 4 {
		t.Fatalf("bad file: err %v, users %d", err, s.Stats().Users)
	}
}

func TestLargeInviteRelayedOverUDP(t *testing.T) {
	s := testServer(t, noAuth)
	srv := serverAddr(t, s, "udp")
	uas, caller := newRawUA(t), newRawUA(t)
	registerRaw(t, uas, srv.String(), "bob", "big1")
	body := "v=0\r\n" + strings.Repeat("a=x-padding:0123456789abcdef0123456789abcdef\r\n", 70)
	text := strings.Replace(caller.request("INVITE", "sip:bob@example.org", "sip:alice@example.org", "sip:bob@example.org", "big2", 1),
		"Content-Length: 0\n\n", fmt.Sprintf("Content-Type: application/sdp\nContent-Length: %d\n\n", len(body)), 1)
	caller.send(srv, crlf(text)+body)
	inv := uas.expectRequest(sip.INVITE)
	if len(inv.Body()) != len(body) || len(body) < 3000 {
		t.Fatalf("body %d bytes, sent %d", len(inv.Body()), len(body))
	}
}

func TestCallerGoneCancelsRinging(t *testing.T) {
	s := testServer(t, noAuth)
	uas := newRawUA(t)
	registerRaw(t, uas, serverAddr(t, s, "udp").String(), "bob", "g1")
	caller := newTCPUA(t, serverAddr(t, s, "tcp"))
	local := caller.conn.LocalAddr().String()
	caller.send(fmt.Sprintf("INVITE sip:bob@example.org SIP/2.0\nVia: SIP/2.0/TCP %s;branch=%s\nFrom: <sip:alice@example.org>;tag=1\nTo: <sip:bob@example.org>\nCall-ID: g2\nCSeq: 1 INVITE\nMax-Forwards: 70\nContact: <sip:alice@%s;transport=tcp>\nContent-Length: 0\n\n", local, branch(), local))
	inv := uas.expectRequest(sip.INVITE)
	uas.respond(inv, 180, "Ringing", "g")
	for {
		r, ok := caller.recv(3 * time.Second).(*sip.Response)
		if !ok {
			t.Fatal("no 180 at the caller")
		}
		if r.StatusCode == 180 {
			break
		}
	}
	caller.conn.Close()
	c := uas.expectRequest(sip.CANCEL)
	uas.respond(c, 200, "OK", "g")
	uas.respond(inv, 487, "Request Terminated", "g")
	uas.expectRequest(sip.ACK)
}

func TestWildcardListenWithAdvertise(t *testing.T) {
	s := testServer(t, func(c *sipconf.Config) {
		noAuth(c)
		c.Listen = []sipconf.Listen{{Transport: "udp", Addr: "0.0.0.0:0"}}
		c.Advertise = "127.0.0.1"
	})
	a := serverAddr(t, s, "udp")
	srv := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), a.Port())
	uas, caller := newRawUA(t), newRawUA(t)
	registerRaw(t, uas, srv.String(), "bob", "w1")
	caller.send(srv, caller.request("INVITE", "sip:bob@example.org", "sip:alice@example.org", "sip:bob@example.org", "w2", 1))
	inv := uas.expectRequest(sip.INVITE)
	if v := inv.Via(); v.Host != "127.0.0.1" || v.Port != int(a.Port()) {
		t.Fatalf("Via %s", v.Value())
	}
	if src := netip.MustParseAddrPort(inv.Source()); src.Port() != a.Port() {
		t.Fatalf("INVITE sent from %s, not from the listening socket %s", src, a)
	}
}

func TestCloseWithoutServe(t *testing.T) {
	cfg := sipconf.Default()
	cfg.Listen = []sipconf.Listen{{Transport: "udp", Addr: "127.0.0.1:0"}, {Transport: "tcp", Addr: "127.0.0.1:0"}}
	s, err := New(cfg, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := s.Addr("tcp")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", a.String()); err == nil {
		c.Close()
		t.Fatal("socket still open after Close")
	}
	if err := s.Serve(context.Background()); err != ErrServed {
		t.Fatalf("Serve after Close: %v", err)
	}
}

func TestStrayResponses(t *testing.T) {
	s := testServer(t, nil)
	srv := serverAddr(t, s, "udp")
	callee, caller := newRawUA(t), newRawUA(t)
	stray := func(code int, reason, method string) string {
		return fmt.Sprintf("SIP/2.0 %d %s\nVia: SIP/2.0/UDP %s;branch=z9hG4bKsx00000000.late\nVia: SIP/2.0/UDP %s;branch=z9hG4bKc;rport=%d;received=127.0.0.1\nFrom: <sip:a@example.org>;tag=1\nTo: <sip:b@example.org>;tag=2\nCall-ID: stray\nCSeq: 1 %s\nContent-Length: 0\n\n",
			code, reason, srv, caller.addr(), caller.addr().Port(), method)
	}
	// A late 2xx retransmission to an INVITE goes on to the caller.
	callee.send(srv, stray(200, "OK", "INVITE"))
	if r, ok := caller.recv(2 * time.Second).(*sip.Response); !ok || r.StatusCode != 200 || len(r.GetHeaders("Via")) != 1 {
		t.Fatalf("late 2xx not relayed: %v", r)
	}
	// Nothing else is bounced.
	callee.send(srv, stray(486, "Busy Here", "INVITE"))
	callee.send(srv, stray(200, "OK", "BYE"))
	if m := caller.recv(500 * time.Millisecond); m != nil {
		t.Fatalf("stray relayed: %v", m)
	}
}

func TestMalformedCountedAndDropped(t *testing.T) {
	s := testServer(t, nil)
	ua := newRawUA(t)
	srv := serverAddr(t, s, "udp")
	for _, junk := range []string{"INVITE\r\n\r\n", "SIP/2.0 abc\r\n\r\n", "NOTIFY sip:x SIP/2.0\r\nVia SIP/2.0/UDP x\r\n\r\n"} {
		ua.send(srv, junk)
	}
	deadline := time.Now().Add(3 * time.Second)
	for s.Stats().Malformed != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("malformed %d, want 3", s.Stats().Malformed)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if m := ua.recv(200 * time.Millisecond); m != nil {
		t.Fatalf("answered junk: %v", m)
	}
}

func TestInDialogRequests(t *testing.T) {
	s := testServer(t, noAuth)
	srv := serverAddr(t, s, "udp")
	uas, caller := newRawUA(t), newRawUA(t)
	registerRaw(t, uas, srv.String(), "bob", "d1")
	caller.send(srv, caller.request("INVITE", "sip:bob@example.org", "sip:alice@example.org", "sip:bob@example.org", "dlg", 1))
	inv := uas.expectRequest(sip.INVITE)
	uas.respond(inv, 200, "OK", "b1")
	ok := caller.expect(200)
	rr := ok.GetHeader("Record-Route").Value()
	target := "sip:uas@" + uas.addr().String()
	inDialog := func(method string, cseq int) string {
		return strings.Replace(caller.request(method, target, "sip:alice@example.org", "sip:bob@example.org", "dlg", cseq, "Route: "+rr),
			"To: <sip:bob@example.org>", "To: <sip:bob@example.org>;tag=b1", 1)
	}
	caller.send(srv, inDialog("ACK", 1))
	uas.expectRequest(sip.ACK)
	for i, m := range []sip.RequestMethod{sip.INVITE, sip.UPDATE, sip.INFO, sip.REFER} {
		caller.send(srv, inDialog(string(m), 2+i))
		got := uas.expectRequest(m)
		if got.Recipient.String() != target || got.GetHeader("Route") != nil || got.GetHeader("Record-Route") != nil {
			t.Fatalf("%s arrived as %s, Route %v, Record-Route %v", m, got.Recipient.String(), got.GetHeader("Route"), got.GetHeader("Record-Route"))
		}
		uas.respond(got, 200, "OK", "")
		caller.expect(200)
		if m == sip.INVITE {
			caller.send(srv, inDialog("ACK", 2))
			uas.expectRequest(sip.ACK)
		}
	}
	// The callee hangs up: its BYE goes to the caller's Contact through us.
	bye := fmt.Sprintf("BYE sip:ua@%s SIP/2.0\nVia: SIP/2.0/UDP %s;branch=%s;rport\nRoute: %s\nFrom: <sip:bob@example.org>;tag=b1\nTo: <sip:alice@example.org>;tag=ftdlg\nCall-ID: dlg\nCSeq: 1 BYE\nMax-Forwards: 70\nContent-Length: 0\n\n",
		caller.addr(), uas.addr(), branch(), rr)
	uas.send(srv, bye)
	b := caller.expectRequest(sip.BYE)
	caller.respond(b, 200, "OK", "")
	uas.expect(200)
	if st := s.Stats(); st.CallsCompleted != 1 || st.ActiveCalls != 0 {
		t.Fatalf("calls %+v", st)
	}
}

// TestOutsideTheDialog: in-dialog requests that name an answered call's
// Call-ID but not its dialog get 481, and those in the dialog without
// the route token get 403; neither reaches the callee or ends the call,
// and each is counted. The call's own BYE still ends it.
func TestOutsideTheDialog(t *testing.T) {
	s := testServer(t, noAuth)
	srv := serverAddr(t, s, "udp")
	uas, caller, stranger := newRawUA(t), newRawUA(t), newRawUA(t)
	registerRaw(t, uas, srv.String(), "bob", "od1")
	caller.send(srv, caller.request("INVITE", "sip:bob@example.org", "sip:alice@example.org", "sip:bob@example.org", "odc", 1))
	inv := uas.expectRequest(sip.INVITE)
	uas.respond(inv, 180, "Ringing", "early")
	caller.expect(180)
	uas.respond(inv, 200, "OK", "b1")
	ok := caller.expect(200)
	rr := ok.GetHeader("Record-Route").Value()
	if !strings.Contains(rr, ";ftag=ftodc;sxt=") {
		t.Fatalf("Record-Route %s without the caller's tag and token", rr)
	}
	target := "sip:uas@" + uas.addr().String()
	req := func(method string, cseq int, fromTag, toTag string, extra ...string) string {
		r := caller.request(method, target, "sip:alice@example.org", "sip:bob@example.org", "odc", cseq, extra...)
		r = strings.Replace(r, "tag=ftodc", "tag="+fromTag, 1)
		return strings.Replace(r, "To: <sip:bob@example.org>", "To: <sip:bob@example.org>;tag="+toTag, 1)
	}
	caller.send(srv, req("ACK", 1, "ftodc", "b1", "Route: "+rr))
	uas.expectRequest(sip.ACK)
	cases := []struct {
		name, text string
		code       int
	}{
		{"BYE with made-up tags", req("BYE", 5, "x1", "x2", "Route: "+rr), 481},
		{"BYE with the caller's tag and a made-up one", req("BYE", 6, "ftodc", "x3", "Route: "+rr), 481},
		{"re-INVITE with the callee's tag and a made-up one", req("INVITE", 7, "b1", "x4", "Route: "+rr), 481},
		{"UPDATE with made-up tags and no route", req("UPDATE", 8, "x5", "x6"), 481},
		{"BYE in the dialog without a route", req("BYE", 9, "ftodc", "b1"), 403},
		{"BYE in the dialog through a route without token", req("BYE", 10, "ftodc", "b1", fmt.Sprintf("Route: <sip:%s;lr>", srv)), 403},
		{"BYE in the dialog with a forged token", req("BYE", 11, "ftodc", "b1", "Route: "+strings.Replace(rr, "sxt=", "sxt=A", 1)), 403},
	}
	for _, c := range cases {
		stranger.send(srv, c.text)
		sent, _ := sip.ParseMessage([]byte(crlf(c.text)))
		// Read past retransmissions of an earlier answer (a 481 to an
		// INVITE repeats until ACKed).
		for {
			m := stranger.recv(3 * time.Second)
			if m == nil {
				t.Fatalf("%s: no answer", c.name)
			}
			if r, ok := m.(*sip.Response); ok && r.CSeq().SeqNo == sent.(*sip.Request).CSeq().SeqNo {
				if r.StatusCode != c.code {
					t.Fatalf("%s: got %d %s, want %d", c.name, r.StatusCode, r.Reason, c.code)
				}
				break
			}
		}
		if m := uas.recv(200 * time.Millisecond); m != nil {
			t.Fatalf("%s: the callee received %v", c.name, m)
		}
		if st := s.Stats(); st.ActiveCalls != 1 {
			t.Fatalf("%s: active calls %d", c.name, st.ActiveCalls)
		}
	}
	// A forged ACK is absorbed.
	stranger.send(srv, req("ACK", 1, "x7", "x8", "Route: "+rr))
	if m := uas.recv(200 * time.Millisecond); m != nil {
		t.Fatalf("forged ACK reached the callee: %v", m)
	}
	// The early dialog's tag is the call's too: an UPDATE in it is routed.
	caller.send(srv, req("UPDATE", 12, "ftodc", "early", "Route: "+rr))
	uas.respond(uas.expectRequest(sip.UPDATE), 481, "Call/Transaction Does Not Exist", "")
	caller.expect(481)
	caller.send(srv, req("BYE", 13, "ftodc", "b1", "Route: "+rr))
	uas.respond(uas.expectRequest(sip.BYE), 200, "OK", "")
	caller.expect(200)
	st := s.Stats()
	if st.ActiveCalls != 0 || st.CallsCompleted != 1 {
		t.Fatalf("calls %+v", st)
	}
	want := map[string]uint64{"dialog_mismatch": 4, "route_token_missing": 2, "route_token_invalid": 1, "stray_ack": 1}
	for k, v := range want {
		if st.Core.Refused[k] != v {
			t.Errorf("refused %s = %d, want %d (%v)", k, st.Core.Refused[k], v, st.Core.Refused)
		}
	}
}

// regs lists s's registrations, which must not fail.
func regs(t testing.TB, s *Server) []registrar.Binding {
	t.Helper()
	b, err := s.Registrations()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
