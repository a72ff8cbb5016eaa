//go:build ignore

// Incremental Internet checksum arithmetic (RFC 1624) over 16-bit words
// read straight from the packet, so both byte orders cancel out.
#pragma once

#include <linux/types.h>

// Sum of ~old + new over n 16-bit words: the change to fold into a
// checksum when old is overwritten by new.
static __always_inline __u64 csum_delta16(const __u16 *old, const __u16 *new, int n)
{
	__u64 s = 0;
#pragma unroll
	for (int i = 0; i < n; i++) {
		s += (__u16)~old[i];
		s += new[i];
	}
	return s;
}

// Sums of n 16-bit words (neg: of their complements). A delta between
// blocks of different lengths (an IPv4 and an IPv6 address pair) is the sum
// of the new words and of the complements of the old ones.
static __always_inline __u64 csum_sum16(const __u16 *w, int n, int neg)
{
	__u64 s = 0;
#pragma unroll
	for (int i = 0; i < n; i++)
		s += neg ? (__u16)~w[i] : w[i];
	return s;
}

static __always_inline __u64 csum_add16(const __u16 *w, int n) { return csum_sum16(w, n, 0); }
static __always_inline __u64 csum_sub16(const __u16 *w, int n) { return csum_sum16(w, n, 1); }

static __always_inline __u16 csum_fold64(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

// Apply a delta to a stored (complemented) checksum: HC' = ~(~HC + delta).
static __always_inline __u16 csum_apply(__u16 check, __u64 delta)
{
	return ~csum_fold64((__u64)(__u16)~check + delta);
}
