package ngbackend

import (
	"sync"
	"testing"
	"time"

	"sipxdp/ng"
	"sipxdp/relay"
)

// totalsSource hands out the totals a test sets.
type totalsSource struct {
	mu sync.Mutex
	t  relay.Totals
}

func (s *totalsSource) Stats() relay.Totals {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t
}

func (s *totalsSource) set(t relay.Totals) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.t = t
}

// TestStatistics: the statistics command's engine fields
// (ng_control_protocol.md: statistics Message; rtpengine's
// statistics.c) add the kernel's and userspace's totals, count as
// errors what rtpengine's relayedpacketerrors does, and take the ended
// and foreign calls from their sources.
func TestStatistics(t *testing.T) {
	ended := ng.EndedStats{Managed: 2, Regular: 2}
	for _, tc := range []struct {
		name string
		in   relay.Totals
		o    StatsOptions
		want ng.EngineStats
	}{
		{"idle", relay.Totals{}, StatsOptions{}, ng.EngineStats{}},
		{"both paths", relay.Totals{Sessions: 2, KernelPackets: 10, KernelBytes: 1720, UserspacePackets: 3, UserspaceBytes: 516},
			StatsOptions{}, ng.EngineStats{Sessions: 2, Packets: 13, Bytes: 2236}},
		{"errors: userspace send, SRTP, oversize; kernel aborted", relay.Totals{
			UserspaceCounters: map[string]uint64{"send_error": 1, "srtp": 2, "oversize": 3, "foreign": 50},
			KernelCounters:    map[string]uint64{"aborted": 4, "pass": 9}},
			StatsOptions{}, ng.EngineStats{Errors: 10}},
		{"kernel counters unreadable: userspace errors only", relay.Totals{
			UserspaceCounters: map[string]uint64{"send_error": 1}, KernelCounters: map[string]uint64{"aborted": 4},
			KernelCountersError: "map gone"}, StatsOptions{}, ng.EngineStats{Errors: 1}},
		{"ended and foreign", relay.Totals{Sessions: 3},
			StatsOptions{Ended: func() ng.EndedStats { return ended }, Foreign: func() int { return 1 }},
			ng.EngineStats{Sessions: 3, Foreign: 1, Ended: ended}},
	} {
		if got := Statistics(&totalsSource{t: tc.in}, tc.o)(); got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// TestStatisticsRates: packetrate, byterate and errorrate are the totals'
// growth per second since the previous sample, taken at most once per
// RateInterval (a request sooner gets the same rates).
func TestStatisticsRates(t *testing.T) {
	src := &totalsSource{}
	now := time.Unix(1000, 0)
	stats := Statistics(src, StatsOptions{Now: func() time.Time { return now }})
	steps := []struct {
		after                 time.Duration
		packets, bytes, errs  uint64
		wantP, wantB, wantErr uint64
	}{
		{0, 0, 0, 0, 0, 0, 0},
		{2 * time.Second, 100, 17200, 4, 50, 8600, 2},          // over 2 s
		{500 * time.Millisecond, 1000, 172000, 4, 50, 8600, 2}, // too soon: same rates
		{time.Second, 1100, 189200, 4, 666, 114666, 0},         // 1000 packets over 1.5 s since step 1
		{time.Second, 1000, 172000, 4, 0, 0, 0},                // counters went back
	}
	for i, s := range steps {
		now = now.Add(s.after)
		src.set(relay.Totals{UserspacePackets: s.packets, UserspaceBytes: s.bytes,
			UserspaceCounters: map[string]uint64{"send_error": s.errs}})
		got := stats()
		if got.PacketRate != s.wantP || got.ByteRate != s.wantB || got.ErrorRate != s.wantErr {
			t.Errorf("step %d: rates %d/%d/%d, want %d/%d/%d", i, got.PacketRate, got.ByteRate, got.ErrorRate, s.wantP, s.wantB, s.wantErr)
		}
	}
}
