package proxy

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

func testProxy(cfg Config) *Proxy {
	self := NewSelf([]string{"example.org"}, []Listener{
		{Transport: "UDP", Addr: netip.MustParseAddrPort("192.0.2.10:5060")},
		{Transport: "TCP", Addr: netip.MustParseAddrPort("192.0.2.10:5060")},
	})
	return New(cfg, slog.New(slog.DiscardHandler), nil, self, nil, nil, nil)
}

func parseReq(t *testing.T, text string) *sip.Request {
	t.Helper()
	text = strings.ReplaceAll(strings.TrimLeft(text, "\n"), "\n", "\r\n")
	m, err := sip.ParseMessage([]byte(text))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, text)
	}
	return m.(*sip.Request)
}

func request(t *testing.T, method, ruri, from, toTag string, extra ...string) *sip.Request {
	return requestTags(t, method, ruri, from, "f1", toTag, extra...)
}

// requestTags is request with the From tag chosen too (a request from the
// callee carries the caller's tag as its To tag).
func requestTags(t *testing.T, method, ruri, from, fromTag, toTag string, extra ...string) *sip.Request {
	to := "<sip:bob@example.org>"
	if toTag != "" {
		to += ";tag=" + toTag
	}
	text := method + " " + ruri + " SIP/2.0\n" +
		"Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKabc\n" +
		"From: <" + from + ">;tag=" + fromTag + "\nTo: " + to + "\nCall-ID: c1\nCSeq: 1 " + method + "\n"
	for _, e := range extra {
		text += e + "\n"
	}
	return parseReq(t, text+"Content-Length: 0\n\n")
}

// ownRoute is the Route line a phone copies from our Record-Route for
// the dialog of Call-ID c1 whose caller tag is ftag.
func ownRoute(p *Proxy, transport, callID, ftag string) string {
	return fmt.Sprintf("Route: <sip:192.0.2.10:5060;transport=%s;lr;ftag=%s;sxt=%s>", transport, escapeParam(ftag), p.routes.sign(callID, ftag))
}

// pathRoute is the Route line another node sends along the Path that p
// stored for a phone on transport at addr.
func pathRoute(p *Proxy, transport, addr string) string {
	return "Route: <sip:" + p.routes.signFlow(transport, addr) + "@192.0.2.10:5060;transport=udp;lr>"
}

func TestDecide(t *testing.T) {
	p := testProxy(Config{AuthRegister: true, AuthInvite: true})
	relay := testProxy(Config{AuthInvite: true, AllowRelay: true})
	other := testProxy(Config{AuthInvite: true})
	const local, foreign = "sip:alice@example.org", "sip:carol@elsewhere.net"
	const callee = "sip:bob@198.51.100.2:5060"
	tok := ownRoute(p, "udp", "c1", "f1")
	tokTCP := ownRoute(p, "tcp", "c1", "f1")
	fwd := func(own int) Decision { return Decision{Action: ActForward, OwnRoutes: own, InDialog: true} }
	missing := Decision{Action: ActReply, Code: 403, Reason: "Forbidden: Not Routed Here", InDialog: true, Refusal: RefusedTokenMissing}
	invalid := Decision{Action: ActReply, Code: 403, Reason: "Forbidden: Bad Route Token", InDialog: true, Refusal: RefusedTokenInvalid}
	strayACK := Decision{Action: ActDrop, InDialog: true, Refusal: RefusedStrayACK}
	relayForbidden := Decision{Action: ActReply, Code: 403, Reason: "Relaying Forbidden"}
	foreignRoute := Decision{Action: ActReply, Code: 403, Reason: "Relaying Forbidden", Refusal: RefusedForeignRoute}
	cases := []struct {
		name string
		p    *Proxy
		req  *sip.Request
		want Decision
	}{
		// Out of dialog.
		{"register local", p, request(t, "REGISTER", "sip:example.org", local, ""), Decision{Action: ActRegister, Challenge: 401}},
		{"register by address", p, request(t, "REGISTER", "sip:192.0.2.10:5060", local, ""), Decision{Action: ActRegister, Challenge: 401}},
		{"register foreign", p, request(t, "REGISTER", "sip:elsewhere.net", foreign, ""), relayForbidden},
		{"register with a foreign route", relay, request(t, "REGISTER", "sip:example.org", local, "", "Route: <sip:registrar.elsewhere.net;lr>"), foreignRoute},
		{"invite from local user", p, request(t, "INVITE", "sip:bob@example.org", local, ""), Decision{Action: ActLookup, Challenge: 407, RecordRoute: true}},
		{"invite from outside to local", p, request(t, "INVITE", "sip:bob@example.org", foreign, ""), Decision{Action: ActLookup, RecordRoute: true}},
		{"invite to our address", p, request(t, "INVITE", "sip:bob@192.0.2.10", foreign, ""), Decision{Action: ActLookup, RecordRoute: true}},
		{"invite to foreign refused", p, request(t, "INVITE", "sip:x@elsewhere.net", foreign, ""), relayForbidden},
		{"invite to foreign relayed", relay, request(t, "INVITE", "sip:x@elsewhere.net", local, ""), Decision{Action: ActForward, Challenge: 407, RecordRoute: true}},
		{"keepalive notify", p, request(t, "NOTIFY", "sip:192.0.2.10:5060", local, ""), Decision{Action: ActKeepalive}},
		{"keepalive options by domain", p, request(t, "OPTIONS", "sip:example.org", foreign, ""), Decision{Action: ActKeepalive}},
		{"options to a user is a call", p, request(t, "OPTIONS", "sip:bob@example.org", foreign, ""), Decision{Action: ActLookup, RecordRoute: true}},
		{"invite to the domain itself", p, request(t, "INVITE", "sip:example.org", foreign, ""), Decision{Action: ActReply, Code: 404, Reason: "Not Found"}},
		{"max-forwards zero", p, request(t, "INVITE", "sip:bob@example.org", local, "", "Max-Forwards: 0"), Decision{Action: ActReply, Code: 483, Reason: "Too Many Hops"}},
		{"stray cancel", p, request(t, "CANCEL", "sip:bob@example.org", local, ""), Decision{Action: ActReply, Code: 481, Reason: "Call/Transaction Does Not Exist", Refusal: RefusedDialog}},
		{"ack without to tag absorbed", p, request(t, "ACK", "sip:bob@example.org", local, ""), Decision{Action: ActDrop, Refusal: RefusedStrayACK}},
		{"ack without to tag through a route absorbed", p, request(t, "ACK", callee, local, "", "Route: <sip:192.0.2.10;lr>"), Decision{Action: ActDrop, Refusal: RefusedStrayACK}},
		// Pre-loaded routes.
		{"preloaded route from outside refused", p, request(t, "INVITE", "sip:x@elsewhere.net", foreign, "", "Route: <sip:192.0.2.10;lr>, <sip:gw.elsewhere.net;lr>"), foreignRoute},
		{"preloaded route from outside refused with allow_relay", relay, request(t, "INVITE", "sip:x@elsewhere.net", foreign, "", "Route: <sip:192.0.2.10;lr>, <sip:gw.elsewhere.net;lr>"), foreignRoute},
		{"route straight to a gateway refused", relay, request(t, "INVITE", "sip:+15551234567@gw.elsewhere.net", foreign, "", "Route: <sip:gw.elsewhere.net;lr>"), foreignRoute},
		{"route to a gateway refused without auth", testProxy(Config{AllowRelay: true}), request(t, "INVITE", "sip:x@elsewhere.net", local, "", "Route: <sip:gw.elsewhere.net;lr>"), foreignRoute},
		{"preloaded route from a local user challenged", p, request(t, "INVITE", "sip:x@elsewhere.net", local, "", "Route: <sip:192.0.2.10;lr>, <sip:gw.elsewhere.net;lr>"), Decision{Action: ActForward, Challenge: 407, RecordRoute: true, OwnRoutes: 1}},
		{"outbound proxy route to local user", p, request(t, "INVITE", "sip:bob@example.org", local, "", "Route: <sip:192.0.2.10;lr>"), Decision{Action: ActLookup, Challenge: 407, RecordRoute: true, OwnRoutes: 1}},
		{"outbound proxy route from outside to local user", p, request(t, "INVITE", "sip:bob@example.org", foreign, "", "Route: <sip:192.0.2.10;lr>"), Decision{Action: ActLookup, RecordRoute: true, OwnRoutes: 1}},
		// Our Path, from another node of the set (path.go).
		{"path with flow token", p, request(t, "INVITE", callee, foreign, "", pathRoute(p, "TCP", "198.51.100.2:40312")),
			Decision{Action: ActFlow, OwnRoutes: 1, RecordRoute: true, FlowTransport: "TCP", FlowDest: "198.51.100.2:40312"}},
		{"path from a local user: no challenge either", p, request(t, "MESSAGE", callee, local, "", pathRoute(p, "UDP", "198.51.100.2:5060")),
			Decision{Action: ActFlow, OwnRoutes: 1, RecordRoute: true, FlowTransport: "UDP", FlowDest: "198.51.100.2:5060"}},
		{"path signed with another key", p, request(t, "INVITE", callee, foreign, "", pathRoute(other, "TCP", "198.51.100.2:40312")),
			Decision{Action: ActReply, Code: 403, Reason: "Relaying Forbidden"}},
		{"path then a foreign route", p, request(t, "INVITE", callee, foreign, "", pathRoute(p, "TCP", "198.51.100.2:40312"), "Route: <sip:gw.elsewhere.net;lr>"), foreignRoute},
		{"path on an ack", p, request(t, "ACK", callee, foreign, "", pathRoute(p, "TCP", "198.51.100.2:40312")), Decision{Action: ActDrop, Refusal: RefusedStrayACK}},
		// In dialog: only through our token.
		{"bye with token", p, request(t, "BYE", callee, local, "t1", tok), fwd(1)},
		{"bye with token, transport tcp", p, request(t, "BYE", callee, local, "t1", tokTCP), fwd(1)},
		{"bye with token on both entries", p, request(t, "BYE", callee, local, "t1", tokTCP+", "+strings.TrimPrefix(tok, "Route: ")), fwd(2)},
		{"bye with token then the next proxy", p, request(t, "BYE", callee, local, "t1", tok, "Route: <sip:proxy2.net;lr>"), fwd(1)},
		{"bye from the callee: ftag is its To tag", p, requestTags(t, "BYE", "sip:alice@198.51.100.1", "sip:bob@example.org", "t1", "f1", tok), fwd(1)},
		{"outbound proxy prepended to the route set", p, request(t, "BYE", callee, local, "t1", "Route: <sip:192.0.2.10;lr>", tok), fwd(2)},
		{"ftag escaped", p, requestTags(t, "BYE", callee, local, "a%b`c", "t1", ownRoute(p, "udp", "c1", "a%b`c")), fwd(1)},
		{"token checked by an instance with the same key", testProxy(Config{RouteKey: []byte("shared")}), request(t, "BYE", callee, local, "t1", ownRoute(testProxy(Config{RouteKey: []byte("shared")}), "udp", "c1", "f1")), fwd(1)},
		{"token from another key", other, request(t, "BYE", callee, local, "t1", tok), invalid},
		{"token of another call", p, request(t, "BYE", callee, local, "t1", ownRoute(p, "udp", "c2", "f1")), invalid},
		{"token of another caller tag", p, request(t, "BYE", callee, local, "t1", ownRoute(p, "udp", "c1", "f2")), invalid},
		{"ftag changed to fit", p, request(t, "BYE", callee, local, "t1", strings.Replace(ownRoute(p, "udp", "c1", "f2"), "ftag=f2", "ftag=f1", 1)), invalid},
		{"forged token", p, request(t, "BYE", callee, local, "t1", "Route: <sip:192.0.2.10:5060;lr;ftag=f1;sxt=AAAAAAAAAAAAAAAAAAAAAA>"), invalid},
		{"token too short", p, request(t, "BYE", callee, local, "t1", "Route: <sip:192.0.2.10:5060;lr;ftag=f1;sxt=AAAA>"), invalid},
		{"empty token", p, request(t, "BYE", callee, local, "t1", "Route: <sip:192.0.2.10:5060;lr;ftag=f1;sxt>"), invalid},
		{"token without ftag", p, request(t, "BYE", callee, local, "t1", "Route: <sip:192.0.2.10:5060;lr;sxt="+p.routes.sign("c1", "f1")+">"), invalid},
		{"broken escape in ftag", p, request(t, "BYE", callee, local, "t1", "Route: <sip:192.0.2.10:5060;lr;ftag=f%1;sxt="+p.routes.sign("c1", "f1")+">"), invalid},
		{"token param names in capitals", p, request(t, "BYE", callee, local, "t1", strings.NewReplacer("ftag=", "FTAG=", "sxt=", "SXT=").Replace(tok)), fwd(1)},
		{"route of ours without token", p, request(t, "BYE", callee, local, "t1", "Route: <sip:192.0.2.10:5060;transport=udp;lr>"), missing},
		{"route of ours without token, then a gateway", p, request(t, "INVITE", "sip:+15551234567@gw.elsewhere.net", foreign, "x", "Route: <sip:192.0.2.10;lr>, <sip:gw.elsewhere.net;lr>"), missing},
		{"route naming a gateway", p, request(t, "INVITE", "sip:+15551234567@gw.elsewhere.net", foreign, "x", "Route: <sip:gw.elsewhere.net;lr>"), missing},
		{"token behind a foreign route", p, request(t, "BYE", callee, local, "t1", "Route: <sip:proxy2.net;lr>", tok), missing},
		{"in-dialog without route", p, request(t, "BYE", callee, local, "t1"), missing},
		{"in-dialog to us without route", p, request(t, "BYE", "sip:192.0.2.10", local, "t1"), Decision{Action: ActReply, Code: 481, Reason: "Call/Transaction Does Not Exist", InDialog: true, Refusal: RefusedDialog}},
		{"in-dialog keepalive to us", p, request(t, "OPTIONS", "sip:192.0.2.10:5060", local, "t1"), Decision{Action: ActKeepalive, InDialog: true}},
		{"route at another port is not us", p, request(t, "BYE", callee, local, "t1", strings.Replace(tok, ":5060", ":5070", 1)), missing},
		{"ack without route absorbed", p, request(t, "ACK", callee, local, "t1"), strayACK},
		{"ack with token routed", p, request(t, "ACK", callee, local, "t1", tok), fwd(1)},
		{"ack with forged token absorbed", p, request(t, "ACK", callee, local, "t1", "Route: <sip:192.0.2.10:5060;lr;ftag=f1;sxt=AAAAAAAAAAAAAAAAAAAAAA>"), strayACK},
		{"ack through a gateway route absorbed", p, request(t, "ACK", callee, local, "t1", "Route: <sip:gw.elsewhere.net;lr>"), strayACK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.p.Decide(c.req); got != c.want {
				t.Fatalf("got %+v (%s), want %+v (%s)", got, got.Action, c.want, c.want.Action)
			}
		})
	}
}

func TestLoopDetection(t *testing.T) {
	p := testProxy(Config{})
	req := request(t, "INVITE", "sip:bob@example.org", "sip:x@elsewhere.net", "")
	out, err := p.prepare(req, target{uri: req.Recipient}, true, branchMagic+loopHash(req)+".x")
	if err != nil {
		t.Fatal(err)
	}
	// The same request comes back to us unchanged: a loop.
	back := out.Clone()
	if d := p.Decide(back); d.Code != 482 {
		t.Fatalf("looped request: %+v", d)
	}
	// A spiral: it comes back with another Request-URI, so it is new work.
	back.Recipient.User = "bob2"
	if d := p.Decide(back); d.Code == 482 {
		t.Fatalf("spiral taken for a loop: %+v", d)
	}
}

func TestPrepare(t *testing.T) {
	p := testProxy(Config{})
	req := request(t, "INVITE", "sip:bob@example.org", "sip:x@elsewhere.net", "", "Max-Forwards: 10")
	req.SetSource("198.51.100.1:5060")
	req.SetTransport("UDP")
	var contact sip.Uri
	sip.ParseUri("sip:bob@10.0.0.5:5062;transport=tcp", &contact)
	out, err := p.prepare(req, target{uri: contact, dest: "203.0.113.9:40000", transport: "TCP"}, true, "z9hG4bKsxtest")
	if err != nil {
		t.Fatal(err)
	}
	if out.Recipient.String() != contact.String() || out.Destination() != "203.0.113.9:40000" || out.Transport() != "TCP" {
		t.Fatalf("target: %s via %s/%s", out.Recipient.String(), out.Transport(), out.Destination())
	}
	if v := out.Via(); v.Host != "192.0.2.10" || v.Port != 5060 || v.Transport != "TCP" || v.Params.GetOr("branch", "") != "z9hG4bKsxtest" {
		t.Fatalf("via %s", v.Value())
	}
	if got := out.GetHeader("Max-Forwards").Value(); got != "9" {
		t.Fatalf("Max-Forwards %s", got)
	}
	if got := req.GetHeader("Max-Forwards").Value(); got != "10" {
		t.Fatalf("original Max-Forwards changed to %s", got)
	}
	rr := out.GetHeaders("Record-Route")
	if len(rr) != 2 || !strings.Contains(rr[0].Value(), "transport=tcp;lr") || !strings.Contains(rr[1].Value(), "transport=udp;lr") {
		t.Fatalf("record-route %v", rr)
	}
	// Same transport: one Record-Route.
	out, _ = p.prepare(req, target{uri: req.Recipient}, true, "z9hG4bKsx2")
	if rr := out.GetHeaders("Record-Route"); len(rr) != 1 {
		t.Fatalf("record-route %v", rr)
	}
	if out.Destination() != "example.org:5060" || out.Laddr.Port != 5060 {
		t.Fatalf("dest %s laddr %v", out.Destination(), out.Laddr)
	}
}

// TestByeRouteSets: the media-timeout BYEs follow the dialog's route set on
// each side of sipd, with its own (double) Record-Route left out.
func TestByeRouteSets(t *testing.T) {
	p := testProxy(Config{})
	parse := func(rr string) *sip.Response {
		text := "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKabc\r\n" +
			"From: <sip:alice@example.org>;tag=f1\r\nTo: <sip:bob@example.org>;tag=t1\r\nCall-ID: c1\r\n" +
			"CSeq: 1 INVITE\r\n" + rr + "Content-Length: 0\r\n\r\n"
		m, err := sip.ParseMessage([]byte(text))
		if err != nil {
			t.Fatal(err)
		}
		return m.(*sip.Response)
	}
	str := func(us []sip.Uri) string {
		var out []string
		for _, u := range us {
			out = append(out, u.Host)
		}
		return strings.Join(out, ",")
	}
	cases := []struct {
		name, rr, callee, caller string
	}{
		{"only sipd", "Record-Route: <sip:192.0.2.10:5060;lr>\r\n", "", ""},
		{"proxies on both sides",
			"Record-Route: <sip:p3.callee.net;lr>, <sip:p2.callee.net;lr>\r\nRecord-Route: <sip:192.0.2.10:5060;lr>\r\nRecord-Route: <sip:p1.caller.net;lr>\r\n",
			"p2.callee.net,p3.callee.net", "p1.caller.net"},
		{"double record-route", "Record-Route: <sip:p2.callee.net;lr>\r\nRecord-Route: <sip:192.0.2.10:5060;transport=tcp;lr>\r\nRecord-Route: <sip:192.0.2.10:5060;lr>\r\nRecord-Route: <sip:p1.caller.net;lr>\r\n",
			"p2.callee.net", "p1.caller.net"},
		{"not through sipd", "Record-Route: <sip:p2.callee.net;lr>\r\n", "", ""},
		{"our entries with tokens", "Record-Route: <sip:p2.callee.net;lr>\r\nRecord-Route: <sip:192.0.2.10:5060;transport=tcp;lr;ftag=f1;sxt=" + p.routes.sign("c1", "f1") +
			">, <sip:192.0.2.10:5060;transport=udp;lr;ftag=f1;sxt=" + p.routes.sign("c1", "f1") + ">\r\nRecord-Route: <sip:p1.caller.net;lr>\r\n",
			"p2.callee.net", "p1.caller.net"},
	}
	// A call node B took over from node A: A's entries, known by token.
	peer := testProxy(Config{PeerRoutes: true, RouteKey: []byte("k")})
	tok := peer.routes.sign("c1", "f1")
	takenOver := "Record-Route: <sip:p2.callee.net;lr>\r\nRecord-Route: <sip:192.0.2.20:5070;lr;ftag=f1;sxt=" + tok +
		">, <sip:192.0.2.20:5060;lr;ftag=f1;sxt=" + tok + ">\r\nRecord-Route: <sip:p1.caller.net;lr>\r\n"
	for _, c := range []struct {
		name, callee, caller string
		p                    *Proxy
	}{
		{"taken over", "p2.callee.net", "p1.caller.net", peer},
		{"without PeerRoutes", "", "", testProxy(Config{RouteKey: []byte("k")})},
		{"under another key", "", "", testProxy(Config{PeerRoutes: true, RouteKey: []byte("other")})},
	} {
		toCallee, toCaller := c.p.routeSets(parse(takenOver))
		if str(toCallee) != c.callee || str(toCaller) != c.caller {
			t.Errorf("%s: routes %q and %q, want %q and %q", c.name, str(toCallee), str(toCaller), c.callee, c.caller)
		}
	}
	for _, c := range cases {
		toCallee, toCaller := p.routeSets(parse(c.rr))
		if got := str(toCallee); got != c.callee {
			t.Errorf("%s: route towards callee %q, want %q", c.name, got, c.callee)
		}
		if got := str(toCaller); got != c.caller {
			t.Errorf("%s: route towards caller %q, want %q", c.name, got, c.caller)
		}
	}
}

func TestUserKey(t *testing.T) {
	for in, want := range map[string]string{
		"carol":        "carol",
		"%63arol":      "carol",
		"c%61r%6Fl":    "carol",
		"a%2Bb":        "a+b",      // user-unreserved: literal
		"a%40b":        "a%40b",    // '@' stays escaped
		"a%3a%3Ab":     "a%3A%3Ab", // ':' stays, hex upper-cased
		"a%00b":        "a%00b",
		"%":            "%",
		"ab%4":         "ab%4",
		"ab%zz":        "ab%zz",
		"%2":           "%2",
		"+15551234567": "+15551234567",
	} {
		if got := UserKey(in); got != want {
			t.Errorf("UserKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestDecidePeerRoutes: with PeerRoutes, node B takes over in-dialog
// requests whose route names node A (sharing the route key), and only
// those whose token fits.
func TestDecidePeerRoutes(t *testing.T) {
	key := []byte("shared")
	b := testProxy(Config{RouteKey: key, PeerRoutes: true})
	strict := testProxy(Config{RouteKey: key})
	foreignKey := testProxy(Config{RouteKey: []byte("other"), PeerRoutes: true})
	const callee, local = "sip:bob@198.51.100.2:5060", "sip:alice@example.org"
	// A's entries: another address, the same key.
	peer := func(callID, ftag, port string) string {
		return fmt.Sprintf("<sip:192.0.2.20:%s;transport=udp;lr;ftag=%s;sxt=%s>", port, ftag, b.routes.sign(callID, ftag))
	}
	ours := strings.TrimPrefix(ownRoute(b, "udp", "c1", "f1"), "Route: ")
	fwd := func(own int) Decision { return Decision{Action: ActForward, OwnRoutes: own, InDialog: true} }
	missing := Decision{Action: ActReply, Code: 403, Reason: "Forbidden: Not Routed Here", InDialog: true, Refusal: RefusedTokenMissing}
	cases := []struct {
		name string
		p    *Proxy
		req  *sip.Request
		want Decision
	}{
		{"bye naming A taken over", b, request(t, "BYE", callee, local, "t1", "Route: "+peer("c1", "f1", "5060")), fwd(1)},
		{"from the callee side", b, requestTags(t, "BYE", "sip:alice@198.51.100.1", "sip:bob@example.org", "t1", "f1", "Route: "+peer("c1", "f1", "5060")), fwd(1)},
		{"A's double record-route", b, request(t, "BYE", callee, local, "t1", "Route: "+peer("c1", "f1", "5060")+", "+peer("c1", "f1", "5070")), fwd(2)},
		{"A's entry then the next proxy", b, request(t, "BYE", callee, local, "t1", "Route: "+peer("c1", "f1", "5060")+", <sip:proxy2.net;lr>"), fwd(1)},
		{"B as outbound proxy above A's entry", b, request(t, "BYE", callee, local, "t1", "Route: <sip:192.0.2.10;lr>, "+peer("c1", "f1", "5060")), fwd(2)},
		{"a dialog through B then A stays on its way to A", b, request(t, "BYE", callee, local, "t1", "Route: "+ours+", "+peer("c1", "f1", "5060")), fwd(1)},
		{"token of another call", b, request(t, "BYE", callee, local, "t1", "Route: "+peer("c2", "f1", "5060")), missing},
		{"token of another caller tag", b, request(t, "BYE", callee, local, "t1", "Route: "+peer("c1", "f9", "5060")), missing},
		{"token under another key", foreignKey, request(t, "BYE", callee, local, "t1", "Route: "+peer("c1", "f1", "5060")), missing},
		{"without PeerRoutes", strict, request(t, "BYE", callee, local, "t1", "Route: "+peer("c1", "f1", "5060")), missing},
		{"not for an initial request", b, request(t, "INVITE", callee, "sip:carol@elsewhere.net", "", "Route: "+peer("c1", "f1", "5060")), Decision{Action: ActReply, Code: 403, Reason: "Relaying Forbidden", Refusal: RefusedForeignRoute}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.p.Decide(c.req); got != c.want {
				t.Fatalf("got %+v (%s), want %+v (%s)", got, got.Action, c.want, c.want.Action)
			}
		})
	}
}
