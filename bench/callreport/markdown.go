package callreport

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"sipxdp/bench/out"
)

// WriteMarkdown writes a report laid out like the reference benchmark:
// environment, one section per load level, then comparisons across levels
// and the project's targets. It reads the derived fields, so call Derive
// first.
func WriteMarkdown(w io.Writer, rs []Result) error {
	var b strings.Builder
	all := ordered(rs)
	b.WriteString("# sipd calls benchmark\n\n")
	if len(all) == 0 {
		b.WriteString("No results.\n")
	} else {
		writeEnvironment(&b, all)
		b.WriteString("---\n\n## Benchmark results\n\n")
		for _, lv := range levels(all) {
			writeLevel(&b, lv, atLevel(all, lv))
		}
		writeComparison(&b, all)
		writePerChannel(&b, all)
		writeOverhead(&b, all)
		writeBridged(&b, all)
		writeRelayNodes(&b, all)
		writeProxyNodes(&b, all)
		writeTargets(&b, all)
		writeNotes(&b, all)
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write markdown: %w", err)
	}
	return nil
}

// joined lists the distinct values of one property across results: a
// report gathered from several runs says so rather than showing one.
func joined(rs []*Result, get func(*Result) string) string {
	var vals []string
	for _, r := range rs {
		vals = append(vals, get(r))
	}
	d := distinct(vals)
	if len(d) == 0 {
		return dash
	}
	return strings.Join(d, ", ")
}

func writeEnvironment(b *strings.Builder, rs []*Result) {
	b.WriteString("## Test environment\n\n")
	t := newTable("Item", "Value")
	var first, last string
	for _, r := range rs {
		if r.Time.IsZero() {
			continue
		}
		d := r.Time.UTC().Format("2006-01-02")
		if first == "" || d < first {
			first = d
		}
		if d > last {
			last = d
		}
	}
	date := first
	if first != last {
		date = first + " – " + last
	}
	t.Add("Date", date)
	t.Add("OS", joined(rs, func(r *Result) string {
		if r.Host.Kernel == "" {
			return ""
		}
		return "Linux " + r.Host.Kernel
	}))
	t.Add("CPU", joined(rs, func(r *Result) string {
		if r.Host.CPUs == 0 {
			return ""
		}
		return fmt.Sprintf("%d cores", r.Host.CPUs)
	}))
	t.Add("Memory", joined(rs, func(r *Result) string {
		if r.Host.MemGB == 0 {
			return ""
		}
		return fixed(r.Host.MemGB, 1) + " GB"
	}))
	t.Add("Go", joined(rs, func(r *Result) string { return r.Host.Go }))
	t.Add("Command", joined(rs, func(r *Result) string {
		if r.Command == "" {
			return ""
		}
		return "`" + r.Command + "`"
	}))
	t.Add("Network", "veth pairs between network namespaces")
	t.Add("Codec", "G.711 PCMU, 20 ms")
	t.Add("Scenarios", joined(rs, func(r *Result) string { return r.Scenario }))
	writeTable(b, t)
}

// addRow adds a row named name with one cell per result.
func addRow(t *out.Table, rs []*Result, name string, get func(*Result) string) {
	cells := []string{name}
	for _, r := range rs {
		cells = append(cells, get(r))
	}
	t.Add(cells...)
}

// spread prints one value, or the range when scenarios at a level differ.
func spread(rs []*Result, get func(*Result) float64, format func(float64) string) string {
	lo, hi := get(rs[0]), get(rs[0])
	for _, r := range rs {
		lo, hi = min(lo, get(r)), max(hi, get(r))
	}
	if format(lo) == format(hi) {
		return format(lo)
	}
	return format(lo) + "–" + format(hi)
}

func writeLevel(b *strings.Builder, level int, rs []*Result) {
	fmt.Fprintf(b, "### %s concurrent\n\n", countInt(level))
	fmt.Fprintf(b, "**Config:** CPS=%s, total=%s, duration=%ss, %s UAS. Steady %ss at full concurrency.\n\n",
		spread(rs, func(r *Result) float64 { return r.CPS }, plain),
		spread(rs, func(r *Result) float64 { return float64(r.Total) }, func(v float64) string { return countInt(int(v)) }),
		spread(rs, func(r *Result) float64 { return r.DurationS }, plain),
		spread(rs, func(r *Result) float64 { return float64(r.UASCount) }, plain),
		spread(rs, func(r *Result) float64 { return r.SteadyS }, func(v float64) string { return fixed(v, 0) }))

	head := []string{"Metric"}
	for _, r := range rs {
		head = append(head, r.Scenario)
	}
	m := newTable(head...)
	addRow(m, rs, "**Call completion**", func(r *Result) string { return bold(completion(r)) })
	addRow(m, rs, "Status codes", func(r *Result) string { return statusCodes(r.StatusCodes, ", ") })
	addRow(m, rs, "Avg setup latency", func(r *Result) string { return ms(r.SetupAvgMs) })
	addRow(m, rs, "p99 setup latency", func(r *Result) string { return ms(r.SetupP99Ms) })
	addRow(m, rs, "Packet loss (avg)", func(r *Result) string { return pct(r.LossAvgPct, 2) })
	addRow(m, rs, "Packet loss (max)", func(r *Result) string { return pct(r.LossMaxPct, 2) })
	addRow(m, rs, "Jitter (avg / max)", func(r *Result) string {
		return fixed(r.JitterAvgMs, 2) + " / " + ms(r.JitterMaxMs)
	})
	addRow(m, rs, "RTT (avg / max)", func(r *Result) string {
		return fixed(r.RTTAvgMs, 2) + " / " + ms(r.RTTMaxMs)
	})
	addRow(m, rs, "TX packets (all)", func(r *Result) string { return count(r.TXPackets) })
	addRow(m, rs, "RX packets (all)", func(r *Result) string { return count(r.RXPackets) })
	addRow(m, rs, "TX packets (UAC)", func(r *Result) string { return count(r.UACTX) })
	addRow(m, rs, "RX packets (UAC)", func(r *Result) string { return count(r.UACRX) })
	addRow(m, rs, "RTCP (TX / RX)", func(r *Result) string { return count(r.RTCPTX) + " / " + count(r.RTCPRX) })
	addRow(m, rs, "Per-call TX rate", func(r *Result) string { return fixed(r.PerCallPPS, 1) + " pkt/s" })
	addRow(m, rs, "Relay packets", func(r *Result) string { return count(r.RelayPkts) })
	addRow(m, rs, "Media path", func(r *Result) string {
		if r.Datapath != "" && r.Path != "" && r.Datapath != r.Path {
			return r.Path + " (asked " + r.Datapath + ")"
		}
		return r.Path
	})
	if slices.ContainsFunc(rs, hasDTLS) {
		addRow(m, rs, "DTLS handshakes (ok / failed)", func(r *Result) string {
			if !hasDTLS(r) {
				return dash
			}
			s := countInt(r.DTLSHandshakes) + " / " + countInt(r.DTLSFailed)
			if len(r.DTLSErrors) > 0 {
				s += " (" + statusCodes(r.DTLSErrors, ", ") + ")"
			}
			return s
		})
		addRow(m, rs, "DTLS handshake (median / p99 / max)", func(r *Result) string {
			if !hasDTLS(r) {
				return dash
			}
			return fixed(r.DTLSMedianMs, 2) + " / " + fixed(r.DTLSP99Ms, 2) + " / " + ms(r.DTLSMaxMs)
		})
		addRow(m, rs, "DTLS handshakes/s (avg / peak 1 s)", func(r *Result) string {
			if !hasDTLS(r) {
				return dash
			}
			return fixed(r.DTLSPerSec, 1) + " / " + countInt(r.DTLSPeakPerSec)
		})
	}
	writeTable(b, m)
	if none := find(rs, level, NoneScenario); none != nil {
		b.WriteString("> With media `none` RTP flows directly between the endpoints; sipd relays nothing.\n\n")
	}

	res := newTable(head...)
	addRow(res, rs, "sipd CPU (avg)", func(r *Result) string { return pct(r.SipdCPUAvg, 2) })
	addRow(res, rs, "sipd CPU (peak)", func(r *Result) string { return bold(pct(r.SipdCPUPeak, 2)) })
	addRow(res, rs, "sipd RSS (idle)", func(r *Result) string { return mb(r.RSSIdleMB) })
	addRow(res, rs, "sipd RSS (avg)", func(r *Result) string { return mb(r.RSSAvgMB) })
	addRow(res, rs, "sipd RSS (peak)", func(r *Result) string { return bold(mb(r.RSSPeakMB)) })
	addRow(res, rs, "Concurrent calls (avg)", func(r *Result) string { return fixed(r.CallsAvg, 1) })
	addRow(res, rs, "Concurrent calls (peak)", func(r *Result) string { return bold(countInt(r.CallsPeak)) })
	addRow(res, rs, "Steady window", func(r *Result) string {
		return fixed(r.SteadyS, 0) + " s, " + fixed(r.SteadyCalls, 1) + " calls"
	})
	addRow(res, rs, "System CPU (steady)", func(r *Result) string { return pct(r.SystemCPU, 2) })
	addRow(res, rs, "sipd CPU (steady)", func(r *Result) string { return pct(r.SipdCPUSteady, 2) })
	addRow(res, rs, "Load generator CPU (steady)", func(r *Result) string { return pct(r.LoadCPUSteady, 2) })
	addRow(res, rs, "Other load (steady)", func(r *Result) string { return pct(r.OtherCPUSteady, 2) })
	addRow(res, rs, "Relay cost vs none", func(r *Result) string {
		if r.RelayCPU == nil {
			return dash
		}
		return signedPct(*r.RelayCPU, 2)
	})
	addRow(res, rs, "Relay cost per call", func(r *Result) string { return optPct(r.RelayCPUPerCallPct, 4) })
	addRow(res, rs, "BPF ns/pkt", func(r *Result) string {
		if r.BPFNsPerPkt == nil {
			return dash
		}
		return fixed(*r.BPFNsPerPkt, 1) + " ns (" + count(r.BPFRuns) + " runs)"
	})
	writeTable(b, res)
}

func writeComparison(b *strings.Builder, rs []*Result) {
	b.WriteString("### Full comparison\n\n")
	t := newTable("Level", "Scenario", "Completion", "Peak conc", "Loss", "Setup latency",
		"sipd CPU peak", "sipd CPU avg", "System CPU", "Relay CPU", "Mem peak")
	for _, r := range rs {
		relay := dash
		if r.RelayCPU != nil {
			relay = signedPct(*r.RelayCPU, 2)
		}
		t.Add(bold(countInt(r.Level)), r.Scenario, completionPct(r), bold(countInt(r.CallsPeak)),
			pct(r.LossAvgPct, 2), ms(r.SetupAvgMs), bold(pct(r.SipdCPUPeak, 2)), pct(r.SipdCPUAvg, 2),
			pct(r.SystemCPU, 2), relay, mb(r.RSSPeakMB))
	}
	writeTable(b, t)
}

func writePerChannel(b *strings.Builder, rs []*Result) {
	b.WriteString("### Per-channel overhead\n\n")
	b.WriteString("Percent of one core per concurrent call; memory is sipd's peak RSS above idle, per peak call.\n\n")
	head := []string{"Metric"}
	for _, r := range rs {
		head = append(head, fmt.Sprintf("%s (%s)", countInt(r.Level), r.Scenario))
	}
	t := newTable(head...)
	addRow(t, rs, "sipd CPU (peak)", func(r *Result) string {
		if r.CallsPeak == 0 {
			return dash
		}
		return bold(pct(r.SipdCPUPerCallPct, 3))
	})
	addRow(t, rs, "System CPU (steady)", func(r *Result) string {
		if v, ok := r.systemCPUPerCall(); ok {
			return pct(v, 4)
		}
		return dash
	})
	addRow(t, rs, "Relay CPU (vs none)", func(r *Result) string { return bold(optPct(r.RelayCPUPerCallPct, 4)) })
	addRow(t, rs, "Memory (peak − idle)", func(r *Result) string {
		if r.CallsPeak == 0 {
			return dash
		}
		return bold(fixed(r.MemPerCallKB, 1) + " KB")
	})
	writeTable(b, t)
}

// isKernel reports whether a scenario relays in the kernel: everything
// but the baseline and the Go relay, plain or bridged.
func isKernel(s string) bool { return s != NoneScenario && s != "userspace" && s != SRTPScenario }

func writeOverhead(b *strings.Builder, rs []*Result) {
	b.WriteString("### Media proxy overhead summary\n\n")
	b.WriteString("System CPU is the whole machine's busy time in the steady window (wall × CPUs − idle), " +
		"less what processes other than sipd, the load generator and the bench used (other load), " +
		"so it includes the softirq work where XDP and tc run. The relay's cost is that minus the " +
		"`none` run's at the same level.\n\n")
	t := newTable("Level", "Path", "none system CPU", "Path system CPU", "Delta", "Ratio", "Relay cost / call")
	for _, lv := range levels(rs) {
		none := find(rs, lv, NoneScenario)
		if none == nil {
			continue
		}
		for _, r := range atLevel(rs, lv) {
			if r.Scenario == NoneScenario {
				continue
			}
			ratio := dash
			if none.SystemCPU > 0 {
				ratio = fixed(r.SystemCPU/none.SystemCPU, 2) + "×"
			}
			t.Add(countInt(lv), r.Scenario, pct(none.SystemCPU, 2), pct(r.SystemCPU, 2),
				signedPct(r.SystemCPU-none.SystemCPU, 2), ratio, optPct(r.RelayCPUPerCallPct, 4))
		}
	}
	if len(t.Rows) == 0 {
		b.WriteString("No `none` run at the same level: the relay's cost cannot be derived.\n\n")
		return
	}
	writeTable(b, t)

	c := newTable("Level", "userspace relay cost / call", "Kernel path", "Kernel relay cost / call", "userspace ÷ kernel")
	for _, lv := range levels(rs) {
		us := find(rs, lv, "userspace")
		if us == nil || us.RelayCPUPerCallPct == nil {
			continue
		}
		for _, k := range atLevel(rs, lv) {
			if !isKernel(k.Scenario) || k.RelayCPUPerCallPct == nil {
				continue
			}
			c.Add(countInt(lv), pct(*us.RelayCPUPerCallPct, 4), k.Scenario, pct(*k.RelayCPUPerCallPct, 4),
				costRatio(*us.RelayCPUPerCallPct, *k.RelayCPUPerCallPct))
		}
	}
	if len(c.Rows) > 0 {
		writeTable(b, c)
	}
}

// costRatio divides the userspace cost by a kernel path's. A kernel cost
// at or below zero is within the noise of the subtraction, so no finite
// ratio would be honest.
func costRatio(us, k float64) string {
	switch {
	case us <= 0:
		return "n/a (userspace cost ≤ 0)"
	case k <= 0:
		return "n/a (kernel cost ≤ 0, within noise)"
	}
	return fixed(us/k, 1) + "×"
}

func writeNotes(b *strings.Builder, rs []*Result) {
	var notes []string
	for _, r := range rs {
		notes = append(notes, r.Notes...)
	}
	notes = distinct(notes)
	if len(notes) == 0 {
		return
	}
	b.WriteString("## Notes\n\n")
	for _, n := range slices.Clip(notes) {
		b.WriteString("- " + strings.ReplaceAll(n, "\n", " ") + "\n")
	}
	b.WriteString("\n")
}
