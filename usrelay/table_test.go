package usrelay

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"sipxdp/relay"
	"sipxdp/relay/relaytest"
)

// fakeWorker is a worker with buffers and no descriptors, to drive the
// real per-batch decision without sockets.
func fakeWorker(batch int) *worker {
	w := &worker{r: &Relay{}, batch: batch}
	w.initBuffers(batch)
	return w
}

// load puts one received datagram into slot i as recvmmsg would.
func (w *worker) load(i int, src netip.AddrPort, v6sock bool, payload []byte) {
	w.rname[i], w.rhdr[i].Hdr.Namelen = encodeSockaddr(src, v6sock)
	w.rhdr[i].Hdr.Flags = 0
	w.rhdr[i].Len = uint32(copy(w.buf[i*bufSize:(i+1)*bufSize], payload))
}

// sent returns message i of the prepared sendmmsg batch.
func (w *worker) sent(i int) (netip.AddrPort, []byte) {
	dst, _ := decodeSockaddr(&w.sname[i], w.shdr[i].Hdr.Namelen)
	b := unsafe.Slice(w.siov[i].Base, w.siov[i].Len)
	return dst, b
}

func toVerdict(v relaytest.Verdict) Verdict {
	if v == relaytest.Forward {
		return Forward
	}
	return Drop
}

// TestFixtures runs the shared table through both ways in: Table.Process
// and the worker's batch decision on the datagram as a socket delivers it.
func TestFixtures(t *testing.T) {
	for _, c := range relaytest.Cases() {
		t.Run(c.Name, func(t *testing.T) {
			in, err := relaytest.Parse(c.In)
			if err != nil {
				if c.User != relaytest.Pass {
					t.Fatalf("parse: %v, but expected user verdict %v", err, c.User)
				}
				return
			}
			if c.User == relaytest.Pass {
				t.Fatalf("parsed, but expected user verdict pass")
			}
			var want relaytest.Frame
			if c.User == relaytest.Forward {
				if want, err = relaytest.Parse(c.Out); err != nil {
					t.Fatalf("parse expected out: %v", err)
				}
			}

			tb := NewTable()
			for _, f := range c.Flows {
				if err := tb.Upsert(f); err != nil {
					t.Fatalf("upsert: %v", err)
				}
			}
			d := tb.Process(in.Dst, in.Src, len(in.Payload))
			if d.Verdict != toVerdict(c.User) || d.Latched != c.UserLatch {
				t.Fatalf("Process = %v latched=%v (%v), want %v latched=%v", d.Verdict, d.Latched, d.Reason, c.User, c.UserLatch)
			}
			if c.User == relaytest.Forward {
				if d.Out != want.Src || d.Dst != want.Dst {
					t.Fatalf("Process sends %s -> %s, want %s -> %s", d.Out, d.Dst, want.Src, want.Dst)
				}
				if !bytes.Equal(in.Payload, want.Payload) {
					t.Fatalf("fixture payload changed in flight")
				}
				checkTOS(t, c.Flows, in.Dst, d.Out, want)
			}

			// Fresh flows: the Process run above may have latched.
			tb = NewTable()
			for _, f := range c.Flows {
				if err := tb.Upsert(f); err != nil {
					t.Fatalf("upsert: %v", err)
				}
			}
			w := fakeWorker(4)
			var e *flowEntry
			if p := tb.ports[in.Dst]; p != nil {
				e = p.flow.Load()
			}
			w.load(0, in.Src, in.Dst.Addr().Is6(), in.Payload)
			out, ns := w.decideBatch(e, 1, time.Now().UnixNano())
			gotV := Drop
			if ns == 1 {
				gotV = Forward
			}
			if gotV != toVerdict(c.User) || (w.cnt.c[cntLatched].Load() == 1) != c.UserLatch {
				t.Fatalf("decideBatch = %v latched=%d, want %v latched=%v", gotV, w.cnt.c[cntLatched].Load(), c.User, c.UserLatch)
			}
			if ns == 1 {
				dst, payload := w.sent(0)
				if out.addr != want.Src || dst != want.Dst || !bytes.Equal(payload, want.Payload) {
					t.Fatalf("decideBatch sends %s -> %s (%d bytes), want %s -> %s (%d bytes)",
						out.addr, dst, len(payload), want.Src, want.Dst, len(want.Payload))
				}
			}
		})
	}
}

// checkTOS checks the header byte a flow with a TOS sends with: the kernel
// writes it into the frame, userspace sets it on the socket it sends from
// (Relay.setTOS), whose family may be the other one than the key's. Without
// a TOS the kernel keeps the packet's and a socket sends its default, so
// only flows with one are compared.
func checkTOS(t *testing.T, flows []relay.Flow, key, out netip.AddrPort, want relaytest.Frame) {
	t.Helper()
	for _, f := range flows {
		if f.Key.Local != key || !f.TOS.Set {
			continue
		}
		lvl, opt, v := tosOption(out, f.TOS)
		wantLvl, wantOpt := unix.IPPROTO_IP, unix.IP_TOS
		if want.Src.Addr().Is6() {
			wantLvl, wantOpt = unix.IPPROTO_IPV6, unix.IPV6_TCLASS
		}
		if lvl != wantLvl || opt != wantOpt || v != int(want.TOS) {
			t.Fatalf("socket option for %s: level %d opt %d value %#x, want level %d opt %d value %#x",
				out, lvl, opt, v, wantLvl, wantOpt, want.TOS)
		}
	}
}

var (
	la   = netip.MustParseAddrPort("192.0.2.1:30000")
	lb   = netip.MustParseAddrPort("192.0.2.1:30002")
	pa   = netip.MustParseAddrPort("198.51.100.10:4000")
	pb   = netip.MustParseAddrPort("203.0.113.20:5000")
	lb6  = netip.MustParseAddrPort("[fd00:1::1]:30006")
	pb6  = netip.MustParseAddrPort("[fd00:b::20]:5000")
	keyA = relay.FlowKey{Local: la}
)

func TestTableSemantics(t *testing.T) {
	tb := NewTable()
	if err := tb.Upsert(relay.Flow{Key: keyA, Peer: pa, Learning: true, Announced: pa, LearnUntil: time.Now().Add(time.Hour),
		Out: lb, Dst: pb}); err != nil {
		t.Fatal(err)
	}
	natted := netip.AddrPortFrom(pa.Addr(), 61000)
	if d := tb.Process(la, natted, 160); d.Verdict != Forward || !d.Latched || d.Event != changeLatch {
		t.Fatalf("first datagram: %+v, want forward and a provisional latch", d)
	}
	if d := tb.Process(la, natted, 160); d.Verdict != Forward || d.Latched || d.Event != changeNone {
		t.Fatalf("second datagram: %+v, want forward without latch", d)
	}
	// The announced address itself takes over and locks.
	if d := tb.Process(la, pa, 160); d.Verdict != Forward || d.Event != changeLatch|changeRelatch|changeLock {
		t.Fatalf("announced address: %+v, want relatch and lock", d)
	}
	if d := tb.Process(la, natted, 160); d.Verdict != Drop || d.Reason != ReasonWrongSource {
		t.Fatalf("earlier source after the lock: %+v, want wrong_source", d)
	}
	// v4-mapped sources are the same peer.
	mapped := netip.AddrPortFrom(netip.AddrFrom16(pa.Addr().As16()), pa.Port())
	if d := tb.Process(la, mapped, 10); d.Verdict != Forward {
		t.Fatalf("v4-mapped source: %+v, want forward", d)
	}
	if d := tb.Process(lb, pb, 160); d.Reason != ReasonNoFlow {
		t.Fatalf("unknown local: %+v, want no_flow", d)
	}
	s, err := tb.Stats(keyA)
	if err != nil || s.Packets != 4 || s.Bytes != 490 || s.LastSeen.IsZero() {
		t.Fatalf("stats = %+v, %v", s, err)
	}
	ev, _ := tb.Latch(keyA)
	if ev.Latch.Source != pa || !ev.Latch.Locked || ev.Latch.Rank != relay.RankExact || ev.Announced != pa {
		t.Fatalf("latch = %+v", ev)
	}
	// Replacing the flow keeps its counters.
	if err := tb.Upsert(relay.Flow{Key: keyA, Peer: pa, Out: lb, Dst: pb}); err != nil {
		t.Fatal(err)
	}
	if s2, _ := tb.Stats(keyA); s2.Packets != 4 {
		t.Fatalf("stats after replace = %+v", s2)
	}
	c := tb.Counters()
	if c["received"] != 6 || c["forwarded"] != 4 || c["latched"] != 2 || c["relatched"] != 1 || c["locked"] != 1 ||
		c["wrong_source"] != 1 || c["no_flow"] != 1 || c["dropped"] != 2 {
		t.Fatalf("counters = %v", c)
	}

	if err := tb.Delete(keyA); err != nil {
		t.Fatal(err)
	}
	if err := tb.Delete(keyA); !errors.Is(err, relay.ErrFlowNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := tb.Stats(keyA); !errors.Is(err, relay.ErrFlowNotFound) {
		t.Fatalf("stats after delete: %v", err)
	}
	if _, err := tb.Latch(keyA); !errors.Is(err, relay.ErrFlowNotFound) {
		t.Fatalf("latch after delete: %v", err)
	}
	if tb.Len() != 0 {
		t.Fatalf("ports = %d after deleting everything", tb.Len())
	}
}

// TestTableLearning drives one learning flow through a sequence of
// datagrams at given times (seconds; the window closes at 3) and checks
// each decision: the ranking, the window and the lock of relay.Latch.
func TestTableLearning(t *testing.T) {
	private := netip.MustParseAddrPort("10.1.1.10:4000") // what a NATed phone announces
	sig := pa.Addr()                                     // where its SIP comes from
	nat := netip.AddrPortFrom(sig, 61000)
	natIP := netip.AddrPortFrom(pa.Addr(), 4002) // announced IP, another port
	x := netip.MustParseAddrPort("198.51.100.99:7000")
	y := netip.MustParseAddrPort("198.51.100.98:7000")
	type step struct {
		at     float64 // seconds after the start
		src    netip.AddrPort
		want   Verdict
		reason Reason
		ch     latchChange
	}
	tests := []struct {
		name   string
		flow   relay.Flow // Key, Out, Dst filled in; LearnUntil is 3 s unless noWindow
		noWin  bool
		steps  []step
		locked netip.AddrPort // the locked source at the end; zero: still learning
	}{
		{name: "announced address locks at once, nothing beats it",
			flow: relay.Flow{Announced: pa},
			steps: []step{
				{0, pa, Forward, ReasonNone, changeLatch | changeLock},
				{0.1, natIP, Drop, ReasonWrongSource, 0},
				{0.2, x, Drop, ReasonWrongSource, 0},
			}, locked: pa},
		{name: "announced address beats an earlier latch",
			flow: relay.Flow{Announced: pa},
			steps: []step{
				{0, natIP, Forward, ReasonNone, changeLatch},
				{0.5, pa, Forward, ReasonNone, changeLatch | changeRelatch | changeLock},
				{1, natIP, Drop, ReasonWrongSource, 0},
			}, locked: pa},
		{name: "announced IP beats a candidate; the candidate is never forwarded",
			flow: relay.Flow{Announced: pa},
			steps: []step{
				{0, x, Drop, ReasonForeign, changeCandidate},
				{0.02, x, Drop, ReasonForeign, 0},
				{0.1, natIP, Forward, ReasonNone, changeLatch},
				{0.2, x, Drop, ReasonForeign, 0},
				{3.1, x, Drop, ReasonWrongSource, changeLock},
				{3.2, natIP, Forward, ReasonNone, 0},
			}, locked: natIP},
		{name: "signaling address is as good as the announced IP",
			flow: relay.Flow{Announced: private, Hints: [2]netip.Addr{sig}},
			steps: []step{
				{0, x, Drop, ReasonForeign, changeCandidate},
				{0.5, nat, Forward, ReasonNone, changeLatch},
				{1, y, Drop, ReasonForeign, 0},
				{3.5, nat, Forward, ReasonNone, changeLock},
				{4, x, Drop, ReasonWrongSource, 0},
			}, locked: nat},
		{name: "equal rank never replaces",
			flow: relay.Flow{Announced: private, Hints: [2]netip.Addr{sig}},
			steps: []step{
				{0, nat, Forward, ReasonNone, changeLatch},
				{0.1, netip.AddrPortFrom(sig, 61002), Drop, ReasonForeign, 0},
			}},
		{name: "first candidate is locked when nothing better came",
			flow: relay.Flow{Announced: private},
			steps: []step{
				{0, x, Drop, ReasonForeign, changeCandidate},
				{1, y, Drop, ReasonForeign, 0},
				{3, y, Drop, ReasonWrongSource, changeLock},
				{3.1, x, Forward, ReasonNone, 0},
			}, locked: x},
		{name: "nothing in the window: a trusted source locks at once, others are dropped",
			flow: relay.Flow{Announced: private, Hints: [2]netip.Addr{sig}},
			steps: []step{
				{4, x, Drop, ReasonForeign, 0},
				{5, nat, Forward, ReasonNone, changeLatch | changeLock},
				{5.1, x, Drop, ReasonWrongSource, 0},
			}, locked: nat},
		{name: "no candidates (RTCP, or not announced yet)",
			flow: relay.Flow{Announced: pa, NoCandidates: true},
			steps: []step{
				{0, x, Drop, ReasonForeign, 0},
				{3.5, x, Drop, ReasonForeign, 0},
				{4, natIP, Forward, ReasonNone, changeLatch | changeLock},
			}, locked: natIP},
		{name: "side not announced: the signaling address is trusted, nothing locks",
			flow: relay.Flow{Hints: [2]netip.Addr{sig}, NoCandidates: true}, noWin: true,
			steps: []step{
				{0, x, Drop, ReasonForeign, 0},
				{1, nat, Forward, ReasonNone, changeLatch},
				{100, nat, Forward, ReasonNone, 0},
				{100, x, Drop, ReasonForeign, 0},
			}},
		{name: "strict: only the announced IP, no hint, no candidate",
			flow: relay.Flow{Announced: pa, Hints: [2]netip.Addr{x.Addr()}, Strict: true},
			steps: []step{
				{0, x, Drop, ReasonStrict, 0},
				{0.1, natIP, Forward, ReasonNone, changeLatch},
				{0.2, pa, Forward, ReasonNone, changeLatch | changeRelatch | changeLock},
				{0.3, y, Drop, ReasonWrongSource, 0},
			}, locked: pa},
		{name: "strict: nothing in the window, the announced IP locks later",
			flow: relay.Flow{Announced: pa, Strict: true},
			steps: []step{
				{5, x, Drop, ReasonStrict, 0},
				{6, natIP, Forward, ReasonNone, changeLatch | changeLock},
			}, locked: natIP},
	}
	start := time.Unix(1_000_000, 0)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.flow
			f.Key, f.Out, f.Dst, f.Learning, f.Peer = keyA, lb, pb, true, f.Announced
			if !tt.noWin {
				f.LearnUntil = start.Add(3 * time.Second)
			}
			tb := NewTable()
			if err := tb.Upsert(f); err != nil {
				t.Fatal(err)
			}
			for i, st := range tt.steps {
				at := start.Add(time.Duration(st.at * float64(time.Second)))
				d := tb.ProcessAt(la, st.src, 160, at)
				if d.Verdict != st.want || d.Reason != st.reason || d.Event != st.ch {
					t.Fatalf("step %d (%s at %.2fs): %v %v change %b, want %v %v change %b",
						i, st.src, st.at, d.Verdict, d.Reason, d.Event, st.want, st.reason, st.ch)
				}
			}
			ev, _ := tb.Latch(keyA)
			if tt.locked.IsValid() != ev.Latch.Locked || (ev.Latch.Locked && ev.Latch.Source != tt.locked) {
				t.Fatalf("latch at the end = %+v, want locked to %v", ev.Latch, tt.locked)
			}
		})
	}
}

// An engine that lags behind (its copy of the latch is older than what
// the table decided since) must not take a flow back; a new announced
// address resets it.
func TestTableUpsertKeepsLatch(t *testing.T) {
	until := time.Now().Add(time.Hour)
	learn := relay.Flow{Key: keyA, Peer: pa, Learning: true, Announced: pa, LearnUntil: until, Out: lb, Dst: pb}
	tb := NewTable()
	tb.Upsert(learn)
	if d := tb.Process(la, pa, 10); d.Event&changeLock == 0 {
		t.Fatalf("announced address: %+v, want a lock", d)
	}
	// The engine re-installs the flow (a new window, a hint) from before
	// it heard of the lock.
	again := learn
	again.Hints = [2]netip.Addr{pb.Addr()}
	tb.Upsert(again)
	x := netip.MustParseAddrPort("198.51.100.99:7000")
	if d := tb.Process(la, x, 10); d.Reason != ReasonWrongSource {
		t.Fatalf("after a lagging upsert: %+v, want the lock kept", d)
	}
	// A new offer: learning starts over.
	moved := learn
	moved.Announced, moved.Peer = netip.MustParseAddrPort("203.0.113.77:4000"), netip.MustParseAddrPort("203.0.113.77:4000")
	tb.Upsert(moved)
	if ev, _ := tb.Latch(keyA); ev.Latch.Locked || ev.Latch.Rank != relay.RankNone || ev.Announced != moved.Announced {
		t.Fatalf("after a new offer: %+v, want learning from scratch", ev)
	}
}

func TestTableRejects(t *testing.T) {
	tb := NewTable()
	bad := []relay.Flow{
		{Out: lb, Dst: pb},
		{Key: keyA, Dst: pb},
		{Key: keyA, Out: lb},
		{Key: keyA, Out: lb, Dst: pb6}, // family of Out and Dst differ
	}
	for _, f := range bad {
		if err := tb.Upsert(f); !errors.Is(err, relay.ErrUnsupportedFlow) {
			t.Errorf("Upsert(%+v) = %v, want ErrUnsupportedFlow", f, err)
		}
	}
	// Key and Out in different families is the cross-family relay case.
	if err := tb.Upsert(relay.Flow{Key: keyA, Peer: pa, Out: lb6, Dst: pb6}); err != nil {
		t.Fatalf("cross-family flow: %v", err)
	}
	if d := tb.Process(la, pa, 5); d.Verdict != Forward || d.Out != lb6 || d.Dst != pb6 {
		t.Fatalf("cross-family: %+v", d)
	}
}

func TestDecideBatchNoAlloc(t *testing.T) {
	tb := NewTable()
	tb.Upsert(relay.Flow{Key: keyA, Peer: pa, Out: lb, Dst: pb})
	e := tb.ports[la].flow.Load()
	w := fakeWorker(32)
	payload := relaytest.RTPPayload(1, 160)
	for i := 0; i < 32; i++ {
		w.load(i, pa, false, payload)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if _, ns := w.decideBatch(e, 32, 1); ns != 32 {
			t.Fatalf("forwarded %d of 32", ns)
		}
	})
	if allocs != 0 {
		t.Fatalf("decideBatch allocates %.1f times per batch", allocs)
	}
	allocs = testing.AllocsPerRun(1000, func() { tb.Process(la, pa, 160) })
	if allocs != 0 {
		t.Fatalf("Process allocates %.1f times per datagram", allocs)
	}
}

func BenchmarkProcess(b *testing.B) {
	tb := NewTable()
	tb.Upsert(relay.Flow{Key: keyA, Peer: pa, Out: lb, Dst: pb})
	b.ReportAllocs()
	for b.Loop() {
		tb.Process(la, pa, 160)
	}
}

// BenchmarkDecideBatch is the worker's per-datagram work between recvmmsg
// and sendmmsg, reported per datagram.
func BenchmarkDecideBatch(b *testing.B) {
	tb := NewTable()
	tb.Upsert(relay.Flow{Key: keyA, Peer: pa, Out: lb, Dst: pb})
	e := tb.ports[la].flow.Load()
	w := fakeWorker(32)
	payload := relaytest.RTPPayload(1, 160)
	for i := 0; i < 32; i++ {
		w.load(i, pa, false, payload)
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		w.decideBatch(e, 32, 1)
		n += 32
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/datagram")
}
