package sipserver

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// TestObservers: a registration and an answered call reach the hooks: one
// setup time per call, and each transaction's time once, at its final
// response.
func TestObservers(t *testing.T) {
	var (
		mu     sync.Mutex
		setups []int
		txs    []string
	)
	s := testServerWith(t, noAuth, Options{Observe: Observers{
		CallSetup: func(status int, d time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			if d <= 0 {
				t.Errorf("setup time %v", d)
			}
			setups = append(setups, status)
		},
		Transaction: func(method string, d time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			if d <= 0 {
				t.Errorf("%s took %v", method, d)
			}
			txs = append(txs, method)
		},
	}})
	srv := serverAddr(t, s, "udp")
	uas, caller := newRawUA(t), newRawUA(t)
	registerRaw(t, uas, srv.String(), "bob", "r1")
	caller.send(srv, caller.request("INVITE", "sip:bob@example.org", "sip:alice@example.org", "sip:bob@example.org", "obs1", 1))
	caller.expect(100)
	inv := uas.expectRequest(sip.INVITE)
	uas.respond(inv, 180, "Ringing", "u1")
	caller.expect(180)
	uas.respond(inv, 200, "OK", "u1")
	caller.expect(200)
	uas.respond(inv, 200, "OK", "u1") // a retransmission: relayed, not timed again
	caller.expect(200)

	// The hook runs once the response is sent, so the caller may hear it
	// first.
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := len(txs)
		mu.Unlock()
		if n >= 2 {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(setups, []int{200}) {
		t.Errorf("call setups observed %v, want [200]", setups)
	}
	if !slices.Equal(txs, []string{"REGISTER", "INVITE"}) {
		t.Errorf("transactions observed %v, want [REGISTER INVITE]", txs)
	}
}
