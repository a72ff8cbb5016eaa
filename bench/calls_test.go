package bench

import (
	"context"
	"encoding/csv"
	"encoding/xml"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"sipxdp/bench/callreport"
	"sipxdp/bench/sipload"
	"sipxdp/internal/netns"
	"sipxdp/internal/testenv"
	"sipxdp/sipd"
	"sipxdp/sipd/sipconf"
)

func TestParseCallsFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    string // scenarios / levels / duration, or the error's text
		wantErr bool
	}{
		{args: nil, want: "none,userspace,srtp,xdp,xdp-native,tc,relays,proxies 500@100 1m0s"},
		{args: []string{"--quick"}, want: "none,userspace,srtp,xdp,xdp-native,tc,relays,proxies 20@20 8s"},
		{args: []string{"--scenario", "relays,tc,none", "--total", "500", "--duration", "40s"}, want: "none,tc,relays 500@100 40s"},
		{args: []string{"--quick", "--scenario", "tc,none"}, want: "none,tc 20@20 8s"},
		{args: []string{"--scenario", "srtp,userspace,xdp,tc,none", "--total", "200,500"}, want: "none,userspace,srtp,xdp,tc 200@100,500@100 1m0s"},
		{args: []string{"--total", "500,800", "--cps", "100,200"}, want: "none,userspace,srtp,xdp,xdp-native,tc,relays,proxies 500@100,800@200 1m0s"},
		{args: []string{"--total", "500,800", "--cps", "50"}, want: "none,userspace,srtp,xdp,xdp-native,tc,relays,proxies 500@50,800@50 1m0s"},
		{args: []string{"--scenario", "kernel"}, want: "unknown scenario", wantErr: true},
		{args: []string{"--total", "500,800", "--cps", "1,2,3"}, want: "3 values for 2 totals", wantErr: true},
		{args: []string{"--total", "0"}, want: "positive whole numbers", wantErr: true},
		{args: []string{"--total", "500", "--cps", "100", "--duration", "6s"}, want: "too short", wantErr: true},
		{args: []string{"--total", "20000", "--cps", "2000"}, want: "relay ports", wantErr: true},
		{args: []string{"--uas-count", "0"}, want: "--uas-count", wantErr: true},
	} {
		o, err := parseCallsFlags(tc.args)
		if tc.wantErr {
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v: error %v, want one containing %q", tc.args, err, tc.want)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		var names, levels []string
		for _, s := range o.Scenarios {
			names = append(names, s.Name)
		}
		for _, l := range o.Levels {
			levels = append(levels, fmt.Sprintf("%d@%g", l.Total, l.CPS))
		}
		got := strings.Join(names, ",") + " " + strings.Join(levels, ",") + " " + o.Duration.String()
		if got != tc.want {
			t.Errorf("%v: got %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestSteadyWindow(t *testing.T) {
	from, to, err := steadyWindow(callLevel{Total: 800, CPS: 200}, 60*time.Second)
	if err != nil || from != 6*time.Second || to != 59*time.Second {
		t.Fatalf("800 at 200/s held 60 s: window %v..%v, %v; want 6s..59s", from, to, err)
	}
	if _, _, err := steadyWindow(callLevel{Total: 500, CPS: 100}, 9*time.Second); err == nil {
		t.Fatal("a hold shorter than the ramp gave a window")
	}
}

// A relay node's config and sipd's over the relay set validate, sipd's
// as a proxy and the node's in relay-only mode, with NG where sipd's
// media.relays points.
func TestRelayConfigs(t *testing.T) {
	o := &CallsOptions{Out: "/tmp/x", PortMin: 20000, PortMax: 39999}
	sc, _ := scenarioByName(callreport.RelaysScenario)
	n := &relayNode{name: "relay0", ng: netip.MustParseAddrPort("10.250.4.2:2223"), pin: "/sys/fs/bpf/x-relay0"}
	cfg, err := relayNodeConfig(o, sc, n)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RelayOnly = true // the -relay-only flag, which Validate reads
	if err := cfg.Validate(); err != nil {
		t.Fatalf("relay node config does not validate: %v", err)
	}
	if cfg.NG.Listen != "10.250.4.2:2223" || cfg.Media.Datapath != "tc" || cfg.Media.Addresses[0].Local != "10.250.4.2" ||
		cfg.StateDir != "/tmp/x/state-relay0" || !reflect.DeepEqual(cfg.NG.Allow, []string{"10.250.0.0/16"}) {
		t.Errorf("relay node config: ng %s allow %v, datapath %s, address %+v, state %s",
			cfg.NG.Listen, cfg.NG.Allow, cfg.Media.Datapath, cfg.Media.Addresses, cfg.StateDir)
	}
	r := &callRun{relays: []*relayNode{n, {name: "relay1", ng: netip.MustParseAddrPort("10.250.5.2:2223")}}}
	line := &netns.Topo{V4: netns.AddrsIn(callsNet.Net4)}
	proxy, err := sipdConfig(sipdSetup{Dir: "/tmp/x", Mode: "all", Datapath: "userspace", PinPath: "/sys/fs/bpf/x", Line: line, PortMin: 20000, PortMax: 39999,
		Relays: r.relaySet()})
	if err != nil {
		t.Fatal(err)
	}
	if err := proxy.Validate(); err != nil {
		t.Fatalf("sipd's config over the relay set does not validate: %v", err)
	}
	if want := "udp:10.250.4.2:2223=1 udp:10.250.5.2:2223=1"; proxy.Media.Relays != want {
		t.Errorf("media.relays %q, want %q", proxy.Media.Relays, want)
	}
}

// The generated config must come from sipd's real default, set every
// field the topology depends on, and validate.
func TestSipdConfigFromDefault(t *testing.T) {
	line := &netns.Topo{V4: netns.AddrsIn(callsNet.Net4)}
	cfg, err := sipdConfig(sipdSetup{Dir: "/tmp/x", Mode: "all", Datapath: "tc", PinPath: "/sys/fs/bpf/x",
		Line: line, PortMin: 20000, PortMax: 39999, Exempt: []string{callsNet.Net4.String()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("generated config does not validate: %v", err)
	}
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"datapath", cfg.Media.Datapath, "tc"},
		{"interfaces", cfg.Media.Interfaces, []string{"ra", "rb"}},
		{"pin path", cfg.Media.PinPath, "/sys/fs/bpf/x"},
		{"addresses", cfg.Media.Addresses, []sipd.AddressConfig{{Name: "callers", Local: "10.250.1.1", PortMin: 20000, PortMax: 39999},
			{Name: "callees", Local: "10.250.2.1", PortMin: 20000, PortMax: 39999}}},
		{"listeners", cfg.SIP.Listen, []sipconf.Listen{{Transport: "udp", Addr: "10.250.1.1:5060"}, {Transport: "udp", Addr: "10.250.2.1:5060"}}},
		{"domains", cfg.SIP.Domains, []string{benchDomain, "10.250.1.1", "10.250.2.1"}},
		{"exempt", cfg.SIP.Protect.Exempt, []string{"127.0.0.0/8", "::1/128", "10.250.0.0/16"}},
		{"state dir", cfg.StateDir, "/tmp/x/state"},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
		}
	}
}

// TestCallsQuick runs "bench calls --quick" for every scenario: the CI
// check that each media path carries calls end to end and that the
// report has its parts. It asserts completion and RTP, not performance.
func TestCallsQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("short: runs sipd and load in namespaces for about a minute")
	}
	o, rs := runCallsQuick(t, "all", "TestCallsQuick", 5*time.Minute)
	if len(rs) != len(callScenarios) {
		t.Fatalf("%d results for %d scenarios", len(rs), len(callScenarios))
	}
	for _, r := range rs {
		if r.Completed != 20 || r.Failed != 0 {
			t.Errorf("%s: %d of 20 calls completed, %d failed (codes %v)", r.Scenario, r.Completed, r.Failed, r.StatusCodes)
		}
		if r.StatusCodes["200"] != 20 || len(r.StatusCodes) != 1 {
			t.Errorf("%s: call outcomes %v, want 200 for all 20", r.Scenario, r.StatusCodes)
		}
		if r.UACRX == 0 || r.UACRX*10 < r.UACTX*9 {
			t.Errorf("%s: the callers got %d of %d RTP packets back", r.Scenario, r.UACRX, r.UACTX)
		}
		if r.RTCPRX == 0 {
			t.Errorf("%s: no RTCP received", r.Scenario)
		}
		sc, _ := scenarioByName(r.Scenario)
		switch {
		case sc.SRTP && (r.DTLSHandshakes != 20 || r.DTLSFailed != 0 || r.DTLSMedianMs <= 0 || r.DTLSPerSec <= 0):
			t.Errorf("%s: DTLS handshakes %d done, %d failed %v, median %.2f ms, %.1f/s; want 20 done and timed",
				r.Scenario, r.DTLSHandshakes, r.DTLSFailed, r.DTLSErrors, r.DTLSMedianMs, r.DTLSPerSec)
		case !sc.SRTP && (r.DTLSHandshakes != 0 || r.DTLSFailed != 0):
			t.Errorf("%s: plain callers reported DTLS handshakes", r.Scenario)
		}
		if r.CallsPeak == 0 || r.RSSPeakMB == 0 || r.SteadyS == 0 {
			t.Errorf("%s: sampling missing: peak calls %d, rss %.1f MB, steady %.1f s", r.Scenario, r.CallsPeak, r.RSSPeakMB, r.SteadyS)
		}
		switch r.Scenario {
		case "none":
			if r.RelayPkts != 0 {
				t.Errorf("none: the relay counted %d packets; media should bypass it", r.RelayPkts)
			}
		default:
			if r.RelayPkts == 0 {
				t.Errorf("%s: the relay counted no packets", r.Scenario)
			}
			if r.RelayCPU == nil {
				t.Errorf("%s: no relay cost against none", r.Scenario)
			}
			if r.Path != sc.Path {
				t.Errorf("%s: path %q", r.Scenario, r.Path)
			}
			if sc.Path != "userspace" && r.BPFNsPerPkt == nil {
				t.Errorf("%s: no BPF ns/packet", r.Scenario)
			}
		}
	}
	checkCallOutputs(t, o.Out, len(rs))
}

// runCallsQuick runs "bench calls --quick" for scenarios as test name
// does, within limit; on failure it logs the tail of every sipd's and
// relay's log.
func runCallsQuick(t *testing.T, scenarios, name string, limit time.Duration) (CallsOptions, []callreport.Result) {
	t.Helper()
	testenv.RequireRoot(t)
	for _, tool := range []string{"ip", "nsenter", "ethtool"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Unavailable(t, tool+" is not installed")
		}
	}
	o, err := parseCallsFlags([]string{"--quick", "--scenario", scenarios})
	if err != nil {
		t.Fatal(err)
	}
	o.Out = t.TempDir()
	o.Command = "go test -run " + name + " ./bench/"
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	rs, err := RunCalls(ctx, &o)
	if err != nil {
		logs, _ := filepath.Glob(filepath.Join(o.Out, "*.log"))
		for _, l := range logs {
			if b, rerr := os.ReadFile(l); rerr == nil && len(b) > 0 {
				t.Logf("%s:\n%s", filepath.Base(l), tailString(string(b), 3000))
			}
		}
		t.Fatal(err)
	}
	return o, rs
}

// checkCallOutputs reads each output file back.
func checkCallOutputs(t *testing.T, dir string, n int) {
	t.Helper()
	back, err := callreport.ReadJSONL(filepath.Join(dir, "results.jsonl"))
	if err != nil || len(back) != n {
		t.Errorf("results.jsonl: %d rows, %v; want %d", len(back), err, n)
	}
	f, err := os.Open(filepath.Join(dir, "results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil || len(rows) != n+1 {
		t.Errorf("results.csv: %d rows, %v; want a header and %d", len(rows), err, n)
	}
	md, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"20 concurrent", "Per-channel overhead", "Targets", "| none", "userspace", "xdp-native", "tc",
		"srtp", "Bridged calls (srtp)", "DTLS handshakes/s"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	svg, err := os.ReadFile(filepath.Join(dir, "cpu-per-channel.svg"))
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(svg, new(struct{})); err != nil {
		t.Errorf("cpu-per-channel.svg is not XML: %v", err)
	}
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// The callers' handshake figures reach the result in milliseconds, with
// notes for failures and drops; plain callers leave them empty.
func TestFillCallsHandshakes(t *testing.T) {
	res := callreport.Result{Scenario: "srtp", Level: 20, DurationS: 10}
	fillCalls(&res, sipload.Result{Completed: 19, Failed: 1, DTLS: &sipload.DTLSStats{Completed: 19, Failed: 1,
		Median: 3456 * time.Microsecond, P99: 12 * time.Millisecond, Max: 40 * time.Millisecond, PerSec: 9.876, PeakPerSec: 11,
		Errors: map[string]int{"timeout": 1}, FirstError: "dtls handshake timed out", DecryptFailures: 3}}, sipload.UASResult{})
	if res.DTLSHandshakes != 19 || res.DTLSFailed != 1 || res.DTLSMedianMs != 3.456 || res.DTLSP99Ms != 12 ||
		res.DTLSMaxMs != 40 || res.DTLSPerSec != 9.88 || res.DTLSPeakPerSec != 11 || res.DTLSErrors["timeout"] != 1 {
		t.Errorf("handshake figures %+v", res)
	}
	notes := strings.Join(res.Notes, "\n")
	for _, want := range []string{"srtp at 20: 1 DTLS handshakes failed; the first: dtls handshake timed out", "dropped 3 SRTP/SRTCP packets"} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes %q lack %q", notes, want)
		}
	}
	plain := callreport.Result{Scenario: "userspace", Level: 20, DurationS: 10}
	fillCalls(&plain, sipload.Result{Completed: 20}, sipload.UASResult{})
	if plain.DTLSHandshakes != 0 || plain.DTLSErrors != nil || len(plain.Notes) != 0 {
		t.Errorf("plain callers: %+v", plain)
	}
}

// TestCallsRelaysQuick runs scenario relays tiny beside none and tc (the
// single-host figures it is compared with): sipd drives two sipd
// -relay-only nodes in namespaces of their own. It checks every call
// completed with RTP through the relays, both took calls, and the
// report has each node and the comparison with one host.
func TestCallsRelaysQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("short: runs sipd, two relays and load in namespaces for about 40 s")
	}
	o, rs := runCallsQuick(t, "none,tc,relays", "TestCallsRelaysQuick", 4*time.Minute)
	r := quickScenario(t, rs, callreport.RelaysScenario)
	if r.Path != "tc" || r.RelayPkts == 0 || r.RelayCPU == nil || r.SteadyS == 0 {
		t.Errorf("path %q, relay packets %d, relay cost %v, steady %.1f s", r.Path, r.RelayPkts, r.RelayCPU, r.SteadyS)
	}
	quickNodes(t, "relay node", r.RelayNodes, func(n callreport.RelayNode) (uint64, bool) {
		return n.Offers, n.Offers > 0 && n.Packets > 0 && n.Path == "tc" && n.SteadyCalls > 0 && n.RSSMB > 0
	})
	reportHas(t, o.Out, "### Relay set (relays)", "| relay0 |", "| relay1 |", "tc (one host)", "Relay processes CPU / call")
}

// A proxy node's config validates and puts the node on its own address,
// with both stores in the shared Redis and the shared secrets.
func TestProxyNodeConfig(t *testing.T) {
	o := &CallsOptions{Out: "/tmp/x", PortMin: 20000, PortMax: 39999}
	sc, _ := scenarioByName(callreport.ProxiesScenario)
	n := &proxyNode{name: "sipd1", sip: netip.MustParseAddrPort("198.18.6.2:5060"), pin: "/sys/fs/bpf/x-p1"}
	line := &netns.Topo{V4: netns.AddrsIn(proxiesNet.Net4)}
	cfg, err := proxyNodeConfig(o, sc, line, n, "redis://198.18.4.2:6379/0")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("proxy node config does not validate: %v", err)
	}
	if cfg.SIP.Registrar.Store != "redis://198.18.4.2:6379/0" || cfg.SIP.Dialog.Store != cfg.SIP.Registrar.Store ||
		cfg.SIP.Secret != proxiesSecret || cfg.SIP.Auth.Secret != proxiesSecret || cfg.Media.Datapath != "tc" ||
		len(cfg.Media.Addresses) != 1 || cfg.Media.Addresses[0].Local != "198.18.6.2" ||
		len(cfg.SIP.Listen) != 1 || cfg.SIP.Listen[0].Addr != "198.18.6.2:5060" || cfg.StateDir != "/tmp/x/state-sipd1" ||
		!slices.Contains(cfg.SIP.Domains, benchDomain) || !reflect.DeepEqual(cfg.Media.Interfaces, []string{"h0"}) ||
		!slices.Contains(cfg.SIP.Protect.Exempt, "198.18.0.0/16") {
		t.Errorf("proxy node config: stores %s %s, datapath %s, addresses %+v, listen %+v, state %s, domains %v, interfaces %v",
			cfg.SIP.Registrar.Store, cfg.SIP.Dialog.Store, cfg.Media.Datapath, cfg.Media.Addresses, cfg.SIP.Listen,
			cfg.StateDir, cfg.SIP.Domains, cfg.Media.Interfaces)
	}
}

// TestCallsProxiesQuick runs scenario proxies tiny beside tc (the
// single-host figures it is compared with): two sipd in namespaces of
// their own share the callees' registrations and the calls in one
// redis-server, and the callers alternate between them. It checks every
// call completed with RTP both ways, both nodes carried calls, Redis was
// measured, and the report has each node and the comparison with one
// host.
func TestCallsProxiesQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("short: runs two sipd, redis-server and load in namespaces for about 30 s")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		testenv.Unavailable(t, "redis-server is not installed (scripts/install-deps.sh installs it)")
	}
	o, rs := runCallsQuick(t, "tc,proxies", "TestCallsProxiesQuick", 3*time.Minute)
	r := quickScenario(t, rs, callreport.ProxiesScenario)
	if r.Path != "tc" || r.RelayPkts == 0 || r.SteadyS == 0 || r.SteadyCalls <= 0 || r.SipdCPUSteady <= 0 ||
		r.RedisCPUSteady == nil || r.RedisUsedMB <= 0 || r.SetupAvgMs <= 0 {
		t.Errorf("path %q, relay packets %d, steady %.1f s with %.1f calls, sipd CPU %.2f%%, redis CPU %v, redis %.2f MB, setup %.2f ms",
			r.Path, r.RelayPkts, r.SteadyS, r.SteadyCalls, r.SipdCPUSteady, r.RedisCPUSteady, r.RedisUsedMB, r.SetupAvgMs)
	}
	quickNodes(t, "proxy node", r.ProxyNodes, func(n callreport.ProxyNode) (uint64, bool) {
		return n.Completed, n.Completed > 0 && n.Packets > 0 && n.Path == "tc" && n.SteadyCalls > 0 && n.RSSMB > 0
	})
	reportHas(t, o.Out, "### Proxies sharing Redis (proxies)", "| sipd0 |", "| sipd1 |", "tc (one host)", "Redis CPU / call")

	back, err := callreport.ReadJSONL(filepath.Join(o.Out, "results.jsonl"))
	if err != nil || len(back) != len(rs) || len(back[len(back)-1].ProxyNodes) != 2 || back[len(back)-1].RedisCPUSteady == nil {
		t.Errorf("results.jsonl: %d rows, %v; want %d, the last with two proxy nodes and Redis CPU", len(back), err, len(rs))
	}
	if csv, err := os.ReadFile(filepath.Join(o.Out, "results.csv")); err != nil || !strings.Contains(string(csv), "sipd1:") {
		t.Errorf("results.csv lacks the proxy nodes' cell (%v)", err)
	}
}

// quickScenario is the result of scenario name among a quick run's,
// which must have completed its 20 calls with RTP both ways.
func quickScenario(t *testing.T, rs []callreport.Result, name string) callreport.Result {
	t.Helper()
	i := slices.IndexFunc(rs, func(r callreport.Result) bool { return r.Scenario == name })
	if i < 0 {
		t.Fatalf("no %s result among %d", name, len(rs))
	}
	r := rs[i]
	if r.Completed != 20 || r.Failed != 0 || r.StatusCodes["200"] != 20 {
		t.Errorf("%s: %d of 20 calls completed, %d failed (codes %v)", name, r.Completed, r.Failed, r.StatusCodes)
	}
	if r.UACRX == 0 || r.UACRX*10 < r.UACTX*9 {
		t.Errorf("%s: the callers got %d of %d RTP packets back", name, r.UACRX, r.UACTX)
	}
	return r
}

// reportHas fails the test unless dir's report.md has each of wants.
func reportHas(t *testing.T, dir string, wants ...string) {
	t.Helper()
	md, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range wants {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
}

// quickNodes checks a quick run's two nodes: each must have had calls,
// relayed packets on path tc and have memory (ok), and the calls each
// took (offers, or calls completed) must add up to the run's 20.
func quickNodes[N any](t *testing.T, what string, nodes []N, check func(N) (calls uint64, ok bool)) {
	t.Helper()
	if len(nodes) != 2 {
		t.Fatalf("%d of %s, want 2: %+v", len(nodes), what, nodes)
	}
	var sum uint64
	for _, n := range nodes {
		calls, ok := check(n)
		if !ok {
			t.Errorf("%s %+v: want calls, packets, path tc, steady calls and memory", what, n)
		}
		sum += calls
	}
	if sum != 20 {
		t.Errorf("the %ss took %d calls of 20", what, sum)
	}
}
