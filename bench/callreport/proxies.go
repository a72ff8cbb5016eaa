package callreport

import (
	"fmt"
	"strings"
)

// ProxiesScenario is several sipd sharing the users and the calls in one
// Redis, each relaying the calls placed through it; it is compared with
// one sipd on one host on the same kernel path.
const ProxiesScenario = "proxies"

// writeProxyNodes lists each sipd of a proxies run and sets the run
// beside the single-host run of the same path and level: calls held,
// completion, loss, setup latency, and CPU per call of the nodes, Redis
// and the whole machine.
func writeProxyNodes(b *strings.Builder, rs []*Result) {
	t := newTable("Level", "Node", "SIP", "Path", "Calls (steady)", "Completed", "Relay packets", "Process CPU (steady)", "CPU / call", "RSS")
	c := newTable("Level", "Layout", "Calls held (steady)", "Completed", "Loss avg", "Setup avg / p99",
		"sipd CPU / call", "Redis CPU / call", "System CPU / call", "sipd memory / call")
	var redis []string
	for _, lv := range levels(rs) {
		for _, r := range atLevel(rs, lv) {
			if len(r.ProxyNodes) == 0 {
				continue
			}
			for _, n := range r.ProxyNodes {
				t.Add(countInt(lv), n.Name, n.SIP, n.Path, fixed(n.SteadyCalls, 1), count(n.Completed), count(n.Packets),
					pct(n.CPUSteady, 2), pct(n.CPUPerCallPct, 4), mb(n.RSSMB))
			}
			row := func(layout string, x *Result, redis string) {
				sipdPer, sys, mem := x.perCallCells()
				c.Add(countInt(lv), layout, fixed(x.SteadyCalls, 1), countInt(x.Completed)+" / "+countInt(x.Attempted),
					pct(x.LossAvgPct, 3), ms(x.SetupAvgMs)+" / "+ms(x.SetupP99Ms), sipdPer, redis, sys, mem)
			}
			perCall := dash
			if r.RedisCPUSteady != nil && r.SteadyCalls > 0 {
				perCall = pct(*r.RedisCPUSteady/r.SteadyCalls, 4)
			}
			if r.RedisCPUSteady != nil {
				redis = append(redis, fmt.Sprintf("- %s at %s: %s of a core in the steady window, %s used (INFO used_memory) at the end.\n",
					r.Scenario, countInt(lv), pct(*r.RedisCPUSteady, 2), mb(r.RedisUsedMB)))
			}
			addBesideOneHost(rs, r, r.Scenario+" ("+countInt(len(r.ProxyNodes))+" sipd + Redis, "+r.Path+")", perCall, "no Redis", row)
		}
	}
	writeNodeSection(b, "Proxies sharing Redis ("+ProxiesScenario+")",
		"Several sipd, each in a namespace of its own with its own relay, share the location table and the dialogs "+
			"in one redis-server; the callees register through the last node and the callers alternate their calls over all of them, "+
			"so calls placed through another node find the callees in Redis. Each node's process CPU leaves out the kernel hook's "+
			"packet work, which runs in softirq and shows only in the system figure; sipd CPU per call is the nodes' summed.",
		t, "Against one host: the same level and path with one sipd and its state in files.", c)
	if len(redis) > 0 {
		b.WriteString("redis-server:\n\n" + strings.Join(redis, "") + "\n")
	}
}

// proxyNodesCell puts the proxy nodes in one CSV cell,
// "name:steady_calls:cpu_steady:cpu_per_call_pct" each, space separated;
// the JSON lines have every field.
func proxyNodesCell(r *Result) string {
	var cells []string
	for _, n := range r.ProxyNodes {
		cells = append(cells, fmt.Sprintf("%s:%s:%s:%s", n.Name, fixed(n.SteadyCalls, 1), fixed(n.CPUSteady, 2), fixed(n.CPUPerCallPct, 4)))
	}
	return strings.Join(cells, " ")
}
