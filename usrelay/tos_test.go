package usrelay

import (
	"encoding/binary"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sipxdp/relay"
	"sipxdp/relay/relaytest"
)

// tosPhone receives with IP_RECVTOS (IPV6_RECVTCLASS), so it sees the TOS
// byte each datagram arrived with.
func tosPhone(t *testing.T, ip string) *phone {
	t.Helper()
	p := newPhone(t, ip)
	rc, err := p.c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if p.addr.Addr().Is4() {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVTOS, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVTCLASS, 1)
		}
	}); err != nil || serr != nil {
		t.Fatalf("enable tos reception: %v %v", err, serr)
	}
	return p
}

// recvTOS reads one datagram and returns the TOS it arrived with.
func (p *phone) recvTOS(t *testing.T) uint8 {
	t.Helper()
	buf, oob := make([]byte, 2048), make([]byte, 128)
	p.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, oobn, _, _, err := p.c.ReadMsgUDPAddrPort(buf, oob)
	if err != nil {
		t.Fatalf("%s: %v", p.addr, err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_TOS && len(m.Data) >= 1:
			return m.Data[0]
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_TCLASS && len(m.Data) >= 4:
			return uint8(int32(binary.NativeEndian.Uint32(m.Data)))
		}
	}
	t.Fatalf("%s: no tos control message", p.addr)
	return 0
}

// Flow.TOS (rtpengine's TOS) is what the relay's datagrams carry, per
// call: each relay port's socket is the call's alone. Unset, the socket
// goes back to its default, 0. Between families, each leg's socket gets
// its own family's option (IP_TOS toward A on IPv4, IPV6_TCLASS toward B
// on IPv6), so the TOS holds across the translation as in the kernel.
func TestRelayTOS(t *testing.T) {
	for _, ips := range [][2]string{{"127.0.0.1", "127.0.0.1"}, {"::1", "::1"}, {"127.0.0.1", "::1"}} {
		t.Run(ips[0]+"-"+ips[1], func(t *testing.T) {
			r, err := New(Config{Workers: 1, Batch: 8})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			a, b := tosPhone(t, ips[0]), tosPhone(t, ips[1])
			rtpA, rtpB := freePort(t, ips[0]), freePort(t, ips[1])
			ab := relay.Flow{Key: relay.FlowKey{Local: rtpA}, Peer: a.addr, Out: rtpB, Dst: b.addr}
			ba := relay.Flow{Key: relay.FlowKey{Local: rtpB}, Peer: b.addr, Out: rtpA, Dst: a.addr}
			pkt := relaytest.RTPPayload(1, 160)
			for _, tc := range []struct {
				name string
				tos  relay.TOS
				want uint8
			}{
				{"EF", relay.TOS{Set: true, Value: 0xb8}, 0xb8},
				{"AF41", relay.TOS{Set: true, Value: 0x88}, 0x88},
				{"default again", relay.TOS{}, 0},
			} {
				ab.TOS, ba.TOS = tc.tos, tc.tos
				for _, f := range []relay.Flow{ab, ba} {
					if err := r.Upsert(f); err != nil {
						t.Fatal(err)
					}
				}
				a.send(t, rtpA, pkt)
				if got := b.recvTOS(t); got != tc.want {
					t.Errorf("%s: A→B arrived with tos %#x, want %#x", tc.name, got, tc.want)
				}
				b.send(t, rtpB, pkt)
				if got := a.recvTOS(t); got != tc.want {
					t.Errorf("%s: B→A arrived with tos %#x, want %#x", tc.name, got, tc.want)
				}
			}
		})
	}
}
