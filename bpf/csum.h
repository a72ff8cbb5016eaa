//go:build ignore

// Incremental Internet checksum arithmetic (RFC 1624) over 16-bit words
// read straight from the packet, so both byte orders cancel out.
#pragma once

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

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

// The longest span csum_packet sums. It bounds every loop below (the
// verifier needs that), so it must stay under 3 * CSUM_CHUNK.
#define CSUM_PACKET_MAX 1500
// bpf_csum_diff sums at most 512 bytes a call (its per-CPU scratch buffer),
// in multiples of 4.
#define CSUM_CHUNK 512
#define CSUM_SMALL 64

_Static_assert(CSUM_PACKET_MAX < 3 * CSUM_CHUNK, "csum_packet's first loop runs at most twice");

// Adds n pieces of size bytes at b (a constant multiple of 4, at most 512)
// to *s through bpf_csum_diff; n is at most max. Returns -1 when they run
// past data_end. n is hidden from the compiler, which would otherwise
// compare the length n came from, so that the verifier would learn a
// different length on each way out of the loop (see csum_packet).
static __always_inline int csum_pieces(__u8 *b, void *data_end, __u32 n, const __u32 size, const int max,
				       __u64 *s)
{
	barrier_var(n);
#pragma unroll
	for (int i = 0; i < max; i++) {
		if (i >= n)
			break;
		__u8 *c = b + i * size;
		if ((void *)(c + size) > data_end)
			return -1;
		// Cannot fail: the size is a constant the helper takes. Its result
		// is a 32-bit partial sum (16-bit folded on some kernels), either
		// of which is a seed for the next call.
		*s = (__u32)bpf_csum_diff(0, 0, (__be32 *)c, size, *s);
	}
	return 0;
}

// The one's-complement sum of len bytes at start, a packet pointer whose
// span the caller has not bounds-checked, plus seed; -1 when len exceeds
// CSUM_PACKET_MAX or the span runs past data_end. The span is cut in
// 512-byte pieces, then 64-byte ones (both through bpf_csum_diff), then
// 4-byte words and a tail of up to 3 bytes. Every piece starts at an offset
// from start that is a multiple of 4, so the words keep their parity.
//
// Why three loops and not "while 512 left, then 256, 128...": the
// verifier walks every combination of taken branches whose packet
// offsets differ, 2^7 for that ladder, all the way through the caller.
// Here each loop's exit depends on a count of its own, and each loop
// restarts from an offset computed from len, so all exits of a loop reach
// the next one in one state and the verifier's work grows with the loops'
// lengths added, not multiplied. Callers keep it in a subprogram, whose
// states end at its return.
static __always_inline __s64 csum_packet(__u8 *start, void *data_end, __u32 len, __u32 seed)
{
	if (len > CSUM_PACKET_MAX)
		return -1;
	__u64 s = seed;
	if (csum_pieces(start, data_end, len / CSUM_CHUNK, CSUM_CHUNK, CSUM_PACKET_MAX / CSUM_CHUNK, &s) ||
	    csum_pieces(start + (len & ~(CSUM_CHUNK - 1)), data_end, (len % CSUM_CHUNK) / CSUM_SMALL, CSUM_SMALL,
			CSUM_CHUNK / CSUM_SMALL - 1, &s))
		return -1;

	// 32-bit words: 2^16 = 1 in one's-complement arithmetic, so a word
	// adds the same as its two halves.
	__u8 *b = start + (len & ~(CSUM_SMALL - 1));
	__u32 n = (len % CSUM_SMALL) / 4;
#pragma unroll
	for (int i = 0; i < CSUM_SMALL / 4 - 1; i++) {
		// Inside the loop, or clang turns it into one of min(n, 15)
		// rounds, which it cannot unroll.
		barrier_var(n);
		if (i >= n)
			break;
		__u32 *w = (void *)(b + i * 4);
		if ((void *)(w + 1) > data_end)
			return -1;
		s += *w;
	}

	// The last 1 to 3 bytes, the odd one padded with a zero byte after it
	// (RFC 768), in packet order like every word above.
	b = start + (len & ~3);
	__u8 tail[4] = {};
	switch (len & 3) {
	case 3:
		if ((void *)(b + 3) > data_end)
			return -1;
		tail[2] = b[2];
		// fallthrough
	case 2:
		if ((void *)(b + 2) > data_end)
			return -1;
		tail[1] = b[1];
		// fallthrough
	case 1:
		if ((void *)(b + 1) > data_end)
			return -1;
		tail[0] = b[0];
	}
	__u32 t;
	__builtin_memcpy(&t, tail, 4);
	s += t;
	return csum_fold64(s);
}
