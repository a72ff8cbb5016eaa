package ngbackend

import (
	"sipxdp/ng"
	"sipxdp/relay"
)

// StatsSource is what Statistics reads: relay.Engine's totals.
type StatsSource interface {
	Stats() relay.Totals
}

// Statistics returns the ng.Options.Statistics function for eng: the
// sessions now relayed, and the packets and bytes relayed since the
// engine started by either path. Errors stays 0: the engine counts no
// per-packet relay errors the way rtpengine's relayedpacketerrors does
// (what it drops it counts under reasons of its own, in /metrics).
func Statistics(eng StatsSource) func() ng.EngineStats {
	return func() ng.EngineStats {
		t := eng.Stats()
		return ng.EngineStats{
			Sessions: t.Sessions,
			Packets:  t.KernelPackets + t.UserspacePackets,
			Bytes:    t.KernelBytes + t.UserspaceBytes,
		}
	}
}
