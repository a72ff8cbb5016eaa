package protect

import (
	"errors"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

func TestSanity(t *testing.T) {
	base := "INVITE sip:bob@example.org SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n" +
		"From: <sip:alice@example.org>;tag=1\r\nTo: <sip:bob@example.org>\r\nCall-ID: abc\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	cases := []struct {
		name, from, to string
		code           int
	}{
		{"ok", "", "", 0},
		{"cseq mismatch", "CSeq: 1 INVITE", "CSeq: 1 BYE", 400},
		{"no from tag", ";tag=1", "", 400},
		{"bad scheme", "sip:bob@example.org SIP", "http://bob SIP", 416},
		{"max-forwards", "Max-Forwards: 70", "Max-Forwards: 999", 400},
		{"proxy-require", "Max-Forwards: 70", "Max-Forwards: 70\r\nProxy-Require: foo", 420},
		{"no call-id", "Call-ID: abc\r\n", "", 400},
		{"two call-ids", "Call-ID: abc\r\n", "Call-ID: abc\r\nCall-ID: def\r\n", 400},
		{"call-id and compact i", "Call-ID: abc\r\n", "Call-ID: abc\r\ni: abc\r\n", 400},
		{"two cseqs", "CSeq: 1 INVITE\r\n", "CSeq: 1 INVITE\r\nCSeq: 2 INVITE\r\n", 400},
		{"two froms", "To:", "From: <sip:mallory@example.org>;tag=2\r\nTo:", 400},
		{"two tos", "To:", "To: <sip:eve@example.org>\r\nTo:", 400},
		{"two max-forwards", "Max-Forwards: 70", "Max-Forwards: 70\r\nMax-Forwards: 0", 400},
		{"two content-lengths", "Content-Length: 0", "Content-Length: 0\r\nl: 0", 400},
		{"two expires", "Max-Forwards: 70", "Max-Forwards: 70\r\nExpires: 60\r\nExpires: 3600", 400},
		{"expires", "Max-Forwards: 70", "Max-Forwards: 70\r\nExpires: 4294967295", 0},
		{"expires beyond 32 bits", "Max-Forwards: 70", "Max-Forwards: 70\r\nExpires: 4294967296", 400},
		{"expires not a number", "Max-Forwards: 70", "Max-Forwards: 70\r\nExpires: soon", 400},
		{"contact expires", "Max-Forwards: 70", "Max-Forwards: 70\r\nContact: <sip:a@192.0.2.1>;expires=60", 0},
		{"contact expires beyond 32 bits", "Max-Forwards: 70", "Max-Forwards: 70\r\nContact: <sip:a@192.0.2.1>;expires=4294967296", 400},
		{"contact expires negative", "Max-Forwards: 70", "Max-Forwards: 70\r\nContact: <sip:a@192.0.2.1>, <sip:b@192.0.2.1>;expires=-1", 400},
		{"headers in request-uri", "sip:bob@example.org SIP", "sip:bob@example.org?Route=%3Csip:gw.example%3E SIP", 400},
		{"two vias are fine", "To:", "Via: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK2\r\nTo:", 0},
		{"extension method in lower case", "INVITE sip:bob@example.org SIP/2.0", "lowercase sip:bob@example.org SIP/2.0", -1},
	}
	for _, c := range cases {
		text := base
		if c.from != "" {
			text = strings.Replace(base, c.from, c.to, 1)
		}
		if c.code == -1 {
			// sipgo upper-cases the request line's method, not CSeq's.
			text = strings.Replace(text, "CSeq: 1 INVITE", "CSeq: 1 lowercase", 1)
			c.code = 0
		}
		m, err := sip.ParseMessage([]byte(text))
		if err != nil {
			t.Fatalf("%s: parse: %v", c.name, err)
		}
		err = Check(m.(*sip.Request))
		var p *Problem
		switch {
		case c.code == 0 && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.code != 0 && (!errors.As(err, &p) || p.Code != c.code):
			t.Errorf("%s: err %v, want %d", c.name, err, c.code)
		}
	}
}

// TestOptionTags: a 420 names every tag the request required, from every
// header field and comma list.
func TestOptionTags(t *testing.T) {
	text := "REGISTER sip:example.org SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n" +
		"From: <sip:alice@example.org>;tag=1\r\nTo: <sip:alice@example.org>\r\nCall-ID: abc\r\nCSeq: 1 REGISTER\r\n" +
		"Require: foo , bar\r\nRequire: baz\r\nProxy-Require: qux,quux\r\nContent-Length: 0\r\n\r\n"
	m, err := sip.ParseMessage([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	req := m.(*sip.Request)
	if got := strings.Join(UnsupportedRequire(req), " "); got != "foo bar baz" {
		t.Errorf("UnsupportedRequire: %q", got)
	}
	var p *Problem
	if err := Check(req); !errors.As(err, &p) || p.Code != 420 {
		t.Fatalf("Check: %v", err)
	}
	if h := p.Headers(); len(h) != 1 || h[0].Name() != "Unsupported" || h[0].Value() != "qux, quux" {
		t.Errorf("420 headers %v", h)
	}
}

// BenchmarkCheck: the sanity check runs for every request (303 ns and 4
// allocations before the duplicate and expiry checks, 570-650 ns and 4
// after, on the 2-vCPU VM).
func BenchmarkCheck(b *testing.B) {
	text := "REGISTER sip:example.org SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n" +
		"From: <sip:alice@example.org>;tag=1\r\nTo: <sip:alice@example.org>\r\nCall-ID: abc\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@192.0.2.1:5060>\r\nExpires: 3600\r\nUser-Agent: x\r\nAllow: INVITE, ACK\r\nContent-Length: 0\r\n\r\n"
	m, _ := sip.ParseMessage([]byte(text))
	req := m.(*sip.Request)
	b.ReportAllocs()
	for b.Loop() {
		if err := Check(req); err != nil {
			b.Fatal(err)
		}
	}
}
