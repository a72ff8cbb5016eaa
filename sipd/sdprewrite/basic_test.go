package sdprewrite

import (
	"net/netip"
	"strings"
	"testing"
)

// softphone is a typical SIP softphone offer: PCMU, PCMA, telephone-event, session-level c=.
const softphone = "v=0\r\n" +
	"o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n" +
	"s=-\r\n" +
	"c=IN IP4 192.0.2.10\r\n" +
	"t=0 0\r\n" +
	"m=audio 49170 RTP/AVP 0 8 101\r\n" +
	"a=rtpmap:0 PCMU/8000\r\n" +
	"a=rtpmap:8 PCMA/8000\r\n" +
	"a=rtpmap:101 telephone-event/8000\r\n" +
	"a=fmtp:101 0-16\r\n" +
	"a=ptime:20\r\n" +
	"a=sendrecv\r\n"

func TestRewriteSoftphone(t *testing.T) {
	relay := netip.MustParseAddr("203.0.113.5")
	out, err := Rewrite([]byte(softphone), map[int]Target{0: {Addr: relay, RTP: 30000, RTCP: 30001}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := strings.NewReplacer(
		"2890844526 2890844526", "2890844526 2890844527",
		"c=IN IP4 192.0.2.10", "c=IN IP4 203.0.113.5",
		"m=audio 49170 RTP/AVP 0 8 101\r\n", "m=audio 30000 RTP/AVP 0 8 101\r\nc=IN IP4 203.0.113.5\r\n",
	).Replace(softphone)
	if string(out) != want {
		t.Fatalf("got\n%s\nwant\n%s", out, want)
	}
	ms, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].Addr != relay || ms[0].Port != 30000 || ms[0].RTCP != netip.AddrPortFrom(relay, 30001) {
		t.Fatalf("parsed %+v", ms)
	}
}
