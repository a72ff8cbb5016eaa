package digestclient

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/icholy/digest"

	sipdigest "sipxdp/sipd/digest"
)

// Answers computed here must be what sipd's own server accepts, for each
// algorithm it offers, with the password or only the HA1 on its side, on
// a fresh nonce and on a reused one; a wrong password must not pass.
func TestAcceptedBySipd(t *testing.T) {
	users := sipdigest.NewUsers(map[string]sipdigest.Credential{
		"alice": {Password: "wonderland"},
		"bob": {HA1: map[string]string{sipdigest.MD5: sipdigest.HA1(sipdigest.MD5, "bob", "example.org", "builder"),
			sipdigest.SHA256: sipdigest.HA1(sipdigest.SHA256, "bob", "example.org", "builder")}},
	})
	for _, c := range []struct {
		name, alg, user, password string
		count                     int
		want                      error
	}{
		{"MD5", sipdigest.MD5, "alice", "wonderland", 1, nil},
		{"SHA-256", sipdigest.SHA256, "alice", "wonderland", 1, nil},
		{"MD5 from HA1", sipdigest.MD5, "bob", "builder", 1, nil},
		{"SHA-256 from HA1", sipdigest.SHA256, "bob", "builder", 1, nil},
		{"MD5 wrong password", sipdigest.MD5, "alice", "rabbit", 1, sipdigest.ErrBadResponse},
		{"SHA-256 wrong password", sipdigest.SHA256, "bob", "rabbit", 1, sipdigest.ErrBadResponse},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, err := sipdigest.New(users, sipdigest.Options{Realm: "example.org", Algorithms: []string{sipdigest.SHA256, sipdigest.MD5},
				TTL: time.Minute, Secret: []byte("k")})
			if err != nil {
				t.Fatal(err)
			}
			r := Request{Method: "REGISTER", URI: "sip:example.org", Username: c.user, Password: c.password}
			v, err := AnswerFirst(a.Challenges(false), c.alg, r)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(v, "algorithm="+c.alg) || !strings.Contains(v, "qop=auth") {
				t.Fatalf("answer %q: want algorithm=%s, qop=auth", v, c.alg)
			}
			user, err := a.Verify("REGISTER", []string{v}, nil)
			if !errors.Is(err, c.want) || (c.want == nil && user != c.user) {
				t.Fatalf("verify %q: %q, %v; want %v", v, user, err, c.want)
			}
			if c.want != nil {
				return
			}
			// A phone reusing the nonce counts up.
			r.Count = 2
			v, err = AnswerFirst(a.Challenges(false), c.alg, r)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.Verify("REGISTER", []string{v}, nil); err != nil {
				t.Fatalf("fresh nonce at nc=2: %v", err)
			}
		})
	}
}

// RFC 2617 section 3.5's example, with its cnonce: the response is the
// RFC's, and the opaque comes back.
func TestRFC2617Example(t *testing.T) {
	v, err := Answer(`Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"`,
		Request{Method: "GET", URI: "/dir/index.html", Username: "Mufasa", Password: "Circle Of Life", Cnonce: "0a4f113b"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := digest.ParseCredentials(v)
	if err != nil {
		t.Fatal(err)
	}
	if c.Response != "6629fae49393a05397450978507c4ef1" || c.Opaque != "5ccc069c403ebaf9f0171e9517f40e41" || c.Nc != 1 || c.QOP != "auth" {
		t.Fatalf("answer %q", v)
	}
}

func TestAnswerFirstPicksAlgorithm(t *testing.T) {
	chs := []string{`Basic realm="x"`, `Digest realm="r", nonce="n1", algorithm=SHA-256, qop="auth"`, `Digest realm="r", nonce="n2", qop="auth"`}
	for _, c := range []struct {
		alg, nonce string
		err        error
	}{
		{"SHA-256", "n1", nil},
		{"MD5", "n2", nil}, // no algorithm means MD5
		{"SHA-512", "", ErrNoChallenge},
	} {
		v, err := AnswerFirst(chs, c.alg, Request{Method: "INVITE", URI: "sip:b@r", Username: "u", Password: "p"})
		if !errors.Is(err, c.err) {
			t.Fatalf("%s: %v, want %v", c.alg, err, c.err)
		}
		if err == nil && !strings.Contains(v, `nonce="`+c.nonce+`"`) {
			t.Errorf("%s: answered %q, want nonce %s", c.alg, v, c.nonce)
		}
	}
}

// Challenges come off the wire: whatever they hold, Answer returns an
// answer or an error, and an answer parses back.
func FuzzAnswer(f *testing.F) {
	f.Add(`Digest realm="r", nonce="n", algorithm=MD5, qop="auth", opaque="o"`)
	f.Add(`Digest realm="r", nonce="n", algorithm=SHA-256, qop="auth, auth-int", stale=true`)
	f.Add(`Digest nonce="unterminated`)
	f.Fuzz(func(t *testing.T, challenge string) {
		v, err := Answer(challenge, Request{Method: "REGISTER", URI: "sip:r", Username: "u", Password: "p", Cnonce: "c"})
		if err != nil {
			return
		}
		if _, err := digest.ParseCredentials(v); err != nil {
			t.Fatalf("answer %q does not parse: %v", v, err)
		}
	})
}
