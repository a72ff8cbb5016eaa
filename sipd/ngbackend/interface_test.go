package ngbackend

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"sipxdp/ng"
	"sipxdp/relay"
	"sipxdp/relay/relaytest"
	"sipxdp/sipd/media"
	"sipxdp/sipd/sdprewrite"
)

// multiHomed is rtpengine's interface= with internal on 10.3.1.6,
// external on 10.3.1.6 advertised as 203.0.113.6 and on 2001:db8::6,
// and priv on 10.9.0.1: one local address serving two names, advertised
// as itself toward internal and as 203.0.113.6 toward external.
func multiHomed() []relay.AddressConfig {
	a := func(name, local, adv string) relay.AddressConfig {
		c := relay.AddressConfig{Name: name, Local: netip.MustParseAddr(local), PortMin: 30000, PortMax: 30099}
		if adv != "" {
			c.Advertised = netip.MustParseAddr(adv)
		}
		return c
	}
	return []relay.AddressConfig{
		a("internal", "10.3.1.6", ""),
		a("external", "10.3.1.6", "203.0.113.6"),
		a("external", "2001:db8::6", ""),
		a("priv", "10.9.0.1", ""),
	}
}

func newEngineBackend(t *testing.T, addrs []relay.AddressConfig, pick func(netip.Addr) relay.LegSpec) (*ng.Server, *relay.Engine) {
	t.Helper()
	eng, err := relay.NewEngine(relay.Config{Addresses: addrs, Logger: slog.New(slog.DiscardHandler), ProcDir: t.TempDir()}, nil, relaytest.NullPath{}, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	ctrl := media.New(media.Config{Mode: media.ModeAll, Engine: eng, Interfaces: addrs, Pick: pick})
	return ng.NewServer(New(ctrl, eng, nil), ng.Options{}), eng
}

// TestDirection drives an offer and its answer through ng.Server on a
// relay with named interfaces. Each row names the section of rtpengine's
// documentation its semantics come from (ng_control_protocol.md unless
// said), and checks field by field: the c= and o= toward the callee (the
// offer's receiver) and toward the caller (the answer's receiver), the
// interface each leg of the engine's stream is on, and the reply.
func TestDirection(t *testing.T) {
	const caller, callee = "10.3.1.50", "198.51.100.20"
	v4only := []relay.AddressConfig{
		{Name: "pub", Local: netip.MustParseAddr("192.0.2.1"), PortMin: 30000, PortMax: 30099},
		{Name: "priv", Local: netip.MustParseAddr("10.0.0.1"), PortMin: 30000, PortMax: 30099},
	}
	unnamed := []relay.AddressConfig{
		{Name: "default", Local: netip.MustParseAddr("192.0.2.1"), PortMin: 30000, PortMax: 30099},
		{Name: "default", Local: netip.MustParseAddr("2001:db8::1"), PortMin: 30000, PortMax: 30099},
	}
	for _, tc := range []struct {
		name, section string
		addrs         []relay.AddressConfig // nil: multiHomed
		route         bool                  // legs without direction by route (sipd's legPicker)
		offer, answer map[string]any        // keys added to the command
		reason        string                // the offer's error-reason; "" for ok
		// The addresses each side is told (c=, and o= with replace-origin),
		// and the interface of the leg facing each side.
		toCallee, toCaller string
		legA, legB         string
	}{
		{name: "no direction: the first interface", section: "rtpengine(8) INTERFACES, Interface Names",
			toCallee: "10.3.1.6", toCaller: "10.3.1.6", legA: "internal", legB: "internal"},
		{name: "direction internal, external: the external side sees the advertised address", section: "direction",
			offer:    map[string]any{"direction": []any{"internal", "external"}},
			toCallee: "203.0.113.6", toCaller: "10.3.1.6", legA: "internal", legB: "external"},
		{name: "direction external, internal", section: "direction",
			offer:    map[string]any{"direction": []any{"external", "internal"}},
			toCallee: "10.3.1.6", toCaller: "203.0.113.6", legA: "external", legB: "internal"},
		{name: "from-interface and to-interface", section: "from-interface, to-interface",
			offer:    map[string]any{"from-interface": "external", "to-interface": "priv"},
			toCallee: "10.9.0.1", toCaller: "203.0.113.6", legA: "external", legB: "priv"},
		{name: "to-interface wins over direction's second", section: "direction (from-interface=..., to-interface=...)",
			offer:    map[string]any{"direction": []any{"internal", "external"}, "to-interface": "priv"},
			toCallee: "10.9.0.1", toCaller: "10.3.1.6", legA: "internal", legB: "priv"},
		{name: "Kamailio rtpp-flags direction=internal direction=external", section: "direction; Kamailio rtpengine module, direction=",
			offer:    map[string]any{"rtpp-flags": "replace-origin direction=internal direction=external"},
			toCallee: "203.0.113.6", toCaller: "10.3.1.6", legA: "internal", legB: "external"},
		{name: "Kamailio rtpp-flags internal external", section: "direction; Kamailio rtpengine module, internal and external",
			offer:    map[string]any{"rtpp-flags": "internal external"},
			toCallee: "203.0.113.6", toCaller: "10.3.1.6", legA: "internal", legB: "external"},
		{name: "rtpp-flags from-interface= and to-interface=", section: "from-interface, to-interface; Kamailio rtpengine module, rtpp-flags",
			offer:    map[string]any{"rtpp-flags": "from-interface=priv to-interface=external"},
			toCallee: "203.0.113.6", toCaller: "10.9.0.1", legA: "priv", legB: "external"},
		{name: "an answer's direction changes nothing", section: "answer Message",
			offer:    map[string]any{"direction": []any{"internal", "external"}},
			answer:   map[string]any{"direction": []any{"priv", "priv"}},
			toCallee: "203.0.113.6", toCaller: "10.3.1.6", legA: "internal", legB: "external"},
		{name: "direction with address-family IP6: the name's IPv6 address", section: "direction, address family",
			offer:    map[string]any{"direction": []any{"internal", "external"}, "address-family": "IP6"},
			toCallee: "2001:db8::6", toCaller: "10.3.1.6", legA: "internal", legB: "external"},
		{name: "address-family IP6 on an interface without IPv6", section: "direction, address family",
			offer:  map[string]any{"direction": []any{"internal", "priv"}, "address-family": "IP6"},
			reason: `add stream 0: no relay address of that family: address-family IP6: add stream "c1"/0 side B: no relay address "priv" of family 2`},
		{name: "an IPv6 callee on a name with one family gets that family", section: "rtpengine(8) INTERFACES, Multiple Addresses per Interface",
			offer:    map[string]any{"direction": []any{"internal", "priv"}, "received-from": []any{"IP6", "2001:db8::20"}},
			toCallee: "10.9.0.1", toCaller: "10.3.1.6", legA: "internal", legB: "priv"},
		{name: "unknown interface: the default, as rtpengine", section: "direction (rtpengine's call.c: Interface not found, using default)",
			offer:    map[string]any{"direction": []any{"internal", "nowhere"}},
			toCallee: "10.3.1.6", toCaller: "10.3.1.6", legA: "internal", legB: "internal"},
		{name: "internal and external not configured select IPv4 and IPv6", section: "direction (legacy internal and external)",
			addrs:    unnamed,
			offer:    map[string]any{"direction": []any{"internal", "external"}},
			toCallee: "2001:db8::1", toCaller: "192.0.2.1", legA: "default", legB: "default"},
		{name: "no direction, by route: the callee's leg too faces the only address known", section: "rtpengine(8) INTERFACES (sipd picks by route instead of the first interface)",
			route: true, toCallee: "10.3.1.6", toCaller: "10.3.1.6", legA: "internal", legB: "internal"},
		{name: "outbound-peer: the interface of the route to the peer", section: "outbound-peer",
			route: true, offer: map[string]any{"direction": []any{"priv"}, "outbound-peer": "198.51.100.99"},
			toCallee: "203.0.113.6", toCaller: "10.9.0.1", legA: "priv", legB: "external"},
		{name: "inbound-peer", section: "inbound-peer",
			offer: map[string]any{"inbound-peer": "10.3.1.99", "to-interface": "priv"},
			route: true, toCallee: "10.9.0.1", toCaller: "10.3.1.6", legA: "internal", legB: "priv"},
		{name: "OpenSIPS in-iface/out-iface arrive as direction", section: "direction; OpenSIPS rtpengine module, in-iface=/out-iface=",
			addrs:    v4only,
			offer:    map[string]any{"direction": []any{"priv", "pub"}},
			toCallee: "192.0.2.1", toCaller: "10.0.0.1", legA: "priv", legB: "pub"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addrs := tc.addrs
			if addrs == nil {
				addrs = multiHomed()
			}
			var pick func(netip.Addr) relay.LegSpec
			if tc.route {
				pick = route
			}
			s, eng := newEngineBackend(t, addrs, pick)
			off := map[string]any{"command": "offer", "call-id": "c1", "from-tag": "a", "sdp": string(sdp(caller, 10000)),
				"replace": []any{"origin"}, "received-from": []any{"IP4", caller}}
			for k, v := range tc.offer {
				off[k] = v
			}
			rep := roundTrip(t, s, "o", off)
			if tc.reason != "" {
				if rep["result"] != "error" || rep["error-reason"] != tc.reason {
					t.Fatalf("%s: reply %v, want error-reason %q", tc.section, rep, tc.reason)
				}
				return
			}
			checkSide(t, tc.section, "offer toward the callee", rep, tc.toCallee)
			ans := map[string]any{"command": "answer", "call-id": "c1", "from-tag": "a", "to-tag": "b",
				"sdp": string(sdp(callee, 20000)), "replace": []any{"origin"}}
			for k, v := range tc.answer {
				ans[k] = v
			}
			rep = roundTrip(t, s, "a", ans)
			checkSide(t, tc.section, "answer toward the caller", rep, tc.toCaller)
			si, err := eng.Session("c1")
			if err != nil || len(si.Streams) != 1 {
				t.Fatalf("%s: session %+v, %v", tc.section, si, err)
			}
			st := si.Streams[0]
			if st.A.Address != tc.legA || st.B.Address != tc.legB {
				t.Errorf("%s: legs on %q and %q, want %q and %q", tc.section, st.A.Address, st.B.Address, tc.legA, tc.legB)
			}
			if st.A.Local == st.B.Local && st.A.RTP == st.B.RTP {
				t.Errorf("%s: both legs on %s:%d", tc.section, st.A.Local, st.A.RTP)
			}
		})
	}
}

// checkSide checks a reply's SDP: its one m-line's address (c=) and the
// o= line (replace-origin) are want.
func checkSide(t *testing.T, section, what string, rep map[string]any, want string) {
	t.Helper()
	if rep["result"] != "ok" {
		t.Fatalf("%s: %s: reply %v", section, what, rep)
	}
	out, _ := rep["sdp"].(string)
	ms, err := sdprewrite.Parse([]byte(out))
	if err != nil || len(ms) != 1 {
		t.Fatalf("%s: %s: sdp %v:\n%s", section, what, err, out)
	}
	if ms[0].Addr.String() != want {
		t.Errorf("%s: %s: c= %s, want %s", section, what, ms[0].Addr, want)
	}
	fam := "IP4"
	if netip.MustParseAddr(want).Is6() {
		fam = "IP6"
	}
	if o := fmt.Sprintf("\no=- 1 2 IN %s %s\r\n", fam, want); !strings.Contains("\n"+out, o) {
		t.Errorf("%s: %s: no %q in\n%s", section, what, strings.TrimSpace(o), out)
	}
}

// TestDirectionKeptForNewStreams: a re-offer that adds a stream without
// direction puts it on the interfaces the call's first offer chose
// ("direction": rtpengine remembers the selected interface); its
// existing stream keeps its legs whatever the re-offer says.
func TestDirectionKeptForNewStreams(t *testing.T) {
	s, eng := newEngineBackend(t, multiHomed(), nil)
	rep := roundTrip(t, s, "o1", map[string]any{"command": "offer", "call-id": "c1", "from-tag": "a",
		"sdp": string(sdp("10.3.1.50", 10000)), "direction": []any{"internal", "external"}})
	checkSide0(t, rep, "203.0.113.6")
	roundTrip(t, s, "a1", map[string]any{"command": "answer", "call-id": "c1", "from-tag": "a", "to-tag": "b",
		"sdp": string(sdp("198.51.100.20", 20000))})
	two := string(sdp("10.3.1.50", 10000)) + "m=video 10002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
	rep = roundTrip(t, s, "o2", map[string]any{"command": "offer", "call-id": "c1", "from-tag": "a", "sdp": two,
		"direction": []any{"priv", "priv"}})
	if rep["result"] != "ok" {
		t.Fatalf("re-offer: %v", rep)
	}
	si, err := eng.Session("c1")
	if err != nil || len(si.Streams) != 2 {
		t.Fatalf("session %+v, %v", si, err)
	}
	for _, st := range si.Streams {
		want := [2]string{"internal", "external"}
		if st.Index == 1 {
			want = [2]string{"priv", "priv"} // the re-offer's direction, for its new stream
		}
		if got := [2]string{st.A.Address, st.B.Address}; got != want {
			t.Errorf("stream %d: legs on %q, want %q", st.Index, got, want)
		}
	}
	// And without direction, a third stream takes the call's choice,
	// which the re-offer's direction replaced.
	three := two + "m=video 10004 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
	roundTrip(t, s, "o3", map[string]any{"command": "offer", "call-id": "c1", "from-tag": "a", "sdp": three})
	si, _ = eng.Session("c1")
	for _, st := range si.Streams {
		if st.Index == 2 && (st.A.Address != "priv" || st.B.Address != "priv") {
			t.Errorf("stream 2 without direction: legs on %q and %q, want the call's priv", st.A.Address, st.B.Address)
		}
	}
}

func checkSide0(t *testing.T, rep map[string]any, want string) {
	t.Helper()
	out, _ := rep["sdp"].(string)
	ms, err := sdprewrite.Parse([]byte(out))
	if rep["result"] != "ok" || err != nil || len(ms) != 1 || ms[0].Addr.String() != want {
		t.Fatalf("reply %v: sdp toward the receiver does not name %s", rep, want)
	}
}

// route stands for sipd's legPicker on multiHomed: 10.3.1.0/24 is
// reached through internal, everything else through external.
func route(peer netip.Addr) relay.LegSpec {
	if netip.MustParsePrefix("10.3.1.0/24").Contains(peer) {
		return relay.LegSpec{Address: "internal", Family: relay.IPv4}
	}
	if peer.Is6() {
		return relay.LegSpec{Address: "external", Family: relay.IPv6}
	}
	return relay.LegSpec{Address: "external", Family: relay.IPv4}
}
