package callreport

import (
	"bytes"
	"strings"
	"testing"
)

func renderMarkdown(t *testing.T, rs []Result) string {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteMarkdown(&buf, rs); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// mdWant is a line a rendered report must hold, named for the failure.
type mdWant struct{ name, want string }

// checkMarkdown fails the test for each want md lacks, and then logs md.
func checkMarkdown(t *testing.T, md string, wants []mdWant) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(md, w.want) {
			t.Errorf("%s: report lacks %q", w.name, w.want)
		}
	}
	if t.Failed() {
		t.Log(md)
	}
}

func TestWriteMarkdown(t *testing.T) {
	rs := fixtureSet()
	rs[1].StatusCodes = map[string]int{"200": 499, "487": 1}
	rs[1].Completed = 499
	Derive(rs)
	md := renderMarkdown(t, rs)
	tests := []struct {
		name string
		want string
	}{
		{"environment header", "## Test environment"},
		{"environment network", "| Network | veth pairs between network namespaces |"},
		{"environment codec", "| Codec | G.711 PCMU, 20 ms |"},
		{"environment command", "`bench calls --fixture`"},
		{"level heading", "### 500 concurrent"},
		{"second level heading", "### 800 concurrent"},
		{"config line", "**Config:** CPS=100, total=500, duration=60s, 5 UAS. Steady 55s at full concurrency."},
		{"metric header", "| Metric | none | userspace | xdp |"},
		{"completion", "**499/500 (99.80%)**"},
		{"status codes", "| Status codes | 200:499, 487:1 | 200:500 | 200:500 |"},
		{"thousands", "| TX packets (UAC) | 1,497,000 |"},
		{"latency", "| Avg setup latency | 4.40 ms |"},
		{"relay cost missing for none", "| Relay cost vs none | – | +25.00% | +4.00% |"},
		{"relay cost per call", "| Relay cost per call | – | 0.0500% | 0.0080% |"},
		{"bpf", "42.5 ns (1,234,567 runs)"},
		{"comparison header", "| Level | Scenario | Completion | Peak conc | Loss | Setup latency | sipd CPU peak | sipd CPU avg | System CPU | Relay CPU | Mem peak |"},
		{"comparison row", "| **500** | xdp | 100% | **500** | 0.00% | 4.40 ms | **32.50%** | 26.00% | 44.00% | +4.00% | 24.9 MB |"},
		{"per-channel header", "| Metric | 500 (none) | 500 (userspace) | 500 (xdp) | 800 (none) | 800 (userspace) | 800 (xdp) |"},
		{"per-channel sipd", "| sipd CPU (peak) | **0.065%** |"},
		{"per-channel memory", "**10.0 KB**"},
		{"overhead header", "| Level | Path | none system CPU | Path system CPU | Delta | Ratio | Relay cost / call |"},
		{"overhead row", "| 500 | userspace | 40.00% | 65.00% | +25.00% | 1.62× | 0.0500% |"},
		{"speedup row", "| 500 | 0.0500% | xdp | 0.0080% | 6.2× |"},
		{"targets header", "| Target | Level | Measured | Result |"},
		{"completion missed", "| Every path completes 100 % of calls | 500 | none 499/500 (99.80%) | missed by 1 call |"},
		{"xdp met", "| xdp relay cost ≤ 0.012% of a core per call | 500 | 0.0080% | met |"},
		{"xdp missed", "| xdp relay cost ≤ 0.012% of a core per call | 800 | 0.0200% | missed by 0.0080 points (67% over) |"},
		{"speedup missed", "| xdp at least 5× cheaper than userspace | 800 | 2.5× (0.0500% vs 0.0200%) | missed by 2.5× (xdp would need ≤ 0.0100%) |"},
		{"memory met", "| sipd memory ≤ 20 KB per call above idle | 500 | worst 10.0 KB (none) | met |"},
		{"notes union", "- fixture note A\n- fixture note B\n"},
	}
	for _, tt := range tests {
		if !strings.Contains(md, tt.want) {
			t.Errorf("%s: report lacks %q", tt.name, tt.want)
		}
	}
	if strings.Count(md, "fixture note A") != 1 {
		t.Error("a note shared by two results is listed twice")
	}
	if t.Failed() {
		t.Log(md)
	}
}

func TestWriteMarkdownSkipsAbsentTargets(t *testing.T) {
	// Signaling only: no relay rows, nothing to compare against.
	rs := []Result{fixture(NoneScenario, 500, 40)}
	rs[0].MemPerCallKB = 0
	rs[0].RSSPeakMB = rs[0].RSSIdleMB + 500*25.0/1024
	Derive(rs)
	md := renderMarkdown(t, rs)
	for _, absent := range []string{"relay cost ≤", "cheaper than userspace", "| 500 | userspace"} {
		if strings.Contains(md, absent) {
			t.Errorf("report has %q with only a none result", absent)
		}
	}
	for _, want := range []string{
		"No `none` run at the same level",
		"| sipd memory ≤ 20 KB per call above idle | 500 | worst 25.0 KB (none) | missed by 5.0 KB (none) |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func TestWriteMarkdownWithoutNone(t *testing.T) {
	rs := []Result{fixture("xdp", 500, 40)}
	rs[0].LossAvgPct, rs[0].LossMaxPct = 0.25, 1.5
	Derive(rs)
	md := renderMarkdown(t, rs)
	for _, want := range []string{
		"| xdp relay cost ≤ 0.012% of a core per call | 500 | – | not measured (no none run at this level) |",
		"| Every path 0.00 % packet loss (avg) | 500 | worst 0.25% (xdp), max 1.50% | missed by 0.25 points (xdp) |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func TestWriteMarkdownEmpty(t *testing.T) {
	if md := renderMarkdown(t, nil); !strings.Contains(md, "No results.") {
		t.Errorf("empty report = %q", md)
	}
}

// bridgedSet is none, userspace and srtp at 500 calls, and srtp alone at
// 800. At 500, srtp's sipd costs 1.5× userspace's per call (met) and 2.5×
// its memory (missed).
func bridgedSet() []Result {
	rs := []Result{fixture(NoneScenario, 500, 40), fixture("userspace", 500, 65), fixture(SRTPScenario, 500, 90),
		fixture(SRTPScenario, 800, 120)}
	rs[1].SipdCPUSteady, rs[2].SipdCPUSteady = 20, 30
	rs[2].RSSPeakMB = 20 + 500*25.0/1024
	for _, i := range []int{2, 3} {
		rs[i].Mode, rs[i].Datapath, rs[i].Path = "all", "userspace", "userspace"
		rs[i].DTLSHandshakes, rs[i].DTLSFailed = rs[i].Level-2, 2
		rs[i].DTLSErrors = map[string]int{"timeout": 2}
		rs[i].DTLSMedianMs, rs[i].DTLSP99Ms, rs[i].DTLSMaxMs = 3.5, 12.25, 40
		rs[i].DTLSPerSec, rs[i].DTLSPeakPerSec = 99.5, 104
	}
	return rs
}

func TestWriteMarkdownBridged(t *testing.T) {
	rs := bridgedSet()
	Derive(rs)
	md := renderMarkdown(t, rs)
	for _, tt := range []struct{ name, want string }{
		{"order", "| Metric | none | userspace | srtp |"},
		{"handshakes", "| DTLS handshakes (ok / failed) | – | – | 498 / 2 (timeout:2) |"},
		{"handshake times", "| DTLS handshake (median / p99 / max) | – | – | 3.50 / 12.25 / 40.00 ms |"},
		{"handshake rate", "| DTLS handshakes/s (avg / peak 1 s) | – | – | 99.5 / 104 |"},
		{"bridged header", "| Level | userspace sipd CPU / call | srtp sipd CPU / call | Ratio | userspace memory / call | srtp memory / call | Ratio | srtp relay cost / call (vs none) |"},
		{"bridged row", "| 500 | 0.0400% | 0.0600% | 1.50× | 10.0 KB | 25.0 KB | 2.50× | 0.1000% |"},
		{"cpu target met", "| srtp sipd CPU per call ≤ 2× userspace's | 500 | 1.50× (0.0600% vs 0.0400%) | met |"},
		{"memory target missed", "| srtp sipd memory per call ≤ 2× userspace's | 500 | 2.50× (25.0 KB vs 10.0 KB) | missed by 0.50× |"},
		{"plain memory target leaves srtp out", "| sipd memory ≤ 20 KB per call above idle | 500 | worst 10.0 KB (none) | met |"},
	} {
		if !strings.Contains(md, tt.want) {
			t.Errorf("%s: report lacks %q", tt.name, tt.want)
		}
	}
	for _, absent := range []string{
		"| 800 | 0.",                                         // no bridged row without userspace at the level
		"srtp at least 5× cheaper", "| 500 | 0.0500% | srtp", // srtp is not a kernel path
		"| sipd memory ≤ 20 KB per call above idle | 800", // srtp alone: no plain memory row
		"| srtp sipd CPU per call ≤ 2× userspace's | 800",
	} {
		if strings.Contains(md, absent) {
			t.Errorf("report has %q", absent)
		}
	}
	if t.Failed() {
		t.Log(md)
	}
	// Plain scenarios' reports keep their tables: no handshake rows, no
	// bridged section.
	plain := renderMarkdown(t, func() []Result { rs := fixtureSet(); Derive(rs); return rs }())
	for _, absent := range []string{"DTLS", "Bridged calls", "srtp"} {
		if strings.Contains(plain, absent) {
			t.Errorf("a report without srtp has %q", absent)
		}
	}
}
