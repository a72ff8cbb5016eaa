package callreport

// NoneScenario is the signaling-only run that every relayed scenario's
// system CPU is measured against: with RTP flowing directly between the
// endpoints, what remains above it is the relay's own cost.
const NoneScenario = "none"

// SRTPScenario is the bridged call: WebRTC callers whose DTLS-SRTP leg
// sipd's userspace relay terminates, plain RTP toward the callees. It is
// held to a cost relative to the plain userspace relay.
const SRTPScenario = "srtp"

// Derive fills the computed fields of rs in place. It first clears them, so
// running it twice, or after a none result was dropped, leaves no stale
// relay cost behind.
func Derive(rs []Result) {
	// The first none result at a level is the baseline; duplicates at the
	// same level would come from a repeated run, and picking one is better
	// than averaging runs taken under different conditions.
	base := map[int]float64{}
	for _, r := range rs {
		if r.Scenario != NoneScenario {
			continue
		}
		if _, ok := base[r.Level]; !ok {
			base[r.Level] = r.SystemCPU
		}
	}
	for i := range rs {
		r := &rs[i]
		r.RelayCPU, r.RelayCPUPerCallPct = nil, nil
		if b, ok := base[r.Level]; ok && r.Scenario != NoneScenario {
			relay := r.SystemCPU - b
			r.RelayCPU = &relay
			if r.SteadyCalls > 0 {
				per := relay / r.SteadyCalls
				r.RelayCPUPerCallPct = &per
			}
		}
		r.SipdCPUPerCallPct, r.MemPerCallKB = 0, 0
		if r.CallsPeak > 0 {
			r.SipdCPUPerCallPct = r.SipdCPUPeak / float64(r.CallsPeak)
			r.MemPerCallKB = (r.RSSPeakMB - r.RSSIdleMB) * 1024 / float64(r.CallsPeak)
		}
	}
}

// systemCPUPerCall is the whole machine's CPU per steady call, which the
// chart plots for every path including none, so the relay's share can be
// seen against the signaling and load-generator floor.
func (r *Result) systemCPUPerCall() (float64, bool) {
	if r.SteadyCalls <= 0 {
		return 0, false
	}
	return r.SystemCPU / r.SteadyCalls, true
}
