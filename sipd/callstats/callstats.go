// Package callstats counts the calls the relay ended, by rtpengine's
// termination reasons, for the NG statistics command and rtpengine's
// Prometheus series. It counts once per ended call (media.EndRecorder),
// never per packet; the counts start at 0 with the process, as
// rtpengine's do.
package callstats

import (
	"strings"
	"sync"

	"sipxdp/ng"
	"sipxdp/relay"
	"sipxdp/sipd/media"
	"sipxdp/sipd/relayrepl"
)

// Counter counts ended calls. The zero value is ready; it is safe for
// concurrent use.
type Counter struct {
	mu sync.Mutex
	s  ng.EndedStats
}

// CallEnded counts one ended call, as rtpengine's
// statistics_update_oneway (statistics.c) does when it destroys a call:
//   - a foreign call (one a standby followed for the active node) and a
//     call whose offer failed are not counted;
//   - the relay's media timeout is rtpengine's TIMEOUT, or OFFER_TIMEOUT
//     for a call never answered (call.c: a stream without its answer's
//     address times out under offer-timeout);
//   - an NG delete or a BYE is a regular termination; anything else the
//     relay decided (an SRTP leg that failed, a failed or unforwarded
//     INVITE) a forced one;
//   - of the first stream, zero-way when neither side sent a packet,
//     one-way when only one did.
func (c *Counter) CallEnded(e media.CallEnd) {
	switch e.Reason {
	case relayrepl.ReasonReplicaUpdated, relayrepl.ReasonActiveDeleted, media.ReasonSetupFailed:
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &c.s
	s.Managed++
	switch {
	case e.Reason == relay.ReasonMediaTimeout && e.Answered:
		s.Timeout++
	case e.Reason == relay.ReasonMediaTimeout:
		s.OfferTimeout++
	case e.Reason == media.ReasonBye || strings.HasPrefix(e.Reason, media.ReasonNGDelete):
		s.Regular++
	default:
		s.Forced++
	}
	if st, ok := first(e.Streams); ok {
		a, b := st.A.Received.Packets > 0, st.B.Received.Packets > 0
		switch {
		case !a && !b:
			s.ZeroWay++
		case a != b:
			s.OneWay++
		}
	}
	if d := e.Ended.Sub(e.Created); d > 0 && !e.Created.IsZero() {
		s.Duration += d
		s.DurationSquaredSeconds += d.Seconds() * d.Seconds()
	}
}

// first returns the stream of the lowest m-line index: rtpengine looks
// at each side's first RTP stream only.
func first(streams []relay.StreamInfo) (relay.StreamInfo, bool) {
	if len(streams) == 0 {
		return relay.StreamInfo{}, false
	}
	f := streams[0]
	for _, s := range streams[1:] {
		if s.Index < f.Index {
			f = s
		}
	}
	return f, true
}

// Ended returns the counts so far.
func (c *Counter) Ended() ng.EndedStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.s
}

// compile-time check that Counter is what media.Config.Ended takes.
var _ media.EndRecorder = (*Counter)(nil)
