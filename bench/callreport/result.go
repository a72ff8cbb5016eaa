// Package callreport holds the results of "bench calls" scenarios and
// writes them out: JSON lines, CSV, a Markdown report laid out like the
// reference benchmark (docs/reference.md [R1]) and an SVG chart.
package callreport

import "time"

// Result is one scenario at one load level, as measured.
//
// CPU figures are in percent of one core (100 = one core busy), like the
// reference's ps-based figures. Fields that a scenario cannot have (the
// relay's cost in the none scenario, BPF figures on userspace) are nil.
type Result struct {
	Scenario string    `json:"scenario"` // none, userspace, srtp, xdp, xdp-native, tc
	Level    int       `json:"level"`    // target concurrency: --total
	Command  string    `json:"command"`  // the bench command line that produced it
	Time     time.Time `json:"time"`
	Host     Host      `json:"host"`

	// What sipd ran with, and the path it reported on /health.
	Mode     string `json:"mode"`     // media.mode: none or all
	Datapath string `json:"datapath"` // media.datapath asked for
	Path     string `json:"path"`     // media path sipd reported

	Total     int     `json:"total"`
	CPS       float64 `json:"cps"`
	DurationS float64 `json:"duration_s"`
	UASCount  int     `json:"uas_count"`

	Attempted   int            `json:"attempted"`
	Completed   int            `json:"completed"`
	Failed      int            `json:"failed"`
	StatusCodes map[string]int `json:"status_codes"` // "200": n; "timeout": n for no answer

	SetupAvgMs float64 `json:"setup_avg_ms"`
	SetupP99Ms float64 `json:"setup_p99_ms"`
	LossAvgPct float64 `json:"loss_avg_pct"`
	LossMaxPct float64 `json:"loss_max_pct"`
	// Interarrival jitter (RFC 3550) of the echoed stream at the caller,
	// and round-trip time from RTCP (LSR/DLSR of the callee's reports).
	JitterAvgMs float64 `json:"jitter_avg_ms"`
	JitterMaxMs float64 `json:"jitter_max_ms"`
	RTTAvgMs    float64 `json:"rtt_avg_ms"`
	RTTMaxMs    float64 `json:"rtt_max_ms"`

	TXPackets  uint64  `json:"tx_packets"` // RTP sent by callers and callees
	RXPackets  uint64  `json:"rx_packets"` // RTP received by callers and callees
	UACTX      uint64  `json:"uac_tx"`     // RTP the callers sent
	UACRX      uint64  `json:"uac_rx"`     // RTP the callers received back
	RTCPTX     uint64  `json:"rtcp_tx"`
	RTCPRX     uint64  `json:"rtcp_rx"`
	RelayPkts  uint64  `json:"relay_packets"` // packets sipd's relay counted (0 with media none)
	PerCallPPS float64 `json:"per_call_pps"`  // caller RTP packets per second per completed call

	CallsPeak int     `json:"calls_peak"` // concurrent calls on sipd's /health
	CallsAvg  float64 `json:"calls_avg"`  // over the sampled run

	// sipd's own process, sampled once a second over the whole run.
	SipdCPUAvg  float64 `json:"sipd_cpu_avg"`
	SipdCPUPeak float64 `json:"sipd_cpu_peak"`
	RSSIdleMB   float64 `json:"rss_idle_mb"` // before the first call
	RSSAvgMB    float64 `json:"rss_avg_mb"`
	RSSPeakMB   float64 `json:"rss_peak_mb"`

	// The steady window: every call up, none hung up yet.
	SteadyS        float64 `json:"steady_s"`
	SteadyCalls    float64 `json:"steady_calls"`     // average concurrent calls in it
	SystemCPU      float64 `json:"system_cpu"`       // wall × CPUs − idle, whole machine, less OtherCPUSteady
	SipdCPUSteady  float64 `json:"sipd_cpu_steady"`  // sipd alone
	LoadCPUSteady  float64 `json:"load_cpu_steady"`  // the load generator's processes
	OtherCPUSteady float64 `json:"other_cpu_steady"` // every other process: someone else's work
	// The relay's cost: SystemCPU minus the none scenario's at the same
	// level (nil for none, or when none was not run).
	RelayCPU *float64 `json:"relay_cpu,omitempty"`

	// Per channel (per concurrent call in the steady window).
	SipdCPUPerCallPct  float64  `json:"sipd_cpu_per_call_pct"`  // SipdCPUPeak / CallsPeak, as the reference
	RelayCPUPerCallPct *float64 `json:"relay_cpu_per_call_pct"` // RelayCPU / SteadyCalls
	MemPerCallKB       float64  `json:"mem_per_call_kb"`        // (RSSPeak − RSSIdle) / CallsPeak

	// The WebRTC callers' DTLS-SRTP handshakes with the relay (scenario
	// srtp; absent otherwise): per call from the 200 OK to ICE and DTLS
	// done at the caller; the rate they completed at, first to last, and
	// the most done within one second; failures by kind (ice, timeout,
	// fingerprint, alert, ended, other).
	DTLSHandshakes int            `json:"dtls_handshakes,omitempty"`
	DTLSFailed     int            `json:"dtls_failed,omitempty"`
	DTLSMedianMs   float64        `json:"dtls_median_ms,omitempty"`
	DTLSP99Ms      float64        `json:"dtls_p99_ms,omitempty"`
	DTLSMaxMs      float64        `json:"dtls_max_ms,omitempty"`
	DTLSPerSec     float64        `json:"dtls_per_sec,omitempty"`
	DTLSPeakPerSec int            `json:"dtls_peak_per_sec,omitempty"`
	DTLSErrors     map[string]int `json:"dtls_errors,omitempty"`

	// The BPF program over the steady window, with kernel.bpf_stats_enabled.
	BPFNsPerPkt *float64 `json:"bpf_ns_per_pkt,omitempty"`
	BPFRuns     uint64   `json:"bpf_runs,omitempty"`

	// RelayNodes are the sipd -relay-only nodes sipd drove over NG
	// (scenario relays), each in a namespace of its own; sipd relayed
	// nothing itself.
	RelayNodes []RelayNode `json:"relay_nodes,omitempty"`

	// ProxyNodes are the sipd of scenario proxies, sharing one Redis;
	// SipdCPUSteady and the sampled sipd figures are then theirs summed.
	ProxyNodes []ProxyNode `json:"proxy_nodes,omitempty"`
	// RedisCPUSteady is redis-server's CPU in the steady window (percent
	// of a core), RedisUsedMB its INFO used_memory at the end.
	RedisCPUSteady *float64 `json:"redis_cpu_steady,omitempty"`
	RedisUsedMB    float64  `json:"redis_used_mb,omitempty"`

	Notes []string `json:"notes,omitempty"`
}

// RelayNode is one relay of a relay set over a scenario.
type RelayNode struct {
	Name    string `json:"name"`
	NG      string `json:"ng"`      // its NG address, as in media.relays
	Path    string `json:"path"`    // the media path it reported
	Offers  uint64 `json:"offers"`  // new calls sipd gave it
	Packets uint64 `json:"packets"` // packets it relayed
	// SteadyCalls is its share of the steady window's calls, by offers.
	SteadyCalls float64 `json:"steady_calls"`
	// CPUSteady is its process's CPU in the steady window (percent of a
	// core); the kernel hook's packet work is not in any process.
	CPUSteady float64 `json:"cpu_steady"`
	// CPUPerCallPct is CPUSteady / SteadyCalls.
	CPUPerCallPct float64 `json:"cpu_per_call_pct"`
	RSSMB         float64 `json:"rss_mb"` // at the end of the steady window
}

// ProxyNode is one sipd of several sharing the users and calls.
type ProxyNode struct {
	Name      string `json:"name"`
	SIP       string `json:"sip"`       // its SIP listener
	Path      string `json:"path"`      // the media path it reported
	Completed uint64 `json:"completed"` // calls it saw end normally
	Packets   uint64 `json:"packets"`   // packets its relay relayed
	// SteadyCalls is its confirmed calls over the steady window, averaged.
	SteadyCalls float64 `json:"steady_calls"`
	// CPUSteady is its process's CPU in the steady window (percent of a
	// core); the kernel hook's packet work is not in any process.
	CPUSteady     float64 `json:"cpu_steady"`
	CPUPerCallPct float64 `json:"cpu_per_call_pct"` // CPUSteady / SteadyCalls
	RSSMB         float64 `json:"rss_mb"`           // at the end of the run
}

// Host describes the machine a result was measured on.
type Host struct {
	Kernel string  `json:"kernel"`
	CPUs   int     `json:"cpus"`
	MemGB  float64 `json:"mem_gb"`
	Go     string  `json:"go"`
}
