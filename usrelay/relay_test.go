package usrelay

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"sipxdp/internal/freeport"
	"sipxdp/relay"
	"sipxdp/relay/relaytest"
)

func TestMain(m *testing.M) {
	if role := os.Getenv(perfRoleEnv); role != "" {
		os.Exit(perfChild(role))
	}
	goleak.VerifyTestMain(m)
}

// freePort returns a UDP port on ip that was free a moment ago and that
// no earlier call returned.
func freePort(t testing.TB, ip string) netip.AddrPort {
	t.Helper()
	ap, err := freeport.On(freeport.UDP, netip.MustParseAddr(ip))
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

type phone struct {
	c    *net.UDPConn
	addr netip.AddrPort
}

func newPhone(t *testing.T, ip string) *phone {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatalf("listen %s: %v", ip, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadBuffer(4 << 20)
	return &phone{c: c, addr: c.LocalAddr().(*net.UDPAddr).AddrPort()}
}

func (p *phone) send(t *testing.T, to netip.AddrPort, b []byte) {
	t.Helper()
	if _, err := p.c.WriteToUDPAddrPort(b, to); err != nil {
		t.Fatalf("send %s -> %s: %v", p.addr, to, err)
	}
}

// expect reads n datagrams, each from src with the payload want(i).
func (p *phone) expect(t *testing.T, n int, src netip.AddrPort, want func(i int) []byte) {
	t.Helper()
	buf := make([]byte, 2048)
	for i := 0; i < n; i++ {
		p.c.SetReadDeadline(time.Now().Add(2 * time.Second))
		m, from, err := p.c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("%s: datagram %d of %d: %v", p.addr, i, n, err)
		}
		if normalize(from) != src {
			t.Fatalf("%s: datagram %d from %s, want %s", p.addr, i, from, src)
		}
		if !bytes.Equal(buf[:m], want(i)) {
			t.Fatalf("%s: datagram %d payload differs (%d bytes)", p.addr, i, m)
		}
	}
}

// expectNothing checks no datagram arrives for a short while.
func (p *phone) expectNothing(t *testing.T) {
	t.Helper()
	buf := make([]byte, 2048)
	p.c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, from, err := p.c.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatalf("%s: unexpected %d bytes from %s", p.addr, n, from)
	}
}

// waitCounters polls until ok holds or 2 s pass: a dropped datagram
// leaves no trace a test could wait on, only a counter.
func waitCounters(r *Relay, ok func(map[string]uint64) bool) map[string]uint64 {
	deadline := time.Now().Add(2 * time.Second)
	for {
		c := r.Counters()
		if ok(c) || time.Now().After(deadline) {
			return c
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type latchLog struct {
	mu sync.Mutex
	m  map[relay.FlowKey]netip.AddrPort
}

func (l *latchLog) record(ev relay.LatchEvent) {
	l.mu.Lock()
	l.m[ev.Key] = ev.Latch.Source
	l.mu.Unlock()
}

func (l *latchLog) get(k relay.FlowKey) netip.AddrPort {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.m[k]
}

func TestRelayLoopback(t *testing.T) {
	for _, tc := range []struct{ name, ipA, ipB string }{
		{"ipv4", "127.0.0.1", "127.0.0.1"},
		{"ipv6", "::1", "::1"},
		{"ipv4 to ipv6", "127.0.0.1", "::1"},
	} {
		t.Run(tc.name, func(t *testing.T) { testRelaySession(t, tc.ipA, tc.ipB) })
	}
}

// testRelaySession runs one call: leg A on ipA, leg B on ipB, an RTP and an
// RTCP flow each way. A's RTP flow learns (A's real port differs from the
// announced one, so it latches provisionally); the others are locked.
func testRelaySession(t *testing.T, ipA, ipB string) {
	latches := &latchLog{m: map[relay.FlowKey]netip.AddrPort{}}
	r, err := New(Config{Workers: 2, Batch: 8, OnLatch: latches.record})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	a, b := newPhone(t, ipA), newPhone(t, ipB)
	aRTCP, bRTCP := newPhone(t, ipA), newPhone(t, ipB)
	rtpA, rtpB := freePort(t, ipA), freePort(t, ipB)
	rtcpA, rtcpB := freePort(t, ipA), freePort(t, ipB)
	announcedA := netip.AddrPortFrom(a.addr.Addr(), a.addr.Port()^1)

	flows := []relay.Flow{
		{Key: relay.FlowKey{Local: rtpA}, Peer: announcedA, Learning: true, Announced: announcedA,
			LearnUntil: time.Now().Add(time.Hour), Out: rtpB, Dst: b.addr},
		{Key: relay.FlowKey{Local: rtpB}, Peer: b.addr, Out: rtpA, Dst: announcedA},
		{Key: relay.FlowKey{Local: rtcpA}, Peer: aRTCP.addr, Out: rtcpB, Dst: bRTCP.addr},
		{Key: relay.FlowKey{Local: rtcpB}, Peer: bRTCP.addr, Strict: true, Out: rtcpA, Dst: aRTCP.addr},
	}
	for _, f := range flows {
		if err := r.Upsert(f); err != nil {
			t.Fatalf("upsert %s: %v", f.Key, err)
		}
	}
	if got := r.Sockets(); got != 4 {
		t.Fatalf("Sockets() = %d, want 4", got)
	}

	const n = 200
	rtp := func(i int) []byte { return relaytest.RTPPayload(uint16(i), 160) }
	start := time.Now()

	// A -> B latches A's real address on the first datagram: the
	// announced IP on another port, as a NAT that keeps the address.
	for i := 0; i < n; i++ {
		a.send(t, rtpA, rtp(i))
	}
	b.expect(t, n, rtpB, rtp)
	if got := latches.get(flows[0].Key); got != a.addr {
		t.Fatalf("OnLatch got %s, want %s", got, a.addr)
	}
	if ev, _ := r.Latch(flows[0].Key); ev.Latch.Source != a.addr || ev.Latch.Rank != relay.RankIP || ev.Latch.Locked ||
		ev.Announced != announcedA {
		t.Fatalf("Latch = %+v, want provisional on %s", ev, a.addr)
	}
	// What the engine does on OnLatch: point the reverse flow at the
	// latched address.
	flows[1].Dst = a.addr
	if err := r.Upsert(flows[1]); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		b.send(t, rtpB, rtp(i+n))
	}
	a.expect(t, n, rtpA, func(i int) []byte { return rtp(i + n) })

	rtcp := []byte{0x81, 0xc9, 0x00, 0x01, 1, 2, 3, 4}
	aRTCP.send(t, rtcpA, rtcp)
	bRTCP.expect(t, 1, rtcpB, func(int) []byte { return rtcp })
	bRTCP.send(t, rtcpB, rtcp)
	aRTCP.expect(t, 1, rtcpA, func(int) []byte { return rtcp })

	// Once latched, another port on the same IP does not beat it.
	stranger := newPhone(t, ipA)
	for i := 0; i < 5; i++ {
		stranger.send(t, rtpA, rtp(i))
	}
	// And the strict RTCP flow of B refuses a different port on B's IP.
	strangerB := newPhone(t, ipB)
	strangerB.send(t, rtcpB, rtcp)
	b.expectNothing(t)
	aRTCP.expectNothing(t)

	c := waitCounters(r, func(c map[string]uint64) bool { return c["received"] >= 2*n+2+6 })
	if c["foreign_learning"] != 5 || c["wrong_source"] != 1 || c["latched"] != 1 || c["locked"] != 0 ||
		c["forwarded"] != 2*n+2 || c["received"] != 2*n+2+6 {
		t.Fatalf("counters = %v", c)
	}
	for i, want := range []uint64{n, n, 1, 1} {
		s, err := r.Stats(flows[i].Key)
		if err != nil {
			t.Fatal(err)
		}
		wantBytes := want * 172
		if i >= 2 {
			wantBytes = uint64(len(rtcp))
		}
		if s.Packets != want || s.Bytes != wantBytes || s.LastSeen.Before(start.Add(-time.Millisecond)) || s.LastSeen.After(time.Now()) {
			t.Fatalf("flow %s stats = %+v, want %d packets %d bytes", flows[i].Key, s, want, wantBytes)
		}
	}

	// Deleting A's RTP flow keeps rtpA open: the B->A flow still sends
	// from it.
	if err := r.Delete(flows[0].Key); err != nil {
		t.Fatal(err)
	}
	if got := r.Sockets(); got != 4 {
		t.Fatalf("Sockets() = %d after deleting one flow, want 4", got)
	}
	a.send(t, rtpA, rtp(0))
	b.expectNothing(t)
	if c := waitCounters(r, func(c map[string]uint64) bool { return c["no_flow"] >= 1 }); c["no_flow"] != 1 {
		t.Fatalf("no_flow = %d, want 1", c["no_flow"])
	}
	if _, err := r.Stats(flows[0].Key); !errors.Is(err, relay.ErrFlowNotFound) {
		t.Fatalf("Stats after delete: %v", err)
	}
	if err := r.Delete(flows[0].Key); !errors.Is(err, relay.ErrFlowNotFound) {
		t.Fatalf("second Delete: %v", err)
	}
	for _, f := range flows[1:] {
		if err := r.Delete(f.Key); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.Sockets(); got != 0 {
		t.Fatalf("Sockets() = %d after deleting every flow", got)
	}
	// The ports are free again at once.
	for _, ap := range []netip.AddrPort{rtpA, rtpB, rtcpA, rtcpB} {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			t.Fatalf("rebind %s after Delete: %v", ap, err)
		}
		c.Close()
	}
}

func TestRelayBindError(t *testing.T) {
	r, err := New(Config{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	held, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	busy := held.LocalAddr().(*net.UDPAddr).AddrPort()
	free := freePort(t, "127.0.0.1")
	dst := freePort(t, "127.0.0.1")

	// The Local port binds, then Out fails: nothing may stay open.
	err = r.Upsert(relay.Flow{Key: relay.FlowKey{Local: free}, Learning: true, Out: busy, Dst: dst})
	if !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("Upsert with Out in use: %v, want EADDRINUSE", err)
	}
	t.Logf("bind error reads: %v", err)
	err = r.Upsert(relay.Flow{Key: relay.FlowKey{Local: busy}, Learning: true, Out: free, Dst: dst})
	if !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("Upsert with Local in use: %v, want EADDRINUSE", err)
	}
	if r.Sockets() != 0 {
		t.Fatalf("Sockets() = %d after failed upserts", r.Sockets())
	}
}

func TestRelayReplaceAndClose(t *testing.T) {
	r, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	local, out1, out2 := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1")
	dst := freePort(t, "127.0.0.1")
	k := relay.FlowKey{Local: local}
	if err := r.Upsert(relay.Flow{Key: k, Learning: true, Out: out1, Dst: dst}); err != nil {
		t.Fatal(err)
	}
	if err := r.Upsert(relay.Flow{Key: k, Learning: true, Out: out2, Dst: dst}); err != nil {
		t.Fatal(err)
	}
	if r.Sockets() != 2 {
		t.Fatalf("Sockets() = %d after moving Out, want 2", r.Sockets())
	}
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(out1))
	if err != nil {
		t.Fatalf("old Out %s still bound: %v", out1, err)
	}
	c.Close()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if r.Sockets() != 0 {
		t.Fatalf("Sockets() = %d after Close", r.Sockets())
	}
	if err := r.Upsert(relay.Flow{Key: k, Out: out1, Dst: dst}); err == nil {
		t.Fatal("Upsert after Close succeeded")
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestRelayChurn upserts and deletes while traffic flows, for the race
// detector and the grace periods.
func TestRelayChurn(t *testing.T) {
	r, err := New(Config{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sink := newPhone(t, "127.0.0.1")
	src := newPhone(t, "127.0.0.1")
	var ports []netip.AddrPort
	for i := 0; i < 8; i++ {
		ports = append(ports, freePort(t, "127.0.0.1"))
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := relaytest.RTPPayload(1, 160)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			src.c.WriteToUDPAddrPort(b, ports[i%len(ports)])
			if i%64 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := sink.c.ReadFromUDPAddrPort(buf); err != nil {
				return
			}
		}
	}()
	deadline := time.Now().Add(500 * time.Millisecond)
	for i := 0; time.Now().Before(deadline) && i < 2000; i++ {
		k := relay.FlowKey{Local: ports[i%4]}
		if err := r.Upsert(relay.Flow{Key: k, Peer: src.addr, Out: ports[4+i%4], Dst: sink.addr}); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			if err := r.Delete(k); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	<-done
	if r.Counters()["forwarded"] == 0 {
		t.Fatal("nothing forwarded during churn")
	}
	t.Logf("counters: %v", r.Counters())
}

// BenchmarkUpsertDelete is the control-path cost of one direction: open
// and bind two sockets, publish, then unpublish, wait out a grace period
// and close them.
func BenchmarkUpsertDelete(b *testing.B) {
	r, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	local, out, dst := freePort(b, "127.0.0.1"), freePort(b, "127.0.0.1"), freePort(b, "127.0.0.1")
	k := relay.FlowKey{Local: local}
	for b.Loop() {
		if err := r.Upsert(relay.Flow{Key: k, Learning: true, Out: out, Dst: dst}); err != nil {
			b.Fatal(err)
		}
		if err := r.Delete(k); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRelayFreebind: a relay address the host does not hold (a standby's
// floating address) binds only with Freebind.
func TestRelayFreebind(t *testing.T) {
	away := netip.MustParseAddrPort("192.0.2.77:40000") // TEST-NET-1: never local here
	dst := freePort(t, "127.0.0.1")
	for _, fb := range []bool{false, true} {
		r, err := New(Config{Workers: 1, Freebind: fb})
		if err != nil {
			t.Fatal(err)
		}
		err = r.Upsert(relay.Flow{Key: relay.FlowKey{Local: away}, Learning: true, Out: away, Dst: dst})
		switch {
		case fb && err != nil:
			t.Errorf("freebind: %v", err)
		case !fb && !errors.Is(err, unix.EADDRNOTAVAIL):
			t.Errorf("without freebind: %v, want EADDRNOTAVAIL", err)
		}
		if fb && r.Sockets() != 1 {
			t.Errorf("freebind: %d sockets, want 1", r.Sockets())
		}
		r.Close()
	}
}
