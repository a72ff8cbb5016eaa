//go:build ignore

// Maps shared by the XDP and tc programs. Both objects declare the same
// maps so the loader can hand one set of (pinned) maps to either program.
#pragma once

#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

// 50,000 calls x 2 legs x (RTP + RTCP), rounded up to a power of two so
// the hash table keeps headroom and never fails an insert at the target.
#define MAX_FLOWS 262144
#define MAX_PORTS 64

#define FLOW_LEARNING   (1 << 0) // peer not latched yet: pass everything up
#define FLOW_PINNED_MAC (1 << 1) // use src_mac/dst_mac/out_ifindex, skip FIB
#define FLOW_LOCAL      (1 << 2) // destination is on this host: rewrite, pass up, skip FIB
#define FLOW_TOS        (1 << 3) // write the TOS byte in flags' top 8 bits (FLOW_TOS_SHIFT)
// out_addr and dst_addr are of the other family than the key: the packet
// changes between IPv4 and IPv6 (see relay.h, relay_xlate). The loader
// sets it only when the program was loaded with cross_family on.
#define FLOW_XLATE      (1 << 4)
// The call's media is dropped (rtpengine's drop-traffic=start): a packet
// from the flow's peer is discarded and counted in cnt_dropped, not in the
// flow, as rtpengine drops it before its stream counts it.
#define FLOW_DROP       (1 << 5)
// Bits 6-7 are free; bits 8-15 are the TOS byte.
#define FLOW_TOS_SHIFT  8

// Addresses are 16 bytes in network order; IPv4 is stored v4-mapped
// (::ffff:a.b.c.d) so one key type serves both families. pad must be zero.
struct flow_key {
	__u8 addr[16];
	__be16 port; // network order
	__u16 pad;
};

// Field order keeps every address 4-byte aligned inside the value.
struct flow_value {
	__u8 peer_addr[16]; // expected source, v4-mapped for IPv4, network order
	__u8 out_addr[16];  // new source: the relay's other-leg address
	__u8 dst_addr[16];  // new destination: the other peer
	__be16 peer_port;   // network order
	__be16 out_port;    // network order
	__be16 dst_port;    // network order
	__u16 flags;        // FLOW_* bits, host order; bits 8-15: the TOS for FLOW_TOS
	__u32 out_ifindex;  // host order; used with FLOW_PINNED_MAC
	__u8 src_mac[6];
	__u8 dst_mac[6];
	// Next hop cached from the last FIB lookup, so a flow without pinned
	// MACs pays for the lookup once per NH_TTL_NS rather than per packet.
	// The loader writes zeros (no cache) on every upsert.
	__u32 nh_ifindex;   // host order; 0: nothing cached, NH_LOCAL_IFINDEX: local delivery
	__u8 nh_smac[6];
	__u8 nh_dmac[6];
	__u64 nh_expires;   // bpf_ktime_get_coarse_ns deadline, host order
	__u64 packets;      // host order, atomic adds
	__u64 bytes;        // UDP payload bytes, host order, atomic adds
	__u64 last_seen;    // bpf_ktime_get_coarse_ns (CLOCK_MONOTONIC), host order
};

// Verdicts first, then the reasons a frame goes to the slow path. The
// loader derives counter names from these enumerator names minus "cnt_",
// so the reasons must spell the fixture table's reason names.
enum counter {
	cnt_tx,
	cnt_redirect,
	cnt_pass,
	cnt_aborted,
	cnt_not_ip,
	cnt_not_udp,    // also: IPv4 without a UDP checksum on a flow to IPv6, too long to sum (relay.h)
	cnt_truncated,
	cnt_fragment,
	cnt_ip_options,
	cnt_ipv6_ext,
	cnt_no_flow,
	cnt_learning,
	cnt_wrong_source,
	cnt_fib,
	cnt_port_range, // destination port outside the relay range: no lookup
	cnt_no_egress,  // egress device missing from the devmap (XDP only)
	cnt_local,      // rewritten for a destination on this host and passed up to it
	cnt_dropped,    // from a flow's peer while the call drops its media (FLOW_DROP)
	cnt_max,
};

// Relay flows, one per direction: flow_key -> flow_value (see above).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} flows SEC(".maps");

// Per-CPU packet counters indexed by enum counter; u64 host order.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, cnt_max);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

// XDP redirect targets: ifindex -> ifindex (host order) of every attached
// interface; only the XDP program uses it.
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, MAX_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} tx_ports SEC(".maps");

// Load-time settings. Destination ports outside [port_min, port_max] are
// not relay ports and skip the flow lookup.
volatile const __u16 port_min = 0;
volatile const __u16 port_max = 65535;
// 0 leaves the IPv4<->IPv6 translation out: the verifier prunes it as dead
// code, for a kernel that refuses it (bpf/caps.go, crossFamily).
volatile const __u8 cross_family = 1;

// Not read by the programs: it puts enum counter into BTF so bpf2go can
// generate it and the loader can name the counters from the enumerators.
volatile const enum counter counter_count = cnt_max;

static __always_inline void count(__u32 c)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &c);
	if (v)
		*v += 1; // per-CPU slot: no other writer
}
