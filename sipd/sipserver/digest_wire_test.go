package sipserver

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/sipd/digest"
	"sipxdp/sipd/sipconf"
)

// param reads one parameter of a challenge.
func param(ch, k string) string {
	i := strings.Index(ch, k+"=")
	if i < 0 {
		return ""
	}
	v := ch[i+len(k)+1:]
	if strings.HasPrefix(v, `"`) {
		return v[1 : 1+strings.IndexByte(v[1:], '"')]
	}
	if j := strings.IndexAny(v, ", "); j >= 0 {
		v = v[:j]
	}
	return v
}

func authorization(ch, user, pw, method, uri, nc string) string {
	realm, nonce, alg := param(ch, "realm"), param(ch, "nonce"), param(ch, "algorithm")
	ha1 := digest.HA1(alg, user, realm, pw)
	resp := digest.H(alg, ha1+":"+nonce+":"+nc+":c0ffee:auth:"+digest.H(alg, method+":"+uri))
	return fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", algorithm=%s, cnonce="c0ffee", qop=auth, nc=%s`,
		user, realm, nonce, uri, resp, alg, nc)
}

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
			if param(h.Value(), "algorithm") == alg {
				return h.Value()
			}
		}
		t.Fatalf("no %s challenge in %v", alg, r.GetHeaders("WWW-Authenticate"))
		return ""
	}

	for _, alg := range []string{"MD5", "SHA-256"} {
		ch := challenge(register(), alg)
		auth := "Authorization: " + authorization(ch, "bob", "bobpw", "REGISTER", "sip:example.org", "00000001")
		if r := register(auth); r.StatusCode != 200 {
			t.Fatalf("%s: %d %s", alg, r.StatusCode, r.Reason)
		}
		// The same credentials again: a replay, challenged afresh.
		if r := register(auth); r.StatusCode != 401 {
			t.Fatalf("%s replay: %d", alg, r.StatusCode)
		}
	}
	ch := challenge(register(), "MD5")
	if r := register("Authorization: " + authorization(ch, "bob", "nope", "REGISTER", "sip:example.org", "00000001")); r.StatusCode != 403 {
		t.Fatalf("wrong password: %d", r.StatusCode)
	}
	// Registering someone else with one's own credentials.
	ch = challenge(register(), "MD5")
	cseq++
	ua.send(srv, ua.request("REGISTER", "sip:example.org", "sip:carol@example.org", "sip:carol@example.org", "dw", cseq, "Expires: 600",
		"Authorization: "+authorization(ch, "bob", "bobpw", "REGISTER", "sip:example.org", "00000002")))
	ua.expect(403)
	ch = challenge(register(), "MD5")
	time.Sleep(1100 * time.Millisecond)
	r := register("Authorization: " + authorization(ch, "bob", "bobpw", "REGISTER", "sip:example.org", "00000001"))
	if c := challenge(r, "MD5"); param(c, "stale") != "true" {
		t.Fatalf("expired nonce: challenge %q lacks stale=true", c)
	}
	if st := s.Stats(); st.Registrations != 1 || st.Core.AuthFailures != 2 {
		t.Fatalf("stats %+v", st)
	}
}
