package bpf

import (
	"bytes"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"sipxdp/relay"
	"sipxdp/relay/fixtures"
	"sipxdp/relay/packet"
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
				SrcMAC: fixtures.MACRelayB, DstMAC: fixtures.MACPeerB, OutIfindex: fixtures.IfIn}
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
			in := packet.Frame{DstMAC: fixtures.MACRelayA, SrcMAC: fixtures.MACPeerA, Src: f.Peer, Dst: f.Key.Local,
				TTL: 64, Payload: fixtures.RTPPayload(uint16(n), 160)}
			want := in
			want.Src, want.Dst, want.SrcMAC, want.DstMAC = f.Out, f.Dst, f.SrcMAC, f.DstMAC
			ret, out, err := runXDP(progs.XDP, packet.Build(in), fixtures.IfIn)
			if err != nil {
				t.Fatal(err)
			}
			if ret != xdpTX || !bytes.Equal(out, packet.Build(want)) {
				t.Errorf("call %d flow %v: verdict %d, output matches %v", call, f.Key, ret, bytes.Equal(out, packet.Build(want)))
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

func mustFlows(t *testing.T, m *Maps) []FlowEntry {
	t.Helper()
	fs, err := m.Flows()
	if err != nil {
		t.Fatal(err)
	}
	return fs
}
