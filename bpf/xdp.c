//go:build ignore

// XDP hook: rewrite in place with incremental checksums, then XDP_TX back
// out of the ingress device or redirect through the devmap. XDP cannot see
// CHECKSUM_PARTIAL, so packets from local senders over veth belong on tc.
#include "relay.h"

static __always_inline int pass(__u32 reason)
{
	count(cnt_pass);
	count(reason);
	return XDP_PASS;
}

// The end of a relayed packet, rewritten: local delivery with the MACs as
// they are, or out with the next hop's MACs by XDP_TX or the devmap.
static __always_inline int send(struct xdp_md *ctx, struct ethhdr *eth, int local, __u32 egress,
				const __u8 *macs)
{
	if (local) {
		// Addressed to this host now: the stack delivers it, MACs as they are.
		count(cnt_local);
		return XDP_PASS;
	}
	__builtin_memcpy(eth->h_dest, macs, 2 * ETH_ALEN);

	if (egress == ctx->ingress_ifindex) {
		count(cnt_tx);
		return XDP_TX;
	}
	long rc = bpf_redirect_map(&tx_ports, egress, 0);
	count(rc == XDP_REDIRECT ? cnt_redirect : cnt_aborted);
	return rc;
}

// A flow between families (FLOW_XLATE): the IP header is replaced by one of
// the other family, 20 bytes longer or shorter, so the head of the frame
// moves by that much; the UDP header and payload stay where they are.
// A subprogram of its own, so that its registers and stack do not weigh
// on the same-family path. It also drops a dropping flow's packets
// (FLOW_DROP), the other rare case the main path tests for with the same
// instruction.
static __noinline int relay_xlate_xdp(struct xdp_md *ctx, struct parsed *p, struct flow_value *v)
{
	// The call drops its media (rtpengine's drop-traffic), of either
	// family: after the source check, so a stranger's packet still goes
	// up as one.
	if (v->flags & FLOW_DROP) {
		count(cnt_dropped);
		return XDP_DROP;
	}
	struct xlate x = {};
	__u64 now = 0;
	__u32 egress = 0;
	__u8 macs[2 * ETH_ALEN];
	enum nh_result nh = NH_FAIL;
	int r = relay_xlate_begin(ctx, p, v, ctx->ingress_ifindex, &x, &now, &egress, macs, &nh);
	if (r >= 0)
		return pass(r);
	if (nh == NH_NO_NEIGH)
		return pass(cnt_fib); // as for same-family flows
	__u8 to6 = !p->v6;
	int local = nh == NH_LOCAL;
	if (!local && egress != ctx->ingress_ifindex && !bpf_map_lookup_elem(&tx_ports, &egress))
		return pass(cnt_no_egress);

	// An IPv4 datagram without a UDP checksum, for IPv6, where it is
	// mandatory: the one its sender left out, before anything is written.
	if (to6 && !x.check) {
		x.check = relay_udp4_csum(p->l3, (void *)(long)ctx->data_end,
					  p->payload_len + sizeof(struct udphdr));
		if (!x.check)
			return pass(cnt_truncated); // past the frame: parse_udp let no such one through
	}

	// MANGLED_0: a result of zero is sent as 0xffff. A zero from IPv6
	// (invalid there) stays zero: "no checksum" over IPv4.
	__u16 check = x.check;
	if (check) {
		check = csum_apply(check, (__u64)x.da + x.dp);
		if (!check)
			check = 0xffff;
	}
	struct udphdr *udp = p->udp;
	udp->source = v->out_port;
	udp->dest = v->dst_port;
	udp->check = check;

	struct ethhdr *old = p->eth;
	if (to6) {
		if (bpf_xdp_adjust_head(ctx, -XLATE_DIFF))
			goto aborted; // no headroom: XDP guarantees 256 bytes
		void *data = (void *)(long)ctx->data;
		void *data_end = (void *)(long)ctx->data_end;
		struct ethhdr *eth = data;
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			goto aborted;
		// The old Ethernet header now starts XLATE_DIFF bytes in; the
		// new IPv6 header overwrites it and the IPv4 header, both read.
		__builtin_memcpy(eth, data + XLATE_DIFF, 2 * ETH_ALEN);
		eth->h_proto = bpf_htons(ETH_P_IPV6);
		relay_xlate_header(&x, v, 1, (union ip_header *)ip6);
		relay_account(v, p, now);
		return send(ctx, eth, local, egress, macs);
	}
	// To IPv4: write the Ethernet and IPv4 headers where they end before
	// the UDP header, then drop the XLATE_DIFF bytes in front of them.
	struct ethhdr *eth = (void *)old + XLATE_DIFF;
	struct iphdr *ip = (void *)(eth + 1); // ends where udp starts: in bounds
	__builtin_memcpy(eth, old, 2 * ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);
	relay_xlate_header(&x, v, 0, (union ip_header *)ip);
	if (bpf_xdp_adjust_head(ctx, XLATE_DIFF))
		goto aborted;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		goto aborted;
	relay_account(v, p, now);
	return send(ctx, eth, local, egress, macs);
aborted:
	count(cnt_aborted);
	return XDP_ABORTED;
}

SEC("xdp")
int relay_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct parsed p = {};
	struct flow_value *v = 0;

	int r = relay_match(data, data_end, data_end - data, &p, &v);
	if (r >= 0 || !v)
		return pass(r >= 0 ? r : cnt_no_flow);
	// One test for both rare cases (see relay_xlate_xdp) keeps the same-family
	// path as it was before FLOW_DROP.
	if (v->flags & (FLOW_XLATE | FLOW_DROP))
		return relay_xlate_xdp(ctx, &p, v);

	__u64 now = bpf_ktime_get_coarse_ns();
	__u32 egress = 0;
	__u8 macs[2 * ETH_ALEN]; // destination then source
	enum nh_result nh = relay_nexthop(ctx, v, &p, 0, ctx->ingress_ifindex, now, &egress, macs);
	if (nh == NH_NO_NEIGH || nh == NH_FAIL)
		// XDP cannot resolve a neighbour; the stack will, for the next packet.
		return pass(cnt_fib);
	int local = nh == NH_LOCAL;
	// Checked before touching the packet so a pass stays untouched.
	if (!local && egress != ctx->ingress_ifindex && !bpf_map_lookup_elem(&tx_ports, &egress))
		return pass(cnt_no_egress);

	relay_account(v, &p, now);

	struct block nb;
	relay_block(v, p.v6, &nb);
	struct udphdr *udp = p.udp;
	if (p.v6) {
		__u16 *old = (void *)p.l3 + BLK6_OFF;
		__u64 d = csum_delta16(old, nb.w, BLK6_WORDS);
		__u16 c = csum_apply(udp->check, d);
		udp->check = c ? c : 0xffff;
		__builtin_memcpy(old, nb.w, BLK6_WORDS * 2);
	} else {
		struct iphdr *ip = p.l3;
		__u16 *old = (void *)ip + BLK4_OFF;
		__u64 da = csum_delta16(old, nb.w, 4);
		__u64 dp = csum_delta16(old + 4, nb.w + 4, 2);
		ip->check = csum_apply(ip->check, da);
		// Zero means "no checksum" over IPv4 and must stay zero.
		if (udp->check) {
			__u16 c = csum_apply(udp->check, da + dp);
			udp->check = c ? c : 0xffff;
		}
		__builtin_memcpy(old, nb.w, BLK4_WORDS * 2);
	}
	__u16 *tw = p.l3;
	__u16 ntw = relay_tos_word(v, p.v6, *tw);
	if (ntw != *tw) {
		if (!p.v6) {
			struct iphdr *ip = p.l3;
			ip->check = csum_apply(ip->check, csum_delta16(tw, &ntw, 1));
		}
		*tw = ntw; // IPv6 has no header checksum, and UDP's does not cover the class
	}
	return send(ctx, p.eth, local, egress, macs);
}

char LICENSE[] SEC("license") = "GPL";
