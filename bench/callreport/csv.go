package callreport

import (
	"io"
	"strconv"
	"strings"
	"time"

	"sipxdp/bench/out"
)

// columns are named after the JSON tags, so a spreadsheet and a jq query
// over results.jsonl talk about the same things.
func f64(v float64) string { return out.Plain(v) }
func optF64(p *float64) string {
	if p == nil {
		return ""
	}
	return f64(*p)
}
func u64(v uint64) string { return strconv.FormatUint(v, 10) }
func itoa(v int) string   { return strconv.Itoa(v) }

var columns = []out.Column[Result]{
	out.Col("scenario", func(r *Result) string { return r.Scenario }),
	out.Col("level", func(r *Result) string { return itoa(r.Level) }),
	out.Col("command", func(r *Result) string { return r.Command }),
	out.Col("time", func(r *Result) string {
		if r.Time.IsZero() {
			return ""
		}
		return r.Time.Format(time.RFC3339)
	}),
	out.Col("host_kernel", func(r *Result) string { return r.Host.Kernel }),
	out.Col("host_cpus", func(r *Result) string { return itoa(r.Host.CPUs) }),
	out.Col("host_mem_gb", func(r *Result) string { return f64(r.Host.MemGB) }),
	out.Col("host_go", func(r *Result) string { return r.Host.Go }),
	out.Col("mode", func(r *Result) string { return r.Mode }),
	out.Col("datapath", func(r *Result) string { return r.Datapath }),
	out.Col("path", func(r *Result) string { return r.Path }),
	out.Col("total", func(r *Result) string { return itoa(r.Total) }),
	out.Col("cps", func(r *Result) string { return f64(r.CPS) }),
	out.Col("duration_s", func(r *Result) string { return f64(r.DurationS) }),
	out.Col("uas_count", func(r *Result) string { return itoa(r.UASCount) }),
	out.Col("attempted", func(r *Result) string { return itoa(r.Attempted) }),
	out.Col("completed", func(r *Result) string { return itoa(r.Completed) }),
	out.Col("failed", func(r *Result) string { return itoa(r.Failed) }),
	out.Col("status_codes", func(r *Result) string { return statusCodes(r.StatusCodes, " ") }),
	out.Col("setup_avg_ms", func(r *Result) string { return f64(r.SetupAvgMs) }),
	out.Col("setup_p99_ms", func(r *Result) string { return f64(r.SetupP99Ms) }),
	out.Col("loss_avg_pct", func(r *Result) string { return f64(r.LossAvgPct) }),
	out.Col("loss_max_pct", func(r *Result) string { return f64(r.LossMaxPct) }),
	out.Col("jitter_avg_ms", func(r *Result) string { return f64(r.JitterAvgMs) }),
	out.Col("jitter_max_ms", func(r *Result) string { return f64(r.JitterMaxMs) }),
	out.Col("rtt_avg_ms", func(r *Result) string { return f64(r.RTTAvgMs) }),
	out.Col("rtt_max_ms", func(r *Result) string { return f64(r.RTTMaxMs) }),
	out.Col("tx_packets", func(r *Result) string { return u64(r.TXPackets) }),
	out.Col("rx_packets", func(r *Result) string { return u64(r.RXPackets) }),
	out.Col("uac_tx", func(r *Result) string { return u64(r.UACTX) }),
	out.Col("uac_rx", func(r *Result) string { return u64(r.UACRX) }),
	out.Col("rtcp_tx", func(r *Result) string { return u64(r.RTCPTX) }),
	out.Col("rtcp_rx", func(r *Result) string { return u64(r.RTCPRX) }),
	out.Col("relay_packets", func(r *Result) string { return u64(r.RelayPkts) }),
	out.Col("per_call_pps", func(r *Result) string { return f64(r.PerCallPPS) }),
	out.Col("calls_peak", func(r *Result) string { return itoa(r.CallsPeak) }),
	out.Col("calls_avg", func(r *Result) string { return f64(r.CallsAvg) }),
	out.Col("sipd_cpu_avg", func(r *Result) string { return f64(r.SipdCPUAvg) }),
	out.Col("sipd_cpu_peak", func(r *Result) string { return f64(r.SipdCPUPeak) }),
	out.Col("rss_idle_mb", func(r *Result) string { return f64(r.RSSIdleMB) }),
	out.Col("rss_avg_mb", func(r *Result) string { return f64(r.RSSAvgMB) }),
	out.Col("rss_peak_mb", func(r *Result) string { return f64(r.RSSPeakMB) }),
	out.Col("steady_s", func(r *Result) string { return f64(r.SteadyS) }),
	out.Col("steady_calls", func(r *Result) string { return f64(r.SteadyCalls) }),
	out.Col("system_cpu", func(r *Result) string { return f64(r.SystemCPU) }),
	out.Col("sipd_cpu_steady", func(r *Result) string { return f64(r.SipdCPUSteady) }),
	out.Col("load_cpu_steady", func(r *Result) string { return f64(r.LoadCPUSteady) }),
	out.Col("other_cpu_steady", func(r *Result) string { return f64(r.OtherCPUSteady) }),
	out.Col("relay_cpu", func(r *Result) string { return optF64(r.RelayCPU) }),
	out.Col("sipd_cpu_per_call_pct", func(r *Result) string { return f64(r.SipdCPUPerCallPct) }),
	out.Col("relay_cpu_per_call_pct", func(r *Result) string { return optF64(r.RelayCPUPerCallPct) }),
	out.Col("mem_per_call_kb", func(r *Result) string { return f64(r.MemPerCallKB) }),
	out.Col("bpf_ns_per_pkt", func(r *Result) string { return optF64(r.BPFNsPerPkt) }),
	out.Col("bpf_runs", func(r *Result) string { return u64(r.BPFRuns) }),
	out.Col("notes", func(r *Result) string { return strings.Join(r.Notes, "; ") }),
}

// WriteCSV writes a header and one flat row per result, in the order given:
// a spreadsheet sorts as its user likes, and the order matches the JSONL.
func WriteCSV(w io.Writer, rs []Result) error { return out.Columns(columns, rs).WriteCSV(w) }
