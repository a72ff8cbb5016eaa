// Package report formats bench results: a Markdown table for people and
// JSON lines for tools. Each result records the command that produced it,
// so a number quoted elsewhere can be reproduced.
package report

import (
	"fmt"
	"io"
	"math"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"sipxdp/bench/out"
)

// Datapath is one media path measured by `bench datapath`.
type Datapath struct {
	Path    string    `json:"path"`
	Rep     int       `json:"rep"` // run number with --repeat
	Time    time.Time `json:"time"`
	Command string    `json:"command"`
	Host    string    `json:"host"`
	CPUs    int       `json:"cpus"`

	Flows       int     `json:"flows"`
	RateOffered int     `json:"rate_pps"`     // asked of the sender
	PayloadSize int     `json:"payload_size"` // UDP payload bytes
	WindowS     float64 `json:"window_s"`     // steady-state measurement window

	OfferedPPS   float64 `json:"offered_pps"`   // sender interface tx in the window
	DeliveredPPS float64 `json:"delivered_pps"` // receiver interface rx in the window

	Sent         uint64  `json:"sent"`     // whole run, by the sender
	Received     uint64  `json:"received"` // whole run, by the receiving socket
	LossPct      float64 `json:"loss_pct"`
	BadSource    uint64  `json:"bad_source"`
	Reordered    uint64  `json:"reordered"`
	CsumErrors   uint64  `json:"udp_csum_errors"`   // receiver ns UDP InCsumErrors
	RcvbufErrs   uint64  `json:"udp_rcvbuf_errors"` // receiver ns UDP RcvbufErrors
	SendErrors   uint64  `json:"send_errors"`
	SenderBehind uint64  `json:"sender_behind"`

	BusyCores float64 `json:"busy_cores"` // wall × CPUs − idle, whole system
	// OtherCores is CPU used meanwhile by user processes outside the bench
	// (a shared machine); NetBusyCores = BusyCores − OtherCores is what the
	// comparison with direct uses.
	OtherCores   float64 `json:"other_cores"`
	NetBusyCores float64 `json:"net_busy_cores"`
	KthreadCores float64 `json:"kthread_cores"` // kernel threads, ksoftirqd included
	// OursCores is sender + relay + receiver + kernel threads: the work of
	// this bench as charged to the processes it ran. Unlike system busy it
	// is not disturbed by other load, but see RelayUsPerPktProcs.
	OursCores     float64 `json:"ours_cores"`
	SenderCores   float64 `json:"sender_cores"`
	RelayCores    float64 `json:"relay_cores"` // relay process only; 0 for direct
	ReceiverCores float64 `json:"receiver_cores"`

	// RelayUsPerPkt is net busy / delivered pps − the same for direct, in
	// µs: everything the relay path costs, softirq included (at equal rates
	// it equals (busy − busy of direct) / pps). Nil for direct itself.
	RelayUsPerPkt *float64 `json:"relay_us_per_pkt_over_direct"`
	// RelayUsPerPktProcs is the same comparison made from OursCores. On a
	// quiet machine the two agree (busy ≈ ours + other within 0.1 core
	// here); under other load the system figure swings by microseconds
	// while this one holds, so the summary's median is taken on it.
	RelayUsPerPktProcs *float64 `json:"relay_us_per_pkt_over_direct_procs"`
	// Saturated is set when the system had no idle time left in the
	// window; then the system-busy comparison says nothing.
	Saturated bool `json:"saturated"`
	// RelayUsMin and RelayUsMax span RelayUsPerPktProcs over repeated runs; set
	// only on summary rows.
	RelayUsMin *float64 `json:"relay_us_min,omitempty"`
	RelayUsMax *float64 `json:"relay_us_max,omitempty"`
	Runs       int      `json:"runs,omitempty"`
	// RelayProcUsPerPkt is the relay process's own CPU per delivered packet.
	RelayProcUsPerPkt float64 `json:"relay_proc_us_per_pkt"`
	// ProgNsPerPkt is the BPF program's run_time_ns / run_cnt over the
	// window (kernel.bpf_stats_enabled). Nil where no program runs.
	ProgNsPerPkt *float64 `json:"prog_ns_per_run"`
	ProgRuns     uint64   `json:"prog_runs"`

	RelayForwarded uint64            `json:"relay_forwarded"` // datapath flow counters, whole run
	RelayCounters  map[string]uint64 `json:"relay_counters,omitempty"`
	Notes          []string          `json:"notes,omitempty"`
}

// WriteTable writes a Markdown table of the results.
func WriteTable(w io.Writer, rs []Datapath) error {
	t := out.Table{Head: []string{"path", "offered pps", "delivered pps", "loss %", "csum err", "busy cores", "other", "ours",
		"sender", "relay proc", "receiver", "relay µs/pkt (procs)", "range (procs)", "relay µs/pkt (system)", "relay proc µs/pkt", "prog ns/pkt"}}
	t.Align = make([]out.Align, len(t.Head))
	for i := 1; i < len(t.Align); i++ {
		t.Align[i] = out.AlignRight
	}
	f := func(format string, v float64) string { return fmt.Sprintf(format, v) }
	for _, r := range rs {
		sys := optF(r.RelayUsPerPkt, "%.2f")
		if r.Saturated && r.RelayUsPerPkt != nil {
			sys += " (saturated)"
		}
		t.Add(r.Path, f("%.0f", r.OfferedPPS), f("%.0f", r.DeliveredPPS), f("%.2f", r.LossPct), fmt.Sprint(r.CsumErrors),
			f("%.3f", r.BusyCores), f("%.3f", r.OtherCores), f("%.3f", r.OursCores), f("%.3f", r.SenderCores),
			f("%.3f", r.RelayCores), f("%.3f", r.ReceiverCores),
			optF(r.RelayUsPerPktProcs, "%.2f"), rangeUs(r), sys, procUs(r), optF(r.ProgNsPerPkt, "%.0f"))
	}
	_, err := io.WriteString(w, t.Markdown())
	return err
}

func rangeUs(r Datapath) string {
	if r.RelayUsMin == nil || r.RelayUsMax == nil || r.Runs < 2 {
		return "–"
	}
	return fmt.Sprintf("%.2f–%.2f", *r.RelayUsMin, *r.RelayUsMax)
}

// Summarize gives one row per path, in first-seen order. The row shown is
// the run with the median per-packet CPU, and its relay cost is replaced
// by median(path) − median(direct) of per-packet CPU over all runs: one
// noisy direct run then cannot shift every path of its repetition. The
// range is that of the per-run paired figures. One run per path comes back
// unchanged.
func Summarize(rs []Datapath) []Datapath {
	var order []string
	by := map[string][]Datapath{}
	for _, r := range rs {
		if _, ok := by[r.Path]; !ok {
			order = append(order, r.Path)
		}
		by[r.Path] = append(by[r.Path], r)
	}
	ours := func(r Datapath) float64 { return perPkt(r.OursCores, r.DeliveredPPS) }
	net := func(r Datapath) float64 { return perPkt(r.NetBusyCores, r.DeliveredPPS) }
	direct, haveDirect := by["direct"]
	out := make([]Datapath, 0, len(order))
	for _, p := range order {
		runs := by[p]
		if len(runs) == 1 {
			out = append(out, runs[0])
			continue
		}
		sorted := slices.Clone(runs)
		sort.SliceStable(sorted, func(i, j int) bool { return ours(sorted[i]) < ours(sorted[j]) })
		m := sorted[(len(sorted)-1)/2]
		m.Runs = len(runs)
		if haveDirect && p != "direct" {
			v := round3(median(runs, ours) - median(direct, ours))
			w := round3(median(runs, net) - median(direct, net))
			m.RelayUsPerPktProcs, m.RelayUsPerPkt = &v, &w
		}
		var lo, hi *float64
		for _, r := range runs {
			if v := r.RelayUsPerPktProcs; v != nil {
				if lo == nil || *v < *lo {
					lo = v
				}
				if hi == nil || *v > *hi {
					hi = v
				}
			}
		}
		m.RelayUsMin, m.RelayUsMax = lo, hi
		out = append(out, m)
	}
	return out
}

// perPkt is µs of CPU per packet; 0 when nothing was delivered.
func perPkt(cores, pps float64) float64 {
	if pps <= 0 {
		return 0
	}
	return cores / pps * 1e6
}

func median(rs []Datapath, f func(Datapath) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	sort.Float64s(v)
	if n := len(v); n%2 == 0 {
		return (v[n/2-1] + v[n/2]) / 2
	}
	return v[len(v)/2]
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// ReadJSONL reads results written by AppendJSONL.
func ReadJSONL(path string) ([]Datapath, error) { return out.ReadJSONL[Datapath](path) }

func procUs(r Datapath) string {
	if r.Path == "direct" {
		return "–"
	}
	return fmt.Sprintf("%.2f", r.RelayProcUsPerPkt)
}

func optF(v *float64, format string) string {
	if v == nil {
		return "–"
	}
	return fmt.Sprintf(format, *v)
}

// AppendJSONL appends one JSON object per result to dir/name and returns
// the file's path.
func AppendJSONL(dir, name string, rs []Datapath) (string, error) {
	path := filepath.Join(dir, name)
	return path, out.AppendJSONL(path, rs)
}
