// Package digestclient answers SIP digest challenges (RFC 2617 and
// RFC 7616 as SIP uses them: qop=auth, MD5 or SHA-256, the opaque
// returned) for the bench's load generators and the tests' phones. The
// hashing and formatting are github.com/icholy/digest's, which sipgo
// uses too; this package only adds the SIP side: picking a challenge
// among several and naming the nonce count.
package digestclient

import (
	"errors"
	"fmt"
	"strings"

	"github.com/icholy/digest"
)

// Request is what a response is computed over.
type Request struct {
	Method, URI        string
	Username, Password string
	// Count is the nonce count (nc): 1 for a fresh nonce, one more for
	// each reuse of it. 0 means 1.
	Count int
	// Cnonce is the client nonce; empty: a random one.
	Cnonce string
}

// Answer returns the Authorization (or Proxy-Authorization) value for
// one challenge, the value of a WWW-Authenticate or Proxy-Authenticate.
func Answer(challenge string, r Request) (string, error) {
	ch, err := digest.ParseChallenge(challenge)
	if err != nil {
		return "", fmt.Errorf("digest challenge: %w", err)
	}
	return answer(ch, r)
}

func answer(ch *digest.Challenge, r Request) (string, error) {
	// SIP servers list qop values as "auth,auth-int" or "auth, auth-int".
	for i, q := range ch.QOP {
		ch.QOP[i] = strings.TrimSpace(q)
	}
	cred, err := digest.Digest(ch, digest.Options{Method: r.Method, URI: r.URI, Username: r.Username,
		Password: r.Password, Count: r.Count, Cnonce: r.Cnonce})
	if err != nil {
		return "", err
	}
	return cred.String(), nil
}

// ErrNoChallenge is AnswerFirst's error when no challenge fits.
var ErrNoChallenge = errors.New("no digest challenge of the algorithm")

// AnswerFirst answers the first of challenges whose algorithm is alg
// (a challenge without one is MD5), skipping those it cannot parse.
func AnswerFirst(challenges []string, alg string, r Request) (string, error) {
	for _, c := range challenges {
		ch, err := digest.ParseChallenge(c)
		if err != nil {
			continue
		}
		a := ch.Algorithm
		if a == "" {
			a = "MD5"
		}
		if strings.EqualFold(a, alg) {
			return answer(ch, r)
		}
	}
	return "", fmt.Errorf("%w %s", ErrNoChallenge, alg)
}
