package callreport

import (
	"strings"
	"testing"
)

// A relays run is listed node by node and set beside the tc run of its
// level (sipd relaying itself), and its nodes fit one CSV cell.
func TestWriteRelayNodes(t *testing.T) {
	rs := []Result{fixture(NoneScenario, 500, 40), fixture("tc", 500, 50), fixture(RelaysScenario, 500, 55)}
	rs[1].SipdCPUSteady = 20 // 0.04 % per call over 500
	rs[2].Datapath, rs[2].Path, rs[2].SipdCPUSteady = "tc", "tc", 5
	rs[2].RelayNodes = []RelayNode{
		{Name: "relay0", NG: "udp:10.250.4.2:2223", Path: "tc", Offers: 250, Packets: 1000, SteadyCalls: 250, CPUSteady: 2.5, CPUPerCallPct: 0.01, RSSMB: 20},
		{Name: "relay1", NG: "udp:10.250.5.2:2223", Path: "tc", Offers: 250, Packets: 1000, SteadyCalls: 250, CPUSteady: 5, CPUPerCallPct: 0.02, RSSMB: 21},
	}
	Derive(rs)
	md := renderMarkdown(t, rs)
	checkMarkdown(t, md, []mdWant{
		{"section", "### Relay set (relays)"},
		{"node", "| 500 | relay1 | udp:10.250.5.2:2223 | tc | 250 | 250.0 | 1,000 | 5.00% | 0.0200% | 21.0 MB |"},
		{"set", "| 500 | relays (sipd + 2 relay hosts, tc) | 0.0100% | 0.0150% | 0.1100% | 10.0 KB |"},
		{"one host", "| 500 | tc (one host) | 0.0400% | in sipd | 0.1000% | 10.0 KB |"},
	})
	if got, want := relayNodesCell(&rs[2]), "relay0:250:2.50:0.0100 relay1:250:5.00:0.0200"; got != want {
		t.Errorf("CSV cell %q, want %q", got, want)
	}
	if plain := renderMarkdown(t, rs[:2]); strings.Contains(plain, "Relay set") {
		t.Error("a report without relays has a relay set section")
	}
}
