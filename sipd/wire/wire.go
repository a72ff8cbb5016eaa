// Package wire holds the JSON shapes of sipd's HTTP API, shared by sipd,
// which writes them, and relayctl, which reads them.
package wire

import (
	"time"

	"sipxdp/relay/cryptoleg"
)

// MediaHealth summarises the relay.
type MediaHealth struct {
	Path             string `json:"path"`
	Reason           string `json:"reason"`
	Draining         bool   `json:"draining"`
	Sessions         int    `json:"sessions"`
	Flows            int    `json:"flows"`
	KernelFlows      int    `json:"kernel_flows"`
	UserspaceFlows   int    `json:"userspace_flows"`
	Packets          uint64 `json:"packets"`
	Bytes            uint64 `json:"bytes"`
	KernelPackets    uint64 `json:"kernel_packets"`
	UserspacePackets uint64 `json:"userspace_packets"`
	UserspaceSockets int    `json:"userspace_sockets"`
}

// FlowJSON is one flow in /flows.
type FlowJSON struct {
	CallID    string `json:"call_id"`
	Stream    int    `json:"stream"`
	Leg       string `json:"leg"`
	Component string `json:"component"`
	Local     string `json:"local"`
	Peer      string `json:"peer"`
	Out       string `json:"out"`
	Dst       string `json:"dst"`
	Path      string `json:"path"`
	State     string `json:"state"`
	// Latch is how far the flow learned its source: learning (nothing, or
	// a candidate held), provisional (forwarding, may still move to a
	// better source) or locked; Rank is how the source matched: exact
	// (SDP address and port), ip (SDP or signaling IP) or other.
	Latch       string    `json:"latch,omitempty"`
	Rank        string    `json:"rank,omitempty"`
	KernelError string    `json:"kernel_error,omitempty"`
	Packets     uint64    `json:"packets"`
	Bytes       uint64    `json:"bytes"`
	LastSeen    time.Time `json:"last_seen,omitzero"`
	// UserspaceOnly says why the flow cannot be on the kernel path at all
	// (SRTP bridged, RTCP demultiplexed); In and OutLeg are the crypto of
	// the leg it arrives on and the leg it leaves by (absent: plain RTP);
	// RTCPDst is where a muxed sender's RTCP goes when the receiver does
	// not mux.
	UserspaceOnly string          `json:"userspace_only,omitempty"`
	In            *cryptoleg.Info `json:"in,omitempty"`
	OutLeg        *cryptoleg.Info `json:"out_leg,omitempty"`
	RTCPDst       string          `json:"rtcp_dst,omitempty"`
	// TOS is the IP TOS byte the relay writes on the flow's packets
	// ("0xb8"; absent: the default), from the NG flag TOS.
	TOS string `json:"tos,omitempty"`
	// DropTraffic: the call's media is dropped (NG drop-traffic=start).
	DropTraffic bool `json:"drop_traffic,omitempty"`
}

// StatsJSON is /stats: totals and the slow-path counters.
type StatsJSON struct {
	MediaHealth
	KernelBytes         uint64            `json:"kernel_bytes"`
	UserspaceBytes      uint64            `json:"userspace_bytes"`
	KernelCounters      map[string]uint64 `json:"kernel_counters,omitempty"`
	KernelCountersError string            `json:"kernel_counters_error,omitempty"`
	UserspaceCounters   map[string]uint64 `json:"userspace_counters"`
	LatchDrops          uint64            `json:"latch_drops"`
	// WindowLocks: flows locked by the engine when their learning window
	// closed; the userspace counters have those locked on a packet.
	WindowLocks uint64 `json:"window_locks"`
	// PierceNAT: packets sent to open a side's NAT binding (the NG flag
	// pierce NAT), and sends the userspace relay refused.
	PierceNAT       uint64 `json:"pierce_nat,omitempty"`
	PierceNATErrors uint64 `json:"pierce_nat_errors,omitempty"`
	// Pools are the relay's addresses and their port pools.
	Pools []PoolJSON `json:"pools,omitempty"`
}

// PoolJSON is one relay address and the use of its port pool, counted in
// pairs (an RTP port and the RTCP port above it).
type PoolJSON struct {
	Name       string `json:"name"`
	Local      string `json:"local"`
	Advertised string `json:"advertised"` // written into SDP
	UsedPairs  int    `json:"used_pairs"`
	TotalPairs int    `json:"total_pairs"`
}

// RelayMember is one NG relay of media.relays as sipd sees it (in
// /health's "relays").
type RelayMember struct {
	URL       string    `json:"url"`
	Weight    int       `json:"weight"`
	State     string    `json:"state"`      // unknown, up, down, overloaded
	Calls     int       `json:"calls"`      // calls that stick to it now
	Offers    uint64    `json:"offers"`     // new calls it took
	Failovers uint64    `json:"failovers"`  // offers moved off it to the next relay
	LastError string    `json:"last_error"` // the last failure, if any
	LastCheck time.Time `json:"last_check"` // the last health check's end
	RTT       string    `json:"rtt"`        // the last ping's round trip, "0.180ms"
}
