package sipd

import (
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestRelayOnlyDropTraffic: NG drop-traffic=start (rtpengine's NG control
// protocol documentation, "drop-traffic") stops every packet of its call,
// both ways, while another call's media flows; an answer with
// drop-traffic=stop makes the call's media flow again.
func TestRelayOnlyDropTraffic(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	d, n, _, _, stop := startRelayOnly(t, nil)
	defer stop()

	type call struct {
		id                   string
		alice, bob           *rtpSock
		aliceSends, bobSends netip.AddrPort
	}
	answer := func(c call, extra map[string]any) {
		a := map[string]any{"command": "answer", "call-id": c.id, "from-tag": "alice-tag",
			"to-tag": "bob-tag", "sdp": sockSDP("bob", c.bob.addr())}
		for k, v := range extra {
			a[k] = v
		}
		if r := n.do(a); r["result"] != "ok" {
			t.Fatalf("answer %s: %v", c.id, r)
		}
	}
	setup := func(id string, extra map[string]any) call {
		c := call{id: id, alice: newRTPSock(t), bob: newRTPSock(t)}
		offer := map[string]any{"command": "offer", "call-id": id, "from-tag": "alice-tag",
			"sdp": sockSDP("alice", c.alice.addr()), "received-from": []any{"IP4", "127.0.0.1"}}
		for k, v := range extra {
			offer[k] = v
		}
		_, c.bobSends = sdpOf(t, n.do(offer))
		_, c.aliceSends = sdpOf(t, n.do(map[string]any{"command": "answer", "call-id": id, "from-tag": "alice-tag",
			"to-tag": "bob-tag", "sdp": sockSDP("bob", c.bob.addr())}))
		return c
	}
	flagged := setup("drop@test", map[string]any{"drop-traffic": "start"})
	plain := setup("plain@test", nil)

	// delivered sends one packet each way and reports which arrived.
	seq := 0
	delivered := func(c call, wait time.Duration) (toBob, toAlice bool) {
		t.Helper()
		seq++
		c.alice.send(c.aliceSends, seq)
		got, from, _, ok := c.bob.recv(wait)
		toBob = ok && got == seq && from == c.bobSends
		seq++
		c.bob.send(c.bobSends, seq)
		got, from, _, ok = c.alice.recv(wait)
		toAlice = ok && got == seq && from == c.aliceSends
		return toBob, toAlice
	}
	if b, a := delivered(plain, 2*time.Second); !b || !a {
		t.Fatalf("plain call: delivered to bob %v, to alice %v; want both", b, a)
	}
	for i := 0; i < 3; i++ {
		if b, a := delivered(flagged, 300*time.Millisecond); b || a {
			t.Fatalf("dropping call, packet %d: delivered to bob %v, to alice %v; want neither", i, b, a)
		}
	}
	if b, a := delivered(plain, 2*time.Second); !b || !a {
		t.Fatalf("plain call while the other drops: delivered to bob %v, to alice %v; want both", b, a)
	}
	for id, want := range map[string]bool{"drop@test": true, "plain@test": false} {
		fs := d.flows(t, id)
		if len(fs) == 0 {
			t.Errorf("/flows lists nothing for %s", id)
		}
		for _, f := range fs {
			if f.DropTraffic != want {
				t.Errorf("/flows: %s %s %s drop_traffic %v, want %v", id, f.Leg, f.Component, f.DropTraffic, want)
			}
		}
	}

	answer(flagged, map[string]any{"drop-traffic": "stop"})
	if b, a := delivered(flagged, 2*time.Second); !b || !a {
		t.Fatalf("after stop: delivered to bob %v, to alice %v; want both", b, a)
	}
	for _, id := range []string{"drop@test", "plain@test"} {
		if r := n.do(map[string]any{"command": "delete", "call-id": id}); r["result"] != "ok" {
			t.Errorf("delete %s: %v", id, r)
		}
	}
}
