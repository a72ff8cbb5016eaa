package bpf

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"sipxdp/internal/netns"
	"sipxdp/relay"
	"sipxdp/relay/relaytest"
)

// The test topology is internal/netns's line on its own networks:
//
//	sender ns  c0 ==veth== ra  relay ns  rb ==veth== e0  receiver ns
//	10.250.1.2         10.250.1.1     10.250.2.1         10.250.2.2
//	fd00:250:1::2      fd00:250:1::1  fd00:250:2::1      fd00:250:2::2
//
// The relay forwards from its ra address to the receiver, sourcing from
// its rb address: a call whose two legs sit on two interfaces.
var topoConfig = netns.Config{
	Prefix: "sxdpt-",
	Net4:   netip.MustParsePrefix("10.250.0.0/16"),
	Net6:   netip.MustParsePrefix("fd00:250::/32"),
}

const (
	nsSender = iota
	nsRelay
	nsReceiver
)

var families = []netns.Addrs{netns.AddrsIn(topoConfig.Net4), netns.AddrsIn(topoConfig.Net6)}

// lineFlow is the flow from the sender through the relay to the receiver.
func lineFlow(f netns.Addrs) relay.Flow {
	return relay.Flow{
		Key:  relay.FlowKey{Local: netip.AddrPortFrom(f.RelayA, 30000)},
		Peer: netip.AddrPortFrom(f.Caller, 4000),
		Out:  netip.AddrPortFrom(f.RelayB, 30002),
		Dst:  netip.AddrPortFrom(f.Callee, 5000),
	}
}

// crossFlow is lineFlow from the caller's side of from to the callee's
// side of to: the same family when from and to are the same, else a
// flow the kernel translates.
func crossFlow(from, to netns.Addrs) relay.Flow {
	f := lineFlow(from)
	out := lineFlow(to)
	f.Out, f.Dst = out.Out, out.Dst
	return f
}

// topo addresses the namespaces by index (nsSender...), as the tables of
// the tests do.
type topo struct{ *netns.Topo }

func newTopo(t *testing.T) *topo { return &topo{netns.New(t, topoConfig)} }

func (tp *topo) ns(i int) *netns.NS { return []*netns.NS{tp.Caller, tp.Relay, tp.Callee}[i] }

func (tp *topo) in(t testing.TB, i int, fn func() error) {
	t.Helper()
	if err := tp.ns(i).Do(fn); err != nil {
		t.Fatalf("in %s: %v", tp.ns(i).Name, err)
	}
}

// attachPassXDP puts the XDP_PASS program on dev in namespace i, for the
// test's lifetime: veth only delivers native XDP redirects and XDP_TX to
// a peer that runs XDP itself.
func (tp *topo) attachPassXDP(t *testing.T, i int, dev string) {
	t.Helper()
	l, err := AttachPassXDP(tp.ns(i), dev)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
}

func (tp *topo) udp(t *testing.T, i int, local netip.AddrPort) *net.UDPConn {
	t.Helper()
	c, err := tp.ns(i).ListenUDP(local)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// capture checks the UDP checksums of what arrives on a device.
type capture struct{ *netns.Capture }

func startCapture(t *testing.T, tp *topo, i int, dev string, port uint16) capture {
	t.Helper()
	c, err := tp.ns(i).CaptureUDP(dev, port)
	if err != nil {
		t.Fatal(err)
	}
	return capture{c}
}

// stop ends the capture and reports the good full and partial checksums,
// the wrong ones and the first wrong one.
func (c capture) stop() (full, partial, wrong int, firstWrong string) {
	r := c.Stop()
	return r.Full, r.Partial, r.Bad, r.FirstBad
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
