package kamailio

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// party is one side of a call: the namespace sipp runs in, its SIP
// address, and the test's RTP socket its SDP announces.
type party struct {
	ns  *netNS
	sip netip.AddrPort
	rtp *net.UDPConn
}

func (p party) rtpAddr() netip.AddrPort { return p.rtp.LocalAddr().(*net.UDPAddr).AddrPort() }

// call is one call sipp placed through Kamailio, answered.
type call struct {
	relay          *relayCtl
	uac, uas       *sippProc
	caller, callee party
	id             string
	// inv is the INVITE the callee got, ok the 200 OK the caller got:
	// the SDP each side was given.
	inv, ok *sipMsg
	// Where each side's SDP says to send: ports of the relay.
	callerSends, calleeSends netip.AddrPort
}

// register registers bob at kam from at with sipp (the registrar's
// Contact is at, where the callee's sipp then listens).
func register(t *testing.T, ns *netNS, dir, sippBin string, at, kam netip.AddrPort) {
	t.Helper()
	reg := startSipp(t, ns, dir, sippBin, "register", 1, "-sf", testdata(t, "register.xml"),
		"-i", at.Addr().String(), "-p", port(at), "-s", "bob", kam.String())
	if err := reg.wait(10 * time.Second); err != nil {
		t.Fatalf("REGISTER of bob from %v: %v\n%s", at, err, reg.errors())
	}
}

// placeCall starts sipp as the callee (answering with callee's RTP
// socket in its SDP) and as the caller (calling bob at kam with caller's
// socket in its SDP, holding the call holdCall), and waits for the
// INVITE at the callee and the 200 OK at the caller. Both SDPs must
// point at the relay.
func placeCall(t *testing.T, dir, sippBin string, kam netip.AddrPort, relay *relayCtl, caller, callee party) *call {
	t.Helper()
	c := &call{relay: relay, caller: caller, callee: callee}
	c.uas = startSipp(t, callee.ns, dir, sippBin, "uas", 1, "-sf", testdata(t, "uas.xml"),
		"-i", callee.sip.Addr().String(), "-p", port(callee.sip),
		"-key", "rtp_ip", callee.rtpAddr().Addr().String(), "-key", "rtp_port", port(callee.rtpAddr()))
	waitFor(t, 5*time.Second, "sipp UAS listening on "+callee.sip.String(), func() bool { return callee.ns.udpBound(callee.sip.Port()) },
		func() string { return tailFile(c.uas.log, 20) })
	c.uac = startSipp(t, caller.ns, dir, sippBin, "uac", 1, "-sf", testdata(t, "uac.xml"),
		"-i", caller.sip.Addr().String(), "-p", port(caller.sip), "-s", "bob",
		"-d", strconv.Itoa(int(holdCall.Milliseconds())),
		"-key", "rtp_ip", caller.rtpAddr().Addr().String(), "-key", "rtp_port", port(caller.rtpAddr()),
		kam.String())

	// The SDP each side received: the callee's in the INVITE, the
	// caller's in the 200 OK.
	var inv, ok *sipMsg
	waitFor(t, 5*time.Second, "the INVITE at the UAS and the 200 OK at the UAC", func() bool {
		if inv == nil {
			inv = received(c.uas.msgs, "INVITE ")
		}
		if ok == nil {
			ok = received(c.uac.msgs, "SIP/2.0 200 ")
		}
		return inv != nil && ok != nil
	}, func() string {
		return fmt.Sprintf("uas messages:\n%s\nuac messages:\n%s", tailFile(c.uas.msgs, 40), tailFile(c.uac.msgs, 40))
	})
	c.inv, c.ok = inv, ok
	c.id = inv.header("Call-ID")
	c.calleeSends = inv.media(t, "the INVITE the callee got")
	c.callerSends = ok.media(t, "the 200 OK the caller got")
	t.Logf("call %s: caller sends to %v, callee sends to %v", c.id, c.callerSends, c.calleeSends)
	for _, s := range []struct {
		who  string
		got  netip.AddrPort
		peer netip.AddrPort
	}{{"callee (INVITE)", c.calleeSends, caller.rtpAddr()}, {"caller (200 OK)", c.callerSends, callee.rtpAddr()}} {
		if s.got == s.peer {
			t.Fatalf("the %s SDP points at the other party %v: the relay did not rewrite it", s.who, s.got)
		}
		if !relay.owns(s.got) {
			t.Fatalf("the %s SDP points at %v, want the relay %v port %d-%d", s.who, s.got, relay.relay, relay.spec.portMin, relay.spec.portMax)
		}
	}
	if c.callerSends == c.calleeSends {
		t.Fatalf("both sides told to send to %v", c.callerSends)
	}
	return c
}

// relayMedia checks RTP both ways through the relay and on the kernel
// path. The first packets may go through userspace (latching, the
// handoff); after that every RTP flow of the call must be on the kernel
// path and count the packets.
func (c *call) relayMedia(t *testing.T) {
	t.Helper()
	exchange(t, c.caller.rtp, c.callee.rtp, c.callerSends, c.calleeSends, 20)
	var fs []flowJSON
	waitFor(t, 4*time.Second, "the call's RTP flows on the kernel path", func() bool {
		fs = c.relay.flows(t, c.id)
		return kernelRTP(fs)
	}, func() string { return fmt.Sprintf("flows: %s\nall flows: %s", js(fs), js(c.relay.flows(t, ""))) })
	before := rtpPackets(fs)
	exchange(t, c.caller.rtp, c.callee.rtp, c.callerSends, c.calleeSends, 100)
	fs = c.relay.flows(t, c.id)
	for _, f := range fs {
		if f.Component != "rtp" {
			continue
		}
		if f.Path != "kernel" {
			t.Errorf("flow %s -> %s on path %q (%s), want kernel", f.Local, f.Dst, f.Path, f.KernelError)
		}
		if f.Packets < 100 {
			t.Errorf("flow %s -> %s counts %d packets, want at least 100", f.Local, f.Dst, f.Packets)
		}
	}
	if got := rtpPackets(fs) - before; got < 2*100 {
		t.Errorf("the call's RTP flows counted %d packets of the last 200: %s", got, js(fs))
	}
	t.Logf("flows: %s", js(fs))
	if c.uac.exited() {
		t.Fatalf("the caller ended before the RTP checks were done (hold %v too short?)", holdCall)
	}
}

func rtpPackets(fs []flowJSON) uint64 {
	var n uint64
	for _, f := range fs {
		if f.Component == "rtp" {
			n += f.Packets
		}
	}
	return n
}

// hangUp waits for the caller's BYE after the hold: both sipp end
// successfully, the callee got the BYE, and the relay's flows for the
// call are gone.
func (c *call) hangUp(t *testing.T) {
	t.Helper()
	if err := c.uac.wait(holdCall + 10*time.Second); err != nil {
		t.Fatalf("sipp UAC: %v\n%s", err, c.uac.errors())
	}
	if err := c.uas.wait(5 * time.Second); err != nil {
		t.Fatalf("sipp UAS: %v\n%s", err, c.uas.errors())
	}
	if bye := received(c.uas.msgs, "BYE "); bye == nil {
		t.Fatal("the callee got no BYE")
	}
	var fs []flowJSON
	waitFor(t, 3*time.Second, "no flows left for the call after BYE", func() bool {
		fs = c.relay.flows(t, c.id)
		return len(fs) == 0
	}, func() string { return "flows: " + js(fs) })
}

// The SSRCs of the test's RTP, one per side.
const ssrcCaller, ssrcCallee = 0xca11e7, 0xca11ee

// rtpPacket is one 172-byte RTP packet: a 12-byte header (v2, PCMU) and
// 160 bytes of payload.
func rtpPacket(ssrc uint32, seq int) []byte {
	b := make([]byte, 172)
	b[0], b[1] = 0x80, 0
	b[2], b[3] = byte(seq>>8), byte(seq)
	ts := uint32(seq * 160)
	b[4], b[5], b[6], b[7] = byte(ts>>24), byte(ts>>16), byte(ts>>8), byte(ts)
	b[8], b[9], b[10], b[11] = byte(ssrc>>24), byte(ssrc>>16), byte(ssrc>>8), byte(ssrc)
	return b
}

// oneWay sends n RTP packets from one side to the relay port to and
// counts those that reach at from the relay port from within wait.
func oneWay(t *testing.T, ssrc uint32, conn *net.UDPConn, to netip.AddrPort, at *net.UDPConn, from netip.AddrPort, n int, wait time.Duration) int {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := conn.WriteToUDPAddrPort(rtpPacket(ssrc, i), to); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 2048)
	got := 0
	at.SetReadDeadline(time.Now().Add(wait))
	for got < n {
		k, src, err := at.ReadFromUDPAddrPort(buf)
		if err != nil {
			break
		}
		if src != from || k != 172 {
			t.Fatalf("a packet of %d bytes from %v, want 172 from the relay's %v", k, src, from)
		}
		got++
	}
	return got
}
