package sipd

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"go.uber.org/goleak"
)

// TestRelayOnlyNGFork forks a call to two callees over NG as a Kamailio
// that offers per branch (via-branch) does, with real packets on
// loopback: both callees answer with 183 early media and each branch
// relays its own RTP both ways on ports of its own; the losing branch's
// per-branch delete (by via-branch, or by its to-tag with the to-tag
// flag) removes its flows and leaves the winner's flows, ports and
// peers as they were, and the winner's RTP still crosses both ways; the
// caller's delete then ends the call.
func TestRelayOnlyNGFork(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	d, n, _, _, stop := startRelayOnly(t, nil)
	defer stop()
	for _, tc := range []struct {
		name string
		lose map[string]any // the losing branch's delete, besides command and call-id
	}{
		{"delete by via-branch", map[string]any{"from-tag": "alice-tag", "via-branch": "z9hG4bK-bob2"}},
		{"delete by to-tag with the to-tag flag", map[string]any{"from-tag": "alice-tag", "to-tag": "bob2-tag", "flags": []any{"to-tag"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			callID := fmt.Sprintf("ng-fork-%d@test", len(tc.name))
			alice := newUA(t, "alice", netip.AddrPort{})
			bob1, bob2 := newUA(t, "bob1", netip.AddrPort{}), newUA(t, "bob2", netip.AddrPort{})
			offer := func(via string) netip.AddrPort {
				_, ap := sdpOf(t, n.do(map[string]any{"command": "offer", "call-id": callID, "from-tag": "alice-tag",
					"via-branch": via, "sdp": alice.sdp(), "ICE": "remove", "replace": []any{"origin", "session-connection"}}))
				return ap
			}
			answer := func(u *ua, tag, via string, code int64) netip.AddrPort {
				_, ap := sdpOf(t, n.do(map[string]any{"command": "answer", "call-id": callID, "from-tag": "alice-tag",
					"to-tag": tag, "via-branch": via, "sdp": u.sdp(), "sip-message-type": "reply", "SIP code": code}))
				return ap
			}
			bob1Sends, bob2Sends := offer("z9hG4bK-bob1"), offer("z9hG4bK-bob2")
			alice1Sends := answer(bob1, "bob1-tag", "z9hG4bK-bob1", 183)
			alice2Sends := answer(bob2, "bob2-tag", "z9hG4bK-bob2", 183)
			if ports := []netip.AddrPort{bob1Sends, bob2Sends, alice1Sends, alice2Sends}; len(slices.CompactFunc(slices.SortedFunc(slices.Values(ports), netip.AddrPort.Compare), func(a, b netip.AddrPort) bool { return a == b })) != 4 {
				t.Fatalf("branches share relay ports: %v", ports)
			}
			rtpExchange(t, alice, bob1, alice1Sends, bob1Sends, 10)
			rtpExchange(t, alice, bob2, alice2Sends, bob2Sends, 10)

			before := d.flows(t, callID)
			winner := func(fs []FlowJSON) []string {
				var out []string
				for _, f := range fs {
					if f.Stream < 1<<16 { // branch 1's streams (media's fork.go)
						out = append(out, fmt.Sprintf("%d %s %s %s %s", f.Stream, f.Leg, f.Component, f.Local, f.Peer))
					}
				}
				slices.Sort(out)
				return out
			}
			if len(winner(before)) == 0 || len(winner(before)) == len(before) {
				t.Fatalf("flows before the delete: %+v", before)
			}
			del := map[string]any{"command": "delete", "call-id": callID}
			for k, v := range tc.lose {
				del[k] = v
			}
			if r := n.do(del); r["result"] != "ok" || r["warning"] != nil {
				t.Fatalf("losing branch's delete: %v", r)
			}
			after := d.flows(t, callID)
			if !slices.Equal(winner(after), winner(before)) || len(winner(after)) != len(after) {
				t.Errorf("flows after the losing branch's delete:\n%v\nwant the winner's as before:\n%v", after, winner(before))
			}
			if l := n.do(map[string]any{"command": "list"}); fmt.Sprint(l["calls"]) != "["+callID+"]" {
				t.Errorf("list after the losing branch's delete: %v", l)
			}
			rtpExchange(t, alice, bob1, alice1Sends, bob1Sends, 10)

			// The winner's 200 and the caller's BYE.
			if got := answer(bob1, "bob1-tag", "z9hG4bK-bob1", 200); got != alice1Sends {
				t.Errorf("200 points the caller at %v, the 183 at %v", got, alice1Sends)
			}
			if r := n.do(map[string]any{"command": "delete", "call-id": callID, "from-tag": "alice-tag"}); r["result"] != "ok" {
				t.Errorf("delete: %v", r)
			}
			if fs := d.flows(t, callID); len(fs) != 0 {
				t.Errorf("flows after the call's delete: %+v", fs)
			}
		})
	}
}
