package media

import (
	"errors"
	"net/netip"
	"testing"

	"sipxdp/relay"
	"sipxdp/sipd/sdprewrite"
)

func pointsAt(t *testing.T, body []byte, index int, leg relay.LegPorts) {
	t.Helper()
	ms, err := sdprewrite.Parse(body)
	if err != nil {
		t.Fatalf("rewritten sdp does not parse: %v\n%s", err, body)
	}
	if index >= len(ms) {
		t.Fatalf("no m-line %d in\n%s", index, body)
	}
	if got := ms[index]; got.Addr != leg.Advertised || got.Port != leg.RTP {
		t.Errorf("m-line %d points at %v:%d, want the relay %v:%d\n%s", index, got.Addr, got.Port, leg.Advertised, leg.RTP, body)
	}
}

// TestSIPFreeOfferAnswer drives a call through Offer and Answer by tags:
// first offer and answer, retransmissions, a re-offer from the caller, a
// re-offer from the callee (its tag as from-tag) and its answer, query
// info and delete.
func TestSIPFreeOfferAnswer(t *testing.T) {
	c, f := newCtl(ModeAll)
	sig := netip.MustParseAddr("192.0.2.10")
	offer := sdp("192.0.2.10", 1, audio(10000))
	out, err := c.Offer(cid, callerTag, []byte(offer), sig, nil)
	if err != nil {
		t.Fatal(err)
	}
	sp, ok := f.ports(cid, 0)
	if !ok {
		t.Fatal("no stream for the offer")
	}
	pointsAt(t, out, 0, sp.B)
	again, err := c.Offer(cid, callerTag, []byte(offer), sig, nil)
	if err != nil || string(again) != string(out) {
		t.Errorf("retransmitted offer: %v, body changed:\n%s\nvs\n%s", err, again, out)
	}
	if _, err := c.Answer(cid, "stranger", calleeTag, []byte(sdp("192.0.2.20", 1, audio(20000))), netip.Addr{}, nil); !errors.Is(err, ErrUnknownTag) {
		t.Errorf("answer from an unknown from-tag: %v, want ErrUnknownTag", err)
	}
	if _, err := c.Answer("nope", callerTag, calleeTag, []byte(offer), netip.Addr{}, nil); !errors.Is(err, ErrUnknownCall) {
		t.Errorf("answer for an unknown call: %v, want ErrUnknownCall", err)
	}
	// Early media from one fork, then the answer of another: the last
	// branch is followed.
	if _, err := c.Answer(cid, callerTag, "fork1", []byte(sdp("192.0.2.30", 1, audio(30000))), netip.Addr{}, nil); err != nil {
		t.Fatal(err)
	}
	ans, err := c.Answer(cid, callerTag, calleeTag, []byte(sdp("192.0.2.20", 1, audio(20000))), netip.Addr{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pointsAt(t, ans, 0, sp.A)
	if p, _ := f.peer(cid, 0, relay.SideB); p.rtp != netip.MustParseAddrPort("192.0.2.20:20000") {
		t.Errorf("side B peer %v, want the answer's", p.rtp)
	}
	// Re-offer from the caller with a new port.
	if _, err := c.Offer(cid, callerTag, []byte(sdp("192.0.2.10", 2, audio(10002))), sig, nil); err != nil {
		t.Fatal(err)
	}
	if p, _ := f.peer(cid, 0, relay.SideA); p.rtp != netip.MustParseAddrPort("192.0.2.10:10002") {
		t.Errorf("side A peer %v after re-offer", p.rtp)
	}
	// Re-INVITE from the callee: its tag is the from-tag, the caller's the
	// to-tag of the answer.
	reo, err := c.Offer(cid, calleeTag, []byte(sdp("192.0.2.20", 2, audio(20004))), netip.Addr{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pointsAt(t, reo, 0, sp.A)
	if p, _ := f.peer(cid, 0, relay.SideB); p.rtp != netip.MustParseAddrPort("192.0.2.20:20004") {
		t.Errorf("side B peer %v after the callee's re-offer", p.rtp)
	}
	rea, err := c.Answer(cid, calleeTag, callerTag, []byte(sdp("192.0.2.10", 3, audio(10004))), netip.Addr{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pointsAt(t, rea, 0, sp.B)
	if p, _ := f.peer(cid, 0, relay.SideA); p.rtp != netip.MustParseAddrPort("192.0.2.10:10004") {
		t.Errorf("side A peer %v after answering the callee's re-offer", p.rtp)
	}
	if _, err := c.Offer(cid, "third", []byte(offer), sig, nil); !errors.Is(err, ErrUnknownTag) {
		t.Errorf("offer from a third tag: %v, want ErrUnknownTag", err)
	}
	ci, ok := c.Call(cid)
	if !ok || ci.Tags != [2]string{callerTag, calleeTag} || ci.Kinds[0] != (MediaKind{"audio", "RTP/AVP"}) || ci.Created.IsZero() || ci.LastSignal.Before(ci.Created) {
		t.Errorf("call info %+v %v", ci, ok)
	}
	if ids := c.CallIDs(0); len(ids) != 1 || ids[0] != cid {
		t.Errorf("call ids %v", ids)
	}
	if _, _, ok := c.Delete(cid, "test"); !ok || len(f.deleted) != 1 || c.Active() != 0 {
		t.Errorf("delete: ok %v, deleted %v, active %d", ok, f.deleted, c.Active())
	}
	if _, _, ok := c.Delete(cid, "test"); ok {
		t.Error("second delete found the call")
	}
}

// TestSIPFreeOfferFails: a bad first offer leaves no call behind, a
// draining relay is ErrUnavailable, and an offer needs a from-tag.
func TestSIPFreeOfferFails(t *testing.T) {
	c, f := newCtl(ModeAll)
	if _, err := c.Offer(cid, callerTag, []byte("not sdp"), netip.Addr{}, nil); err == nil {
		t.Fatal("bad sdp accepted")
	}
	if c.Active() != 0 || len(f.sessions) != 0 {
		t.Errorf("failed offer left %d calls, %d sessions", c.Active(), len(f.sessions))
	}
	if _, err := c.Offer(cid, "", []byte(sdp("192.0.2.10", 1, audio(10000))), netip.Addr{}, nil); !errors.Is(err, ErrNoTag) {
		t.Errorf("offer without from-tag: %v", err)
	}
	f.draining = true
	if _, err := c.Offer(cid, callerTag, []byte(sdp("192.0.2.10", 1, audio(10000))), netip.Addr{}, nil); !errors.Is(err, ErrUnavailable) {
		t.Errorf("offer while draining: %v, want ErrUnavailable", err)
	}
}
