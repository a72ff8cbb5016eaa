package sdprewrite

import (
	"net/netip"
	"testing"
)

// seeds are the corpus bodies, so that the fuzzer starts from realistic SDP and mutates towards the edges.
var seeds = []string{softphone, audioVideo, rtcpMux, rtcpAddr, ipv6, holdSendonly, holdInactive, holdOld,
	rejectedVideo, webrtc, trickle, sessionTwo, lateOffer, t38, noMedia, "", "v=0\r\n", "garbage"}

// FuzzParse: Parse never panics, and what it accepts is consistent (indexes in order, RTCP only on live lines).
func FuzzParse(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ms, err := Parse(body)
		if err != nil {
			return
		}
		for i, m := range ms {
			if m.Index != i {
				t.Fatalf("m-line %d has Index %d", i, m.Index)
			}
			if m.Port != 0 && !m.Addr.IsValid() {
				t.Fatalf("m-line %d: live stream without address: %+v", i, m)
			}
			if m.Port == 0 && m.RTCP.IsValid() {
				t.Fatalf("m-line %d: rejected stream with RTCP: %+v", i, m)
			}
		}
	})
}

// FuzzRewrite: if Parse accepts a body, Rewrite with a target for every m-line succeeds, Parse accepts the
// result, and every live m-line now carries the relay's ports and address (an unspecified address only if it
// had one: old-style hold). rtcpMode picks the relay's RTCP port: none, RTP+1, or elsewhere, which exercise
// removing, rewriting and adding a=rtcp.
func FuzzRewrite(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s), false, false, uint8(1))
		f.Add([]byte(s), true, true, uint8(0))
		f.Add([]byte(s), false, true, uint8(2))
	}
	f.Fuzz(func(t *testing.T, body []byte, v6, removeICE bool, rtcpMode uint8) {
		in, err := Parse(body)
		if err != nil {
			return
		}
		relay := netip.MustParseAddr("203.0.113.5")
		if v6 {
			relay = netip.MustParseAddr("2001:db8:ffff::5")
		}
		targets := make(map[int]Target, len(in))
		for i := range in {
			rtp := uint16(30000 + 2*(i%1000))
			var rtcp uint16
			switch rtcpMode % 3 {
			case 1:
				rtcp = rtp + 1
			case 2:
				rtcp = rtp + 10000
			}
			targets[i] = Target{Addr: relay, RTP: rtp, RTCP: rtcp}
		}
		out, err := Rewrite(body, targets, Options{RemoveICE: removeICE})
		if err != nil {
			t.Fatalf("Parse accepted the body but Rewrite failed: %v", err)
		}
		got, err := Parse(out)
		if err != nil {
			t.Fatalf("Rewrite produced a body Parse rejects: %v\n%q", err, out)
		}
		if len(got) != len(in) {
			t.Fatalf("%d m-lines became %d", len(in), len(got))
		}
		for i, m := range got {
			if in[i].Port == 0 {
				if m.Port != 0 {
					t.Fatalf("m-line %d: rejected stream revived on port %d", i, m.Port)
				}
				continue
			}
			tg := targets[i]
			if m.Port != tg.RTP {
				t.Fatalf("m-line %d: port %d, want %d", i, m.Port, tg.RTP)
			}
			if m.Addr != relay && !(m.Addr.IsUnspecified() && in[i].Addr.IsUnspecified()) {
				t.Fatalf("m-line %d: address %v, want %v", i, m.Addr, relay)
			}
			// Without an RTCP port the a=rtcp is gone and the peer falls back to RTP+1.
			wantRTCP := tg.RTCP
			if wantRTCP == 0 {
				wantRTCP = tg.RTP + 1
			}
			if m.RTCP != netip.AddrPortFrom(m.Addr, wantRTCP) {
				t.Fatalf("m-line %d: RTCP %v, want %v", i, m.RTCP, netip.AddrPortFrom(m.Addr, wantRTCP))
			}
		}
	})
}
