package webrtcsdp

import (
	"encoding/base64"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pion/sdp/v3"

	"sipxdp/sipd/sdprewrite"
)

func load(t testing.TB, name string) *Body {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse(raw)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return b
}

// mediaLines returns m-line i's lines.
func mediaLines(b *Body, i int) []string {
	var out []string
	for _, l := range b.Media[i].Lines {
		out = append(out, l.String())
	}
	return out
}

func sessionLines(b *Body) []string {
	var out []string
	for _, l := range b.Session.Lines {
		out = append(out, l.String())
	}
	return out
}

// formats returns the m-line's payload types and its rtpmap and fmtp lines: what every transformation keeps.
func formats(b *Body, i int) []string {
	f := b.Media[i].mline()
	out := []string{strings.Join(f[3:], " ")}
	for _, l := range mediaLines(b, i) {
		if strings.HasPrefix(l, "a=rtpmap:") || strings.HasPrefix(l, "a=fmtp:") {
			out = append(out, l)
		}
	}
	return out
}

var (
	relayICE = ICE{
		Ufrag: "RlyU1234", Pwd: "relaypasswordrelaypassword",
		Addrs: []netip.Addr{netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("2001:db8::1")},
		RTP:   30000,
	}
	relayFP = FingerprintOf([]byte("not really a certificate, but sha-256 does not mind"))
)

func hasPrefix(ls []string, p string) bool {
	return slices.ContainsFunc(ls, func(l string) bool { return strings.HasPrefix(l, p) })
}

func TestTransforms(t *testing.T) {
	sdes, err := NewCrypto(1)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		file    string
		do      func(*Body) error
		media   int      // m-line whose lines are checked
		present []string // prefixes that must be there (media-level, "s:" for session-level)
		absent  []string // prefixes that must not
	}{
		{
			name: "chrome to phone: RTP/AVP, no ICE, no DTLS, demux",
			file: "chrome_audio_video.sdp",
			do: func(b *Body) error {
				return Apply(b, 0, Profile{Proto: ProtoAVP, RTCPMux: RTCPMuxDemux, RTCPPort: 30001})
			},
			present: []string{"m=audio 54321 RTP/AVP 111 63 9 0 8 13 110 126", "a=rtcp:30001", "a=mid:0", "a=rtpmap:111 opus/48000/2"},
			absent: []string{"a=ice-ufrag", "a=ice-pwd", "a=candidate", "a=ice-options", "a=fingerprint", "a=setup",
				"a=rtcp-mux", "a=rtcp:9", "a=crypto"},
		},
		{
			name: "chrome to phone keeps the video m-line's ICE and DTLS until it is handled",
			file: "chrome_audio_video.sdp",
			do: func(b *Body) error {
				return Apply(b, 0, Profile{Proto: ProtoAVP})
			},
			media:   1,
			present: []string{"a=ice-ufrag:Xk2f", "a=fingerprint:sha-256 7B:8B", "a=setup:actpass"},
		},
		{
			name: "firefox session-level fingerprint and ice-options are pushed down before removal",
			file: "firefox_audio_video.sdp",
			do: func(b *Body) error {
				return Apply(b, 0, Profile{Proto: ProtoAVP, RTCPMux: RTCPMuxDemux, RTCPPort: 30001})
			},
			media:   1,
			present: []string{"a=fingerprint:sha-256 3C:4F", "a=ice-options:trickle", "a=ice-ufrag:9e1c3a7b"},
			absent:  []string{"s:a=fingerprint", "s:a=ice-options"},
		},
		{
			name: "firefox audio toward the phone",
			file: "firefox_audio_video.sdp",
			do: func(b *Body) error {
				return Apply(b, 0, Profile{Proto: ProtoAVP, RTCPMux: RTCPMuxDemux, RTCPPort: 30001})
			},
			present: []string{"m=audio 60844 RTP/AVP 109 9 0 8 101", "a=rtcp:30001", "a=fmtp:109 maxplaybackrate"},
			absent:  []string{"a=ice-", "a=candidate", "a=end-of-candidates", "a=fingerprint", "a=setup", "a=rtcp-mux"},
		},
		{
			name: "phone to browser: UDP/TLS/RTP/SAVPF with ICE-lite, DTLS, rtcp-mux",
			file: "phone_avp.sdp",
			do: func(b *Body) error {
				EnsureMid(b)
				SetBundle(b, []string{"0"})
				return Apply(b, 0, Profile{Proto: ProtoDTLS, ICE: &relayICE,
					DTLS: &DTLS{Fingerprint: relayFP, Setup: SetupActpass}, RTCPMux: RTCPMuxOffer})
			},
			present: []string{"m=audio 16384 UDP/TLS/RTP/SAVPF 0 8 9 18 101", "a=ice-ufrag:RlyU1234",
				"a=ice-pwd:relaypasswordrelaypassword", "a=candidate:", "a=end-of-candidates",
				"a=fingerprint:sha-256 " + relayFP.Value, "a=setup:actpass", "a=rtcp-mux", "a=mid:0",
				"s:a=ice-lite", "s:a=group:BUNDLE 0"},
			absent: []string{"a=crypto"},
		},
		{
			name: "phone SDES to browser: crypto removed",
			file: "phone_savp_sdes.sdp",
			do: func(b *Body) error {
				return Apply(b, 0, Profile{Proto: ProtoDTLS, ICE: &relayICE,
					DTLS: &DTLS{Fingerprint: relayFP, Setup: SetupPassive}, RTCPMux: RTCPMuxOffer})
			},
			present: []string{"m=audio 10042 UDP/TLS/RTP/SAVPF 0 8 101", "a=setup:passive"},
			absent:  []string{"a=crypto"},
		},
		{
			name: "browser to SDES phone: RTP/SAVP with a fresh key",
			file: "chrome_audio_video.sdp",
			do: func(b *Body) error {
				return Apply(b, 0, Profile{Proto: ProtoSAVP, Crypto: []Crypto{sdes}, RTCPMux: RTCPMuxDemux, RTCPPort: 30001})
			},
			present: []string{"m=audio 54321 RTP/SAVP 111", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.StdEncoding.EncodeToString(sdes.Key)},
			absent:  []string{"a=fingerprint", "a=ice-ufrag"},
		},
		{
			name: "ice candidates: one host per address, components 1 and 2 without mux",
			file: "phone_avp.sdp",
			do: func(b *Body) error {
				ice := relayICE
				ice.RTCP = 30001
				return SetICE(b, 0, ice)
			},
			present: []string{"a=candidate:" + Candidate(relayICE.Addrs[0], 30000, 1, 0),
				"a=candidate:" + Candidate(relayICE.Addrs[0], 30001, 2, 0),
				"a=candidate:" + Candidate(relayICE.Addrs[1], 30000, 1, 1),
				"a=candidate:" + Candidate(relayICE.Addrs[1], 30001, 2, 1)},
		},
		{
			name:    "reject video in a BUNDLE group",
			file:    "chrome_audio_video.sdp",
			do:      func(b *Body) error { return Reject(b, 1) },
			media:   1,
			present: []string{"m=video 0 UDP/TLS/RTP/SAVPF 96 97 102 103", "a=mid:1", "a=rtpmap:96 VP8/90000", "a=fmtp:97 apt=96", "s:a=group:BUNDLE 0"},
			absent: []string{"a=ice-", "a=candidate", "a=fingerprint", "a=ssrc", "a=extmap", "a=rtcp-fb", "a=msid", "a=sendrecv",
				"a=rtcp-mux", "s:a=group:BUNDLE 0 1"},
		},
		{
			name:    "reject the only bundled m-line drops the group",
			file:    "chrome_audio_video.sdp",
			do:      func(b *Body) error { _ = Reject(b, 1); return Reject(b, 0) },
			present: []string{"m=audio 0 UDP/TLS/RTP/SAVPF"},
			absent:  []string{"s:a=group:BUNDLE"},
		},
		{
			name:    "accept rtcp-mux that was offered",
			file:    "phone_avp.sdp",
			do:      func(b *Body) error { return AcceptRTCPMux(b, 0, true) },
			present: []string{"a=rtcp-mux"},
		},
		{
			name:   "refuse rtcp-mux that was not offered",
			file:   "chrome_audio_video.sdp",
			do:     func(b *Body) error { return AcceptRTCPMux(b, 0, false) },
			absent: []string{"a=rtcp-mux"},
		},
		{
			name:    "demux with an address",
			file:    "chrome_audio_video.sdp",
			do:      func(b *Body) error { return DemuxRTCP(b, 0, 30001, netip.MustParseAddr("2001:db8::1")) },
			present: []string{"a=rtcp:30001 IN IP6 2001:db8::1"},
			absent:  []string{"a=rtcp-mux", "a=rtcp:9"},
		},
		{
			name:    "generate mid skips mids in use",
			file:    "phone_avp.sdp",
			do:      func(b *Body) error { EnsureMid(b); return nil },
			present: []string{"a=mid:0"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := load(t, tt.file)
			before := formats(b, tt.media)
			if err := tt.do(b); err != nil {
				t.Fatal(err)
			}
			// Reparse what we wrote: the output must be SDP that pion accepts and that we read back the same.
			again, err := Parse(b.Bytes())
			if err != nil {
				t.Fatalf("output does not parse: %v", err)
			}
			var sd sdp.SessionDescription
			if err := sd.Unmarshal(b.Bytes()); err != nil {
				t.Fatalf("pion rejects the output: %v\n%s", err, b.Bytes())
			}
			med, sess := mediaLines(again, tt.media), sessionLines(again)
			pick := func(p string) ([]string, string) {
				if s, ok := strings.CutPrefix(p, "s:"); ok {
					return sess, s
				}
				return med, p
			}
			for _, p := range tt.present {
				ls, pp := pick(p)
				if !hasPrefix(ls, pp) {
					t.Errorf("missing %q in\n%s", p, strings.Join(ls, "\n"))
				}
			}
			for _, p := range tt.absent {
				ls, pp := pick(p)
				if hasPrefix(ls, pp) {
					t.Errorf("unexpected %q in\n%s", p, strings.Join(ls, "\n"))
				}
			}
			if after := formats(again, tt.media); !slices.Equal(before, after) {
				t.Errorf("formats changed:\n%q\n%q", before, after)
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	tests := []struct {
		file string
		want []MediaInfo
		bun  [][]string
	}{
		{"chrome_audio_video.sdp", []MediaInfo{
			{Type: "audio", Port: 54321, Proto: ProtoDTLS, Formats: []string{"111", "63", "9", "0", "8", "13", "110", "126"}, Mid: "0",
				Ufrag: "Xk2f", Pwd: "8ajdIo3pQ7dNVrHx1wNbF0Nq", Candidates: 3, Setup: "actpass", RTCPMux: true,
				Fingerprints: []Fingerprint{{"sha-256", "7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08"}}},
			{Index: 1, Type: "video", Port: 54321, Proto: ProtoDTLS, Formats: []string{"96", "97", "102", "103"}, Mid: "1",
				Ufrag: "Xk2f", Pwd: "8ajdIo3pQ7dNVrHx1wNbF0Nq", Candidates: 1, Setup: "actpass", RTCPMux: true,
				Fingerprints: []Fingerprint{{"sha-256", "7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08"}}},
		}, [][]string{{"0", "1"}}},
		{"firefox_audio_video.sdp", []MediaInfo{
			{Type: "audio", Port: 60844, Proto: ProtoDTLS, Formats: []string{"109", "9", "0", "8", "101"}, Mid: "0",
				Ufrag: "9e1c3a7b", Pwd: "4f2b9a6c1d8e7f3a5b0c9d2e1f4a7b6c", Candidates: 2, Setup: "actpass", RTCPMux: true,
				Fingerprints: []Fingerprint{{"sha-256", "3C:4F:1D:AB:08:43:5A:92:8E:F0:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:12:34:56:78:9A:BC"}}},
			{Index: 1, Type: "video", Port: 60844, Proto: ProtoDTLS, Formats: []string{"120", "124", "121", "125"}, Mid: "1",
				Ufrag: "9e1c3a7b", Pwd: "4f2b9a6c1d8e7f3a5b0c9d2e1f4a7b6c", Setup: "actpass", RTCPMux: true,
				Fingerprints: []Fingerprint{{"sha-256", "3C:4F:1D:AB:08:43:5A:92:8E:F0:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:12:34:56:78:9A:BC"}}},
		}, [][]string{{"0", "1"}}},
		{"phone_avp.sdp", []MediaInfo{
			{Type: "audio", Port: 16384, Proto: ProtoAVP, Formats: []string{"0", "8", "9", "18", "101"}},
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			o, err := Describe(load(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(o.Bundles, tt.bun, slices.Equal) {
				t.Errorf("bundles %q, want %q", o.Bundles, tt.bun)
			}
			if len(o.Media) != len(tt.want) {
				t.Fatalf("%d m-lines, want %d", len(o.Media), len(tt.want))
			}
			for i, w := range tt.want {
				g := o.Media[i]
				if g.Index != w.Index || g.Type != w.Type || g.Port != w.Port || g.Proto != w.Proto || g.Mid != w.Mid ||
					g.Ufrag != w.Ufrag || g.Pwd != w.Pwd || g.Candidates != w.Candidates || g.Setup != w.Setup ||
					g.RTCPMux != w.RTCPMux || !slices.Equal(g.Formats, w.Formats) || !slices.Equal(g.Fingerprints, w.Fingerprints) {
					t.Errorf("m-line %d:\n got %+v\nwant %+v", i, g, w)
				}
				if g.WebRTC() != (w.Proto == ProtoDTLS) {
					t.Errorf("m-line %d: WebRTC() = %v", i, g.WebRTC())
				}
			}
		})
	}
}

func TestDescribeSDES(t *testing.T) {
	o, err := Describe(load(t, "phone_savp_sdes.sdp"))
	if err != nil {
		t.Fatal(err)
	}
	c := o.Media[0].Crypto
	if len(c) != 2 || c[0].Tag != 1 || c[0].Suite != SuiteAES128SHA1_80 || len(c[0].Key) != 30 ||
		c[0].KeyParams != "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:32" ||
		c[1].Tag != 2 || c[1].Suite != "AES_CM_128_HMAC_SHA1_32" {
		t.Fatalf("crypto %+v", c)
	}
}

func TestParseCrypto(t *testing.T) {
	good := "inline:" + base64.StdEncoding.EncodeToString(make([]byte, 30))
	tests := []struct {
		in string
		ok bool
	}{
		{"1 AES_CM_128_HMAC_SHA1_80 " + good, true},
		{"1 AES_CM_128_HMAC_SHA1_80 " + good + "|2^31|1:4 UNENCRYPTED_SRTCP", true},
		{"1 AES_CM_128_HMAC_SHA1_80 " + strings.TrimRight(good, "="), true},
		{"7 FUTURE_SUITE inline:AAAA", true},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:AAAA", false}, // 3 bytes, wants 30
		{"1 AES_CM_128_HMAC_SHA1_80 uri:http://x", false},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:!!!!", false},
		{"x AES_CM_128_HMAC_SHA1_80 " + good, false},
		{"1 AES_CM_128_HMAC_SHA1_80", false},
	}
	for _, tt := range tests {
		c, err := ParseCrypto(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ParseCrypto(%q): err %v, want ok=%v", tt.in, err, tt.ok)
			continue
		}
		if err == nil && c.String() != tt.in {
			t.Errorf("String() = %q, want %q", c.String(), tt.in)
		}
	}
	a, err := NewCrypto(3)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewCrypto(3)
	back, err := ParseCrypto(a.String())
	if err != nil || back.Tag != 3 || !slices.Equal(back.Key, a.Key) || slices.Equal(a.Key, b.Key) {
		t.Fatalf("NewCrypto round trip: %+v %v", back, err)
	}
}

func TestAnswerSetup(t *testing.T) {
	tests := []struct {
		offer, prefer, want string
	}{
		{"actpass", "", "active"},
		{"actpass", "active", "active"},
		{"actpass", "passive", "passive"},
		{"active", "", "passive"},
		{"active", "active", "passive"},
		{"passive", "passive", "active"},
		{"", "", "passive"},
		{"holdconn", "", ""},
		{"actpass", "actpass", ""},
	}
	for _, tt := range tests {
		got, err := AnswerSetup(tt.offer, tt.prefer)
		if (err != nil) != (tt.want == "") || got != tt.want {
			t.Errorf("AnswerSetup(%q, %q) = %q, %v; want %q", tt.offer, tt.prefer, got, err, tt.want)
		}
	}
}

func TestFingerprintOf(t *testing.T) {
	fp := FingerprintOf([]byte("abc"))
	// sha-256("abc") from FIPS 180-2's example.
	want := "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
	if fp.Hash != "sha-256" || fp.Value != want {
		t.Fatalf("got %v", fp)
	}
}

// TestFingerprintWith: the hashes rtpengine's DTLS-fingerprint offers,
// checked against FIPS 180-2's "abc" digests (first and last bytes),
// in the spellings a script sends them.
func TestFingerprintWith(t *testing.T) {
	for _, tt := range []struct{ name, hash, first, last string }{
		{"SHA-1", "sha-1", "A9:99:3E", "9C:D0:D8:9D"},
		{"sha1", "sha-1", "A9:99:3E", "9C:D0:D8:9D"},
		{"SHA-224", "sha-224", "23:09:7D", "E3:6C:9D:A7"},
		{"SHA_256", "sha-256", "BA:78:16", "F2:00:15:AD"},
		{"sha-384", "sha-384", "CB:00:75", "58:BA:EC:A1:34:C8:25:A7"},
		{"SHA-512", "sha-512", "DD:AF:35", "A5:4C:A4:9F"},
	} {
		fp, err := FingerprintWith([]byte("abc"), tt.name)
		if err != nil || fp.Hash != tt.hash || !strings.HasPrefix(fp.Value, tt.first) || !strings.HasSuffix(fp.Value, tt.last) {
			t.Errorf("FingerprintWith(%q) = %v, %v; want %s %s...%s", tt.name, fp, err, tt.hash, tt.first, tt.last)
		}
	}
	if _, err := FingerprintWith([]byte("abc"), "md5"); err == nil {
		t.Error("FingerprintWith(md5): no error")
	}
}

// TestRoundTrip: an offer made into a browser's and back to RTP/AVP keeps its formats, and the browser-only
// attributes of the audio m-line are all gone again (a browser's own offer starts with them).
func TestRoundTrip(t *testing.T) {
	for _, file := range []string{"phone_avp.sdp", "phone_savp_sdes.sdp", "chrome_audio_video.sdp", "firefox_audio_video.sdp"} {
		t.Run(file, func(t *testing.T) {
			orig := load(t, file)
			b := load(t, file)
			EnsureMid(b)
			if err := Apply(b, 0, Profile{Proto: ProtoDTLS, ICE: &relayICE, DTLS: &DTLS{relayFP, SetupActpass}, RTCPMux: RTCPMuxOffer}); err != nil {
				t.Fatal(err)
			}
			for _, proto := range []string{ProtoSAVPF, ProtoAVP} {
				if err := Apply(b, 0, Profile{Proto: proto, RTCPMux: RTCPMuxDemux, RTCPPort: 16385}); err != nil {
					t.Fatal(err)
				}
			}
			if !slices.Equal(formats(orig, 0), formats(b, 0)) {
				t.Fatalf("formats changed:\n%q\n%q", formats(orig, 0), formats(b, 0))
			}
			all := mediaLines(b, 0)
			for _, p := range []string{"a=ice-", "a=candidate", "a=end-of-candidates", "a=fingerprint", "a=setup", "a=rtcp-mux", "a=crypto"} {
				if hasPrefix(all, p) {
					t.Errorf("%s left after the round trip", p)
				}
			}
			if !hasPrefix(all, "m=audio ") || b.Media[0].mline()[2] != ProtoAVP {
				t.Errorf("not back to RTP/AVP:\n%s", strings.Join(all, "\n"))
			}
		})
	}
}

func TestErrors(t *testing.T) {
	b := load(t, "phone_avp.sdp")
	for name, err := range map[string]error{
		"proto":       SetProto(b, 0, "TCP/MSRP"),
		"index":       SetProto(b, 5, ProtoAVP),
		"short creds": SetICE(b, 0, ICE{Ufrag: "a", Pwd: "b", Addrs: relayICE.Addrs, RTP: 1}),
		"no addrs":    SetICE(b, 0, ICE{Ufrag: relayICE.Ufrag, Pwd: relayICE.Pwd, RTP: 1}),
		"setup":       SetDTLS(b, 0, relayFP, "holdconn"),
		"no fp":       SetDTLS(b, 0, Fingerprint{}, SetupActive),
		"demux port":  DemuxRTCP(b, 0, 0, netip.Addr{}),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	for _, in := range []string{"", "x", "o=- 1 1 IN IP4 1.2.3.4\r\n", "v=0\r\nm=audio\r\n", "v=0\r\nM=bad\r\n"} {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("Parse(%q) accepted", in)
		}
	}
}

func TestErrSDPIsSdprewrites(t *testing.T) {
	_, err := Parse([]byte("x"))
	if !errors.Is(err, sdprewrite.ErrSDP) {
		t.Fatalf("%v does not wrap sdprewrite.ErrSDP", err)
	}
}

func TestAudioOnly(t *testing.T) {
	tests := []struct {
		file   string
		keep   int
		bundle string // session-level BUNDLE line, "" for none
	}{
		{"chrome_audio_video.sdp", 0, "a=group:BUNDLE 0"},
		{"firefox_audio_video.sdp", 0, "a=group:BUNDLE 0"},
		{"phone_avp.sdp", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b := load(t, tt.file)
			n := len(b.Media)
			keep, err := AudioOnly(b)
			if err != nil || keep != tt.keep {
				t.Fatalf("AudioOnly = %d, %v; want %d", keep, err, tt.keep)
			}
			o, err := Describe(b)
			if err != nil {
				t.Fatal(err)
			}
			if len(o.Media) != n {
				t.Fatalf("m-lines %d, want %d", len(o.Media), n)
			}
			for i, m := range o.Media {
				if (m.Port != 0) != (i == keep) {
					t.Errorf("m-line %d port %d", i, m.Port)
				}
				if m.Mid == "" {
					t.Errorf("m-line %d has no mid", i)
				}
			}
			sess := sessionLines(b)
			got := ""
			for _, l := range sess {
				if strings.HasPrefix(l, "a=group:BUNDLE") {
					got = l
				}
			}
			if got != tt.bundle {
				t.Errorf("bundle %q, want %q", got, tt.bundle)
			}
		})
	}
	b := load(t, "chrome_audio_video.sdp")
	_ = Reject(b, 0)
	if _, err := AudioOnly(b); err == nil {
		t.Error("AudioOnly kept a rejected audio m-line")
	}
}
