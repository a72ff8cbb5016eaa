package usrelay

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"sipxdp/relay"
	"sipxdp/relay/fixtures"
	"sipxdp/relay/packet"
)

// FuzzDecideBatch feeds the worker what recvmmsg would write (source
// sockaddrs, name lengths, flags, datagram lengths) and checks that only
// datagrams from the right peer are forwarded, to the flow's destination,
// with their own length, and that every datagram is accounted for.
func FuzzDecideBatch(f *testing.F) {
	v4, _ := encodeSockaddr(pa, false)
	v6, _ := encodeSockaddr(netip.MustParseAddrPort("[fd00:a::10]:4000"), true)
	mapped, _ := encodeSockaddr(netip.AddrPortFrom(netip.AddrFrom16(pa.Addr().As16()), pa.Port()), true)
	f.Add(byte(0), v4[:], uint32(16), uint16(172), false)
	f.Add(byte(1), v4[:], uint32(16), uint16(172), false)
	f.Add(byte(3), v6[:], uint32(28), uint16(12), false)
	f.Add(byte(2), mapped[:], uint32(28), uint16(2048), true)
	f.Add(byte(1), []byte{2, 0}, uint32(3), uint16(0), false)
	f.Fuzz(func(t *testing.T, mode byte, name []byte, namelen uint32, size uint16, trunc bool) {
		learning, strict := mode&1 != 0, mode&2 != 0
		tb := NewTable()
		if err := tb.Upsert(relay.Flow{Key: keyA, Peer: pa, Learning: learning, Strict: strict, Out: lb6, Dst: pb6}); err != nil {
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
		out, ns := w.decideBatch(e, n, 1)
		if ns > n {
			t.Fatalf("sent %d of %d", ns, n)
		}
		if ns > 0 && out.addr != lb6 {
			t.Fatalf("sends from %s", out.addr)
		}
		peer, stillLearning, _ := tb.Peer(keyA)
		j := 0
		for i := 0; i < n; i++ {
			src, ok := decodeSockaddr(&w.rname[i], w.rhdr[i].Hdr.Namelen)
			if w.rhdr[i].Hdr.Flags&unix.MSG_TRUNC != 0 || !ok || src != peer || stillLearning {
				continue
			}
			if j >= ns {
				t.Fatalf("datagram %d from peer %s not forwarded", i, src)
			}
			dst, b := w.sent(j)
			if dst != pb6 || len(b) != int(w.rhdr[i].Len) || w.siov[j].Base != &w.buf[i*bufSize] {
				t.Fatalf("message %d: to %s, %d bytes", j, dst, len(b))
			}
			j++
		}
		if j != ns {
			t.Fatalf("forwarded %d, %d were from the peer", ns, j)
		}
		if strict && !stillLearning && peer.Addr() != pa.Addr() {
			t.Fatalf("strict flow latched %s", peer)
		}
		if !learning && peer != pa {
			t.Fatalf("known peer changed to %s", peer)
		}
		c := map[string]uint64{}
		w.cnt.addTo(c)
		if c["latched"] > 1 {
			t.Fatalf("latched %d times", c["latched"])
		}
		drops := c["wrong_source"] + c["strict"] + c["oversize"]
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
// packet.Parse accepts goes through Table.Process with the fixture flows.
// Forwarded datagrams must come from the flow's peer and go to its Dst.
func FuzzFrame(f *testing.F) {
	for _, c := range fixtures.Cases() {
		f.Add(c.In)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := packet.Parse(b)
		if err != nil {
			return
		}
		tb := NewTable()
		flows := map[netip.AddrPort]relay.Flow{}
		for _, c := range fixtures.Cases()[:1] {
			for _, fl := range c.Flows {
				tb.Upsert(fl)
				flows[fl.Key.Local] = fl
			}
		}
		learn := relay.Flow{Key: relay.FlowKey{Local: fixtures.Relay6A}, Peer: fixtures.Caller6A, Learning: true,
			Out: fixtures.RelayB, Dst: fixtures.CalleeB}
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
		}
		if s, err := tb.Stats(relay.FlowKey{Local: in.Dst}); err == nil && d.Verdict == Forward &&
			(s.Packets != 1 || s.Bytes != uint64(len(in.Payload))) {
			t.Fatalf("stats %+v after one %d-byte datagram", s, len(in.Payload))
		}
	})
}
