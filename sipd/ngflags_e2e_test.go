package sipd

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// rtpSock is one UDP socket of a phone on loopback that sees the TOS
// byte of what it receives.
type rtpSock struct {
	t *testing.T
	c *net.UDPConn
}

func newRTPSock(t *testing.T) *rtpSock {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVTOS, 1) }); err != nil || serr != nil {
		t.Fatalf("IP_RECVTOS: %v %v", err, serr)
	}
	return &rtpSock{t: t, c: c}
}

func (s *rtpSock) addr() netip.AddrPort { return s.c.LocalAddr().(*net.UDPAddr).AddrPort() }

func (s *rtpSock) send(to netip.AddrPort, seq int) {
	s.t.Helper()
	p := make([]byte, 172)
	p[0] = 0x80
	binary.BigEndian.PutUint16(p[2:], uint16(seq))
	if _, err := s.c.WriteToUDPAddrPort(p, to); err != nil {
		s.t.Fatal(err)
	}
}

// recv returns the sequence number, source and TOS of the next datagram,
// or ok false when none comes within wait.
func (s *rtpSock) recv(wait time.Duration) (seq int, from netip.AddrPort, tos uint8, ok bool) {
	s.t.Helper()
	buf, oob := make([]byte, 2048), make([]byte, 64)
	s.c.SetReadDeadline(time.Now().Add(wait))
	n, oobn, _, from, err := s.c.ReadMsgUDPAddrPort(buf, oob)
	if err != nil || n < 4 {
		return 0, netip.AddrPort{}, 0, false
	}
	msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
	for _, m := range msgs {
		if m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_TOS && len(m.Data) > 0 {
			tos = m.Data[0]
		}
	}
	return int(binary.BigEndian.Uint16(buf[2:])), from, tos, true
}

func sockSDP(name string, a netip.AddrPort) string {
	return "v=0\r\no=" + name + " 1 1 IN IP4 " + a.Addr().String() + "\r\ns=-\r\nc=IN IP4 " + a.Addr().String() +
		"\r\nt=0 0\r\nm=audio " + strconv.Itoa(int(a.Port())) + " RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
}

// TestRelayOnlyNGCallFlags: the per-call NG flags act on the packets of
// their call, and of that call only (rtpengine's NG control protocol
// documentation: "asymmetric", "strict source", "TOS", "label"). Alice
// announces one port and sends from another; with asymmetric her audio
// still goes to the port she announced, while a call without the flag
// gets its media back at the source it latched. TOS 184 (EF) is on every
// packet the relay sends for the call, both ways, and not on the other
// call's. Once the learning window is over, another source on alice's IP
// is dropped (strict source). Query reports each side's label.
func TestRelayOnlyNGCallFlags(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	d, n, _, _, stop := startRelayOnly(t, func(c *Config) { c.Media.Learning = Duration(300 * time.Millisecond) })
	defer stop()

	type call struct {
		announced, sendsFrom, bob *rtpSock
		aliceSends, bobSends      netip.AddrPort
	}
	setup := func(id string, extra map[string]any) call {
		c := call{announced: newRTPSock(t), sendsFrom: newRTPSock(t), bob: newRTPSock(t)}
		offer := map[string]any{"command": "offer", "call-id": id, "from-tag": "alice-tag",
			"sdp": sockSDP("alice", c.announced.addr()), "received-from": []any{"IP4", "127.0.0.1"}}
		for k, v := range extra {
			offer[k] = v
		}
		_, c.bobSends = sdpOf(t, n.do(offer))
		_, c.aliceSends = sdpOf(t, n.do(map[string]any{"command": "answer", "call-id": id, "from-tag": "alice-tag",
			"to-tag": "bob-tag", "sdp": sockSDP("bob", c.bob.addr()), "label": "callee"}))
		return c
	}
	flagged := setup("flags@test", map[string]any{"flags": []any{"asymmetric", "strict-source", "label=caller"}, "TOS": int64(184)})
	plain := setup("plain@test", nil)

	for _, tc := range []struct {
		name string
		c    call
		tos  uint8
		asym bool
	}{{"flagged", flagged, 184, true}, {"plain", plain, 0, false}} {
		// Alice's first packets latch her real source (her announced IP
		// on another port: trusted at once).
		tc.c.sendsFrom.send(tc.c.aliceSends, 1)
		seq, from, tos, ok := tc.c.bob.recv(2 * time.Second)
		if !ok || seq != 1 || from != tc.c.bobSends || tos != tc.tos {
			t.Fatalf("%s: bob got seq %d from %s tos %d (%v), want seq 1 from %s tos %d", tc.name, seq, from, tos, ok, tc.c.bobSends, tc.tos)
		}
		tc.c.bob.send(tc.c.bobSends, 2)
		to, other := tc.c.sendsFrom, tc.c.announced
		if tc.asym {
			to, other = tc.c.announced, tc.c.sendsFrom
		}
		seq, from, tos, ok = to.recv(2 * time.Second)
		if !ok || seq != 2 || from != tc.c.aliceSends || tos != tc.tos {
			t.Errorf("%s: alice's %s got seq %d from %s tos %d (%v), want seq 2 from %s tos %d", tc.name, to.addr(), seq, from, tos, ok,
				tc.c.aliceSends, tc.tos)
		}
		if _, from, _, ok := other.recv(200 * time.Millisecond); ok {
			t.Errorf("%s: alice's %s got bob's audio from %s: asymmetric %v not followed", tc.name, other.addr(), from, tc.asym)
		}
	}

	// After the learning window, only alice's latched source passes.
	time.Sleep(600 * time.Millisecond)
	stranger := newRTPSock(t)
	stranger.send(flagged.aliceSends, 3)
	if seq, from, _, ok := flagged.bob.recv(300 * time.Millisecond); ok {
		t.Errorf("bob got seq %d from %s sent by another source on alice's IP after the lock", seq, from)
	}
	flagged.sendsFrom.send(flagged.aliceSends, 4)
	if seq, _, tos, ok := flagged.bob.recv(2 * time.Second); !ok || seq != 4 || tos != 184 {
		t.Errorf("bob got seq %d tos %d (%v) from alice's locked source, want seq 4 tos 184", seq, tos, ok)
	}

	// /flows shows the call's TOS on each of its flows, and none on the other's.
	for id, want := range map[string]string{"flags@test": "0xb8", "plain@test": ""} {
		fs := d.flows(t, id)
		if len(fs) == 0 {
			t.Errorf("/flows lists nothing for %s", id)
		}
		for _, f := range fs {
			if f.TOS != want {
				t.Errorf("/flows: %s %s %s tos %q, want %q", id, f.Leg, f.Component, f.TOS, want)
			}
		}
	}

	q := n.do(map[string]any{"command": "query", "call-id": "flags@test"})
	tags, _ := q["tags"].(map[string]any)
	for tag, want := range map[string]string{"alice-tag": "caller", "bob-tag": "callee"} {
		if td, _ := tags[tag].(map[string]any); td["label"] != want {
			t.Errorf("query: tag %s label %v, want %q (%v)", tag, td["label"], want, q)
		}
	}
	for _, id := range []string{"flags@test", "plain@test"} {
		if r := n.do(map[string]any{"command": "delete", "call-id": id}); r["result"] != "ok" {
			t.Errorf("delete %s: %v", id, r)
		}
	}
}
