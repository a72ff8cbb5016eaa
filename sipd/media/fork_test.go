package media

import (
	"encoding/json"
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
	// Branch 2's callee gives a label and is asymmetric: its branch's
	// options, saved with it.
	if _, err := c.Answer(cid, callerTag, "t2", []byte(sdp("192.0.2.22", 1, audio(22000))), netip.Addr{},
		&Options{ViaBranch: "b2", Label: "bob2", Asymmetric: true}); err != nil {
		t.Fatal(err)
	}
	b2, _ := f.ports(cid, branchStride)
	state, ok := c.State(cid)
	if !ok {
		t.Fatal("no state")
	}
	var sc savedCall
	if err := json.Unmarshal(state, &sc); err != nil || len(sc.Forks) != 1 ||
		sc.Forks[0].Labels[relay.SideB] != "bob2" || !sc.Forks[0].SideOpts[relay.SideB].Asymmetric || sc.SideOpts[relay.SideB].Asymmetric {
		t.Fatalf("saved state (%v) keeps no per-branch label and options: %s", err, state)
	}
	c2, f2 := newCtl(ModeAll)
	if err := c2.Restore(cid, state, time.Now()); err != nil {
		t.Fatal(err)
	}
	if again, _ := c2.State(cid); string(again) != string(state) {
		t.Errorf("state of the restored call:\n%s\nwant as saved:\n%s", again, state)
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

// TestForkInterfaces: each branch of a forked call puts its legs on the
// interfaces its opening offer's direction names (one branch per
// direction pair, as a proxy forking from one network to callees on
// several would ask); a branch whose offer names none, or one leg only,
// takes the call's choice for the rest; one branch's direction changes
// no other branch's. The choice is each branch's own in the saved state
// too: after State and Restore, a re-offer that adds a stream on a
// branch puts its legs on that branch's interfaces.
func TestForkInterfaces(t *testing.T) {
	ifaces := []relay.AddressConfig{
		{Name: "internal", Local: netip.MustParseAddr("10.0.0.1")},
		{Name: "external", Local: netip.MustParseAddr("192.0.2.1")},
		{Name: "priv", Local: netip.MustParseAddr("10.9.0.1")},
	}
	route := func(p netip.Addr) relay.LegSpec { return relay.LegSpec{Address: "route", Family: familyOf(p)} }
	type branch struct {
		via       string
		direction [2]string // the offer's
		want      [2]string // the interfaces of its legs A and B
	}
	for _, tc := range []struct {
		name     string
		branches []branch
	}{
		{"one branch per direction pair", []branch{
			{"b1", [2]string{"internal", "external"}, [2]string{"internal", "external"}},
			{"b2", [2]string{"internal", "priv"}, [2]string{"internal", "priv"}},
			{"b3", [2]string{"external", "internal"}, [2]string{"external", "internal"}},
		}},
		{"a branch without direction takes the call's", []branch{
			{"b1", [2]string{"internal", "external"}, [2]string{"internal", "external"}},
			{"b2", [2]string{}, [2]string{"internal", "external"}},
		}},
		{"a branch's to-interface alone: the caller's leg the call's", []branch{
			{"b1", [2]string{"internal", "external"}, [2]string{"internal", "external"}},
			{"b2", [2]string{"", "priv"}, [2]string{"internal", "priv"}},
		}},
		{"a branch's direction is not the call's", []branch{
			{"b1", [2]string{}, [2]string{"route", "route"}},
			{"b2", [2]string{"priv", "external"}, [2]string{"priv", "external"}},
			{"b3", [2]string{}, [2]string{"route", "route"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			c := New(Config{Mode: ModeAll, Engine: f, Interfaces: ifaces, Pick: route})
			one := []byte(sdp("192.0.2.10", 1, audio(10000)))
			for _, b := range tc.branches {
				if _, err := c.Offer(cid, callerTag, one, netip.Addr{}, &Options{ViaBranch: b.via, Direction: b.direction}); err != nil {
					t.Fatal(err)
				}
			}
			legs := func(f *fakeEngine, i int) [2]string {
				if i >= len(f.specs) {
					return [2]string{}
				}
				return [2]string{f.specs[i][0].Address, f.specs[i][1].Address}
			}
			for i, b := range tc.branches {
				if got := legs(f, i); got != b.want {
					t.Errorf("branch %s: legs on %q, want %q", b.via, got, b.want)
				}
			}

			state, ok := c.State(cid)
			if !ok {
				t.Fatal("no state")
			}
			f2 := newFake()
			c2 := New(Config{Mode: ModeAll, Engine: f2, Interfaces: ifaces, Pick: route})
			if err := c2.Restore(cid, state, time.Now()); err != nil {
				t.Fatal(err)
			}
			two := []byte(sdp("192.0.2.10", 2, audio(10000), video(10002)))
			for i, b := range tc.branches {
				if _, err := c2.Offer(cid, callerTag, two, netip.Addr{}, &Options{ViaBranch: b.via}); err != nil {
					t.Fatal(err)
				}
				if got := legs(f2, i); got != b.want {
					t.Errorf("branch %s after a restore: the added stream's legs on %q, want %q", b.via, got, b.want)
				}
			}
			if _, ok := f2.ports(cid, (len(tc.branches)-1)*branchStride+1); !ok {
				t.Errorf("restored streams %v: want the last branch's video", f2.sessions[cid])
			}
		})
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
	f.Add([]byte(`{"caller_tag":"a","interfaces":["internal","external"],"labels":["x",""],` +
		`"forks":[{"caller_tag":"a","base":65536,"via":"b2","interfaces":["internal","priv"],"domains":["a.example",""]}]}`))
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
