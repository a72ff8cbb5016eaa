package callreport

import (
	"strings"
	"testing"
)

// A proxies run is listed node by node, with Redis, and set beside the
// tc run of its level (one sipd on one host); its nodes fit one CSV cell.
func TestWriteProxyNodes(t *testing.T) {
	rs := []Result{fixture("tc", 500, 50), fixture(ProxiesScenario, 500, 60)}
	rs[0].SipdCPUSteady = 20 // 0.04 % per call over 500
	rs[1].Datapath, rs[1].Path, rs[1].SipdCPUSteady = "tc", "tc", 30
	rs[1].RedisCPUSteady, rs[1].RedisUsedMB = fptr(5), 2.5
	rs[1].ProxyNodes = []ProxyNode{
		{Name: "sipd0", SIP: "udp:198.18.5.2:5060", Path: "tc", Completed: 250, Packets: 1000, SteadyCalls: 250, CPUSteady: 10, CPUPerCallPct: 0.04, RSSMB: 30},
		{Name: "sipd1", SIP: "udp:198.18.6.2:5060", Path: "tc", Completed: 250, Packets: 1000, SteadyCalls: 250, CPUSteady: 20, CPUPerCallPct: 0.08, RSSMB: 31},
	}
	Derive(rs)
	md := renderMarkdown(t, rs)
	checkMarkdown(t, md, []mdWant{
		{"section", "### Proxies sharing Redis (proxies)"},
		{"node", "| 500 | sipd1 | udp:198.18.6.2:5060 | tc | 250.0 | 250 | 1,000 | 20.00% | 0.0800% | 31.0 MB |"},
		{"set", "| 500 | proxies (2 sipd + Redis, tc) | 500.0 | 500 / 500 | 0.000% | 4.40 ms / 12.50 ms | 0.0600% | 0.0100% | 0.1200% | 10.0 KB |"},
		{"one host", "| 500 | tc (one host) | 500.0 | 500 / 500 | 0.000% | 4.40 ms / 12.50 ms | 0.0400% | no Redis | 0.1000% | 10.0 KB |"},
		{"redis", "- proxies at 500: 5.00% of a core in the steady window, 2.5 MB used"},
	})
	if got, want := proxyNodesCell(&rs[1]), "sipd0:250.0:10.00:0.0400 sipd1:250.0:20.00:0.0800"; got != want {
		t.Errorf("CSV cell %q, want %q", got, want)
	}
	if plain := renderMarkdown(t, rs[:1]); strings.Contains(plain, "Proxies sharing Redis") {
		t.Error("a report without proxies has a proxies section")
	}
}
