package bpf

import (
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"sipxdp/relay"
	"sipxdp/relay/relaytest"
)

// TestLocalDelivery relays a call whose two phones live on the relay host
// itself, as with sipd on loopback: the FIB says the destination is local,
// so the program rewrites the packet and passes it up to the socket it is
// now addressed to. Without that, a latched flow (which holds no relay
// socket) would lose every packet.
func TestLocalDelivery(t *testing.T) {
	requireRoot(t)
	tp := newTopo(t)
	tp.in(t, nsRelay, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	pin := filepath.Join(t.TempDir(), "pins")
	t.Cleanup(func() {
		if err := Uninstall(pin); err != nil {
			t.Errorf("uninstall: %v", err)
		}
	})
	var k *Kernel
	tp.in(t, nsRelay, func() error {
		var err error
		k, err = Open(Config{Interfaces: []string{"lo"}, Mode: ModeTC, PinPath: pin, PortMin: 30000, PortMax: 30099})
		return err
	})
	t.Cleanup(func() { k.Close() })

	lo, lo6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")
	for _, flow := range []relay.Flow{{
		Key:  relay.FlowKey{Local: netip.AddrPortFrom(lo, 30000)},
		Peer: netip.AddrPortFrom(lo, 4000),
		Out:  netip.AddrPortFrom(lo, 30002),
		Dst:  netip.AddrPortFrom(lo, 5000),
	}, {
		// Between families: translated, then passed up as IPv6.
		Key:  relay.FlowKey{Local: netip.AddrPortFrom(lo, 30004)},
		Peer: netip.AddrPortFrom(lo, 4004),
		Out:  netip.AddrPortFrom(lo6, 30006),
		Dst:  netip.AddrPortFrom(lo6, 5004),
	}} {
		t.Run(flow.Key.String()+" to "+flow.Dst.String(), func(t *testing.T) { localDelivery(t, tp, k, flow) })
	}
}

func localDelivery(t *testing.T, tp *topo, k *Kernel, flow relay.Flow) {
	if err := k.Upsert(flow); err != nil {
		t.Fatal(err)
	}
	recv := tp.udp(t, nsRelay, flow.Dst)
	send := tp.udp(t, nsRelay, flow.Peer)
	before, err := k.Counters()
	if err != nil {
		t.Fatal(err)
	}
	const n = 500
	errc := make(chan error, 1)
	go func() { errc <- stream(send, flow.Key.Local, 0, n) }()
	seen := receive(t, recv, flow.Out, n, 10*time.Second)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	after, err := k.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != n {
		t.Errorf("received %d of %d packets from %v", len(seen), n, flow.Out)
	}
	if d := after["local"] - before["local"]; d != n {
		t.Errorf("local counter moved %d, want %d (counters moved %v)", d, n, counterDelta(before, after))
	}
	st, err := k.Stats(flow.Key)
	if err != nil {
		t.Fatal(err)
	}
	if st.Packets != n {
		t.Errorf("flow counted %d packets, want %d", st.Packets, n)
	}
}

// TestUpsertRouting: with forwarding off where packets arrive, the kernel's
// FIB lookup will not route, so a flow to another host without pinned MACs
// is refused (the engine keeps it in userspace); a flow to this host is
// marked for local delivery; a pinned flow needs no lookup.
func TestUpsertRouting(t *testing.T) {
	requireRoot(t)
	progs, err := LoadPrograms(30000, 30099)
	if err != nil {
		t.Fatal(err)
	}
	defer progs.Close()
	k := &Kernel{Maps: progs.Maps, fwdOff4: "eth-test", hostAddrs: localAddrs{refresh: time.Hour}}
	flow := func(port uint16, dst string) relay.Flow {
		return relay.Flow{
			Key:  relay.FlowKey{Local: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)},
			Peer: netip.MustParseAddrPort("127.0.0.1:4000"),
			Out:  netip.MustParseAddrPort("127.0.0.1:30002"),
			Dst:  netip.MustParseAddrPort(dst),
		}
	}
	remote := flow(30000, "192.0.2.7:5000")
	if err := k.Upsert(remote); !errors.Is(err, relay.ErrUnsupportedFlow) || !strings.Contains(err.Error(), "net.ipv4.conf.eth-test.forwarding") {
		t.Fatalf("remote flow with forwarding off: err = %v, want ErrUnsupportedFlow naming the sysctl", err)
	}
	local := flow(30004, "127.0.0.1:5000")
	if err := k.Upsert(local); err != nil {
		t.Fatal(err)
	}
	pinned := flow(30008, "192.0.2.7:5000")
	pinned.SrcMAC, pinned.DstMAC, pinned.OutIfindex = relaytest.MACRelayB, relaytest.MACPeerB, relaytest.IfIn
	if err := k.Upsert(pinned); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		f    relay.Flow
		want uint16
	}{{local, flagLocal}, {pinned, flagPinnedMAC}} {
		key, err := keyOf(c.f.Key)
		if err != nil {
			t.Fatal(err)
		}
		var v xdpFlowValue
		if err := k.flows.Lookup(&key, &v); err != nil {
			t.Fatal(err)
		}
		if v.Flags != c.want {
			t.Errorf("flow %v flags %#x, want %#x", c.f.Key, v.Flags, c.want)
		}
	}
	if _, err := k.Stats(remote.Key); !errors.Is(err, relay.ErrFlowNotFound) {
		t.Errorf("refused flow is in the map: %v", err)
	}
}
