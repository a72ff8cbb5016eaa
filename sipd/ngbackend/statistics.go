package ngbackend

import (
	"sync"
	"time"

	"sipxdp/ng"
	"sipxdp/relay"
)

// StatsSource is what Statistics reads: relay.Engine's totals.
type StatsSource interface {
	Stats() relay.Totals
}

// StatsOptions are the statistics command's sources besides the engine.
type StatsOptions struct {
	// Ended counts the calls ended since start (callstats.Counter);
	// nil: none.
	Ended func() ng.EndedStats
	// Foreign counts the calls a relay-pair standby follows for the
	// active node (relayrepl Status().Followed); nil: 0.
	Foreign func() int
	// Now is the clock of the rates; nil is time.Now.
	Now func() time.Time
}

// RateInterval is the shortest interval the statistics command's
// per-second rates are computed over.
const RateInterval = time.Second

// userspaceErrors are the userspace relay's counters that rtpengine would
// count in errors_user: a packet of a known stream that could not be
// relayed (media_socket.c: a send that failed, a handler error
// such as SRTP that does not authenticate; an unknown payload type,
// which sipxdp does not look at). Packets from a source the
// stream did not take are dropped, not errors, in both.
var userspaceErrors = []string{"send_error", "srtp", "oversize"}

// RelayErrors returns rtpengine's relayed packet errors in t: userspace
// (userspaceErrors) and kernel (redirects that failed). kernelKnown is
// false while the kernel counters cannot be read: unknown, not zero.
func RelayErrors(t relay.Totals) (user, kernel uint64, kernelKnown bool) {
	for _, k := range userspaceErrors {
		user += t.UserspaceCounters[k]
	}
	if t.KernelCountersError != "" {
		return user, 0, false
	}
	return user, t.KernelCounters["aborted"], true
}

// sample is the engine's totals at one time, for the rates.
type sample struct {
	at                     time.Time
	packets, bytes, errors uint64
}

// Statistics returns the ng.Options.Statistics function for eng: the
// sessions now relayed, the packets, bytes and errors relayed since the
// engine started by either path, and o's ended and foreign calls.
//
// The per-second rates are computed on demand, not by a ticker: from the
// totals' growth since the sample the last rates were computed from
// (the first: when Statistics was called), divided by the time since
// then, once that is at least RateInterval; a request sooner gets the
// same rates again. rtpengine's are over its last one-second timer run.
func Statistics(eng StatsSource, o StatsOptions) func() ng.EngineStats {
	if o.Now == nil {
		o.Now = time.Now
	}
	var mu sync.Mutex
	take := func() (relay.Totals, sample) {
		t := eng.Stats()
		user, kern, _ := RelayErrors(t)
		return t, sample{at: o.Now(), packets: t.KernelPackets + t.UserspacePackets,
			bytes: t.KernelBytes + t.UserspaceBytes, errors: user + kern}
	}
	_, prev := take()
	var rates [3]uint64
	return func() ng.EngineStats {
		t, cur := take()
		mu.Lock()
		if el := cur.at.Sub(prev.at); el >= RateInterval {
			per := func(now, was uint64) uint64 {
				if now < was {
					return 0 // counters went back (an engine restart)
				}
				return uint64(float64(now-was) / el.Seconds())
			}
			rates = [3]uint64{per(cur.packets, prev.packets), per(cur.bytes, prev.bytes), per(cur.errors, prev.errors)}
			prev = cur
		}
		r := rates
		mu.Unlock()
		es := ng.EngineStats{Sessions: t.Sessions, Packets: cur.packets, Bytes: cur.bytes, Errors: cur.errors,
			PacketRate: r[0], ByteRate: r[1], ErrorRate: r[2]}
		if o.Ended != nil {
			es.Ended = o.Ended()
		}
		if o.Foreign != nil {
			es.Foreign = o.Foreign()
		}
		return es
	}
}
