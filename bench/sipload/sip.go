package sipload

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/internal/digestclient"
)

type ua struct {
	user string
	conn *net.UDPConn
	addr netip.AddrPort
}

func newUA(user string, addr netip.Addr) (*ua, error) {
	if !addr.Is4() {
		return nil, fmt.Errorf("sip address %s for %s: only IPv4 is supported", addr, user)
	}
	// Large buffers: a burst of INVITEs at a high rate must not be dropped
	// by the kernel, as nothing here retransmits.
	c, err := listenUDP4(addr, 0)
	if err != nil {
		return nil, fmt.Errorf("sip socket for %s: %w", user, err)
	}
	return &ua{user: user, conn: c, addr: c.LocalAddr().(*net.UDPAddr).AddrPort()}, nil
}

func (u *ua) contact() string { return fmt.Sprintf("<sip:%s@%s>", u.user, u.addr) }

func (u *ua) send(to netip.AddrPort, text string) error {
	_, err := u.conn.WriteToUDPAddrPort([]byte(text), to)
	return err
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func defaultAddr(a, def netip.Addr) netip.Addr {
	if a.IsValid() {
		return a.Unmap()
	}
	return def
}

var loopback = netip.MustParseAddr("127.0.0.1")

// register runs REGISTER, answering one 401, before the reader starts.
func register(u *ua, proxy netip.AddrPort, domain, password string) error {
	callID := "reg-" + randHex(6) + "@sipload"
	tag := randHex(4)
	uri := "sip:" + domain
	auth := ""
	for cseq := 1; cseq <= 2; cseq++ {
		msg := fmt.Sprintf("REGISTER %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-%s;rport\r\n"+
			"Max-Forwards: 70\r\nFrom: <sip:%s@%s>;tag=%s\r\nTo: <sip:%s@%s>\r\nCall-ID: %s\r\n"+
			"CSeq: %d REGISTER\r\nContact: %s\r\n%sExpires: 3600\r\nContent-Length: 0\r\n\r\n",
			uri, u.addr, randHex(6), u.user, domain, tag, u.user, domain, callID, cseq, u.contact(), auth)
		if err := u.send(proxy, msg); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		res, err := readFinal(u.conn, 5*time.Second)
		if err != nil {
			return err
		}
		switch {
		case res.StatusCode == 200:
			return nil
		case res.StatusCode == 401 && cseq == 1:
			v, err := authorize(res, "WWW-Authenticate", u.user, password, "REGISTER", uri)
			if err != nil {
				return err
			}
			auth = "Authorization: " + v + "\r\n"
		default:
			return fmt.Errorf("status %d", res.StatusCode)
		}
	}
	return errors.New("still challenged after authenticating")
}

// readFinal reads until a final response, for the synchronous REGISTER.
func readFinal(c *net.UDPConn, wait time.Duration) (*sip.Response, error) {
	buf := make([]byte, 65535)
	c.SetReadDeadline(time.Now().Add(wait))
	defer c.SetReadDeadline(time.Time{})
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, fmt.Errorf("no response: %w", err)
		}
		m, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
		if err != nil {
			continue
		}
		if r, ok := m.(*sip.Response); ok && r.StatusCode >= 200 {
			return r, nil
		}
	}
}

// authorize answers the MD5 challenge in res's header hdr.
func authorize(res *sip.Response, hdr, user, password, method, uri string) (string, error) {
	var chs []string
	for _, h := range res.GetHeaders(hdr) {
		chs = append(chs, h.Value())
	}
	v, err := digestclient.AnswerFirst(chs, "MD5", digestclient.Request{Method: method, URI: uri, Username: user, Password: password})
	if err != nil {
		return "", fmt.Errorf("%s: %w", hdr, err)
	}
	return v, nil
}

// readLoop parses every datagram on u's socket and hands it to h under mu,
// inline: no goroutine per message.
func readLoop(mu *sync.Mutex, u *ua, h func(*ua, sip.Message, netip.AddrPort)) {
	buf := make([]byte, 65535)
	for {
		n, from, err := u.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		m, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
		if err != nil {
			continue
		}
		mu.Lock()
		h(u, m, from)
		mu.Unlock()
	}
}

// sdp has no a=rtcp: RTCP is on port+1, which is how sipd's relay pairs
// its flows too.
func sdp(user string, addr netip.Addr, port uint16) string {
	return fmt.Sprintf("v=0\r\no=%s 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"+
		"m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n", user, addr, addr, port)
}
