package relay

import (
	"errors"
	"net/netip"
	"testing"
)

// asymmetric (rtpengine's NG control protocol documentation, "asymmetric";
// media_socket.c keeps the endpoint it sends to when the media is
// asymmetric): A's flows still latch the source they accept, but B→A
// goes to A's SDP address; B, symmetric, gets its latched source.
func TestAsymmetricSideGetsItsSDPAddress(t *testing.T) {
	h := newHarness(t, true, nil)
	aRTP, _, bRTP := learnCall(t, h)
	if err := h.e.SetSideOptions("c", SideA, SideOptions{Asymmetric: true}); err != nil {
		t.Fatal(err)
	}
	h.e.lock(aRTP, natA)
	h.e.lock(bRTP, annB)
	for _, dp := range []*fakePath{h.s, h.k} {
		f, ok := dp.flow(bRTP)
		if !ok || f.Dst != annA {
			t.Fatalf("%s B→A = %+v; want Dst %s (A's SDP), not the latched %s", dp.name, f, annA, natA)
		}
	}
	if f, _ := h.k.flow(aRTP); f.Learning || f.Peer != natA {
		t.Fatalf("kernel A→B = %+v; want locked to the source A sends from, %s", f, natA)
	}
	// A later message from A without the flag makes it symmetric again
	// (rtpengine copies the flag from each message of the side).
	if err := h.e.SetSideOptions("c", SideA, SideOptions{}); err != nil {
		t.Fatal(err)
	}
	if f, _ := h.k.flow(bRTP); f.Dst != natA {
		t.Fatalf("kernel B→A after symmetric again: Dst %s, want the latched %s", f.Dst, natA)
	}
	if err := h.e.SetSideOptions("nope", SideA, SideOptions{}); !errors.Is(err, ErrSessionNotFound) {
		t.Fatalf("unknown call: %v", err)
	}
}

// callBesideAnother is learnCall's call "c" and another call, "other",
// whose flows a per-call option of "c" must leave alone.
func callBesideAnother(t *testing.T, h *harness) (aRTP, aRTCP, bRTP netip.AddrPort, other StreamPorts) {
	t.Helper()
	aRTP, aRTCP, bRTP = learnCall(t, h)
	in := LegSpec{Address: "internal"}
	other = h.call(t, "other", in, in)
	h.setPeer(t, "other", SideA, "10.0.0.30:5000", false)
	h.setPeer(t, "other", SideB, "10.0.0.40:6000", false)
	return aRTP, aRTCP, bRTP, other
}

// addSecondStream adds stream 1 to call "c", each side at its announced
// address: a per-call option must reach streams added after it was set.
func addSecondStream(t *testing.T, h *harness) StreamPorts {
	t.Helper()
	p2, err := h.e.AddStream("c", 1, def, def)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.e.SetPeer("c", 1, SideA, annA, annA, true); err != nil {
		t.Fatal(err)
	}
	if err := h.e.SetPeer("c", 1, SideB, annB, annB, true); err != nil {
		t.Fatal(err)
	}
	return p2
}

// byLocal returns the flow installed on the local address local.
func (p *fakePath) byLocal(local string) (Flow, bool) {
	for k, f := range p.flows {
		if k.Local.String() == local {
			return f, true
		}
	}
	return Flow{}, false
}

// TOS (rtpengine's NG control protocol documentation, "TOS"): every flow
// of the call, both directions and streams added later, carries it to
// both datapaths; the zero TOS goes back to the default.
func TestTOSReachesEveryFlowOfTheCall(t *testing.T) {
	h := newHarness(t, true, nil)
	aRTP, aRTCP, bRTP, other := callBesideAnother(t, h)

	ef := TOS{Set: true, Value: 0xb8}
	if err := h.e.SetTOS("c", ef); err != nil {
		t.Fatal(err)
	}
	h.e.lock(aRTP, annA) // in the kernel from now on
	p2 := addSecondStream(t, h)
	for _, tc := range []struct {
		dp    *fakePath
		local string
		want  TOS
	}{
		{h.k, aRTP.String(), ef},
		{h.s, aRTCP.String(), ef},
		{h.s, bRTP.String(), ef},
		{h.s, ap(p2.A.Local, p2.A.RTP).String(), ef},
		{h.s, ap(other.A.Local, other.A.RTP).String(), TOS{}}, // another call
	} {
		f, ok := tc.dp.byLocal(tc.local)
		if !ok || f.TOS != tc.want {
			t.Errorf("%s flow %s: TOS %v (installed %v), want %v", tc.dp.name, tc.local, f.TOS, ok, tc.want)
		}
	}
	if fi := flowInfo(t, h, aRTP); fi.TOS != ef {
		t.Errorf("listing of A→B: TOS %v, want %v", fi.TOS, ef)
	}
	if err := h.e.SetTOS("c", TOS{}); err != nil {
		t.Fatal(err)
	}
	if f, _ := h.k.flow(aRTP); f.TOS.Set {
		t.Fatalf("kernel A→B after going back to the default: TOS %v", f.TOS)
	}
}
