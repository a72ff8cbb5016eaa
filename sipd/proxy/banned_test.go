package proxy

import (
	"strings"
	"testing"

	"sipxdp/sipd/digest"
)

// TestBrowserChallenges: a WebSocket client is challenged with MD5 alone
// whenever MD5 is offered, in whatever order; with no MD5 on offer, with
// what there is.
func TestBrowserChallenges(t *testing.T) {
	for _, c := range []struct {
		algs []string
		want []string // the algorithms of what is sent, in order
	}{
		{[]string{digest.MD5, digest.SHA256}, []string{digest.MD5}},
		{[]string{digest.SHA256, digest.MD5}, []string{digest.MD5}},
		{[]string{digest.MD5}, []string{digest.MD5}},
		{[]string{digest.SHA256}, []string{digest.SHA256}},
	} {
		a, err := digest.New(digest.NewUsers(nil), digest.Options{Realm: "example.org", Algorithms: c.algs})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, ch := range browserChallenges(a.Challenges(false)) {
			_, alg, _ := strings.Cut(ch, "algorithm=")
			alg, _, _ = strings.Cut(alg, ",")
			got = append(got, alg)
		}
		if strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("offered %v: sent %v, want %v", c.algs, got, c.want)
		}
	}
}
