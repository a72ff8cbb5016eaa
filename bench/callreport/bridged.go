package callreport

import (
	"fmt"
	"strings"

	"sipxdp/bench/out"
)

// BridgedCostTarget is how much a bridged call (srtp) may cost against a
// plain call on the same userspace relay, in sipd's CPU and in its memory
// per call (issue 13's performance target).
const BridgedCostTarget = 2.0

// hasDTLS reports whether r has handshake figures: an srtp run, or any
// run whose callers did handshakes.
func hasDTLS(r *Result) bool {
	return r.Scenario == SRTPScenario || r.DTLSHandshakes > 0 || r.DTLSFailed > 0
}

// sipdSteadyPerCall is sipd's own CPU per concurrent call in the steady
// window. It is what the bridged call is compared on: both runs relay in
// sipd's userspace relay, while the whole machine's figure would also
// charge the bridged run with its callers' own SRTP work, the part a
// browser does.
func (r *Result) sipdSteadyPerCall() (float64, bool) {
	if r.SteadyCalls <= 0 {
		return 0, false
	}
	return r.SipdCPUSteady / r.SteadyCalls, true
}

func ratio(a, b float64) string {
	if b <= 0 {
		return dash
	}
	return fixed(a/b, 2) + "×"
}

// writeBridged compares each srtp run with the userspace run at its level.
func writeBridged(b *strings.Builder, rs []*Result) {
	t := newTable("Level", "userspace sipd CPU / call", "srtp sipd CPU / call", "Ratio",
		"userspace memory / call", "srtp memory / call", "Ratio", "srtp relay cost / call (vs none)")
	for _, lv := range levels(rs) {
		us, sr := find(rs, lv, "userspace"), find(rs, lv, SRTPScenario)
		if us == nil || sr == nil {
			continue
		}
		uc, uok := us.sipdSteadyPerCall()
		sc, sok := sr.sipdSteadyPerCall()
		cpuU, cpuS, cpuR := dash, dash, dash
		if uok && sok {
			cpuU, cpuS, cpuR = pct(uc, 4), pct(sc, 4), ratio(sc, uc)
		}
		memR := dash
		if us.CallsPeak > 0 && sr.CallsPeak > 0 {
			memR = ratio(sr.MemPerCallKB, us.MemPerCallKB)
		}
		t.Add(countInt(lv), cpuU, cpuS, cpuR, fixed(us.MemPerCallKB, 1)+" KB", fixed(sr.MemPerCallKB, 1)+" KB",
			memR, optPct(sr.RelayCPUPerCallPct, 4))
	}
	if len(t.Rows) == 0 {
		return
	}
	b.WriteString("### Bridged calls (srtp) against the plain userspace relay\n\n")
	b.WriteString("srtp: the callers are WebRTC endpoints (ICE, DTLS-SRTP, rtcp-mux), the callees plain RTP; " +
		"sipd's userspace relay terminates DTLS-SRTP on the callers' leg. Both are compared on sipd's own CPU " +
		"in the steady window per concurrent call, and sipd's memory per peak call: the whole machine's figure " +
		"(relay cost vs none) also carries the callers' SRTP, which a browser would do. The handshake figures " +
		"are in each level's table; their rate is bounded by the call rate (--cps).\n\n")
	writeTable(b, t)
}

// bridgedTargets holds srtp to BridgedCostTarget × userspace at one level.
func bridgedTargets(t *out.Table, lv string, us, sr *Result) {
	if us == nil || sr == nil {
		return
	}
	limit := fixed(BridgedCostTarget, 0) + "×"
	name := "srtp sipd CPU per call ≤ " + limit + " userspace's"
	uc, uok := us.sipdSteadyPerCall()
	sc, sok := sr.sipdSteadyPerCall()
	switch {
	case !uok || !sok:
		t.Add(name, lv, dash, "not measured (no steady calls)")
	default:
		relTarget(t, name, lv, sc, uc, pct(sc, 4)+" vs "+pct(uc, 4))
	}
	name = "srtp sipd memory per call ≤ " + limit + " userspace's"
	if us.CallsPeak == 0 || sr.CallsPeak == 0 {
		t.Add(name, lv, dash, "not measured (no calls seen)")
		return
	}
	relTarget(t, name, lv, sr.MemPerCallKB, us.MemPerCallKB,
		fixed(sr.MemPerCallKB, 1)+" KB vs "+fixed(us.MemPerCallKB, 1)+" KB")
}

func relTarget(t *out.Table, name, lv string, v, base float64, vs string) {
	switch {
	case base <= 0:
		t.Add(name, lv, vs, "not measurable (userspace ≤ 0)")
	case v <= BridgedCostTarget*base:
		t.Add(name, lv, fmt.Sprintf("%s (%s)", ratio(v, base), vs), "met")
	default:
		t.Add(name, lv, fmt.Sprintf("%s (%s)", ratio(v, base), vs),
			fmt.Sprintf("missed by %s×", fixed(v/base-BridgedCostTarget, 2)))
	}
}
