package ngbackend

import (
	"testing"

	"sipxdp/ng"
	"sipxdp/relay"
)

type totalsSource relay.Totals

func (t totalsSource) Stats() relay.Totals { return relay.Totals(t) }

// TestStatistics: the statistics command's engine fields
// (ng_control_protocol.md: statistics Message, sessionstotal and
// relayedpackets) add the kernel's and userspace's totals.
func TestStatistics(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   relay.Totals
		want ng.EngineStats
	}{
		{"idle", relay.Totals{}, ng.EngineStats{}},
		{"both paths", relay.Totals{Sessions: 2, KernelPackets: 10, KernelBytes: 1720, UserspacePackets: 3, UserspaceBytes: 516},
			ng.EngineStats{Sessions: 2, Packets: 13, Bytes: 2236}},
	} {
		if got := Statistics(totalsSource(tc.in))(); got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
