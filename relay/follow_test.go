package relay

import (
	"net/netip"
	"testing"
	"time"
)

// TestHoldKeepsFromTimeout: a held session (a standby's copy) is never
// timed out however long it is silent; released, it gets a whole
// timeout from the release before it is.
func TestHoldKeepsFromTimeout(t *testing.T) {
	h := newHarness(t, false, nil)
	timeout := h.cfg.MediaTimeout
	h.call(t, "c", def, def)
	h.setPeer(t, "c", SideA, "203.0.113.10:5000", false)
	h.setPeer(t, "c", SideB, "203.0.113.20:6000", false)
	if err := h.e.Hold("c", true); err != nil {
		t.Fatal(err)
	}
	h.step(3 * timeout)
	if len(h.e.pending) != 0 {
		t.Fatalf("held session timed out: %+v", h.e.pending)
	}
	if err := h.e.Hold("c", false); err != nil {
		t.Fatal(err)
	}
	h.step(timeout - time.Second)
	if len(h.e.pending) != 0 {
		t.Fatalf("released session timed out before a whole timeout: %+v", h.e.pending)
	}
	h.step(2 * time.Second)
	if len(h.e.pending) != 1 || h.e.pending[0].CallID != "c" {
		t.Fatalf("events %+v: want the released session's timeout", h.e.pending)
	}
	if err := h.e.Hold("nope", true); err == nil {
		t.Error("hold of an unknown session: no error")
	}
}

// TestOnLockReportsLocks: a lock, from the slow path or a learning
// window closing, is reported once per direction with the call's ID; a
// provisional latch is not.
func TestOnLockReportsLocks(t *testing.T) {
	h := newHarness(t, false, nil)
	var got []string
	h.e.SetOnLock(func(id string) { got = append(got, id) })
	p := h.call(t, "c", def, def)
	h.setPeer(t, "c", SideA, "203.0.113.10:5000", false)
	h.setPeer(t, "c", SideB, "203.0.113.20:6000", false)
	h.e.report(ap(p.A.Local, p.A.RTP), netip.MustParseAddrPort("203.0.113.10:5002"), false) // RankIP: provisional
	if len(got) != 0 {
		t.Fatalf("provisional latch reported as a lock: %v", got)
	}
	h.e.lock(ap(p.B.Local, p.B.RTP), netip.MustParseAddrPort("203.0.113.20:6000"))
	if len(got) != 1 || got[0] != "c" {
		t.Fatalf("lock reports %v: want [c]", got)
	}
	h.step(h.cfg.LearnWindow + 4*time.Second) // side A's window closes on its provisional source
	if len(got) != 2 {
		t.Fatalf("lock reports after the window %v: want two", got)
	}
	h.e.SetOnLock(nil)
	h.e.lock(ap(p.A.Local, p.A.RTCP), netip.MustParseAddrPort("203.0.113.10:5001"))
	if len(got) != 2 {
		t.Fatalf("reported after SetOnLock(nil): %v", got)
	}
}

// TestHoldKeepsUserspaceCopies: the locked flows of a held session stay
// in userspace beside the kernel past the handoff delay (a standby's XDP
// hook passes up what it cannot route yet); released, they are handed
// off one delay later.
func TestHoldKeepsUserspaceCopies(t *testing.T) {
	h := newHarness(t, true, nil)
	p := h.call(t, "c", def, def)
	h.setPeer(t, "c", SideA, "203.0.113.10:5000", true)
	h.setPeer(t, "c", SideB, "203.0.113.20:6000", true)
	if err := h.e.Hold("c", true); err != nil {
		t.Fatal(err)
	}
	h.e.lock(ap(p.A.Local, p.A.RTP), netip.MustParseAddrPort("203.0.113.10:5000"))
	h.e.lock(ap(p.B.Local, p.B.RTP), netip.MustParseAddrPort("203.0.113.20:6000"))
	if h.k.count() != 2 {
		t.Fatalf("kernel flows %d, want the 2 locked ones", h.k.count())
	}
	h.step(3 * h.cfg.HandoffDelay)
	if h.s.count() != 2 {
		t.Fatalf("userspace flows of a held session after the handoff delay: %d, want 2", h.s.count())
	}
	if err := h.e.Hold("c", false); err != nil {
		t.Fatal(err)
	}
	h.step(h.cfg.HandoffDelay / 2)
	if h.s.count() != 2 {
		t.Fatalf("handed off before the delay: %d userspace flows", h.s.count())
	}
	h.step(h.cfg.HandoffDelay)
	if h.s.count() != 0 || h.k.count() != 2 {
		t.Fatalf("after release and the delay: %d userspace, %d kernel flows; want 0 and 2", h.s.count(), h.k.count())
	}
}
