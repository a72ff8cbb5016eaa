//go:build ignore

// The relay decision shared by the XDP and tc programs: parse, look up the
// flow, check the source, and build the rewritten address block. Each hook
// applies the rewrite its own way (direct writes in XDP, checksum helpers
// in tc, which also understand CHECKSUM_PARTIAL skbs).
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "maps.h"
#include "parse.h"
#include "csum.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

// Source and destination addresses followed by the UDP ports: contiguous in
// the packet for IPv4 without options (12 bytes at l3+12) and for IPv6
// without extension headers (36 bytes at l3+8), so one block covers the
// whole rewrite.
#define BLK4_OFF 12
#define BLK4_WORDS 6
#define BLK6_OFF 8
#define BLK6_WORDS 18

// An IPv6 header is this much longer than an IPv4 header without options.
#define XLATE_DIFF 20

struct block {
	__u16 w[BLK6_WORDS];
};

// Returns a pass reason, or -1 with *out set when the frame should be
// relayed.
static __always_inline int relay_match(void *data, void *data_end, __u64 pkt_len,
				       struct parsed *p, struct flow_value **out)
{
	int r = parse_udp(data, data_end, pkt_len, p);
	if (r >= 0)
		return r;

	__u16 dport = bpf_ntohs(p->key.port);
	if (dport < port_min || dport > port_max)
		return cnt_port_range;

	struct flow_value *v = bpf_map_lookup_elem(&flows, &p->key);
	if (!v)
		return cnt_no_flow;
	if (v->flags & FLOW_LEARNING)
		return cnt_learning;
	if (p->udp->source != v->peer_port)
		return cnt_wrong_source;
	if (p->v6) {
		struct ipv6hdr *ip6 = p->l3;
		__u32 *a = (__u32 *)&ip6->saddr;
		__u32 *b = (__u32 *)v->peer_addr;
		if ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]))
			return cnt_wrong_source;
	} else {
		struct iphdr *ip = p->l3;
		if (ip->saddr != *(__u32 *)&v->peer_addr[12])
			return cnt_wrong_source;
	}
	*out = v;
	return -1;
}

// The new address block (Out, Dst, ports) in packet layout.
static __always_inline void relay_block(const struct flow_value *v, __u8 v6, struct block *nb)
{
	if (v6) {
		__builtin_memcpy(&nb->w[0], v->out_addr, 16);
		__builtin_memcpy(&nb->w[8], v->dst_addr, 16);
		nb->w[16] = v->out_port;
		nb->w[17] = v->dst_port;
	} else {
		__builtin_memcpy(&nb->w[0], &v->out_addr[12], 4);
		__builtin_memcpy(&nb->w[2], &v->dst_addr[12], 4);
		nb->w[4] = v->out_port;
		nb->w[5] = v->dst_port;
	}
}

// The flow's TOS byte (IPv6: traffic class), meaningful with FLOW_TOS.
static __always_inline __u8 relay_flow_tos(const struct flow_value *v)
{
	return v->flags >> FLOW_TOS_SHIFT;
}

// The IP header's first 16 bits as the flow sends them: with FLOW_TOS,
// the IPv4 TOS byte or the IPv6 traffic class replaced by the flow's
// (rtpengine's TOS, written whole, ECN bits included, as rtpengine's
// kernel module does); otherwise old, the packet's own. IPv4: version and
// IHL, then TOS. IPv6: version and the class's top 4 bits, then its low 4
// bits and the flow label's top 4. Raw packet order in and out, so the
// checksum arithmetic of csum.h applies unchanged.
static __always_inline __u16 relay_tos_word(const struct flow_value *v, __u8 v6, __u16 old)
{
	if (!(v->flags & FLOW_TOS))
		return old;
	__u8 tos = relay_flow_tos(v);
	__u8 b[2];
	__builtin_memcpy(b, &old, 2);
	if (v6) {
		b[0] = (b[0] & 0xf0) | (tos >> 4);
		b[1] = (__u8)(tos << 4) | (b[1] & 0x0f);
	} else {
		b[1] = tos;
	}
	__u16 w;
	__builtin_memcpy(&w, b, 2);
	return w;
}

// The traffic class of an IPv6 header, which IPv4 calls TOS.
static __always_inline __u8 ipv6_tclass(const struct ipv6hdr *ip6)
{
	return ip6->priority << 4 | ip6->flow_lbl[0] >> 4;
}

// Fills a FIB query for the rewritten packet; ifindex is the ingress device.
// xl (a constant at each call site) says the packet changes family
// (FLOW_XLATE): the query is for the other family and a header 20 bytes
// longer or shorter.
static __always_inline void relay_fib_params(const struct flow_value *v, const struct parsed *p,
					     __u8 xl, __u32 ifindex, struct bpf_fib_lookup *f)
{
	f->l4_protocol = IPPROTO_UDP;
	f->sport = v->out_port;
	f->dport = v->dst_port;
	f->tot_len = p->l3_len;
	if (xl)
		f->tot_len = p->v6 ? p->l3_len - XLATE_DIFF : p->l3_len + XLATE_DIFF;
	f->ifindex = ifindex;
	if (p->v6 ^ xl) {
		f->family = AF_INET6;
		__builtin_memcpy(f->ipv6_src, v->out_addr, 16);
		__builtin_memcpy(f->ipv6_dst, v->dst_addr, 16);
	} else {
		f->family = AF_INET;
		if (v->flags & FLOW_TOS)
			f->tos = relay_flow_tos(v);
		else if (xl)
			f->tos = ipv6_tclass(p->l3);
		else
			f->tos = ((struct iphdr *)p->l3)->tos;
		f->ipv4_src = *(__u32 *)&v->out_addr[12];
		f->ipv4_dst = *(__u32 *)&v->dst_addr[12];
	}
}

// How long a cached FIB answer is used. A changed route or neighbour MAC
// takes effect within this time; a lookup costs several hundred ns, so
// doing it once a second instead of 50 times is most of a hit's cost.
#define NH_TTL_NS 1000000000ULL

enum nh_result {
	NH_OK,       // egress and MACs set
	NH_NO_NEIGH, // route found, neighbour unresolved: egress set, MACs not
	NH_LOCAL,    // the destination is on this host: rewrite and pass up
	NH_FAIL,     // no route: pass to the stack
};

// Cached in nh_ifindex for a destination on this host (no device has this
// index). Calls between phones on the relay host itself, such as sipd on
// loopback, need it: the kernel path must deliver locally, since once a
// flow is latched no relay socket is left to take the packet.
#define NH_LOCAL_IFINDEX 0xffffffffu

// Resolves the next hop of a flow: local delivery or the pinned MACs when
// the loader set them, else the cached answer while fresh, else
// bpf_fib_lookup, whose answer is cached in the flow.
// Concurrent CPUs may refresh the cache at once; they write the same answer.
// macs receives the destination then the source MAC, as on the wire.
static __always_inline enum nh_result relay_nexthop(void *ctx, struct flow_value *v,
						    const struct parsed *p, __u8 xl, __u32 ifindex,
						    __u64 now, __u32 *egress, __u8 *macs)
{
	// The loader knows some answers already: a destination on this host,
	// or a next hop pinned by the control plane.
	if (v->flags & FLOW_LOCAL)
		return NH_LOCAL;
	if (v->flags & FLOW_PINNED_MAC) {
		*egress = v->out_ifindex;
		__builtin_memcpy(macs, v->dst_mac, ETH_ALEN);
		__builtin_memcpy(macs + ETH_ALEN, v->src_mac, ETH_ALEN);
		return NH_OK;
	}
	if (v->nh_ifindex && now < v->nh_expires) {
		if (v->nh_ifindex == NH_LOCAL_IFINDEX)
			return NH_LOCAL;
		*egress = v->nh_ifindex;
		__builtin_memcpy(macs, v->nh_dmac, ETH_ALEN);
		__builtin_memcpy(macs + ETH_ALEN, v->nh_smac, ETH_ALEN);
		return NH_OK;
	}
	struct bpf_fib_lookup f = {};
	relay_fib_params(v, p, xl, ifindex, &f);
	long rc = bpf_fib_lookup(ctx, &f, sizeof(f), 0);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		*egress = f.ifindex;
		return NH_NO_NEIGH;
	}
	if (rc == BPF_FIB_LKUP_RET_NOT_FWDED) {
		// Not a unicast route: a local address (broadcast RTP is not a
		// thing), so the rewritten packet is for a socket on this host.
		v->nh_expires = now + NH_TTL_NS;
		v->nh_ifindex = NH_LOCAL_IFINDEX;
		return NH_LOCAL;
	}
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return NH_FAIL;
	*egress = f.ifindex;
	__builtin_memcpy(macs, f.dmac, ETH_ALEN);
	__builtin_memcpy(macs + ETH_ALEN, f.smac, ETH_ALEN);
	__builtin_memcpy(v->nh_dmac, f.dmac, ETH_ALEN);
	__builtin_memcpy(v->nh_smac, f.smac, ETH_ALEN);
	v->nh_expires = now + NH_TTL_NS;
	v->nh_ifindex = f.ifindex;
	return NH_OK;
}

// now is bpf_ktime_get_coarse_ns(): tick resolution is plenty for idle
// timeouts and the FIB cache, and on this VM's clocksource bpf_ktime_get_ns
// costs ~40 ns, a third of a hit. Both read CLOCK_MONOTONIC, so userspace
// converts either the same way.
static __always_inline void relay_account(struct flow_value *v, const struct parsed *p, __u64 now)
{
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, p->payload_len);
	v->last_seen = now;
}

// What a translated packet (FLOW_XLATE) needs from its old headers, read
// before either hook moves them: the header fields carried over and the UDP
// checksum deltas. The new addresses and ports are read from the flow as
// they are written, which keeps this small: the hooks' translation runs
// in a subprogram whose stack adds to the main program's.
struct xlate {
	__u32 da;       // pseudo-header change: the addresses (folded)
	__u32 dp;       // the ports (folded)
	__u16 l4_len;   // IP payload length: UDP header, payload, anything after
	__u16 check;    // the old UDP checksum
	__u8 tos;       // IPv4 TOS = IPv6 traffic class, as sent (FLOW_TOS)
	__u8 ttl;       // IPv4 TTL = IPv6 hop limit
};

static __always_inline __u32 fold32(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	return (__u32)s;
}

// The pseudo-headers of IPv4 and IPv6 differ only in the addresses:
// protocol 17 and the UDP length land on the same 16-bit positions of the
// one's-complement sum (RFC 768, RFC 8200 8.1). So the UDP checksum follows
// from the address and port deltas alone; the payload is not read, except
// for an IPv4 datagram without a checksum (relay_udp4_csum). Returns -1,
// or a pass reason when the packet cannot be translated here.
static __always_inline int relay_xlate_prepare(const struct flow_value *v, const struct parsed *p,
					       struct xlate *x)
{
	x->check = p->udp->check;
	__u64 ports = csum_add16(&v->out_port, 1) + csum_add16(&v->dst_port, 1);
	if (p->v6) {
		struct ipv6hdr *ip6 = p->l3;
		__u16 *old = (void *)ip6 + BLK6_OFF;
		x->tos = ipv6_tclass(ip6);
		x->ttl = ip6->hop_limit;
		x->l4_len = p->l3_len - sizeof(*ip6);
		x->da = fold32(csum_sub16(old, 16) + csum_add16((const __u16 *)&v->out_addr[12], 2) +
			       csum_add16((const __u16 *)&v->dst_addr[12], 2));
		x->dp = fold32(csum_sub16(old + 16, 2) + ports);
		return -1;
	}
	// IPv4 may carry no UDP checksum (zero); IPv6 must (RFC 8200 8.1).
	// The hooks make one by summing the datagram (relay_udp4_csum), up
	// to an Ethernet MTU's worth; a longer one goes up to the stack.
	if (!x->check && p->payload_len + sizeof(struct udphdr) > CSUM_PACKET_MAX)
		return cnt_not_udp;
	struct iphdr *ip = p->l3;
	__u16 *old = (void *)ip + BLK4_OFF;
	x->tos = ip->tos;
	x->ttl = ip->ttl;
	x->l4_len = p->l3_len - sizeof(*ip);
	x->da = fold32(csum_sub16(old, 4) + csum_add16((const __u16 *)v->out_addr, 8) +
		       csum_add16((const __u16 *)v->dst_addr, 8));
	x->dp = fold32(csum_sub16(old + 4, 2) + ports);
	return -1;
}

// The UDP checksum an IPv4 datagram without one would have had: the
// ulen bytes of the datagram at the end of ip (its checksum field zero)
// and the IPv4 pseudo-header. The translation then treats the packet as
// if it had come with it, so the paths of packets that did are the same as
// ever, and only this case reads the payload. Neither ip nor the datagram
// need have been bounds-checked: the tc hook calls this with fresh
// pointers after pulling the datagram into the linear part. A subprogram,
// so that it neither weighs on the registers of the paths that do not
// call it nor multiplies the verifier's work on the rest of the caller.
// Returns 0 when the datagram cannot be summed.
static __noinline __u16 relay_udp4_csum(struct iphdr *ip, void *data_end, __u32 ulen)
{
	if ((void *)(ip + 1) > data_end)
		return 0;
	__u32 seed = fold32(csum_add16((const __u16 *)&ip->saddr, 4) + bpf_htons(ulen) +
			    bpf_htons(IPPROTO_UDP));
	__s64 s = csum_packet((__u8 *)(ip + 1), data_end, ulen, seed);
	if (s < 0)
		return 0;
	__u16 c = ~(__u16)s;
	return c ? c : 0xffff; // MANGLED_0: zero would say "none"
}

// The start of both hooks' translation subprograms: the old headers read
// into x, then the next hop. Returns a pass reason, or -1 with *nh set.
static __always_inline int relay_xlate_begin(void *ctx, const struct parsed *p, struct flow_value *v,
					     __u32 ifindex, struct xlate *x, __u64 *now, __u32 *egress,
					     __u8 *macs, enum nh_result *nh)
{
	if (!cross_family)
		return cnt_no_flow; // the loader installs no such flow then
	int r = relay_xlate_prepare(v, p, x);
	if (r >= 0)
		return r;
	// The flow's TOS, when it has one, in place of the one carried over
	// (rtpengine's TOS): the new header is written whole, so it costs no
	// checksum update. relay_fib_params asks the FIB with it as well.
	if (v->flags & FLOW_TOS)
		x->tos = relay_flow_tos(v);
	*now = bpf_ktime_get_coarse_ns();
	*nh = relay_nexthop(ctx, v, p, 1, ifindex, *now, egress, macs);
	return *nh == NH_FAIL ? cnt_fib : -1;
}

// The new IP header for x. The IPv6 flow label is zero (RFC 7915 4.1). An
// IPv4 header gets DF, since nothing fragmented the datagram on its IPv6
// way either, and ID zero (RFC 6145 5.1), which is any atomic datagram's
// right (RFC 6864). The header checksum is complete.
union ip_header {
	struct iphdr v4;
	struct ipv6hdr v6;
};

static __always_inline void relay_xlate_header(const struct xlate *x, const struct flow_value *v, __u8 to6,
					       union ip_header *h)
{
	if (to6) {
		*(__be32 *)&h->v6 = bpf_htonl(6 << 28 | (__u32)x->tos << 20);
		h->v6.payload_len = bpf_htons(x->l4_len);
		h->v6.nexthdr = IPPROTO_UDP;
		h->v6.hop_limit = x->ttl;
		__builtin_memcpy(&h->v6.saddr, v->out_addr, 16);
		__builtin_memcpy(&h->v6.daddr, v->dst_addr, 16);
		return;
	}
	h->v4.version = 4;
	h->v4.ihl = 5;
	h->v4.tos = x->tos;
	h->v4.tot_len = bpf_htons(x->l4_len + sizeof(struct iphdr));
	h->v4.id = 0;
	h->v4.frag_off = bpf_htons(0x4000); // DF
	h->v4.ttl = x->ttl;
	h->v4.protocol = IPPROTO_UDP;
	h->v4.check = 0;
	__builtin_memcpy(&h->v4.saddr, &v->out_addr[12], 4);
	__builtin_memcpy(&h->v4.daddr, &v->dst_addr[12], 4);
	h->v4.check = ~csum_fold64(csum_add16((const __u16 *)&h->v4, sizeof(struct iphdr) / 2));
}
