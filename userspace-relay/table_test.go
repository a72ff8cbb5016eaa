package usrelay

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"unsafe"

	"sipxdp/relay"
	"sipxdp/relay/fixtures"
	"sipxdp/relay/packet"
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

func toVerdict(v fixtures.Verdict) Verdict {
	if v == fixtures.Forward {
		return Forward
	}
	return Drop
}

// TestFixtures runs the shared table through both ways in: Table.Process
// and the worker's batch decision on the datagram as a socket delivers it.
func TestFixtures(t *testing.T) {
	for _, c := range fixtures.Cases() {
		t.Run(c.Name, func(t *testing.T) {
			in, err := packet.Parse(c.In)
			if err != nil {
				if c.User != fixtures.Pass {
					t.Fatalf("parse: %v, but expected user verdict %v", err, c.User)
				}
				return
			}
			if c.User == fixtures.Pass {
				t.Fatalf("parsed, but expected user verdict pass")
			}
			var want packet.Frame
			if c.User == fixtures.Forward {
				if want, err = packet.Parse(c.Out); err != nil {
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
			if c.User == fixtures.Forward {
				if d.Out != want.Src || d.Dst != want.Dst {
					t.Fatalf("Process sends %s -> %s, want %s -> %s", d.Out, d.Dst, want.Src, want.Dst)
				}
				if !bytes.Equal(in.Payload, want.Payload) {
					t.Fatalf("fixture payload changed in flight")
				}
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
			out, ns := w.decideBatch(e, 1, 1)
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

var (
	la   = netip.MustParseAddrPort("192.0.2.1:30000")
	lb   = netip.MustParseAddrPort("192.0.2.1:30002")
	pa   = netip.MustParseAddrPort("198.51.100.10:4000")
	pb   = netip.MustParseAddrPort("203.0.113.20:5000")
	lb6  = netip.MustParseAddrPort("[fd00:1::1]:30006")
	pb6  = netip.MustParseAddrPort("[fd00:b::20]:5000")
	keyA = relay.FlowKey{Local: la}
	keyB = relay.FlowKey{Local: lb}
)

func TestTableSemantics(t *testing.T) {
	tb := NewTable()
	if err := tb.Upsert(relay.Flow{Key: keyA, Peer: pa, Learning: true, Out: lb, Dst: pb}); err != nil {
		t.Fatal(err)
	}
	natted := netip.AddrPortFrom(netip.MustParseAddr("198.51.100.99"), 61000)
	if d := tb.Process(la, natted, 160); d.Verdict != Forward || !d.Latched {
		t.Fatalf("first datagram: %+v, want forward and latch", d)
	}
	if d := tb.Process(la, natted, 160); d.Verdict != Forward || d.Latched {
		t.Fatalf("second datagram: %+v, want forward without latch", d)
	}
	if d := tb.Process(la, pa, 160); d.Verdict != Drop || d.Reason != ReasonWrongSource {
		t.Fatalf("announced peer after latch: %+v, want wrong_source", d)
	}
	// v4-mapped sources are the same peer.
	mapped := netip.AddrPortFrom(netip.AddrFrom16(natted.Addr().As16()), natted.Port())
	if d := tb.Process(la, mapped, 10); d.Verdict != Forward {
		t.Fatalf("v4-mapped source: %+v, want forward", d)
	}
	if d := tb.Process(lb, pb, 160); d.Reason != ReasonNoFlow {
		t.Fatalf("unknown local: %+v, want no_flow", d)
	}
	s, err := tb.Stats(keyA)
	if err != nil || s.Packets != 3 || s.Bytes != 330 || s.LastSeen.IsZero() {
		t.Fatalf("stats = %+v, %v", s, err)
	}
	peer, learning, _ := tb.Peer(keyA)
	if peer != natted || learning {
		t.Fatalf("peer = %s learning=%v", peer, learning)
	}
	// Replacing the flow keeps its counters.
	if err := tb.Upsert(relay.Flow{Key: keyA, Peer: natted, Out: lb, Dst: pb}); err != nil {
		t.Fatal(err)
	}
	if s2, _ := tb.Stats(keyA); s2.Packets != 3 {
		t.Fatalf("stats after replace = %+v", s2)
	}
	c := tb.Counters()
	if c["received"] != 5 || c["forwarded"] != 3 || c["latched"] != 1 || c["wrong_source"] != 1 || c["no_flow"] != 1 || c["dropped"] != 2 {
		t.Fatalf("counters = %v", c)
	}

	// Strict learning refuses other addresses and latches the announced one
	// on any port.
	if err := tb.Upsert(relay.Flow{Key: keyB, Peer: pb, Learning: true, Strict: true, Out: la, Dst: pa}); err != nil {
		t.Fatal(err)
	}
	if d := tb.Process(lb, natted, 1); d.Reason != ReasonStrict {
		t.Fatalf("strict, other IP: %+v", d)
	}
	if d := tb.Process(lb, netip.AddrPortFrom(pb.Addr(), 7), 1); !d.Latched {
		t.Fatalf("strict, announced IP: %+v", d)
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
	// la is still the Out of flow B.
	if tb.Len() != 2 {
		t.Fatalf("ports = %d, want 2", tb.Len())
	}
	tb.Delete(keyB)
	if tb.Len() != 0 {
		t.Fatalf("ports = %d after deleting everything", tb.Len())
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
	payload := fixtures.RTPPayload(1, 160)
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
	payload := fixtures.RTPPayload(1, 160)
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
