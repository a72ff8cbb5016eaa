package ng

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

const docStatistics = "ng_control_protocol.md: statistics Message"

// TestHandleStatistics sends statistics after a few commands from two
// proxies and checks the reply's sections field by field.
func TestHandleStatistics(t *testing.T) {
	es := EngineStats{Sessions: 3, Foreign: 1, Packets: 1000, Bytes: 172000, Errors: 2,
		PacketRate: 50, ByteRate: 8600, ErrorRate: 1,
		Ended: EndedStats{Managed: 4, Timeout: 1, OfferTimeout: 1, Regular: 1, Forced: 1,
			ZeroWay: 1, OneWay: 1, Duration: 10 * time.Second}}
	fb := &fakeBackend{}
	s := NewServer(fb, Options{Statistics: func() EngineStats { return es }})
	p1 := netip.MustParseAddrPort("192.0.2.1:5060")
	p2 := netip.MustParseAddrPort("192.0.2.2:5060")
	send := func(cookie string, src netip.AddrPort, d map[string]any) map[string]any {
		return parseReply(t, cookie, s.Handle(msg(t, cookie, d), src))
	}
	send("a", p1, map[string]any{"command": "ping"})
	send("b", p1, map[string]any{"command": "offer", "call-id": "c", "from-tag": "f", "sdp": "v=0"})
	send("c", p2, map[string]any{"command": "answer", "call-id": "c"}) // error: no from-tag
	send("d", p2, map[string]any{"command": "list"})
	fb.err = fmt.Errorf("no pair: %w", ErrOutOfPorts) // rejected
	send("r1", p2, map[string]any{"command": "offer", "call-id": "c2", "from-tag": "f", "sdp": "v=0"})
	fb.err = errors.New("bad SDP") // an error, not a rejection
	send("r2", p2, map[string]any{"command": "offer", "call-id": "c3", "from-tag": "f", "sdp": "v=0"})
	fb.err = nil
	reply := send("e", p1, map[string]any{"command": "statistics"})

	if reply["result"] != "ok" {
		t.Fatalf("result = %v, want ok", reply["result"])
	}
	st, ok := reply["statistics"].(map[string]any)
	if !ok {
		t.Fatalf("no statistics dictionary in %v", reply)
	}
	if _, ok := st["intervalstatistics"]; ok {
		t.Error("intervalstatistics present; rtpengine sends it only with Graphite")
	}
	section := func(name string) map[string]any {
		m, ok := st[name].(map[string]any)
		if !ok {
			t.Fatalf("no %s dictionary", name)
		}
		return m
	}
	cur, tot, ctl := section("currentstatistics"), section("totalstatistics"), section("controlstatistics")
	proxies, _ := ctl["proxies"].([]any)
	if len(proxies) != 2 {
		t.Fatalf("proxies = %v, want 2", ctl["proxies"])
	}
	proxy := func(i int) map[string]any { return proxies[i].(map[string]any) }

	tests := []struct {
		doc   string
		field string
		got   any
		want  any
	}{
		{docStatistics + ", currentstatistics", "sessionsown", cur["sessionsown"], int64(2)},
		{docStatistics + ", currentstatistics", "sessionsforeign", cur["sessionsforeign"], int64(1)},
		{docStatistics + ", currentstatistics", "sessionstotal", cur["sessionstotal"], int64(3)},
		{docStatistics + ", currentstatistics", "transcodedmedia", cur["transcodedmedia"], int64(0)},
		{docStatistics + ", currentstatistics", "packetrate", cur["packetrate"], int64(50)},
		{docStatistics + ", currentstatistics", "byterate", cur["byterate"], int64(8600)},
		{docStatistics + ", currentstatistics", "errorrate", cur["errorrate"], int64(1)},
		{docStatistics + ", totalstatistics", "uptime", tot["uptime"], "0"},
		{docStatistics + ", totalstatistics", "managedsessions", tot["managedsessions"], int64(4)},
		{docStatistics + ", totalstatistics", "rejectedsessions", tot["rejectedsessions"], int64(1)},
		{docStatistics + ", totalstatistics", "timeoutsessions", tot["timeoutsessions"], int64(1)},
		{docStatistics + ", totalstatistics", "silenttimeoutsessions", tot["silenttimeoutsessions"], int64(0)},
		{docStatistics + ", totalstatistics", "finaltimeoutsessions", tot["finaltimeoutsessions"], int64(0)},
		{docStatistics + ", totalstatistics", "offertimeoutsessions", tot["offertimeoutsessions"], int64(1)},
		{docStatistics + ", totalstatistics", "regularterminatedsessions", tot["regularterminatedsessions"], int64(1)},
		{docStatistics + ", totalstatistics", "forcedterminatedsessions", tot["forcedterminatedsessions"], int64(1)},
		{docStatistics + ", totalstatistics", "relayedpackets", tot["relayedpackets"], int64(1000)},
		{docStatistics + ", totalstatistics", "relayedpacketerrors", tot["relayedpacketerrors"], int64(2)},
		{docStatistics + ", totalstatistics", "zerowaystreams", tot["zerowaystreams"], int64(1)},
		{docStatistics + ", totalstatistics", "onewaystreams", tot["onewaystreams"], int64(1)},
		{docStatistics + ", totalstatistics", "avgcallduration", tot["avgcallduration"], "2.500000"},
		{docStatistics + ", controlstatistics", "proxies[0].proxy", proxy(0)["proxy"], "192.0.2.1"},
		{docStatistics + ", controlstatistics", "proxies[0].pingcount", proxy(0)["pingcount"], int64(1)},
		{docStatistics + ", controlstatistics", "proxies[0].offercount", proxy(0)["offercount"], int64(1)},
		{docStatistics + ", controlstatistics", "proxies[0].errorcount", proxy(0)["errorcount"], int64(0)},
		{docStatistics + ", controlstatistics", "proxies[0].statistics", proxy(0)["statistics"], int64(0)},
		{docStatistics + ", controlstatistics", "proxies[0].playmedia", proxy(0)["playmedia"], int64(0)},
		{docStatistics + ", controlstatistics", "proxies[1].proxy", proxy(1)["proxy"], "192.0.2.2"},
		{docStatistics + ", controlstatistics", "proxies[1].answercount", proxy(1)["answercount"], int64(1)},
		{docStatistics + ", controlstatistics", "proxies[1].offercount", proxy(1)["offercount"], int64(2)},
		{docStatistics + ", controlstatistics", "proxies[1].listcount", proxy(1)["listcount"], int64(1)},
		{docStatistics + ", controlstatistics", "proxies[1].errorcount", proxy(1)["errorcount"], int64(3)},
		{docStatistics + ", controlstatistics", "totalpingcount", ctl["totalpingcount"], int64(1)},
		{docStatistics + ", controlstatistics", "totaloffercount", ctl["totaloffercount"], int64(3)},
		{docStatistics + ", controlstatistics", "totalanswercount", ctl["totalanswercount"], int64(1)},
		{docStatistics + ", controlstatistics", "totallistcount", ctl["totallistcount"], int64(1)},
		{docStatistics + ", controlstatistics", "totaldeletecount", ctl["totaldeletecount"], int64(0)},
		{docStatistics + ", controlstatistics", "totalstartreccount", ctl["totalstartreccount"], int64(0)},
		{docStatistics + ", controlstatistics", "totalerrorcount", ctl["totalerrorcount"], int64(3)},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s (%s) = %#v, want %#v", tc.field, tc.doc, tc.got, tc.want)
		}
	}
	// Every per-proxy and total key of the doc's sample is there.
	for _, cc := range controlCounters {
		if _, ok := proxy(0)[cc.key]; !ok {
			t.Errorf("proxies[0] lacks %s", cc.key)
		}
		if _, ok := ctl["total"+cc.key]; !ok {
			t.Errorf("controlstatistics lacks total%s", cc.key)
		}
	}
	// The statistics command itself is counted once it has run.
	again := send("f", p1, map[string]any{"command": "statistics"})
	ctl = again["statistics"].(map[string]any)["controlstatistics"].(map[string]any)
	if got := ctl["totalstatistics"]; got != int64(1) {
		t.Errorf("totalstatistics = %v after one statistics command, want 1", got)
	}
}

// TestHandleStatisticsJSON: asked in JSON, statistics answers in JSON,
// and without an engine source its engine fields are 0.
func TestHandleStatisticsJSON(t *testing.T) {
	s := NewServer(&fakeBackend{}, Options{})
	got := jsonReply(t, "s1", s.Handle([]byte(`s1 {"command":"statistics"}`), testSrc))
	st, _ := got["statistics"].(map[string]any)
	cur, _ := st["currentstatistics"].(map[string]any)
	if got["result"] != "ok" || cur == nil {
		t.Fatalf("reply %v", got)
	}
	if cur["sessionstotal"] != float64(0) {
		t.Errorf("sessionstotal = %v, want 0", cur["sessionstotal"])
	}
}

// TestProxyStatsBounded: past MaxProxies sources, commands count under
// one OtherProxy entry, so spoofed sources cannot grow the list.
func TestProxyStatsBounded(t *testing.T) {
	var p proxyStats
	for i := range MaxProxies + 10 {
		p.record(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), "ping", i%2 == 0, time.Millisecond)
	}
	got := p.snapshot()
	if len(got) != MaxProxies+1 {
		t.Fatalf("%d proxies listed, want %d", len(got), MaxProxies+1)
	}
	last := got[len(got)-1]
	if last.Proxy != OtherProxy || last.Commands["ping"].Count != 10 || last.Errors != 5 {
		t.Errorf("last entry = %+v, want %s with 10 pings, 5 errors", last, OtherProxy)
	}
	if d := got[0].Commands["ping"].Time; d != time.Millisecond {
		t.Errorf("first proxy's ping time = %v, want 1ms", d)
	}
}
