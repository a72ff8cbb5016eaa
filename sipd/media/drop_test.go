package media

import (
	"net/netip"
	"testing"
	"time"
)

// drop-traffic (options.go): an offer or an answer starts or stops it for
// the whole call, a message without it leaves it, and a restarted sipd
// (or a standby following the call) gives it back to its engine.
func TestDropTrafficFollowsMessagesAndState(t *testing.T) {
	c, f := newCtl(ModeAll)
	if _, err := c.Offer("ng", "a", []byte(sdp("192.0.2.10", 1, audio(10000))), netip.Addr{},
		&Options{Drop: DropStart}); err != nil {
		t.Fatal(err)
	}
	if drop, ok := f.drop["ng"]; !ok || !drop {
		t.Fatalf("after offer with start: engine drop %v (set %v), want true", drop, ok)
	}
	if _, err := c.Answer("ng", "a", "b", []byte(sdp("192.0.2.20", 1, audio(20000))), netip.Addr{},
		&Options{}); err != nil {
		t.Fatal(err)
	}
	if !f.drop["ng"] {
		t.Fatal("an answer without drop-traffic stopped the drop")
	}
	restored := func() map[string]bool {
		t.Helper()
		st, ok := c.State("ng")
		if !ok {
			t.Fatal("no state")
		}
		c2, f2 := newCtl(ModeAll)
		if err := c2.Restore("ng", st, time.Now()); err != nil {
			t.Fatal(err)
		}
		return f2.drop
	}
	if got := restored(); !got["ng"] {
		t.Errorf("restored drop %v, want true", got)
	}
	if _, err := c.Answer("ng", "a", "b", []byte(sdp("192.0.2.20", 1, audio(20000))), netip.Addr{},
		&Options{Drop: DropStop}); err != nil {
		t.Fatal(err)
	}
	if drop, ok := f.drop["ng"]; !ok || drop {
		t.Fatalf("after answer with stop: engine drop %v (set %v), want false", drop, ok)
	}
	if got := restored(); got["ng"] {
		t.Errorf("restored after stop: drop %v, want none", got)
	}
}
