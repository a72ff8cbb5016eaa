package security

import (
	"fmt"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/internal/sipua"
)

// answer is what a probe got back: the status line, and for a challenge
// which parameters it carried (not the nonce, which is fresh each time).
type answer struct {
	code   int
	reason string
	chal   string
}

func (a answer) String() string { return fmt.Sprintf("%d %s %s", a.code, a.reason, a.chal) }

// probe sends m from x and reads the final answer (ACKing a non-2xx
// final answer to an INVITE, as a phone would).
func probe(t *testing.T, x *sipua.UA, m sipua.Msg) (answer, *sip.Response) {
	t.Helper()
	m.Branch = x.Branch()
	x.Send(x.Request(m))
	r := x.Response(3 * time.Second)
	if r == nil {
		t.Fatalf("%s %s: no answer", m.Method, m.RURI)
	}
	if m.Method == "INVITE" && r.StatusCode >= 300 {
		x.Send(x.Ack(m, r))
	}
	a := answer{code: r.StatusCode, reason: r.Reason}
	for _, name := range []string{"WWW-Authenticate", "Proxy-Authenticate"} {
		for _, h := range r.GetHeaders(name) {
			a.chal += fmt.Sprintf("[%s realm=%s algorithm=%s qop=%s stale=%s]", name,
				sipua.Param(h.Value(), "realm"), sipua.Param(h.Value(), "algorithm"), sipua.Param(h.Value(), "qop"), sipua.Param(h.Value(), "stale"))
		}
	}
	return a, r
}

// An attacker probes which user names exist: it sends the same requests
// naming an existing user (bob, not registered) and a made-up one (zed),
// and compares the answers. Every pair must be answered alike.
func TestUserEnumeration(t *testing.T) {
	e := newEnv(t, nil)
	x := e.attackerUA()
	seq := 0
	next := func() string { seq++; return fmt.Sprintf("enum-%d", seq) }
	garbage := func(hdr, user, uri string) string {
		return fmt.Sprintf(`%s: Digest username="%s", realm="%s", nonce="bm90LWEtbm9uY2U", uri="%s", response="00000000000000000000000000000000", algorithm=MD5, cnonce="c0ffee", qop=auth, nc=00000001`,
			hdr, user, domain, uri)
	}
	// forged answers a fresh challenge with a wrong password.
	forged := func(m sipua.Msg, hdr, user string) sipua.Msg {
		_, r := probe(t, x, m)
		name := "WWW-Authenticate"
		if r.StatusCode == 407 {
			name = "Proxy-Authenticate"
		}
		ch := r.GetHeader(name)
		if ch == nil {
			t.Fatalf("%s to get a nonce: %d %s without a challenge", m.Method, r.StatusCode, r.Reason)
		}
		m.CSeq++
		m.Headers = append(m.Headers, hdr+": "+sipua.Authorization(ch.Value(), user, "not-the-password", m.Method, m.RURI, "00000001"))
		return m
	}
	register := func(user string) sipua.Msg {
		return sipua.Msg{Method: "REGISTER", RURI: "sip:" + domain, From: "sip:" + user + "@" + domain, To: "sip:" + user + "@" + domain,
			CallID: next(), CSeq: 1, Headers: []string{"Expires: 600"}}
	}
	inviteFrom := func(user string) sipua.Msg {
		return sipua.Msg{Method: "INVITE", RURI: "sip:alice@" + domain, From: "sip:" + user + "@" + domain, To: "sip:alice@" + domain,
			CallID: next(), CSeq: 1}
	}
	inviteTo := func(from, user string) sipua.Msg {
		return sipua.Msg{Method: "INVITE", RURI: "sip:" + user + "@" + domain, From: from, To: "sip:" + user + "@" + domain,
			CallID: next(), CSeq: 1}
	}
	cases := []struct {
		name string
		msg  func(user string) sipua.Msg
	}{
		{"REGISTER with a made-up nonce", func(u string) sipua.Msg {
			m := register(u)
			m.Headers = append(m.Headers, garbage("Authorization", u, m.RURI))
			return m
		}},
		{"REGISTER with a wrong password", func(u string) sipua.Msg { return forged(register(u), "Authorization", u) }},
		{"INVITE as the user with a made-up nonce", func(u string) sipua.Msg {
			m := inviteFrom(u)
			m.Headers = append(m.Headers, garbage("Proxy-Authorization", u, m.RURI))
			return m
		}},
		{"INVITE as the user with a wrong password", func(u string) sipua.Msg { return forged(inviteFrom(u), "Proxy-Authorization", u) }},
		{"INVITE as a local user to the callee, no credentials", func(u string) sipua.Msg { return inviteTo("sip:alice@"+domain, u) }},
		{"INVITE from outside to the callee", func(u string) sipua.Msg { return inviteTo("sip:mallory@evil.example", u) }},
	}
	for _, c := range cases {
		known, _ := probe(t, x, c.msg("bob"))
		unknown, _ := probe(t, x, c.msg("zed"))
		if known != unknown {
			t.Errorf("%s: existing user answered %v, made-up user %v", c.name, known, unknown)
		}
	}
	e.legitCall()
}
