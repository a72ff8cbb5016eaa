package sipload

import (
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

func TestRTTFromReport(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 500_000_000, time.UTC)
	sent := now.Add(-30 * time.Millisecond) // the SR left 30 ms ago
	lsr := ntpMid(ntpTime(sent))
	dlsr := dlsrSince(12 * time.Millisecond) // the callee held it 12 ms
	rtt, ok := rttFrom(now, lsr, dlsr)
	if !ok {
		t.Fatal("no rtt")
	}
	// Each of the three values is truncated to 1/65536 s.
	if d := rtt - 18*time.Millisecond; d < -50*time.Microsecond || d > 50*time.Microsecond {
		t.Errorf("rtt %v, want 18ms", rtt)
	}
	if _, ok := rttFrom(now, 0, dlsr); ok {
		t.Error("rtt from a report without an SR")
	}
	// A delay longer than the round trip (clock granularity) is zero, not
	// a wrapped 18 hours.
	if rtt, ok := rttFrom(now, lsr, dlsrSince(40*time.Millisecond)); !ok || rtt != 0 {
		t.Errorf("negative rtt read as %v, %v", rtt, ok)
	}
	if got := ntpTime(time.Unix(0, 0)) >> 32; got != ntpEpochOffset {
		t.Errorf("ntp seconds at the Unix epoch %d", got)
	}
}

func TestJitter(t *testing.T) {
	var j jitter
	// Constant transit time: no jitter.
	for i := range 50 {
		j.update(int64(1000+i*160), uint32(i*160))
	}
	if j.j != 0 {
		t.Fatalf("jitter %v on constant transit", j.j)
	}
	// Alternating 10 ms (80 units) late: |D| is 80 each time, so after k
	// packets J = 80 (1 - (15/16)^k).
	var k jitter
	for i := range 40 {
		late := int64(0)
		if i%2 == 1 {
			late = 80
		}
		k.update(int64(i*160)+late, uint32(i*160))
	}
	want := 80 * (1 - math.Pow(15.0/16, 39))
	if math.Abs(k.j-want) > 1e-9 {
		t.Errorf("jitter %v, want %v", k.j, want)
	}
	if d := k.duration(); d < 9*time.Millisecond || d > 10*time.Millisecond {
		t.Errorf("jitter duration %v", d)
	}
	// A timestamp wrap is not a jump of 2^32.
	var w jitter
	w.update(1000, math.MaxUint32-159)
	w.update(1160, 0)
	if w.j != 0 {
		t.Errorf("jitter %v across a timestamp wrap", w.j)
	}
}

func rtpPacket(ssrc uint32, seq uint16) []byte {
	h := rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: ssrc}
	b, _ := h.Marshal()
	return append(b, make([]byte, 160)...)
}

func TestLossWithDuplicates(t *testing.T) {
	sh := &uacShard{streams: map[uint32]*stream{}}
	s := &stream{ssrc: 7, start: time.Now(), next: 10, tx: 10}
	sh.streams[7] = s
	now := s.start.Add(time.Second)
	for seq := range uint16(10) {
		if seq == 3 || seq == 8 {
			continue
		}
		sh.onRTP(rtpPacket(7, seq), now)
	}
	// Duplicates of packets that did arrive, one of a packet never sent,
	// and another call's packet.
	sh.onRTP(rtpPacket(7, 5), now)
	sh.onRTP(rtpPacket(7, 5), now)
	sh.onRTP(rtpPacket(7, 12), now)
	sh.onRTP(rtpPacket(8, 3), now)
	tot := s.totals()
	if tot.rx != 11 || sh.strayRTP != 1 {
		t.Errorf("rx %d stray %d, want 11 and 1", tot.rx, sh.strayRTP)
	}
	if tot.loss != 0.2 {
		t.Errorf("loss %v, want 0.2 despite duplicates", tot.loss)
	}
}

func TestExtendSeq(t *testing.T) {
	for _, c := range []struct {
		ref  uint64
		seq  uint16
		want uint64
		ok   bool
	}{
		{0, 0, 0, true}, {10, 5, 5, true}, {65535, 0, 65536, true}, {65540, 65530, 65530, true},
		{3, 65535, 0, false}, {70000, 4464, 70000, true},
	} {
		got, ok := extend(c.ref, c.seq)
		if got != c.want || ok != c.ok {
			t.Errorf("extend(%d, %d) = %d, %v; want %d, %v", c.ref, c.seq, got, ok, c.want, c.ok)
		}
	}
}

func TestBindPairs(t *testing.T) {
	ps, err := bindPairs(loopback, 0, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		rtcpPort := p.rtcp.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort().Port()
		if p.port%2 != 0 || rtcpPort != p.port+1 {
			t.Errorf("pair rtp %d rtcp %d", p.port, rtcpPort)
		}
	}
	first := int(ps[0].port)
	closePairs(ps)
	// A fixed base binds RTPPort+2i and +1, and fails while taken.
	ps, err = bindPairs(loopback, first, 1)
	if err != nil {
		t.Fatalf("rebind %d: %v", first, err)
	}
	if _, err := bindPair(loopback, first); err == nil {
		t.Error("bound a taken pair")
	}
	closePairs(ps)
	if _, err := bindPair(loopback, first+1); err == nil {
		t.Error("bound an odd rtp port")
	}
	if _, err := bindPair(netip.MustParseAddr("::1"), 0); err == nil {
		t.Error("bound IPv6")
	}
}

// TestRTCPReport checks the callee's reply to an SR carries what the
// caller needs: the SSRC, LSR, loss and highest sequence number.
func TestRTCPReport(t *testing.T) {
	sh := &uasShard{streams: map[uint32]*rxStream{}, base: time.Now(), out: newBatch(1, rxBufSize)}
	now := sh.base
	for seq := uint16(65530); seq != 10; seq++ {
		if seq != 2 {
			sh.onRTP(rtpPacket(9, seq), now)
		}
	}
	sr := rtcp.SenderReport{SSRC: 9, NTPTime: ntpTime(now)}
	b, _ := sr.Marshal()
	from := netip.MustParseAddrPort("127.0.0.1:4001")
	sh.onRTCP(b, from, now, now.Add(5*time.Millisecond))
	if sh.out.n != 1 || sh.out.from(0) != from {
		t.Fatalf("%d replies", sh.out.n)
	}
	pkts, err := rtcp.Unmarshal(sh.out.bufs[0][:sh.out.iovs[0].Len])
	if err != nil {
		t.Fatal(err)
	}
	rr := pkts[0].(*rtcp.ReceiverReport).Reports[0]
	if rr.SSRC != 9 || rr.TotalLost != 1 || rr.LastSequenceNumber != 1<<16|9 || rr.FractionLost != 256/16 ||
		rr.LastSenderReport != ntpMid(sr.NTPTime) || rr.Delay != dlsrSince(5*time.Millisecond) {
		t.Errorf("report %+v", rr)
	}
}

// FuzzRTPDemux feeds wire input to every datagram handler of both sides:
// none may panic, whatever arrives.
func FuzzRTPDemux(f *testing.F) {
	f.Add(rtpPacket(1, 3))
	sr, _ := (&rtcp.SenderReport{SSRC: 1, NTPTime: 1 << 40, Reports: []rtcp.ReceptionReport{{SSRC: 1}}}).Marshal()
	f.Add(sr)
	rr, _ := (&rtcp.ReceiverReport{SSRC: 2, Reports: []rtcp.ReceptionReport{{SSRC: 1, LastSenderReport: 5}}}).Marshal()
	f.Add(rr)
	f.Add([]byte{0x80})
	f.Add([]byte{0x9f, 0, 0, 1, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		now := time.Now()
		uac := &uacShard{streams: map[uint32]*stream{}}
		uac.streams[1] = &stream{ssrc: 1, start: now.Add(-time.Second), next: 50, tx: 50}
		uac.streams[0] = &stream{ssrc: 0, start: now}
		uac.onRTP(data, now)
		uac.onRTCP(data, now)
		uas := &uasShard{streams: map[uint32]*rxStream{}, base: now, out: newBatch(1, rxBufSize)}
		uas.onRTP(data, now)
		uas.onRTP(data, now)
		uas.onRTCP(data, netip.MustParseAddrPort("127.0.0.1:9"), now, now)
		for _, s := range uac.streams {
			s.totals()
		}
		// The WebRTC caller's decrypted packets, on a leg up and one not yet.
		m := &srtpMedia{}
		up := &srtpLeg{started: true, s: stream{ssrc: 1, start: now.Add(-time.Second), next: 50, tx: 50}}
		for _, l := range []*srtpLeg{up, {s: stream{ssrc: 1}}} {
			m.onRTP(l, data, now)
			m.onRTCP(l, data, now)
			l.s.totals()
		}
	})
}
