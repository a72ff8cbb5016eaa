package bpf

import (
	"bytes"
	"math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"sipxdp/internal/netns"
	"sipxdp/relay"
	"sipxdp/relay/relaytest"
)

const scaleCalls = 50000

// scaleFlows returns the four flows of call i: RTP and RTCP in each
// direction. Leg A sits on 10.252.0.1/.2, leg B on 10.252.0.3/.4, port
// 10000+i, so every key is distinct.
func scaleFlows(i int) []relay.Flow {
	port := uint16(10000 + i)
	caller := netip.AddrFrom4([4]byte{10, 253, byte(i >> 8), byte(i)})
	callee := netip.AddrFrom4([4]byte{10, 254, byte(i >> 8), byte(i)})
	var out []relay.Flow
	for rtcp := 0; rtcp < 2; rtcp++ {
		a := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 252, 0, byte(1 + rtcp)}), port)
		b := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 252, 0, byte(3 + rtcp)}), port)
		pa := netip.AddrPortFrom(caller, uint16(20000+2*rtcp))
		pb := netip.AddrPortFrom(callee, uint16(40000+2*rtcp))
		mk := func(local, peer, o, dst netip.AddrPort) relay.Flow {
			return relay.Flow{Key: relay.FlowKey{Local: local}, Peer: peer, Out: o, Dst: dst,
				SrcMAC: relaytest.MACRelayB, DstMAC: relaytest.MACPeerB, OutIfindex: relaytest.IfIn}
		}
		out = append(out, mk(a, pa, b, pb), mk(b, pb, a, pa))
	}
	return out
}

// TestScale installs the flows of 50,000 calls, reports the map's memory,
// and relays packets through 100 random calls with BPF_PROG_TEST_RUN.
func TestScale(t *testing.T) {
	requireRoot(t)
	if testing.Short() {
		t.Skip("skipping 200,000-flow install in -short mode")
	}
	progs, err := LoadPrograms(10000, 60000)
	if err != nil {
		t.Fatal(err)
	}
	defer progs.Close()

	start := time.Now()
	for i := 0; i < scaleCalls; i++ {
		for _, f := range scaleFlows(i) {
			if err := progs.Upsert(f); err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
		}
	}
	installed := time.Since(start)
	info, err := progs.FlowMap().Info()
	if err != nil {
		t.Fatal(err)
	}
	mem, ok := info.Memlock()
	if !ok {
		t.Fatal("kernel reports no memlock for the flow map")
	}
	t.Logf("installed %d flows (%d calls) in %v (%.1f µs/flow); flow map: %d max entries, key %d B, value %d B, memlock %.1f MiB = %.0f B/call",
		4*scaleCalls, scaleCalls, installed.Round(time.Millisecond), float64(installed.Microseconds())/float64(4*scaleCalls),
		info.MaxEntries, info.KeySize, info.ValueSize, float64(mem)/(1<<20), float64(mem)/scaleCalls)

	start = time.Now()
	all, err := progs.Flows()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("listed %d flows in %v", len(all), time.Since(start).Round(time.Millisecond))
	if len(all) != 4*scaleCalls {
		t.Errorf("listed %d flows, want %d", len(all), 4*scaleCalls)
	}

	rng := rand.New(rand.NewPCG(1, 2))
	hits := 0
	for n := 0; n < 100; n++ {
		call := rng.IntN(scaleCalls)
		for _, f := range scaleFlows(call) {
			in := relaytest.Frame{DstMAC: relaytest.MACRelayA, SrcMAC: relaytest.MACPeerA, Src: f.Peer, Dst: f.Key.Local,
				TTL: 64, Payload: relaytest.RTPPayload(uint16(n), 160)}
			want := in
			want.Src, want.Dst, want.SrcMAC, want.DstMAC = f.Out, f.Dst, f.SrcMAC, f.DstMAC
			ret, out, err := runXDP(progs.XDP, relaytest.Build(in), relaytest.IfIn)
			if err != nil {
				t.Fatal(err)
			}
			if ret != xdpTX || !bytes.Equal(out, relaytest.Build(want)) {
				t.Errorf("call %d flow %v: verdict %d, output matches %v", call, f.Key, ret, bytes.Equal(out, relaytest.Build(want)))
				continue
			}
			hits++
		}
	}
	var pkts uint64
	for _, e := range mustFlows(t, progs.Maps) {
		pkts += e.Stats.Packets
	}
	c, err := progs.Counters()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("relayed %d packets through 100 random calls: tx counter %d, flow packet counters sum %d", hits, c["tx"], pkts)
	if hits != 400 || c["tx"] != 400 || pkts != 400 {
		t.Errorf("hits %d, tx %d, flow packets %d; want 400 each", hits, c["tx"], pkts)
	}
}

const (
	realSampled     = 100 // calls among the 50,000 that carry real packets
	realPerFlow     = 5   // packets per flow: 4 flows, 20 per call, 2,000 in all
	realPayloadSize = 172 // relaytest.RTPPayload(seq, 160): 12-byte header + 160
)

// sampledFlows returns the four flows of the s-th sampled call, whose
// peers are real sockets of the topology: leg A on the relay's r0 address
// with the caller in the sender namespace, leg B on its r1 address with
// the callee in the receiver namespace. Every port is derived from s, so
// no two sampled calls share a key or a socket; the relay addresses are
// not the synthetic calls' 10.252.0.x, so no sampled key shadows one.
func sampledFlows(s int, fam netns.Addrs) []relay.Flow {
	var out []relay.Flow
	for rtcp := 0; rtcp < 2; rtcp++ {
		a := netip.AddrPortFrom(fam.RelayA, uint16(30000+2*s+rtcp))
		b := netip.AddrPortFrom(fam.RelayB, uint16(30000+2*s+rtcp))
		caller := netip.AddrPortFrom(fam.Caller, uint16(20000+2*s+rtcp))
		callee := netip.AddrPortFrom(fam.Callee, uint16(40000+2*s+rtcp))
		// No pinned MACs: the programs find the next hop with a FIB
		// lookup, as they do for a flow the relay engine installs.
		out = append(out,
			relay.Flow{Key: relay.FlowKey{Local: a}, Peer: caller, Out: b, Dst: callee},
			relay.Flow{Key: relay.FlowKey{Local: b}, Peer: callee, Out: a, Dst: caller})
	}
	return out
}

// TestScaleRealTraffic is TestScale with real packets: 50,000 calls'
// flows in the tc datapath of the netns topology, of which 100 random
// calls point at real sockets in the sender and receiver namespaces and
// get 20 packets each (5 per flow, both legs, RTP and RTCP, IPv4 and
// IPv6 alternately). Offloads stay on, so the sockets send
// CHECKSUM_PARTIAL skbs: the case tc is chosen for on veth.
func TestScaleRealTraffic(t *testing.T) {
	requireRoot(t)
	if testing.Short() {
		t.Skip("skipping 200,000-flow install with real traffic in -short mode")
	}
	began := time.Now()
	tp := newTopo(t)
	k := openInRelay(t, tp, ModeTC, filepath.Join(t.TempDir(), "pins"))
	if k.Name() != ModeTC {
		t.Fatalf("hook %q, want %q", k.Name(), ModeTC)
	}

	// The seed picks which synthetic calls the sampled ones replace, so
	// where among the 200,000 inserts (and the hash chains they build) the
	// real keys land; a fresh one each run varies that, and it is logged
	// so a failing run can be replayed by pinning it here.
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0x5ca1e))
	sampleOf := map[int]int{} // call index -> sample number
	for _, call := range rng.Perm(scaleCalls)[:realSampled] {
		sampleOf[call] = len(sampleOf)
	}
	live := make([]relay.Flow, 4*realSampled) // sample s owns live[4s : 4s+4]

	start := time.Now()
	for i := 0; i < scaleCalls; i++ {
		flows := scaleFlows(i)
		if s, ok := sampleOf[i]; ok {
			flows = sampledFlows(s, families[s%2])
			copy(live[4*s:], flows)
		}
		for _, f := range flows {
			if err := k.Upsert(f); err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
		}
	}
	installed := time.Since(start)
	info, err := k.FlowMap().Info()
	if err != nil {
		t.Fatal(err)
	}
	mem, ok := info.Memlock()
	if !ok {
		t.Fatal("kernel reports no memlock for the flow map")
	}
	t.Logf("seed %#x: installed %d flows (%d calls, %d of them real) in %v (%.1f µs/flow); flow map: %d max entries, memlock %.1f MiB = %.0f B/call",
		seed, 4*scaleCalls, scaleCalls, realSampled, installed.Round(time.Millisecond),
		float64(installed.Microseconds())/float64(4*scaleCalls), info.MaxEntries, float64(mem)/(1<<20), float64(mem)/scaleCalls)

	// One socket per peer address: it sends on its own flow and receives
	// what the reverse flow relays to it.
	socks := map[netip.AddrPort]*net.UDPConn{}
	for _, f := range live {
		ns := nsSender
		if f.Peer.Addr() == families[0].Callee || f.Peer.Addr() == families[1].Callee {
			ns = nsReceiver
		}
		socks[f.Peer] = tp.udp(t, ns, f.Peer)
	}
	// Checksums, for one IPv4 direction into the receiver and one IPv6
	// direction back into the sender: a receiving socket does not verify a
	// partial checksum, so only a capture shows the tc rewrite kept it right.
	captures := []struct {
		c capture
		f relay.Flow
	}{
		{startCapture(t, tp, nsReceiver, netns.CalleeIf, live[0].Dst.Port()), live[0]}, // sample 0, ipv4, A->B RTP
		{startCapture(t, tp, nsSender, netns.CallerIf, live[5].Dst.Port()), live[5]},   // sample 1, ipv6, B->A RTP
	}

	before, err := k.Counters()
	if err != nil {
		t.Fatal(err)
	}
	// Receivers first, all at once under one deadline, so a lost packet
	// costs the test at most that deadline, not one per socket.
	seen := make([]map[uint16]bool, len(live))
	var wg sync.WaitGroup
	for g, f := range live {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen[g] = receive(t, socks[f.Dst], f.Out, realPerFlow, 15*time.Second)
		}()
	}
	sendStart := time.Now()
	for g, f := range live {
		// Flow g's packets carry sequence numbers of their own, so a packet
		// delivered to the wrong socket cannot pass for a right one.
		if err := stream(socks[f.Peer], f.Key.Local, g*realPerFlow, realPerFlow); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	elapsed := time.Since(sendStart)
	after, err := k.Counters()
	if err != nil {
		t.Fatal(err)
	}

	hits := 0
	for g, f := range live {
		hits += len(seen[g])
		for seq := g * realPerFlow; seq < (g+1)*realPerFlow; seq++ {
			if !seen[g][uint16(seq)] {
				t.Errorf("flow %v (call sample %d): seq %d never arrived from %v at %v", f.Key, g/4, seq, f.Out, f.Dst)
			}
		}
		st, err := k.Stats(f.Key)
		if err != nil {
			t.Fatal(err)
		}
		if st.Packets != realPerFlow || st.Bytes != realPerFlow*realPayloadSize {
			t.Errorf("flow %v stats: %d packets %d bytes, want %d and %d", f.Key, st.Packets, st.Bytes, realPerFlow, realPerFlow*realPayloadSize)
		}
	}
	delta := counterDelta(before, after)
	total := len(live) * realPerFlow
	t.Logf("sent %d packets through %d random calls in %v: %d arrived intact from the right relay address; counters moved %v",
		total, realSampled, elapsed.Round(time.Millisecond), hits, delta)
	if hits != total {
		t.Errorf("%d of %d packets arrived intact", hits, total)
	}
	if delta["redirect"] != uint64(total) {
		t.Errorf("redirect counter moved %d, want %d", delta["redirect"], total)
	}
	if d := delta["no_flow"] + delta["wrong_source"]; d != 0 {
		t.Errorf("%d packets missed their flow (no_flow %d, wrong_source %d)", d, delta["no_flow"], delta["wrong_source"])
	}

	for _, c := range captures {
		full, partial, wrong, first := c.c.stop()
		if full+partial != realPerFlow || wrong != 0 {
			t.Errorf("capture of %v: %d full + %d partial checksums, %d wrong (first: %s); want %d, none wrong",
				c.f.Key, full, partial, wrong, first, realPerFlow)
		}
		if partial == 0 {
			t.Errorf("capture of %v saw no CHECKSUM_PARTIAL packet: offloads are off, so the case tc exists for was not exercised", c.f.Key)
		}
	}

	// The whole table: still 200,000 entries, and no synthetic flow
	// matched anything, so every counted packet belongs to a sampled flow.
	start = time.Now()
	all, err := k.Flows()
	if err != nil {
		t.Fatal(err)
	}
	var pkts uint64
	for _, e := range all {
		pkts += e.Stats.Packets
	}
	t.Logf("listed %d flows in %v; flow packet counters sum %d; whole test %v",
		len(all), time.Since(start).Round(time.Millisecond), pkts, time.Since(began).Round(time.Millisecond))
	if len(all) != 4*scaleCalls || pkts != uint64(total) {
		t.Errorf("table holds %d flows with %d packets counted, want %d and %d", len(all), pkts, 4*scaleCalls, total)
	}
}

func mustFlows(t *testing.T, m *Maps) []FlowEntry {
	t.Helper()
	fs, err := m.Flows()
	if err != nil {
		t.Fatal(err)
	}
	return fs
}
