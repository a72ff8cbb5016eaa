package connload

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strings"

	"sipxdp/bench/out"
)

// Result is one mode's figures. Memory per connection is sipd's RSS
// growth between no connections and all held idle, over the connections.
type Result struct {
	Mode           string   `json:"mode"`           // tcp or tls
	Conns          int      `json:"conns"`          // connections asked to hold (TLS: idle ones)
	Held           int      `json:"held"`           // connections registered and held
	ConnectFailed  int      `json:"connect_failed"` // dial, handshake or REGISTER failures while opening
	ConnRate       float64  `json:"conn_rate"`      // target new connections/s
	RampSeconds    float64  `json:"ramp_s"`
	RampCPU        float64  `json:"ramp_cpu_cores,omitempty"`
	RegP50         float64  `json:"reg_p50_ms,omitempty"` // opening REGISTER (dial + digest), ms
	RegP99         float64  `json:"reg_p99_ms,omitempty"`
	Procs          int      `json:"procs"`
	RSSBeforeMB    float64  `json:"rss_before_mb"`
	RSSHeldMB      float64  `json:"rss_held_mb"`
	PerConn        float64  `json:"per_conn_bytes"`      // RSS delta / held
	HeapPerConn    float64  `json:"heap_per_conn_bytes"` // Go HeapInuse delta / held
	StackPerConn   float64  `json:"stack_per_conn_bytes"`
	GoroutinesPer  float64  `json:"goroutines_per_conn"`
	FDsHeld        int      `json:"fds_held"`
	Projected80k   float64  `json:"projected_80k_mb"` // PerConn * 80,000: a projection, not measured
	TargetPerConn  float64  `json:"target_per_conn_bytes"`
	Met            bool     `json:"met"`
	ReqRate        float64  `json:"req_rate,omitempty"` // TCP: target requests/s while held
	Duration       float64  `json:"duration_s"`
	ReqAchieved    float64  `json:"req_achieved,omitempty"`
	ReqOK          int      `json:"req_ok,omitempty"`
	ReqFailed      int      `json:"req_failed"`
	ReqP50         float64  `json:"req_p50_ms"` // TCP: all requests; TLS: whole churn registration
	ReqP99         float64  `json:"req_p99_ms"`
	OptP50         float64  `json:"options_p50_ms,omitempty"`
	OptP99         float64  `json:"options_p99_ms,omitempty"`
	RefP50         float64  `json:"refresh_p50_ms,omitempty"` // REGISTER refresh incl. 401 round trip
	RefP99         float64  `json:"refresh_p99_ms,omitempty"`
	LoadCPU        float64  `json:"load_cpu_cores,omitempty"`
	RSSAfterLoadMB float64  `json:"rss_after_load_mb,omitempty"`
	ChurnOK        int      `json:"churn_ok,omitempty"` // TLS: registrations on a fresh connection
	ChurnFailed    int      `json:"churn_failed"`
	Handshakes     float64  `json:"handshakes_per_s,omitempty"`
	ChurnCPU       float64  `json:"churn_cpu_cores,omitempty"`
	CallRate       float64  `json:"call_rate,omitempty"` // TLS: target calls/s, each over a new connection
	CallOK         int      `json:"call_ok,omitempty"`
	CallFailed     int      `json:"call_failed"`
	CallsPerS      float64  `json:"calls_per_s,omitempty"`
	CallP50        float64  `json:"call_setup_p50_ms,omitempty"` // INVITE with credentials to 200
	CallP99        float64  `json:"call_setup_p99_ms,omitempty"`
	CallCPU        float64  `json:"call_cpu_cores,omitempty"`
	Errors         []string `json:"errors,omitempty"`
}

func (r *Result) setMemory(before, held memPoint, n int) {
	r.RSSBeforeMB, r.RSSHeldMB, r.FDsHeld = mb(before.RSS), mb(held.RSS), held.FDs
	if n == 0 {
		return
	}
	r.PerConn = float64(held.RSS-before.RSS) / float64(n)
	r.HeapPerConn = float64(held.HeapInuse-before.HeapInuse) / float64(n)
	r.StackPerConn = float64(held.StackInuse-before.StackInuse) / float64(n)
	r.GoroutinesPer = float64(held.Goroutines-before.Goroutines) / float64(n)
	r.Projected80k = r.PerConn * 80000 / (1 << 20)
	r.Met = r.PerConn <= r.TargetPerConn
}

// Failures is every failed connection, request, churn registration and call.
func (r Result) Failures() int { return r.ConnectFailed + r.ReqFailed + r.ChurnFailed + r.CallFailed }

// Summary is a one-line digest for the terminal.
func (r Result) Summary() string {
	s := fmt.Sprintf("%s: held %d/%d, %.0f B/conn (target %.0f, met %v), heap %.0f + stack %.0f B/conn, 80k projected %.0f MB",
		r.Mode, r.Held, r.Conns, r.PerConn, r.TargetPerConn, r.Met, r.HeapPerConn, r.StackPerConn, r.Projected80k)
	if r.Mode == "tcp" {
		s += fmt.Sprintf("; %.0f req/s, p50 %.2f ms p99 %.2f ms, %d failed, sipd %.2f cores", r.ReqAchieved, r.ReqP50, r.ReqP99, r.Failures(), r.LoadCPU)
	} else {
		s += fmt.Sprintf("; %.0f handshakes+REGISTER/s, p50 %.2f ms p99 %.2f ms, %d failed, sipd %.2f cores", r.Handshakes, r.ReqP50, r.ReqP99, r.Failures(), r.ChurnCPU)
		if r.CallRate > 0 {
			s += fmt.Sprintf("; calls %.0f/s (%d ok, %d failed), setup p50 %.2f ms p99 %.2f ms, sipd %.2f cores", r.CallsPerS, r.CallOK, r.CallFailed, r.CallP50, r.CallP99, r.CallCPU)
		}
	}
	return s
}

// mergeResults reads earlier results in path and replaces those of the
// modes just run, so "--mode tcp" then "--mode tls" into one directory
// report both.
func mergeResults(path string, rs []Result) ([]Result, error) {
	old, err := out.ReadJSONL[Result](path)
	if errors.Is(err, fs.ErrNotExist) {
		return rs, nil
	}
	if err != nil {
		return nil, err
	}
	var merged []Result
	for _, o := range old {
		if !ran(rs, o.Mode) {
			merged = append(merged, o)
		}
	}
	return append(merged, rs...), nil
}

func ran(rs []Result, mode string) bool {
	for _, r := range rs {
		if r.Mode == mode {
			return true
		}
	}
	return false
}

func writeOutputs(dir string, rs []Result) error {
	if err := out.WriteJSONL(filepath.Join(dir, "results.jsonl"), rs); err != nil {
		return err
	}
	return out.WriteFiles(dir,
		out.File{Name: "results.csv", Render: func(w io.Writer) error { return out.Columns(out.JSONColumns[Result](nil), rs).WriteCSV(w) }},
		out.File{Name: "report.md", Render: out.Of(WriteMarkdown, rs)},
		out.File{Name: "memory.svg", Render: memoryChart(rs).WriteSVG})
}

func kb(b float64) string { return fmt.Sprintf("%.1f kB", b/1000) }

// WriteMarkdown writes report.md: a table per mode.
func WriteMarkdown(w io.Writer, rs []Result) error {
	var b strings.Builder
	b.WriteString("# bench conns: sipd over TCP and TLS\n\n")
	b.WriteString("Memory per connection is sipd's RSS growth from no connections to all held idle (each registered), over the connections held; kB = 1000 bytes. ")
	b.WriteString("Heap and stack are the Go runtime's HeapInuse and StackInuse growth over the same. The 80k figure is a projection from the measured per-connection memory, not a measurement.\n\n")
	for _, r := range rs {
		// Item and value tables, without a header of their own.
		t := &out.Table{Head: []string{"", ""}}
		if r.Mode == "tcp" {
			b.WriteString("## TCP: permanent connections\n\n")
			t.Add("connections held", fmt.Sprintf("%d of %d (%d failed), %d client processes", r.Held, r.Conns, r.ConnectFailed, r.Procs))
			t.Add("opening rate", fmt.Sprintf("target %.0f/s, all open in %.1f s; sipd %.2f cores meanwhile; REGISTER with digest p50 %.2f ms p99 %.2f ms", r.ConnRate, r.RampSeconds, r.RampCPU, r.RegP50, r.RegP99))
		} else {
			b.WriteString("## TLS: idle connections, and a new connection per registration\n\n")
			t.Add("idle connections held", fmt.Sprintf("%d of %d (%d failed), %d client processes", r.Held, r.Conns, r.ConnectFailed, r.Procs))
		}
		t.Add("sipd RSS", fmt.Sprintf("%.1f MB before, %.1f MB held (%d fds)", r.RSSBeforeMB, r.RSSHeldMB, r.FDsHeld))
		t.Add("**memory per idle connection**", fmt.Sprintf("**%s** (target ≤ %s: %s); Go heap %s, stacks %s; %.2f goroutines",
			kb(r.PerConn), kb(r.TargetPerConn), map[bool]string{true: "met", false: "missed"}[r.Met], kb(r.HeapPerConn), kb(r.StackPerConn), r.GoroutinesPer))
		t.Add("projected to 80,000 connections", fmt.Sprintf("%.0f MB (projection)", r.Projected80k))
		if r.Mode == "tcp" {
			t.Add("requests while held", fmt.Sprintf("target %.0f/s for %.0f s (OPTIONS, every 10th a REGISTER refresh with digest): %.0f/s achieved, %d ok, %d failed", r.ReqRate, r.Duration, r.ReqAchieved, r.ReqOK, r.ReqFailed))
			t.Add("latency", fmt.Sprintf("all p50 %.2f ms p99 %.2f ms; OPTIONS p50 %.2f p99 %.2f; REGISTER refresh (two round trips) p50 %.2f p99 %.2f", r.ReqP50, r.ReqP99, r.OptP50, r.OptP99, r.RefP50, r.RefP99))
			t.Add("sipd CPU under load", fmt.Sprintf("%.2f cores; RSS after %.1f MB", r.LoadCPU, r.RSSAfterLoadMB))
		} else {
			t.Add("churn", fmt.Sprintf("target %.0f/s for %.0f s: TLS handshake, REGISTER, 401, REGISTER, 200, close; registrations only, calls below", r.ConnRate, r.Duration))
			t.Add("handshakes sustained", fmt.Sprintf("**%.0f/s** (%d ok, %d failed)", r.Handshakes, r.ChurnOK, r.ChurnFailed))
			t.Add("latency (connect to 200)", fmt.Sprintf("p50 %.2f ms p99 %.2f ms", r.ReqP50, r.ReqP99))
			t.Add("sipd CPU during churn", fmt.Sprintf("%.2f cores", r.ChurnCPU))
		}
		if r.Mode == "tls" && r.CallRate > 0 {
			b.WriteString(t.Markdown() + "\n## TLS calls: a new connection per call, to the idle registered connections\n\n")
			t = &out.Table{Head: []string{"", ""}}
			t.Add("calls", fmt.Sprintf("target %.0f/s for %.0f s: TLS handshake, INVITE, 407, ACK, INVITE with digest, 180, 200, ACK, BYE, 200, close; the callee answers on its idle registered TLS connection", r.CallRate, r.Duration))
			t.Add("calls sustained", fmt.Sprintf("**%.1f/s** (%d ok, %d failed)", r.CallsPerS, r.CallOK, r.CallFailed))
			t.Add("setup latency (INVITE with credentials to 200)", fmt.Sprintf("p50 %.2f ms p99 %.2f ms", r.CallP50, r.CallP99))
			t.Add("sipd CPU during calls", fmt.Sprintf("%.2f cores", r.CallCPU))
		}
		if len(r.Errors) > 0 {
			t.Add("first errors", strings.Join(r.Errors, "; "))
		}
		b.WriteString(t.Markdown() + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// memoryChart is memory per idle connection by mode, with each mode's
// target.
func memoryChart(rs []Result) out.BarChart {
	c := out.BarChart{Title: "sipd memory per idle connection (kB)"}
	for _, r := range rs {
		c.Bars = append(c.Bars, out.Bar{
			Label: fmt.Sprintf("%s (%d held)", strings.ToUpper(r.Mode), r.Held), Value: r.PerConn, Text: kb(r.PerConn),
			Hover: fmt.Sprintf("%s: %.0f bytes per connection", r.Mode, r.PerConn),
			Color: map[bool]string{true: "#4a8", false: "#c54"}[r.Met], Target: r.TargetPerConn, TargetText: "target " + kb(r.TargetPerConn),
		})
	}
	return c
}
