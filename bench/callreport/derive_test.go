package callreport

import (
	"math"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestDerive(t *testing.T) {
	tests := []struct {
		name      string
		rs        []Result
		idx       int
		relay     *float64
		relayCall *float64
	}{
		{"relay from none at the same level", fixtureSet(), 0, fptr(4), fptr(0.008)},
		{"userspace at 800 uses none at 800", fixtureSet(), 4, fptr(40), fptr(0.05)},
		{"none has no relay cost", fixtureSet(), 1, nil, nil},
		{"no none at the level", []Result{fixture("xdp", 500, 45), fixture(NoneScenario, 800, 40)}, 0, nil, nil},
		{"relay cost without steady calls", func() []Result {
			rs := []Result{fixture(NoneScenario, 500, 40), fixture("tc", 500, 50)}
			rs[1].SteadyCalls = 0
			return rs
		}(), 1, fptr(10), nil},
		{"negative relay cost is kept", []Result{fixture(NoneScenario, 500, 40), fixture("xdp", 500, 39)}, 1, fptr(-1), fptr(-0.002)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A stale value must be cleared, not kept.
			tt.rs[tt.idx].RelayCPU = fptr(999)
			tt.rs[tt.idx].RelayCPUPerCallPct = fptr(999)
			Derive(tt.rs)
			r := tt.rs[tt.idx]
			checkOpt(t, "RelayCPU", r.RelayCPU, tt.relay)
			checkOpt(t, "RelayCPUPerCallPct", r.RelayCPUPerCallPct, tt.relayCall)
		})
	}
}

func checkOpt(t *testing.T, name string, got, want *float64) {
	t.Helper()
	switch {
	case got == nil && want == nil:
	case got == nil || want == nil:
		t.Errorf("%s = %v, want %v", name, got, want)
	case !near(*got, *want):
		t.Errorf("%s = %v, want %v", name, *got, *want)
	}
}

func TestDerivePerCall(t *testing.T) {
	rs := fixtureSet()
	Derive(rs)
	r := rs[1] // none at 500
	if !near(r.SipdCPUPerCallPct, 32.5/500) {
		t.Errorf("SipdCPUPerCallPct = %v, want %v", r.SipdCPUPerCallPct, 32.5/500)
	}
	if !near(r.MemPerCallKB, 10) {
		t.Errorf("MemPerCallKB = %v, want 10", r.MemPerCallKB)
	}

	idle := []Result{fixture("xdp", 500, 45)}
	idle[0].CallsPeak = 0
	Derive(idle)
	if idle[0].SipdCPUPerCallPct != 0 || idle[0].MemPerCallKB != 0 {
		t.Errorf("with no calls: sipd per call %v, mem per call %v, want 0 and 0",
			idle[0].SipdCPUPerCallPct, idle[0].MemPerCallKB)
	}
}
