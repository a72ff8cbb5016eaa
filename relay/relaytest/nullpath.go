package relaytest

import "sipxdp/relay"

// NullPath is a userspace datapath that forwards nothing and holds no
// flows: for tests and benchmarks of the engine's port allocation and leg
// choice, and of the controllers above it, not of packets.
type NullPath struct{}

func (NullPath) Name() string                                 { return "userspace" }
func (NullPath) Upsert(relay.Flow) error                      { return nil }
func (NullPath) Delete(relay.FlowKey) error                   { return nil }
func (NullPath) Stats(relay.FlowKey) (relay.FlowStats, error) { return relay.FlowStats{}, nil }
func (NullPath) Close() error                                 { return nil }
func (NullPath) Counters() map[string]uint64                  { return nil }
func (NullPath) Sockets() int                                 { return 0 }
