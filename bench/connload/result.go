package connload

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return rs, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Result
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var old Result
		if err := json.Unmarshal(sc.Bytes(), &old); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if !ran(rs, old.Mode) {
			out = append(out, old)
		}
	}
	return append(out, rs...), sc.Err()
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
	var jl strings.Builder
	for _, r := range rs {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		jl.Write(b)
		jl.WriteByte('\n')
	}
	if err := os.WriteFile(filepath.Join(dir, "results.jsonl"), []byte(jl.String()), 0o644); err != nil {
		return err
	}
	if err := writeCSV(filepath.Join(dir, "results.csv"), rs); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.md"), []byte(Markdown(rs)), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "memory.svg"), []byte(SVG(rs)), 0o644)
}

var csvHeader = []string{"mode", "conns", "held", "connect_failed", "conn_rate", "ramp_s", "rss_before_mb", "rss_held_mb",
	"per_conn_bytes", "heap_per_conn_bytes", "stack_per_conn_bytes", "goroutines_per_conn", "projected_80k_mb",
	"target_per_conn_bytes", "met", "req_rate", "req_achieved", "req_failed", "req_p50_ms", "req_p99_ms",
	"load_cpu_cores", "handshakes_per_s", "churn_ok", "churn_failed", "churn_cpu_cores",
	"call_rate", "calls_per_s", "call_ok", "call_failed", "call_setup_p50_ms", "call_setup_p99_ms", "call_cpu_cores"}

func f2(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }

func writeCSV(path string, rs []Result) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write(csvHeader)
	for _, r := range rs {
		w.Write([]string{r.Mode, strconv.Itoa(r.Conns), strconv.Itoa(r.Held), strconv.Itoa(r.ConnectFailed), f2(r.ConnRate),
			f2(r.RampSeconds), f2(r.RSSBeforeMB), f2(r.RSSHeldMB), f2(r.PerConn), f2(r.HeapPerConn), f2(r.StackPerConn),
			f2(r.GoroutinesPer), f2(r.Projected80k), f2(r.TargetPerConn), strconv.FormatBool(r.Met), f2(r.ReqRate),
			f2(r.ReqAchieved), strconv.Itoa(r.ReqFailed), f2(r.ReqP50), f2(r.ReqP99), f2(r.LoadCPU), f2(r.Handshakes),
			strconv.Itoa(r.ChurnOK), strconv.Itoa(r.ChurnFailed), f2(r.ChurnCPU),
			f2(r.CallRate), f2(r.CallsPerS), strconv.Itoa(r.CallOK), strconv.Itoa(r.CallFailed), f2(r.CallP50), f2(r.CallP99), f2(r.CallCPU)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func kb(b float64) string { return fmt.Sprintf("%.1f kB", b/1000) }

// Markdown is report.md: a table per mode.
func Markdown(rs []Result) string {
	var b strings.Builder
	b.WriteString("# bench conns: sipd over TCP and TLS\n\n")
	b.WriteString("Memory per connection is sipd's RSS growth from no connections to all held idle (each registered), over the connections held; kB = 1000 bytes. ")
	b.WriteString("Heap and stack are the Go runtime's HeapInuse and StackInuse growth over the same. The 80k figure is a projection from the measured per-connection memory, not a measurement.\n\n")
	for _, r := range rs {
		if r.Mode == "tcp" {
			b.WriteString("## TCP: permanent connections\n\n| | |\n|---|---|\n")
			fmt.Fprintf(&b, "| connections held | %d of %d (%d failed), %d client processes |\n", r.Held, r.Conns, r.ConnectFailed, r.Procs)
			fmt.Fprintf(&b, "| opening rate | target %.0f/s, all open in %.1f s; sipd %.2f cores meanwhile; REGISTER with digest p50 %.2f ms p99 %.2f ms |\n", r.ConnRate, r.RampSeconds, r.RampCPU, r.RegP50, r.RegP99)
		} else {
			b.WriteString("## TLS: idle connections, and a new connection per registration\n\n| | |\n|---|---|\n")
			fmt.Fprintf(&b, "| idle connections held | %d of %d (%d failed), %d client processes |\n", r.Held, r.Conns, r.ConnectFailed, r.Procs)
		}
		fmt.Fprintf(&b, "| sipd RSS | %.1f MB before, %.1f MB held (%d fds) |\n", r.RSSBeforeMB, r.RSSHeldMB, r.FDsHeld)
		fmt.Fprintf(&b, "| **memory per idle connection** | **%s** (target ≤ %s: %s); Go heap %s, stacks %s; %.2f goroutines |\n",
			kb(r.PerConn), kb(r.TargetPerConn), map[bool]string{true: "met", false: "missed"}[r.Met], kb(r.HeapPerConn), kb(r.StackPerConn), r.GoroutinesPer)
		fmt.Fprintf(&b, "| projected to 80,000 connections | %.0f MB (projection) |\n", r.Projected80k)
		if r.Mode == "tcp" {
			fmt.Fprintf(&b, "| requests while held | target %.0f/s for %.0f s (OPTIONS, every 10th a REGISTER refresh with digest): %.0f/s achieved, %d ok, %d failed |\n", r.ReqRate, r.Duration, r.ReqAchieved, r.ReqOK, r.ReqFailed)
			fmt.Fprintf(&b, "| latency | all p50 %.2f ms p99 %.2f ms; OPTIONS p50 %.2f p99 %.2f; REGISTER refresh (two round trips) p50 %.2f p99 %.2f |\n", r.ReqP50, r.ReqP99, r.OptP50, r.OptP99, r.RefP50, r.RefP99)
			fmt.Fprintf(&b, "| sipd CPU under load | %.2f cores; RSS after %.1f MB |\n", r.LoadCPU, r.RSSAfterLoadMB)
		} else {
			fmt.Fprintf(&b, "| churn | target %.0f/s for %.0f s: TLS handshake, REGISTER, 401, REGISTER, 200, close; registrations only, calls below |\n", r.ConnRate, r.Duration)
			fmt.Fprintf(&b, "| handshakes sustained | **%.0f/s** (%d ok, %d failed) |\n", r.Handshakes, r.ChurnOK, r.ChurnFailed)
			fmt.Fprintf(&b, "| latency (connect to 200) | p50 %.2f ms p99 %.2f ms |\n", r.ReqP50, r.ReqP99)
			fmt.Fprintf(&b, "| sipd CPU during churn | %.2f cores |\n", r.ChurnCPU)
		}
		if r.Mode == "tls" && r.CallRate > 0 {
			b.WriteString("\n## TLS calls: a new connection per call, to the idle registered connections\n\n| | |\n|---|---|\n")
			fmt.Fprintf(&b, "| calls | target %.0f/s for %.0f s: TLS handshake, INVITE, 407, ACK, INVITE with digest, 180, 200, ACK, BYE, 200, close; the callee answers on its idle registered TLS connection |\n", r.CallRate, r.Duration)
			fmt.Fprintf(&b, "| calls sustained | **%.1f/s** (%d ok, %d failed) |\n", r.CallsPerS, r.CallOK, r.CallFailed)
			fmt.Fprintf(&b, "| setup latency (INVITE with credentials to 200) | p50 %.2f ms p99 %.2f ms |\n", r.CallP50, r.CallP99)
			fmt.Fprintf(&b, "| sipd CPU during calls | %.2f cores |\n", r.CallCPU)
		}
		if len(r.Errors) > 0 {
			fmt.Fprintf(&b, "| first errors | %s |\n", strings.ReplaceAll(strings.Join(r.Errors, "; "), "|", "/"))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// SVG is a bar chart of memory per idle connection by mode, with each
// mode's target.
func SVG(rs []Result) string {
	const w, h, left, bottom, barW = 480, 300, 60, 40, 80
	top := 1.0
	for _, r := range rs {
		top = max(top, r.PerConn, r.TargetPerConn)
	}
	top *= 1.15
	y := func(v float64) float64 { return float64(h-bottom) - v/top*float64(h-bottom-30) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="%d" y="18" font-size="14">sipd memory per idle connection (kB)</text>`+"\n", left)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, h-bottom, w-20, h-bottom)
	for i, r := range rs {
		x := float64(left + 40 + i*(barW+80))
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.1f" width="%d" height="%.1f" fill="%s"><title>%s: %.0f bytes per connection</title></rect>`+"\n",
			x, y(r.PerConn), barW, float64(h-bottom)-y(r.PerConn), map[bool]string{true: "#4a8", false: "#c54"}[r.Met], r.Mode, r.PerConn)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x+barW/2, y(r.PerConn)-4, kb(r.PerConn))
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="black" stroke-dasharray="4 3"/>`+"\n", x-10, y(r.TargetPerConn), x+barW+10, y(r.TargetPerConn))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" font-size="10">target %s</text>`+"\n", x+barW+12, y(r.TargetPerConn)+3, kb(r.TargetPerConn))
		fmt.Fprintf(&b, `<text x="%.0f" y="%d" text-anchor="middle">%s (%d held)</text>`+"\n", x+barW/2, h-bottom+18, strings.ToUpper(r.Mode), r.Held)
	}
	b.WriteString("</svg>\n")
	return b.String()
}
