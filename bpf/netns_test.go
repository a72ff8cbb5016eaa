package bpf

import (
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sipxdp/internal/netns"
	"sipxdp/relay"
)

const streamPackets = 2000

// openInRelay opens the kernel datapath on r0 and r1 from inside the relay
// namespace, with pins in a private bpffs that the test removes.
func openInRelay(t *testing.T, tp *topo, mode, pinPath string) *Kernel {
	t.Helper()
	t.Cleanup(func() {
		if err := Uninstall(pinPath); err != nil {
			t.Errorf("uninstall: %v", err)
		}
	})
	var k *Kernel
	tp.in(t, nsRelay, func() error {
		var err error
		k, err = Open(Config{Interfaces: []string{netns.RelayA, netns.RelayB}, Mode: mode, PinPath: pinPath})
		return err
	})
	t.Cleanup(func() { k.Close() })
	return k
}

// openForTraffic opens the relay's programs in mode, pinned in a
// temporary directory, for a test that sends through them: in the XDP
// modes with the caller's tx checksum offload off, as TestNetnsRelay
// explains.
func openForTraffic(t *testing.T, tp *topo, mode string) *Kernel {
	t.Helper()
	k := openInRelay(t, tp, mode, filepath.Join(t.TempDir(), "pins"))
	if mode != ModeTC {
		if err := tp.Caller.SetTxChecksum(netns.CallerIf, false); err != nil {
			t.Fatal(err)
		}
	}
	return k
}

// TestNetnsRelay sends real UDP from a socket in the sender namespace
// through the relay namespace's programs to a socket in the receiver
// namespace, once per hook and address family.
func TestNetnsRelay(t *testing.T) {
	requireRoot(t)
	for _, mode := range []string{ModeXDP, ModeXDPGeneric, ModeTC} {
		t.Run(mode, func(t *testing.T) {
			tp := newTopo(t)
			if mode == ModeXDP {
				tp.attachPassXDP(t, nsSender, netns.CallerIf)
				tp.attachPassXDP(t, nsReceiver, netns.CalleeIf)
			}
			k := openInRelay(t, tp, mode, filepath.Join(t.TempDir(), "pins"))
			if k.Name() != mode {
				t.Fatalf("Name() = %q, want %q", k.Name(), mode)
			}
			t.Logf("hook %s: %s", k.Name(), k.Reason())
			if mode != ModeTC {
				t.Run("offloads on shows the CHECKSUM_PARTIAL problem", func(t *testing.T) {
					partialChecksumQuirk(t, tp, k, mode)
				})
			}
			if mode != ModeTC {
				// LOUD: XDP cannot fix a CHECKSUM_PARTIAL skb, which is what
				// a local socket sends over veth with offloads on; the
				// receiver would drop every packet. A real NIC delivers full
				// checksums, so XDP is tested the way it is deployed. The tc
				// run below keeps offloads on: that is the case it exists for.
				t.Logf("NOTE: turning tx checksum offload OFF on the sender veth s0 for %s "+
					"(XDP cannot update a CHECKSUM_PARTIAL checksum); tc runs with offloads on", mode)
				if err := tp.Caller.SetTxChecksum(netns.CallerIf, false); err != nil {
					t.Fatal(err)
				}
			}

			type relayCase struct {
				name    string
				flow    relay.Flow
				recvNs  int
				recvDev string
				verdict string // counter that counts the forward
				// noCheck: the sender sends IPv4 UDP without a checksum
				// (SO_NO_CHECK), which the program must add for IPv6.
				noCheck bool
			}
			var cases []relayCase
			for _, fam := range families {
				cases = append(cases, relayCase{fam.Name, lineFlow(fam), nsReceiver, netns.CalleeIf, "redirect", false})
			}
			// Between families: the sender on one, the receiver on the
			// other, the program translating the IP header.
			for _, fams := range [][2]netns.Addrs{{families[0], families[1]}, {families[1], families[0]}} {
				in, out := lineFlow(fams[0]), lineFlow(fams[1])
				in.Out, in.Dst = out.Out, out.Dst
				cases = append(cases, relayCase{fams[0].Name + " to " + fams[1].Name, in, nsReceiver, netns.CalleeIf, "redirect", false})
			}
			// IPv4 allows a UDP datagram without a checksum, IPv6 does not:
			// the program sums it. The receiver's IPv6 socket drops a
			// datagram whose checksum is zero or wrong, so each one it
			// gets was given a right one, by the kernel path alone: the
			// flow is in the map from the start and no relay socket exists.
			noCheck := lineFlow(families[0])
			noCheck.Out, noCheck.Dst = lineFlow(families[1]).Out, lineFlow(families[1]).Dst
			cases = append(cases, relayCase{families[0].Name + " without udp checksum to " + families[1].Name,
				noCheck, nsReceiver, netns.CalleeIf, "redirect", true})
			// Hairpin: both peers on the r0 side, so the packet leaves by the
			// device it came in on: XDP_TX for XDP, a redirect for tc.
			hp := lineFlow(families[0])
			hp.Key.Local = netip.AddrPortFrom(families[0].RelayA, 30004)
			hp.Out = netip.AddrPortFrom(families[0].RelayA, 30006)
			hp.Dst = netip.AddrPortFrom(families[0].Caller, 5000)
			hairpinVerdict := "tx"
			if mode == ModeTC {
				hairpinVerdict = "redirect"
			}
			cases = append(cases, relayCase{"ipv4 hairpin", hp, nsSender, netns.CallerIf, hairpinVerdict, false})

			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					flow := c.flow
					if err := k.Upsert(flow); err != nil {
						t.Fatal(err)
					}
					recv := tp.udp(t, c.recvNs, flow.Dst)
					send := tp.udp(t, nsSender, flow.Peer)
					capt := startCapture(t, tp, c.recvNs, c.recvDev, flow.Dst.Port())
					if c.noCheck {
						setSockOpt(t, send, unix.SOL_SOCKET, unix.SO_NO_CHECK, 1)
						noChecksumSent(t, tp, send, flow.Key.Local)
					}
					before, err := k.Counters()
					if err != nil {
						t.Fatal(err)
					}
					errc := make(chan error, 1)
					go func() { errc <- stream(send, flow.Key.Local, 0, streamPackets) }()
					seen := receive(t, recv, flow.Out, streamPackets, 15*time.Second)
					if err := <-errc; err != nil {
						t.Fatal(err)
					}
					full, partial, wrong, firstWrong := capt.stop()
					after, err := k.Counters()
					if err != nil {
						t.Fatal(err)
					}
					st, err := k.Stats(flow.Key)
					if err != nil {
						t.Fatal(err)
					}
					t.Logf("received %d/%d; at %s: %d full checksums, %d partial (pseudo-header seed), %d wrong; counters moved %v; flow %+v",
						len(seen), streamPackets, c.recvDev, full, partial, wrong, counterDelta(before, after), st)
					if len(seen) != streamPackets {
						t.Errorf("received %d of %d packets", len(seen), streamPackets)
					}
					if d := after[c.verdict] - before[c.verdict]; d != streamPackets {
						t.Errorf("%s counter moved %d, want %d", c.verdict, d, streamPackets)
					}
					if d := after["no_flow"] - before["no_flow"] + after["wrong_source"] - before["wrong_source"]; d != 0 {
						t.Errorf("%d packets missed the flow", d)
					}
					if st.Packets != streamPackets || st.Bytes != streamPackets*172 {
						t.Errorf("flow stats %d packets %d bytes, want %d and %d", st.Packets, st.Bytes, streamPackets, streamPackets*172)
					}
					if full+partial != streamPackets || wrong != 0 {
						t.Errorf("capture saw %d full + %d partial checksums, %d wrong (first: %s)", full, partial, wrong, firstWrong)
					}
					if c.noCheck && full != streamPackets {
						t.Errorf("%d full checksums from a sender without any, want %d made by the program", full, streamPackets)
					}
					if mode == ModeTC && partial == 0 && !c.noCheck {
						t.Errorf("tc run saw no CHECKSUM_PARTIAL packets: the case tc exists for was not exercised")
					}
					// The FIB answer is cached in the flow, and an upsert
					// (a changed destination) must drop it.
					key, err := keyOf(flow.Key)
					if err != nil {
						t.Fatal(err)
					}
					var raw xdpFlowValue
					if err := k.flows.Lookup(&key, &raw); err != nil {
						t.Fatal(err)
					}
					if raw.NhIfindex == 0 || raw.NhExpires == 0 {
						t.Errorf("next hop not cached after %d forwards: %+v", streamPackets, raw)
					}
					if err := k.Upsert(flow); err != nil {
						t.Fatal(err)
					}
					if err := k.flows.Lookup(&key, &raw); err != nil {
						t.Fatal(err)
					}
					if raw.NhIfindex != 0 || raw.Packets != streamPackets {
						t.Errorf("after upsert: cached next hop %d (want 0), packets %d (want %d kept)", raw.NhIfindex, raw.Packets, streamPackets)
					}
					if err := k.Delete(flow.Key); err != nil {
						t.Fatal(err)
					}
				})
			}
		})
	}
}

// noChecksumSent shows that send's datagrams leave without a UDP checksum:
// a few go to a port next to relay, which has no flow, so every hook
// passes them up untouched and a capture on the relay's device sees them
// as sent (it counts an IPv4 datagram without a checksum as wrong). The
// counters these move are read by the caller afterwards.
func noChecksumSent(t *testing.T, tp *topo, send *net.UDPConn, relay netip.AddrPort) {
	t.Helper()
	const n = 5
	probe := netip.AddrPortFrom(relay.Addr(), relay.Port()+100)
	capt := startCapture(t, tp, nsRelay, netns.RelayA, probe.Port())
	if err := stream(send, probe, 0, n); err != nil {
		t.Fatal(err)
	}
	full, partial, none, first := capt.stop()
	if none != n || full+partial != 0 || !strings.Contains(first, "no checksum") {
		t.Fatalf("the sender sent %d of %d datagrams without a UDP checksum (first: %q), %d with one",
			none, n, first, full+partial)
	}
}

// partialChecksumQuirk documents why the auto hook is tc on veth: with tx
// checksum offload on, a local sender's skbs carry CHECKSUM_PARTIAL, and
// the XDP program's incremental update (correct for a full checksum) spoils
// the pseudo-header seed. Generic XDP still delivers the packets over veth,
// where nobody verifies a partial checksum, so only the capture notices;
// native XDP turns them into frames with a wrong full checksum, which the
// receiver drops. It also proves the capture check can fail. If this test
// starts failing, the kernel learned to handle this: revisit candidates().
func partialChecksumQuirk(t *testing.T, tp *topo, k *Kernel, mode string) {
	flow := lineFlow(families[0])
	flow.Key.Local = netip.AddrPortFrom(flow.Key.Local.Addr(), 30008)
	if err := k.Upsert(flow); err != nil {
		t.Fatal(err)
	}
	defer k.Delete(flow.Key)
	recv := tp.udp(t, nsReceiver, flow.Dst)
	send := tp.udp(t, nsSender, flow.Peer)
	capt := startCapture(t, tp, nsReceiver, netns.CalleeIf, flow.Dst.Port())
	defer recv.Close()
	defer send.Close()
	const n = 100
	if err := stream(send, flow.Key.Local, 0, n); err != nil {
		t.Fatal(err)
	}
	seen := receive(t, recv, flow.Out, n, 2*time.Second)
	full, partial, wrong, first := capt.stop()
	t.Logf("%s with offloads on: socket received %d/%d; capture: %d full, %d partial, %d wrong checksums (first: %s)",
		mode, len(seen), n, full, partial, wrong, first)
	if wrong != n {
		t.Errorf("expected all %d checksums wrong with offloads on under %s, got %d wrong", n, mode, wrong)
	}
}
