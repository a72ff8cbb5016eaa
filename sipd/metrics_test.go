package sipd

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"sipxdp/mediapath"
	"sipxdp/ng"
	"sipxdp/relay"
	"sipxdp/sipd/sipserver"
)

// metricsAPI serves an API over a SIP server (the default config on free
// loopback ports) and an NG server, after known events: two unparsable
// SIP messages, a REGISTER, two NG pings, a malformed NG body, an unknown
// NG command, and one answered call's setup time. It returns the
// API's base URL.
func metricsAPI(t *testing.T, api *API) string {
	t.Helper()
	cfg, err := LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	sc := cfg.SIP
	sc.StateDir = t.TempDir()
	for i := range sc.Listen {
		sc.Listen[i].Addr = strings.Replace(sc.Listen[i].Addr, ":5060", ":0", 1)
	}
	obs := api.SIPObservers()
	sip, err := sipserver.New(sc, nil, sipserver.Options{Observe: obs})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sip.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	api.SIP = sip

	addr, _ := sip.Addr("udp")
	c, err := net.Dial("udp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 2 {
		c.Write([]byte("INVITE\r\n\r\n"))
	}
	c.Write([]byte("REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP " + c.LocalAddr().String() + ";branch=z9hG4bKmetrics\r\n" +
		"From: <sip:alice@localhost>;tag=1\r\nTo: <sip:alice@localhost>\r\nCall-ID: metrics\r\nCSeq: 1 REGISTER\r\n" +
		"Contact: <sip:alice@" + c.LocalAddr().String() + ">\r\nContent-Length: 0\r\n\r\n"))
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 2048)
	if n, err := c.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "SIP/2.0 ") {
		t.Fatalf("REGISTER answered %q, %v", buf[:n], err)
	}
	obs.CallSetup(200, 1500*time.Millisecond)

	ngs := ng.NewServer(nil, ng.Options{Observe: api.ObserveNG})
	src := netip.MustParseAddrPort("192.0.2.1:5000")
	for _, m := range []string{"p1 d7:command4:pinge", "p2 d7:command4:pinge", "m1 l4:pinge", "x1 d7:command10:frobnicatee"} {
		ngs.Handle([]byte(m), src)
	}
	api.NG = ngs

	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	// The transaction is timed once the response is sent: wait for it.
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if n := testutil.CollectAndCount(api.registry().sipTx); n > 0 && sip.Stats().Malformed == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no REGISTER timed, or the junk not counted")
		}
	}
	return srv.URL
}

func scrape(t *testing.T, base string) []byte {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	return b
}

func parseExposition(t *testing.T, b []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// TestMetricsLint scrapes /metrics with every source populated and lints
// it: client_golang's promlint over the registry and over the scraped
// text, and promtool when it is installed (Debian's prometheus package).
func TestMetricsLint(t *testing.T) {
	api := &API{Started: time.Now(), Version: "test"}
	b := scrape(t, metricsAPI(t, api))

	problems, err := testutil.GatherAndLint(api.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("registry: %s: %s", p.Metric, p.Text)
	}
	problems, err = promlint.New(bytes.NewReader(b)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("scraped: %s: %s", p.Metric, p.Text)
	}
	parseExposition(t, b)
	if path, err := exec.LookPath("promtool"); err == nil {
		cmd := exec.Command(path, "check", "metrics")
		cmd.Stdin = bytes.NewReader(b)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	} else {
		t.Log("promtool not installed: promlint only")
	}
}

// sample finds the sample of family name whose labels are exactly want.
func sample(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (*dto.Metric, bool) {
	mf, ok := mfs[name]
	if !ok {
		return nil, false
	}
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return m, true
		}
	}
	return nil, false
}

func value(mf *dto.MetricFamily, m *dto.Metric) float64 {
	switch mf.GetType() {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_HISTOGRAM:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return -1
}

// TestMetricsFamilies: after the events of metricsAPI, key families have
// their type, labels and values (a histogram's value is its count).
func TestMetricsFamilies(t *testing.T) {
	api := &API{Started: time.Now(), Version: "test"}
	mfs := parseExposition(t, scrape(t, metricsAPI(t, api)))
	const (
		counter   = dto.MetricType_COUNTER
		gauge     = dto.MetricType_GAUGE
		histogram = dto.MetricType_HISTOGRAM
	)
	for _, tc := range []struct {
		name   string
		typ    dto.MetricType
		labels map[string]string
		want   float64 // -1: any value
	}{
		{"sipxdp_build_info", gauge, map[string]string{"version": "test", "goversion": runtimeVersion(), "revision": buildRevision()}, 1},
		{"sipxdp_media_path_info", gauge, map[string]string{"path": "none", "reason": "media.mode is none: signaling only"}, 1},
		{"sipxdp_sip_malformed_total", counter, map[string]string{}, 2},
		{"sipxdp_sip_registrations", gauge, map[string]string{}, -1},
		{"sipxdp_sip_calls_ended_total", counter, map[string]string{"outcome": "failed"}, 0},
		{"sipxdp_sip_transaction_duration_seconds", histogram, map[string]string{"method": "REGISTER"}, 1},
		{"sipxdp_sip_call_setup_seconds", histogram, map[string]string{"outcome": "answered"}, 1},
		{"sipxdp_sip_refused_total", counter, map[string]string{"reason": "route_token_invalid"}, 0},
		{"sipxdp_sip_setup_unauthenticated_pairs_max", gauge, map[string]string{}, -1},
		{"sipxdp_journal_records_total", counter, map[string]string{"journal": "location"}, -1},
		{"sipxdp_journal_size_bytes", gauge, map[string]string{"journal": "location"}, -1},
		{"sipxdp_ng_commands_total", counter, map[string]string{"command": "ping", "result": "ok"}, 2},
		{"sipxdp_ng_commands_total", counter, map[string]string{"command": "unknown", "result": "error"}, 2},
		{"sipxdp_ng_commands_total", counter, map[string]string{"command": "offer", "result": "ok"}, 0},
		{"sipxdp_ng_malformed_total", counter, map[string]string{}, 1},
		{"sipxdp_ng_reply_cache_entries", gauge, map[string]string{}, 4},
		{"sipxdp_ng_command_duration_seconds", histogram, map[string]string{"command": "ping"}, 2},
		{"sipxdp_ng_refused_total", counter, map[string]string{"reason": "source"}, 0},
		{"sipxdp_media_packets_total", counter, map[string]string{"path": "kernel"}, 0},
		{"sipxdp_media_flows", gauge, map[string]string{"path": "userspace"}, 0},
		{"sipxdp_http_refused_total", counter, map[string]string{"reason": "token"}, 0},
		{"process_cpu_seconds_total", counter, map[string]string{}, -1},
		{"go_goroutines", gauge, map[string]string{}, -1},
	} {
		t.Run(tc.name+fmt.Sprint(tc.labels), func(t *testing.T) {
			mf, ok := mfs[tc.name]
			if !ok {
				t.Fatalf("no family %s", tc.name)
			}
			if mf.GetType() != tc.typ {
				t.Errorf("type %v, want %v", mf.GetType(), tc.typ)
			}
			m, ok := sample(mfs, tc.name, tc.labels)
			if !ok {
				t.Fatalf("no sample with labels %v among %v", tc.labels, mf.GetMetric())
			}
			if v := value(mf, m); tc.want >= 0 && v != tc.want {
				t.Errorf("value %v, want %v", v, tc.want)
			}
		})
	}
	// The old hand-written families are gone.
	for _, old := range []string{"sipxdp_up", "sipxdp_ng_total", "sipxdp_uptime_seconds", "sipxdp_sip_calls_completed_total"} {
		if _, ok := mfs[old]; ok {
			t.Errorf("%s still exported", old)
		}
	}
}

func runtimeVersion() string { _, v, _ := buildInfo(""); return v }
func buildRevision() string  { _, _, r := buildInfo(""); return r }

// TestMetricsLabelEscaping: label values reach a scraper intact whatever
// they hold. The hand-written exposition quoted them with Go's %q, whose
// \t, \x01 and \u escapes the text format does not have.
func TestMetricsLabelEscaping(t *testing.T) {
	for _, v := range []string{
		`plain`,
		`say "hi"`,
		`back\slash`,
		"new\nline",
		"tab\there",
		"ctl\x01char",
		"ünïcødé ☎",
		"bad utf8 \xff", // made valid: U+FFFD
	} {
		t.Run(fmt.Sprintf("%q", v), func(t *testing.T) {
			srv := httptest.NewServer((&API{Started: time.Now(), Version: v}).Handler())
			defer srv.Close()
			mfs := parseExposition(t, scrape(t, srv.URL))
			want := strings.ToValidUTF8(v, "\uFFFD")
			if _, ok := sample(mfs, "sipxdp_build_info", map[string]string{"version": want, "goversion": runtimeVersion(), "revision": buildRevision()}); !ok {
				t.Errorf("version %q not read back: %v", want, mfs["sipxdp_build_info"])
			}
		})
	}
}

// collectFunc is a collector over one emit func, to test the families a
// set of stats turns into.
type collectFunc func(emit)

func (f collectFunc) Describe(ch chan<- *prometheus.Desc) { statsCollector{}.Describe(ch) }
func (f collectFunc) Collect(ch chan<- prometheus.Metric) { f(emit(ch)) }

// mediaTotals are a relay's with both paths' counters.
var mediaTotals = relay.Totals{
	// One interface name with an address per family: one series, summed.
	Pools: []relay.PoolInfo{{Name: "public", FreePairs: 90, TotalPairs: 100}, {Name: "public", FreePairs: 45, TotalPairs: 50},
		{Name: "private", FreePairs: 20, TotalPairs: 20}},
	KernelFlows: 3, UserspaceFlows: 1, KernelPackets: 100, UserspacePackets: 7, UserspaceSockets: 4, WindowLocks: 2,
	KernelCounters: map[string]uint64{"tx": 60, "redirect": 40, "local": 1, "pass": 9, "aborted": 0, "no_flow": 5, "learning": 4},
	UserspaceCounters: map[string]uint64{"received": 20, "forwarded": 7, "no_flow": 3, "wrong_source": 6, "foreign_learning": 2,
		"dropped": 11, "sockets": 4, "locked": 1, "epoll_wakeups": 5, "recvmmsg_calls": 8, "sendmmsg_calls": 9},
}

// TestMediaFamilies: the relay's counter maps split into families of one
// meaning each: kernel verdicts apart from pass reasons, userspace drops
// without their total, sockets as a gauge.
func TestMediaFamilies(t *testing.T) {
	c := collectFunc(func(e emit) { e.media(mediaTotals) })
	// The help texts as exported: the samples are what is compared.
	mfs, err := gatherer(c).Gather()
	if err != nil {
		t.Fatal(err)
	}
	help := map[string]string{}
	for _, mf := range mfs {
		help[mf.GetName()] = mf.GetHelp()
	}
	for _, tc := range []struct {
		name, typ, samples string
	}{
		{"sipxdp_kernel_packets_total", "counter", `
sipxdp_kernel_packets_total{verdict="aborted"} 0
sipxdp_kernel_packets_total{verdict="local"} 1
sipxdp_kernel_packets_total{verdict="pass"} 9
sipxdp_kernel_packets_total{verdict="redirect"} 40
sipxdp_kernel_packets_total{verdict="tx"} 60
`},
		{"sipxdp_kernel_passed_packets_total", "counter", `
sipxdp_kernel_passed_packets_total{reason="learning"} 4
sipxdp_kernel_passed_packets_total{reason="no_flow"} 5
`},
		{"sipxdp_userspace_dropped_packets_total", "counter", `
sipxdp_userspace_dropped_packets_total{reason="foreign_learning"} 2
sipxdp_userspace_dropped_packets_total{reason="no_flow"} 3
sipxdp_userspace_dropped_packets_total{reason="wrong_source"} 6
`},
		{"sipxdp_userspace_sockets", "gauge", `
sipxdp_userspace_sockets 4
`},
		{"sipxdp_userspace_syscalls_total", "counter", `
sipxdp_userspace_syscalls_total{syscall="recvmmsg"} 8
sipxdp_userspace_syscalls_total{syscall="sendmmsg"} 9
`},
		{"sipxdp_media_flows", "gauge", `
sipxdp_media_flows{path="kernel"} 3
sipxdp_media_flows{path="userspace"} 1
`},
		{"sipxdp_media_port_pairs", "gauge", `
sipxdp_media_port_pairs{pool="private"} 0
sipxdp_media_port_pairs{pool="public"} 15
`},
		{"sipxdp_media_port_pairs_max", "gauge", `
sipxdp_media_port_pairs_max{pool="private"} 20
sipxdp_media_port_pairs_max{pool="public"} 150
`},
		{"sipxdp_media_latch_total", "counter", `
sipxdp_media_latch_total{event="candidate"} 0
sipxdp_media_latch_total{event="latched"} 0
sipxdp_media_latch_total{event="locked"} 3
sipxdp_media_latch_total{event="relatched"} 0
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := fmt.Sprintf("# HELP %s %s\n# TYPE %s %s%s", tc.name, help[tc.name], tc.name, tc.typ, tc.samples)
			if err := testutil.CollectAndCompare(c, strings.NewReader(want), tc.name); err != nil {
				t.Error(err)
			}
		})
	}
	// No family carries a sample named like a total of its siblings.
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == "dropped" || l.GetValue() == "sockets" {
					t.Errorf("%s has a sample labelled %s", mf.GetName(), l.GetValue())
				}
			}
		}
	}
}

// TestUserspaceCountersClassified: every counter the userspace relay
// reports has a family, or is left out on purpose; a counter added to
// the userspace relay (usrelay) without a place here fails.
func TestUserspaceCountersClassified(t *testing.T) {
	names := mediapath.UserspaceCounterNames()
	if len(names) < 10 {
		t.Fatalf("userspace counters %v: too few to be the relay's", names)
	}
	for _, k := range names {
		_, mapped := userspaceCounter[k]
		if mapped == userspaceLeftOut[k] {
			t.Errorf("userspace counter %q: mapped %v, left out %v; want exactly one", k, mapped, userspaceLeftOut[k])
		}
	}
}

// TestStatsCollectorDescribed: the stats collector describes every family
// it exports, so the registry checks them (an undescribed collector
// would be taken as unchecked).
func TestStatsCollectorDescribed(t *testing.T) {
	api := &API{Started: time.Now(), Version: "test"}
	metricsAPI(t, api)
	described := map[*prometheus.Desc]bool{}
	dch := make(chan *prometheus.Desc, 1000)
	statsCollector{api}.Describe(dch)
	close(dch)
	for d := range dch {
		described[d] = true
	}
	n := 0
	for _, c := range []prometheus.Collector{statsCollector{api}, collectFunc(func(e emit) { e.media(mediaTotals) })} {
		mch := make(chan prometheus.Metric, 1000)
		c.Collect(mch)
		close(mch)
		for m := range mch {
			n++
			if !described[m.Desc()] {
				t.Errorf("%s collected, not described", m.Desc())
			}
		}
	}
	if n < 50 {
		t.Errorf("%d metrics collected: the sources were not all read", n)
	}
}
