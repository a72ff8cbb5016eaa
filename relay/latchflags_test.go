package relay

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"
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

// sendingSlow is the fake slow path that records what it is asked to send.
type sendingSlow struct {
	fakeSlow
	sent []sent
}

type sent struct{ local, dst netip.AddrPort }

func (s *sendingSlow) SendFrom(local, dst netip.AddrPort, b []byte) error {
	if !bytes.Equal(b, pierceRTP) {
		return errors.New("not the pierce packet")
	}
	s.sent = append(s.sent, sent{local, dst})
	return nil
}

// pierce NAT (ng_control_protocol.md "pierce NAT"; call.c
// call_stream_state_machine): once a second, from the ports A sends to,
// to A's SDP addresses, while A's flows have not locked; B, which did not
// ask, gets nothing.
func TestPierceNAT(t *testing.T) {
	h := newHarness(t, true, nil)
	ss := &sendingSlow{fakeSlow: h.slow}
	h.e.slow = ss
	aRTP, aRTCP, _ := learnCall(t, h)
	h.step(time.Second)
	if len(ss.sent) != 0 {
		t.Fatalf("sent %v before anyone asked", ss.sent)
	}
	if err := h.e.SetSideOptions("c", SideA, SideOptions{PierceNAT: true}); err != nil {
		t.Fatal(err)
	}
	h.step(time.Second) // Run's once-a-second tick
	annARTCP := netip.AddrPortFrom(annA.Addr(), annA.Port()+1)
	want := []sent{{aRTP, annA}, {aRTCP, annARTCP}}
	if !slices.Equal(ss.sent, want) {
		t.Fatalf("sent %v, want %v", ss.sent, want)
	}
	// A's RTP locks: only RTCP goes on.
	h.e.lock(aRTP, natA)
	ss.sent = nil
	h.e.step(true)
	if want := []sent{{aRTCP, annARTCP}}; !slices.Equal(ss.sent, want) {
		t.Fatalf("after A's RTP locked: sent %v, want %v", ss.sent, want)
	}
	if tot := h.e.Stats(); tot.PierceNAT != 3 {
		t.Fatalf("Stats().PierceNAT = %d, want 3", tot.PierceNAT)
	}
	// A's next message without the flag: nothing more, and the call
	// leaves the engine's list.
	if err := h.e.SetSideOptions("c", SideA, SideOptions{}); err != nil {
		t.Fatal(err)
	}
	ss.sent = nil
	h.e.step(true)
	h.e.mu.Lock()
	left := len(h.e.piercing)
	h.e.mu.Unlock()
	if len(ss.sent) != 0 || left != 0 {
		t.Fatalf("after the flag went: sent %v, %d calls still piercing", ss.sent, left)
	}
}

// no port latching (ng_control_protocol.md "no port latching"; call.c
// __get_endpoint_map): RenewPorts gives A's leg new ports, the flows
// move with it, B's leg keeps its own, and the old ports are free again.
func TestRenewPorts(t *testing.T) {
	h := newHarness(t, true, nil)
	p := h.call(t, "c", def, def)
	h.setPeer(t, "c", SideA, annA.String(), false)
	h.setPeer(t, "c", SideB, annB.String(), false)
	oldA := ap(p.A.Local, p.A.RTP)
	np, err := h.e.RenewPorts("c", 0, SideA)
	if err != nil {
		t.Fatal(err)
	}
	if np.A.RTP == p.A.RTP || np.A.RTCP != np.A.RTP+1 || np.B != p.B {
		t.Fatalf("ports %+v after renewing A's, were %+v", np, p)
	}
	newA, bRTP := ap(np.A.Local, np.A.RTP), ap(np.B.Local, np.B.RTP)
	if _, ok := h.s.flow(oldA); ok {
		t.Fatal("a flow still arrives at A's old port")
	}
	if f, ok := h.s.flow(newA); !ok || f.Out != bRTP || f.Dst != annB {
		t.Fatalf("A→B at the new port = %+v (installed %v)", f, ok)
	}
	if f, _ := h.s.flow(bRTP); f.Out != newA {
		t.Fatalf("B→A leaves by %s, want A's new port %s", f.Out, newA)
	}
	// The old pair went back to the pool: the call still holds two.
	for _, pi := range h.e.Stats().Pools {
		if pi.Local == p.A.Local && pi.TotalPairs-pi.FreePairs != 2 {
			t.Errorf("pool %s: %d pairs in use, want 2", pi.Local, pi.TotalPairs-pi.FreePairs)
		}
	}
	if _, err := h.e.RenewPorts("c", 7, SideA); !errors.Is(err, ErrStreamNotFound) {
		t.Fatalf("unknown stream: %v", err)
	}
}
