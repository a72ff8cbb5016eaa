package sipserver

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/internal/sipua"
	"sipxdp/internal/testcert"
	"sipxdp/sipd/sipconf"
)

func TestTLSRegister(t *testing.T) {
	cert, key := testcert.Write(t, netip.MustParseAddr("127.0.0.1"))
	s := testServer(t, func(c *sipconf.Config) {
		noAuth(c)
		c.Listen = append(c.Listen, sipconf.Listen{Transport: "tls", Addr: "127.0.0.1:0", Cert: cert, Key: key})
	})
	addr := serverAddr(t, s, "tls")
	conn, err := tls.Dial("tcp", addr.String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	u := &tcpUA{UA: sipua.NewStream(t, conn, "TLS"), conn: conn}
	local := conn.LocalAddr().String()
	u.send(fmt.Sprintf("REGISTER sip:example.org SIP/2.0\nVia: SIP/2.0/TLS %s;branch=%s\nFrom: <sip:bob@example.org>;tag=1\nTo: <sip:bob@example.org>\nCall-ID: tls1\nCSeq: 1 REGISTER\nContact: <sips:bob@%s>\nExpires: 600\nContent-Length: 0\n\n", local, branch(), local))
	res, ok := u.recv(3 * time.Second).(*sip.Response)
	if !ok || res.StatusCode != 200 {
		t.Fatalf("TLS REGISTER answer: %v", res)
	}
	if b := regs(t, s); len(b) != 1 || b[0].Transport != "TLS" || b[0].Received != local {
		t.Fatalf("binding %+v", b)
	}
}

func TestIPv6(t *testing.T) {
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		c.Close()
	}
	s := testServer(t, func(c *sipconf.Config) {
		noAuth(c)
		c.Listen = []sipconf.Listen{{Transport: "udp", Addr: "[::1]:0"}}
	})
	srv := serverAddr(t, s, "udp")
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	me := c.LocalAddr().(*net.UDPAddr).AddrPort()
	msg := fmt.Sprintf("REGISTER sip:example.org SIP/2.0\r\nVia: SIP/2.0/UDP [::1]:%d;branch=%s;rport\r\nFrom: <sip:bob@example.org>;tag=1\r\nTo: <sip:bob@example.org>\r\nCall-ID: v6\r\nCSeq: 1 REGISTER\r\nContact: <sip:bob@[::1]:%d>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n", me.Port(), branch(), me.Port())
	c.WriteToUDPAddrPort([]byte(msg), srv)
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, _, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	m, err := sip.ParseMessage(buf[:n])
	if err != nil || m.(*sip.Response).StatusCode != 200 {
		t.Fatalf("answer %v %v", m, err)
	}
	if b := regs(t, s); len(b) != 1 || b[0].Received != me.String() {
		t.Fatalf("binding %+v", b)
	}
}
