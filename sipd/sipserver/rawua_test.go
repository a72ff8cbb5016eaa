package sipserver

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// rawUA is a hand-driven user agent on a UDP socket: tests write the exact
// bytes and read what comes back, so nothing in between can be wrong in
// the same way as the server.
type rawUA struct {
	t    *testing.T
	conn *net.UDPConn
}

func newRawUA(t *testing.T) *rawUA {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawUA{t: t, conn: c}
}

func (u *rawUA) addr() netip.AddrPort { return u.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (u *rawUA) send(to netip.AddrPort, text string) {
	u.t.Helper()
	if _, err := u.conn.WriteToUDPAddrPort([]byte(crlf(text)), to); err != nil {
		u.t.Fatal(err)
	}
}

func crlf(text string) string {
	text = strings.TrimLeft(text, "\n")
	if strings.Contains(text, "\r\n") {
		return text
	}
	return strings.ReplaceAll(text, "\n", "\r\n")
}

// recv returns the next message, or nil after timeout.
func (u *rawUA) recv(timeout time.Duration) sip.Message {
	u.t.Helper()
	buf := make([]byte, 65535)
	u.conn.SetReadDeadline(time.Now().Add(timeout))
	n, src, err := u.conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil
	}
	m, err := sip.ParseMessage(buf[:n])
	if err != nil {
		u.t.Fatalf("unparsable message from %s: %v\n%s", src, err, buf[:n])
	}
	m.SetSource(src.String())
	return m
}

// expect reads until a response with code (skipping 100 Trying) arrives.
func (u *rawUA) expect(code int) *sip.Response {
	u.t.Helper()
	for {
		m := u.recv(3 * time.Second)
		if m == nil {
			u.t.Fatalf("no %d response", code)
		}
		if r, ok := m.(*sip.Response); ok {
			if r.StatusCode == 100 && code != 100 {
				continue
			}
			if r.StatusCode != code {
				u.t.Fatalf("got %d %s, want %d", r.StatusCode, r.Reason, code)
			}
			return r
		}
	}
}

// expectRequest reads until a request of method arrives.
func (u *rawUA) expectRequest(method sip.RequestMethod) *sip.Request {
	u.t.Helper()
	for {
		m := u.recv(3 * time.Second)
		if m == nil {
			u.t.Fatalf("no %s request", method)
		}
		if r, ok := m.(*sip.Request); ok && r.Method == method {
			return r
		}
	}
}

// respond answers req with code, as a UAS would: same Via, From, Call-ID,
// CSeq, Record-Route copied, a To tag, our Contact.
func (u *rawUA) respond(req *sip.Request, code int, reason, toTag string) {
	u.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "SIP/2.0 %d %s\r\n", code, reason)
	for _, h := range req.GetHeaders("Via") {
		b.WriteString("Via: " + h.Value() + "\r\n")
	}
	for _, h := range req.GetHeaders("Record-Route") {
		b.WriteString("Record-Route: " + h.Value() + "\r\n")
	}
	to := req.To().Value()
	if toTag != "" && !strings.Contains(to, "tag=") {
		to += ";tag=" + toTag
	}
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %s\r\nContact: <sip:uas@%s>\r\nContent-Length: 0\r\n\r\n",
		req.From().Value(), to, req.CallID().Value(), req.CSeq().Value(), u.addr())
	dst, _ := netip.ParseAddrPort(req.Source())
	u.send(dst, b.String())
}

var branchSeq atomic.Uint64

func branch() string { return fmt.Sprintf("z9hG4bKt%d", branchSeq.Add(1)) }

// request builds a request from u with the usual headers.
func (u *rawUA) request(method, ruri, from, to, callID string, cseq int, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s SIP/2.0\nVia: SIP/2.0/UDP %s;branch=%s;rport\nFrom: <%s>;tag=ft%s\nTo: <%s>\nCall-ID: %s\nCSeq: %d %s\nMax-Forwards: 70\nContact: <sip:ua@%s>\n",
		method, ruri, u.addr(), branch(), from, callID, to, callID, cseq, method, u.addr())
	for _, e := range extra {
		b.WriteString(e + "\n")
	}
	b.WriteString("Content-Length: 0\n\n")
	return b.String()
}

// tcpUA is the same over one TCP connection.
type tcpUA struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func newTCPUA(t *testing.T, to netip.AddrPort) *tcpUA {
	t.Helper()
	c, err := net.DialTimeout("tcp", to.String(), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &tcpUA{t: t, conn: c, r: bufio.NewReader(c)}
}

func (u *tcpUA) send(text string) {
	u.t.Helper()
	if _, err := u.conn.Write([]byte(crlf(text))); err != nil {
		u.t.Fatal(err)
	}
}

// recvResponse reads one message off the stream.
func (u *tcpUA) recv(timeout time.Duration) sip.Message {
	u.t.Helper()
	u.conn.SetReadDeadline(time.Now().Add(timeout))
	var head strings.Builder
	length := 0
	for {
		line, err := u.r.ReadString('\n')
		if err != nil {
			return nil
		}
		head.WriteString(line)
		if line == "\r\n" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "Content-Length") {
			fmt.Sscanf(strings.TrimSpace(v), "%d", &length)
		}
	}
	body := make([]byte, length)
	if _, err := u.r.Read(body); err != nil && length > 0 {
		return nil
	}
	m, err := sip.ParseMessage(append([]byte(head.String()), body...))
	if err != nil {
		u.t.Fatalf("unparsable: %v\n%s", err, head.String())
	}
	return m
}
