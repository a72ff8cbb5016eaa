package sipserver

import (
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/internal/sipua"
	"sipxdp/sipd/sipconf"
)

func TestDigestOnTheWire(t *testing.T) {
	s := testServer(t, func(c *sipconf.Config) { c.Auth.NonceTTL = sipconf.Duration(time.Second) })
	ua := newRawUA(t)
	srv := serverAddr(t, s, "udp")
	cseq := 0
	register := func(extra ...string) *sip.Response {
		cseq++
		ua.send(srv, ua.request("REGISTER", "sip:example.org", "sip:bob@example.org", "sip:bob@example.org", "dw", cseq, append([]string{"Expires: 600"}, extra...)...))
		for {
			m := ua.recv(3 * time.Second)
			if m == nil {
				t.Fatal("no answer")
			}
			if r, ok := m.(*sip.Response); ok && r.CSeq().SeqNo == uint32(cseq) {
				return r
			}
		}
	}
	challenge := func(r *sip.Response, alg string) string {
		t.Helper()
		if r.StatusCode != 401 {
			t.Fatalf("got %d, want a 401 challenge", r.StatusCode)
		}
		for _, h := range r.GetHeaders("WWW-Authenticate") {
			if sipua.Param(h.Value(), "algorithm") == alg {
				return h.Value()
			}
		}
		t.Fatalf("no %s challenge in %v", alg, r.GetHeaders("WWW-Authenticate"))
		return ""
	}

	for _, alg := range []string{"MD5", "SHA-256"} {
		ch := challenge(register(), alg)
		auth := "Authorization: " + sipua.Authorization(ch, "bob", "bobpw", "REGISTER", "sip:example.org", "00000001")
		if r := register(auth); r.StatusCode != 200 {
			t.Fatalf("%s: %d %s", alg, r.StatusCode, r.Reason)
		}
		// The same credentials again: a replay, challenged afresh.
		if r := register(auth); r.StatusCode != 401 {
			t.Fatalf("%s replay: %d", alg, r.StatusCode)
		}
	}
	ch := challenge(register(), "MD5")
	if r := register("Authorization: " + sipua.Authorization(ch, "bob", "nope", "REGISTER", "sip:example.org", "00000001")); r.StatusCode != 403 {
		t.Fatalf("wrong password: %d", r.StatusCode)
	}
	// Registering someone else with one's own credentials.
	ch = challenge(register(), "MD5")
	cseq++
	ua.send(srv, ua.request("REGISTER", "sip:example.org", "sip:carol@example.org", "sip:carol@example.org", "dw", cseq, "Expires: 600",
		"Authorization: "+sipua.Authorization(ch, "bob", "bobpw", "REGISTER", "sip:example.org", "00000002")))
	ua.expect(403)
	ch = challenge(register(), "MD5")
	time.Sleep(1100 * time.Millisecond)
	r := register("Authorization: " + sipua.Authorization(ch, "bob", "bobpw", "REGISTER", "sip:example.org", "00000001"))
	if c := challenge(r, "MD5"); sipua.Param(c, "stale") != "true" {
		t.Fatalf("expired nonce: challenge %q lacks stale=true", c)
	}
	if st := s.Stats(); st.Registrations != 1 || st.Core.AuthFailures != 2 {
		t.Fatalf("stats %+v", st)
	}
}
