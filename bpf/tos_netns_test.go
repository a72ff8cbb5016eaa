package bpf

import (
	"encoding/binary"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sipxdp/internal/netns"
	"sipxdp/relay"
	"sipxdp/relay/relaytest"
)

// recvTOS enables IP_RECVTOS / IPV6_RECVTCLASS on c and reads one
// datagram: its sequence number and the TOS it arrived with.
func recvTOS(t *testing.T, c *net.UDPConn, v6 bool) (seq uint16, tos uint8) {
	t.Helper()
	setIPOpt(t, c, v6, unix.IP_RECVTOS, unix.IPV6_RECVTCLASS, 1)
	buf, oob := make([]byte, 2048), make([]byte, 128)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, oobn, _, _, err := c.ReadMsgUDPAddrPort(buf, oob)
	if err != nil || n < 4 {
		t.Fatalf("no datagram: %v", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_TOS && len(m.Data) > 0:
			return binary.BigEndian.Uint16(buf[2:4]), m.Data[0]
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_TCLASS && len(m.Data) >= 4:
			return binary.BigEndian.Uint16(buf[2:4]), uint8(binary.NativeEndian.Uint32(m.Data))
		}
	}
	t.Fatal("no tos control message")
	return 0, 0
}

// TestNetnsTOS: a flow's TOS (rtpengine's TOS) is on what the receiver
// gets through each hook, both families and between them, with checksums
// the receiving stack accepts (a wrong IPv4 header checksum would be
// dropped there) and the capture finds right; without it, the sender's
// own TOS goes through.
func TestNetnsTOS(t *testing.T) {
	requireRoot(t)
	for _, mode := range []string{ModeXDPGeneric, ModeTC} {
		t.Run(mode, func(t *testing.T) {
			tp := newTopo(t)
			k := openForTraffic(t, tp, mode)
			// Same family, then between families, where the translated
			// header carries the flow's TOS, or else the sender's.
			lines := [][2]netns.Addrs{{families[0], families[0]}, {families[1], families[1]},
				{families[0], families[1]}, {families[1], families[0]}}
			for _, line := range lines {
				for _, tos := range []relay.TOS{{Set: true, Value: 0xb8}, {Set: true, Value: 0}, {}} {
					v6, recvV6 := !line[0].Caller.Is4(), !line[1].Caller.Is4()
					name := line[0].Name + " " + tos.String()
					if line[0].Name != line[1].Name {
						name = line[0].Name + " to " + line[1].Name + " " + tos.String()
					}
					flow := crossFlow(line[0], line[1])
					flow.TOS = tos
					if err := k.Upsert(flow); err != nil {
						t.Fatal(err)
					}
					recv := tp.udp(t, nsReceiver, flow.Dst)
					send := tp.udp(t, nsSender, flow.Peer)
					// The sender marks its packets AF41; the relay's TOS, if
					// any, replaces that.
					setIPOpt(t, send, v6, unix.IP_TOS, unix.IPV6_TCLASS, 0x88)
					want := uint8(0x88)
					if tos.Set {
						want = tos.Value
					}
					capt := startCapture(t, tp, nsReceiver, netns.CalleeIf, flow.Dst.Port())
					const n = 50
					if err := stream(send, flow.Key.Local, 0, n); err != nil {
						t.Fatal(err)
					}
					seen := receive(t, recv, flow.Out, n, 5*time.Second)
					full, partial, wrong, first := capt.stop()
					if len(seen) != n || full+partial != n || wrong != 0 {
						t.Errorf("%s: received %d/%d; checksums %d full, %d partial, %d wrong (first: %s)", name, len(seen), n, full, partial, wrong, first)
					}
					if err := stream(send, flow.Key.Local, n, 1); err != nil {
						t.Fatal(err)
					}
					if seq, got := recvTOS(t, recv, recvV6); seq != n || got != want {
						t.Errorf("%s: datagram %d arrived with tos %#x, want %#x", name, seq, got, want)
					}
					if st, err := k.Stats(flow.Key); err != nil || st.Packets != n+1 {
						t.Errorf("%s: flow stats %+v %v: the kernel did not forward all %d", name, st, err, n+1)
					}
					recv.Close()
					send.Close()
					if err := k.Delete(flow.Key); err != nil {
						t.Fatal(err)
					}
				}
			}
		})
	}
}

// setIPOpt sets c's IPv4 option opt4 (IPPROTO_IP), or its IPv6 option
// opt6 (IPPROTO_IPV6), to v.
func setIPOpt(t *testing.T, c *net.UDPConn, v6 bool, opt4, opt6, v int) {
	t.Helper()
	lvl, opt := unix.IPPROTO_IP, opt4
	if v6 {
		lvl, opt = unix.IPPROTO_IPV6, opt6
	}
	setSockOpt(t, c, lvl, opt, v)
}

// setSockOpt sets an integer socket option on c; an error fails the test.
func setSockOpt(t *testing.T, c *net.UDPConn, lvl, opt, v int) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), lvl, opt, v) }); err != nil || serr != nil {
		t.Fatalf("setsockopt %d/%d = %d: %v %v", lvl, opt, v, err, serr)
	}
}

// TestNetnsFIBTOS: the FIB lookup for an IPv4 next hop asks with the TOS
// the packet leaves with: the flow's when it has one, else the packet's
// own (an IPv6 packet's traffic class, when it is translated). A policy
// rule in the relay namespace makes TOS 0x10 (a value old kernels' rules
// take too) unreachable toward the callee, so the lookup with that TOS
// fails and the packet goes up (fib), and one with another TOS forwards.
func TestNetnsFIBTOS(t *testing.T) {
	requireRoot(t)
	const n = 5
	for _, mode := range []string{ModeXDPGeneric, ModeTC} {
		t.Run(mode, func(t *testing.T) {
			tp := newTopo(t)
			k := openInRelay(t, tp, mode, filepath.Join(t.TempDir(), "pins"))
			callee4 := lineFlow(families[0]).Dst.Addr()
			for _, args := range [][]string{
				{"rule", "add", "pref", "100", "tos", "0x10", "table", "100"},
				{"route", "add", "unreachable", callee4.String() + "/32", "table", "100"},
			} {
				if out, err := tp.Relay.Exec("ip", args...); err != nil {
					t.Fatalf("ip %v: %v: %s", args, err, out)
				}
			}
			for _, line := range [][2]netns.Addrs{{families[0], families[0]}, {families[1], families[0]}} {
				for _, c := range []struct {
					sent    uint8 // the sender's TOS or traffic class
					tos     relay.TOS
					forward bool
				}{
					{0x10, relay.TOS{}, false},
					{0x10, relay.TOS{Set: true, Value: 0}, true},
					{0, relay.TOS{Set: true, Value: 0x10}, false},
				} {
					name := fmt.Sprintf("%s to %s, sent %#02x, flow %s", line[0].Name, line[1].Name, c.sent, c.tos)
					flow := crossFlow(line[0], line[1])
					flow.TOS = c.tos
					if err := k.Upsert(flow); err != nil {
						t.Fatal(err)
					}
					recv := tp.udp(t, nsReceiver, flow.Dst)
					send := tp.udp(t, nsSender, flow.Peer)
					setIPOpt(t, send, !line[0].Caller.Is4(), unix.IP_TOS, unix.IPV6_TCLASS, int(c.sent))
					before, err := k.Counters()
					if err != nil {
						t.Fatal(err)
					}
					if err := stream(send, flow.Key.Local, 0, n); err != nil {
						t.Fatal(err)
					}
					wait := 5 * time.Second
					if !c.forward {
						wait = 300 * time.Millisecond
					}
					seen := receive(t, recv, flow.Out, n, wait)
					after, err := k.Counters()
					if err != nil {
						t.Fatal(err)
					}
					st, err := k.Stats(flow.Key)
					if err != nil {
						t.Fatal(err)
					}
					fib := after[relaytest.ReasonFIB] - before[relaytest.ReasonFIB]
					if c.forward && (len(seen) != n || st.Packets != n || fib != 0) {
						t.Errorf("%s: received %d/%d, flow forwarded %d, fib %d: want all forwarded", name, len(seen), n, st.Packets, fib)
					}
					if !c.forward && (len(seen) != 0 || st.Packets != 0 || fib != n) {
						t.Errorf("%s: received %d, flow forwarded %d, fib %d: want none forwarded, %d fib", name, len(seen), st.Packets, fib, n)
					}
					recv.Close()
					send.Close()
					if err := k.Delete(flow.Key); err != nil {
						t.Fatal(err)
					}
				}
			}
		})
	}
}
