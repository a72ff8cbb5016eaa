package callreport

import "time"

// Every Result here is a synthetic test fixture with round numbers chosen to
// make the expected output easy to compute by hand. None is a measurement.

func fptr(v float64) *float64 { return &v }

// fixture builds a complete-looking result for scenario at level.
func fixture(scenario string, level int, systemCPU float64) Result {
	r := Result{
		Scenario:    scenario,
		Level:       level,
		Command:     "bench calls --fixture",
		Time:        time.Date(2026, 4, 3, 12, 0, 0, 0, time.UTC),
		Host:        Host{Kernel: "6.1.0-fixture", CPUs: 2, MemGB: 4, Go: "go1.26.8"},
		Mode:        "all",
		Datapath:    scenario,
		Path:        scenario,
		Total:       level,
		CPS:         100,
		DurationS:   60,
		UASCount:    5,
		Attempted:   level,
		Completed:   level,
		StatusCodes: map[string]int{"200": level},
		SetupAvgMs:  4.4,
		SetupP99Ms:  12.5,
		JitterAvgMs: 0.2,
		JitterMaxMs: 1.5,
		RTTAvgMs:    0.3,
		RTTMaxMs:    2,
		TXPackets:   2994000,
		RXPackets:   2994000,
		UACTX:       1497000,
		UACRX:       1497000,
		RelayPkts:   2994000,
		PerCallPPS:  49.9,
		CallsPeak:   level,
		CallsAvg:    float64(level) * 0.95,
		SipdCPUAvg:  26,
		SipdCPUPeak: 32.5,
		RSSIdleMB:   20,
		RSSAvgMB:    25,
		RSSPeakMB:   20 + float64(level)*10/1024, // 10 KB per call
		SteadyS:     55,
		SteadyCalls: float64(level),
		SystemCPU:   systemCPU,
	}
	if scenario == NoneScenario {
		r.Mode, r.Datapath, r.Path = "none", "", "none"
		r.RelayPkts = 0
	}
	return r
}

// fixtureSet is two levels of none, userspace and xdp. Relay costs per call:
// userspace 0.05 % at both levels; xdp 0.008 % at 500 (meets its target,
// 6.25× cheaper) and 0.02 % at 800 (misses both xdp targets).
func fixtureSet() []Result {
	rs := []Result{
		fixture("xdp", 500, 44),
		fixture(NoneScenario, 500, 40),
		fixture("userspace", 500, 65),
		fixture(NoneScenario, 800, 60),
		fixture("userspace", 800, 100),
		fixture("xdp", 800, 76),
	}
	rs[2].BPFNsPerPkt = nil
	rs[0].BPFNsPerPkt = fptr(42.5)
	rs[0].BPFRuns = 1234567
	rs[2].Notes = []string{"fixture note A"}
	rs[4].Notes = []string{"fixture note A", "fixture note B"}
	return rs
}
