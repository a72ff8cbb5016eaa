package proxy

import (
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
	to := "<sip:bob@example.org>"
	if toTag != "" {
		to += ";tag=" + toTag
	}
	text := method + " " + ruri + " SIP/2.0\n" +
		"Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKabc\n" +
		"From: <" + from + ">;tag=f1\nTo: " + to + "\nCall-ID: c1\nCSeq: 1 " + method + "\n"
	for _, e := range extra {
		text += e + "\n"
	}
	return parseReq(t, text+"Content-Length: 0\n\n")
}

func TestDecide(t *testing.T) {
	p := testProxy(Config{AuthRegister: true, AuthInvite: true})
	relay := testProxy(Config{AuthInvite: true, AllowRelay: true})
	const local, foreign = "sip:alice@example.org", "sip:carol@elsewhere.net"
	cases := []struct {
		name string
		p    *Proxy
		req  *sip.Request
		want Decision
	}{
		{"register local", p, request(t, "REGISTER", "sip:example.org", local, ""), Decision{Action: ActRegister, Challenge: 401}},
		{"register by address", p, request(t, "REGISTER", "sip:192.0.2.10:5060", local, ""), Decision{Action: ActRegister, Challenge: 401}},
		{"register foreign", p, request(t, "REGISTER", "sip:elsewhere.net", foreign, ""), Decision{Action: ActReply, Code: 403, Reason: "Relaying Forbidden"}},
		{"invite from local user", p, request(t, "INVITE", "sip:bob@example.org", local, ""), Decision{Action: ActLookup, Challenge: 407, RecordRoute: true}},
		{"invite from outside to local", p, request(t, "INVITE", "sip:bob@example.org", foreign, ""), Decision{Action: ActLookup, RecordRoute: true}},
		{"invite to our address", p, request(t, "INVITE", "sip:bob@192.0.2.10", foreign, ""), Decision{Action: ActLookup, RecordRoute: true}},
		{"invite to foreign refused", p, request(t, "INVITE", "sip:x@elsewhere.net", foreign, ""), Decision{Action: ActReply, Code: 403, Reason: "Relaying Forbidden"}},
		{"invite to foreign relayed", relay, request(t, "INVITE", "sip:x@elsewhere.net", local, ""), Decision{Action: ActForward, Challenge: 407, RecordRoute: true}},
		{"keepalive notify", p, request(t, "NOTIFY", "sip:192.0.2.10:5060", local, ""), Decision{Action: ActKeepalive}},
		{"keepalive options by domain", p, request(t, "OPTIONS", "sip:example.org", foreign, ""), Decision{Action: ActKeepalive}},
		{"options to a user is a call", p, request(t, "OPTIONS", "sip:bob@example.org", foreign, ""), Decision{Action: ActLookup, RecordRoute: true}},
		{"invite to the domain itself", p, request(t, "INVITE", "sip:example.org", foreign, ""), Decision{Action: ActReply, Code: 404, Reason: "Not Found"}},
		{"max-forwards zero", p, request(t, "INVITE", "sip:bob@example.org", local, "", "Max-Forwards: 0"), Decision{Action: ActReply, Code: 483, Reason: "Too Many Hops"}},
		{"stray cancel", p, request(t, "CANCEL", "sip:bob@example.org", local, ""), Decision{Action: ActReply, Code: 481, Reason: "Call/Transaction Does Not Exist"}},
		{"bye routed by us", p, request(t, "BYE", "sip:bob@198.51.100.2:5060", local, "t1", "Route: <sip:192.0.2.10:5060;transport=udp;lr>"), Decision{Action: ActForward, OwnRoutes: 1, InDialog: true}},
		{"bye double route", p, request(t, "BYE", "sip:bob@198.51.100.2:5060", local, "t1", "Route: <sip:192.0.2.10:5060;transport=tcp;lr>, <sip:192.0.2.10:5060;transport=udp;lr>"), Decision{Action: ActForward, OwnRoutes: 2, InDialog: true}},
		{"bye via next proxy", p, request(t, "BYE", "sip:bob@198.51.100.2", local, "t1", "Route: <sip:192.0.2.10;lr>", "Route: <sip:proxy2.net;lr>"), Decision{Action: ActForward, OwnRoutes: 1, InDialog: true}},
		{"in-dialog without route", p, request(t, "BYE", "sip:bob@198.51.100.2", local, "t1"), Decision{Action: ActReply, Code: 404, Reason: "Not Here", InDialog: true}},
		{"ack without route dropped", p, request(t, "ACK", "sip:bob@198.51.100.2", local, "t1"), Decision{Action: ActDrop, InDialog: true}},
		{"ack for 2xx routed", p, request(t, "ACK", "sip:bob@198.51.100.2", local, "t1", "Route: <sip:192.0.2.10;lr>"), Decision{Action: ActForward, OwnRoutes: 1, InDialog: true}},
		{"route at another port is not us", p, request(t, "BYE", "sip:bob@198.51.100.2", local, "t1", "Route: <sip:192.0.2.10:5070;lr>"), Decision{Action: ActForward, InDialog: true}},
		{"preloaded route from outside refused", p, request(t, "INVITE", "sip:x@elsewhere.net", foreign, "", "Route: <sip:192.0.2.10;lr>, <sip:gw.elsewhere.net;lr>"), Decision{Action: ActReply, Code: 403, Reason: "Relaying Forbidden"}},
		{"outbound proxy route to local user", p, request(t, "INVITE", "sip:bob@example.org", local, "", "Route: <sip:192.0.2.10;lr>"), Decision{Action: ActLookup, Challenge: 407, RecordRoute: true, OwnRoutes: 1}},
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
