package netns

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// A host behind NAT reaches the outside from the NAT's address; the
// party it sent to answers through the pinhole, another party sending to
// the same public address and port gets nothing through, and the private
// address is not routed from outside.
func TestAddBehindNAT(t *testing.T) {
	tp := New(t, Config{Prefix: "sxnt-", Net4: netip.MustParsePrefix("10.252.0.0/16")})
	nat := tp.AddHost(t, "n", 4)
	phone := tp.AddBehindNAT(t, nat, "p", 5)
	if phone.V4 != netip.MustParseAddr("10.252.5.2") || phone.Relay4 != netip.MustParseAddr("10.252.5.1") {
		t.Fatalf("host behind NAT: %+v", phone)
	}
	listen := func(ns *NS, a netip.Addr) *net.UDPConn { return listenUDP(t, ns, netip.AddrPortFrom(a, 0)) }
	p := listen(phone.NS, phone.V4)
	server, other := listen(tp.Caller, tp.V4.Caller), listen(tp.Callee, tp.V4.Callee)
	if _, err := p.WriteToUDPAddrPort([]byte("out"), server.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		t.Fatal(err)
	}
	msg, public := recv(server)
	if msg != "out" || public.Addr() != nat.V4 {
		t.Fatalf("the server got %q from %s, want \"out\" from the NAT's %s", msg, public, nat.V4)
	}
	for _, c := range []struct {
		from    *net.UDPConn
		to      netip.AddrPort
		through bool
		why     string
	}{
		{server, public, true, "the party the phone sent to"},
		{other, public, false, "another party, to the same pinhole"},
		{other, p.LocalAddr().(*net.UDPAddr).AddrPort(), false, "another party, to the private address"},
	} {
		if _, err := c.from.WriteToUDPAddrPort([]byte("in"), c.to); err != nil {
			t.Fatal(err)
		}
		if got, _ := recv(p); (got == "in") != c.through {
			t.Errorf("%s: the phone got %q, want it through: %v", c.why, got, c.through)
		}
	}
}

// A port forward lets a party the host behind NAT never sent to reach it
// at the NAT's address on the forwarded port, from its own address, and
// the host's answer leaves from the NAT's address and that port; other
// ports stay closed.
func TestForwardUDP(t *testing.T) {
	tp := New(t, Config{Prefix: "sxnt-", Net4: netip.MustParsePrefix("10.252.0.0/16")})
	nat := tp.AddHost(t, "n", 4)
	phone := tp.AddBehindNAT(t, nat, "p", 5)
	const fwd, closed = 30000, 30002
	nat.ForwardUDP(t, phone, fwd, fwd+1)
	other := listenUDP(t, tp.Callee, netip.AddrPortFrom(tp.V4.Callee, 0))
	for _, c := range []struct {
		port    uint16
		through bool
	}{{fwd, true}, {closed, false}} {
		p := listenUDP(t, phone.NS, netip.AddrPortFrom(phone.V4, c.port))
		if _, err := other.WriteToUDPAddrPort([]byte("in"), netip.AddrPortFrom(nat.V4, c.port)); err != nil {
			t.Fatal(err)
		}
		got, from := recv(p)
		if (got == "in") != c.through {
			t.Fatalf("port %d: the phone got %q, want it through: %v", c.port, got, c.through)
		}
		if !c.through {
			continue
		}
		if want := other.LocalAddr().(*net.UDPAddr).AddrPort(); from != want {
			t.Errorf("port %d: the phone got it from %s, want the sender's %s", c.port, from, want)
		}
		if _, err := p.WriteToUDPAddrPort([]byte("back"), from); err != nil {
			t.Fatal(err)
		}
		if got, from := recv(other); got != "back" || from != netip.AddrPortFrom(nat.V4, c.port) {
			t.Errorf("port %d: the answer came as %q from %s, want \"back\" from %s:%d", c.port, got, from, nat.V4, c.port)
		}
	}
}

func listenUDP(t *testing.T, ns *NS, a netip.AddrPort) *net.UDPConn {
	t.Helper()
	c, err := ns.ListenUDP(a)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recv reads one datagram within a second ("" when none came).
func recv(c *net.UDPConn) (string, netip.AddrPort) {
	c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 64)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return "", netip.AddrPort{}
	}
	return string(buf[:n]), from
}
