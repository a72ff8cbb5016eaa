package bpf

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"sipxdp/relay"
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

	lo := netip.MustParseAddr("127.0.0.1")
	flow := relay.Flow{
		Key:  relay.FlowKey{Local: netip.AddrPortFrom(lo, 30000)},
		Peer: netip.AddrPortFrom(lo, 4000),
		Out:  netip.AddrPortFrom(lo, 30002),
		Dst:  netip.AddrPortFrom(lo, 5000),
	}
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
