package callreport

import (
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// column names follow the JSON tags, so a spreadsheet and a jq query over
// results.jsonl talk about the same things.
type column struct {
	name string
	get  func(r *Result) string
}

func f64(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
func optF64(p *float64) string {
	if p == nil {
		return ""
	}
	return f64(*p)
}
func u64(v uint64) string { return strconv.FormatUint(v, 10) }
func itoa(v int) string   { return strconv.Itoa(v) }

var columns = []column{
	{"scenario", func(r *Result) string { return r.Scenario }},
	{"level", func(r *Result) string { return itoa(r.Level) }},
	{"command", func(r *Result) string { return r.Command }},
	{"time", func(r *Result) string {
		if r.Time.IsZero() {
			return ""
		}
		return r.Time.Format(time.RFC3339)
	}},
	{"host_kernel", func(r *Result) string { return r.Host.Kernel }},
	{"host_cpus", func(r *Result) string { return itoa(r.Host.CPUs) }},
	{"host_mem_gb", func(r *Result) string { return f64(r.Host.MemGB) }},
	{"host_go", func(r *Result) string { return r.Host.Go }},
	{"mode", func(r *Result) string { return r.Mode }},
	{"datapath", func(r *Result) string { return r.Datapath }},
	{"path", func(r *Result) string { return r.Path }},
	{"total", func(r *Result) string { return itoa(r.Total) }},
	{"cps", func(r *Result) string { return f64(r.CPS) }},
	{"duration_s", func(r *Result) string { return f64(r.DurationS) }},
	{"uas_count", func(r *Result) string { return itoa(r.UASCount) }},
	{"attempted", func(r *Result) string { return itoa(r.Attempted) }},
	{"completed", func(r *Result) string { return itoa(r.Completed) }},
	{"failed", func(r *Result) string { return itoa(r.Failed) }},
	{"status_codes", func(r *Result) string { return statusCodes(r.StatusCodes, " ") }},
	{"setup_avg_ms", func(r *Result) string { return f64(r.SetupAvgMs) }},
	{"setup_p99_ms", func(r *Result) string { return f64(r.SetupP99Ms) }},
	{"loss_avg_pct", func(r *Result) string { return f64(r.LossAvgPct) }},
	{"loss_max_pct", func(r *Result) string { return f64(r.LossMaxPct) }},
	{"jitter_avg_ms", func(r *Result) string { return f64(r.JitterAvgMs) }},
	{"jitter_max_ms", func(r *Result) string { return f64(r.JitterMaxMs) }},
	{"rtt_avg_ms", func(r *Result) string { return f64(r.RTTAvgMs) }},
	{"rtt_max_ms", func(r *Result) string { return f64(r.RTTMaxMs) }},
	{"tx_packets", func(r *Result) string { return u64(r.TXPackets) }},
	{"rx_packets", func(r *Result) string { return u64(r.RXPackets) }},
	{"uac_tx", func(r *Result) string { return u64(r.UACTX) }},
	{"uac_rx", func(r *Result) string { return u64(r.UACRX) }},
	{"rtcp_tx", func(r *Result) string { return u64(r.RTCPTX) }},
	{"rtcp_rx", func(r *Result) string { return u64(r.RTCPRX) }},
	{"relay_packets", func(r *Result) string { return u64(r.RelayPkts) }},
	{"per_call_pps", func(r *Result) string { return f64(r.PerCallPPS) }},
	{"calls_peak", func(r *Result) string { return itoa(r.CallsPeak) }},
	{"calls_avg", func(r *Result) string { return f64(r.CallsAvg) }},
	{"sipd_cpu_avg", func(r *Result) string { return f64(r.SipdCPUAvg) }},
	{"sipd_cpu_peak", func(r *Result) string { return f64(r.SipdCPUPeak) }},
	{"rss_idle_mb", func(r *Result) string { return f64(r.RSSIdleMB) }},
	{"rss_avg_mb", func(r *Result) string { return f64(r.RSSAvgMB) }},
	{"rss_peak_mb", func(r *Result) string { return f64(r.RSSPeakMB) }},
	{"steady_s", func(r *Result) string { return f64(r.SteadyS) }},
	{"steady_calls", func(r *Result) string { return f64(r.SteadyCalls) }},
	{"system_cpu", func(r *Result) string { return f64(r.SystemCPU) }},
	{"sipd_cpu_steady", func(r *Result) string { return f64(r.SipdCPUSteady) }},
	{"load_cpu_steady", func(r *Result) string { return f64(r.LoadCPUSteady) }},
	{"other_cpu_steady", func(r *Result) string { return f64(r.OtherCPUSteady) }},
	{"relay_cpu", func(r *Result) string { return optF64(r.RelayCPU) }},
	{"sipd_cpu_per_call_pct", func(r *Result) string { return f64(r.SipdCPUPerCallPct) }},
	{"relay_cpu_per_call_pct", func(r *Result) string { return optF64(r.RelayCPUPerCallPct) }},
	{"mem_per_call_kb", func(r *Result) string { return f64(r.MemPerCallKB) }},
	{"bpf_ns_per_pkt", func(r *Result) string { return optF64(r.BPFNsPerPkt) }},
	{"bpf_runs", func(r *Result) string { return u64(r.BPFRuns) }},
	{"notes", func(r *Result) string { return strings.Join(r.Notes, "; ") }},
}

// WriteCSV writes a header and one flat row per result, in the order given:
// a spreadsheet sorts as its user likes, and the order matches the JSONL.
func WriteCSV(w io.Writer, rs []Result) error {
	cw := csv.NewWriter(w)
	row := make([]string, len(columns))
	for i, c := range columns {
		row[i] = c.name
	}
	if err := cw.Write(row); err != nil {
		return fmt.Errorf("write csv header: %w", err)
	}
	for i := range rs {
		for j, c := range columns {
			row[j] = c.get(&rs[i])
		}
		if err := cw.Write(row); err != nil {
			return fmt.Errorf("write csv row %d: %w", i+1, err)
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("write csv: %w", err)
	}
	return nil
}
