package relay

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var (
	annA  = netip.MustParseAddrPort("203.0.113.10:5000")
	annB  = netip.MustParseAddrPort("203.0.113.20:6000")
	sigA  = netip.MustParseAddr("198.51.100.10") // where A's SIP comes from
	natA  = netip.MustParseAddrPort("198.51.100.10:61000")
	strgr = netip.MustParseAddrPort("192.0.2.99:7000")
)

// learnCall is a call whose offer and answer are in: A→B and B→A learn.
func learnCall(t *testing.T, h *harness) (aRTP, aRTCP, bRTP netip.AddrPort) {
	t.Helper()
	p := h.call(t, "c", def, def)
	if err := h.e.SetSignal("c", SideA, sigA); err != nil {
		t.Fatal(err)
	}
	h.setPeer(t, "c", SideA, annA.String(), false)
	h.setPeer(t, "c", SideB, annB.String(), false)
	return ap(p.A.Local, p.A.RTP), ap(p.A.Local, p.A.RTCP), ap(p.B.Local, p.B.RTP)
}

// The flows the slow path gets carry what it ranks sources by.
func TestLearningFlowFields(t *testing.T) {
	h := newHarness(t, true, nil)
	p := h.call(t, "c", def, def)
	bRTP := ap(p.B.Local, p.B.RTP)
	if err := h.e.SetSignal("c", SideB, netip.MustParseAddr("203.0.113.21")); err != nil {
		t.Fatal(err)
	}
	h.setPeer(t, "c", SideA, annA.String(), false)
	// B has not answered: its flow has no window and takes no candidate,
	// only its signaling address.
	f, _ := h.s.flow(bRTP)
	if !f.Learning || f.Announced.IsValid() || !f.LearnUntil.IsZero() || !f.NoCandidates ||
		f.Hints[0] != netip.MustParseAddr("203.0.113.21") {
		t.Fatalf("B→A before the answer = %+v", f)
	}
	t0 := h.clk.Now()
	h.setPeer(t, "c", SideB, annB.String(), false)
	f, _ = h.s.flow(bRTP)
	if f.Announced != annB || f.Peer != annB || f.Rank != RankNone || !f.LearnUntil.Equal(t0.Add(3*time.Second)) ||
		f.NoCandidates {
		t.Fatalf("B→A after the answer = %+v; want learning against %s until %v", f, annB, t0.Add(3*time.Second))
	}
	if f, _ := h.s.flow(ap(p.B.Local, p.B.RTCP)); !f.NoCandidates || f.Announced.Port() != annB.Port()+1 {
		t.Fatalf("B→A RTCP = %+v; want no candidates", f)
	}
	// The kernel gets a learning copy, and is not touched again while
	// only the learning details change.
	n := h.k.upserts()
	h.clk.Advance(time.Second)
	if err := h.e.SetSignal("c", SideA, sigA); err != nil {
		t.Fatal(err)
	}
	if h.k.upserts() != n {
		t.Fatal("a new learning window re-installed kernel flows")
	}
	if f, _ := h.s.flow(bRTP); !f.LearnUntil.Equal(h.clk.Now().Add(3 * time.Second)) {
		t.Fatalf("B→A window after new signaling ends %v, want %v", f.LearnUntil, h.clk.Now().Add(3*time.Second))
	}
}

// A provisional latch points the other direction at the source at once
// (NATed phones hear audio from their first packets); a candidate does
// not (an attacker's gets nothing); a lock goes to the kernel.
func TestLatchPhases(t *testing.T) {
	h := newHarness(t, true, nil)
	aRTP, aRTCP, bRTP := learnCall(t, h)

	h.e.report(aRTP, strgr, false) // a candidate
	if f, _ := h.s.flow(bRTP); f.Dst != annA {
		t.Fatalf("B→A Dst = %s after a candidate, want the announced %s", f.Dst, annA)
	}
	if fi := flowInfo(t, h, aRTP); fi.Latch != LatchLearning || fi.Rank != RankOther {
		t.Fatalf("A→B with a candidate: %q %s", fi.Latch, fi.Rank)
	}

	h.e.report(aRTP, natA, false) // from A's signaling address
	for _, dp := range []*fakePath{h.s, h.k} {
		if f, _ := dp.flow(bRTP); f.Dst != natA {
			t.Fatalf("%s B→A Dst = %s after a provisional latch, want %s", dp.name, f.Dst, natA)
		}
	}
	if f, _ := h.k.flow(aRTP); !f.Learning {
		t.Fatal("a provisional latch went to the kernel as locked")
	}
	if fi := flowInfo(t, h, aRTP); fi.Latch != LatchProvisional || fi.Rank != RankIP {
		t.Fatalf("A→B provisional: %q %s", fi.Latch, fi.Rank)
	}
	// RTCP from the RTP's host is trusted.
	if f, _ := h.s.flow(aRTCP); f.Hints[1] != natA.Addr() {
		t.Fatalf("A→B RTCP hints %v, want the RTP source's IP %s", f.Hints, natA.Addr())
	}
	// A lower rank after that changes nothing.
	h.e.report(aRTP, strgr, false)
	if f, _ := h.s.flow(bRTP); f.Dst != natA {
		t.Fatalf("B→A Dst = %s after a stale candidate", f.Dst)
	}

	h.e.report(aRTP, natA, true) // the window closed
	if f, _ := h.k.flow(aRTP); f.Learning || f.Peer != natA {
		t.Fatalf("kernel A→B after the lock = %+v", f)
	}
	// Nothing moves a locked latch but a new offer.
	h.e.report(aRTP, annA, true)
	if f, _ := h.k.flow(aRTP); f.Peer != natA {
		t.Fatalf("locked A→B moved to %s", f.Peer)
	}
	si, _ := h.e.Session("c")
	if l := si.Streams[0].A.RTPLatch; !l.Locked || l.Source != natA || l.Rank != RankIP {
		t.Fatalf("saved latch = %+v", l)
	}
	if si.Streams[0].A.Signal != sigA || si.Streams[0].A.LatchedRTP != natA {
		t.Fatalf("leg info = %+v", si.Streams[0].A)
	}
}

func flowInfo(t *testing.T, h *harness, local netip.AddrPort) FlowInfo {
	t.Helper()
	for _, fi := range h.e.Flows() {
		if fi.Local == local {
			return fi
		}
	}
	t.Fatalf("no flow at %s", local)
	return FlowInfo{}
}

// A new offer with a changed address forgets the lock and learns again;
// the same address keeps it; reports from before the change are stale.
func TestRelatchOnSetPeer(t *testing.T) {
	h := newHarness(t, true, nil)
	aRTP, _, bRTP := learnCall(t, h)
	h.e.lock(aRTP, annA)
	moved := netip.MustParseAddrPort("203.0.113.11:7000")
	staleAnnounced := LatchEvent{Key: FlowKey{aRTP}, Latch: Latch{Source: strgr, Rank: RankOther, Locked: true}, Announced: annA}

	h.setPeer(t, "c", SideA, annA.String(), false)
	if f, _ := h.k.flow(aRTP); f.Learning || f.Peer != annA {
		t.Fatalf("unchanged offer: A→B = %+v, want still locked", f)
	}
	t1 := h.clk.Advance(time.Minute)
	h.setPeer(t, "c", SideA, moved.String(), false)
	f, _ := h.s.flow(aRTP)
	if !f.Learning || f.Announced != moved || f.Rank != RankNone || !f.LearnUntil.Equal(t1.Add(3*time.Second)) {
		t.Fatalf("changed offer: A→B = %+v, want learning against %s", f, moved)
	}
	if f, _ := h.s.flow(bRTP); f.Dst != moved {
		t.Fatalf("B→A Dst = %s, want %s", f.Dst, moved)
	}
	h.e.latch(staleAnnounced)
	if f, _ := h.s.flow(aRTP); f.Rank != RankNone {
		t.Fatalf("a report about the old address latched %+v", f)
	}
	h.e.lock(aRTP, moved)
	if f, _ := h.k.flow(aRTP); f.Learning || f.Peer != moved {
		t.Fatalf("relatched A→B = %+v", f)
	}
}

// Strict mode: no hints, no candidates, nothing before the side announced.
func TestStrictLearning(t *testing.T) {
	h := newHarness(t, false, func(c *Config) { c.Strict = true })
	p := h.call(t, "c", def, def)
	if err := h.e.SetSignal("c", SideA, sigA); err != nil {
		t.Fatal(err)
	}
	h.setPeer(t, "c", SideA, annA.String(), false)
	if _, ok := h.s.flow(ap(p.B.Local, p.B.RTP)); ok {
		t.Fatal("strict: B→A installed before B announced")
	}
	h.setPeer(t, "c", SideB, annB.String(), false)
	f, _ := h.s.flow(ap(p.A.Local, p.A.RTP))
	if !f.Strict || !f.NoCandidates || f.Hints != ([2]netip.Addr{}) {
		t.Fatalf("strict A→B = %+v", f)
	}
}

// The window is configurable; signaling opens it again for flows not yet
// locked, and never unlocks a locked one.
func TestLearnWindow(t *testing.T) {
	h := newHarness(t, false, func(c *Config) { c.LearnWindow = 500 * time.Millisecond })
	aRTP, _, bRTP := learnCall(t, h)
	t0 := h.clk.Now()
	if f, _ := h.s.flow(aRTP); !f.LearnUntil.Equal(t0.Add(500 * time.Millisecond)) {
		t.Fatalf("window ends %v, want %v", f.LearnUntil, t0.Add(500*time.Millisecond))
	}
	h.e.lock(bRTP, annB)
	t1 := h.clk.Advance(10 * time.Second)
	if err := h.e.SetSignal("c", SideB, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	if f, _ := h.s.flow(aRTP); !f.LearnUntil.Equal(t1.Add(500 * time.Millisecond)) {
		t.Fatalf("window after a 2xx ends %v, want %v", f.LearnUntil, t1.Add(500*time.Millisecond))
	}
	if f, _ := h.s.flow(bRTP); f.Learning || f.Peer != annB {
		t.Fatalf("signaling unlocked B→A: %+v", f)
	}
	if err := h.e.SetSignal("nope", SideA, sigA); err == nil {
		t.Fatal("SetSignal of an unknown call accepted")
	}
}

// A latch saved from Session and given back with SetLatch (what a restart
// does) restores the flow exactly, learning or locked; bad ones are
// refused.
func TestSetLatchRestores(t *testing.T) {
	h := newHarness(t, true, nil)
	aRTP, _, bRTP := learnCall(t, h)
	h.e.report(aRTP, natA, false)
	h.e.lock(bRTP, annB)
	si, _ := h.e.Session("c")
	saved, err := json.Marshal(si.Streams[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(saved), `"rank":"ip"`) {
		t.Fatalf("saved latch is not readable: %s", saved)
	}

	// A new engine, the same SDP and signaling, then the saved latches.
	h2 := newHarness(t, true, nil)
	p2 := h2.call(t, "c", def, def)
	var st StreamInfo
	if err := json.Unmarshal(saved, &st); err != nil {
		t.Fatal(err)
	}
	if err := h2.e.SetSignal("c", SideA, st.A.Signal); err != nil {
		t.Fatal(err)
	}
	h2.setPeer(t, "c", SideA, st.A.PeerRTP.String(), false)
	h2.setPeer(t, "c", SideB, st.B.PeerRTP.String(), false)
	for _, r := range []struct {
		side Side
		l    Latch
	}{{SideA, st.A.RTPLatch}, {SideB, st.B.RTPLatch}} {
		if err := h2.e.SetLatch("c", 0, r.side, false, r.l); err != nil {
			t.Fatal(err)
		}
	}
	a2, b2 := ap(p2.A.Local, p2.A.RTP), ap(p2.B.Local, p2.B.RTP)
	if f, _ := h2.s.flow(a2); !f.Learning || f.Peer != natA || f.Rank != RankIP || !f.LearnUntil.Equal(st.A.RTPLatch.Until) {
		t.Fatalf("restored A→B = %+v, want provisional on %s until %v", f, natA, st.A.RTPLatch.Until)
	}
	if f, _ := h2.k.flow(b2); f.Learning || f.Peer != annB {
		t.Fatalf("restored B→A = %+v, want locked to %s", f, annB)
	}
	if f, _ := h2.s.flow(b2); f.Dst != natA {
		t.Fatalf("restored B→A Dst = %s, want the provisional %s", f.Dst, natA)
	}
	for _, bad := range []Latch{
		{Rank: RankNone, Locked: true},
		{Rank: RankIP},
		{Rank: 9, Source: natA},
	} {
		if err := h2.e.SetLatch("c", 0, SideA, false, bad); err == nil {
			t.Errorf("SetLatch(%+v) accepted", bad)
		}
	}
	if err := h2.e.SetLatch("c", 3, SideA, false, Latch{}); err == nil {
		t.Error("SetLatch of an unknown stream accepted")
	}
}

func TestRankText(t *testing.T) {
	for r := RankNone; r <= RankExact; r++ {
		b, err := r.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back Rank
		if err := back.UnmarshalText(b); err != nil || back != r {
			t.Fatalf("%s: round trip %v, %v", r, back, err)
		}
	}
	var r Rank
	if err := r.UnmarshalText([]byte("best")); err == nil {
		t.Fatal("unknown rank accepted")
	}
}

// When the window closes the engine locks what was latched, without
// waiting for another packet, and asks the slow path first (its reports
// may still be queued); a direction that latched nothing stays open.
func TestWindowCloseLocks(t *testing.T) {
	h := newHarness(t, true, nil)
	aRTP, aRTCP, bRTP := learnCall(t, h)
	h.e.report(aRTP, strgr, false) // a candidate
	h.step(time.Second)
	if f, _ := h.k.flow(aRTP); !f.Learning {
		t.Fatal("locked before the window closed")
	}
	h.step(2*time.Second + time.Millisecond)
	if f, _ := h.k.flow(aRTP); f.Learning || f.Peer != strgr {
		t.Fatalf("A→B after the window = %+v; want the candidate locked, nothing better came", f)
	}
	if f, _ := h.k.flow(bRTP); !f.Learning || f.Dst != strgr {
		t.Fatalf("B→A after the window = %+v; want learning (nothing came) and sending to the locked source", f)
	}
	if f, _ := h.s.flow(aRTCP); !f.Learning {
		t.Fatal("RTCP that latched nothing was locked")
	}
	if n := h.e.Stats().WindowLocks; n != 1 {
		t.Fatalf("WindowLocks = %d, want 1", n)
	}

	// The slow path saw better than the engine heard of.
	s := newFakePath("userspace")
	ps := peerSlow{fakeSlow{s}, map[FlowKey]netip.AddrPort{}}
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	e, err := NewEngine(Config{Addresses: testAddresses(), Logger: discardLogger(), ProcDir: t.TempDir(), Now: clk.Now},
		nil, ps, "")
	if err != nil {
		t.Fatal(err)
	}
	h2 := &harness{e: e, s: s, clk: clk}
	aRTP, _, _ = learnCall(t, h2)
	e.report(aRTP, strgr, false)
	ps.latched[FlowKey{aRTP}] = natA
	h2.step(3*time.Second + time.Millisecond)
	if f, _ := s.flow(aRTP); f.Learning || f.Peer != natA {
		t.Fatalf("A→B = %+v; want locked to what the slow path held (%s)", f, natA)
	}
	if n := e.Stats().WindowLocks; n != 0 {
		t.Fatalf("WindowLocks = %d for a lock the slow path made and counted", n)
	}
}
