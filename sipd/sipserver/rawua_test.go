package sipserver

import (
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/internal/sipua"
)

// rawUA is a hand-driven user agent on a UDP socket (internal/sipua):
// tests write the exact bytes and read what comes back, so nothing in
// between can be wrong in the same way as the server. These methods keep
// the short forms this package's tests were written with.
type rawUA struct {
	*sipua.UA
	t    *testing.T
	conn *net.UDPConn
}

func newRawUA(t *testing.T) *rawUA {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return wrapUDP(t, c)
}

// wrapUDP makes a rawUA of a socket the test opened; it is closed with
// the test.
func wrapUDP(t *testing.T, c *net.UDPConn) *rawUA {
	return &rawUA{UA: sipua.New(t, c, netip.AddrPort{}), t: t, conn: c}
}

func (u *rawUA) addr() netip.AddrPort                   { return u.Addr() }
func (u *rawUA) send(to netip.AddrPort, text string)    { u.SendTo(to, text) }
func (u *rawUA) recv(timeout time.Duration) sip.Message { return u.Recv(timeout) }
func (u *rawUA) expectRequest(method sip.RequestMethod) *sip.Request {
	return u.ExpectRequest(method)
}

// expect reads until a response arrives (skipping 100 Trying unless code
// is 100) and fails unless its code is code.
func (u *rawUA) expect(code int) *sip.Response {
	u.t.Helper()
	for {
		m := u.Recv(3 * time.Second)
		if m == nil {
			u.t.Fatalf("no %d response", code)
		}
		r, ok := m.(*sip.Response)
		if !ok || r.StatusCode == 100 && code != 100 {
			continue
		}
		if r.StatusCode != code {
			u.t.Fatalf("got %d %s, want %d", r.StatusCode, r.Reason, code)
		}
		return r
	}
}

// respond answers req as a UAS would, with an empty body.
func (u *rawUA) respond(req *sip.Request, code int, reason, toTag string) {
	u.Respond(req, code, reason, toTag, "")
}

func crlf(text string) string { return sipua.CRLF(text) }

var branchSeq atomic.Uint64

func branch() string { return "z9hG4bKt" + itoa(int(branchSeq.Add(1))) }

// request builds a request from u with the usual headers; the From tag is
// "ft" + callID. Lines end in bare newlines, as the tests edit them (send
// makes them CRLF).
func (u *rawUA) request(method, ruri, from, to, callID string, cseq int, extra ...string) string {
	return strings.ReplaceAll(u.Request(sipua.Msg{Method: method, RURI: ruri, From: from, FromTag: "ft" + callID, To: to,
		CallID: callID, CSeq: cseq, Headers: extra, Branch: branch()}), "\r\n", "\n")
}

// tcpUA is the same over one TCP connection.
type tcpUA struct {
	*sipua.UA
	conn net.Conn
}

func newTCPUA(t *testing.T, to netip.AddrPort) *tcpUA {
	t.Helper()
	c, err := net.DialTimeout("tcp", to.String(), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return &tcpUA{UA: sipua.NewStream(t, c, "TCP"), conn: c}
}

func (u *tcpUA) send(text string)                       { u.Send(text) }
func (u *tcpUA) recv(timeout time.Duration) sip.Message { return u.Recv(timeout) }
