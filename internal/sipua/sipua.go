// Package sipua is a hand-driven SIP user agent for tests: the test writes
// the exact bytes of each request and reads what comes back, so nothing
// between the test and the server under test can be wrong in the same way
// as the server. It works over a UDP socket the test opened (in any
// network namespace), over a TCP or TLS connection (NewStream), or over
// WebSocket (DialWS), and answers digest challenges.
package sipua

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/internal/digestclient"
)

// UA is one endpoint on one UDP socket or one stream connection.
type UA struct {
	t    testing.TB
	conn *net.UDPConn
	// Server is where Send goes.
	Server netip.AddrPort
	// Challenge is the last digest challenge Authenticated answered, so a
	// test can reuse its nonce the way phones cache credentials.
	Challenge string
	seq       atomic.Uint64

	// A stream UA's connection, transport (TCP or TLS), parser and the
	// messages parsed but not read yet.
	stream    net.Conn
	transport string
	parser    *sip.ParserStream
	pending   []sip.Message
	// wsHost is a WebSocket UA's made-up host (RFC 7118 §5), which its
	// Via and Contact carry instead of an address.
	wsHost string
	// ContactTransport, when set, is the transport parameter of a stream
	// UA's Contact instead of its own transport: JsSIP writes
	// transport=ws even over wss.
	ContactTransport string
}

// New wraps conn, which the test owns; it is closed with the test.
func New(t testing.TB, conn *net.UDPConn, server netip.AddrPort) *UA {
	t.Cleanup(func() { conn.Close() })
	return &UA{t: t, conn: conn, Server: server, transport: "UDP"}
}

// NewStream wraps a TCP or TLS connection to the server (transport "TCP"
// or "TLS", as Via says it); it is closed with the test. Everything is
// sent over it, whatever the destination.
func NewStream(t testing.TB, conn net.Conn, transport string) *UA {
	t.Cleanup(func() { conn.Close() })
	server, _ := netip.ParseAddrPort(conn.RemoteAddr().String())
	return &UA{t: t, stream: conn, Server: server, transport: transport, parser: sip.NewParser().NewSIPStream()}
}

// Addr is the socket's local address.
func (u *UA) Addr() netip.AddrPort {
	if u.stream != nil {
		ap, _ := netip.ParseAddrPort(u.stream.LocalAddr().String())
		return ap
	}
	return u.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Conn is the UDP socket (nil for a stream UA).
func (u *UA) Conn() *net.UDPConn { return u.conn }

// StreamConn is a stream UA's connection (nil for a UDP one).
func (u *UA) StreamConn() net.Conn { return u.stream }

// CRLF turns a message written with bare newlines into wire form.
func CRLF(text string) string {
	text = strings.TrimLeft(text, "\n")
	if strings.Contains(text, "\r\n") {
		return text
	}
	return strings.ReplaceAll(text, "\n", "\r\n")
}

// Send writes text (newlines made CRLF) to the server.
func (u *UA) Send(text string) { u.SendTo(u.Server, text) }

// SendTo writes text (newlines made CRLF) to dst.
func (u *UA) SendTo(dst netip.AddrPort, text string) {
	u.t.Helper()
	if u.stream != nil {
		if _, err := u.stream.Write([]byte(CRLF(text))); err != nil {
			u.t.Fatalf("send on %s: %v", u.transport, err)
		}
		return
	}
	if _, err := u.conn.WriteToUDPAddrPort([]byte(CRLF(text)), dst); err != nil {
		u.t.Fatalf("send to %s: %v", dst, err)
	}
}

// Recv returns the next message, or nil after timeout.
func (u *UA) Recv(timeout time.Duration) sip.Message {
	u.t.Helper()
	if u.stream != nil {
		return u.recvStream(timeout)
	}
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

func (u *UA) recvStream(timeout time.Duration) sip.Message {
	u.t.Helper()
	buf := make([]byte, 65535)
	u.stream.SetReadDeadline(time.Now().Add(timeout))
	for len(u.pending) == 0 {
		n, err := u.stream.Read(buf)
		if err != nil {
			return nil
		}
		err = u.parser.ParseSIPStream(buf[:n], func(m sip.Message) {
			m.SetSource(u.Server.String())
			u.pending = append(u.pending, m)
		})
		if err != nil && err != sip.ErrParseSipPartial {
			u.t.Fatalf("unparsable message on %s: %v", u.transport, err)
		}
	}
	m := u.pending[0]
	u.pending = u.pending[1:]
	return m
}

// await reads until a message that match accepts arrives, dropping the
// others; nil after timeout.
func (u *UA) await(timeout time.Duration, match func(sip.Message) bool) sip.Message {
	u.t.Helper()
	for end := time.Now().Add(timeout); ; {
		left := time.Until(end)
		if left <= 0 {
			return nil
		}
		m := u.Recv(left)
		if m == nil || match(m) {
			return m
		}
	}
}

// Response waits for the next final or provisional response other than
// 100 Trying; nil after timeout. Requests that arrive meanwhile are
// dropped.
func (u *UA) Response(timeout time.Duration) *sip.Response {
	u.t.Helper()
	r, _ := u.await(timeout, func(m sip.Message) bool {
		r, ok := m.(*sip.Response)
		return ok && r.StatusCode != 100
	}).(*sip.Response)
	return r
}

// ResponseTo waits for the next response other than 100 Trying to the
// request with Call-ID callID; nil after timeout. Anything else that
// arrives meanwhile (replies provoked by someone spoofing this address,
// requests) is dropped.
func (u *UA) ResponseTo(callID string, timeout time.Duration) *sip.Response {
	u.t.Helper()
	r, _ := u.await(timeout, func(m sip.Message) bool {
		r, ok := m.(*sip.Response)
		return ok && r.StatusCode != 100 && r.CallID() != nil && r.CallID().Value() == callID
	}).(*sip.Response)
	return r
}

// Expect reads until a response other than 100 arrives and fails the test
// unless its code is code.
func (u *UA) Expect(code int) *sip.Response {
	u.t.Helper()
	r := u.Response(3 * time.Second)
	if r == nil {
		u.t.Fatalf("%s: no response, want %d", u.Addr(), code)
	}
	if r.StatusCode != code {
		u.t.Fatalf("%s: got %d %s, want %d", u.Addr(), r.StatusCode, r.Reason, code)
	}
	return r
}

// ExpectRequest reads until a request of method arrives.
func (u *UA) ExpectRequest(method sip.RequestMethod) *sip.Request {
	u.t.Helper()
	r := u.WaitRequest(method, 3*time.Second)
	if r == nil {
		u.t.Fatalf("%s: no %s request", u.Addr(), method)
	}
	return r
}

// WaitRequest reads until a request of method arrives; nil after timeout.
func (u *UA) WaitRequest(method sip.RequestMethod, timeout time.Duration) *sip.Request {
	u.t.Helper()
	r, _ := u.await(timeout, func(m sip.Message) bool {
		r, ok := m.(*sip.Request)
		return ok && r.Method == method
	}).(*sip.Request)
	return r
}

// Silent reports whether nothing at all arrives for d.
func (u *UA) Silent(d time.Duration) bool {
	u.t.Helper()
	return u.Recv(d) == nil
}

// Respond answers req as a UAS would: same Via, From, Call-ID and CSeq,
// Record-Route copied, a To tag, our Contact, and body as application/sdp
// when not empty.
func (u *UA) Respond(req *sip.Request, code int, reason, toTag, body string) {
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
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %s\r\nContact: <sip:uas@%s>\r\n",
		req.From().Value(), to, req.CallID().Value(), req.CSeq().Value(), u.contactHost()+u.respondParam())
	if body != "" {
		body = CRLF(body)
		fmt.Fprintf(&b, "Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	} else {
		b.WriteString("Content-Length: 0\r\n\r\n")
	}
	dst, err := netip.ParseAddrPort(req.Source())
	if err != nil {
		u.t.Fatalf("respond: request source %q: %v", req.Source(), err)
	}
	u.SendTo(dst, b.String())
}

func hostPort(a netip.AddrPort) string {
	if a.Addr().Is6() && !a.Addr().Is4In6() {
		return a.String()
	}
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()).String()
}

// Branch returns a new RFC 3261 branch.
func (u *UA) Branch() string {
	return fmt.Sprintf("z9hG4bK%s.%d", strings.NewReplacer(".", "", ":", "", "[", "", "]", "").Replace(u.Addr().String()), u.seq.Add(1))
}

// Msg describes a request for Request.
type Msg struct {
	Method  string
	RURI    string // Request-URI
	From    string // URI; the tag is FromTag
	FromTag string // default "ft-" + CallID
	To      string // URI
	ToTag   string // empty: none (an out-of-dialog request)
	CallID  string
	CSeq    int
	Headers []string // extra header lines, e.g. "Route: <sip:...;lr>"
	Body    string   // SDP, sent as application/sdp
	Branch  string   // Via branch; empty: a new one
}

// Request builds the wire text of m from u: Via with a new branch and
// rport, Max-Forwards 70, and a Contact at u's address.
func (u *UA) Request(m Msg) string {
	ftag := m.FromTag
	if ftag == "" {
		ftag = "ft-" + m.CallID
	}
	branch := m.Branch
	if branch == "" {
		branch = u.Branch()
	}
	to := "<" + m.To + ">"
	if m.ToTag != "" {
		to += ";tag=" + m.ToTag
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s SIP/2.0\r\nVia: SIP/2.0/%s %s;branch=%s;rport\r\nMax-Forwards: 70\r\nFrom: <%s>;tag=%s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d %s\r\nContact: <sip:ua@%s%s>\r\n",
		m.Method, m.RURI, u.transport, u.contactHost(), branch, m.From, ftag, to, m.CallID, m.CSeq, m.Method, u.contactHost(), u.contactParam())
	for _, h := range m.Headers {
		b.WriteString(h + "\r\n")
	}
	if m.Body != "" {
		body := CRLF(m.Body)
		fmt.Fprintf(&b, "Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	} else {
		b.WriteString("Content-Length: 0\r\n\r\n")
	}
	return b.String()
}

// contactHost is what Via and Contact name: the socket's address, or a
// WebSocket UA's .invalid host.
func (u *UA) contactHost() string {
	if u.wsHost != "" {
		return u.wsHost
	}
	return hostPort(u.Addr())
}

// respondParam is the transport parameter of a response's Contact: only
// a WebSocket UA's has one, as a browser's does, or a UA given
// ContactTransport, as a TCP phone's does.
func (u *UA) respondParam() string {
	if u.wsHost == "" && u.ContactTransport == "" {
		return ""
	}
	return u.contactParam()
}

func (u *UA) contactParam() string {
	if u.stream == nil {
		return ""
	}
	if u.ContactTransport != "" {
		return ";transport=" + u.ContactTransport
	}
	return ";transport=" + strings.ToLower(u.transport)
}

// Param reads one parameter of a digest challenge.
func Param(challenge, key string) string {
	i := strings.Index(challenge, key+"=")
	if i < 0 {
		return ""
	}
	v := challenge[i+len(key)+1:]
	if strings.HasPrefix(v, `"`) {
		return v[1 : 1+strings.IndexByte(v[1:], '"')]
	}
	if j := strings.IndexAny(v, ", "); j >= 0 {
		v = v[:j]
	}
	return v
}

// Authorization answers a digest challenge (the value of WWW-Authenticate
// or Proxy-Authenticate) for method and uri with qop=auth, cnonce c0ffee
// and count nc (8 hex digits, e.g. "00000001"). An opaque in the
// challenge is returned unchanged, as RFC 7616 §3.4 requires. A challenge
// it cannot answer gives "" (the request then goes without credentials).
func Authorization(challenge, user, password, method, uri, nc string) string {
	n, err := strconv.ParseUint(nc, 16, 32)
	if err != nil {
		return ""
	}
	v, err := digestclient.Answer(challenge, digestclient.Request{Method: method, URI: uri, Username: user,
		Password: password, Count: int(n), Cnonce: "c0ffee"})
	if err != nil {
		return ""
	}
	return v
}

// Authenticated sends m, answers a 401 or 407 challenge with user's
// credentials (the first challenge offered), and returns the response
// that follows (other than 100 and the challenge). For an INVITE that is
// the first response within a second, or nil: the callee may not have
// answered yet, and the caller reads on with Response.
func (u *UA) Authenticated(m Msg, user, password string) *sip.Response {
	u.t.Helper()
	m.Branch = u.Branch()
	u.Send(u.Request(m))
	r := u.Response(3 * time.Second)
	if r == nil {
		u.t.Fatalf("%s %s: no response", m.Method, m.RURI)
	}
	if r.StatusCode != 401 && r.StatusCode != 407 {
		return r
	}
	if m.Method == "INVITE" {
		u.Send(u.Ack(m, r))
	}
	hdr, ans := "WWW-Authenticate", "Authorization"
	if r.StatusCode == 407 {
		hdr, ans = "Proxy-Authenticate", "Proxy-Authorization"
	}
	ch := r.GetHeader(hdr)
	if ch == nil {
		u.t.Fatalf("%d without %s", r.StatusCode, hdr)
	}
	u.Challenge = ch.Value()
	m.CSeq++
	m.Branch = ""
	m.Headers = append(append([]string(nil), m.Headers...), ans+": "+Authorization(ch.Value(), user, password, m.Method, m.RURI, "00000001"))
	u.Send(u.Request(m))
	if m.Method == "INVITE" {
		// The callee may not answer at all until the test makes it.
		return u.Response(time.Second)
	}
	r = u.Response(3 * time.Second)
	if r == nil {
		u.t.Fatalf("%s %s with credentials: no response", m.Method, m.RURI)
	}
	return r
}

// Ack builds the ACK for a non-2xx final response to the INVITE m, which
// was sent with m.Branch: that ACK belongs to the INVITE's transaction and
// reuses its branch (RFC 3261 §17.1.1.3).
func (u *UA) Ack(m Msg, r *sip.Response) string {
	ack := m
	ack.Method = "ACK"
	ack.Body = ""
	ack.ToTag = r.To().Params.GetOr("tag", "")
	return u.Request(ack)
}

// Register registers user at domain with digest credentials and an
// Expires of 600 s, and fails the test unless the answer is 200.
func (u *UA) Register(user, domain, password string) *sip.Response {
	u.t.Helper()
	return u.RegisterFor(user, domain, password, 600)
}

// RegisterFor is Register with an Expires of seconds.
func (u *UA) RegisterFor(user, domain, password string, seconds int) *sip.Response {
	u.t.Helper()
	m := Msg{Method: "REGISTER", RURI: "sip:" + domain, From: "sip:" + user + "@" + domain, To: "sip:" + user + "@" + domain,
		CallID: fmt.Sprintf("reg-%s-%d", user, u.seq.Add(1)), CSeq: 1, Headers: []string{fmt.Sprintf("Expires: %d", seconds)}}
	r := u.Authenticated(m, user, password)
	if r.StatusCode != 200 {
		u.t.Fatalf("register %s: got %d %s", user, r.StatusCode, r.Reason)
	}
	return r
}

// SDP is a minimal audio offer or answer for G.711 at rtp.
func SDP(rtp netip.AddrPort) string {
	a := rtp.Addr().Unmap()
	fam := "IP4"
	if a.Is6() {
		fam = "IP6"
	}
	return fmt.Sprintf("v=0\no=- 1 1 IN %s %s\ns=-\nc=IN %s %s\nt=0 0\nm=audio %d RTP/AVP 0\na=rtpmap:0 PCMU/8000\n",
		fam, a, fam, a, rtp.Port())
}

// FirstLine is a message's start line, for test failures.
func FirstLine(m sip.Message) string {
	line, _, _ := strings.Cut(m.String(), "\r\n")
	return line
}

// Message parses a request or response for tests of code that reads SIP
// messages: first is its first line; From (alice's, with fromTag), To
// (bob's, with toTag when not empty), Call-ID, CSeq, the extra header
// lines, and body as application/sdp when not empty.
func Message(t testing.TB, first, fromTag, toTag, callID, cseq, body string, extra ...string) sip.Message {
	t.Helper()
	to := "<sip:bob@example.com>"
	if toTag != "" {
		to += ";tag=" + toTag
	}
	text := first + "\r\n" +
		"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1\r\n" +
		"From: <sip:alice@example.com>;tag=" + fromTag + "\r\n" +
		"To: " + to + "\r\n" +
		"Call-ID: " + callID + "\r\n" +
		"CSeq: " + cseq + "\r\n"
	for _, h := range extra {
		text += h + "\r\n"
	}
	if body != "" {
		text += "Content-Type: application/sdp\r\n"
	}
	text += fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body)
	m, err := sip.ParseMessage([]byte(text))
	if err != nil {
		t.Fatalf("parse test message: %v\n%s", err, text)
	}
	return m
}
