package sipload

import (
	"math"
	"math/bits"
	"time"
)

const clockRate = 8000 // PCMU's RTP clock, Hz

// seenSet records which packet indexes of a stream came back. A bitset
// rather than a counter, so duplicated packets cannot hide lost ones.
type seenSet struct {
	words []uint64
	max   uint64 // highest index seen, plus one
}

func (s *seenSet) add(i uint64) {
	w := int(i / 64)
	if w >= 1<<22 { // 268 M packets: far beyond any call, refuse to grow
		return
	}
	for len(s.words) <= w {
		s.words = append(s.words, 0)
	}
	s.words[w] |= 1 << (i % 64)
	s.max = max(s.max, i+1)
}

func (s *seenSet) count() uint64 {
	var n int
	for _, w := range s.words {
		n += bits.OnesCount64(w)
	}
	return uint64(n)
}

// lossFraction is the share of sent packets that never came back.
func lossFraction(sent, got uint64) float64 {
	if sent == 0 {
		return 0
	}
	return float64(sent-min(got, sent)) / float64(sent)
}

// extend turns a 16-bit sequence number into a packet index, taking the
// one nearest to ref (the index of the latest packet sent or seen), so it
// keeps counting past 65535. ok is false for a number that would come
// before index 0.
func extend(ref uint64, seq uint16) (uint64, bool) {
	d := int64(int16(seq - uint16(ref)))
	if d < 0 && uint64(-d) > ref {
		return 0, false
	}
	return uint64(int64(ref) + d), true
}

// jitter is RFC 3550's interarrival jitter estimate, in RTP timestamp
// units (A.8).
type jitter struct {
	j       float64
	transit int64
	have    bool
}

// update takes one packet's arrival time, in timestamp units on any fixed
// origin, and its RTP timestamp.
func (j *jitter) update(arrival int64, ts uint32) {
	transit := arrival - int64(ts)
	if j.have {
		d := transit - j.transit
		// RTP timestamps wrap at 2^32; a difference that large is the wrap.
		if d > math.MaxInt32 || d < math.MinInt32 {
			d = int64(int32(d))
		}
		j.j += (math.Abs(float64(d)) - j.j) / 16
	}
	j.transit, j.have = transit, true
}

// duration converts the estimate to time.
func (j *jitter) duration() time.Duration {
	return time.Duration(j.j * float64(time.Second) / clockRate)
}

// arrivalUnits is t in RTP timestamp units since base.
func arrivalUnits(t, base time.Time) int64 {
	return int64(t.Sub(base)) * clockRate / int64(time.Second)
}

// ntpEpochOffset is the seconds from 1900 (NTP) to 1970 (Unix).
const ntpEpochOffset = 2208988800

// ntpTime is t as a 64-bit NTP timestamp.
func ntpTime(t time.Time) uint64 {
	sec := uint64(t.Unix()) + ntpEpochOffset
	frac := uint64(t.Nanosecond()) << 32 / uint64(time.Second)
	return sec<<32 | frac
}

// ntpMid is the middle 32 bits of an NTP timestamp: the form of LSR and
// of the clock RTT is computed against.
func ntpMid(ntp uint64) uint32 { return uint32(ntp >> 16) }

// rttFrom is RFC 3550 6.4.1's round trip: arrival time minus LSR minus
// DLSR, all in 1/65536 s. ok is false when the report carries no SR
// (LSR 0) or the result is negative, which clock granularity can make it
// on a fast path; that reads as zero, not a wrapped 18 hours.
func rttFrom(now time.Time, lsr, dlsr uint32) (time.Duration, bool) {
	if lsr == 0 {
		return 0, false
	}
	r := int32(ntpMid(ntpTime(now)) - lsr - dlsr)
	if r < 0 {
		return 0, true
	}
	return time.Duration(int64(r) * int64(time.Second) >> 16), true
}

// dlsrSince is the delay since an SR arrived, in 1/65536 s.
func dlsrSince(d time.Duration) uint32 {
	if d < 0 {
		return 0
	}
	return uint32(int64(d) << 16 / int64(time.Second))
}
