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
	}
	for _, c := range cases {
		text := base
		if c.from != "" {
			text = strings.Replace(base, c.from, c.to, 1)
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
