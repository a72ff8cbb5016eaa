package media

import (
	"encoding/json"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/relay"
)

// A relayed call saved when it was answered is relayed again by a new
// controller (a restarted sipd): the same ports and peers, the saved
// dialog for the media-timeout BYEs, a re-INVITE rewritten to the same
// relay ports, and a BYE in the call's dialog ends it.
func TestStateRestore(t *testing.T) {
	c, f := newCtl(ModeAll)
	inv := invite(t, sdp("192.0.2.10", 1, audio(10000), video(10002)))
	inv.SetSource("192.0.2.10:5060")
	if err := c.Invite(inv, netip.MustParseAddr("192.0.2.20"), ""); err != nil {
		t.Fatal(err)
	}
	ok200 := response(t, 200, true, "INVITE", sdp("192.0.2.20", 1, audio(20000, "rtcp-mux"), video(0)))
	ok200.SetSource("192.0.2.20:5060")
	c.Response(ok200)
	before, _ := f.ports(cid, 0)
	st, ok := c.State(cid)
	if !ok {
		t.Fatal("no state for a relayed call")
	}
	if _, ok := c.State("nobody"); ok {
		t.Error("state for a call that is not relayed")
	}
	if !json.Valid(st) {
		t.Fatalf("state is not JSON: %s", st)
	}

	c2, f2 := newCtl(ModeAll)
	since := time.Unix(1_700_000_000, 0)
	if err := c2.Restore(cid, st, since); err != nil {
		t.Fatal(err)
	}
	if err := c2.Restore(cid, st, since); err == nil {
		t.Error("restoring a call twice was accepted")
	}
	after, ok := f2.ports(cid, 0)
	if !ok || after != before {
		t.Fatalf("restored ports %+v, want %+v", after, before)
	}
	if _, ok := f2.ports(cid, 1); ok {
		t.Error("the rejected video stream came back")
	}
	if p, _ := f2.peer(cid, 0, relay.SideB); p.rtp != netip.MustParseAddrPort("192.0.2.20:20000") || !p.mux {
		t.Errorf("side B restored as %+v, want 192.0.2.20:20000 with rtcp-mux", p)
	}
	if p, _ := f2.peer(cid, 0, relay.SideA); p.rtp != netip.MustParseAddrPort("192.0.2.10:10000") || p.mux {
		t.Errorf("side A restored as %+v", p)
	}
	if !f2.restoredSince.Equal(since) {
		t.Errorf("restored since %v, want %v", f2.restoredSince, since)
	}
	if sig := f2.signaled(); !slices.Contains(sig, cid+" A 192.0.2.10") || !slices.Contains(sig, cid+" B 192.0.2.20") {
		t.Errorf("signaling hints after restore: %q", sig)
	}
	// The saved dialog is what the media-timeout BYEs are built from.
	c2.mu.Lock()
	d := c2.calls[cid].dialog
	c2.mu.Unlock()
	if d.Invite == nil || d.OK == nil || d.Invite.Source() != "192.0.2.10:5060" || d.OK.Source() != "192.0.2.20:5060" ||
		d.OK.To().Params.GetOr("tag", "") != calleeTag || d.Invite.GetHeader("Contact") == nil {
		t.Fatalf("restored dialog %v / %v", d.Invite, d.OK)
	}
	// A re-INVITE from the caller after the restart goes to the same relay
	// leg, not to the caller's own address.
	reinv := inDialog(t, "INVITE", true, 2, sdp("192.0.2.10", 2, audio(10004)))
	if err := c2.Request(reinv); err != nil {
		t.Fatal(err)
	}
	checkPoints(t, reinv, 0, before.B)
	if p, _ := f2.peer(cid, 0, relay.SideA); p.rtp != netip.MustParseAddrPort("192.0.2.10:10004") {
		t.Errorf("side A after the re-INVITE: %v", p.rtp)
	}
	// A BYE outside the dialog changes nothing; the call's own ends it.
	c2.Request(build(t, "BYE sip:x@192.0.2.20 SIP/2.0", callerTag, "forged", "3 BYE", "").(*sip.Request))
	if c2.Active() != 1 || slices.Contains(f2.deleted, cid) {
		t.Error("a BYE with a forged tag ended the restored call")
	}
	if err := c2.Request(inDialog(t, "BYE", false, 3, "")); err != nil || !slices.Contains(f2.deleted, cid) {
		t.Fatalf("BYE after restore: %v, deleted %v", err, f2.deleted)
	}
	// Bad state is refused with a clear error, and nothing is left.
	for _, bad := range []string{`not json`, `{"caller_tag":"x","invite":{"text":"garbage"}}`} {
		if err := c2.Restore("bad", []byte(bad), since); err == nil {
			t.Errorf("state %q restored", bad)
		}
	}
	if _, ok := f2.ports("bad", 0); ok || c2.Active() != 0 {
		t.Error("a refused restore left a session")
	}
}

// The per-call NG options (options.go) are saved with the call and given
// back to the engine of a restarted sipd: each side's label and options,
// and the call's TOS.
func TestStateRestoreCallOptions(t *testing.T) {
	c, _ := newCtl(ModeAll)
	ef := relay.TOS{Set: true, Value: 0xb8}
	if _, err := c.Offer("ng", "a", []byte(sdp("192.0.2.10", 1, audio(10000))), netip.Addr{},
		&Options{Label: "caller", Asymmetric: true, TOS: ef}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Answer("ng", "a", "b", []byte(sdp("192.0.2.20", 1, audio(20000))), netip.Addr{},
		&Options{Label: "callee"}); err != nil {
		t.Fatal(err)
	}
	st, ok := c.State("ng")
	if !ok {
		t.Fatal("no state")
	}
	c2, f2 := newCtl(ModeAll)
	if err := c2.Restore("ng", st, time.Now()); err != nil {
		t.Fatal(err)
	}
	ci, _ := c2.Call("ng")
	if ci.Labels != [2]string{"caller", "callee"} {
		t.Errorf("restored labels %q", ci.Labels)
	}
	if got := f2.sideOpts["ng"]; got != [2]relay.SideOptions{{Asymmetric: true}, {}} {
		t.Errorf("restored side options %+v", got)
	}
	if got := f2.tos["ng"]; got != ef {
		t.Errorf("restored tos %v, want %v", got, ef)
	}
}
