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

// The end of a relayed packet, rewritten: local delivery, or a redirect to
// the egress device with the next hop's MACs (or bpf_redirect_neigh's).
static __always_inline int send(struct __sk_buff *skb, int local, int neigh, __u32 egress, const __u8 *macs)
{
	if (local) {
		// At ingress, before IP: the stack delivers the rewritten packet
		// to the local socket it is now addressed to.
		count(cnt_local);
		return TC_ACT_OK;
	}
	count(cnt_redirect);
	if (neigh)
		return bpf_redirect_neigh(egress, 0, 0, 0);
	bpf_skb_store_bytes(skb, 0, macs, 2 * ETH_ALEN, 0);
	return bpf_redirect(egress, 0);
}

// A flow between families (FLOW_XLATE), and the drop of a dropping flow's
// packets (FLOW_DROP), the other rare case the main path tests for with
// the same instruction. bpf_skb_change_proto grows or
// shrinks the room between the Ethernet and IP headers by 20 bytes and sets
// skb->protocol; the new IP header and the EtherType are written here.
//
// Checksums, for each state the skb may be in: the UDP checksum takes the
// address delta as a pseudo-header change and the port delta as a data
// change through bpf_l4_csum_replace, which updates a full checksum, or
// only the pseudo-header seed of a CHECKSUM_PARTIAL one (a local sender
// over veth). For CHECKSUM_COMPLETE the new IP header is stored with
// BPF_F_RECOMPUTE_CSUM, and the pseudo-header replace is made without
// BPF_F_IPV6 even toward IPv6, so that skb->csum also follows the change
// of the checksum field itself; the ports' change and the checksum's
// change for them cancel, as in the same-family rewrite.
static __noinline int relay_xlate_tc(struct __sk_buff *skb, struct parsed *p, struct flow_value *v)
{
	// The call drops its media (rtpengine's drop-traffic), of either
	// family: after the source check, so a stranger's packet still goes
	// up as one.
	if (v->flags & FLOW_DROP) {
		count(cnt_dropped);
		return TC_ACT_SHOT;
	}
	struct xlate x = {};
	__u64 now = 0;
	__u32 egress = 0;
	__u8 macs[2 * ETH_ALEN];
	enum nh_result nh = NH_FAIL;
	int r = relay_xlate_begin(skb, p, v, skb->ifindex, &x, &now, &egress, macs, &nh);
	if (r >= 0)
		return pass(r);
	__u8 to6 = !p->v6;
	int neigh = nh == NH_NO_NEIGH;
	int local = nh == NH_LOCAL;

	// An IPv4 datagram without a UDP checksum, for IPv6, where it is
	// mandatory: the one its sender left out is summed and stored, and
	// the translation below updates it like any other. Summing needs the
	// datagram in the linear part (a local sender's may sit in page
	// fragments); pulling invalidates the packet pointers in p, which
	// nothing below reads. BPF_F_RECOMPUTE_CSUM keeps a CHECKSUM_COMPLETE
	// skb->csum right; a CHECKSUM_PARTIAL one never has a zero field (it
	// holds the pseudo-header's sum, never zero).
	if (to6 && !x.check) {
		__u32 l4 = sizeof(struct ethhdr) + sizeof(struct iphdr);
		__u32 ulen = p->payload_len + sizeof(struct udphdr);
		if (bpf_skb_pull_data(skb, l4 + ulen)) {
			count(cnt_aborted); // out of memory
			return TC_ACT_SHOT;
		}
		void *data = (void *)(long)skb->data;
		__u16 check = relay_udp4_csum(data + sizeof(struct ethhdr), (void *)(long)skb->data_end, ulen);
		if (!check)
			return pass(cnt_truncated); // past the frame: parse_udp let no such one through
		bpf_skb_store_bytes(skb, l4 + offsetof(struct udphdr, check), &check, sizeof(check),
				    BPF_F_RECOMPUTE_CSUM);
	}

	union ip_header h = {};
	relay_xlate_header(&x, v, to6, &h);
	__u32 l3 = p->l3_off;
	__be16 proto = bpf_htons(to6 ? ETH_P_IPV6 : ETH_P_IP);
	// The helpers below invalidate every packet pointer: nothing of the
	// old packet is read after this point.
	if (bpf_skb_change_proto(skb, proto, 0)) {
		// Out of memory; the skb is as it was.
		count(cnt_aborted);
		return TC_ACT_SHOT;
	}
	relay_account(v, p, now);
	bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto), 0);
	__u32 udp_off;
	if (to6) {
		bpf_skb_store_bytes(skb, l3, &h.v6, sizeof(h.v6), BPF_F_RECOMPUTE_CSUM);
		udp_off = l3 + sizeof(struct ipv6hdr);
	} else {
		bpf_skb_store_bytes(skb, l3, &h.v4, sizeof(h.v4), BPF_F_RECOMPUTE_CSUM);
		udp_off = l3 + sizeof(struct iphdr);
	}
	__u32 check_off = udp_off + offsetof(struct udphdr, check);
	bpf_l4_csum_replace(skb, check_off, 0, x.da, BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0);
	bpf_l4_csum_replace(skb, check_off, 0, x.dp, BPF_F_MARK_MANGLED_0);
	__be16 ports[2] = {v->out_port, v->dst_port};
	bpf_skb_store_bytes(skb, udp_off, ports, sizeof(ports), 0);
	return send(skb, local, neigh, egress, macs);
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
	// One test for both rare cases (see relay_xlate_tc) keeps the same-family
	// path as it was before FLOW_DROP.
	if (v->flags & (FLOW_XLATE | FLOW_DROP))
		return relay_xlate_tc(skb, &p, v);

	__u64 now = bpf_ktime_get_coarse_ns();
	__u32 egress = 0;
	__u8 macs[2 * ETH_ALEN]; // destination then source, as on the wire
	enum nh_result nh = relay_nexthop(skb, v, &p, 0, skb->ifindex, now, &egress, macs);
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

	return send(skb, local, neigh, egress, macs);
}

char LICENSE[] SEC("license") = "GPL";
