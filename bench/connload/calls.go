package connload

import (
	"bufio"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Calls over TLS: the callees are the idle TLS connections, each
// registered with a Contact of its own local address, so sipd finds the
// connection in its pool and sends the INVITE down it; every caller opens
// a new TLS connection per call, as sipp did in docs/reference.md [R2].

const sdpBody = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
	"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"

// splitList splits a header value on the commas between its entries,
// not those inside <> or quotes.
func splitList(v string) []string {
	var out []string
	depth, quoted, start := 0, false, 0
	for i, c := range v {
		switch {
		case c == '"':
			quoted = !quoted
		case quoted:
		case c == '<':
			depth++
		case c == '>':
			depth--
		case c == ',' && depth == 0:
			out = append(out, strings.TrimSpace(v[start:i]))
			start = i + 1
		}
	}
	return append(out, strings.TrimSpace(v[start:]))
}

// contactURI is the URI of a Contact or name-addr value.
func contactURI(v string) string {
	if i := strings.IndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			return v[i+1 : i+j]
		}
	}
	v, _, _ = strings.Cut(v, ";")
	return strings.TrimSpace(v)
}

// request is a request read by a callee.
type request struct {
	method string
	hdrs   [][2]string // lower-case full name, value, in order
}

var compact = map[string]string{"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length"}

var canonical = map[string]string{"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq", "record-route": "Record-Route"}

// readHeaders reads a message's header lines up to the blank one, hands
// each to fn with its name in lower case and in full, then skips the
// body.
func readHeaders(r *bufio.Reader, fn func(name, val string)) error {
	clen := 0
	for {
		h, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		h = strings.TrimRight(h, "\r\n")
		if h == "" {
			break
		}
		name, val, ok := strings.Cut(h, ":")
		if !ok {
			continue
		}
		name, val = strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(val)
		if full, ok := compact[name]; ok {
			name = full
		}
		if name == "content-length" {
			clen, _ = strconv.Atoi(val)
		}
		fn(name, val)
	}
	if clen > 0 {
		if _, err := r.Discard(clen); err != nil {
			return err
		}
	}
	return nil
}

// readRequest reads one request; responses (none are expected) are read
// and skipped.
func readRequest(r *bufio.Reader) (*request, error) {
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			continue
		}
		req := &request{}
		if !strings.HasPrefix(line, "SIP/2.0 ") {
			req.method, _, _ = strings.Cut(line, " ")
		}
		err = readHeaders(r, func(name, val string) {
			req.hdrs = append(req.hdrs, [2]string{name, val})
		})
		if err != nil {
			return nil, err
		}
		if req.method != "" {
			return req, nil
		}
	}
}

// reply builds a response to req copying Via, Record-Route, From, To
// (with toTag added when set), Call-ID and CSeq.
func (req *request) reply(code int, reason, toTag, contact, body string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "SIP/2.0 %d %s\r\n", code, reason)
	for _, h := range req.hdrs {
		name, ok := canonical[h[0]]
		if !ok {
			continue
		}
		val := h[1]
		if h[0] == "to" && toTag != "" && !strings.Contains(val, ";tag=") {
			val += ";tag=" + toTag
		}
		fmt.Fprintf(&b, "%s: %s\r\n", name, val)
	}
	if contact != "" {
		fmt.Fprintf(&b, "Contact: %s\r\n", contact)
	}
	if body != "" {
		b.WriteString("Content-Type: application/sdp\r\n")
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	return b.String()
}

// answer serves the connection as a callee until it fails: INVITE gets
// 180 and 200 with SDP, BYE and other requests 200, ACK nothing.
func (s *sipConn) answer() {
	contact := fmt.Sprintf("<sip:%s@%s;transport=%s>", s.user, s.c.LocalAddr(), s.transport)
	for {
		s.c.SetReadDeadline(time.Time{})
		req, err := readRequest(s.r)
		if err != nil {
			return
		}
		var out string
		switch req.method {
		case "ACK":
			continue
		case "INVITE":
			tag := randHex(4)
			out = req.reply(180, "Ringing", tag, contact, "") + req.reply(200, "OK", tag, contact, sdpBody)
		default:
			out = req.reply(200, "OK", "", "", "")
		}
		if err := s.send(out, time.Now().Add(10*time.Second)); err != nil {
			return
		}
	}
}

// invite is an INVITE or its ACK for a non-2xx, on the caller's
// connection.
func (s *sipConn) inviteText(method, ruri, to, via string, cseq int, authz string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s SIP/2.0\r\n", method, ruri)
	fmt.Fprintf(&b, "Via: %s\r\nMax-Forwards: 70\r\n", via)
	fmt.Fprintf(&b, "From: <sip:%s@%s>;tag=%s\r\n", s.user, domain, s.callID[:8])
	fmt.Fprintf(&b, "To: %s\r\n", to)
	fmt.Fprintf(&b, "Call-ID: %s\r\nCSeq: %d %s\r\n", s.callID, cseq, method)
	body := ""
	if method == "INVITE" {
		fmt.Fprintf(&b, "Contact: %s\r\n", s.contact)
		b.WriteString("Content-Type: application/sdp\r\n")
		body = sdpBody
	}
	if authz != "" {
		fmt.Fprintf(&b, "Proxy-Authorization: %s\r\n", authz)
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	return b.String()
}

// inDialog is an ACK or BYE along the route set.
func (s *sipConn) inDialog(method string, res *response, cseq int) string {
	var b strings.Builder
	target := res.contact
	fmt.Fprintf(&b, "%s %s SIP/2.0\r\n", method, target)
	fmt.Fprintf(&b, "Via: %s\r\nMax-Forwards: 70\r\n", s.via())
	for _, r := range slices.Backward(res.rr) {
		fmt.Fprintf(&b, "Route: %s\r\n", r)
	}
	fmt.Fprintf(&b, "From: <sip:%s@%s>;tag=%s\r\n", s.user, domain, s.callID[:8])
	fmt.Fprintf(&b, "To: %s\r\n", res.to)
	fmt.Fprintf(&b, "Call-ID: %s\r\nCSeq: %d %s\r\nContent-Length: 0\r\n\r\n", s.callID, cseq, method)
	return b.String()
}

// call places one call from s to callee: INVITE, 407, ACK, INVITE with
// credentials, 180, 200, ACK, BYE, 200. setup is from the second INVITE
// to its 200.
func (s *sipConn) call(callee string, timeout time.Duration) (setup time.Duration, err error) {
	deadline := time.Now().Add(timeout)
	ruri := fmt.Sprintf("sip:%s@%s", callee, domain)
	to := "<" + ruri + ">"
	via := s.via()
	if err := s.send(s.inviteText("INVITE", ruri, to, via, 1, ""), deadline); err != nil {
		return 0, err
	}
	res, err := s.readResponse(deadline)
	if err != nil {
		return 0, fmt.Errorf("INVITE: %w", err)
	}
	if res.code != 407 {
		return 0, fmt.Errorf("INVITE: %d, want 407", res.code)
	}
	if err := s.send(s.inviteText("ACK", ruri, res.to, via, 1, ""), deadline); err != nil {
		return 0, err
	}
	authz, err := digestAnswer(res.auth, s.user, password, "INVITE", ruri)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	if err := s.send(s.inviteText("INVITE", ruri, to, s.via(), 2, authz), deadline); err != nil {
		return 0, err
	}
	if res, err = s.readResponse(deadline); err != nil {
		return 0, fmt.Errorf("INVITE with credentials: %w", err)
	}
	setup = time.Since(t0)
	if res.code != 200 {
		return 0, fmt.Errorf("INVITE with credentials: %d", res.code)
	}
	if res.contact == "" {
		return 0, fmt.Errorf("200 to INVITE without Contact")
	}
	if err := s.send(s.inDialog("ACK", res, 2), deadline); err != nil {
		return 0, err
	}
	if err := s.send(s.inDialog("BYE", res, 3), deadline); err != nil {
		return 0, err
	}
	bye, err := s.readResponse(deadline)
	if err != nil {
		return 0, fmt.Errorf("BYE: %w", err)
	}
	if bye.code != 200 {
		return 0, fmt.Errorf("BYE: %d", bye.code)
	}
	return setup, nil
}

// calls places rate calls per second for d, each over a new TLS
// connection from one of callers t0..t<callers-1> to one of the idle
// callees i0..i<callees-1>.
func calls(ctx context.Context, addr string, rate float64, d time.Duration, callers, callees int) (ok, failed int, lat []int, errs []string) {
	dial := dialer("TLS")
	return paced(ctx, rate, d, func(i int) (time.Duration, error) {
		c, err := dial(ctx, addr)
		if err != nil {
			return 0, fmt.Errorf("handshake: %w", err)
		}
		defer c.Close()
		user := fmt.Sprintf("t%d", i%callers)
		s := newSipConn(c, user, "TLS", addr, fmt.Sprintf("<sip:%s@%s;transport=TLS>", user, c.LocalAddr()))
		return s.call(fmt.Sprintf("i%d", i%callees), 10*time.Second)
	})
}
