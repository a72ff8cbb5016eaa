package relay

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var def = LegSpec{} // the first configured address

func TestNewEngineConfig(t *testing.T) {
	slow := fakeSlow{newFakePath("userspace")}
	tests := []struct {
		name  string
		addrs []AddressConfig
		slow  SlowPath
	}{
		{name: "no addresses", slow: slow},
		{name: "no slow path", addrs: testAddresses()},
		{name: "invalid local", addrs: []AddressConfig{{PortMin: 1000, PortMax: 2000}}, slow: slow},
		{name: "empty range", addrs: []AddressConfig{{Local: ext4, PortMin: 2000, PortMax: 1000}}, slow: slow},
		{name: "overlapping ranges on one address", addrs: []AddressConfig{
			{Local: ext4, PortMin: 1000, PortMax: 2000}, {Local: ext4, PortMin: 1500, PortMax: 2500}}, slow: slow},
		{name: "one address in two interfaces with different ranges", addrs: []AddressConfig{
			{Name: "internal", Local: ext4, PortMin: 1000, PortMax: 2000}, {Name: "external", Local: ext4, PortMin: 1000, PortMax: 1999}}, slow: slow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewEngine(Config{Addresses: tt.addrs, Logger: discardLogger(), ProcDir: t.TempDir()}, nil, tt.slow, "")
			if err == nil {
				t.Fatal("NewEngine accepted a bad config")
			}
		})
	}
}

func TestPathNameAndReason(t *testing.T) {
	h := newHarness(t, false, nil)
	if h.e.PathName() != "userspace" || h.e.PathReason() != "no CAP_BPF" {
		t.Fatalf("without kernel: %q, %q", h.e.PathName(), h.e.PathReason())
	}
	h = newHarness(t, true, nil)
	if h.e.PathName() != "xdp" || h.e.PathReason() != "fake kernel" {
		t.Fatalf("with kernel: %q, %q", h.e.PathName(), h.e.PathReason())
	}
}

func TestAddStreamAddresses(t *testing.T) {
	h := newHarness(t, false, nil)
	if err := h.e.CreateSession("c1"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		a, b       LegSpec
		wantA      netip.Addr
		wantB      netip.Addr
		wantAdvA   netip.Addr
		wantErrSub string
	}{
		{name: "default both", a: def, b: def, wantA: ext4, wantB: ext4, wantAdvA: pub4},
		{name: "external to internal", a: LegSpec{Address: "external"}, b: LegSpec{Address: "internal"},
			wantA: ext4, wantB: int4, wantAdvA: pub4},
		{name: "v6 external to v4 internal", a: LegSpec{Address: "external", Family: IPv6},
			b: LegSpec{Address: "internal", Family: IPv4}, wantA: ext6, wantB: int4, wantAdvA: ext6},
		{name: "unknown name", a: LegSpec{Address: "dmz"}, b: def, wantErrSub: "dmz"},
		{name: "no v6 internal", a: def, b: LegSpec{Address: "internal", Family: IPv6}, wantErrSub: "internal"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := h.e.AddStream("c1", i, tt.a, tt.b)
			if tt.wantErrSub != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErrSub) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErrSub)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.A.Local != tt.wantA || p.B.Local != tt.wantB || p.A.Advertised != tt.wantAdvA {
				t.Fatalf("ports = %+v", p)
			}
			for _, l := range []LegPorts{p.A, p.B} {
				if l.RTP%2 != 0 || l.RTCP != l.RTP+1 {
					t.Fatalf("leg %+v: want even RTP and RTCP = RTP+1", l)
				}
			}
			again, err := h.e.AddStream("c1", i, tt.b, tt.a)
			if err != nil || again != p {
				t.Fatalf("AddStream again = %+v, %v; want the same ports %+v", again, err, p)
			}
		})
	}
	if _, err := h.e.AddStream("nope", 0, def, def); !errors.Is(err, ErrSessionNotFound) {
		t.Fatalf("unknown session: err = %v", err)
	}
}

func TestPortsExhaustedRollsBack(t *testing.T) {
	h := newHarness(t, false, nil)
	if err := h.e.CreateSession("c"); err != nil {
		t.Fatal(err)
	}
	// internal holds 2 pairs: the first stream takes both.
	if _, err := h.e.AddStream("c", 0, LegSpec{Address: "internal"}, LegSpec{Address: "internal"}); err != nil {
		t.Fatal(err)
	}
	_, err := h.e.AddStream("c", 1, def, LegSpec{Address: "internal"})
	if !errors.Is(err, ErrPortsExhausted) {
		t.Fatalf("err = %v, want ErrPortsExhausted", err)
	}
	// Side A's pair must have gone back: 5 pairs free on external.
	for _, p := range h.e.Stats().Pools {
		if p.Local == ext4 && p.FreePairs != p.TotalPairs {
			t.Fatalf("external pool leaked a pair: %+v", p)
		}
	}
}

func TestOfferAnswerOrder(t *testing.T) {
	for _, withKernel := range []bool{false, true} {
		name := "userspace only"
		if withKernel {
			name = "with kernel"
		}
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, withKernel, nil)
			p := h.call(t, "c", def, def)
			aRTP, aRTCP := ap(p.A.Local, p.A.RTP), ap(p.A.Local, p.A.RTCP)
			bRTP, bRTCP := ap(p.B.Local, p.B.RTP), ap(p.B.Local, p.B.RTCP)
			if h.s.count() != 0 {
				t.Fatalf("flows before any SDP: %d", h.s.count())
			}

			h.setPeer(t, "c", SideA, "203.0.113.10:5000", false) // the offer
			// Only B→A knows where to send (A's announced address).
			if _, ok := h.s.flow(aRTP); ok {
				t.Fatal("A→B installed before B's answer")
			}
			f, ok := h.s.flow(bRTP)
			if !ok || !f.Learning || f.Out != aRTP || f.Dst != netip.MustParseAddrPort("203.0.113.10:5000") {
				t.Fatalf("B→A RTP after offer = %+v, %v", f, ok)
			}
			if f, ok := h.s.flow(bRTCP); !ok || f.Out != aRTCP || f.Dst.Port() != 5001 {
				t.Fatalf("B→A RTCP after offer = %+v, %v", f, ok)
			}

			h.setPeer(t, "c", SideB, "203.0.113.20:6000", false) // the answer
			f, ok = h.s.flow(aRTP)
			if !ok || !f.Learning || f.Peer != netip.MustParseAddrPort("203.0.113.10:5000") ||
				f.Out != bRTP || f.Dst != netip.MustParseAddrPort("203.0.113.20:6000") {
				t.Fatalf("A→B RTP after answer = %+v, %v", f, ok)
			}
			if h.s.count() != 4 {
				t.Fatalf("userspace flows = %d, want 4", h.s.count())
			}
			if withKernel {
				// Learning copies go to the kernel so it counts the pass reason.
				if h.k.count() != 4 {
					t.Fatalf("kernel flows = %d, want 4", h.k.count())
				}
				if f, _ := h.k.flow(aRTP); !f.Learning {
					t.Fatal("kernel copy of a learning flow is not marked Learning")
				}
			}
			for _, fi := range h.e.Flows() {
				if fi.State != StateLearning || fi.Path != PathUserspace {
					t.Fatalf("flow %+v: want learning in userspace", fi)
				}
			}
		})
	}
}

func TestLatchHandoffToKernel(t *testing.T) {
	h := newHarness(t, true, nil)
	p := h.call(t, "c", def, def)
	h.setPeer(t, "c", SideA, "203.0.113.10:5000", false)
	h.setPeer(t, "c", SideB, "203.0.113.20:6000", false)
	aRTP, bRTP := ap(p.A.Local, p.A.RTP), ap(p.B.Local, p.B.RTP)
	nat := netip.MustParseAddrPort("203.0.113.99:41000")

	t0 := h.clk.Now()
	h.s.addTraffic(t, aRTP, 10, t0) // userspace forwarded the first packets
	h.e.lock(aRTP, nat)

	kf, ok := h.k.flow(aRTP)
	if !ok || kf.Learning || kf.Peer != nat {
		t.Fatalf("kernel A→B after latch = %+v, %v; want latched to %s", kf, ok, nat)
	}
	// Symmetric RTP: B→A now goes to where A really is.
	for _, dp := range []*fakePath{h.k, h.s} {
		if f, _ := dp.flow(bRTP); f.Dst != nat || !f.Learning {
			t.Fatalf("%s B→A = %+v; want Dst %s, still learning", dp.name, f, nat)
		}
	}
	if _, ok := h.s.flow(aRTP); !ok {
		t.Fatal("userspace dropped A→B before the handoff delay")
	}

	h.step(h.cfg.HandoffDelay - time.Millisecond)
	if _, ok := h.s.flow(aRTP); !ok {
		t.Fatal("userspace dropped A→B before the handoff delay")
	}
	h.s.addTraffic(t, aRTP, 2, h.clk.Now()) // queued on the socket during handoff
	h.step(time.Millisecond)
	if _, ok := h.s.flow(aRTP); ok {
		t.Fatal("A→B still in userspace after the handoff delay")
	}
	if _, ok := h.s.flow(bRTP); !ok {
		t.Fatal("learning B→A left userspace")
	}

	h.k.addTraffic(t, aRTP, 100, h.clk.Now())
	si, err := h.e.Session("c")
	if err != nil {
		t.Fatal(err)
	}
	if got := si.Streams[0].A.Received.Packets; got != 112 {
		t.Fatalf("A received %d packets, want 112 (10+2 userspace, 100 kernel)", got)
	}
	if si.Streams[0].A.LatchedRTP != nat {
		t.Fatalf("LatchedRTP = %s", si.Streams[0].A.LatchedRTP)
	}
	tot := h.e.Stats()
	if tot.UserspacePackets != 12 || tot.KernelPackets != 100 || tot.KernelFlows != 1 || tot.Flows != 4 {
		t.Fatalf("totals = %+v", tot)
	}
	// Both paths carried A→B within the window; nothing else was sent.
	if tot.ActiveRTP != (ActiveStreams{Mixed: 1}) {
		t.Errorf("active RTP at the handoff = %+v, want one mixed", tot.ActiveRTP)
	}
	var found bool
	for _, fi := range h.e.Flows() {
		if fi.Local == aRTP {
			found = true
			if fi.Path != PathKernel || fi.State != StateActive || fi.Packets != 112 {
				t.Fatalf("A→B FlowInfo = %+v", fi)
			}
		}
	}
	if !found {
		t.Fatal("A→B missing from Flows")
	}
	h.step(activeWindow)
	h.k.addTraffic(t, aRTP, 1, h.clk.Now())
	h.s.addTraffic(t, bRTP, 1, h.clk.Now())
	if got := h.e.Stats().ActiveRTP; got != (ActiveStreams{Kernel: 1, Userspace: 1}) {
		t.Errorf("active RTP after the window = %+v, want A→B on the kernel, B→A in userspace", got)
	}

	// B latches too: B→A moves, and A→B (in the kernel) gets the new Dst.
	natB := netip.MustParseAddrPort("203.0.113.98:42000")
	h.e.lock(bRTP, natB)
	if f, _ := h.k.flow(aRTP); f.Dst != natB || f.Learning {
		t.Fatalf("kernel A→B after B latched = %+v", f)
	}
	if _, ok := h.s.flow(aRTP); ok {
		t.Fatal("a Dst update of a handed-off flow put it back in userspace")
	}
	h.step(h.cfg.HandoffDelay)
	if _, ok := h.s.flow(bRTP); ok {
		t.Fatal("B→A still in userspace after its handoff")
	}
}

func TestNoKernelEverythingStaysInUserspace(t *testing.T) {
	h := newHarness(t, false, nil)
	p := h.call(t, "c", def, def)
	h.setPeer(t, "c", SideA, "203.0.113.10:5000", false)
	h.setPeer(t, "c", SideB, "203.0.113.20:6000", false)
	aRTP := ap(p.A.Local, p.A.RTP)
	h.e.lock(aRTP, netip.MustParseAddrPort("203.0.113.99:41000"))
	h.step(10 * h.cfg.HandoffDelay)
	if f, ok := h.s.flow(aRTP); !ok || f.Learning {
		t.Fatalf("userspace A→B = %+v, %v; want latched and kept", f, ok)
	}
	if h.s.count() != 4 {
		t.Fatalf("userspace flows = %d, want 4", h.s.count())
	}
}

func TestKernelRefusalStaysInUserspace(t *testing.T) {
	tests := []struct {
		name    string
		a, b    LegSpec
		refuse  error // returned by the fake kernel for every flow
		wantErr string
		wantTry bool // the kernel is asked at all
	}{
		{name: "cross-family legs, kernel without the translation", a: LegSpec{Family: IPv4}, b: LegSpec{Family: IPv6},
			wantErr: "cross-family", wantTry: false},
		{name: "unsupported", a: def, b: def, refuse: ErrUnsupportedFlow,
			wantErr: ErrUnsupportedFlow.Error(), wantTry: true},
		{name: "map full", a: def, b: def, refuse: errors.New("map full"), wantErr: "map full", wantTry: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, true, nil)
			if tt.refuse != nil {
				h.k.upsertErr = func(Flow) error { return tt.refuse }
			}
			p := h.call(t, "c", tt.a, tt.b)
			peerA, peerB := "203.0.113.10:5000", "203.0.113.20:6000"
			if p.B.Local.Is6() {
				peerB = "[2001:db8:f::20]:6000"
			}
			h.setPeer(t, "c", SideA, peerA, false)
			h.setPeer(t, "c", SideB, peerB, false)
			aRTP := ap(p.A.Local, p.A.RTP)
			h.e.lock(aRTP, netip.MustParseAddrPort("203.0.113.99:41000"))
			h.step(5 * h.cfg.HandoffDelay)
			if f, ok := h.s.flow(aRTP); !ok || f.Learning {
				t.Fatalf("userspace A→B = %+v, %v; want latched and kept", f, ok)
			}
			if h.k.count() != 0 {
				t.Fatalf("kernel holds %d flows, want 0", h.k.count())
			}
			if tried := h.k.upserts() > 0; tried != tt.wantTry {
				t.Fatalf("kernel asked: %v, want %v", tried, tt.wantTry)
			}
			for _, fi := range h.e.Flows() {
				if fi.Path != PathUserspace || !strings.Contains(fi.KernelError, tt.wantErr) {
					t.Fatalf("flow %+v: want userspace with kernel error %q", fi, tt.wantErr)
				}
			}
		})
	}
}

// A kernel path that translates between families (CrossFamilyPath) takes
// a stream with an IPv4 leg and an IPv6 leg like any other: both
// directions are locked in the kernel and handed off from userspace.
func TestCrossFamilyInKernel(t *testing.T) {
	h := newHarnessKernel(t, true, true, nil)
	p := h.call(t, "c", LegSpec{Family: IPv4}, LegSpec{Family: IPv6})
	if !p.A.Local.Is4() || !p.B.Local.Is6() {
		t.Fatalf("legs on %v and %v, want IPv4 and IPv6", p.A.Local, p.B.Local)
	}
	h.setPeer(t, "c", SideA, "203.0.113.10:5000", false)
	h.setPeer(t, "c", SideB, "[2001:db8:f::20]:6000", false)
	aRTP, bRTP := ap(p.A.Local, p.A.RTP), ap(p.B.Local, p.B.RTP)
	h.e.lock(aRTP, netip.MustParseAddrPort("203.0.113.10:5000"))
	h.e.lock(bRTP, netip.MustParseAddrPort("[2001:db8:f::20]:6000"))
	h.step(5 * h.cfg.HandoffDelay)
	for _, k := range []netip.AddrPort{aRTP, bRTP} {
		f, ok := h.k.flow(k)
		if !ok || f.Learning {
			t.Fatalf("kernel flow %v = %+v, %v; want installed and locked", k, f, ok)
		}
		if f.Key.Local.Addr().Is4() == f.Out.Addr().Is4() {
			t.Errorf("kernel flow %v leaves by %v: want the other family", k, f.Out)
		}
		if _, ok := h.s.flow(k); ok {
			t.Errorf("userspace still holds %v after the handoff", k)
		}
	}
	for _, fi := range h.e.Flows() {
		if fi.Component == "rtp" && (fi.Path != PathKernel || fi.KernelError != "") {
			t.Errorf("flow %+v: want the kernel path, no kernel error", fi)
		}
	}
}

func TestKernelErrorOnUpdateRemovesStaleCopy(t *testing.T) {
	h := newHarness(t, true, nil)
	p := h.call(t, "c", def, def)
	h.setPeer(t, "c", SideA, "203.0.113.10:5000", false)
	h.setPeer(t, "c", SideB, "203.0.113.20:6000", false)
	aRTP := ap(p.A.Local, p.A.RTP)
	h.e.lock(aRTP, netip.MustParseAddrPort("203.0.113.99:41000"))
	h.step(h.cfg.HandoffDelay)
	h.k.addTraffic(t, aRTP, 50, h.clk.Now())
	if _, ok := h.s.flow(aRTP); ok {
		t.Fatal("precondition: A→B should be kernel only")
	}
	h.k.upsertErr = func(Flow) error { return errors.New("map full") }
	h.e.lock(ap(p.B.Local, p.B.RTP), netip.MustParseAddrPort("203.0.113.98:42000"))
	if _, ok := h.k.flow(aRTP); ok {
		t.Fatal("kernel kept a stale copy of A→B after refusing its update")
	}
	if f, ok := h.s.flow(aRTP); !ok || f.Learning || f.Dst.Port() != 42000 {
		t.Fatalf("userspace A→B = %+v, %v; want it back, latched, new Dst", f, ok)
	}
	if tot := h.e.Stats(); tot.KernelPackets != 50 {
		t.Fatalf("kernel packets = %d, want the 50 counted before removal", tot.KernelPackets)
	}
}

func TestCountersSurviveResettingUpsert(t *testing.T) {
	h := newHarness(t, true, nil)
	h.k.resetOnUpsert = true
	h.s.resetOnUpsert = true
	p := h.call(t, "c", def, def)
	h.setPeer(t, "c", SideA, "203.0.113.10:5000", false)
	h.setPeer(t, "c", SideB, "203.0.113.20:6000", false)
	aRTP, bRTP := ap(p.A.Local, p.A.RTP), ap(p.B.Local, p.B.RTP)
	h.s.addTraffic(t, bRTP, 3, h.clk.Now())
	h.e.lock(aRTP, netip.MustParseAddrPort("203.0.113.99:41000"))
	h.k.addTraffic(t, aRTP, 7, h.clk.Now())
	// B latching re-upserts A→B (new Dst) in the kernel, which resets it.
	h.e.lock(bRTP, netip.MustParseAddrPort("203.0.113.98:42000"))
	tot := h.e.Stats()
	if tot.KernelPackets != 7 || tot.UserspacePackets != 3 {
		t.Fatalf("kernel %d, userspace %d packets; want 7 and 3", tot.KernelPackets, tot.UserspacePackets)
	}
}

func TestStrictPropagated(t *testing.T) {
	for _, strict := range []bool{false, true} {
		h := newHarness(t, true, func(c *Config) { c.Strict = strict })
		p := h.call(t, "c", def, def)
		h.setPeer(t, "c", SideA, "203.0.113.10:5000", false)
		if strict {
			// Nothing may latch before its side announced an address.
			if _, ok := h.s.flow(ap(p.B.Local, p.B.RTP)); ok {
				t.Fatal("strict: B→A installed before B's SDP")
			}
		}
		h.setPeer(t, "c", SideB, "203.0.113.20:6000", false)
		h.e.lock(ap(p.A.Local, p.A.RTP), netip.MustParseAddrPort("203.0.113.10:5000"))
		n := 0
		for _, dp := range []*fakePath{h.k, h.s} {
			for _, f := range dp.flows {
				n++
				if f.Strict != strict {
					t.Fatalf("strict=%v: %s flow %+v", strict, dp.name, f)
				}
			}
		}
		if n != 8 {
			t.Fatalf("strict=%v: %d flows checked, want 8", strict, n)
		}
	}
}

func TestRTCPMux(t *testing.T) {
	tests := []struct {
		name       string
		muxA, muxB bool
		want       int // userspace flows
		// Out of the RTCP flow arriving on B (if any).
		bRTCPToARTP bool
	}{
		{name: "no mux", want: 4},
		{name: "both mux", muxA: true, muxB: true, want: 2},
		{name: "only A mux", muxA: true, want: 3, bRTCPToARTP: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, false, nil)
			p := h.call(t, "c", def, def)
			h.setPeer(t, "c", SideA, "203.0.113.10:5000", tt.muxA)
			h.setPeer(t, "c", SideB, "203.0.113.20:6000", tt.muxB)
			if h.s.count() != tt.want {
				t.Fatalf("flows = %d, want %d", h.s.count(), tt.want)
			}
			if _, ok := h.s.flow(ap(p.A.Local, p.A.RTCP)); ok == tt.muxA {
				t.Fatalf("A RTCP flow installed = %v with mux %v", ok, tt.muxA)
			}
			if tt.bRTCPToARTP {
				f, _ := h.s.flow(ap(p.B.Local, p.B.RTCP))
				if f.Out != ap(p.A.Local, p.A.RTP) || f.Dst.Port() != 5000 {
					t.Fatalf("B RTCP flow = %+v; want it sent on A's RTP port to A's RTP address", f)
				}
			}
		})
	}
}

func TestReinviteRelearns(t *testing.T) {
	h := newHarness(t, true, nil)
	p := h.call(t, "c", def, def)
	h.setPeer(t, "c", SideA, "203.0.113.10:5000", false)
	h.setPeer(t, "c", SideB, "203.0.113.20:6000", false)
	aRTP, bRTP := ap(p.A.Local, p.A.RTP), ap(p.B.Local, p.B.RTP)
	h.e.lock(aRTP, netip.MustParseAddrPort("203.0.113.99:41000"))
	h.step(h.cfg.HandoffDelay)
	if _, ok := h.s.flow(aRTP); ok {
		t.Fatal("precondition: A→B handed off")
	}

	// Same SDP again (e.g. a session refresh): the locked flow stays
	// where it is, and the kernel is not touched (the refresh only opens
	// the learning window of the flows still learning, in userspace).
	nk := h.k.upserts()
	h.setPeer(t, "c", SideA, "203.0.113.10:5000", false)
	if h.k.upserts() != nk {
		t.Fatal("an unchanged re-INVITE re-installed kernel flows")
	}
	if _, ok := h.s.flow(aRTP); ok {
		t.Fatal("an unchanged re-INVITE brought the locked flow back to userspace")
	}

	// A moved: A→B learns again, in userspace; B→A sends to the new address.
	h.setPeer(t, "c", SideA, "203.0.113.11:7000", false)
	want := netip.MustParseAddrPort("203.0.113.11:7000")
	for _, dp := range []*fakePath{h.k, h.s} {
		f, ok := dp.flow(aRTP)
		if !ok || !f.Learning || f.Peer != want {
			t.Fatalf("%s A→B after re-INVITE = %+v, %v; want learning from %s", dp.name, f, ok, want)
		}
		if f, _ := dp.flow(bRTP); f.Dst != want {
			t.Fatalf("%s B→A Dst = %s, want %s", dp.name, f.Dst, want)
		}
	}
	si, _ := h.e.Session("c")
	if si.Streams[0].A.LatchedRTP.IsValid() {
		t.Fatal("latched source kept across an address change")
	}
	// It latches again and hands off again.
	h.e.lock(aRTP, want)
	h.step(h.cfg.HandoffDelay)
	if f, _ := h.k.flow(aRTP); f.Learning {
		t.Fatal("re-latched flow not in kernel")
	}
	if _, ok := h.s.flow(aRTP); ok {
		t.Fatal("re-latched flow not handed off")
	}
}

func TestDeleteSession(t *testing.T) {
	h := newHarness(t, true, nil)
	p := h.call(t, "c", def, LegSpec{Address: "internal"})
	if _, err := h.e.AddStream("c", 1, LegSpec{Family: IPv6}, LegSpec{Family: IPv6}); err != nil {
		t.Fatal(err)
	}
	h.setPeer(t, "c", SideA, "203.0.113.10:5000", false)
	h.setPeer(t, "c", SideB, "10.9.9.9:6000", false)
	aRTP := ap(p.A.Local, p.A.RTP)
	h.e.lock(aRTP, netip.MustParseAddrPort("203.0.113.99:41000"))
	h.s.addTraffic(t, ap(p.B.Local, p.B.RTP), 4, h.clk.Now())
	h.k.addTraffic(t, aRTP, 6, h.clk.Now())

	info, err := h.e.DeleteSession("c")
	if err != nil {
		t.Fatal(err)
	}
	if info.Stats.Packets != 10 || len(info.Streams) != 2 {
		t.Fatalf("final info = %+v; want 10 packets, 2 streams", info)
	}
	if h.k.count() != 0 || h.s.count() != 0 {
		t.Fatalf("flows left: kernel %d, userspace %d", h.k.count(), h.s.count())
	}
	for _, pl := range h.e.Stats().Pools {
		if pl.FreePairs != pl.TotalPairs {
			t.Fatalf("pool %s: %d of %d pairs free", pl.Local, pl.FreePairs, pl.TotalPairs)
		}
	}
	if tot := h.e.Stats(); tot.Sessions != 0 || tot.KernelPackets != 6 || tot.UserspacePackets != 4 {
		t.Fatalf("totals after delete = %+v; counters of ended calls must stay", tot)
	}
	if _, err := h.e.DeleteSession("c"); !errors.Is(err, ErrSessionNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := h.e.Session("c"); !errors.Is(err, ErrSessionNotFound) {
		t.Fatalf("Session after delete: %v", err)
	}
	// A latch that was queued before the delete must not resurrect anything,
	// nor a handoff scheduled before it.
	n := h.k.upserts() + h.s.upserts()
	h.e.lock(aRTP, netip.MustParseAddrPort("203.0.113.99:41000"))
	h.step(h.cfg.HandoffDelay)
	if h.k.upserts()+h.s.upserts() != n || h.k.count()+h.s.count() != 0 {
		t.Fatal("a stale latch or handoff touched a deleted call")
	}
	// The same call id can be used again.
	if err := h.e.CreateSession("c"); err != nil {
		t.Fatal(err)
	}
}

func TestRemoveStream(t *testing.T) {
	h := newHarness(t, false, nil)
	h.call(t, "c", def, def)
	h.setPeer(t, "c", SideA, "203.0.113.10:5000", false)
	h.setPeer(t, "c", SideB, "203.0.113.20:6000", false)
	if err := h.e.RemoveStream("c", 0); err != nil {
		t.Fatal(err)
	}
	if h.s.count() != 0 {
		t.Fatalf("flows left: %d", h.s.count())
	}
	if err := h.e.RemoveStream("c", 0); !errors.Is(err, ErrStreamNotFound) {
		t.Fatalf("second remove: %v", err)
	}
	if err := h.e.SetPeer("c", 0, SideA, netip.MustParseAddrPort("203.0.113.10:5000"), netip.AddrPort{}, true); !errors.Is(err, ErrStreamNotFound) {
		t.Fatalf("SetPeer on removed stream: %v", err)
	}
}

func TestSessionErrors(t *testing.T) {
	h := newHarness(t, false, nil)
	if err := h.e.CreateSession("c"); err != nil {
		t.Fatal(err)
	}
	if err := h.e.CreateSession("c"); !errors.Is(err, ErrSessionExists) {
		t.Fatalf("duplicate: %v", err)
	}
	if err := h.e.SetPeer("x", 0, SideA, netip.AddrPort{}, netip.AddrPort{}, false); !errors.Is(err, ErrSessionNotFound) {
		t.Fatalf("SetPeer unknown session: %v", err)
	}
	if err := h.e.SetPeer("c", 0, Side(7), netip.AddrPort{}, netip.AddrPort{}, false); err == nil {
		t.Fatal("bad side accepted")
	}
}

func TestDrain(t *testing.T) {
	h := newHarness(t, false, nil)
	h.call(t, "old", def, def)
	h.e.Drain(true)
	if err := h.e.CreateSession("new"); !errors.Is(err, ErrDraining) {
		t.Fatalf("CreateSession while draining: %v", err)
	}
	if !h.e.Stats().Draining {
		t.Fatal("Stats does not show draining")
	}
	// Calls in progress go on.
	h.setPeer(t, "old", SideA, "203.0.113.10:5000", false)
	if _, err := h.e.AddStream("old", 1, def, def); err != nil {
		t.Fatal(err)
	}
	h.e.Drain(false)
	if err := h.e.CreateSession("new"); err != nil {
		t.Fatal(err)
	}
}

func TestMediaTimeout(t *testing.T) {
	h := newHarness(t, true, nil)
	timeout := h.cfg.MediaTimeout
	p := h.call(t, "c", def, def)
	h.call(t, "ringing", def, def) // no SDP answer yet: nothing installed, never times out
	h.setPeer(t, "c", SideA, "203.0.113.10:5000", false)
	h.setPeer(t, "c", SideB, "203.0.113.20:6000", false)
	aRTP := ap(p.A.Local, p.A.RTP)

	h.step(timeout - time.Second)
	if len(h.e.pending) != 0 {
		t.Fatalf("event before the timeout: %+v", h.e.pending)
	}
	// A packet half-way keeps it alive for another full timeout.
	h.s.addTraffic(t, aRTP, 1, h.clk.Now())
	h.step(2 * time.Second)
	if len(h.e.pending) != 0 {
		t.Fatalf("event despite recent media: %+v", h.e.pending)
	}
	h.step(timeout - 3*time.Second) // 1s before last packet + timeout
	if len(h.e.pending) != 0 {
		t.Fatalf("event 1s before the timeout: %+v", h.e.pending)
	}
	h.step(time.Second)
	if len(h.e.pending) != 1 || h.e.pending[0].CallID != "c" || h.e.pending[0].Reason != ReasonMediaTimeout {
		t.Fatalf("events = %+v; want one media timeout for c", h.e.pending)
	}
	h.step(timeout)
	h.step(timeout)
	if len(h.e.pending) != 1 {
		t.Fatalf("events = %+v; want exactly one", h.e.pending)
	}
	if si, _ := h.e.Session("c"); !si.TimedOut {
		t.Fatal("session not marked timed out")
	}
}

func TestMediaTimeoutCountsFromReinstall(t *testing.T) {
	h := newHarness(t, false, nil)
	timeout := h.cfg.MediaTimeout
	h.call(t, "c", def, def)
	h.setPeer(t, "c", SideA, "203.0.113.10:5000", false)
	h.setPeer(t, "c", SideB, "203.0.113.20:6000", false)
	h.step(timeout - time.Second)
	// A re-INVITE to a new address restarts the clock for the flows it
	// re-installs.
	h.setPeer(t, "c", SideB, "203.0.113.21:6000", false)
	h.step(2 * time.Second)
	if len(h.e.pending) != 0 {
		t.Fatalf("timeout right after a re-INVITE: %+v", h.e.pending)
	}
	h.step(timeout)
	if len(h.e.pending) != 1 {
		t.Fatalf("events = %+v, want one", h.e.pending)
	}
}

func TestOnLatchNeverBlocks(t *testing.T) {
	h := newHarness(t, false, func(c *Config) { c.LatchQueue = 4 })
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 100; i++ {
			h.e.OnLatch(LatchEvent{Key: FlowKey{ap(ext4, 20000)}, Latch: Latch{Source: ap(pub4, uint16(1000+i)), Rank: RankOther}})
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("OnLatch blocked with nobody reading the queue")
	}
	if got := h.e.Stats().LatchDrops; got != 96 {
		t.Fatalf("LatchDrops = %d, want 96", got)
	}
}

func TestRunLatchEventsAndClose(t *testing.T) {
	defer goleak.VerifyNone(t)
	// Real clock: Run's tickers are real.
	slow := newFakePath("userspace")
	kern := newFakePath("xdp")
	e, err := NewEngine(Config{
		Addresses: testAddresses(), MediaTimeout: 200 * time.Millisecond, HandoffDelay: 50 * time.Millisecond,
		Logger: discardLogger(), ProcDir: t.TempDir(),
	}, fakeKernel{kern}, fakeSlow{slow}, "")
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- e.Run(context.Background()) }()

	if err := e.CreateSession("c"); err != nil {
		t.Fatal(err)
	}
	p, err := e.AddStream("c", 0, def, def)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SetPeer("c", 0, SideA, netip.MustParseAddrPort("203.0.113.10:5000"), netip.MustParseAddrPort("203.0.113.10:5001"), false); err != nil {
		t.Fatal(err)
	}
	if err := e.SetPeer("c", 0, SideB, netip.MustParseAddrPort("203.0.113.20:6000"), netip.MustParseAddrPort("203.0.113.20:6001"), false); err != nil {
		t.Fatal(err)
	}
	aRTP := ap(p.A.Local, p.A.RTP)
	e.OnLatch(LatchEvent{Key: FlowKey{aRTP}, Latch: Latch{Source: netip.MustParseAddrPort("203.0.113.99:41000"), Rank: RankOther, Locked: true},
		Announced: netip.MustParseAddrPort("203.0.113.10:5000")})

	waitFor(t, "latched flow handed off to the kernel", func() bool {
		kf, inKern := kern.flow(aRTP)
		_, inSlow := slow.flow(aRTP)
		return inKern && !kf.Learning && !inSlow
	})
	select {
	case ev := <-e.Events():
		if ev.CallID != "c" || ev.Reason != ReasonMediaTimeout {
			t.Fatalf("event = %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no media timeout event from Run")
	}

	if err := e.Run(context.Background()); err == nil {
		t.Fatal("a second concurrent Run was accepted")
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-runErr; err != nil {
		t.Fatalf("Run after Close = %v, want nil", err)
	}
	if _, ok := <-e.Events(); ok {
		t.Fatal("Events not closed by Close")
	}
	if kern.closed != 1 || slow.closed != 1 {
		t.Fatalf("datapaths closed %d/%d times, want 1/1", kern.closed, slow.closed)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.CreateSession("d"); !errors.Is(err, ErrEngineClosed) {
		t.Fatalf("CreateSession after Close: %v", err)
	}
	if err := e.Run(context.Background()); !errors.Is(err, ErrEngineClosed) {
		t.Fatalf("Run after Close: %v", err)
	}
}

func TestRunStopsOnContext(t *testing.T) {
	defer goleak.VerifyNone(t)
	h := newHarness(t, false, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	var err error
	go func() { defer wg.Done(); err = h.e.Run(ctx) }()
	cancel()
	wg.Wait()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	if err := h.e.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCloseWithoutRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	h := newHarness(t, true, nil)
	if err := h.e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-h.e.Events(); ok {
		t.Fatal("Events not closed")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPeerOfOtherFamilyNotInstalled(t *testing.T) {
	h := newHarness(t, false, nil)
	p := h.call(t, "c", LegSpec{Family: IPv4}, LegSpec{Family: IPv6})
	h.setPeer(t, "c", SideA, "203.0.113.10:5000", false)
	// B's leg is on the IPv6 relay address, but B announced IPv4: the relay
	// cannot send IPv4 from its IPv6 port.
	h.setPeer(t, "c", SideB, "203.0.113.20:6000", false)
	if _, ok := h.s.flow(ap(p.A.Local, p.A.RTP)); ok {
		t.Fatal("A→B installed with an IPv4 destination behind an IPv6 port")
	}
	if f, ok := h.s.flow(ap(p.B.Local, p.B.RTP)); !ok || f.Dst.Port() != 5000 {
		t.Fatalf("B→A = %+v, %v; want installed towards A", f, ok)
	}
}

func TestFlowsAndSessionsListing(t *testing.T) {
	h := newHarness(t, false, nil)
	pb := h.call(t, "b-call", def, def)
	h.call(t, "a-call", def, def)
	h.setPeer(t, "b-call", SideA, "203.0.113.10:5000", false)
	h.setPeer(t, "b-call", SideB, "203.0.113.20:6000", false)
	aRTP := ap(pb.A.Local, pb.A.RTP)
	h.e.lock(aRTP, netip.MustParseAddrPort("203.0.113.10:5000"))
	h.s.addTraffic(t, aRTP, 1, h.clk.Now())

	ss := h.e.Sessions()
	if len(ss) != 2 || ss[0].CallID != "a-call" || ss[1].CallID != "b-call" || ss[1].Stats.Packets != 1 {
		t.Fatalf("Sessions = %+v", ss)
	}
	state := func() string {
		for _, fi := range h.e.Flows() {
			if fi.Local == aRTP {
				return fi.State
			}
		}
		return "missing"
	}
	if got := state(); got != StateActive {
		t.Fatalf("state = %s, want active", got)
	}
	h.clk.Advance(idleAfter)
	if got := state(); got != StateIdle {
		t.Fatalf("state after %s of silence = %s, want idle", idleAfter, got)
	}
	fl := h.e.Flows()
	if len(fl) != 4 || fl[0].Side != SideA || fl[0].Component != "rtcp" || fl[1].Component != "rtp" || fl[3].Side != SideB {
		t.Fatalf("Flows not sorted by side and component: %+v", fl)
	}
	// One call's flows are that call's part of the full listing.
	cf, err := h.e.CallFlows("b-call")
	if err != nil || !reflect.DeepEqual(cf, fl) {
		t.Fatalf("CallFlows(b-call) = %+v, %v; want %+v", cf, err, fl)
	}
	if cf, err := h.e.CallFlows("a-call"); err != nil || len(cf) != 0 {
		t.Fatalf("CallFlows(a-call) with no peers = %+v, %v; want none", cf, err)
	}
	if _, err := h.e.CallFlows("no-call"); !errors.Is(err, ErrSessionNotFound) {
		t.Fatalf("CallFlows of an unknown call: %v", err)
	}
}

// peerSlow is a slow path that reports what it latched on its own.
type peerSlow struct {
	fakeSlow
	latched map[FlowKey]netip.AddrPort
}

func (p peerSlow) Latch(k FlowKey) (LatchEvent, error) {
	f, ok := p.flow(k.Local)
	if !ok {
		return LatchEvent{}, ErrFlowNotFound
	}
	ev := LatchEvent{Key: k, Announced: f.Announced, Latch: Latch{Source: f.Peer, Rank: f.Rank, Locked: !f.Learning}}
	if src, ok := p.latched[k]; ok {
		ev.Latch = Latch{Source: src, Rank: RankOther, Locked: true}
	}
	return ev, nil
}

func TestDroppedLatchRecoveredFromSlowPath(t *testing.T) {
	for _, canReport := range []bool{true, false} {
		t.Run(map[bool]string{true: "slow path reports peers", false: "slow path cannot"}[canReport], func(t *testing.T) {
			s := newFakePath("userspace")
			k := newFakePath("xdp")
			ps := peerSlow{fakeSlow{s}, map[FlowKey]netip.AddrPort{}}
			var slow SlowPath = ps.fakeSlow
			if canReport {
				slow = ps
			}
			clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			e, err := NewEngine(Config{Addresses: testAddresses(), Logger: discardLogger(), ProcDir: t.TempDir(),
				Now: clk.Now, LatchQueue: 1}, fakeKernel{k}, slow, "")
			if err != nil {
				t.Fatal(err)
			}
			h := &harness{e: e, k: k, s: s, clk: clk}
			p := h.call(t, "c", def, def)
			h.setPeer(t, "c", SideA, "203.0.113.10:5000", false)
			h.setPeer(t, "c", SideB, "203.0.113.20:6000", false)
			aRTP, bRTP := ap(p.A.Local, p.A.RTP), ap(p.B.Local, p.B.RTP)
			natA, natB := netip.MustParseAddrPort("203.0.113.99:41000"), netip.MustParseAddrPort("203.0.113.98:42000")
			// The userspace relay latched both and told the engine; the
			// queue holds one, so B's event is lost.
			ps.latched[FlowKey{aRTP}] = natA
			ps.latched[FlowKey{bRTP}] = natB
			e.OnLatch(LatchEvent{Key: FlowKey{aRTP}, Latch: Latch{Source: natA, Rank: RankOther, Locked: true},
				Announced: netip.MustParseAddrPort("203.0.113.10:5000")})
			e.OnLatch(LatchEvent{Key: FlowKey{bRTP}, Latch: Latch{Source: natB, Rank: RankOther, Locked: true},
				Announced: netip.MustParseAddrPort("203.0.113.20:6000")})
			if e.Stats().LatchDrops != 1 {
				t.Fatalf("LatchDrops = %d, want 1", e.Stats().LatchDrops)
			}
			e.latch(<-e.latchq)
			clk.Advance(time.Second)
			e.step(false)
			f, _ := k.flow(bRTP)
			if canReport {
				if f.Learning || f.Peer != natB {
					t.Fatalf("kernel B→A = %+v; want the dropped latch recovered (%s)", f, natB)
				}
				if f, _ := k.flow(aRTP); f.Dst != natB {
					t.Fatalf("kernel A→B Dst = %s, want %s", f.Dst, natB)
				}
			} else if !f.Learning {
				t.Fatalf("kernel B→A = %+v latched without any report", f)
			}
		})
	}
}

func TestListingsAcrossBatches(t *testing.T) {
	const n = 2*walkBatch + 7
	h := newHarness(t, true, func(c *Config) {
		c.Addresses = []AddressConfig{{Name: "big", Local: ext4, PortMin: 10000, PortMax: 19999}}
	})
	if got := h.e.Sessions(); got == nil || len(got) != 0 {
		t.Fatalf("Sessions with no calls = %#v, want an empty non-nil slice", got)
	}
	var ids []string
	for i := 0; i < n; i++ {
		id := "call-" + strconv.Itoa(i)
		p := h.call(t, id, def, def)
		h.setPeer(t, id, SideA, "203.0.113.10:5000", false)
		h.setPeer(t, id, SideB, "203.0.113.20:6000", false)
		h.s.addTraffic(t, ap(p.A.Local, p.A.RTP), 1, h.clk.Now())
		ids = append(ids, id)
	}
	if got := len(h.e.Sessions()); got != n {
		t.Fatalf("Sessions = %d, want %d", got, n)
	}
	if got := len(h.e.Flows()); got != 4*n {
		t.Fatalf("Flows = %d, want %d", got, 4*n)
	}
	if tot := h.e.Stats(); tot.Sessions != n || tot.Flows != 4*n || tot.UserspacePackets != n {
		t.Fatalf("totals = %d sessions, %d flows, %d packets; want %d, %d, %d",
			tot.Sessions, tot.Flows, tot.UserspacePackets, n, 4*n, n)
	}

	// Calls ending while a listing walks must neither crash it nor make the
	// packet total exceed what was ever counted.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, id := range ids {
			if _, err := h.e.DeleteSession(id); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := 0; i < 20; i++ {
		if tot := h.e.Stats(); tot.UserspacePackets > n {
			t.Fatalf("packets = %d during deletes, more than the %d ever counted", tot.UserspacePackets, n)
		}
		h.e.Flows()
	}
	wg.Wait()
	if tot := h.e.Stats(); tot.Sessions != 0 || tot.UserspacePackets != n {
		t.Fatalf("after deleting all: %d sessions, %d packets; want 0, %d", tot.Sessions, tot.UserspacePackets, n)
	}
}

func TestUserspaceRefusalIsRetried(t *testing.T) {
	h := newHarness(t, true, nil)
	p := h.call(t, "c", def, def)
	h.setPeer(t, "c", SideA, "203.0.113.10:5000", false)
	h.s.upsertErr = func(Flow) error { return errors.New("address in use") }
	err := h.e.SetPeer("c", 0, SideB, netip.MustParseAddrPort("203.0.113.20:6000"), netip.MustParseAddrPort("203.0.113.20:6001"), false)
	if err == nil || !strings.Contains(err.Error(), "address in use") {
		t.Fatalf("SetPeer = %v, want the userspace error", err)
	}
	// A learning flow nobody can latch must not linger in the kernel.
	if _, ok := h.k.flow(ap(p.A.Local, p.A.RTP)); ok {
		t.Fatal("kernel holds a learning flow that userspace refused")
	}
	for _, fi := range h.e.Flows() {
		if fi.Local == ap(p.A.Local, p.A.RTP) {
			t.Fatalf("refused flow listed as installed: %+v", fi)
		}
	}
	h.s.upsertErr = nil
	h.setPeer(t, "c", SideB, "203.0.113.20:6000", false) // the same SDP again
	if h.s.count() != 4 || h.k.count() != 4 {
		t.Fatalf("after retry: userspace %d, kernel %d flows; want 4 and 4", h.s.count(), h.k.count())
	}
}

func TestScanBudget(t *testing.T) {
	const n = scanBudget + 100
	h := newHarness(t, false, func(c *Config) {
		c.Addresses = []AddressConfig{{Name: "big", Local: ext4, PortMin: 10000, PortMax: 30000}}
	})
	for i := 0; i < n; i++ {
		id := "call-" + strconv.Itoa(i)
		h.call(t, id, def, def)
		h.setPeer(t, id, SideA, "203.0.113.10:5000", false)
		h.setPeer(t, id, SideB, "203.0.113.20:6000", false)
	}
	h.s.statsCalls = 0
	h.step(h.cfg.MediaTimeout) // every call falls due at once
	if got := h.s.statsCalls; got != 4*scanBudget {
		t.Fatalf("one scan read %d flows, want %d (the budget)", got, 4*scanBudget)
	}
	if len(h.e.pending) != scanBudget {
		t.Fatalf("%d timeouts from the first scan, want %d", len(h.e.pending), scanBudget)
	}
	h.step(time.Second)
	if len(h.e.pending) != n {
		t.Fatalf("%d timeouts after the second scan, want all %d", len(h.e.pending), n)
	}
}

// One local address in two logical interfaces (rtpengine's interface=
// with internal and external both on 10.3.1.6, external advertised as
// 203.0.113.6) shares one port pool:
// each name advertises its own address and no port is handed out twice.
func TestSharedLocalAddress(t *testing.T) {
	local, public := netip.MustParseAddr("10.3.1.6"), netip.MustParseAddr("203.0.113.6")
	h := newHarness(t, false, func(c *Config) {
		c.Addresses = []AddressConfig{
			{Name: "internal", Local: local, PortMin: 30000, PortMax: 30007},
			{Name: "external", Local: local, Advertised: public, PortMin: 30000, PortMax: 30007},
		}
	})
	if err := h.e.CreateSession("c1"); err != nil {
		t.Fatal(err)
	}
	seen := map[uint16]bool{}
	for i := range 2 {
		sp, err := h.e.AddStream("c1", i, LegSpec{Address: "internal"}, LegSpec{Address: "external"})
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		if sp.A.Address != "internal" || sp.A.Advertised != local || sp.B.Address != "external" || sp.B.Advertised != public {
			t.Fatalf("stream %d: legs %+v / %+v, want internal at %s and external advertising %s", i, sp.A, sp.B, local, public)
		}
		for _, p := range []uint16{sp.A.RTP, sp.B.RTP} {
			if seen[p] {
				t.Fatalf("stream %d: port %d handed out twice", i, p)
			}
			seen[p] = true
		}
	}
	// Four pairs in all: both names drew from one pool of 30000-30007.
	if _, err := h.e.AddStream("c1", 2, LegSpec{Address: "internal"}, LegSpec{Address: "external"}); !errors.Is(err, ErrPortsExhausted) {
		t.Fatalf("fifth and sixth pair: err %v, want ErrPortsExhausted", err)
	}
}
