package media

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"sipxdp/relay"
)

// TestForkBranches: two branches of one call (two via-branches) keep
// their streams apart in the relay session; a branch's re-offer and
// answer move only its own peers; deleting the oldest branch removes its
// streams alone and the other takes the call's place, still found by
// its tag and via-branch, and saved (State) and restored at its base.
func TestForkBranches(t *testing.T) {
	c, f := newCtl(ModeAll)
	offer := []byte(sdp("192.0.2.10", 1, audio(10000)))
	o := func(via string) *Options { return &Options{ViaBranch: via} }
	if _, err := c.Offer(cid, callerTag, offer, netip.Addr{}, o("b1")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Offer(cid, callerTag, offer, netip.Addr{}, o("b2")); err != nil {
		t.Fatal(err)
	}
	b1, ok1 := f.ports(cid, 0)
	b2, ok2 := f.ports(cid, branchStride)
	if !ok1 || !ok2 || b1 == b2 {
		t.Fatalf("branch streams %v (%v) and %v (%v): want two, apart", b1, ok1, b2, ok2)
	}
	ans2, err := c.Answer(cid, callerTag, "t2", []byte(sdp("192.0.2.22", 1, audio(22000))), netip.Addr{}, o("b2"))
	if err != nil {
		t.Fatal(err)
	}
	pointsAt(t, ans2, 0, b2.A)
	if _, err := c.Answer(cid, callerTag, "t1", []byte(sdp("192.0.2.21", 1, audio(21000))), netip.Addr{}, o("b1")); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		index int
		peer  string
	}{{0, "192.0.2.21:21000"}, {branchStride, "192.0.2.22:22000"}} {
		if p, ok := f.peer(cid, w.index, relay.SideB); !ok || p.rtp.String() != w.peer {
			t.Errorf("stream %d callee peer %v, want %s", w.index, p.rtp, w.peer)
		}
	}
	// The callee of branch 2 re-offers (its tag as from-tag): branch 2's
	// callee side moves, branch 1's does not.
	if _, err := c.Offer(cid, "t2", []byte(sdp("192.0.2.22", 2, audio(22002))), netip.Addr{}, nil); err != nil {
		t.Fatal(err)
	}
	if p, _ := f.peer(cid, branchStride, relay.SideB); p.rtp.Port() != 22002 {
		t.Errorf("branch 2's re-offer: its callee peer %v, want port 22002", p.rtp)
	}
	if p, _ := f.peer(cid, 0, relay.SideB); p.rtp.Port() != 21000 {
		t.Errorf("branch 2's re-offer moved branch 1's callee peer to %v", p.rtp)
	}

	d, ok := c.DeleteBranch(cid, BranchRef{FromTag: "t1"}, "test")
	if !ok || d.Whole || len(d.Branches) != 1 || d.Branches[0].Tag != "t1" || d.Branches[0].ViaBranch != "b1" {
		t.Fatalf("delete of branch 1: %+v, %v", d, ok)
	}
	if !slices.Equal(f.removed, []int{0}) || len(f.deleted) != 0 {
		t.Errorf("removed %v, deleted sessions %v: want stream 0 only", f.removed, f.deleted)
	}
	ci, ok := c.Call(cid)
	if !ok || ci.Tags != [2]string{callerTag, "t2"} || len(ci.Branches) != 1 || ci.Branches[0].Base != branchStride {
		t.Fatalf("call after branch 1 went: %+v, %v", ci, ok)
	}
	if whole, ok := c.Deletes(cid, BranchRef{FromTag: callerTag, ViaBranch: "b2"}); !ok || !whole {
		t.Errorf("delete of the last branch by via-branch: whole %v ok %v, want the call", whole, ok)
	}

	state, ok := c.State(cid)
	if !ok {
		t.Fatal("no state")
	}
	c2, f2 := newCtl(ModeAll)
	if err := c2.Restore(cid, state, ci.Created); err != nil {
		t.Fatal(err)
	}
	if _, ok := f2.ports(cid, branchStride); !ok {
		t.Errorf("restored streams %v: want branch 2's at %d", f2.sessions[cid], branchStride)
	}
}

// TestForkSetupFailure: a new branch whose offer fails (no ports) leaves
// nothing behind and the call's other branch as it was.
func TestForkSetupFailure(t *testing.T) {
	c, f := newCtl(ModeAll)
	offer := []byte(sdp("192.0.2.10", 1, audio(10000)))
	if _, err := c.Offer(cid, callerTag, offer, netip.Addr{}, &Options{ViaBranch: "b1"}); err != nil {
		t.Fatal(err)
	}
	f.exhausted = true
	if _, err := c.Offer(cid, callerTag, offer, netip.Addr{}, &Options{ViaBranch: "b2"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("offer of a branch without ports: %v, want ErrUnavailable", err)
	}
	ci, ok := c.Call(cid)
	if !ok || len(ci.Branches) != 1 || ci.Branches[0].ViaBranch != "b1" {
		t.Errorf("call after the failed branch: %+v, %v", ci, ok)
	}
	if _, ok := f.ports(cid, 0); !ok {
		t.Error("branch 1's stream went with the failed branch")
	}
}

// TestForkRestore: State keeps every branch of a forked call (a standby
// of ng.redis, or a restart, gets them all back at their relay indexes,
// found by via-branch and tag as before); a record of more branches than
// the bound is refused.
func TestForkRestore(t *testing.T) {
	c, f := newCtl(ModeAll)
	offerBranches(t, c, "b1", "b2")
	if _, err := c.Answer(cid, callerTag, "t2", []byte(sdp("192.0.2.22", 1, audio(22000))), netip.Addr{}, &Options{ViaBranch: "b2"}); err != nil {
		t.Fatal(err)
	}
	b2, _ := f.ports(cid, branchStride)
	state, ok := c.State(cid)
	if !ok {
		t.Fatal("no state")
	}
	c2, f2 := newCtl(ModeAll)
	if err := c2.Restore(cid, state, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, idx := range []int{0, branchStride} {
		if _, ok := f2.ports(cid, idx); !ok {
			t.Errorf("restored streams %v: want one at %d", f2.sessions[cid], idx)
		}
	}
	// The restored call still tells its branches apart.
	ans, err := c2.Answer(cid, callerTag, "t2", []byte(sdp("192.0.2.22", 2, audio(22000))), netip.Addr{}, &Options{ViaBranch: "b2"})
	if err != nil {
		t.Fatal(err)
	}
	pointsAt(t, ans, 0, b2.A)
	if d, ok := c2.DeleteBranch(cid, BranchRef{FromTag: callerTag, ViaBranch: "b1"}, "test"); !ok || d.Whole {
		t.Errorf("restored call's branch delete: %+v, %v", d, ok)
	}

	c3, _ := newCtl(ModeAll)
	c3.cfg.MaxBranches = 1
	if err := c3.Restore(cid, state, time.Now()); !errors.Is(err, ErrTooManyBranches) {
		t.Errorf("restore of 2 branches with a bound of 1: %v, want ErrTooManyBranches", err)
	}
}

// FuzzRestore: a saved call (read back from the dialog store or Redis)
// never panics Restore, and what Restore took is saved again as a state
// a fresh controller restores too.
func FuzzRestore(f *testing.F) {
	c, _ := newCtl(ModeAll)
	offerBranches(f, c, "b1", "b2")
	if state, ok := c.State(cid); ok {
		f.Add(state)
	}
	f.Add([]byte(`{"caller_tag":"a","forks":[{"base":65536,"streams":[{"index":0}]},{"base":65536}]}`))
	f.Fuzz(func(t *testing.T, state []byte) {
		c, _ := newCtl(ModeAll)
		if err := c.Restore(cid, state, time.Now()); err != nil {
			return
		}
		again, ok := c.State(cid)
		if !ok {
			t.Fatal("restored call has no state")
		}
		c2, _ := newCtl(ModeAll)
		if err := c2.Restore(cid, again, time.Now()); err != nil {
			t.Fatalf("state of a restored call does not restore: %v\n%s", err, again)
		}
	})
}

// offerBranches offers the caller's SDP once per via-branch.
func offerBranches(tb testing.TB, c *Controller, vias ...string) {
	tb.Helper()
	offer := []byte(sdp("192.0.2.10", 1, audio(10000)))
	for _, via := range vias {
		if _, err := c.Offer(cid, callerTag, offer, netip.Addr{}, &Options{ViaBranch: via}); err != nil {
			tb.Fatal(err)
		}
	}
}
