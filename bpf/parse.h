//go:build ignore

// Header parsing shared by both hooks. Headers are bounds-checked against
// data_end (the linear part); lengths against pkt_len (the whole frame),
// because tc may see a payload that lives in skb fragments.
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>

#include "maps.h"

struct parsed {
	struct ethhdr *eth;
	void *l3;           // struct iphdr or struct ipv6hdr
	struct udphdr *udp;
	__u32 l3_off;
	__u16 l3_len;       // IP total length, for the FIB MTU check
	__u16 payload_len;  // UDP payload bytes
	__u8 v6;
	struct flow_key key;
};

// Returns a counter (the pass reason) or -1 for a well-formed UDP datagram.
static __always_inline int parse_udp(void *data, void *data_end, __u64 pkt_len, struct parsed *p)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return cnt_truncated;
	p->eth = eth;
	p->l3_off = sizeof(*eth);

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end)
			return cnt_truncated;
		if (ip->version != 4)
			return cnt_not_ip;
		if (ip->ihl != 5)
			return ip->ihl > 5 ? cnt_ip_options : cnt_truncated;
		// MF set or a nonzero offset: only the first fragment has ports.
		if (ip->frag_off & bpf_htons(0x3fff))
			return cnt_fragment;
		if (ip->protocol != IPPROTO_UDP)
			return cnt_not_udp;
		__u16 tot = bpf_ntohs(ip->tot_len);
		if (tot < sizeof(*ip) + sizeof(struct udphdr) || sizeof(*eth) + tot > pkt_len)
			return cnt_truncated;
		struct udphdr *udp = (void *)(ip + 1);
		if ((void *)(udp + 1) > data_end)
			return cnt_truncated;
		__u16 ulen = bpf_ntohs(udp->len);
		if (ulen < sizeof(*udp) || ulen > tot - sizeof(*ip))
			return cnt_truncated;
		p->l3 = ip;
		p->udp = udp;
		p->l3_len = tot;
		p->payload_len = ulen - sizeof(*udp);
		p->v6 = 0;
		p->key.addr[10] = 0xff;
		p->key.addr[11] = 0xff;
		*(__u32 *)&p->key.addr[12] = ip->daddr;
		p->key.port = udp->dest;
		return -1;
	}

	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return cnt_truncated;
		if (ip6->version != 6)
			return cnt_not_ip;
		switch (ip6->nexthdr) {
		case IPPROTO_UDP:
			break;
		case IPPROTO_FRAGMENT:
			return cnt_fragment;
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS:
		case IPPROTO_AH:
		case 135: // mobility
		case 139: // HIP
		case 140: // shim6
			return cnt_ipv6_ext;
		default:
			return cnt_not_udp;
		}
		__u16 plen = bpf_ntohs(ip6->payload_len);
		if (plen < sizeof(struct udphdr) || sizeof(*eth) + sizeof(*ip6) + plen > pkt_len)
			return cnt_truncated;
		struct udphdr *udp = (void *)(ip6 + 1);
		if ((void *)(udp + 1) > data_end)
			return cnt_truncated;
		__u16 ulen = bpf_ntohs(udp->len);
		if (ulen < sizeof(*udp) || ulen > plen)
			return cnt_truncated;
		p->l3 = ip6;
		p->udp = udp;
		p->l3_len = sizeof(*ip6) + plen;
		p->payload_len = ulen - sizeof(*udp);
		p->v6 = 1;
		__builtin_memcpy(p->key.addr, &ip6->daddr, 16);
		p->key.port = udp->dest;
		return -1;
	}
	return cnt_not_ip;
}
