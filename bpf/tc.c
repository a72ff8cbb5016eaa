//go:build ignore

// tc (tcx ingress) hook: same decision as XDP, but the rewrite goes through
// bpf_l3/l4_csum_replace so a CHECKSUM_PARTIAL skb (a local sender over
// veth) gets its pseudo-header seed updated instead of a full checksum.
#include <linux/pkt_cls.h>
#include "relay.h"

// Enough linear data for Ethernet + IPv6 + UDP headers.
#define HDR_MAX (14 + 40 + 8)

static __always_inline int pass(__u32 reason)
{
	count(cnt_pass);
	count(reason);
	return TC_ACT_OK;
}

static __always_inline __u32 fold32(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	return (__u32)s;
}

SEC("tc")
int relay_tc(struct __sk_buff *skb)
{
	if (skb->data_end - skb->data < HDR_MAX && skb->len > skb->data_end - skb->data)
		bpf_skb_pull_data(skb, skb->len < HDR_MAX ? skb->len : HDR_MAX);

	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct parsed p = {};
	struct flow_value *v = 0;

	int r = relay_match(data, data_end, skb->len, &p, &v);
	if (r >= 0 || !v)
		return pass(r >= 0 ? r : cnt_no_flow);

	__u64 now = bpf_ktime_get_coarse_ns();
	__u32 egress = 0;
	__u8 macs[2 * ETH_ALEN]; // destination then source, as on the wire
	enum nh_result nh = relay_nexthop(skb, v, &p, skb->ifindex, now, &egress, macs);
	if (nh == NH_FAIL)
		return pass(cnt_fib);
	int neigh = nh == NH_NO_NEIGH; // bpf_redirect_neigh resolves it on the way out
	int local = nh == NH_LOCAL;

	relay_account(v, &p, now);

	// Everything read from the packet is read now: the helpers below may
	// move skb data and invalidate packet pointers.
	struct block nb;
	relay_block(v, p.v6, &nb);
	__u16 tw = *(__u16 *)p.l3;
	__u16 ntw = relay_tos_word(v, p.v6, tw);
	__u32 l3 = p.l3_off;
	__u32 check_off = l3 + (p.v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr)) +
			  offsetof(struct udphdr, check);
	if (p.v6) {
		__u16 *old = p.l3 + BLK6_OFF;
		__u32 da = fold32(csum_delta16(old, nb.w, 16));
		__u32 dp = fold32(csum_delta16(old + 16, nb.w + 16, 2));
		bpf_l4_csum_replace(skb, check_off, 0, da,
				    BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0 | BPF_F_IPV6);
		bpf_l4_csum_replace(skb, check_off, 0, dp, BPF_F_MARK_MANGLED_0 | BPF_F_IPV6);
		bpf_skb_store_bytes(skb, l3 + BLK6_OFF, nb.w, BLK6_WORDS * 2, 0);
	} else {
		__u16 *old = p.l3 + BLK4_OFF;
		__u32 da = fold32(csum_delta16(old, nb.w, 4));
		__u32 dp = fold32(csum_delta16(old + 4, nb.w + 4, 2));
		bpf_l3_csum_replace(skb, l3 + offsetof(struct iphdr, check), 0, da, 0);
		// MARK_MANGLED_0 leaves a zero ("no checksum") UDP checksum alone.
		bpf_l4_csum_replace(skb, check_off, 0, da, BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0);
		bpf_l4_csum_replace(skb, check_off, 0, dp, BPF_F_MARK_MANGLED_0);
		bpf_skb_store_bytes(skb, l3 + BLK4_OFF, nb.w, BLK4_WORDS * 2, 0);
	}
	if (ntw != tw) {
		if (!p.v6)
			bpf_l3_csum_replace(skb, l3 + offsetof(struct iphdr, check), tw, ntw, 2);
		bpf_skb_store_bytes(skb, l3, &ntw, 2, 0);
	}

	if (local) {
		// At ingress, before IP: the stack delivers the rewritten packet
		// to the local socket it is now addressed to.
		count(cnt_local);
		return TC_ACT_OK;
	}
	count(cnt_redirect);
	if (neigh)
		return bpf_redirect_neigh(egress, 0, 0, 0);
	bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0);
	return bpf_redirect(egress, 0);
}

char LICENSE[] SEC("license") = "GPL";
