package itsp

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"sipxdp/bench/out"
)

// ClassResult is one message class of a run.
type ClassResult struct {
	Name        string  `json:"name"`
	OfferedRate float64 `json:"offered_rate"` // per second, by the model
	Achieved    float64 `json:"achieved_rate"`
	Offered     uint64  `json:"offered"`
	Completed   uint64  `json:"completed"`
	Timeouts    uint64  `json:"timeouts"`
	Non2xx      uint64  `json:"non_2xx"` // other than the expected 401/407
	Sent        uint64  `json:"sent"`    // requests sent, first copies
	Retrans     uint64  `json:"retransmissions"`
	RetransPct  float64 `json:"retrans_pct"`
	Dups        uint64  `json:"duplicates"` // duplicate answers or requests received
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
}

// Ramp is the initial registration of every subscriber.
type Ramp struct {
	Seconds float64 `json:"seconds"`
	Rate    float64 `json:"rate"`
	CPUAvg  float64 `json:"sipd_cpu_avg"`
}

// Result is one run: one subscriber count.
type Result struct {
	Time             time.Time     `json:"time"`
	Host             string        `json:"host"`
	CPUs             int           `json:"cpus"`
	Transport        string        `json:"transport"`
	Media            string        `json:"media"`
	Subscribers      int           `json:"subscribers"`
	Users            int           `json:"users"` // provisioned
	Duration         float64       `json:"hold_seconds"`
	RegisterRate     float64       `json:"register_rate"`
	Shards           int           `json:"generator_sockets"`
	StartSeconds     float64       `json:"sipd_start_seconds"`
	Ramp             Ramp          `json:"ramp"`
	Classes          []ClassResult `json:"classes"`
	SipdCPUAvg       float64       `json:"sipd_cpu_avg"`
	SipdCPUPeak      float64       `json:"sipd_cpu_peak"`
	GenCPUAvg        float64       `json:"generator_cpu_avg"`
	GenMsgRate       float64       `json:"generator_msgs_per_s"` // datagrams sent and received during the hold
	GenUsPerMsg      float64       `json:"generator_us_per_msg"` // generator CPU per datagram during the hold
	GenProfileTop    string        `json:"generator_profile_top,omitempty"`
	SystemBusyAvg    float64       `json:"system_busy_avg"`
	RSSIdle          uint64        `json:"rss_idle"`
	RSSRegistered    uint64        `json:"rss_registered"`
	RSSPeak          uint64        `json:"rss_peak"`
	BytesPerContact  float64       `json:"bytes_per_contact"`
	TransactionsHold int64         `json:"transactions_hold_peak"`
	TransactionsPeak int64         `json:"transactions_peak"`
	HealthAfterRamp  SipHealth     `json:"health_after_ramp"`
	HealthAfterHold  SipHealth     `json:"health_after_hold"`
	SendDrops        uint64        `json:"send_drops"`
	ProfileTop       string        `json:"profile_top,omitempty"`
	// Proxies is how many sipd shared the subscribers, each generator
	// socket registering and calling through one; sipd's CPU and RSS
	// above are their sums, and Nodes each one's (with more than one).
	Proxies int          `json:"proxies,omitempty"`
	Store   string       `json:"store,omitempty"` // location table: file or redis
	Nodes   []NodeResult `json:"nodes,omitempty"`
	// CrossNodeCalls are the calls placed through another sipd than the
	// one the callee registered through.
	CrossNodeCalls uint64       `json:"cross_node_calls,omitempty"`
	Redis          *RedisResult `json:"redis,omitempty"`
}

// Class returns the class of that name (zero if absent).
func (r Result) Class(name string) ClassResult {
	for _, c := range r.Classes {
		if c.Name == name {
			return c
		}
	}
	return ClassResult{}
}

// Failures sums timeouts and unexpected answers over every class.
func (r Result) Failures() uint64 {
	var f uint64
	for _, c := range r.Classes {
		f += c.Timeouts + c.Non2xx
	}
	return f
}

// RetransPct is retransmissions over first sends, every class of the hold.
func (r Result) RetransPct() float64 {
	var re, s uint64
	for _, c := range r.Classes {
		if c.Name != "register-ramp" {
			re += c.Retrans
			s += c.Sent
		}
	}
	if s == 0 {
		return 0
	}
	return 100 * float64(re) / float64(s)
}

// CPUPer100k is sipd's average cores during the hold per 100k subscribers.
func (r Result) CPUPer100k() float64 { return r.SipdCPUAvg / float64(r.Subscribers) * 100000 }

// WriteAll appends rs to results.jsonl and rewrites results.csv, report.md
// and itsp-scaling.svg from every run in results.jsonl, so the scaling
// table and chart cover the runs of earlier invocations too.
func WriteAll(dir string, rs []Result) error {
	p := filepath.Join(dir, "results.jsonl")
	if err := out.AppendJSONL(p, rs); err != nil {
		return err
	}
	all, err := ReadJSONL(p)
	if err != nil {
		return err
	}
	return out.WriteFiles(dir,
		out.File{Name: "results.csv", Render: out.Of(WriteCSV, all)},
		out.File{Name: "report.md", Render: out.Of(WriteMarkdown, all)},
		out.File{Name: "itsp-scaling.svg", Render: out.Of(WriteSVG, all)})
}

// ReadJSONL reads every result of a results.jsonl.
func ReadJSONL(p string) ([]Result, error) { return out.ReadJSONL[Result](p) }

func f1(v float64) string { return out.Fixed(v, 1) }
func f2(v float64) string { return out.Fixed(v, 2) }
func mb(v uint64) string  { return strconv.FormatFloat(float64(v)/(1<<20), 'f', 0, 64) }

// WriteCSV writes one row per run and class.
func WriteCSV(w io.Writer, rs []Result) error {
	t := out.Table{Head: []string{"time", "subscribers", "media", "class", "offered_rate", "achieved_rate", "offered", "completed",
		"timeouts", "non_2xx", "sent", "retransmissions", "retrans_pct", "duplicates", "p50_ms", "p99_ms",
		"sipd_cpu_avg", "sipd_cpu_peak", "generator_cpu_avg", "system_busy_avg", "rss_idle", "rss_registered", "rss_peak",
		"bytes_per_contact", "transactions_hold_peak", "proxies", "store", "cross_node_calls", "redis_used_memory_registered",
		"redis_bytes_per_contact", "redis_cpu_ramp_avg", "redis_cpu_us_per_registration", "redis_cpu_hold_avg"}}
	for _, r := range rs {
		x := r.Redis
		if x == nil {
			x = &RedisResult{}
		}
		for _, c := range r.Classes {
			t.Add(r.Time.Format(time.RFC3339), strconv.Itoa(r.Subscribers), r.Media, c.Name, f2(c.OfferedRate), f2(c.Achieved),
				strconv.FormatUint(c.Offered, 10), strconv.FormatUint(c.Completed, 10), strconv.FormatUint(c.Timeouts, 10),
				strconv.FormatUint(c.Non2xx, 10), strconv.FormatUint(c.Sent, 10), strconv.FormatUint(c.Retrans, 10), f2(c.RetransPct),
				strconv.FormatUint(c.Dups, 10), f2(c.P50ms), f2(c.P99ms), f2(r.SipdCPUAvg), f2(r.SipdCPUPeak), f2(r.GenCPUAvg),
				f2(r.SystemBusyAvg), strconv.FormatUint(r.RSSIdle, 10), strconv.FormatUint(r.RSSRegistered, 10),
				strconv.FormatUint(r.RSSPeak, 10), f1(r.BytesPerContact), strconv.FormatInt(r.TransactionsHold, 10),
				strconv.Itoa(max(r.Proxies, 1)), cmp.Or(r.Store, "file"), strconv.FormatUint(r.CrossNodeCalls, 10),
				strconv.FormatUint(x.UsedMemoryRegistered, 10), f1(x.BytesPerContact), f2(x.CPURampAvg), f2(x.CPUUsPerRegistration), f2(x.CPUHoldAvg))
		}
	}
	return t.WriteCSV(w)
}

// WriteMarkdown writes a section per run and a scaling table across runs.
func WriteMarkdown(w io.Writer, rs []Result) error {
	var b strings.Builder
	b.WriteString("# sipd ITSP capacity benchmark (UDP)\n\n")
	b.WriteString("Traffic model of docs/reference.md [R2] per N subscribers: a NOTIFY keep-alive every 15 s (N/15 per second), " +
		"a REGISTER refresh with digest every 50 min (N/3000 per second), calls at N/5000 per second (INVITE, 407, ACK, INVITE with " +
		"credentials, 180, 200 after 4 s, ACK and BYE along the Record-Route). sipd and the generator share the machine, on loopback. " +
		"Latency is request sent to final response (register: the REGISTER with credentials to its 200; call: the INVITE with " +
		"credentials to its 200, so it includes the callee's 4 s). Retransmissions are RFC 3261 timers A/E from 500 ms. " +
		"Bytes per contact: (RSS after the ramp − RSS idle with the users loaded) / N.\n\n")
	if len(rs) == 0 {
		b.WriteString("No results.\n")
	}
	runs := slices.Clone(rs)
	slices.SortStableFunc(runs, func(a, b Result) int { return cmp.Compare(a.Subscribers, b.Subscribers) })
	if len(runs) > 0 {
		b.WriteString("## Scaling\n\n")
		t := out.Table{Head: []string{"Subscribers", "Notify/s", "Reg/s", "Calls/s", "Failures", "Retrans %", "p99 notify ms",
			"p99 register ms", "p99 call ms", "sipd CPU avg (peak)", "Gen CPU", "System busy", "RSS reg. / peak MB", "B per contact", "sipd cores per 100k"}}
		for _, r := range runs {
			t.Add(strconv.Itoa(r.Subscribers), f1(r.Class("notify").Achieved), f1(r.Class("register").Achieved), f1(r.Class("call").Achieved),
				strconv.FormatUint(r.Failures(), 10), strconv.FormatFloat(r.RetransPct(), 'f', 3, 64), f1(r.Class("notify").P99ms),
				f1(r.Class("register").P99ms), f1(r.Class("call").P99ms), f2(r.SipdCPUAvg)+" ("+f2(r.SipdCPUPeak)+")", f2(r.GenCPUAvg),
				f2(r.SystemBusyAvg)+" / "+strconv.Itoa(r.CPUs), mb(r.RSSRegistered)+" / "+mb(r.RSSPeak), f1(r.BytesPerContact), f2(r.CPUPer100k()))
		}
		b.WriteString(t.Markdown() + "\n")
	}
	writeShared(&b, runs)
	for _, r := range rs {
		fmt.Fprintf(&b, "## %d subscribers, %s\n\n", r.Subscribers, r.Time.Format(time.RFC3339))
		fmt.Fprintf(&b, "Host %s, %d CPUs; transport %s, media %s; %d users provisioned; hold %.0f s; %d generator sockets. "+
			"The machine may be shared with other benchmarks: system busy is the whole machine.\n\n",
			r.Host, r.CPUs, r.Transport, r.Media, r.Users, r.Duration, r.GenSockets())
		fmt.Fprintf(&b, "Registration ramp: %d subscribers in %.1f s, %.0f/s (offered %.0f/s), sipd %.2f cores.\n\n",
			r.Subscribers, r.Ramp.Seconds, r.Ramp.Rate, r.RegisterRate, r.Ramp.CPUAvg)
		t := out.Table{Head: []string{"Class", "Offered /s", "Achieved /s", "Offered", "Completed", "Timeouts", "Non-2xx", "Retrans", "Retrans %", "Duplicates", "p50 ms", "p99 ms"}}
		for _, c := range r.Classes {
			t.Add(c.Name, f1(c.OfferedRate), f1(c.Achieved), strconv.FormatUint(c.Offered, 10), strconv.FormatUint(c.Completed, 10),
				strconv.FormatUint(c.Timeouts, 10), strconv.FormatUint(c.Non2xx, 10), strconv.FormatUint(c.Retrans, 10),
				strconv.FormatFloat(c.RetransPct, 'f', 3, 64), strconv.FormatUint(c.Dups, 10), f2(c.P50ms), f2(c.P99ms))
		}
		b.WriteString(t.Markdown() + "\n")
		m := out.Table{Head: []string{"Item", "Value"}}
		m.Add("sipd CPU during hold, avg / peak (cores)", f2(r.SipdCPUAvg)+" / "+f2(r.SipdCPUPeak))
		m.Add("generator CPU during hold (cores)", f2(r.GenCPUAvg))
		m.Add("generator datagrams during hold (per s, sent + received)", f1(r.GenMsgRate))
		m.Add("generator CPU per datagram (µs)", f2(r.GenUsPerMsg))
		m.Add("system busy during hold (cores)", f2(r.SystemBusyAvg))
		m.Add("sipd RSS idle / registered / peak (MB)", mb(r.RSSIdle)+" / "+mb(r.RSSRegistered)+" / "+mb(r.RSSPeak))
		m.Add("memory per registered contact (B)", f1(r.BytesPerContact))
		m.Add("sipd transactions, peak in hold / overall", strconv.FormatInt(r.TransactionsHold, 10)+" / "+strconv.FormatInt(r.TransactionsPeak, 10))
		m.Add("registrations after ramp / after hold", strconv.Itoa(r.HealthAfterRamp.Registrations)+" / "+strconv.Itoa(r.HealthAfterHold.Registrations))
		m.Add("sipd start with users loaded (s)", f1(r.StartSeconds))
		m.Add("generator send errors", strconv.FormatUint(r.SendDrops, 10))
		b.WriteString(m.Markdown() + "\n")
		if len(r.Nodes) > 0 {
			n := out.Table{Head: []string{"sipd node", "SIP", "CPU ramp (cores)", "CPU hold (cores)", "RSS registered MB"}}
			for _, nd := range r.Nodes {
				n.Add(nd.Name, nd.SIP, f2(nd.CPURampAvg), f2(nd.CPUHoldAvg), mb(nd.RSSRegistered))
			}
			b.WriteString(n.Markdown() + "\n")
		}
		if r.GenProfileTop != "" {
			b.WriteString("Generator CPU profile, the whole hold (gen-cpu.pprof in the run directory):\n\n```\n" + strings.TrimSpace(r.GenProfileTop) + "\n```\n\n")
		}
		if r.ProfileTop != "" {
			b.WriteString("sipd CPU profile, 10 s during the hold:\n\n```\n" + strings.TrimSpace(r.ProfileTop) + "\n```\n\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// GenSockets is the number of generator sockets.
func (r Result) GenSockets() int { return r.Shards }

// WriteSVG charts sipd's CPU (cores) and RSS (MB) against subscribers.
func WriteSVG(w io.Writer, rs []Result) error {
	if len(rs) == 0 {
		return errors.New("no results")
	}
	const cpu, rss = "#1f77b4", "#d62728"
	avg := out.Series{Label: "sipd CPU avg (cores)", Color: cpu}
	peak := out.Series{Label: "sipd CPU peak (cores)", Color: cpu, Dashed: true}
	mem := out.Series{Label: "sipd RSS peak (MB)", Color: rss, Right: true}
	for _, r := range rs {
		n := float64(r.Subscribers)
		avg.Points = append(avg.Points, out.Point{X: n, Y: r.SipdCPUAvg})
		peak.Points = append(peak.Points, out.Point{X: n, Y: r.SipdCPUPeak})
		mem.Points = append(mem.Points, out.Point{X: n, Y: float64(r.RSSPeak) / (1 << 20)})
	}
	return out.LineChart{
		Title:   "sipd CPU and RSS against subscribers",
		XLabel:  "subscribers",
		YLabel:  "cores",
		Y2Label: "MB",
		XTick:   func(x float64) string { return out.Count(int64(math.Round(x))) },
		Series:  []out.Series{avg, peak, mem},
	}.WriteSVG(w)
}

// writeShared is the table of runs whose location table was in Redis:
// registration throughput against it, what Redis spent per registration
// and holds per contact, and the calls that crossed nodes.
func writeShared(b *strings.Builder, rs []Result) {
	t := out.Table{Head: []string{"Subscribers", "sipd nodes", "Reg/s (ramp)", "Ramp failures", "p50 / p99 register ms",
		"Calls (cross-node)", "Failures", "sipd CPU ramp (cores)", "sipd µs / registration", "Redis CPU ramp (cores)",
		"Redis µs / registration", "Redis CPU hold (cores)", "Redis used_memory idle / registered MB", "Redis RSS MB", "Redis B / contact",
		"Redis keys", "used_memory at 1 M contacts (projected) MB"}}
	for _, r := range rs {
		x := r.Redis
		if x == nil {
			continue
		}
		ramp, call := r.Class("register-ramp"), r.Class("call")
		sipdUs := 0.0
		if r.Subscribers > 0 {
			sipdUs = r.Ramp.CPUAvg * r.Ramp.Seconds * 1e6 / float64(r.Subscribers)
		}
		t.Add(strconv.Itoa(r.Subscribers), strconv.Itoa(max(r.Proxies, 1)), f1(r.Ramp.Rate), strconv.FormatUint(ramp.Timeouts+ramp.Non2xx, 10),
			f2(ramp.P50ms)+" / "+f2(ramp.P99ms), strconv.FormatUint(call.Completed, 10)+" ("+strconv.FormatUint(r.CrossNodeCalls, 10)+")",
			strconv.FormatUint(r.Failures(), 10), f2(r.Ramp.CPUAvg), f1(sipdUs), f2(x.CPURampAvg), f1(x.CPUUsPerRegistration), f2(x.CPUHoldAvg),
			f1(float64(x.UsedMemoryIdle)/(1<<20))+" / "+f1(float64(x.UsedMemoryRegistered)/(1<<20)), mb(x.RSSRegistered),
			f1(x.BytesPerContact), strconv.FormatInt(x.Keys, 10), out.Count(int64(math.Round(x.projected(1e6)/(1<<20)))))
	}
	if len(t.Rows) == 0 {
		return
	}
	b.WriteString("## Location table in Redis\n\n")
	b.WriteString("Every sipd node stores and looks up bindings in one redis-server on loopback (sip.registrar.store: redis://...); " +
		"generator socket i registers and calls through node i mod nodes, so a call whose callee registered through another node " +
		"is cross-node. sipd CPU is the nodes' sum. Redis memory is INFO memory's used_memory; per contact is " +
		"(registered − idle) / subscribers, each with one contact hash and one AoR set. CPU per registration is the average cores " +
		"over the ramp × its length / subscribers. The 1 M projection is idle + 1,000,000 × bytes per contact, a straight line " +
		"from this run, not a measurement.\n\n")
	b.WriteString(t.Markdown() + "\n")
}
