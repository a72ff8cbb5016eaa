package bpf

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"sipxdp/internal/netns"
)

// hooksOn reports how many tcx ingress programs and which XDP program
// (netlink's view) r0 has, seen from the relay namespace.
func hooksOn(t *testing.T, tp *topo, dev string) (tcx int, xdpAttached bool) {
	t.Helper()
	tp.in(t, nsRelay, func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return err
		}
		tcx = len(res.Programs)
		xdpAttached = l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached
		return nil
	})
	return tcx, xdpAttached
}

// TestModeSwitch reopens pinned state with another hook: the old hook's
// link is detached and unpinned only once the new one is attached, flows
// survive, and traffic uses the new hook.
func TestModeSwitch(t *testing.T) {
	requireRoot(t)
	tp := newTopo(t)
	pinPath := filepath.Join(t.TempDir(), "pins")
	k := openInRelay(t, tp, ModeTC, pinPath)
	flow := lineFlow(families[0])
	if err := k.Upsert(flow); err != nil {
		t.Fatal(err)
	}
	if tcx, xdp := hooksOn(t, tp, netns.RelayA); tcx != 1 || xdp {
		t.Fatalf("after tc open: %d tcx programs, xdp %v", tcx, xdp)
	}
	k.Close()

	var k2 *Kernel
	tp.in(t, nsRelay, func() error {
		var err error
		k2, err = Open(Config{Interfaces: []string{netns.RelayA, netns.RelayB}, Mode: ModeXDPGeneric, PinPath: pinPath})
		return err
	})
	defer k2.Close()
	if tcx, xdp := hooksOn(t, tp, netns.RelayA); tcx != 0 || !xdp {
		t.Errorf("after switch to xdp-generic: %d tcx programs, xdp %v; want 0 and true", tcx, xdp)
	}
	if _, err := os.Stat(linkPin(pinPath, ModeTC, netns.RelayA)); !os.IsNotExist(err) {
		t.Errorf("tc link pin still present: %v", err)
	}
	if _, err := os.Stat(linkPin(pinPath, ModeXDPGeneric, netns.RelayA)); err != nil {
		t.Errorf("xdp-generic link pin missing: %v", err)
	}
	if _, err := k2.Stats(flow.Key); err != nil {
		t.Fatalf("flow lost in the switch: %v", err)
	}

	t.Logf("NOTE: turning tx checksum offload OFF on the sender veth s0 for generic XDP (XDP cannot update a CHECKSUM_PARTIAL checksum)")
	if err := tp.Caller.SetTxChecksum(netns.CallerIf, false); err != nil {
		t.Fatal(err)
	}
	recv := tp.udp(t, nsReceiver, flow.Dst)
	send := tp.udp(t, nsSender, flow.Peer)
	before, _ := k2.Counters()
	if err := stream(send, flow.Key.Local, 0, 200); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, recv, flow.Out, 200, 5*time.Second); len(got) != 200 {
		t.Errorf("received %d of 200 after the switch", len(got))
	}
	after, _ := k2.Counters()
	if d := after["redirect"] - before["redirect"]; d != 200 {
		t.Errorf("redirect counter moved %d, want 200", d)
	}
}

// TestRecreatedInterface: a pinned link whose device was deleted and
// recreated (new ifindex) must not be "updated" into thin air; Open
// attaches afresh.
func TestRecreatedInterface(t *testing.T) {
	requireRoot(t)
	tp := newTopo(t)
	pinPath := filepath.Join(t.TempDir(), "pins")
	k := openInRelay(t, tp, ModeTC, pinPath)
	k.Close()
	tp.in(t, nsRelay, func() error {
		l, err := netlink.LinkByName(netns.RelayB)
		if err != nil {
			return err
		}
		if err := netlink.LinkDel(l); err != nil {
			return err
		}
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: netns.RelayB}, PeerName: "r1-peer"}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		return nil
	})
	if tcx, _ := hooksOn(t, tp, netns.RelayB); tcx != 0 {
		t.Fatalf("new r1 already has %d tcx programs", tcx)
	}
	var k2 *Kernel
	tp.in(t, nsRelay, func() error {
		var err error
		k2, err = Open(Config{Interfaces: []string{netns.RelayA, netns.RelayB}, Mode: ModeTC, PinPath: pinPath})
		return err
	})
	defer k2.Close()
	for _, dev := range []string{netns.RelayA, netns.RelayB} {
		if tcx, _ := hooksOn(t, tp, dev); tcx != 1 {
			t.Errorf("%s has %d tcx programs after reopen, want 1", dev, tcx)
		}
	}
}
