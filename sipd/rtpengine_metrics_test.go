package sipd

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"sipxdp/ng"
	"sipxdp/relay"
)

// TestRTPEngineMetricsRelayOnly scrapes a relay-only sipd before and
// during a call with RTP both ways (and one oversized datagram): each of
// rtpengine's series is there with rtpengine's type and labels, and its
// value moved with the traffic (or is what the call makes it). Kernel
// series are there at zero: the test relay is the userspace one.
func TestRTPEngineMetricsRelayOnly(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	d, n, _, _, stop := startRelayOnly(t, nil)
	defer stop()
	before := parseExposition(t, scrape(t, d.http))

	alice, bob := newUA(t, "alice", netip.AddrPort{}), newUA(t, "bob", netip.AddrPort{})
	const callID = "rtpe-metrics@test"
	_, bobSends := sdpOf(t, n.do(map[string]any{"command": "offer", "call-id": callID, "from-tag": "a",
		"sdp": alice.sdp(), "ICE": "remove", "replace": []any{"origin", "session-connection"}}))
	_, aliceSends := sdpOf(t, n.do(map[string]any{"command": "answer", "call-id": callID, "from-tag": "a",
		"to-tag": "b", "sdp": bob.sdp()}))
	rtpExchange(t, alice, bob, aliceSends, bobSends, 10)
	// Larger than the userspace relay reads: counted as a packet error,
	// as rtpengine counts a packet of a stream it cannot relay.
	if _, err := alice.rtp.WriteToUDPAddrPort(make([]byte, 3000), aliceSends); err != nil {
		t.Fatal(err)
	}
	// RTP flowed within the last second: both directions are active.
	rtpExchange(t, alice, bob, aliceSends, bobSends, 1)

	var after map[string]*dto.MetricFamily
	addr := fmt.Sprintf(`address="%s"`, aliceSends.Addr())
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		after = parseExposition(t, scrape(t, d.http))
		m, ok := sample(after, "rtpengine_packet_errors_total", map[string]string{"type": "userspace"})
		if ok && m.GetCounter().GetValue() > 0 || time.Now().After(deadline) {
			break
		}
	}
	const ports = 20 // startRelayOnly's range
	const (
		counter = dto.MetricType_COUNTER
		gauge   = dto.MetricType_GAUGE
	)
	moved := -1.0 // want: a value above the one before the call
	for _, tc := range []struct {
		name   string
		labels string
		typ    dto.MetricType
		want   float64
	}{
		{"rtpengine_sessions", `type="own"`, gauge, 1},
		{"rtpengine_sessions", `type="foreign"`, gauge, 0}, // no ng.redis: none followed
		{"rtpengine_mediastreams", `type="userspace"`, gauge, 2},
		{"rtpengine_mediastreams", `type="kernel"`, gauge, 0},
		{"rtpengine_mediastreams", `type="mixed"`, gauge, 0},
		{"rtpengine_packets_total", `type="userspace"`, counter, moved},
		{"rtpengine_packets_total", `type="kernel"`, counter, 0},
		{"rtpengine_bytes_total", `type="userspace"`, counter, moved},
		{"rtpengine_bytes_total", `type="kernel"`, counter, 0},
		{"rtpengine_packet_errors_total", `type="userspace"`, counter, moved},
		{"rtpengine_packet_errors_total", `type="kernel"`, counter, 0},
		{"rtpengine_uptime_seconds", ``, gauge, moved},
		{"rtpengine_ports", `name="default",` + addr, gauge, float64(ports)},
		{"rtpengine_ports_used", `name="default",` + addr, gauge, 4}, // two legs, a pair each
		{"rtpengine_ports_free", `name="default",` + addr, gauge, float64(ports - 4)},
	} {
		t.Run(tc.name+"{"+tc.labels+"}", func(t *testing.T) {
			labels := parseLabels(tc.labels)
			mf, ok := after[tc.name]
			if !ok {
				t.Fatalf("%s not exported", tc.name)
			}
			if mf.GetType() != tc.typ {
				t.Errorf("type %s, want %s", mf.GetType(), tc.typ)
			}
			m, ok := sample(after, tc.name, labels)
			if !ok {
				t.Fatalf("no sample labelled {%s}; have %v", tc.labels, mf.GetMetric())
			}
			got := value(mf, m)
			if tc.want != moved {
				if got != tc.want {
					t.Errorf("= %v, want %v", got, tc.want)
				}
				return
			}
			was := 0.0
			if mb, ok := sample(before, tc.name, labels); ok {
				was = value(before[tc.name], mb)
			}
			if got <= was {
				t.Errorf("= %v during the call, %v before: did not move", got, was)
			}
		})
	}
	if r := n.do(map[string]any{"command": "delete", "call-id": callID}); r["result"] != "ok" {
		t.Errorf("delete: %v", r)
	}
	// The call ended by NG delete: a managed, regularly terminated
	// session (statistics.c: managedsessions, regularterminatedsessions),
	// and the requests are counted under the proxy that sent them.
	ended := parseExposition(t, scrape(t, d.http))
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"rtpengine_sessions_total", nil, 1},
		{"rtpengine_closed_sessions_total", map[string]string{"reason": "terminated"}, 1},
		{"rtpengine_closed_sessions_total", map[string]string{"reason": "timeout"}, 0},
		{"rtpengine_closed_sessions_total", map[string]string{"reason": "rejected"}, 0},
		{"rtpengine_zero_packet_streams_total", nil, 0},
		{"rtpengine_one_way_sessions_total", nil, 0},
		{"rtpengine_requests_total", map[string]string{"proxy": "127.0.0.1", "request": "offer"}, 1},
		{"rtpengine_requests_total", map[string]string{"proxy": "127.0.0.1", "request": "delete"}, 1},
		{"rtpengine_errors_total", map[string]string{"proxy": "127.0.0.1"}, 0},
	} {
		m, ok := sample(ended, tc.name, tc.labels)
		if !ok {
			t.Errorf("%s%v: not exported", tc.name, tc.labels)
			continue
		}
		if got := value(ended[tc.name], m); got != tc.want {
			t.Errorf("%s%v = %v after the delete, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	if m, ok := sample(ended, "rtpengine_call_duration_total", nil); !ok || value(ended["rtpengine_call_duration_total"], m) <= 0 {
		t.Error("rtpengine_call_duration_total not above 0 after a call")
	}
}

// fakeNG is an NG server's counters as the API reads them.
type fakeNG struct {
	proxies  []ng.ProxyStats
	rejected uint64
}

func (f fakeNG) Stats() map[string]uint64    { return nil }
func (f fakeNG) Commands() []ng.CommandStats { return nil }
func (f fakeNG) ProxyStats() []ng.ProxyStats { return f.proxies }
func (f fakeNG) Rejected() uint64            { return f.rejected }

// TestRTPEngineMetricsControlSeries: rtpengine's series of ended sessions
// (statistics.c: sessions_total, closed_sessions_total{reason},
// zero_packet_streams_total, one_way_sessions_total, call_duration_*)
// and of requests by proxy (requests_total{proxy,request},
// request_seconds_total, errors_total{proxy}), the sources past
// ng.MaxProxies under proxy="other"; and they lint.
func TestRTPEngineMetricsControlSeries(t *testing.T) {
	n := fakeNG{rejected: 2, proxies: []ng.ProxyStats{
		{Proxy: "192.0.2.1", Errors: 1, Commands: map[string]ng.ProxyRequests{
			"offer": {Count: 3, Time: 1500 * time.Millisecond}, "unknown": {Count: 9}}},
		{Proxy: ng.OtherProxy, Commands: map[string]ng.ProxyRequests{"ping": {Count: 4}}},
	}}
	ended := ng.EndedStats{Managed: 4, Timeout: 1, OfferTimeout: 1, Regular: 1, Forced: 1, ZeroWay: 2, OneWay: 1,
		Duration: 10 * time.Second, DurationSquaredSeconds: 40}
	c := collectFunc(func(e emit) { e.rtpengineControl(n, func() ng.EndedStats { return ended }) })
	mfs, err := gatherer(c).Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := mfs2map(mfs)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"rtpengine_sessions_total", nil, 4},
		{"rtpengine_closed_sessions_total", map[string]string{"reason": "rejected"}, 2},
		{"rtpengine_closed_sessions_total", map[string]string{"reason": "timeout"}, 1},
		{"rtpengine_closed_sessions_total", map[string]string{"reason": "offer_timeout"}, 1},
		{"rtpengine_closed_sessions_total", map[string]string{"reason": "silent_timeout"}, 0},
		{"rtpengine_closed_sessions_total", map[string]string{"reason": "final_timeout"}, 0},
		{"rtpengine_closed_sessions_total", map[string]string{"reason": "terminated"}, 1},
		{"rtpengine_closed_sessions_total", map[string]string{"reason": "force_terminated"}, 1},
		{"rtpengine_zero_packet_streams_total", nil, 2},
		{"rtpengine_one_way_sessions_total", nil, 1},
		{"rtpengine_call_duration_avg", nil, 2.5},
		{"rtpengine_call_duration_total", nil, 10},
		{"rtpengine_call_duration2_total", nil, 40},
		{"rtpengine_requests_total", map[string]string{"proxy": "192.0.2.1", "request": "offer"}, 3},
		{"rtpengine_requests_total", map[string]string{"proxy": "192.0.2.1", "request": "answer"}, 0},
		{"rtpengine_request_seconds_total", map[string]string{"proxy": "192.0.2.1", "request": "offer"}, 1.5},
		{"rtpengine_errors_total", map[string]string{"proxy": "192.0.2.1"}, 1},
		{"rtpengine_requests_total", map[string]string{"proxy": "other", "request": "ping"}, 4},
		{"rtpengine_errors_total", map[string]string{"proxy": "other"}, 0},
	} {
		m, ok := sample(got, tc.name, tc.labels)
		if !ok {
			t.Errorf("%s%v: not exported", tc.name, tc.labels)
			continue
		}
		if v := value(got[tc.name], m); v != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, v, tc.want)
		}
	}
	if _, ok := sample(got, "rtpengine_requests_total", map[string]string{"proxy": "192.0.2.1", "request": "unknown"}); ok {
		t.Error("requests_total has request=\"unknown\", not a command of rtpengine's")
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// parseLabels reads `a="x",b="y"` (values without commas or quotes).
func parseLabels(s string) map[string]string {
	out := map[string]string{}
	for kv := range strings.SplitSeq(s, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			out[k] = strings.Trim(v, `"`)
		}
	}
	return out
}

// TestRTPEngineMetricsNotInPlainSipd: a sipd that relays its own calls
// is not standing in for rtpengine, and exports none of its series.
func TestRTPEngineMetricsNotInPlainSipd(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	d := startDaemon(t, MediaAll, nil)
	defer d.stop()
	mfs := parseExposition(t, scrape(t, d.http))
	if _, ok := mfs["sipxdp_media_packets_total"]; !ok {
		t.Fatal("no sipxdp_media_packets_total: the relay's series are missing altogether")
	}
	for name := range mfs {
		if strings.HasPrefix(name, "rtpengine_") {
			t.Errorf("plain sipd exports %s", name)
		}
	}
}

// TestRTPEngineFromTotals: the series as computed from a relay's totals,
// including what the live test cannot reach: followed calls as foreign
// sessions, kernel errors, unreadable kernel counters (left out, not
// zero) and an unnamed pool (rtpengine's "default"); and they lint.
func TestRTPEngineFromTotals(t *testing.T) {
	tot := mediaTotals
	tot.Sessions = 5
	tot.Pools = []relay.PoolInfo{{Local: netip.MustParseAddr("2001:db8::6"), FreePairs: 7, TotalPairs: 10}}
	tot.KernelCounters = map[string]uint64{"aborted": 3, "tx": 9}
	tot.UserspaceCounters = map[string]uint64{"send_error": 1, "srtp": 2, "oversize": 4, "wrong_source": 50}
	tot.ActiveRTP = relay.ActiveStreams{Kernel: 6, Userspace: 1, Mixed: 2}
	c := collectFunc(func(e emit) { e.rtpengine(tot, time.Time{}, 2) })
	const want = `
rtpengine_mediastreams{type="kernel"} 6
rtpengine_mediastreams{type="mixed"} 2
rtpengine_mediastreams{type="userspace"} 1
rtpengine_packet_errors_total{type="kernel"} 3
rtpengine_packet_errors_total{type="userspace"} 7
rtpengine_ports{address="2001:db8::6",name="default"} 20
rtpengine_ports_free{address="2001:db8::6",name="default"} 14
rtpengine_ports_used{address="2001:db8::6",name="default"} 6
rtpengine_sessions{type="foreign"} 2
rtpengine_sessions{type="own"} 3
`
	mfs, err := gatherer(c).Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			if strings.Contains(mf.GetName(), "packets_total") || strings.Contains(mf.GetName(), "bytes_total") {
				continue // straight copies of the totals, checked live
			}
			fmt.Fprintf(&got, "%s{%s} %v\n", mf.GetName(), strings.Join(ls, ","), value(mf, m))
		}
	}
	if got.String() != want[1:] {
		t.Errorf("series:\n%s\nwant:\n%s", got.String(), want[1:])
	}
	if _, ok := sample(mfs2map(mfs), "rtpengine_uptime_seconds", nil); ok {
		t.Error("uptime exported without a start time")
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}

	tot.KernelCountersError = "map read: permission denied"
	n := testutil.CollectAndCount(collectFunc(func(e emit) { e.rtpengine(tot, time.Now(), 0) }), "rtpengine_packet_errors_total")
	if n != 1 {
		t.Errorf("%d packet error series with unreadable kernel counters, want 1 (userspace only)", n)
	}
}

func mfs2map(mfs []*dto.MetricFamily) map[string]*dto.MetricFamily {
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}
