package relay

import (
	"testing"
	"time"
)

// media handover with a kernel path: the flow the kernel holds is
// reprogrammed to the new source, and the userspace copy stays (the
// kernel passes the new source up as a wrong source, and only userspace
// re-latches); without the flag a locked flow ignores such a report and
// is handed off to the kernel alone.
func TestHandoverReprogramsTheKernel(t *testing.T) {
	for _, handover := range []bool{false, true} {
		h := newHarness(t, true, nil)
		aRTP, _, bRTP := learnCall(t, h)
		if err := h.e.SetSideOptions("c", SideA, SideOptions{Handover: handover}); err != nil {
			t.Fatal(err)
		}
		h.e.lock(aRTP, annA)
		h.e.lock(bRTP, annB)
		h.step(2 * time.Second) // past HandoffDelay
		_, inSlow := h.s.flow(aRTP)
		if inSlow != handover {
			t.Fatalf("handover %v: A→B in userspace after the handoff %v", handover, inSlow)
		}
		if f, _ := h.k.flow(aRTP); f.Handover != handover || f.Learning || f.Peer != annA {
			t.Fatalf("handover %v: kernel A→B = %+v", handover, f)
		}
		h.e.lock(aRTP, natA) // what userspace reports when A moved
		want := annA
		if handover {
			want = natA
		}
		if f, _ := h.k.flow(aRTP); f.Peer != want {
			t.Fatalf("handover %v: kernel A→B accepts %s, want %s", handover, f.Peer, want)
		}
		if f, _ := h.k.flow(bRTP); f.Dst != want {
			t.Fatalf("handover %v: kernel B→A goes to %s, want %s", handover, f.Dst, want)
		}
	}
}

// NAT-wait with a kernel path: what goes to B stays out of the kernel
// (held in userspace, which learns but drops) until B's own packets
// latched; then it goes to the kernel as any flow.
func TestNATWaitKeepsTheFlowOutOfTheKernel(t *testing.T) {
	h := newHarness(t, true, nil)
	aRTP, _, bRTP := learnCall(t, h)
	if err := h.e.SetSideOptions("c", SideB, SideOptions{NATWait: true}); err != nil {
		t.Fatal(err)
	}
	h.e.lock(aRTP, annA)
	if _, ok := h.k.flow(aRTP); ok {
		t.Fatal("A→B in the kernel before B sent")
	}
	if f, ok := h.s.flow(aRTP); !ok || !f.Hold || f.Learning {
		t.Fatalf("userspace A→B = %+v (installed %v), want locked and held", f, ok)
	}
	if fi := flowInfo(t, h, aRTP); fi.KernelError == "" {
		t.Fatalf("listing of A→B does not say why it is not in the kernel: %+v", fi)
	}
	// A's side did not ask: B→A is not held.
	if f, _ := h.s.flow(bRTP); f.Hold {
		t.Fatalf("B→A held: %+v", f)
	}
	h.e.report(bRTP, annB, false) // B's first packet, provisional
	f, ok := h.k.flow(aRTP)
	if !ok || f.Hold || f.Dst != annB {
		t.Fatalf("kernel A→B after B sent = %+v (installed %v)", f, ok)
	}
	// Clearing the flag on a call that never heard from A changes its
	// flows at once.
	if err := h.e.SetSideOptions("c", SideA, SideOptions{NATWait: true}); err != nil {
		t.Fatal(err)
	}
	if err := h.e.SetSideOptions("c", SideA, SideOptions{}); err != nil {
		t.Fatal(err)
	}
	if f, _ := h.s.flow(bRTP); f.Hold {
		t.Fatalf("B→A still held after A's flag went: %+v", f)
	}
}

// endpoint-learning reaches the sender's flows; off makes the receiver's
// destination its SDP address, like asymmetric.
func TestLearnModeReachesTheFlows(t *testing.T) {
	h := newHarness(t, true, nil)
	aRTP, _, bRTP := learnCall(t, h)
	if err := h.e.SetSideOptions("c", SideA, SideOptions{Learning: LearnImmediate}); err != nil {
		t.Fatal(err)
	}
	if f, _ := h.s.flow(aRTP); f.Learn != LearnImmediate || !f.Learning {
		t.Fatalf("A→B = %+v, want learning immediate", f)
	}
	if f, _ := h.s.flow(bRTP); f.Learn != LearnHeuristic {
		t.Fatalf("B→A learns %s, want heuristic (B did not ask)", f.Learn)
	}
	h.e.lock(aRTP, natA)
	if f, _ := h.s.flow(bRTP); f.Dst != natA {
		t.Fatalf("B→A to %s, want the latched %s", f.Dst, natA)
	}
	if err := h.e.SetSideOptions("c", SideA, SideOptions{Learning: LearnOff}); err != nil {
		t.Fatal(err)
	}
	if f, _ := h.s.flow(bRTP); f.Dst != annA {
		t.Fatalf("B→A with learning off to %s, want A's SDP address %s", f.Dst, annA)
	}
	for _, s := range []string{"heuristic", "immediate", "delayed", "off"} {
		if m, ok := ParseLearnMode(s); !ok || m.String() != s {
			t.Errorf("ParseLearnMode(%q) = %v, %v", s, m, ok)
		}
	}
	if _, ok := ParseLearnMode("always"); ok {
		t.Error("ParseLearnMode accepted an unknown value")
	}
}
