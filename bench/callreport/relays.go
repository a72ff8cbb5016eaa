package callreport

import (
	"fmt"
	"strings"
)

// RelaysScenario is sipd driving a set of NG relay nodes on other hosts
// (namespaces) instead of relaying itself; it is compared with the same
// kernel path on sipd's own host.
const RelaysScenario = "relays"

// writeRelayNodes lists each relay node of a relays run and sets the
// whole set's cost per call beside the single-host run of the same path
// and level: sipd's own CPU, the relays' processes, and the whole
// machine's per call.
func writeRelayNodes(b *strings.Builder, rs []*Result) {
	t := newTable("Level", "Node", "NG", "Path", "Offers", "Calls (steady)", "Relay packets", "Process CPU (steady)", "CPU / call", "RSS")
	c := newTable("Level", "Layout", "sipd CPU / call (steady)", "Relay processes CPU / call", "System CPU / call", "sipd memory / call")
	for _, lv := range levels(rs) {
		for _, r := range atLevel(rs, lv) {
			if len(r.RelayNodes) == 0 {
				continue
			}
			var relays float64
			for _, n := range r.RelayNodes {
				t.Add(countInt(lv), n.Name, n.NG, n.Path, count(n.Offers), fixed(n.SteadyCalls, 1), count(n.Packets),
					pct(n.CPUSteady, 2), pct(n.CPUPerCallPct, 4), mb(n.RSSMB))
				relays += n.CPUSteady
			}
			row := func(layout string, x *Result, relayCPU string) {
				sipdPer, sys, mem := x.perCallCells()
				c.Add(countInt(lv), layout, sipdPer, relayCPU, sys, mem)
			}
			perRelay := dash
			if r.SteadyCalls > 0 {
				perRelay = pct(relays/r.SteadyCalls, 4)
			}
			addBesideOneHost(rs, r, r.Scenario+" (sipd + "+countInt(len(r.RelayNodes))+" relay hosts, "+r.Path+")", perRelay, "in sipd", row)
		}
	}
	writeNodeSection(b, "Relay set ("+RelaysScenario+")",
		"sipd hands each call's media to a set of `sipd -relay-only` nodes over NG, each in a namespace of its own; "+
			"the relays' process CPU leaves out the kernel hook's packet work, which runs in softirq and shows only in the system figure. "+
			"Calls per node are the steady calls split by the offers sipd gave it.",
		t, "Against one host: the same level with the relay inside sipd on the same kernel path.", c)
}

// perCallCells are a run's sipd CPU, whole-machine CPU and sipd memory
// per steady call, as the multi-node sections set them beside one host.
func (r *Result) perCallCells() (sipd, system, mem string) {
	sipd, system = dash, dash
	if v, ok := r.sipdSteadyPerCall(); ok {
		sipd = pct(v, 4)
	}
	if v, ok := r.systemCPUPerCall(); ok {
		system = pct(v, 4)
	}
	return sipd, system, fixed(r.MemPerCallKB, 1) + " KB"
}

// relayNodesCell puts the relay nodes in one CSV cell,
// "name:offers:cpu_steady:cpu_per_call_pct" each, space separated; the
// JSON lines have every field.
func relayNodesCell(r *Result) string {
	var cells []string
	for _, n := range r.RelayNodes {
		cells = append(cells, fmt.Sprintf("%s:%d:%s:%s", n.Name, n.Offers, fixed(n.CPUSteady, 2), fixed(n.CPUPerCallPct, 4)))
	}
	return strings.Join(cells, " ")
}
