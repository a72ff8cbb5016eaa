package proxy

import (
	"errors"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// sentTx records responses; fail makes Respond refuse them.
type sentTx struct {
	sip.ServerTransaction
	fail bool
}

func (s *sentTx) Respond(*sip.Response) error {
	if s.fail {
		return errors.New("transaction terminated")
	}
	return nil
}

// TestTimedTx: a transaction's time is observed once, at the first final
// response that was sent; provisional responses and failed sends do not
// count.
func TestTimedTx(t *testing.T) {
	req := sip.NewRequest(sip.INVITE, sip.Uri{User: "b", Host: "example.org"})
	for _, tc := range []struct {
		name  string
		codes []int
		fail  bool
		want  int
	}{
		{"ringing then answered", []int{100, 180, 200}, false, 1},
		{"two finals", []int{486, 500}, false, 1},
		{"provisional only", []int{100, 183}, false, 0},
		{"send failed", []int{200}, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n int
			tx := &timedTx{ServerTransaction: &sentTx{fail: tc.fail}, start: time.Now(), method: "INVITE",
				observe: func(method string, d time.Duration) {
					n++
					if method != "INVITE" || d < 0 {
						t.Errorf("observed %s %v", method, d)
					}
				}}
			for _, c := range tc.codes {
				tx.Respond(sip.NewResponseFromRequest(req, c, "", nil))
			}
			if n != tc.want {
				t.Errorf("observed %d times, want %d", n, tc.want)
			}
		})
	}
}
