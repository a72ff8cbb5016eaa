package ngbackend

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"sipxdp/ng"
	"sipxdp/relay"
	"sipxdp/sipd/media"
	"sipxdp/sipd/sdprewrite"
)

// dualFake is fake with an IPv6 relay address too (unless v4only): a leg
// asked for IPv6 gets relay6IP, as relay.Engine picks a pool by family.
type dualFake struct {
	*fake
	v4only bool
}

var relay6IP = netip.MustParseAddr("2001:db8::1")

func (f *dualFake) AddStream(id string, index int, a, b relay.LegSpec) (relay.StreamPorts, error) {
	if f.v4only && (a.Family == relay.IPv6 || b.Family == relay.IPv6) {
		return relay.StreamPorts{}, fmt.Errorf("no relay address %q of family %d", "", relay.IPv6)
	}
	sp, err := f.fake.AddStream(id, index, a, b)
	if err != nil {
		return sp, err
	}
	s := f.sessions[id]
	for i := range s.Streams {
		if s.Streams[i].Index != index {
			continue
		}
		for _, l := range []struct {
			spec relay.LegSpec
			leg  *relay.LegInfo
		}{{a, &s.Streams[i].A}, {b, &s.Streams[i].B}} {
			if l.spec.Family == relay.IPv6 {
				l.leg.Local = relay6IP
			}
		}
		sp = relay.StreamPorts{A: s.Streams[i].A.LegPorts, B: s.Streams[i].B.LegPorts}
	}
	return sp, nil
}

// TestAddressFlags drives offer and answer through ng.Server with
// rtpengine's address flags. Each row names the section of rtpengine's
// NG control protocol documentation its semantics come from, and checks
// the SDP toward the receiver (c= and port), the reply, and the peer the
// relay will send the sender's media to (what SetPeer was told).
func TestAddressFlags(t *testing.T) {
	const caller, nat = "10.0.0.5", "198.51.100.7"
	offer := func(extra map[string]any) map[string]any {
		d := map[string]any{"command": "offer", "call-id": "c1", "from-tag": "a",
			"sdp": string(sdp(caller, 10000)), "received-from": []any{"IP4", nat}}
		for k, v := range extra {
			if v == nil {
				delete(d, k)
				continue
			}
			d[k] = v
		}
		return d
	}
	for _, tc := range []struct {
		name, section string
		cmd           map[string]any
		v4only        bool
		// want: the c= address and port toward the callee; reason: the
		// error-reason instead.
		wantC          string
		wantPort       int
		reason         string
		peerRTP, peerC string // the caller's media as the relay will send to it
	}{
		{name: "default trusts the SDP", section: "trust address",
			cmd: offer(nil), wantC: relayIP.String(), wantPort: 40002,
			peerRTP: caller + ":10000", peerC: caller + ":10001"},
		{name: "trust-address", section: "trust address",
			cmd: offer(map[string]any{"flags": []any{"trust-address"}}), wantC: relayIP.String(), wantPort: 40002,
			peerRTP: caller + ":10000", peerC: caller + ":10001"},
		{name: "SIP-source-address uses received-from, SDP ports", section: "SIP source address",
			cmd: offer(map[string]any{"flags": []any{"SIP-source-address"}}), wantC: relayIP.String(), wantPort: 40002,
			peerRTP: nat + ":10000", peerC: nat + ":10001"},
		{name: "SIP source address, spaced spelling", section: "SIP source address",
			cmd: offer(map[string]any{"flags": []any{"SIP source address"}}), wantC: relayIP.String(), wantPort: 40002,
			peerRTP: nat + ":10000", peerC: nat + ":10001"},
		{name: "trust-address overrides SIP-source-address", section: "trust address",
			cmd: offer(map[string]any{"flags": []any{"SIP-source-address", "trust-address"}}), wantC: relayIP.String(), wantPort: 40002,
			peerRTP: caller + ":10000", peerC: caller + ":10001"},
		{name: "SIP-source-address without received-from", section: "received from",
			cmd:    offer(map[string]any{"flags": []any{"SIP-source-address"}, "received-from": nil}),
			reason: "unusable address flag: SIP-source-address without a usable received-from"},
		{name: "media-address replaces the relay's address in the SDP", section: "media address",
			cmd: offer(map[string]any{"media-address": "192.0.2.99"}), wantC: "192.0.2.99", wantPort: 40002,
			peerRTP: caller + ":10000", peerC: caller + ":10001"},
		{name: "media-address IPv6", section: "media address",
			cmd: offer(map[string]any{"media address": "2001:db8::99"}), wantC: "2001:db8::99", wantPort: 40002,
			peerRTP: caller + ":10000", peerC: caller + ":10001"},
		{name: "media-address malformed", section: "media address",
			cmd:    offer(map[string]any{"media-address": "relay.example"}),
			reason: `unusable address flag: media-address "relay.example": ParseAddr("relay.example"): unexpected character (at "relay.example")`},
		{name: "address-family IP6 gives the callee an IPv6 relay address", section: "address family",
			cmd: offer(map[string]any{"address-family": "IP6"}), wantC: relay6IP.String(), wantPort: 40002,
			peerRTP: caller + ":10000", peerC: caller + ":10001"},
		{name: "address family IP4", section: "address family",
			cmd: offer(map[string]any{"address family": "IP4"}), wantC: relayIP.String(), wantPort: 40002,
			peerRTP: caller + ":10000", peerC: caller + ":10001"},
		{name: "address-family IP6 on a relay without IPv6", section: "address family", v4only: true,
			cmd:    offer(map[string]any{"address-family": "IP6"}),
			reason: `add stream 0: no relay address of that family: address-family IP6: no relay address "" of family 2`},
		{name: "address-family unknown", section: "address family",
			cmd:    offer(map[string]any{"address-family": "IPX"}),
			reason: `unusable address flag: address-family "IPX": want IP4 or IP6`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &dualFake{fake: &fake{sessions: map[string]*relay.SessionInfo{}}, v4only: tc.v4only}
			b := New(media.New(media.Config{Mode: media.ModeAll, Engine: f}), f, nil)
			s := ng.NewServer(b, ng.Options{})
			rep := roundTrip(t, s, "ck", tc.cmd)
			if tc.reason != "" {
				if rep["result"] != "error" || rep["error-reason"] != tc.reason {
					t.Fatalf("%s: reply %v, want error-reason %q", tc.section, rep, tc.reason)
				}
				return
			}
			if rep["result"] != "ok" {
				t.Fatalf("%s: reply %v", tc.section, rep)
			}
			out, _ := rep["sdp"].(string)
			ms, err := sdprewrite.Parse([]byte(out))
			if err != nil || len(ms) != 1 {
				t.Fatalf("%s: sdp %v:\n%s", tc.section, err, out)
			}
			if ms[0].Addr.String() != tc.wantC || int(ms[0].Port) != tc.wantPort {
				t.Errorf("%s: m= %v:%d, want %s:%d\n%s", tc.section, ms[0].Addr, ms[0].Port, tc.wantC, tc.wantPort, out)
			}
			fam := "IP4"
			if strings.Contains(tc.wantC, ":") {
				fam = "IP6"
			}
			if want := "c=IN " + fam + " " + tc.wantC + "\r\n"; !strings.Contains(out, want) {
				t.Errorf("%s: no %q in\n%s", tc.section, want, out)
			}
			// o= keeps the caller's address: no replace=origin here.
			for _, l := range strings.Split(out, "\r\n") {
				if !strings.HasPrefix(l, "o=") && (strings.Contains(l, caller) || strings.Contains(l, nat)) {
					t.Errorf("%s: the caller's address leaks to the callee in %q", tc.section, l)
				}
			}
			a := f.sessions["c1"].Streams[0].A
			if a.PeerRTP.String() != tc.peerRTP || a.PeerRTCP.String() != tc.peerC {
				t.Errorf("%s: relay sends to %v / %v, want %s / %s", tc.section, a.PeerRTP, a.PeerRTCP, tc.peerRTP, tc.peerC)
			}
		})
	}
}

// TestAddressFlagsAnswer: SIP-source-address on the answer sets the
// callee's peer from its received-from; media-address on the answer is
// what the caller is given.
func TestAddressFlagsAnswer(t *testing.T) {
	b, f := newBackend()
	s := ng.NewServer(b, ng.Options{})
	rep := roundTrip(t, s, "ck1", map[string]any{"command": "offer", "call-id": "c1", "from-tag": "a",
		"sdp": string(sdp("192.0.2.10", 10000)), "received-from": []any{"IP4", "192.0.2.10"}})
	if rep["result"] != "ok" {
		t.Fatal(rep)
	}
	rep = roundTrip(t, s, "ck2", map[string]any{"command": "answer", "call-id": "c1", "from-tag": "a", "to-tag": "b",
		"sdp": string(sdp("10.1.1.1", 20000)), "received-from": []any{"IP4", "198.51.100.20"},
		"flags": []any{"SIP-source-address"}, "media-address": "192.0.2.200"})
	if rep["result"] != "ok" {
		t.Fatal(rep)
	}
	out, _ := rep["sdp"].(string)
	if ms, err := sdprewrite.Parse([]byte(out)); err != nil || len(ms) != 1 || ms[0].Addr.String() != "192.0.2.200" || ms[0].Port != 40000 {
		t.Errorf("answer sdp %+v %v:\n%s", ms, err, out)
	}
	bl := f.sessions["c1"].Streams[0].B
	if bl.PeerRTP.String() != "198.51.100.20:20000" || bl.PeerRTCP.String() != "198.51.100.20:20001" {
		t.Errorf("relay sends to the callee at %v / %v, want received-from with the SDP's ports", bl.PeerRTP, bl.PeerRTCP)
	}
	if a := f.sessions["c1"].Streams[0].A; a.PeerRTP.String() != "192.0.2.10:10000" {
		t.Errorf("caller's peer changed to %v", a.PeerRTP)
	}
	// A re-offer cannot move a leg that exists to the other family.
	if _, err := b.Offer(&ng.Request{Command: "offer", CallID: "c1", FromTag: "a", SDP: sdp("192.0.2.10", 10002),
		Flags: map[string]string{"address-family": "IP6"}}); !errors.Is(err, media.ErrFamily) {
		t.Errorf("IPv4 call re-offered with address-family IP6: %v", err)
	}
	if _, err := b.Offer(&ng.Request{Command: "offer", CallID: "c2", FromTag: "a", SDP: sdp("192.0.2.10", 10000),
		Flags: map[string]string{"address-family": "IP5"}}); !errors.Is(err, ErrAddressFlag) {
		t.Errorf("offer with address-family IP5: %v", err)
	}
}
