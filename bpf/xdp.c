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

	__u64 now = bpf_ktime_get_coarse_ns();
	__u32 egress = 0;
	__u8 macs[2 * ETH_ALEN]; // destination then source
	enum nh_result nh = relay_nexthop(ctx, v, &p, ctx->ingress_ifindex, now, &egress, macs);
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
	if (local) {
		// Addressed to this host now: the stack delivers it, MACs as they are.
		count(cnt_local);
		return XDP_PASS;
	}
	__builtin_memcpy(p.eth->h_dest, macs, 2 * ETH_ALEN);

	if (egress == ctx->ingress_ifindex) {
		count(cnt_tx);
		return XDP_TX;
	}
	long rc = bpf_redirect_map(&tx_ports, egress, 0);
	count(rc == XDP_REDIRECT ? cnt_redirect : cnt_aborted);
	return rc;
}

char LICENSE[] SEC("license") = "GPL";
