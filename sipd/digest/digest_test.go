package digest

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"sipxdp/internal/digestclient"
)

// answer plays the client side of one challenge, with the bench's and
// the tests' client.
func answer(t *testing.T, challenge, user, password, method, uri, nc string) string {
	t.Helper()
	n, err := strconv.ParseUint(nc, 16, 32)
	if err != nil {
		t.Fatal(err)
	}
	v, err := digestclient.Answer(challenge, digestclient.Request{Method: method, URI: uri, Username: user, Password: password,
		Count: int(n), Cnonce: "0a4f113b"})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func newAuth(t *testing.T, now *time.Time) *Authenticator {
	t.Helper()
	users := NewUsers(map[string]Credential{
		"alice": {Password: "wonderland"},
		"bob":   {HA1: map[string]string{MD5: HA1(MD5, "bob", "example.org", "builder")}},
	})
	a, err := New(users, Options{Realm: "example.org", TTL: time.Minute, Secret: []byte("k"), Now: func() time.Time { return *now }})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestVerifyBothAlgorithms(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	a := newAuth(t, &now)
	ch := a.Challenges(false)
	if len(ch) != 2 || !strings.Contains(ch[0], "algorithm=SHA-256") || !strings.Contains(ch[1], "algorithm=MD5") {
		t.Fatalf("challenges = %q", ch)
	}
	for i := range ch {
		c := a.Challenges(false)[i] // a fresh nonce each: one nonce, one count 1
		user, err := a.Verify("REGISTER", []string{answer(t, c, "alice", "wonderland", "REGISTER", "sip:example.org", "00000001")}, nil)
		if err != nil || user != "alice" {
			t.Fatalf("%s: user %q err %v", c, user, err)
		}
	}
	// HA1-only user, MD5 works, SHA-256 has no secret.
	ch = a.Challenges(false)
	if _, err := a.Verify("INVITE", []string{answer(t, ch[1], "bob", "builder", "INVITE", "sip:x@example.org", "00000001")}, nil); err != nil {
		t.Fatalf("bob md5: %v", err)
	}
	if _, err := a.Verify("INVITE", []string{answer(t, ch[0], "bob", "builder", "INVITE", "sip:x@example.org", "00000001")}, nil); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("bob sha256: err %v, want ErrUnsupported", err)
	}
}

func TestVerifyFailures(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	a := newAuth(t, &now)
	ch := a.Challenges(false)[1]
	cases := []struct {
		name string
		vals []string
		want error
	}{
		{"none", nil, ErrNoCredentials},
		{"wrong password", []string{answer(t, ch, "alice", "x", "REGISTER", "sip:e", "00000001")}, ErrBadResponse},
		{"unknown user", []string{answer(t, ch, "mallory", "x", "REGISTER", "sip:e", "00000001")}, ErrUnknownUser},
		{"other realm only", []string{strings.Replace(answer(t, ch, "alice", "wonderland", "REGISTER", "sip:e", "00000001"), `realm="example.org"`, `realm="other"`, 1)}, ErrNoCredentials},
		{"forged nonce", []string{strings.Replace(answer(t, ch, "alice", "wonderland", "REGISTER", "sip:e", "00000001"), `nonce="`, `nonce="A`, 1)}, ErrBadNonce},
		{"garbage", []string{"Basic abc"}, ErrMalformed},
		{"no qop", []string{strings.Replace(answer(t, ch, "alice", "wonderland", "REGISTER", "sip:e", "00000001"), "qop=auth", "qop=auth-int", 1)}, ErrUnsupported},
		{"method mismatch", []string{answer(t, ch, "alice", "wonderland", "INVITE", "sip:e", "00000001")}, ErrBadResponse},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := a.Verify("REGISTER", c.vals, nil)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
}

func TestReplayRefused(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	a := newAuth(t, &now)
	ch := a.Challenges(false)[0]
	one := answer(t, ch, "alice", "wonderland", "REGISTER", "sip:e", "00000001")
	if _, err := a.Verify("REGISTER", []string{one}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Verify("REGISTER", []string{one}, nil); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay: err = %v, want ErrReplay", err)
	}
	two := answer(t, ch, "alice", "wonderland", "REGISTER", "sip:e", "00000002")
	if _, err := a.Verify("REGISTER", []string{two}, nil); err != nil {
		t.Fatalf("next count: %v", err)
	}
	if _, err := a.Verify("REGISTER", []string{one}, nil); !errors.Is(err, ErrReplay) {
		t.Fatalf("older count after newer: err = %v, want ErrReplay", err)
	}
}

func TestStaleNonce(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	a := newAuth(t, &now)
	ch := a.Challenges(false)[0]
	now = now.Add(2 * time.Minute)
	good := answer(t, ch, "alice", "wonderland", "REGISTER", "sip:e", "00000001")
	if _, err := a.Verify("REGISTER", []string{good}, nil); !errors.Is(err, ErrStale) {
		t.Fatalf("expired nonce, right password: err = %v, want ErrStale", err)
	}
	bad := answer(t, ch, "alice", "nope", "REGISTER", "sip:e", "00000001")
	if _, err := a.Verify("REGISTER", []string{bad}, nil); !errors.Is(err, ErrBadResponse) {
		t.Fatalf("expired nonce, wrong password: err = %v, want ErrBadResponse", err)
	}
	if c := a.Challenges(true); !strings.Contains(c[0], "stale=true") {
		t.Fatalf("stale challenge lacks stale=true: %s", c[0])
	}
}

func TestNonceFromOtherSecret(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	a := newAuth(t, &now)
	b, _ := New(a.Users(), Options{Realm: "example.org", Secret: []byte("other"), Now: func() time.Time { return now }})
	ch := b.Challenges(false)[0]
	if _, err := a.Verify("REGISTER", []string{answer(t, ch, "alice", "wonderland", "REGISTER", "sip:e", "00000001")}, nil); !errors.Is(err, ErrBadNonce) {
		t.Fatalf("err = %v, want ErrBadNonce", err)
	}
}

func TestUsersFileReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	os.WriteFile(path, []byte("# users\nalice password=a\nbob b  # bare password\n"), 0o600)
	u, err := LoadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := u.Lookup("bob"); !ok || c.Password != "b" || u.Len() != 2 {
		t.Fatalf("bob = %+v %v, len %d", c, ok, u.Len())
	}
	os.WriteFile(path, []byte("carol ha1-md5="+HA1(MD5, "carol", "r", "c")+"\n"), 0o600)
	if err := u.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, ok := u.Lookup("alice"); ok {
		t.Fatal("alice survived reload")
	}
	if _, ok := u.Lookup("carol"); !ok {
		t.Fatal("carol missing after reload")
	}
	os.WriteFile(path, []byte("dave\n"), 0o600)
	if err := u.Reload(); err == nil {
		t.Fatal("bad file accepted")
	}
	if _, ok := u.Lookup("carol"); !ok {
		t.Fatal("a failed reload dropped the old set")
	}
	for _, bad := range []string{"x ha1-md5=zz", "x y\nx z", "x foo=1", "x password=", "x password=y password="} {
		if _, err := ParseUsers([]byte(bad)); err == nil {
			t.Errorf("ParseUsers(%q) accepted", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(`Digest username="a", realm="r", nonce="n", uri="sip:x", response="00", qop=auth, nc=00000001, cnonce="c"`)
	f.Add(`Digest username="a`)
	f.Add(`Digest ,,,=`)
	f.Fuzz(func(t *testing.T, s string) {
		now := time.Unix(1_700_000_000, 0)
		a := newAuth(t, &now)
		a.Verify("INVITE", []string{s}, nil)
	})
}

// TestNoUserOracle: whatever is wrong, an unknown user gets the answer a
// known user with a wrong password gets (so the caller's replies cannot
// tell names apart): a nonce we never issued is a new challenge for both,
// a stale nonce or a wrong answer a refusal for both.
func TestNoUserOracle(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	a := newAuth(t, &now)
	refusal := func(err error) bool { return errors.Is(err, ErrUnknownUser) || errors.Is(err, ErrBadResponse) }
	ch := a.Challenges(false)[1]
	forged := func(user string) string {
		return strings.Replace(answer(t, ch, user, "x", "REGISTER", "sip:e", "00000001"), `nonce="`, `nonce="A`, 1)
	}
	for _, user := range []string{"alice", "mallory"} {
		if _, err := a.Verify("REGISTER", []string{forged(user)}, nil); !errors.Is(err, ErrBadNonce) {
			t.Errorf("%s, forged nonce: %v, want ErrBadNonce", user, err)
		}
		if _, err := a.Verify("REGISTER", []string{answer(t, a.Challenges(false)[1], user, "x", "REGISTER", "sip:e", "00000001")}, nil); !refusal(err) {
			t.Errorf("%s, wrong password: %v, want a refusal", user, err)
		}
	}
	stale := a.Challenges(false)[1]
	now = now.Add(2 * time.Minute)
	for _, user := range []string{"alice", "mallory"} {
		if _, err := a.Verify("REGISTER", []string{answer(t, stale, user, "x", "REGISTER", "sip:e", "00000001")}, nil); !refusal(err) {
			t.Errorf("%s, stale nonce, wrong password: %v, want a refusal", user, err)
		}
	}
}

// TestURIChecked: credentials whose uri the caller says is not the
// Request-URI are refused before anything else, for any user.
func TestURIChecked(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	a := newAuth(t, &now)
	only := func(want string) func(string) bool { return func(uri string) bool { return uri == want } }
	for _, c := range []struct {
		name, user, pw, uri string
		want                error
	}{
		{"right uri", "alice", "wonderland", "sip:bob@example.org", nil},
		{"answer for another uri", "alice", "wonderland", "sip:voicemail@example.org", ErrURIMismatch},
		{"unknown user, another uri", "mallory", "x", "sip:voicemail@example.org", ErrURIMismatch},
	} {
		v := answer(t, a.Challenges(false)[1], c.user, c.pw, "INVITE", c.uri, "00000001")
		if _, err := a.Verify("INVITE", []string{v}, only("sip:bob@example.org")); !errors.Is(err, c.want) && (err != nil || c.want != nil) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}
