package connload

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"sipxdp/internal/digestclient"
)

// A sipConn is one client connection to sipd speaking SIP by hand: the
// bench needs many thousands of them, so each holds only the socket and a
// small reader.
type sipConn struct {
	c         net.Conn
	r         *bufio.Reader
	user      string
	transport string // TCP or TLS, for Via and Contact
	proxy     string // host:port of sipd
	callID    string
	cseq      int
	// contact is fixed per user so repeated registrations replace rather
	// than add bindings.
	contact string
}

func newSipConn(c net.Conn, user, transport, proxy, contact string) *sipConn {
	return &sipConn{c: c, r: bufio.NewReaderSize(c, 1024), user: user, transport: transport,
		proxy: proxy, callID: randHex(12), contact: contact}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

type response struct {
	code int
	cseq string
	auth []string // WWW-Authenticate and Proxy-Authenticate values
	// For calls: the To header (with the callee's tag), the Record-Route
	// values in order, and the Contact's URI.
	to      string
	rr      []string
	contact string
}

// readResponse reads one response, skipping provisional ones.
func (s *sipConn) readResponse(deadline time.Time) (*response, error) {
	s.c.SetReadDeadline(deadline)
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" { // keep-alive CRLF between messages
			continue
		}
		if !strings.HasPrefix(line, "SIP/2.0 ") || len(line) < 11 {
			return nil, fmt.Errorf("not a response: %q", line)
		}
		code, err := strconv.Atoi(line[8:11])
		if err != nil {
			return nil, fmt.Errorf("bad status line %q", line)
		}
		res := &response{code: code}
		err = readHeaders(s.r, func(name, val string) {
			switch name {
			case "cseq":
				res.cseq = val
			case "www-authenticate", "proxy-authenticate":
				res.auth = append(res.auth, val)
			case "to":
				res.to = val
			case "record-route":
				res.rr = append(res.rr, splitList(val)...)
			case "contact":
				res.contact = contactURI(val)
			}
		})
		if err != nil {
			return nil, err
		}
		if code >= 200 {
			return res, nil
		}
	}
}

func (s *sipConn) send(text string, deadline time.Time) error {
	s.c.SetWriteDeadline(deadline)
	_, err := s.c.Write([]byte(text))
	return err
}

func (s *sipConn) via() string {
	return fmt.Sprintf("SIP/2.0/%s %s;branch=z9hG4bK%s;rport", s.transport, s.c.LocalAddr(), randHex(8))
}

func (s *sipConn) registerText(authz string) string {
	s.cseq++
	var b strings.Builder
	fmt.Fprintf(&b, "REGISTER sip:%s SIP/2.0\r\n", domain)
	fmt.Fprintf(&b, "Via: %s\r\n", s.via())
	b.WriteString("Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "From: <sip:%s@%s>;tag=%s\r\n", s.user, domain, randHex(4))
	fmt.Fprintf(&b, "To: <sip:%s@%s>\r\n", s.user, domain)
	fmt.Fprintf(&b, "Call-ID: %s\r\n", s.callID)
	fmt.Fprintf(&b, "CSeq: %d REGISTER\r\n", s.cseq)
	fmt.Fprintf(&b, "Contact: %s\r\n", s.contact)
	b.WriteString("Expires: 3600\r\n")
	if authz != "" {
		fmt.Fprintf(&b, "Authorization: %s\r\n", authz)
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.String()
}

// register does REGISTER, 401, REGISTER with credentials, 200.
func (s *sipConn) register(password string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	if err := s.send(s.registerText(""), deadline); err != nil {
		return err
	}
	res, err := s.readResponse(deadline)
	if err != nil {
		return err
	}
	if res.code == 200 {
		return nil
	}
	if res.code != 401 {
		return fmt.Errorf("REGISTER: %d", res.code)
	}
	authz, err := digestAnswer(res.auth, s.user, password, "REGISTER", "sip:"+domain)
	if err != nil {
		return err
	}
	if err := s.send(s.registerText(authz), deadline); err != nil {
		return err
	}
	if res, err = s.readResponse(deadline); err != nil {
		return err
	}
	if res.code != 200 {
		return fmt.Errorf("REGISTER with credentials: %d", res.code)
	}
	return nil
}

// options sends an OPTIONS keep-alive to the proxy itself and wants 200.
func (s *sipConn) options(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	s.cseq++
	text := fmt.Sprintf("OPTIONS sip:%s SIP/2.0\r\nVia: %s\r\nMax-Forwards: 70\r\n"+
		"From: <sip:%s@%s>;tag=%s\r\nTo: <sip:%s>\r\nCall-ID: %s\r\nCSeq: %d OPTIONS\r\nContent-Length: 0\r\n\r\n",
		s.proxy, s.via(), s.user, domain, randHex(4), s.proxy, randHex(10), s.cseq)
	if err := s.send(text, deadline); err != nil {
		return err
	}
	res, err := s.readResponse(deadline)
	if err != nil {
		return err
	}
	if res.code != 200 {
		return fmt.Errorf("OPTIONS: %d", res.code)
	}
	return nil
}

// digestAnswer answers the first MD5 challenge (qop=auth when offered).
func digestAnswer(challenges []string, user, password, method, uri string) (string, error) {
	return digestclient.AnswerFirst(challenges, "MD5", digestclient.Request{Method: method, URI: uri, Username: user, Password: password})
}
