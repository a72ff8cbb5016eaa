package callreport

import (
	"fmt"
	"slices"
	"strings"

	"sipxdp/bench/out"
)

// The project's targets, from the design: what a relay may cost per call
// and how much cheaper the kernel path must be than the Go relay.
const (
	XDPRelayTargetPct       = 0.012 // percent of a core per call
	UserspaceRelayTargetPct = 0.06
	KernelSpeedupTarget     = 5.0 // userspace relay cost ÷ xdp relay cost
	MemPerCallTargetKB      = 20.0
)

// xdpScenarios are held to the XDP targets; tc has no target of its own
// and is only reported.
var xdpScenarios = []string{"xdp", "xdp-native"}

func writeTargets(b *strings.Builder, rs []*Result) {
	b.WriteString("## Targets\n\n")
	t := newTable("Target", "Level", "Measured", "Result")
	for _, lv := range levels(rs) {
		at := atLevel(rs, lv)
		lvs := countInt(lv)
		completionTarget(t, lvs, at)
		lossTarget(t, lvs, at)
		for _, s := range xdpScenarios {
			relayTarget(t, lvs, find(at, lv, s), XDPRelayTargetPct)
		}
		relayTarget(t, lvs, find(at, lv, "userspace"), UserspaceRelayTargetPct)
		if us := find(at, lv, "userspace"); us != nil {
			for _, s := range xdpScenarios {
				speedupTarget(t, lvs, us, find(at, lv, s))
			}
		}
		bridgedTargets(t, lvs, find(at, lv, "userspace"), find(at, lv, SRTPScenario))
		memTarget(t, lvs, at)
	}
	writeTable(b, t)
}

func completionTarget(t *out.Table, lv string, rs []*Result) {
	var short []string
	missing := 0
	for _, r := range rs {
		den := denominator(r)
		if r.Completed < den || den <= 0 {
			short = append(short, r.Scenario+" "+completion(r))
			missing += max(den-r.Completed, 0)
		}
	}
	name := "Every path completes 100 % of calls"
	if len(short) == 0 {
		t.Add(name, lv, fmt.Sprintf("all %d paths complete", len(rs)), "met")
		return
	}
	result := fmt.Sprintf("missed by %s calls", countInt(missing))
	if missing == 1 {
		result = "missed by 1 call"
	}
	if missing == 0 {
		result = "missed: no calls recorded"
	}
	t.Add(name, lv, strings.Join(short, "; "), result)
}

func lossTarget(t *out.Table, lv string, rs []*Result) {
	worst := rs[0]
	var lossy []string
	for _, r := range rs {
		if r.LossAvgPct > worst.LossAvgPct {
			worst = r
		}
		// Compared as printed: 0.004 % shows as 0.00 % and meets it.
		if pct(r.LossAvgPct, 2) != pct(0, 2) {
			lossy = append(lossy, r.Scenario)
		}
	}
	name := "Every path 0.00 % packet loss (avg)"
	measured := fmt.Sprintf("worst %s (%s), max %s", pct(worst.LossAvgPct, 2), worst.Scenario, pct(worst.LossMaxPct, 2))
	if len(lossy) == 0 {
		t.Add(name, lv, measured, "met")
		return
	}
	t.Add(name, lv, measured, fmt.Sprintf("missed by %s points (%s)", fixed(worst.LossAvgPct, 2), strings.Join(lossy, ", ")))
}

func relayTarget(t *out.Table, lv string, r *Result, limit float64) {
	if r == nil {
		return
	}
	name := fmt.Sprintf("%s relay cost ≤ %s of a core per call", r.Scenario, pct(limit, 3))
	if r.RelayCPUPerCallPct == nil {
		t.Add(name, lv, dash, "not measured (no none run at this level)")
		return
	}
	v := *r.RelayCPUPerCallPct
	if v <= limit {
		t.Add(name, lv, pct(v, 4), "met")
		return
	}
	t.Add(name, lv, pct(v, 4), fmt.Sprintf("missed by %s points (%s over)",
		fixed(v-limit, 4), pct(100*(v-limit)/limit, 0)))
}

func speedupTarget(t *out.Table, lv string, us, k *Result) {
	if k == nil {
		return
	}
	name := fmt.Sprintf("%s at least %s× cheaper than userspace", k.Scenario, fixed(KernelSpeedupTarget, 0))
	if us.RelayCPUPerCallPct == nil || k.RelayCPUPerCallPct == nil {
		t.Add(name, lv, dash, "not measured (no none run at this level)")
		return
	}
	u, x := *us.RelayCPUPerCallPct, *k.RelayCPUPerCallPct
	measured := fmt.Sprintf("%s (%s vs %s)", costRatio(u, x), pct(u, 4), pct(x, 4))
	switch {
	case u <= 0:
		t.Add(name, lv, measured, "not measurable (userspace cost ≤ 0)")
	case x <= 0 || u/x >= KernelSpeedupTarget:
		t.Add(name, lv, measured, "met")
	default:
		t.Add(name, lv, measured, fmt.Sprintf("missed by %s× (%s would need ≤ %s)",
			fixed(KernelSpeedupTarget-u/x, 1), k.Scenario, pct(u/KernelSpeedupTarget, 4)))
	}
}

func memTarget(t *out.Table, lv string, rs []*Result) {
	var worst *Result
	var over []string
	for _, r := range rs {
		// A bridged call is held to its cost against a plain one instead.
		if r.CallsPeak == 0 || r.Scenario == SRTPScenario {
			continue
		}
		if worst == nil || r.MemPerCallKB > worst.MemPerCallKB {
			worst = r
		}
		if r.MemPerCallKB > MemPerCallTargetKB {
			over = append(over, r.Scenario)
		}
	}
	name := fmt.Sprintf("sipd memory ≤ %s KB per call above idle", fixed(MemPerCallTargetKB, 0))
	if worst == nil {
		if slices.ContainsFunc(rs, func(r *Result) bool { return r.Scenario == SRTPScenario && r.CallsPeak > 0 }) {
			return // only bridged calls at this level
		}
		t.Add(name, lv, dash, "not measured (no calls seen)")
		return
	}
	measured := fmt.Sprintf("worst %s KB (%s)", fixed(worst.MemPerCallKB, 1), worst.Scenario)
	if len(over) == 0 {
		t.Add(name, lv, measured, "met")
		return
	}
	t.Add(name, lv, measured, fmt.Sprintf("missed by %s KB (%s)",
		fixed(worst.MemPerCallKB-MemPerCallTargetKB, 1), strings.Join(over, ", ")))
}
