package usrelay

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"testing"
	"time"

	"sipxdp/relay"
	"sipxdp/relay/relaytest"
)

// The latching flags (rtpengine's endpoint-learning, NAT-wait, media
// handover) with the real engine on this userspace datapath, real
// datagrams on loopback: each test runs a flagged call and an unflagged
// one side by side and shows they behave differently.

type liveRelay struct {
	e *relay.Engine
	r *Relay
}

func newLiveRelay(t *testing.T) *liveRelay {
	t.Helper()
	var eng *relay.Engine
	r, err := New(Config{Workers: 1, Batch: 8, OnLatch: func(ev relay.LatchEvent) { eng.OnLatch(ev) }})
	if err != nil {
		t.Fatal(err)
	}
	// A port range of its own, away from what the other tests draw.
	base := uint16(42000 + os.Getpid()%500*20)
	eng, err = relay.NewEngine(relay.Config{
		Addresses:   []relay.AddressConfig{{Name: "lo", Local: netip.MustParseAddr("127.0.0.1"), PortMin: base, PortMax: base + 19}},
		LearnWindow: time.Hour, // nothing locks by the clock during a test
		ProcDir:     t.TempDir(),
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, nil, r, "test")
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); eng.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		eng.Close()
		r.Close()
	})
	return &liveRelay{e: eng, r: r}
}

// call sets up a call whose sides announced annA and annB (RTCP on the
// next ports) with side A's options, and returns the relay's RTP ports
// toward A and toward B.
func (l *liveRelay) call(t *testing.T, id string, oa, ob relay.SideOptions, annA, annB netip.AddrPort) (toA, toB netip.AddrPort) {
	t.Helper()
	if err := l.e.CreateSession(id); err != nil {
		t.Fatal(err)
	}
	p, err := l.e.AddStream(id, 0, relay.LegSpec{}, relay.LegSpec{})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.e.SetSideOptions(id, relay.SideA, oa); err != nil {
		t.Fatal(err)
	}
	if err := l.e.SetSideOptions(id, relay.SideB, ob); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		side relay.Side
		ann  netip.AddrPort
	}{{relay.SideA, annA}, {relay.SideB, annB}} {
		rtcp := netip.AddrPortFrom(s.ann.Addr(), s.ann.Port()+1)
		if err := l.e.SetPeer(id, 0, s.side, s.ann, rtcp, false); err != nil {
			t.Fatal(err)
		}
		if err := l.e.SetSignal(id, s.side, netip.Addr{}); err != nil {
			t.Fatal(err)
		}
	}
	return netip.AddrPortFrom(p.A.Local, p.A.RTP), netip.AddrPortFrom(p.B.Local, p.B.RTP)
}

// flow is the listing of the flow arriving at local.
func (l *liveRelay) flow(t *testing.T, local netip.AddrPort) relay.FlowInfo {
	t.Helper()
	for _, f := range l.e.Flows() {
		if f.Local == local {
			return f
		}
	}
	t.Fatalf("no flow at %s", local)
	return relay.FlowInfo{}
}

// waitFlow polls the listing until ok holds (the engine applies latch
// reports asynchronously).
func (l *liveRelay) waitFlow(t *testing.T, local netip.AddrPort, ok func(relay.FlowInfo) bool) relay.FlowInfo {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		f := l.flow(t, local)
		if ok(f) || time.Now().After(deadline) {
			return f
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// againstDefault runs fn for the default learning and for mode, as
// subtests named after them.
func againstDefault(t *testing.T, mode relay.LearnMode, fn func(t *testing.T, mode relay.LearnMode)) {
	for _, m := range []relay.LearnMode{relay.LearnHeuristic, mode} {
		t.Run(m.String(), func(t *testing.T) { fn(t, m) })
	}
}

// withAndWithout runs fn without a side's flag and with it, as subtests
// "default" and flag.
func withAndWithout(t *testing.T, flag string, fn func(t *testing.T, on bool)) {
	for _, on := range []bool{false, true} {
		t.Run(name(on, flag), func(t *testing.T) { fn(t, on) })
	}
}

func name(on bool, flag string) string {
	if on {
		return flag
	}
	return "default"
}

func pkt(i int) []byte { return relaytest.RTPPayload(uint16(i), 40) }

func same(b []byte) func(int) []byte { return func(int) []byte { return b } }

// endpoint-learning=immediate (rtpengine's manual page,
// --endpoint-learning; media_socket.c media_packet_address_check,
// EL_IMMEDIATE): the first source locks, even one the default ranks as a
// mere candidate (another IP than the SDP's).
func TestEndpointLearningImmediate(t *testing.T) {
	l := newLiveRelay(t)
	againstDefault(t, relay.LearnImmediate, func(t *testing.T, mode relay.LearnMode) {
		nat, b := newPhone(t, "127.0.0.2"), newPhone(t, "127.0.0.1")
		annA := freePort(t, "127.0.0.1")
		toA, toB := l.call(t, "el-"+mode.String(), relay.SideOptions{Learning: mode}, relay.SideOptions{}, annA, b.addr)
		nat.send(t, toA, pkt(1))
		if !(mode != relay.LearnHeuristic) {
			b.expectNothing(t)
			if f := l.flow(t, toA); f.Latch != relay.LatchLearning {
				t.Fatalf("A→B latch %s, want %s (a candidate)", f.Latch, relay.LatchLearning)
			}
			return
		}
		b.expect(t, 1, toB, same(pkt(1)))
		f := l.waitFlow(t, toA, func(f relay.FlowInfo) bool { return f.Latch == relay.LatchLocked })
		if f.Latch != relay.LatchLocked || f.Peer != nat.addr {
			t.Fatalf("A→B %s on %s, want locked on %s", f.Latch, f.Peer, nat.addr)
		}
		// Locked: a later source is refused, and B's media goes to the first.
		newPhone(t, "127.0.0.1").send(t, toA, pkt(2))
		b.expectNothing(t)
		l.waitFlow(t, toB, func(f relay.FlowInfo) bool { return f.Dst == nat.addr })
		b.send(t, toB, pkt(3))
		nat.expect(t, 1, toA, same(pkt(3)))
	})
}

// endpoint-learning=delayed (rtpengine's manual page, --endpoint-learning: the
// legacy setting): during the window every source is trusted and the
// latest wins; the default holds an unknown IP as a candidate only.
func TestEndpointLearningDelayed(t *testing.T) {
	l := newLiveRelay(t)
	againstDefault(t, relay.LearnDelayed, func(t *testing.T, mode relay.LearnMode) {
		first, second, b := newPhone(t, "127.0.0.2"), newPhone(t, "127.0.0.3"), newPhone(t, "127.0.0.1")
		annA := freePort(t, "127.0.0.1")
		toA, toB := l.call(t, "dl-"+mode.String(), relay.SideOptions{Learning: mode}, relay.SideOptions{}, annA, b.addr)
		first.send(t, toA, pkt(1))
		if mode == relay.LearnHeuristic {
			b.expectNothing(t)
			return
		}
		b.expect(t, 1, toB, same(pkt(1)))
		second.send(t, toA, pkt(2))
		b.expect(t, 1, toB, same(pkt(2)))
		f := l.waitFlow(t, toB, func(f relay.FlowInfo) bool { return f.Dst == second.addr })
		if f.Dst != second.addr {
			t.Fatalf("B→A goes to %s, want the latest source %s", f.Dst, second.addr)
		}
		if f := l.flow(t, toA); f.Latch != relay.LatchProvisional {
			t.Fatalf("A→B latch %s during the window, want %s", f.Latch, relay.LatchProvisional)
		}
		b.send(t, toB, pkt(3))
		second.expect(t, 1, toA, same(pkt(3)))
	})
}

// endpoint-learning=off (rtpengine's manual page, --endpoint-learning; EL_OFF
// never moves the endpoint): B's media goes to A's SDP address, not to
// the source A's packets latched.
func TestEndpointLearningOff(t *testing.T) {
	l := newLiveRelay(t)
	againstDefault(t, relay.LearnOff, func(t *testing.T, mode relay.LearnMode) {
		ann, sender, b := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
		toA, toB := l.call(t, "off-"+mode.String(), relay.SideOptions{Learning: mode}, relay.SideOptions{}, ann.addr, b.addr)
		sender.send(t, toA, pkt(1)) // the SDP's IP: trusted, forwarded
		b.expect(t, 1, toB, same(pkt(1)))
		want := sender
		if mode == relay.LearnOff {
			want = ann
		}
		f := l.waitFlow(t, toB, func(f relay.FlowInfo) bool { return f.Dst == want.addr })
		if f.Dst != want.addr {
			t.Fatalf("B→A goes to %s, want %s", f.Dst, want.addr)
		}
		b.send(t, toB, pkt(2))
		want.expect(t, 1, toA, same(pkt(2)))
	})
}

// NAT-wait (ng_control_protocol.md "NAT-wait"; media_socket.c drops what
// goes to a sink that has not sent): B asked for it, so A's media is
// held until B's first packet; without it A's first packet reaches B.
func TestNATWait(t *testing.T) {
	l := newLiveRelay(t)
	withAndWithout(t, "nat-wait", func(t *testing.T, on bool) {
		a, b := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
		toA, toB := l.call(t, "nw-"+name(on, "nat-wait"), relay.SideOptions{}, relay.SideOptions{NATWait: on}, a.addr, b.addr)
		before := l.r.Counters()["nat_wait"]
		a.send(t, toA, pkt(1))
		if !on {
			b.expect(t, 1, toB, same(pkt(1)))
			return
		}
		b.expectNothing(t)
		if c := waitCounters(l.r, func(c map[string]uint64) bool { return c["nat_wait"] > before }); c["nat_wait"] != before+1 {
			t.Fatalf("nat_wait counter %d, want %d", c["nat_wait"], before+1)
		}
		// B sends: it reaches A, and A's media flows from now on.
		b.send(t, toB, pkt(2))
		a.expect(t, 1, toA, same(pkt(2)))
		l.waitFlow(t, toA, func(f relay.FlowInfo) bool { return f.KernelError == "" })
		a.send(t, toA, pkt(3))
		b.expect(t, 1, toB, same(pkt(3)))
	})
}

// media handover (ng_control_protocol.md "media handover";
// media_socket.c re-learns the endpoint of a confirmed stream): A's
// locked flow follows A to a new address, and B's media follows too;
// without it the new address is a wrong source.
func TestMediaHandover(t *testing.T) {
	l := newLiveRelay(t)
	withAndWithout(t, "handover", func(t *testing.T, on bool) {
		a, moved, b := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.2"), newPhone(t, "127.0.0.1")
		toA, toB := l.call(t, "ho-"+name(on, "handover"), relay.SideOptions{Handover: on}, relay.SideOptions{}, a.addr, b.addr)
		a.send(t, toA, pkt(1)) // the SDP's address and port: locks at once
		b.expect(t, 1, toB, same(pkt(1)))
		l.waitFlow(t, toA, func(f relay.FlowInfo) bool { return f.Latch == relay.LatchLocked })
		moved.send(t, toA, pkt(2))
		if !on {
			b.expectNothing(t)
			if f := l.flow(t, toB); f.Dst != a.addr {
				t.Fatalf("B→A goes to %s, want %s", f.Dst, a.addr)
			}
			return
		}
		b.expect(t, 1, toB, same(pkt(2)))
		f := l.waitFlow(t, toA, func(f relay.FlowInfo) bool { return f.Peer == moved.addr })
		if f.Peer != moved.addr || f.Latch != relay.LatchLocked {
			t.Fatalf("A→B %s on %s, want locked on %s", f.Latch, f.Peer, moved.addr)
		}
		l.waitFlow(t, toB, func(f relay.FlowInfo) bool { return f.Dst == moved.addr })
		b.send(t, toB, pkt(3))
		moved.expect(t, 1, toA, same(pkt(3)))
		// Moving back is a handover too.
		a.send(t, toA, pkt(4))
		b.expect(t, 1, toB, same(pkt(4)))
	})
}

// pierce NAT (ng_control_protocol.md "pierce NAT"; call.c
// call_stream_state_machine): A asked, so A's SDP address gets
// rtpengine's 12-byte packet from the port A sends to, about once a
// second, until A's own packet locks the flow; a call without the flag
// sends nothing.
func TestPierceNAT(t *testing.T) {
	l := newLiveRelay(t)
	pierce := []byte{0x80, 0x7f, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}
	withAndWithout(t, "pierce", func(t *testing.T, on bool) {
		a, b := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
		toA, toB := l.call(t, "pn-"+name(on, "pierce"), relay.SideOptions{PierceNAT: on}, relay.SideOptions{}, a.addr, b.addr)
		if !on {
			quiet(t, a, 1500*time.Millisecond)
			return
		}
		a.expect(t, 1, toA, same(pierce)) // within Run's second
		a.send(t, toA, pkt(1))            // the SDP's address: locks
		b.expect(t, 1, toB, same(pkt(1)))
		l.waitFlow(t, toA, func(f relay.FlowInfo) bool { return f.Latch == relay.LatchLocked })
		// One may have left before the lock; none after the next second.
		drain(a)
		quiet(t, a, 1500*time.Millisecond)
		if tot := l.e.Stats(); tot.PierceNAT == 0 {
			t.Fatal("Stats().PierceNAT = 0")
		}
	})
}

// quiet checks p receives nothing for d.
func quiet(t *testing.T, p *phone, d time.Duration) {
	t.Helper()
	buf := make([]byte, 2048)
	p.c.SetReadDeadline(time.Now().Add(d))
	if n, from, err := p.c.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatalf("%s: unexpected %d bytes from %s", p.addr, n, from)
	}
}

// drain reads what is queued on p.
func drain(p *phone) {
	buf := make([]byte, 2048)
	for {
		p.c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, _, err := p.c.ReadFromUDPAddrPort(buf); err != nil {
			return
		}
	}
}

// no port latching (ng_control_protocol.md "no port latching"): after
// RenewPorts A sends to its new relay port, which relays both ways; the
// old port is closed (nothing relays from it any more).
func TestRenewPortsRelays(t *testing.T) {
	l := newLiveRelay(t)
	a, b := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
	oldA, toB := l.call(t, "renew", relay.SideOptions{}, relay.SideOptions{}, a.addr, b.addr)
	a.send(t, oldA, pkt(1))
	b.expect(t, 1, toB, same(pkt(1)))
	np, err := l.e.RenewPorts("renew", 0, relay.SideA)
	if err != nil {
		t.Fatal(err)
	}
	newA := netip.AddrPortFrom(np.A.Local, np.A.RTP)
	if newA == oldA || netip.AddrPortFrom(np.B.Local, np.B.RTP) != toB {
		t.Fatalf("A's port %s → %s, B's %s → %s", oldA, newA, toB, netip.AddrPortFrom(np.B.Local, np.B.RTP))
	}
	a.send(t, oldA, pkt(2))
	b.expectNothing(t)
	a.send(t, newA, pkt(3))
	b.expect(t, 1, toB, same(pkt(3)))
	b.send(t, toB, pkt(4))
	a.expect(t, 1, newA, same(pkt(4)))
}
