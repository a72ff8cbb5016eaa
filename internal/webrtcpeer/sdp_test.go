package webrtcpeer

import (
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"sipxdp/relay/srtpleg"
	"sipxdp/sipd/webrtcsdp"
)

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func describe(t *testing.T, body []byte) webrtcsdp.Offer {
	t.Helper()
	b, err := webrtcsdp.Parse(body)
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, body)
	}
	o, err := webrtcsdp.Describe(b)
	if err != nil {
		t.Fatalf("Describe: %v\n%s", err, body)
	}
	return o
}

func TestOffer(t *testing.T) {
	for _, wrong := range []bool{false, true} {
		p := newPeer(t, Config{WrongFingerprint: wrong})
		o := describe(t, p.Offer())
		if len(o.Media) != 1 {
			t.Fatalf("%d m-lines", len(o.Media))
		}
		m := o.Media[0]
		if !m.WebRTC() || m.Type != "audio" || m.Port != p.LocalAddr().Port() {
			t.Fatalf("m-line %+v is not a WebRTC audio line on %s", m, p.LocalAddr())
		}
		if !slices.Equal(m.Formats, []string{"111", "0", "8", "101"}) {
			t.Fatalf("formats %v", m.Formats)
		}
		if m.Ufrag == "" || len(m.Pwd) < 22 || m.Candidates != 1 || m.Setup != "actpass" || m.Mid != "0" || !m.RTCPMux || m.ICELite {
			t.Fatalf("m-line %+v", m)
		}
		if len(o.Bundles) != 1 || !slices.Equal(o.Bundles[0], []string{"0"}) {
			t.Fatalf("bundles %v", o.Bundles)
		}
		real := webrtcsdp.FingerprintOf(p.cert.DER())
		if len(m.Fingerprints) != 1 || (m.Fingerprints[0] == real) == wrong {
			t.Fatalf("WrongFingerprint %v: announced %v, certificate %v", wrong, m.Fingerprints, real)
		}
		rd, err := parseRemote(p.Offer(), true)
		if err != nil || rd.addr != p.LocalAddr() {
			t.Fatalf("our own candidate reads back as %s, %v; want %s", rd.addr, err, p.LocalAddr())
		}
	}
}

func TestAnswer(t *testing.T) {
	chrome, err := os.ReadFile("../../sipd/webrtcsdp/testdata/chrome_audio_video.sdp")
	if err != nil {
		t.Fatal(err)
	}
	firefox, err := os.ReadFile("../../sipd/webrtcsdp/testdata/firefox_audio_video.sdp")
	if err != nil {
		t.Fatal(err)
	}
	audio := func(formats, setup string, extra ...string) []byte {
		s := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 UDP/TLS/RTP/SAVPF " + formats + "\r\n" +
			"c=IN IP4 127.0.0.1\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n" +
			"a=fingerprint:sha-256 AA:BB\r\na=rtcp-mux\r\n"
		if setup != "" {
			s += "a=setup:" + setup + "\r\n"
		}
		for _, e := range extra {
			s += e + "\r\n"
		}
		return []byte(s)
	}
	cases := []struct {
		name    string
		offer   []byte
		formats []string // of the accepted line
		setup   string
		ports   []bool // which m-lines have a port
		err     string
	}{
		{name: "chrome", offer: chrome, formats: []string{"0", "126"}, setup: "active", ports: []bool{true, false}},
		{name: "firefox", offer: firefox, formats: []string{"0", "101"}, setup: "active", ports: []bool{true, false}},
		{name: "passive offer", offer: audio("8 0", "passive"), formats: []string{"0"}, setup: "active", ports: []bool{true}},
		{name: "active offer", offer: audio("0", "active"), formats: []string{"0"}, setup: "passive", ports: []bool{true}},
		{name: "no setup is active", offer: audio("0", ""), formats: []string{"0"}, setup: "passive", ports: []bool{true}},
		{name: "no PCMU: first common", offer: audio("9 96 8 97", "actpass", "a=rtpmap:96 opus/48000/2", "a=rtpmap:97 telephone-event/8000"),
			formats: []string{"96", "97"}, setup: "active", ports: []bool{true}},
		{name: "no common format", offer: audio("9 13", "actpass"), err: "no common audio format"},
		{name: "holdconn", offer: audio("0", "holdconn"), err: "holdconn"},
		{name: "plain RTP", offer: []byte("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"), err: "not UDP/TLS/RTP/SAVPF"},
		{name: "not sdp", offer: []byte("hello"), err: "offer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newPeer(t, Config{})
			ans, err := p.Answer(tc.offer)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Answer: %v, want an error saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			o := describe(t, ans)
			if len(o.Media) != len(tc.ports) {
				t.Fatalf("%d m-lines, want %d", len(o.Media), len(tc.ports))
			}
			for i, m := range o.Media {
				if (m.Port != 0) != tc.ports[i] {
					t.Fatalf("m-line %d port %d", i, m.Port)
				}
			}
			m := o.Media[0]
			if !slices.Equal(m.Formats, tc.formats) || m.Setup != tc.setup || !m.WebRTC() || !m.RTCPMux || m.Candidates != 1 {
				t.Fatalf("answer's m-line %+v, want formats %v setup %s", m, tc.formats, tc.setup)
			}
			offered := describe(t, tc.offer).Media[0].Mid
			if m.Mid != offered {
				t.Fatalf("mid %q, offer's %q", m.Mid, offered)
			}
			if offered != "" && (len(o.Bundles) != 1 || !slices.Equal(o.Bundles[0], []string{offered})) {
				t.Fatalf("bundles %v, want only the audio mid %q", o.Bundles, offered)
			}
		})
	}
}

func TestParseRemote(t *testing.T) {
	head := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
	creds := "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-1 11:22\r\na=fingerprint:sha-256 AA:BB\r\na=setup:active\r\n"
	cases := []struct {
		name string
		body string
		v4   bool
		want string // address, or the error's text after "!"
	}{
		{"highest udp candidate of our family", head + "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\n" + creds +
			"a=candidate:1 1 udp 100 127.0.0.2 5000 typ host\r\n" +
			"a=candidate:2 1 udp 300 ::1 5001 typ host\r\n" +
			"a=candidate:3 1 tcp 400 127.0.0.3 5002 typ host tcptype passive\r\n" +
			"a=candidate:4 2 udp 500 127.0.0.4 5003 typ host\r\n" +
			"a=candidate:5 1 udp 600 abc.local 5004 typ host\r\n" +
			"a=candidate:6 1 UDP 200 127.0.0.5 5005 typ srflx raddr 0.0.0.0 rport 0\r\n", true, "127.0.0.5:5005"},
		{"ipv6 socket", head + "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\n" + creds +
			"a=candidate:1 1 udp 100 127.0.0.2 5000 typ host\r\na=candidate:2 1 udp 50 ::1 5001 typ host\r\n", false, "[::1]:5001"},
		{"c= and m= without candidates", head + "c=IN IP4 127.0.0.9/127\r\nm=audio 7000 UDP/TLS/RTP/SAVPF 0\r\n" + creds, true, "127.0.0.9:7000"},
		{"wildcard c=", head + "m=audio 7000 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\n" + creds, true, "!no usable UDP candidate"},
		{"family mismatch", head + "m=audio 7000 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP6 ::1\r\n" + creds, true, "!no usable UDP candidate"},
		{"no fingerprint", head + "m=audio 7000 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 127.0.0.1\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n", true, "!no a=fingerprint"},
		{"no ice", head + "m=audio 7000 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 127.0.0.1\r\na=fingerprint:sha-256 AA\r\n", true, "!no a=ice-ufrag"},
		{"rejected audio", head + "m=audio 0 UDP/TLS/RTP/SAVPF 0\r\n" + creds, true, "!no audio m-line"},
		{"plain rtp", head + "m=audio 7000 RTP/AVP 0\r\nc=IN IP4 127.0.0.1\r\n", true, "!not UDP/TLS/RTP/SAVPF"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rd, err := parseRemote([]byte(tc.body), tc.v4)
			if want, ok := strings.CutPrefix(tc.want, "!"); ok {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("err %v, want %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rd.addr.String() != tc.want {
				t.Fatalf("addr %s, want %s", rd.addr, tc.want)
			}
			if rd.ufrag != "abcd" || rd.setup != "active" || rd.fingerprint != (webrtcsdp.Fingerprint{Hash: "sha-256", Value: "AA:BB"}) {
				t.Fatalf("remote %+v", rd)
			}
		})
	}
}

func TestDTLSRole(t *testing.T) {
	cases := []struct {
		ours, theirs string
		want         srtpleg.Role
		err          bool
	}{
		{"actpass", "active", srtpleg.Server, false},
		{"actpass", "passive", srtpleg.Client, false},
		{"actpass", "actpass", 0, true},
		{"actpass", "", 0, true},
		{"active", "actpass", srtpleg.Client, false},
		{"passive", "actpass", srtpleg.Server, false},
		{"", "active", 0, true},
	}
	for _, tc := range cases {
		got, err := dtlsRole(tc.ours, tc.theirs)
		if (err != nil) != tc.err || (!tc.err && got != tc.want) {
			t.Errorf("dtlsRole(%q, %q) = %s, %v; want %s, error %v", tc.ours, tc.theirs, got, err, tc.want, tc.err)
		}
	}
}
