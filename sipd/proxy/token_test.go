package proxy

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

func TestRouteTokenKeys(t *testing.T) {
	a, b := newRouteSigner([]byte("one secret")), newRouteSigner([]byte("one secret"))
	c := newRouteSigner([]byte("another secret"))
	tok := a.sign("call@host", "tag1")
	if len(tok) != tokenLen {
		t.Fatalf("token %q: %d characters, want %d", tok, len(tok), tokenLen)
	}
	cases := []struct {
		name         string
		s            routeSigner
		callID, ftag string
		token        string
		want         bool
	}{
		{"same instance", a, "call@host", "tag1", tok, true},
		{"another instance sharing the key", b, "call@host", "tag1", tok, true},
		{"an instance with another key", c, "call@host", "tag1", tok, false},
		{"another Call-ID", a, "call@host2", "tag1", tok, false},
		{"another tag", a, "call@host", "tag2", tok, false},
		{"Call-ID and tag shifted", a, "call@hos", "ttag1", tok, false},
		{"truncated", a, "call@host", "tag1", tok[:tokenLen-1], false},
		{"not base64url", a, "call@host", "tag1", strings.Repeat("*", tokenLen), false},
	}
	for _, tc := range cases {
		if got := tc.s.verify(tc.callID, tc.ftag, tc.token); got != tc.want {
			t.Errorf("%s: verify %v, want %v", tc.name, got, tc.want)
		}
	}
	one, two := newRouteSigner(nil), newRouteSigner(nil)
	if one.sign("x", "y") == two.sign("x", "y") {
		t.Error("two processes without a key share tokens")
	}
}

// TestRecordRouteToken: the Record-Route of a forwarded INVITE carries the
// caller's tag and a token, and the Route a phone builds from it routes
// in-dialog requests in both directions, on any instance with the key.
func TestRecordRouteToken(t *testing.T) {
	p := testProxy(Config{RouteKey: []byte("k")})
	peer := testProxy(Config{RouteKey: []byte("k")})
	stranger := testProxy(Config{RouteKey: []byte("other")})
	req := requestTags(t, "INVITE", "sip:bob@example.org", "sip:x@elsewhere.net", "a`b", "", "Max-Forwards: 10")
	req.SetSource("198.51.100.1:5060")
	req.SetTransport("TCP")
	out, err := p.prepare(req, target{uri: req.Recipient}, true, "z9hG4bKsxrr")
	if err != nil {
		t.Fatal(err)
	}
	rr := out.GetHeaders("Record-Route")
	if len(rr) != 2 {
		t.Fatalf("record-route %v", rr)
	}
	var route []string
	for _, h := range rr {
		v := h.Value()
		if !strings.Contains(v, ";ftag=a%60b;sxt=") {
			t.Fatalf("record-route %s lacks the escaped caller tag and token", v)
		}
		route = append(route, v)
	}
	// The callee's route set is the Record-Route in order; the caller's
	// is reversed. Either way the topmost entry is ours with the token.
	fromCallee := requestTags(t, "BYE", "sip:x@198.51.100.1", "sip:bob@example.org", "t1", "a`b", "Route: "+strings.Join(route, ", "))
	fromCaller := requestTags(t, "BYE", "sip:bob@198.51.100.2", "sip:x@elsewhere.net", "a`b", "t1", "Route: "+route[1]+", "+route[0])
	for _, c := range []struct {
		name string
		p    *Proxy
		req  *sip.Request
		want Action
	}{
		{"callee's BYE", p, fromCallee, ActForward},
		{"caller's BYE", p, fromCaller, ActForward},
		{"caller's BYE at an instance sharing the key", peer, fromCaller, ActForward},
		{"caller's BYE at an instance with another key", stranger, fromCaller, ActReply},
	} {
		if d := c.p.Decide(c.req); d.Action != c.want || (c.want == ActForward && d.OwnRoutes != 2) {
			t.Errorf("%s: %+v", c.name, d)
		}
	}
}

func TestParamEscape(t *testing.T) {
	for _, tag := range []string{"", "abc", "a%b", "x`y", "%%", "1.2-3_4!~*'+"} {
		e := escapeParam(tag)
		for i := 0; i < len(e); i++ {
			if !paramSafe(e[i]) && e[i] != '%' {
				t.Errorf("escapeParam(%q) = %q: unsafe %q", tag, e, e[i])
			}
		}
		if back, ok := unescapeParam(e); !ok || back != tag {
			t.Errorf("round trip of %q: %q %v", tag, back, ok)
		}
	}
	for _, bad := range []string{"%", "%4", "%zz", "a%g0"} {
		if _, ok := unescapeParam(bad); ok {
			t.Errorf("unescapeParam(%q) accepted", bad)
		}
	}
}

// FuzzRouteToken feeds in-dialog requests with arbitrary Route values
// and tags through Decide: it must not panic, and it may forward only
// when the first token of ours names the request's Call-ID and one of
// its tags under the proxy's key.
func FuzzRouteToken(f *testing.F) {
	p := testProxy(Config{RouteKey: []byte("fuzz")})
	good := p.routes.sign("c1", "f1")
	f.Add("<sip:192.0.2.10:5060;lr;ftag=f1;sxt="+good+">", "f1", "t1")
	f.Add("<sip:192.0.2.10:5060;lr;ftag=f1;sxt="+good+">, <sip:gw.example;lr>", "t1", "f1")
	f.Add("<sip:192.0.2.10;lr>, <sip:192.0.2.10;lr;ftag=f%31;sxt="+good+">", "f1", "t1")
	f.Add("<sip:192.0.2.10;lr;FTAG=;SXT=>", "", "x")
	f.Add("<sip:gw.example;lr;ftag=f1;sxt="+good+">", "f1", "t1")
	f.Fuzz(func(t *testing.T, route, fromTag, toTag string) {
		if strings.ContainsAny(route+fromTag+toTag, "\r\n") {
			return
		}
		text := "BYE sip:bob@198.51.100.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKabc\r\n" +
			"From: <sip:a@example.org>;tag=" + fromTag + "\r\nTo: <sip:b@example.org>;tag=" + toTag + "\r\n" +
			"Call-ID: c1\r\nCSeq: 1 BYE\r\nRoute: " + route + "\r\nContent-Length: 0\r\n\r\n"
		m, err := sip.ParseMessage([]byte(text))
		if err != nil {
			return
		}
		req, ok := m.(*sip.Request)
		if !ok || req.From() == nil || req.To() == nil || req.CallID() == nil {
			return
		}
		d := p.Decide(req)
		if d.Action != ActForward {
			return
		}
		// Forwarded: some leading Route of ours carried a token, and the
		// first such one verifies.
		ft, tt := req.From().Params.GetOr("tag", ""), req.To().Params.GetOr("tag", "")
		for _, h := range req.GetHeaders("Route")[:d.OwnRoutes] {
			r := h.(*sip.RouteHeader)
			tok, has := uriParam(&r.Address, paramToken)
			if !has {
				continue
			}
			raw, _ := uriParam(&r.Address, paramFtag)
			ftag, ok := unescapeParam(raw)
			if !ok || (ftag != ft && ftag != tt) || !p.routes.verify(req.CallID().Value(), ftag, tok) {
				t.Fatalf("forwarded with a token that does not verify: %q", route)
			}
			return
		}
		t.Fatalf("forwarded without a token: %q", route)
	})
}
