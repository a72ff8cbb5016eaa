package sdprewrite

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/pion/sdp/v3"
)

var (
	r4 = netip.MustParseAddr("203.0.113.5")
	r6 = netip.MustParseAddr("2001:db8:ffff::5")

	zero4 = netip.IPv4Unspecified()
	zero6 = netip.IPv6Unspecified()
)

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }
func ip(s string) netip.Addr                      { return netip.MustParseAddr(s) }

// diffMedia compares field by field so that a failure says which field of which m-line is wrong.
func diffMedia(got, want []Media) []string {
	var d []string
	if len(got) != len(want) {
		return []string{fmt.Sprintf("%d m-lines, want %d: %+v", len(got), len(want), got)}
	}
	for i := range got {
		g, w := got[i], want[i]
		add := func(field string, gv, wv any) {
			if gv != wv {
				d = append(d, fmt.Sprintf("m-line %d %s: got %v, want %v", i, field, gv, wv))
			}
		}
		add("Index", g.Index, w.Index)
		add("Type", g.Type, w.Type)
		add("Proto", g.Proto, w.Proto)
		add("Port", g.Port, w.Port)
		add("Addr", g.Addr, w.Addr)
		add("RTCP", g.RTCP, w.RTCP)
		add("RTCPMux", g.RTCPMux, w.RTCPMux)
		add("Direction", g.Direction, w.Direction)
	}
	return d
}

// sections splits an SDP text into its session part and media parts, line endings removed.
func sections(body string) [][]string {
	body = strings.ReplaceAll(body, "\r\n", "\n")
	secs := [][]string{nil}
	for _, l := range strings.Split(strings.TrimSuffix(body, "\n"), "\n") {
		if strings.HasPrefix(l, "m=") {
			secs = append(secs, nil)
		}
		secs[len(secs)-1] = append(secs[len(secs)-1], l)
	}
	return secs
}

func isICE(l string) bool {
	k, _, _ := strings.Cut(strings.TrimPrefix(l, "a="), ":")
	return strings.HasPrefix(l, "a=") && iceAttrs[k]
}

// untouched is what Rewrite must carry over unchanged, in order: every line except o=, c=, m= and a=rtcp:, and
// except ICE when it is removed.
func untouched(sec []string, removeICE bool) []string {
	var out []string
	for _, l := range sec {
		switch {
		case strings.HasPrefix(l, "o="), strings.HasPrefix(l, "c="), strings.HasPrefix(l, "m="),
			strings.HasPrefix(l, "a=rtcp:"), removeICE && isICE(l):
		default:
			out = append(out, l)
		}
	}
	return out
}

func versionOf(t *testing.T, body string) (rest string, version string) {
	t.Helper()
	for _, l := range sections(body)[0] {
		if f := strings.Fields(strings.TrimPrefix(l, "o=")); strings.HasPrefix(l, "o=") && len(f) == 6 {
			v := f[2]
			f[2] = "_"
			return strings.Join(f, " "), v
		}
	}
	t.Fatalf("no o= line in\n%s", body)
	return "", ""
}

type rewriteCase struct {
	name     string
	in       string
	targets  map[int]Target
	opts     Options
	parsedIn []Media // Parse(in)
	want     []Media // Parse(Rewrite(in))
	// check looks at the text for what Parse does not report (line placement, removed lines).
	check func(t *testing.T, out string)
}

func contains(lines ...string) func(*testing.T, string) {
	return func(t *testing.T, out string) {
		t.Helper()
		for _, l := range lines {
			if !strings.Contains(out, l+"\r\n") {
				t.Errorf("output lacks line %q", l)
			}
		}
	}
}

func lacks(prefixes ...string) func(*testing.T, string) {
	return func(t *testing.T, out string) {
		t.Helper()
		for _, p := range prefixes {
			if strings.Contains(out, "\n"+p) {
				t.Errorf("output still has a line starting %q", p)
			}
		}
	}
}

func both(fs ...func(*testing.T, string)) func(*testing.T, string) {
	return func(t *testing.T, out string) {
		t.Helper()
		for _, f := range fs {
			f(t, out)
		}
	}
}

// exactly compares the whole output, for the cases where the placement of every line matters.
func exactly(want string) func(*testing.T, string) {
	return func(t *testing.T, out string) {
		t.Helper()
		if out != want {
			t.Errorf("output\n%s\nwant\n%s", out, want)
		}
	}
}

func audio(i int, proto string, port uint16, addr netip.Addr, rtcp netip.AddrPort, mux bool, dir string) Media {
	return Media{Index: i, Type: "audio", Proto: proto, Port: port, Addr: addr, RTCP: rtcp, RTCPMux: mux, Direction: dir}
}

func video(i int, port uint16, addr netip.Addr, rtcp netip.AddrPort) Media {
	return Media{Index: i, Type: "video", Proto: "RTP/AVP", Port: port, Addr: addr, RTCP: rtcp, Direction: "sendrecv"}
}

var rewriteCases = []rewriteCase{
	{
		name:     "softphone audio only",
		in:       softphone,
		targets:  map[int]Target{0: {r4, 30000, 30001}},
		parsedIn: []Media{audio(0, "RTP/AVP", 49170, ip("192.0.2.10"), ap(ip("192.0.2.10"), 49171), false, "sendrecv")},
		want:     []Media{audio(0, "RTP/AVP", 30000, r4, ap(r4, 30001), false, "sendrecv")},
		check: exactly("v=0\r\n" +
			"o=alice 2890844526 2890844527 IN IP4 192.0.2.10\r\n" +
			"s=-\r\n" +
			"c=IN IP4 203.0.113.5\r\n" +
			"t=0 0\r\n" +
			"m=audio 30000 RTP/AVP 0 8 101\r\n" +
			"c=IN IP4 203.0.113.5\r\n" +
			"a=rtpmap:0 PCMU/8000\r\n" +
			"a=rtpmap:8 PCMA/8000\r\n" +
			"a=rtpmap:101 telephone-event/8000\r\n" +
			"a=fmtp:101 0-16\r\n" +
			"a=ptime:20\r\n" +
			"a=sendrecv\r\n"),
	},
	{
		// The relay's RTCP port is not RTP+1, so the peer must be told with an a=rtcp it did not have.
		name:    "softphone RTCP elsewhere",
		in:      softphone,
		targets: map[int]Target{0: {r4, 30000, 31000}},
		want:    []Media{audio(0, "RTP/AVP", 30000, r4, ap(r4, 31000), false, "sendrecv")},
		check:   contains("a=rtcp:31000 IN IP4 203.0.113.5"),
	},
	{
		name:    "softphone no targets",
		in:      softphone,
		targets: nil,
		want:    []Media{audio(0, "RTP/AVP", 49170, ip("192.0.2.10"), ap(ip("192.0.2.10"), 49171), false, "sendrecv")},
		check:   contains("c=IN IP4 192.0.2.10", "m=audio 49170 RTP/AVP 0 8 101"),
	},
	{
		name:    "audio and video",
		in:      audioVideo,
		targets: map[int]Target{0: {r4, 30000, 30001}, 1: {r4, 30002, 30003}},
		parsedIn: []Media{
			audio(0, "RTP/AVP", 7078, ip("198.51.100.7"), ap(ip("198.51.100.7"), 7079), false, "sendrecv"),
			video(1, 9078, ip("198.51.100.7"), ap(ip("198.51.100.7"), 9079)),
		},
		want: []Media{
			audio(0, "RTP/AVP", 30000, r4, ap(r4, 30001), false, "sendrecv"),
			video(1, 30002, r4, ap(r4, 30003)),
		},
		// No session-level c= was there, so none is added.
		check: both(contains("a=rtcp:30001 IN IP4 203.0.113.5", "a=rtcp:30003 IN IP4 203.0.113.5"),
			func(t *testing.T, out string) {
				if strings.Count(out, "\nc=") != 2 {
					t.Errorf("want the 2 media-level c= only:\n%s", out)
				}
			}),
	},
	{
		// RTCP port 0 removes a=rtcp; Parse then falls back to RTP+1.
		name:    "audio and video, no RTCP port for audio",
		in:      audioVideo,
		targets: map[int]Target{0: {r4, 30000, 0}, 1: {r4, 30002, 30003}},
		want: []Media{
			audio(0, "RTP/AVP", 30000, r4, ap(r4, 30001), false, "sendrecv"),
			video(1, 30002, r4, ap(r4, 30003)),
		},
		check: both(lacks("a=rtcp:7079", "a=rtcp:30001"), contains("a=rtcp:30003 IN IP4 203.0.113.5")),
	},
	{
		name:    "audio and video, only video relayed",
		in:      audioVideo,
		targets: map[int]Target{1: {r4, 30002, 30003}},
		want: []Media{
			audio(0, "RTP/AVP", 7078, ip("198.51.100.7"), ap(ip("198.51.100.7"), 7079), false, "sendrecv"),
			video(1, 30002, r4, ap(r4, 30003)),
		},
		check: contains("m=audio 7078 RTP/AVP 96 0 8 101", "c=IN IP4 198.51.100.7", "a=rtcp:7079"),
	},
	{
		name:     "rtcp-mux, relay without RTCP port",
		in:       rtcpMux,
		targets:  map[int]Target{0: {r4, 30000, 0}},
		parsedIn: []Media{audio(0, "RTP/SAVP", 4000, ip("192.0.2.20"), ap(ip("192.0.2.20"), 4000), true, "sendrecv")},
		want:     []Media{audio(0, "RTP/SAVP", 30000, r4, ap(r4, 30001), true, "sendrecv")},
		check:    both(contains("a=rtcp-mux"), lacks("a=rtcp:")),
	},
	{
		name:    "rtcp-mux, relay muxing too",
		in:      rtcpMux,
		targets: map[int]Target{0: {r4, 30000, 30000}},
		want:    []Media{audio(0, "RTP/SAVP", 30000, r4, ap(r4, 30000), true, "sendrecv")},
		check:   contains("a=rtcp:30000 IN IP4 203.0.113.5", "a=rtcp-mux"),
	},
	{
		name:     "a=rtcp with address",
		in:       rtcpAddr,
		targets:  map[int]Target{0: {r4, 30000, 31000}},
		parsedIn: []Media{audio(0, "RTP/AVP", 49170, ip("192.0.2.30"), ap(ip("192.0.2.31"), 53020), false, "sendrecv")},
		want:     []Media{audio(0, "RTP/AVP", 30000, r4, ap(r4, 31000), false, "sendrecv")},
		check: both(contains("a=rtcp:31000 IN IP4 203.0.113.5"), func(t *testing.T, out string) {
			if strings.Count(out, "a=rtcp") != 1 {
				t.Errorf("want exactly one a=rtcp:\n%s", out)
			}
		}),
	},
	{
		name:     "IPv6 to IPv6 relay",
		in:       ipv6,
		targets:  map[int]Target{0: {r6, 30000, 30001}},
		parsedIn: []Media{audio(0, "RTP/AVP", 20000, ip("2001:db8::10"), ap(ip("2001:db8::10"), 20001), false, "sendrecv")},
		want:     []Media{audio(0, "RTP/AVP", 30000, r6, ap(r6, 30001), false, "sendrecv")},
		check:    both(contains("c=IN IP6 2001:db8:ffff::5", "a=rtcp:30001 IN IP6 2001:db8:ffff::5"), lacks("c=IN IP4")),
	},
	{
		name:    "IPv6 to IPv4 relay",
		in:      ipv6,
		targets: map[int]Target{0: {r4, 30000, 30001}},
		want:    []Media{audio(0, "RTP/AVP", 30000, r4, ap(r4, 30001), false, "sendrecv")},
		// The o= line names the originator, not the media, and keeps its IP6 address.
		check: both(contains("c=IN IP4 203.0.113.5", "a=rtcp:30001 IN IP4 203.0.113.5", "o=- 1 2 IN IP6 2001:db8::10"), lacks("c=IN IP6")),
	},
	{
		name:    "IPv4 to IPv6 relay",
		in:      softphone,
		targets: map[int]Target{0: {r6, 30000, 30001}},
		want:    []Media{audio(0, "RTP/AVP", 30000, r6, ap(r6, 30001), false, "sendrecv")},
		check:   both(contains("c=IN IP6 2001:db8:ffff::5"), lacks("c=IN IP4")),
	},
	{
		// An IPv4-mapped IPv6 target is an IPv4 relay: it must not be written as IN IP6 ::ffff:...
		name:    "IPv4-mapped target",
		in:      softphone,
		targets: map[int]Target{0: {ip("::ffff:203.0.113.5"), 30000, 30001}},
		want:    []Media{audio(0, "RTP/AVP", 30000, r4, ap(r4, 30001), false, "sendrecv")},
		check:   lacks("c=IN IP6"),
	},
	{
		name:     "hold with sendonly",
		in:       holdSendonly,
		targets:  map[int]Target{0: {r4, 30000, 30001}},
		parsedIn: []Media{audio(0, "RTP/AVP", 49170, ip("192.0.2.10"), ap(ip("192.0.2.10"), 49171), false, "sendonly")},
		want:     []Media{audio(0, "RTP/AVP", 30000, r4, ap(r4, 30001), false, "sendonly")},
	},
	{
		name:     "hold with session-level inactive",
		in:       holdInactive,
		targets:  map[int]Target{0: {r4, 30000, 30001}},
		parsedIn: []Media{audio(0, "RTP/AVP", 49170, ip("192.0.2.10"), ap(ip("192.0.2.10"), 49171), false, "inactive")},
		want:     []Media{audio(0, "RTP/AVP", 30000, r4, ap(r4, 30001), false, "inactive")},
	},
	{
		// Old-style hold survives: relay ports, but the zero address (see Rewrite).
		name:     "old-style hold c=0.0.0.0",
		in:       holdOld,
		targets:  map[int]Target{0: {r4, 30000, 30001}},
		parsedIn: []Media{audio(0, "RTP/AVP", 24580, zero4, ap(zero4, 24581), false, "sendrecv")},
		want:     []Media{audio(0, "RTP/AVP", 30000, zero4, ap(zero4, 30001), false, "sendrecv")},
		check: exactly("v=0\r\n" +
			"o=CiscoSystemsCCM-SIP 2000 3 IN IP4 192.0.2.40\r\n" +
			"s=SIP Call\r\n" +
			"c=IN IP4 0.0.0.0\r\n" +
			"t=0 0\r\n" +
			"m=audio 30000 RTP/AVP 0 101\r\n" +
			"c=IN IP4 0.0.0.0\r\n" +
			"a=rtpmap:0 PCMU/8000\r\n" +
			"a=rtpmap:101 telephone-event/8000\r\n" +
			"a=fmtp:101 0-15\r\n"),
	},
	{
		// rtpengine's replace=zero-address (ng_control_protocol.md, "Optionally included replace-flags"): the
		// zero address is replaced with a real one.
		name:     "old-style hold c=0.0.0.0, ReplaceZero",
		in:       holdOld,
		targets:  map[int]Target{0: {r4, 30000, 30001}},
		opts:     Options{ReplaceZero: true},
		parsedIn: []Media{audio(0, "RTP/AVP", 24580, zero4, ap(zero4, 24581), false, "sendrecv")},
		want:     []Media{audio(0, "RTP/AVP", 30000, r4, ap(r4, 30001), false, "sendrecv")},
		check:    both(contains("c=IN IP4 203.0.113.5"), lacks("0.0.0.0")),
	},
	{
		name:    "old-style hold to IPv6 relay",
		in:      holdOld,
		targets: map[int]Target{0: {r6, 30000, 30001}},
		want:    []Media{audio(0, "RTP/AVP", 30000, zero6, ap(zero6, 30001), false, "sendrecv")},
		check:   contains("c=IN IP6 ::"),
	},
	{
		name:    "rejected video next to accepted audio",
		in:      rejectedVideo,
		targets: map[int]Target{0: {r4, 30000, 30001}, 1: {r4, 30002, 30003}},
		parsedIn: []Media{
			audio(0, "RTP/AVP", 30000, ip("198.51.100.20"), ap(ip("198.51.100.20"), 30001), false, "sendrecv"),
			video(1, 0, ip("198.51.100.20"), netip.AddrPort{}),
		},
		// The rejected line keeps port 0 and gets no c= of its own: its address is meaningless (RFC 3264
		// section 6), so it follows the session-level c=.
		want: []Media{
			audio(0, "RTP/AVP", 30000, r4, ap(r4, 30001), false, "sendrecv"),
			video(1, 0, r4, netip.AddrPort{}),
		},
		check: contains("m=video 0 RTP/AVP 96"),
	},
	{
		name:    "WebRTC offer, ICE removed",
		in:      webrtc,
		targets: map[int]Target{0: {r4, 30000, 0}},
		opts:    Options{RemoveICE: true},
		parsedIn: []Media{
			audio(0, "UDP/TLS/RTP/SAVPF", 54400, ip("203.0.113.99"), ap(zero4, 9), true, "sendrecv"),
		},
		want: []Media{audio(0, "UDP/TLS/RTP/SAVPF", 30000, r4, ap(r4, 30001), true, "sendrecv")},
		check: both(lacks("a=candidate", "a=ice-", "a=end-of-candidates", "a=rtcp:"),
			contains("a=fingerprint:sha-256 3C:4E:0B:7E:6A:DF:4A:90:88:1B:A3:2E:5D:8C:04:9A:9B:1D:A9:E4:4A:21:5C:60:2B:6E:9F:7F:0E:B2:77:D1",
				"a=setup:actpass", "a=mid:0", "a=group:BUNDLE 0", "a=rtcp-mux")),
	},
	{
		name:    "WebRTC offer, ICE kept",
		in:      webrtc,
		targets: map[int]Target{0: {r4, 30000, 30000}},
		want:    []Media{audio(0, "UDP/TLS/RTP/SAVPF", 30000, r4, ap(r4, 30000), true, "sendrecv")},
		check: func(t *testing.T, out string) {
			if n := strings.Count(out, "\r\na=candidate:"); n != 2 {
				t.Errorf("%d candidates kept, want 2", n)
			}
			contains("a=ice-ufrag:Oy4y", "a=ice-pwd:2lYHHg8lZ8nQ0s1Kx9yqGmA5", "a=ice-options:trickle", "a=end-of-candidates")(t, out)
		},
	},
	{
		// c=0.0.0.0 with ICE is a trickle placeholder, not hold: the relay's address goes in.
		name:     "trickle ICE placeholder",
		in:       trickle,
		targets:  map[int]Target{0: {r4, 30000, 30000}},
		opts:     Options{RemoveICE: true},
		parsedIn: []Media{audio(0, "UDP/TLS/RTP/SAVPF", 9, zero4, ap(zero4, 10), true, "sendrecv")},
		want:     []Media{audio(0, "UDP/TLS/RTP/SAVPF", 30000, r4, ap(r4, 30000), true, "sendrecv")},
		check:    lacks("a=ice-lite", "a=ice-ufrag", "a=ice-pwd"),
	},
	{
		// The video line is not relayed and relied on the session-level c=, which now names the relay: it is
		// pinned to its own address. The c= added to the audio line goes after its i= (RFC 4566 order).
		name:    "session-level c= only, one of two relayed",
		in:      sessionTwo,
		targets: map[int]Target{0: {r4, 30000, 30001}},
		parsedIn: []Media{
			audio(0, "RTP/AVP", 10000, ip("192.0.2.50"), ap(ip("192.0.2.50"), 10001), false, "sendrecv"),
			video(1, 10002, ip("192.0.2.50"), ap(ip("192.0.2.50"), 10003)),
		},
		want: []Media{
			audio(0, "RTP/AVP", 30000, r4, ap(r4, 30001), false, "sendrecv"),
			video(1, 10002, ip("192.0.2.50"), ap(ip("192.0.2.50"), 10003)),
		},
		check: exactly("v=0\r\n" +
			"o=- 10 21 IN IP4 192.0.2.50\r\n" +
			"s=-\r\n" +
			"c=IN IP4 203.0.113.5\r\n" +
			"t=0 0\r\n" +
			"m=audio 30000 RTP/AVP 0\r\n" +
			"i=main audio\r\n" +
			"c=IN IP4 203.0.113.5\r\n" +
			"a=rtpmap:0 PCMU/8000\r\n" +
			"m=video 10002 RTP/AVP 96\r\n" +
			"c=IN IP4 192.0.2.50\r\n" +
			"a=rtpmap:96 H264/90000\r\n"),
	},
	{
		name:    "session-level c= only, the other relayed",
		in:      sessionTwo,
		targets: map[int]Target{1: {r6, 30002, 30003}},
		want: []Media{
			audio(0, "RTP/AVP", 10000, ip("192.0.2.50"), ap(ip("192.0.2.50"), 10001), false, "sendrecv"),
			video(1, 30002, r6, ap(r6, 30003)),
		},
		check: contains("i=main audio", "c=IN IP4 192.0.2.50", "c=IN IP6 2001:db8:ffff::5"),
	},
	{
		name:     "late offer in 200 OK",
		in:       lateOffer,
		targets:  map[int]Target{0: {r4, 30000, 30001}},
		parsedIn: []Media{audio(0, "RTP/AVP", 21260, ip("198.51.100.30"), ap(ip("198.51.100.30"), 21261), false, "sendrecv")},
		want:     []Media{audio(0, "RTP/AVP", 30000, r4, ap(r4, 30001), false, "sendrecv")},
		check:    contains("o=FreeSWITCH 1611811564 1611811566 IN IP4 198.51.100.30", "a=rtcp:30001 IN IP4 203.0.113.5"),
	},
	{
		// pion cannot parse this one (TestPionRejectsSIPSDP); the unknown y= line is kept and LF becomes CRLF.
		name:    "T.38 with unknown line, LF endings",
		in:      t38,
		targets: map[int]Target{0: {r4, 30000, 30001}, 1: {r4, 30002, 30003}},
		parsedIn: []Media{
			audio(0, "RTP/AVP", 0, ip("192.0.2.60"), netip.AddrPort{}, false, "sendrecv"),
			{Index: 1, Type: "image", Proto: "udptl", Port: 6000, Addr: ip("192.0.2.60"), RTCP: ap(ip("192.0.2.60"), 6001), Direction: "sendrecv"},
		},
		want: []Media{
			audio(0, "RTP/AVP", 0, r4, netip.AddrPort{}, false, "sendrecv"),
			{Index: 1, Type: "image", Proto: "udptl", Port: 30002, Addr: r4, RTCP: ap(r4, 30003), Direction: "sendrecv"},
		},
		check: contains("y=0110000000", "m=audio 0 RTP/AVP 0", "m=image 30002 udptl t38"),
	},
	{
		name: "port count kept",
		in: "v=0\r\no=- 1 9 IN IP4 192.0.2.80\r\ns=-\r\nc=IN IP4 192.0.2.80\r\nt=0 0\r\n" +
			"m=video 49170/2 RTP/AVP 31\r\n",
		targets:  map[int]Target{0: {r4, 30000, 30001}},
		parsedIn: []Media{video(0, 49170, ip("192.0.2.80"), ap(ip("192.0.2.80"), 49171))},
		want:     []Media{video(0, 30000, r4, ap(r4, 30001))},
		check:    contains("m=video 30000/2 RTP/AVP 31"),
	},
	{
		// The version is a digit string; 999... must become 1000..., never wrap.
		name:    "version carry",
		in:      "v=0\r\no=- 1 99999999999999999999 IN IP4 192.0.2.80\r\ns=-\r\nt=0 0\r\n",
		targets: nil,
		want:    []Media{},
		check:   contains("o=- 1 100000000000000000000 IN IP4 192.0.2.80"),
	},
	{
		name:     "no m-line",
		in:       noMedia,
		parsedIn: []Media{},
		want:     []Media{},
		check:    contains("o=- 5 6 IN IP4 192.0.2.70", "c=IN IP4 192.0.2.70"),
	},
}

func TestRewrite(t *testing.T) {
	for _, c := range rewriteCases {
		t.Run(c.name, func(t *testing.T) {
			if c.parsedIn != nil {
				got, err := Parse([]byte(c.in))
				if err != nil {
					t.Fatalf("Parse(in): %v", err)
				}
				for _, d := range diffMedia(got, c.parsedIn) {
					t.Errorf("Parse(in): %s", d)
				}
			}
			outb, err := Rewrite([]byte(c.in), c.targets, c.opts)
			if err != nil {
				t.Fatalf("Rewrite: %v", err)
			}
			out := string(outb)
			got, err := Parse(outb)
			if err != nil {
				t.Fatalf("Parse(out): %v\n%s", err, out)
			}
			for _, d := range diffMedia(got, c.want) {
				t.Errorf("Parse(out): %s", d)
			}
			if c.check != nil {
				c.check(t, out)
			}
			checkInvariants(t, c.in, out, c.targets, c.opts)
		})
	}
}

// checkInvariants holds for every rewrite: CRLF, o= version plus one, unchanged lines kept in order, m= lines
// changed in the port only, and pion agreeing with Parse when it can read the body.
func checkInvariants(t *testing.T, in, out string, targets map[int]Target, opts Options) {
	t.Helper()
	if strings.Count(out, "\n") != strings.Count(out, "\r\n") || !strings.HasSuffix(out, "\r\n") {
		t.Errorf("output is not CRLF throughout:\n%q", out)
	}
	inRest, inV := versionOf(t, in)
	outRest, outV := versionOf(t, out)
	if inRest != outRest || outV != increment(inV) {
		t.Errorf("o=: %s with version %s became %s with version %s", inRest, inV, outRest, outV)
	}
	is, os := sections(in), sections(out)
	if len(is) != len(os) {
		t.Fatalf("%d sections became %d", len(is), len(os))
	}
	parsed, _ := Parse([]byte(in))
	for i := range is {
		a, b := untouched(is[i], opts.RemoveICE), untouched(os[i], opts.RemoveICE)
		if strings.Join(a, "\n") != strings.Join(b, "\n") {
			t.Errorf("section %d: lines not carried over unchanged:\n%s\nbecame\n%s", i, strings.Join(a, "\n"), strings.Join(b, "\n"))
		}
		if i == 0 {
			continue
		}
		inM, outM := strings.Fields(is[i][0]), strings.Fields(os[i][0])
		wantPort := inM[1]
		if tg, ok := targets[i-1]; ok && parsed[i-1].Port != 0 {
			_, count, has := strings.Cut(inM[1], "/")
			wantPort = fmt.Sprint(tg.RTP)
			if has {
				wantPort += "/" + count
			}
		}
		inM[1] = wantPort
		if strings.Join(inM, " ") != strings.Join(outM, " ") {
			t.Errorf("m-line %d: %q, want %q", i-1, os[i][0], strings.Join(inM, " "))
		}
	}
	if opts.RemoveICE {
		for _, l := range strings.Split(out, "\r\n") {
			if isICE(l) {
				t.Errorf("ICE line kept: %q", l)
			}
		}
	}

	// pion as a second opinion: if it reads the input it must read the output, and see the same ports and
	// media-level addresses as Parse.
	var pin sdp.SessionDescription
	if pin.UnmarshalString(in) != nil {
		return
	}
	var pout sdp.SessionDescription
	if err := pout.UnmarshalString(out); err != nil {
		t.Fatalf("pion reads the input but not the output: %v\n%s", err, out)
	}
	ours, _ := Parse([]byte(out))
	if len(pout.MediaDescriptions) != len(ours) {
		t.Fatalf("pion sees %d m-lines, Parse %d", len(pout.MediaDescriptions), len(ours))
	}
	for i, md := range pout.MediaDescriptions {
		if md.MediaName.Port.Value != int(ours[i].Port) {
			t.Errorf("m-line %d: pion port %d, Parse %d", i, md.MediaName.Port.Value, ours[i].Port)
		}
		ci := md.ConnectionInformation
		if ci == nil {
			ci = pout.ConnectionInformation
		}
		if ci == nil || ci.Address == nil || ci.Address.Address != ours[i].Addr.String() {
			t.Errorf("m-line %d: pion c= %v, Parse %v", i, ci, ours[i].Addr)
		}
	}
}

// TestRewriteFamilyRoundTrip moves an IPv4 offer to an IPv6 relay and the result back to an IPv4 relay, as a
// call crossing a dual-stack relay twice would.
func TestRewriteFamilyRoundTrip(t *testing.T) {
	v6, err := Rewrite([]byte(softphone), map[int]Target{0: {r6, 40000, 40001}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	v4, err := Rewrite(v6, map[int]Target{0: {r4, 30000, 30001}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(v4)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffMedia(got, []Media{audio(0, "RTP/AVP", 30000, r4, ap(r4, 30001), false, "sendrecv")}) {
		t.Error(d)
	}
	if strings.Contains(string(v4), "IP6") || !strings.Contains(string(v4), "o=alice 2890844526 2890844528 IN IP4") {
		t.Errorf("after two rewrites:\n%s", v4)
	}
	// Apart from o= and the changed lines, the body is the original one.
	checkInvariants(t, string(v6), string(v4), map[int]Target{0: {r4, 30000, 30001}}, Options{})
}

func TestParseErrors(t *testing.T) {
	head := "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n"
	cases := []struct {
		name, body, want string
	}{
		{"empty", "", "empty body"},
		{"blank lines", "\r\n\r\n", "empty body"},
		{"garbage", "\x00\x01hello world", `line 1 "\x00\x01hello world" is not <letter>=<value>`},
		{"http instead of sdp", "HTTP/1.1 200 OK\r\n", "is not <letter>=<value>"},
		{"missing v=", "o=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n", `first line is "o=- 1 1 IN IP4 192.0.2.1", want v=0`},
		{"v=1", "v=1\r\no=- 1 1 IN IP4 192.0.2.1\r\n", "want v=0"},
		{"missing o=", "v=0\r\ns=-\r\nt=0 0\r\n", "no o= line"},
		{"two o=", "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\no=- 1 1 IN IP4 192.0.2.1\r\n", "more than one o= line"},
		{"short o=", "v=0\r\no=- 1 1\r\n", "want 6 fields, got 3"},
		{"bad version", "v=0\r\no=- 1 x1 IN IP4 192.0.2.1\r\n", `session version "x1" is not a number`},
		{"bad line in body", head + "m=audio 4000 RTP/AVP 0\r\nrtpmap:0 PCMU/8000\r\n", `line 6 "rtpmap:0 PCMU/8000" is not`},
		{"port too big", head + "c=IN IP4 192.0.2.1\r\nm=audio 70000 RTP/AVP 0\r\n", `m-line 0: sdp: m=audio 70000 RTP/AVP 0: bad port "70000"`},
		{"port not a number", head + "c=IN IP4 192.0.2.1\r\nm=audio abc RTP/AVP 0\r\n", `bad port "abc"`},
		{"negative port", head + "c=IN IP4 192.0.2.1\r\nm=audio -1 RTP/AVP 0\r\n", `bad port "-1"`},
		{"bad port count", head + "c=IN IP4 192.0.2.1\r\nm=audio 4000/x RTP/AVP 0\r\n", `bad port count "x"`},
		{"short m=", head + "c=IN IP4 192.0.2.1\r\nm=audio 4000\r\n", "want \"<media> <port> <proto> <fmt>...\""},
		{"bad c= address", head + "m=audio 4000 RTP/AVP 0\r\nc=IN IP4 999.1.1.1\r\n", `m-line 0: sdp: c=IN IP4 999.1.1.1: address "999.1.1.1" is not an IP address`},
		{"hostname in c=", head + "m=audio 4000 RTP/AVP 0\r\nc=IN IP4 pbx.example.com\r\n", `address "pbx.example.com" is not an IP address`},
		{"IPv6 address as IP4", head + "m=audio 4000 RTP/AVP 0\r\nc=IN IP4 2001:db8::1\r\n", `address "2001:db8::1" is not IPv4`},
		{"IPv4 address as IP6", head + "m=audio 4000 RTP/AVP 0\r\nc=IN IP6 192.0.2.1\r\n", `address "192.0.2.1" is not IPv6`},
		{"bad address type", head + "m=audio 4000 RTP/AVP 0\r\nc=IN IPX 192.0.2.1\r\n", `address type "IPX" is not IP4 or IP6`},
		{"bad network type", "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=ATM NSAP 47.0005\r\nt=0 0\r\n", `session level: sdp: c=ATM NSAP 47.0005: network type "ATM" is not IN`},
		{"c= without address", head + "m=audio 4000 RTP/AVP 0\r\nc=IN IP4\r\n", `want "IN IP4|IP6 <address>"`},
		{"no c= anywhere", head + "m=audio 4000 RTP/AVP 0\r\n", "m-line 0: sdp: no c= line at media or session level"},
		{"bad a=rtcp port", head + "c=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:99999\r\n", `a=rtcp:99999: bad port "99999"`},
		{"bad a=rtcp address", head + "c=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:4001 IN IP4 nowhere\r\n", `a=rtcp: sdp: c=IN IP4 nowhere: address "nowhere" is not an IP address`},
		{"a=rtcp with 2 fields", head + "c=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:4001 IN\r\n", `want "rtcp:<port> [IN IP4|IP6 <address>]"`},
		{"second m-line bad", head + "c=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\nm=video x RTP/AVP 96\r\n", "m-line 1:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ms, err := Parse([]byte(c.body))
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", ms)
			}
			if !errors.Is(err, ErrSDP) {
				t.Errorf("error %q does not wrap ErrSDP", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
			// Rewrite validates the same way and must not hand back a half-rewritten body.
			if out, rerr := Rewrite([]byte(c.body), nil, Options{}); rerr == nil || out != nil {
				t.Errorf("Rewrite: %q, %v", out, rerr)
			}
		})
	}
}

func TestRewriteTargetErrors(t *testing.T) {
	cases := []struct {
		name    string
		targets map[int]Target
		want    string
	}{
		{"m-line out of range", map[int]Target{1: {r4, 30000, 30001}}, "target for m-line 1, body has 1 m-lines"},
		{"negative m-line", map[int]Target{-1: {r4, 30000, 30001}}, "target for m-line -1"},
		{"no address", map[int]Target{0: {netip.Addr{}, 30000, 30001}}, "target for m-line 0 has no usable address"},
		{"zoned address", map[int]Target{0: {ip("fe80::1%eth0"), 30000, 30001}}, "has no usable address"},
		{"RTP port 0", map[int]Target{0: {r4, 0, 30001}}, "target for m-line 0 has RTP port 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := Rewrite([]byte(softphone), c.targets, Options{})
			if err == nil || out != nil {
				t.Fatalf("Rewrite: %q, %v", out, err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
			// A caller's mistake is not a malformed body: no 488 for it.
			if errors.Is(err, ErrSDP) {
				t.Errorf("error %q wraps ErrSDP", err)
			}
		})
	}
}

// TestParse covers what the rewrite corpus does not: address forms and precedence rules of Parse alone.
func TestParse(t *testing.T) {
	head := "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n"
	cases := []struct {
		name string
		body string
		want []Media
	}{
		{
			// An IPv4-mapped IPv6 address is an IPv4 peer; the relay must see it as one.
			"IPv4-mapped c=IN IP6",
			head + "c=IN IP6 ::ffff:192.0.2.9\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
			[]Media{audio(0, "RTP/AVP", 4000, ip("192.0.2.9"), ap(ip("192.0.2.9"), 4001), false, "sendrecv")},
		},
		{
			"multicast TTL suffix",
			head + "c=IN IP4 233.252.0.1/127\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
			[]Media{audio(0, "RTP/AVP", 4000, ip("233.252.0.1"), ap(ip("233.252.0.1"), 4001), false, "sendrecv")},
		},
		{
			"media c= over session c=, first media c= wins",
			head + "c=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 192.0.2.2\r\nc=IN IP4 192.0.2.3\r\n",
			[]Media{audio(0, "RTP/AVP", 4000, ip("192.0.2.2"), ap(ip("192.0.2.2"), 4001), false, "sendrecv")},
		},
		{
			"media direction over session direction",
			head + "c=IN IP4 192.0.2.1\r\nt=0 0\r\na=sendonly\r\nm=audio 4000 RTP/AVP 0\r\na=recvonly\r\nm=video 4002 RTP/AVP 96\r\n",
			[]Media{
				audio(0, "RTP/AVP", 4000, ip("192.0.2.1"), ap(ip("192.0.2.1"), 4001), false, "recvonly"),
				{Index: 1, Type: "video", Proto: "RTP/AVP", Port: 4002, Addr: ip("192.0.2.1"), RTCP: ap(ip("192.0.2.1"), 4003), Direction: "sendonly"},
			},
		},
		{
			"a=rtcp port only takes the media address",
			head + "c=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 192.0.2.2\r\na=rtcp:5000\r\n",
			[]Media{audio(0, "RTP/AVP", 4000, ip("192.0.2.2"), ap(ip("192.0.2.2"), 5000), false, "sendrecv")},
		},
		{
			// RTP on 65535 leaves no RTP+1; RTCP is reported as absent rather than as port 0 or a wrapped port.
			"port 65535",
			head + "c=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 65535 RTP/AVP 0\r\n",
			[]Media{audio(0, "RTP/AVP", 65535, ip("192.0.2.1"), netip.AddrPort{}, false, "sendrecv")},
		},
		{
			// A rejected line needs no address at all.
			"rejected without c=",
			head + "t=0 0\r\nm=audio 0 RTP/AVP 0\r\n",
			[]Media{audio(0, "RTP/AVP", 0, netip.Addr{}, netip.AddrPort{}, false, "sendrecv")},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Parse([]byte(c.body))
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range diffMedia(got, c.want) {
				t.Error(d)
			}
		})
	}
}
