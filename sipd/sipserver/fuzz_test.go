package sipserver

import (
	"strconv"

	"net"
	"sipxdp/sipd/sipconf"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// FuzzRequestPath throws arbitrary bytes at a running server over UDP and
// TCP; after each input a well-formed request must still be answered by
// the core. A panic anywhere in the path kills the test binary.
func FuzzRequestPath(f *testing.F) {
	valid := "INVITE sip:bob@example.org SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKf1;rport\r\n" +
		"From: <sip:alice@example.org>;tag=1\r\nTo: <sip:bob@example.org>\r\nCall-ID: fz\r\nCSeq: 1 INVITE\r\n" +
		"Max-Forwards: 70\r\nContact: <sip:a@127.0.0.1:5999>\r\nContent-Length: 0\r\n\r\n"
	for _, seed := range []string{
		valid,
		strings.Replace(valid, "Content-Length: 0", "Content-Length: 999", 1),
		strings.Replace(valid, "CSeq: 1 INVITE", "CSeq: x", 1),
		strings.Replace(valid, "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKf1;rport\r\n", "", 1),
		strings.Replace(valid, "INVITE sip:bob@example.org", "REGISTER sip:example.org", 1),
		strings.Replace(valid, "INVITE sip:bob@example.org SIP/2.0", "ACK sip:bob@example.org SIP/2.0", 1),
		strings.Replace(valid, "To: <sip:bob@example.org>", "To: <sip:bob@example.org>;tag=x\r\nRoute: <sip:127.0.0.1;lr>", 1),
		strings.Replace(valid, "sip:bob@example.org SIP/2.0", "sip:bob@[::1 SIP/2.0", 1),
		"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKsxdeadbeef.1\r\nCSeq: 1 INVITE\r\n\r\n",
		"OPTIONS sip:127.0.0.1 SIP/2.0\r\n\r\n",
		"\r\n\r\n",
		"\x00\x01\x02",
		"REGISTER sip:x SIP/2.0\r\nContact: *\r\nContact: <sip:a@b>\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	s := testServer(f, func(c *sipconf.Config) { noAuth(c); c.Protect.Limit = 0 })
	udpAddr, tcpAddr := serverAddr(f, s, "udp"), serverAddr(f, s, "tcp")
	fuzzConn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	defer fuzzConn.Close()
	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	defer probe.Close()
	n := 0
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzConn.WriteToUDPAddrPort(data, udpAddr)
		if c, err := net.DialTimeout("tcp", tcpAddr.String(), time.Second); err == nil {
			c.SetWriteDeadline(time.Now().Add(time.Second))
			c.Write(data)
			c.Close()
		}
		n++
		req := "OPTIONS sip:carol@example.org SIP/2.0\r\nVia: SIP/2.0/UDP " + probe.LocalAddr().String() + ";branch=z9hG4bKprobe" + itoa(n) +
			"\r\nFrom: <sip:x@far.net>;tag=p\r\nTo: <sip:carol@example.org>\r\nCall-ID: probe" + itoa(n) + "\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
		probe.WriteToUDPAddrPort([]byte(req), udpAddr)
		buf := make([]byte, 4096)
		deadline := time.Now().Add(3 * time.Second)
		for {
			probe.SetReadDeadline(deadline)
			m, _, err := probe.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("server stopped answering after input %q: %v", data, err)
			}
			msg, err := sip.ParseMessage(buf[:m])
			if err != nil {
				continue
			}
			if r, ok := msg.(*sip.Response); ok && r.CallID().Value() == "probe"+itoa(n) {
				if r.StatusCode != 404 {
					t.Fatalf("probe answered %d", r.StatusCode)
				}
				return
			}
		}
	})
}

func itoa(i int) string { return strconv.Itoa(i) }
