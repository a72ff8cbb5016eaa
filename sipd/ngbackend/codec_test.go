package ngbackend

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"sipxdp/ng"
	"sipxdp/sipd/sdprewrite"
)

// codecOffer lists PCMU, PCMA, G.722 and G.729 (the last two static, with
// no a=rtpmap), stereo Opus with fmtp and rtcp-fb, and telephone-event.
const codecOffer = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n" +
	"m=audio 10000 RTP/AVP 0 8 9 18 96 101\r\n" +
	"a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n" +
	"a=rtpmap:96 opus/48000/2\r\na=fmtp:96 useinbandfec=1\r\na=rtcp-fb:96 nack\r\n" +
	"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n" +
	"a=sendrecv\r\n"

// codecAnswer accepts PCMU, PCMA and telephone-event.
const codecAnswer = "v=0\r\no=- 2 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\n" +
	"m=audio 20000 RTP/AVP 0 8 101\r\n" +
	"a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"

// TestCodecManipulations drives offer and answer through ng.Server with
// each form of rtpengine's codec manipulations (the codec dictionary,
// Kamailio's flags codec-<op>-<name>, rtpp-flags' codec-<op>=<name>) and
// checks each reply field by field: result, the m= line (relay port and
// format list) and the per-format attributes. Each row names the section
// of rtpengine's ng_control_protocol.md, or the function of its
// codec.c, its semantics come from.
func TestCodecManipulations(t *testing.T) {
	type side struct {
		extra map[string]any // the request's codec keys
		m     string         // the m= line of the reply
		gone  []string       // attribute lines that must be gone
	}
	offerCodecs := func(m map[string]any) map[string]any { return map[string]any{"codec": m} }
	flags := func(f ...any) map[string]any { return map[string]any{"flags": f} }
	const all = "m=audio 40002 RTP/AVP 0 8 9 18 96 101"
	opus := []string{"a=rtpmap:96", "a=fmtp:96", "a=rtcp-fb:96"}
	for _, tc := range []struct {
		name, source string
		offer        side
		answer       *side // answered when given
	}{
		{"no codec keys: the list passes as it is", "offer",
			side{nil, all, nil}, nil},
		{"strip by name, Kamailio flag", "codec manipulations: strip",
			side{flags("codec-strip-PCMU"), "m=audio 40002 RTP/AVP 8 9 18 96 101", []string{"a=rtpmap:0 "}}, nil},
		{"strip by name, dictionary, case-insensitive", "codec manipulations: strip; codec_names is a str_case_hash table",
			side{offerCodecs(map[string]any{"strip": []any{"pcma"}}), "m=audio 40002 RTP/AVP 0 9 18 96 101", []string{"a=rtpmap:8 "}}, nil},
		{"strip static codecs without rtpmap by their RFC 3551 names", "codec manipulations: strip (RFC-defined codecs)",
			side{flags("codec-strip-G729", "codec-strip-g722"), "m=audio 40002 RTP/AVP 0 8 96 101", nil}, nil},
		{"strip name/clock/channels drops fmtp and rtcp-fb too", "codec manipulations: strip (format parameters)",
			side{offerCodecs(map[string]any{"strip": []any{"opus/48000/2"}}), "m=audio 40002 RTP/AVP 0 8 9 18 101", opus}, nil},
		{"strip opus/48000 is mono Opus only: stereo stays", "codec manipulations: strip (format parameters)",
			side{offerCodecs(map[string]any{"strip": []any{"opus/48000"}}), all, nil}, nil},
		{"strip name/clock/1 for a codec whose rtpmap has no channels", "codec_store_strip: encoding_with_full_params",
			side{flags("codec-strip-PCMU/8000/1"), "m=audio 40002 RTP/AVP 8 9 18 96 101", nil}, nil},
		{"strip, rtpp-flags key=value form", "rtpp-flags; codec manipulations: strip",
			side{flags("codec-strip=PCMA"), "m=audio 40002 RTP/AVP 0 9 18 96 101", nil}, nil},
		{"strip all except", "codec manipulations: except, strip (all)",
			side{offerCodecs(map[string]any{"strip": []any{"all"}, "except": []any{"PCMA", "telephone-event"}}),
				"m=audio 40002 RTP/AVP 8 101", append([]string{"a=rtpmap:0 "}, opus...)}, nil},
		{"strip full except, Kamailio flags", "codec manipulations: except, strip (full)",
			side{flags("codec-strip-full", "codec-except-opus"), "m=audio 40002 RTP/AVP 96", []string{"a=rtpmap:101", "a=fmtp:101"}}, nil},
		{"except alone changes nothing", "codec manipulations: except",
			side{flags("codec-except-PCMA"), all, nil}, nil},
		{"strip all with nothing left: the original list stays", "codec manipulations: strip (all); codec_store_check_empty",
			side{flags("codec-strip-all"), all, nil}, nil},
		{"strip all with nothing left, allow no codec media: rejected", "allow no codec media",
			side{map[string]any{"flags": []any{"codec-strip-all", "allow-no-codec-media"}}, "m=audio 0 RTP/AVP 0", append([]string{"a=rtpmap:8"}, opus...)}, nil},
		{"strip all, offer restores in the offer's order before telephone-event", "codec manipulations: offer; codec_store_offer",
			side{offerCodecs(map[string]any{"strip": []any{"all"}, "except": []any{"telephone-event"}, "offer": []any{"G722", "PCMU"}}),
				"m=audio 40002 RTP/AVP 9 0 101", []string{"a=rtpmap:8"}}, nil},
		{"strip all, offer in the flags list keeps the list's order (not alphabetical)", "codec manipulations: offer (flags list form codec-offer-NAME)",
			side{flags("codec-strip-all", "codec-offer-PCMU", "codec-offer-G722", "codec-offer-PCMA"), "m=audio 40002 RTP/AVP 0 9 8", opus}, nil},
		{"strip all, offer in the flags list, reverse order", "codec manipulations: offer (flags list form codec-offer-NAME)",
			side{flags("codec-offer-PCMA", "codec-strip-all", "codec-offer-PCMU"), "m=audio 40002 RTP/AVP 8 0", opus}, nil},
		{"strip all, offer restores in the offer's order", "codec manipulations: offer",
			side{offerCodecs(map[string]any{"strip": []any{"all"}, "offer": []any{"PCMA", "PCMU"}}), "m=audio 40002 RTP/AVP 8 0", opus}, nil},
		{"offer cannot add a codec the sender did not list (no transcoding)", "codec manipulations: offer, except, transcode",
			side{offerCodecs(map[string]any{"strip": []any{"all"}, "offer": []any{"AMR"}}), all, nil}, nil},
		{"offer of a codec that is there does not move it", "codec_store_offer: already present",
			side{flags("codec-offer-telephone-event"), all, nil}, nil},
		{"mask on an offer is strip (no transcoding to keep accepting it)", "codec manipulations: mask",
			side{flags("codec-mask-PCMU", "codec-mask-opus"), "m=audio 40002 RTP/AVP 8 9 18 101", opus}, nil},
		{"mask all except", "codec manipulations: mask (all), except",
			side{offerCodecs(map[string]any{"mask": []any{"all"}, "except": []any{"PCMU"}}), "m=audio 40002 RTP/AVP 0", nil}, nil},
		{"mask in an answer is ignored", "codec manipulations: mask (only processed in offer messages)",
			side{nil, all, nil}, &side{flags("codec-mask-PCMU"), "m=audio 40000 RTP/AVP 0 8 101", nil}},
		{"strip in an answer", "codecs_answer: codec_store_strip",
			side{nil, all, nil}, &side{offerCodecs(map[string]any{"strip": []any{"PCMA"}}), "m=audio 40000 RTP/AVP 0 101", []string{"a=rtpmap:8 "}}},
		{"strip all and offer in an answer", "codecs_answer: codec_store_offer",
			side{nil, all, nil}, &side{flags("codec-strip-all", "codec-offer-PCMA"), "m=audio 40000 RTP/AVP 8", []string{"a=rtpmap:0 ", "a=rtpmap:101"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := newBackend()
			s := ng.NewServer(b, ng.Options{})
			check := func(what string, sd side, req map[string]any) {
				t.Helper()
				for k, v := range sd.extra {
					req[k] = v
				}
				rep := roundTrip(t, s, what, req)
				if rep["result"] != "ok" {
					t.Fatalf("%s (%s): reply %v", what, tc.source, rep)
				}
				out, _ := rep["sdp"].(string)
				if _, err := sdprewrite.Parse([]byte(out)); err != nil {
					t.Fatalf("%s: reply sdp does not parse: %v\n%s", what, err, out)
				}
				if !strings.Contains(out, "\r\n"+sd.m+"\r\n") {
					t.Errorf("%s (%s): want %q in\n%s", what, tc.source, sd.m, out)
				}
				for _, g := range sd.gone {
					if strings.Contains(out, g) {
						t.Errorf("%s (%s): %q left in\n%s", what, tc.source, g, out)
					}
				}
				// What a format kept still carries its attributes.
				cs, _ := sdprewrite.Codecs([]byte(out))
				for _, c := range cs[0] {
					if c.PT == "96" && !strings.Contains(out, "a=fmtp:96 useinbandfec=1\r\na=rtcp-fb:96 nack\r\n") ||
						c.PT == "101" && !strings.Contains(out, "a=fmtp:101 0-16\r\n") {
						t.Errorf("%s: format %s lost its attributes\n%s", what, c.PT, out)
					}
				}
			}
			check("offer", tc.offer, map[string]any{"command": "offer", "call-id": "c1", "from-tag": "a", "sdp": codecOffer})
			if tc.answer != nil {
				check("answer", *tc.answer, map[string]any{"command": "answer", "call-id": "c1", "from-tag": "a", "to-tag": "b", "sdp": codecAnswer})
			}
		})
	}
}

func TestCodecFlagHonoured(t *testing.T) {
	for k, want := range map[string]bool{
		"codec-strip-pcmu": true, "codec-mask-all": true, "codec-except-opus": true, "codec-offer-g722": true,
		"codec-strip": true, "allow-no-codec-media": true,
		"codec-transcode-pcma": false, "codec-ignore-pcmu": false, "codec-accept-pcmu": false, "codec-set-opus/48000/2/32000": false,
		"codec-stripper": false,
	} {
		if got := honoured(k); got != want {
			t.Errorf("honoured(%q) = %v, want %v", k, got, want)
		}
	}
}

// FuzzCodecManipulations: whatever the flags and body, the codec edit
// never panics, and a body that parses gives one that parses, each RTP
// m-line listing only formats it had (or rejected with one of them).
func FuzzCodecManipulations(f *testing.F) {
	f.Add([]byte(codecOffer), "codec-strip-all codec-except-pcma codec-offer-g722", true)
	f.Add([]byte(codecAnswer), "codec-strip-pcmu/8000/1 codec-mask-all allow-no-codec-media", false)
	f.Add([]byte("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP\r\n"),
		"codec-strip-all allow-no-codec-media", true)
	f.Add([]byte(codecOffer), "codec-offer-amr codec-strip=opus/48000/2 codec-mask-full", true)
	f.Fuzz(func(t *testing.T, body []byte, flagList string, offer bool) {
		r := &ng.Request{Command: "offer", CallID: "c1", SDP: body, Flags: map[string]string{}}
		for i, fl := range strings.Fields(flagList) {
			k, v, _ := strings.Cut(fl, "=")
			if v == "" {
				v = strconv.Itoa(i % 3)
			}
			r.Flags[k] = v
		}
		b, _ := newBackend()
		out := b.codecs(r, offer)
		before, err := sdprewrite.Codecs(body)
		if err != nil {
			return
		}
		after, err := sdprewrite.Codecs(out)
		if err != nil || len(after) != len(before) {
			t.Fatalf("edited body: %v, %d m-lines, had %d\n%q", err, len(after), len(before), out)
		}
		for i := range before {
			for _, c := range after[i] {
				if !slices.Contains(before[i], c) {
					t.Fatalf("m-line %d gained %+v\n%q", i, c, out)
				}
			}
			if len(before[i]) > 0 && len(after[i]) == 0 {
				t.Fatalf("m-line %d left without formats\n%q", i, out)
			}
		}
	})
}
