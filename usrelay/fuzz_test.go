package usrelay

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sipxdp/relay"
	"sipxdp/relay/relaytest"
)

// FuzzDecideBatch feeds the worker what recvmmsg would write (source
// sockaddrs, name lengths, flags, datagram lengths) and checks that only
// datagrams from the source the flow took are forwarded, to the flow's
// destination, with their own length, that a source that matches neither
// the announced IP nor the hint is never forwarded while learning, and
// that every datagram is accounted for.
func FuzzDecideBatch(f *testing.F) {
	v4, _ := encodeSockaddr(pa, false)
	v6, _ := encodeSockaddr(netip.MustParseAddrPort("[fd00:a::10]:4000"), true)
	mapped, _ := encodeSockaddr(netip.AddrPortFrom(netip.AddrFrom16(pa.Addr().As16()), pa.Port()), true)
	f.Add(byte(0), v4[:], uint32(16), uint16(172), false)
	f.Add(byte(1), v4[:], uint32(16), uint16(172), false)
	f.Add(byte(3), v6[:], uint32(28), uint16(12), false)
	f.Add(byte(2), mapped[:], uint32(28), uint16(2048), true)
	f.Add(byte(1), []byte{2, 0}, uint32(3), uint16(0), false)
	f.Add(byte(8|1), v4[:], uint32(16), uint16(172), false)    // held
	f.Add(byte(16), v4[:], uint32(16), uint16(172), false)     // handover
	f.Add(byte(1<<5|1), v4[:], uint32(16), uint16(172), false) // immediate
	f.Add(byte(2<<5|1), v4[:], uint32(16), uint16(172), false) // delayed
	f.Fuzz(func(t *testing.T, mode byte, name []byte, namelen uint32, size uint16, trunc bool) {
		learning, strict, closed := mode&1 != 0, mode&2 != 0, mode&4 != 0
		// The latching flags: NAT-wait's hold, media handover, and how
		// the side learns (heuristic, immediate, delayed).
		hold, handover, learn := mode&8 != 0, mode&16 != 0, relay.LearnMode(mode>>5%3)
		hint := netip.MustParseAddr("198.51.100.77")
		fl := relay.Flow{Key: keyA, Peer: pa, Learning: learning, Strict: strict, Out: lb6, Dst: pb6,
			Hold: hold, Handover: handover, Learn: learn}
		if learning {
			fl.Announced, fl.Hints = pa, [2]netip.Addr{hint}
			fl.LearnUntil = time.Unix(0, 100) // the batch runs at 1 (open) or 200 (closed)
		}
		now := int64(1)
		if closed {
			now = 200
		}
		tb := NewTable()
		if err := tb.Upsert(fl); err != nil {
			t.Fatal(err)
		}
		e := tb.ports[la].flow.Load()
		const n = 4
		w := fakeWorker(n)
		for i := 0; i < n; i++ {
			// Each datagram varies the input a little so one run covers a
			// learning flow seeing several sources.
			copy(w.rname[i][:], name)
			if len(name) > 3 {
				w.rname[i][3] ^= byte(i)
			}
			w.rhdr[i].Hdr.Namelen = namelen
			w.rhdr[i].Len = uint32(size) % (bufSize + 1)
			if trunc && i == 0 {
				w.rhdr[i].Hdr.Flags = unix.MSG_TRUNC
			}
		}
		out, ns := w.decideBatch(e, n, now)
		if ns > n || hold && ns > 0 {
			t.Fatalf("sent %d of %d (held %v)", ns, n, hold)
		}
		if ns > 0 && out.addr != lb6 {
			t.Fatalf("sends from %s", out.addr)
		}
		ev, _ := tb.Latch(keyA)
		peer := ev.Latch.Source
		if !learning {
			peer = pa
		}
		// Every forwarded datagram is one of the batch, in order, sent
		// whole to the flow's destination, from a source the flow may
		// take: its peer when locked from the start, else a trusted one
		// (a candidate is held, not forwarded).
		last := -1
		for j := 0; j < ns; j++ {
			i := -1
			for k := last + 1; k < n; k++ {
				if w.siov[j].Base == &w.buf[k*bufSize] {
					i = k
					break
				}
			}
			if i < 0 {
				t.Fatalf("message %d is no datagram of the batch after %d", j, last)
			}
			last = i
			dst, b := w.sent(j)
			if dst != pb6 || len(b) != int(w.rhdr[i].Len) || w.rhdr[i].Hdr.Flags&unix.MSG_TRUNC != 0 {
				t.Fatalf("message %d: to %s, %d bytes", j, dst, len(b))
			}
			src, ok := decodeSockaddr(&w.rname[i], w.rhdr[i].Hdr.Namelen)
			switch {
			case !ok:
				t.Fatalf("forwarded datagram %d with no source", i)
			case !learning && !handover && src != pa:
				t.Fatalf("locked flow forwarded %s", src)
			case learning && learn == relay.LearnHeuristic && relay.RankOf(src, pa, [2]netip.Addr{hint}, strict) < relay.RankIP:
				t.Fatalf("learning flow forwarded %s, which matches neither %s's IP nor the hint", src, pa)
			}
		}
		if strict && ev.Latch.Rank != relay.RankNone && peer.Addr() != pa.Addr() {
			t.Fatalf("strict flow latched %s", peer)
		}
		if !learning && !handover && peer != pa {
			t.Fatalf("known peer changed to %s", peer)
		}
		c := map[string]uint64{}
		w.cnt.addTo(c)
		if c["locked"] > 1 && !handover {
			t.Fatalf("locked %d times", c["locked"])
		}
		drops := c["wrong_source"] + c["foreign_learning"] + c["strict"] + c["oversize"] + c["nat_wait"]
		if c["received"] != n || drops+uint64(ns) != n {
			t.Fatalf("counters %v with %d forwarded", c, ns)
		}
	})
}

// FuzzSockaddr checks that decoding whatever the kernel wrote never panics
// and that an address survives encode/decode for both socket families.
func FuzzSockaddr(f *testing.F) {
	f.Add([]byte{2, 0, 0x0f, 0xa0, 198, 51, 100, 10}, uint32(16))
	f.Add(make([]byte, 28), uint32(28))
	f.Fuzz(func(t *testing.T, b []byte, n uint32) {
		var sa sockaddr
		copy(sa[:], b)
		ap, ok := decodeSockaddr(&sa, n)
		if !ok {
			return
		}
		if ap.Addr().Is4In6() {
			t.Fatalf("decoded %s still v4-mapped", ap)
		}
		for _, v6 := range []bool{false, true} {
			if ap.Addr().Is6() && !v6 {
				continue
			}
			enc, l := encodeSockaddr(ap, v6)
			back, ok := decodeSockaddr(&enc, l)
			if !ok || back != ap {
				t.Fatalf("%s (v6 socket %v) came back as %s, %v", ap, v6, back, ok)
			}
		}
	})
}

// FuzzFrame runs arbitrary frames the way the fixture test does: what
// relaytest.Parse accepts goes through Table.Process with the fixture flows.
// Forwarded datagrams must come from the flow's peer and go to its Dst.
func FuzzFrame(f *testing.F) {
	for _, c := range relaytest.Cases() {
		f.Add(c.In)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := relaytest.Parse(b)
		if err != nil {
			return
		}
		tb := NewTable()
		flows := map[netip.AddrPort]relay.Flow{}
		for _, c := range relaytest.Cases()[:1] {
			for _, fl := range c.Flows {
				tb.Upsert(fl)
				flows[fl.Key.Local] = fl
			}
		}
		learn := relay.Flow{Key: relay.FlowKey{Local: relaytest.Relay6A}, Peer: relaytest.Caller6A, Learning: true,
			Announced: relaytest.Caller6A, LearnUntil: time.Now().Add(time.Hour), Out: relaytest.RelayB, Dst: relaytest.CalleeB}
		tb.Upsert(learn)
		flows[learn.Key.Local] = learn
		d := tb.Process(in.Dst, in.Src, len(in.Payload))
		fl, known := flows[normalize(in.Dst)]
		switch {
		case !known && d.Verdict != Drop:
			t.Fatalf("no flow for %s but %v", in.Dst, d.Verdict)
		case d.Verdict == Forward && (d.Out != fl.Out || d.Dst != fl.Dst):
			t.Fatalf("forwarded %s -> %s, flow says %s -> %s", d.Out, d.Dst, fl.Out, fl.Dst)
		case d.Verdict == Forward && !fl.Learning && normalize(in.Src) != fl.Peer:
			t.Fatalf("forwarded from %s, peer is %s", in.Src, fl.Peer)
		case d.Verdict == Forward && fl.Learning && normalize(in.Src).Addr() != fl.Announced.Addr():
			t.Fatalf("learning flow forwarded %s, which is not the announced %s's IP", in.Src, fl.Announced)
		}
		if s, err := tb.Stats(relay.FlowKey{Local: in.Dst}); err == nil && d.Verdict == Forward &&
			(s.Packets != 1 || s.Bytes != uint64(len(in.Payload))) {
			t.Fatalf("stats %+v after one %d-byte datagram", s, len(in.Payload))
		}
	})
}
