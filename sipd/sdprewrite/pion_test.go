package sdprewrite

import (
	"testing"

	"github.com/pion/sdp/v3"
)

// TestPionRejectsSIPSDP records why pion's Unmarshal is not the parser of record (see the package comment): each
// body here is SDP that SIP devices send, pion refuses it, and Parse must accept it. If a pion upgrade starts
// accepting one of these, the case fails and the package comment should be revisited.
func TestPionRejectsSIPSDP(t *testing.T) {
	head := "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
	cases := map[string]string{
		"t38 fax":       head + "m=image 5000 udptl t38\r\na=T38FaxVersion:0\r\n",
		"unknown line":  head + "y=0110000000\r\nm=audio 5000 RTP/AVP 0\r\n",
		"audio and t38": head + "m=audio 5000 RTP/AVP 0\r\nm=image 0 udptl t38\r\n",
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			var s sdp.SessionDescription
			if err := s.UnmarshalString(body); err == nil {
				t.Errorf("pion accepted it now")
			}
			if _, err := Parse([]byte(body)); err != nil {
				t.Errorf("Parse: %v", err)
			}
		})
	}
}

// TestPionMarshalReorders records the other reason Rewrite edits lines instead of using pion's Marshal: pion
// reads a media section with a= before c= (which real devices send) but writes it back in RFC order, so a
// Marshal round trip changes lines nobody meant to change. Rewrite leaves them where they were.
func TestPionMarshalReorders(t *testing.T) {
	in := "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n" +
		"m=audio 4000 RTP/AVP 0\r\na=sendrecv\r\nc=IN IP4 192.0.2.1\r\nb=AS:64\r\n"
	var s sdp.SessionDescription
	if err := s.UnmarshalString(in); err != nil {
		t.Fatal(err)
	}
	m, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if string(m) == in {
		t.Errorf("pion's Marshal now keeps the order; the package comment should be revisited")
	}
	out, err := Rewrite([]byte(in), map[int]Target{0: {r4, 30000, 30001}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := "v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n" +
		"m=audio 30000 RTP/AVP 0\r\na=sendrecv\r\nc=IN IP4 203.0.113.5\r\nb=AS:64\r\n"
	if string(out) != want {
		t.Errorf("Rewrite:\n%q\nwant\n%q", out, want)
	}
}
