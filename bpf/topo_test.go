package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"sipxdp/relay"
	"sipxdp/relay/relaytest"
)

// The test topology, all inside namespaces the test creates:
//
//	sender ns  s0 ==veth== r0  relay ns  r1 ==veth== d0  receiver ns
//	10.250.1.2         10.250.1.1     10.250.2.1         10.250.2.2
//	fd00:250:1::2      fd00:250:1::1  fd00:250:2::1      fd00:250:2::2
//
// The relay forwards from its r0 address to the receiver, sourcing from
// its r1 address: a call whose two legs sit on two interfaces.
const nsPrefix = "sxdpt-"

const (
	nsSender = iota
	nsRelay
	nsReceiver
)

type ipFamily struct {
	name                         string
	sender, relayA, relayB, recv netip.Addr
	bits                         int
}

var families = []ipFamily{
	{"ipv4", netip.MustParseAddr("10.250.1.2"), netip.MustParseAddr("10.250.1.1"),
		netip.MustParseAddr("10.250.2.1"), netip.MustParseAddr("10.250.2.2"), 24},
	{"ipv6", netip.MustParseAddr("fd00:250:1::2"), netip.MustParseAddr("fd00:250:1::1"),
		netip.MustParseAddr("fd00:250:2::1"), netip.MustParseAddr("fd00:250:2::2"), 64},
}

func (f ipFamily) flow() relay.Flow {
	return relay.Flow{
		Key:  relay.FlowKey{Local: netip.AddrPortFrom(f.relayA, 30000)},
		Peer: netip.AddrPortFrom(f.sender, 4000),
		Out:  netip.AddrPortFrom(f.relayB, 30002),
		Dst:  netip.AddrPortFrom(f.recv, 5000),
	}
}

type topo struct {
	names [3]string
	ns    [3]netns.NsHandle
}

// cleanStaleNetns deletes namespaces left by test processes that died
// before their cleanup ran (their PID is part of the name).
func cleanStaleNetns(t *testing.T) {
	entries, _ := os.ReadDir("/var/run/netns")
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), nsPrefix) {
			continue
		}
		rest := strings.TrimPrefix(e.Name(), nsPrefix)
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == nil {
			continue // still running: not ours to remove
		}
		t.Logf("removing stale namespace %s", e.Name())
		netns.DeleteNamed(e.Name())
	}
}

// inNs runs fn with the calling goroutine's thread inside namespace h.
func inNs(h netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(h); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns: %w", err)
	}
	defer func() {
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return fn()
}

func (tp *topo) in(t testing.TB, i int, fn func() error) {
	t.Helper()
	if err := inNs(tp.ns[i], fn); err != nil {
		t.Fatalf("in %s: %v", tp.names[i], err)
	}
}

var topoSeq int

func newTopo(t *testing.T) *topo {
	t.Helper()
	cleanStaleNetns(t)
	topoSeq++
	tp := &topo{}
	for i, role := range []string{"s", "r", "d"} {
		tp.names[i] = fmt.Sprintf("%s%d-%d%s", nsPrefix, os.Getpid(), topoSeq, role)
	}
	t.Cleanup(func() {
		for i, n := range tp.names {
			if tp.ns[i].IsOpen() {
				tp.ns[i].Close()
			}
			if err := netns.DeleteNamed(n); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("delete netns %s: %v", n, err)
			}
		}
	})
	for i, n := range tp.names {
		var h netns.NsHandle
		err := func() error {
			runtime.LockOSThread()
			orig, err := netns.Get()
			if err != nil {
				return err
			}
			defer orig.Close()
			h, err = netns.NewNamed(n)
			if err != nil {
				return err
			}
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
			return nil
		}()
		if err != nil {
			t.Fatalf("create netns %s: %v", n, err)
		}
		tp.ns[i] = h
	}

	// Both pairs are born in the relay namespace; one end of each moves out.
	tp.in(t, nsRelay, func() error {
		for _, p := range []struct {
			local, peer string
			to          int
		}{{"r0", "s0", nsSender}, {"r1", "d0", nsReceiver}} {
			v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: p.local}, PeerName: p.peer}
			if err := netlink.LinkAdd(v); err != nil {
				return fmt.Errorf("add veth %s: %w", p.local, err)
			}
			pl, err := netlink.LinkByName(p.peer)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetNsFd(pl, int(tp.ns[p.to])); err != nil {
				return fmt.Errorf("move %s: %w", p.peer, err)
			}
		}
		// The FIB lookup in the programs is a forwarding lookup.
		for _, s := range []string{"/proc/sys/net/ipv4/conf/all/forwarding", "/proc/sys/net/ipv6/conf/all/forwarding"} {
			if err := os.WriteFile(s, []byte("1"), 0); err != nil {
				return fmt.Errorf("enable forwarding: %w", err)
			}
		}
		return nil
	})
	cfg := []struct {
		ns   int
		dev  string
		addr func(ipFamily) netip.Addr
	}{
		{nsSender, "s0", func(f ipFamily) netip.Addr { return f.sender }},
		{nsRelay, "r0", func(f ipFamily) netip.Addr { return f.relayA }},
		{nsRelay, "r1", func(f ipFamily) netip.Addr { return f.relayB }},
		{nsReceiver, "d0", func(f ipFamily) netip.Addr { return f.recv }},
	}
	for _, c := range cfg {
		tp.in(t, c.ns, func() error {
			lo, err := netlink.LinkByName("lo")
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(lo); err != nil {
				return err
			}
			l, err := netlink.LinkByName(c.dev)
			if err != nil {
				return err
			}
			for _, f := range families {
				a := c.addr(f)
				ipn := &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(f.bits, a.BitLen())}
				// NODAD: the address is usable at once instead of after
				// duplicate address detection.
				if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: ipn, Flags: unix.IFA_F_NODAD}); err != nil {
					return fmt.Errorf("add %v to %s: %w", a, c.dev, err)
				}
			}
			return netlink.LinkSetUp(l)
		})
	}
	// Permanent neighbours for the receiver, so the programs' FIB lookup
	// succeeds from the first packet instead of waiting for ARP/ND.
	// The sender's too, for the hairpin flow that goes back out of r0.
	macOf := func(i int, dev string) net.HardwareAddr {
		var mac net.HardwareAddr
		tp.in(t, i, func() error {
			l, err := netlink.LinkByName(dev)
			if err != nil {
				return err
			}
			mac = l.Attrs().HardwareAddr
			return nil
		})
		return mac
	}
	for _, nb := range []struct {
		dev  string
		mac  net.HardwareAddr
		addr func(ipFamily) netip.Addr
	}{
		{"r1", macOf(nsReceiver, "d0"), func(f ipFamily) netip.Addr { return f.recv }},
		{"r0", macOf(nsSender, "s0"), func(f ipFamily) netip.Addr { return f.sender }},
	} {
		tp.in(t, nsRelay, func() error {
			l, err := netlink.LinkByName(nb.dev)
			if err != nil {
				return err
			}
			for _, f := range families {
				a := nb.addr(f)
				n := &netlink.Neigh{LinkIndex: l.Attrs().Index, IP: a.AsSlice(), HardwareAddr: nb.mac,
					State: netlink.NUD_PERMANENT, Family: netlink.FAMILY_V4}
				if a.Is6() {
					n.Family = netlink.FAMILY_V6
				}
				if err := netlink.NeighSet(n); err != nil {
					return fmt.Errorf("add neighbour %v: %w", a, err)
				}
			}
			return nil
		})
	}
	return tp
}

// ethtool runs ethtool inside one of the topology's namespaces. nsenter
// (not ip netns exec) so nothing is remounted.
func (tp *topo) ethtool(t *testing.T, i int, args ...string) {
	t.Helper()
	cmd := exec.Command("nsenter", append([]string{"--net=" + filepath.Join("/var/run/netns", tp.names[i]), "ethtool"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ethtool %v: %v: %s", args, err, out)
	}
}

// attachPassXDP attaches a native XDP program that passes everything to
// dev in namespace i: veth only delivers native XDP redirects and XDP_TX
// to a peer that runs XDP itself.
func (tp *topo) attachPassXDP(t *testing.T, i int, dev string) {
	t.Helper()
	prog, err := NewPassXDP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	tp.in(t, i, func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		xl, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: l.Attrs().Index, Flags: link.XDPDriverMode})
		if err != nil {
			return fmt.Errorf("attach pass program to %s: %w", dev, err)
		}
		t.Cleanup(func() { xl.Close() })
		return nil
	})
}

func (tp *topo) udp(t *testing.T, i int, local netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	tp.in(t, i, func() error {
		var err error
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(local))
		if err != nil {
			return err
		}
		return c.SetReadBuffer(8 << 20)
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// stream sends n RTP packets from conn to dst, paced so veth queues never
// overflow: the test is about correctness, not throughput.
func stream(conn *net.UDPConn, dst netip.AddrPort, first, n int) error {
	for seq := first; seq < first+n; seq++ {
		if _, err := conn.WriteToUDPAddrPort(relaytest.RTPPayload(uint16(seq), 160), dst); err != nil {
			return fmt.Errorf("send %d: %w", seq, err)
		}
		if seq%20 == 19 {
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}

// receive reads until it has want packets or the deadline passes, and
// checks each one's source and payload. It returns the distinct sequence
// numbers seen.
func receive(t *testing.T, conn *net.UDPConn, from netip.AddrPort, want int, wait time.Duration) map[uint16]bool {
	t.Helper()
	seen := map[uint16]bool{}
	buf := make([]byte, 2048)
	deadline := time.Now().Add(wait)
	bad := 0
	for len(seen) < want {
		conn.SetReadDeadline(deadline)
		n, src, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			break
		}
		p := buf[:n]
		if n < 4 {
			bad++
			continue
		}
		seq := binary.BigEndian.Uint16(p[2:4])
		if src != from || string(p) != string(relaytest.RTPPayload(seq, 160)) {
			if bad < 5 {
				t.Errorf("packet from %v (want %v), %d bytes, seq %d: payload intact %v", src, from, n, seq,
					string(p) == string(relaytest.RTPPayload(seq, 160)))
			}
			bad++
			continue
		}
		if seen[seq] {
			t.Errorf("duplicate seq %d", seq)
		}
		seen[seq] = true
	}
	if bad > 0 {
		t.Errorf("%d bad packets", bad)
	}
	return seen
}

func netInterfaceIndex(name string) (int, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return 0, fmt.Errorf("find %s: %w", name, err)
	}
	return l.Attrs().Index, nil
}
